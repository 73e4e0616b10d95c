"""HoVer-Net .mat layouts: CoNSeP (typed, 7 classes or HoVer-Net's 4), Kumar and CPM (untyped)."""

from __future__ import annotations

import numpy as np
import pytest
from dataset_fixtures import (
    assert_matches,
    check_real_sample,
    consep_mat,
    make_truth,
    real_dir,
    savemat,
    write_hovernet_split,
)

from insmix_fast.data import CONSEP_CLASSES, CONSEP_MERGED_CLASSES, HoVerNetDataset, open_dataset
from insmix_fast.errors import ConfigError, LabelMapError, ReaderError

pytest.importorskip("scipy.io")


@pytest.fixture()
def consep(tmp_path):
    train = [make_truth(i, n_classes=7) for i in range(3)]
    test = [make_truth(10 + i, n_classes=7) for i in range(2)]
    root = tmp_path / "CoNSeP"
    write_hovernet_split(root / "Train", train, [f"train_{i + 1}" for i in range(3)])
    write_hovernet_split(root / "Test", test, [f"test_{i + 1}" for i in range(2)])
    return root, train, test


def test_consep_read_exactly(consep, caplog):
    root, train, test = consep
    with caplog.at_level("INFO", logger="insmix_fast"):
        ds = open_dataset(root)
    assert "HoVer-Net .mat layout" in caplog.text
    assert isinstance(ds, HoVerNetDataset) and ds.flavour == "consep" and ds.class_names == CONSEP_CLASSES
    assert ds.splits == ["Test", "Train"] and len(ds) == 5
    assert ds.names == ["test_1", "test_2", "train_1", "train_2", "train_3"]
    assert any(np.unique(t[2]).size > 4 for t in train + test)
    for k, truth in enumerate(test + train):
        assert_matches(ds[k], truth)
    assert ds.split(0) == "Test" and ds.split(-1) == "Train"
    one = HoVerNetDataset(root / "Train")
    assert one.splits == [None] and len(one) == 3 and one.split(0) is None
    assert_matches(one[2], train[2])
    only = HoVerNetDataset(root, splits="train")
    assert len(only) == 3 and only.split(0) == "Train"
    with pytest.raises(ReaderError, match=r"split\(s\) \['valid'\] not found"):
        HoVerNetDataset(root, splits=["valid"])


def test_consep_merge_is_hovernets(consep):
    root, train, _ = consep
    ds = HoVerNetDataset(root / "Train", merge=True)
    assert ds.class_names == CONSEP_MERGED_CLASSES == ("background", "other", "inflammatory", "epithelial", "spindle-shaped")
    lut = np.array([0, 1, 2, 3, 3, 4, 4, 4])  # HoVer-Net dataset.py: 3|4 -> 3, 5|6|7 -> 4
    for k, (image, labels, types) in enumerate(train):
        assert_matches(ds[k], (image, labels, lut[types]))


def test_types_from_type_map(consep):
    root, train, _ = consep
    lab_path = root / "Train" / "Labels" / "train_1.mat"
    image, labels, types = train[0]
    arrays = consep_mat(labels, types)
    i = int(labels.max())
    arrays["type_map"] = np.where(labels == i, (types[labels == i][0] % 7) + 1, types).astype(np.float64)
    savemat(lab_path, **arrays)
    with pytest.raises(LabelMapError, match=rf"train_1.mat.*disagrees with 'inst_type'.*id {i}.*types_from='type_map'"):
        HoVerNetDataset(root / "Train")[0]
    _, _, typ = HoVerNetDataset(root / "Train", types_from="type_map")[0]
    np.testing.assert_array_equal(typ, arrays["type_map"].astype(np.int32))
    # a nucleus whose type_map pixels carry two classes
    arrays["type_map"][np.argwhere(labels == i)[0][0], np.argwhere(labels == i)[0][1]] = 1 if types[labels == i][0] != 1 else 2
    del arrays["inst_type"]  # only type_map is left: its pixels decide
    savemat(lab_path, **arrays)
    with pytest.raises(LabelMapError, match=rf"train_1.mat: instance\(s\) whose pixels carry several classes: id {i} "):
        HoVerNetDataset(root / "Train")[0]
    with pytest.raises(ConfigError, match="types_from"):
        HoVerNetDataset(root / "Train", types_from="pixels")


def test_consep_bad_labels(consep):
    root, train, _ = consep
    d = root / "Train"
    image, labels, types = train[1]
    arrays = consep_mat(labels, types)
    arrays["inst_type"] = arrays["inst_type"][:-1]
    savemat(d / "Labels" / "train_2.mat", **arrays)
    with pytest.raises(LabelMapError, match=rf"train_2.mat: instance id\(s\) {int(labels.max())} .*no row in 'inst_type'"):
        HoVerNetDataset(d)[1]
    arrays = consep_mat(labels, types)
    arrays["inst_type"][0, 0] = 9
    arrays["type_map"][labels == 1] = 9
    savemat(d / "Labels" / "train_2.mat", **arrays)
    with pytest.raises(LabelMapError, match=r"train_2.mat: class id 9 is outside the data set's classes 1..7.*instance id\(s\) 1"):
        HoVerNetDataset(d)[1]
    savemat(d / "Labels" / "train_2.mat", inst_map=labels.astype(np.float64) + 0.5)
    with pytest.raises(ReaderError, match="'inst_map': holds non-integral"):
        HoVerNetDataset(d)[1]
    savemat(d / "Labels" / "train_2.mat", inst_map=labels[:10].astype(np.float64), inst_type=arrays["inst_type"])
    with pytest.raises(ReaderError, match="does not match image"):
        HoVerNetDataset(d)[1]


def test_count_mismatch_and_missing_files(consep):
    root, _, _ = consep
    d = root / "Train"
    (d / "Labels" / "train_3.mat").unlink()
    with pytest.raises(ReaderError, match=r"count mismatch \(3 images, 2 .mat label files\).*train_3.png"):
        HoVerNetDataset(d)
    (d / "Images" / "train_3.png").unlink()
    (d / "Images" / "train_2.png").unlink()
    with pytest.raises(ReaderError, match=r"no image in .* for .mat label file\(s\) train_2.mat"):
        open_dataset(d)


def test_kumar_tif_untyped(tmp_path):
    truths = [make_truth(20 + i) for i in range(2)]
    root = tmp_path / "Kumar"
    write_hovernet_split(root / "train", truths[:1], ["TCGA-A7-A13E-01Z-00-DX1"], typed=False, suffix=".tif")
    write_hovernet_split(root / "test_same", truths[1:], ["TCGA-21-5784-01Z-00-DX1"], typed=False, suffix=".tif")
    ds = open_dataset(root)
    assert isinstance(ds, HoVerNetDataset) and ds.flavour == "untyped" and not ds.typed and ds.class_names is None
    assert ds.splits == ["test_same", "train"]
    assert_matches(ds[0], truths[1], typed=False)
    assert_matches(ds[1], truths[0], typed=False)
    with pytest.raises(ReaderError, match="merge=True needs CoNSeP classes"):
        HoVerNetDataset(root, merge=True)
    with pytest.raises(ReaderError, match="class_names given"):
        HoVerNetDataset(root, class_names=("background", "nucleus"))


def test_cpm_and_older_kumar_release_with_nested_images(tmp_path):
    truths = [make_truth(30 + i) for i in range(3)]
    root = tmp_path / "cpm17" / "train"
    write_hovernet_split(root, truths, ["image_00", "image_01", "image_02"], typed=False)
    ds = HoVerNetDataset(root.parent)
    assert len(ds) == 3 and not ds.typed
    for k, t in enumerate(truths):
        assert_matches(ds[k], t, typed=False)
    # the older Kumar release: Images/train, Images/test/same_tissue, one Labels/ folder
    old = tmp_path / "kumar_old"
    write_hovernet_split(old, truths[:2], ["a", "b"], typed=False, suffix=".tif")
    (old / "Images" / "test" / "same_tissue").mkdir(parents=True)
    (old / "Images" / "b.tif").rename(old / "Images" / "test" / "same_tissue" / "b.tif")
    ds = HoVerNetDataset(old)
    assert ds.names == ["a", "b"]
    assert_matches(ds[1], truths[1], typed=False)


def test_custom_class_names(consep):
    root, train, _ = consep
    names = ("background", *[f"c{i}" for i in range(1, 8)])
    ds = HoVerNetDataset(root / "Train", class_names=names)
    assert ds.class_names == names
    assert_matches(ds[0], train[0])
    with pytest.raises(ReaderError, match="'background'"):
        HoVerNetDataset(root / "Train", class_names=("tumour", "other"))


@pytest.mark.parametrize("var", ["INSMIX_CONSEP_DIR", "INSMIX_KUMAR_MAT_DIR", "INSMIX_CPM_DIR"])
def test_real_hovernet_layouts(var):
    ds = HoVerNetDataset(real_dir(var), fix_labels=True)
    for k in (0, len(ds) - 1):
        check_real_sample(ds, k)
    if var == "INSMIX_CONSEP_DIR":
        assert ds.flavour == "consep"
        check_real_sample(HoVerNetDataset(ds.root, merge=True, fix_labels=True), 0)
