"""The typed-sample policy every reader shares (insmix_fast.data.typed) and open_dataset's layout list."""

from __future__ import annotations

import numpy as np
import pytest
from dataset_fixtures import make_truth, same_instances

from insmix_fast.data import LAYOUTS, open_dataset
from insmix_fast.data.typed import as_int_map, finish_sample, instance_classes, paint_classes
from insmix_fast.errors import LabelMapError, ReaderError

NAMES = ("background", "a", "b", "c")


def test_finish_sample_renumbers_and_keeps_types():
    image, labels, types = make_truth(1, n_classes=3)
    big = np.where(labels > 0, labels * 1000 + 7, 0)
    out = finish_sample(image, big, types, NAMES, name="x")
    assert len(out) == 3 and out[1].max() == labels.max() and same_instances(out[1], labels)
    np.testing.assert_array_equal(out[2], types)
    img, lab = finish_sample(image, big, name="x")  # untyped
    np.testing.assert_array_equal(lab, out[1])


def test_fix_labels_split_piece_and_hole_keep_class():
    image = np.zeros((20, 20, 3), np.uint8)
    labels = np.zeros((20, 20), np.int32)
    labels[2:9, 2:9] = 5
    labels[4:7, 4:7] = 0  # a hole
    labels[15:18, 15:18] = 5  # a second piece of id 5
    labels[12:14, 2:5] = 2
    types = np.where(labels == 5, 3, np.where(labels == 2, 1, 0))
    with pytest.raises(LabelMapError, match=r"sample 4: .*split.*holes"):
        finish_sample(image, labels, types, NAMES, name="sample 4")
    _, lab, typ = finish_sample(image, labels, types, NAMES, fix_labels=True)
    assert lab.max() == 3
    assert (typ[4:7, 4:7] == 3).all()  # the filled hole takes the class of its instance
    assert typ[16, 16] == 3 and lab[16, 16] != lab[3, 3]  # the piece: new id, same class
    np.testing.assert_array_equal(typ > 0, lab > 0)


def test_instance_classes_errors_name_ids():
    labels = np.zeros((6, 6), np.int32)
    labels[0:2, 0:2] = 4
    labels[3:5, 3:5] = 9
    types = np.where(labels > 0, 2, 0)
    ids, cls = instance_classes(labels, types, 3, "s")
    assert ids.tolist() == [4, 9] and cls.tolist() == [2, 2]
    t = types.copy()
    t[0, 0] = 1
    with pytest.raises(LabelMapError, match=r"s: instance\(s\) whose pixels carry several classes: id 4 \(class 1: 1 px, class 2: 3 px\)"):
        instance_classes(labels, t, 3, "s")
    t = types.copy()
    t[4, 4] = 0
    with pytest.raises(LabelMapError, match=r"id 9 \(class 0: 1 px, class 2: 3 px\)"):
        instance_classes(labels, t, 3, "s")
    t = np.where(labels == 9, 0, types)
    with pytest.raises(LabelMapError, match=r"instance id\(s\) 9 have class 0"):
        instance_classes(labels, t, 3, "s")
    t = types.copy()
    t[3:5, 3:5] = 4
    with pytest.raises(LabelMapError, match=r"class id 4 is outside the data set's classes 1..3 \(at row 3, column 3; instance id\(s\) 9\)"):
        instance_classes(labels, t, 3, "s")
    t = types.copy()
    t[5, 0] = 1
    with pytest.raises(LabelMapError, match="1 background pixel.*row 5, column 0"):
        instance_classes(labels, t, 3, "s")


def test_paint_classes():
    labels = np.array([[0, 3, 3], [7, 0, 0]], np.int32)
    out = paint_classes(labels, [7, 3, 99], [2, 1, 5], "s")
    np.testing.assert_array_equal(out, [[0, 1, 1], [2, 0, 0]])
    with pytest.raises(LabelMapError, match=r"instance id\(s\) 7 of the instance map have no entry in the list"):
        paint_classes(labels, [3], [1], "s", "the list")
    with pytest.raises(LabelMapError, match="id 3 is listed more than once .* different classes \\[1, 2\\]"):
        paint_classes(labels, [3, 7, 3], [1, 1, 2], "s")
    with pytest.raises(LabelMapError, match="2 ids but 1 classes"):
        paint_classes(labels, [3, 7], [1], "s")


def test_as_int_map():
    np.testing.assert_array_equal(as_int_map(np.array([0.0, 3.0]), "x"), [0, 3])
    for bad, msg in ((np.array([0.5]), "non-integral"), (np.array([-1]), "negative"), (np.array([np.nan]), "NaN"),
                     (np.array([True]), "dtype bool"), (np.array([2.0**40]), "int32")):
        with pytest.raises(ReaderError, match=msg):
            as_int_map(bad, "x")


def test_open_dataset_lists_every_layout(tmp_path):
    with pytest.raises(ReaderError) as exc:
        open_dataset(tmp_path)
    msg = str(exc.value)
    for word in ("PanNuke", "CoNIC", "Lizard", "CoNSeP", "Kumar", "CPM", "DSB 2018", "NuInsSeg", "MoNuSAC",
                 "PUMA", "_nuclei.geojson", "images/ and labels/", "MoNuSeg"):
        assert word in msg
    assert len(LAYOUTS) == 10
