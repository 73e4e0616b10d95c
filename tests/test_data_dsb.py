"""Data Science Bowl 2018 reader: one binary mask file per nucleus."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from dataset_fixtures import assert_matches, check_real_sample, make_truth, real_dir, write_dsb, write_rgb

from insmix_fast.data import DSB2018Dataset, open_dataset
from insmix_fast.errors import ConfigError, LabelMapError, ReaderError

IDS = ["0a7d30b252359a10fd298b638b90cb9ada3acced4e0c0e5a3692013f432ee4e9", "1b44d22643830cd4f23c9deadb0bd499fb392fb2"]


@pytest.fixture()
def dsb(tmp_path):
    truths = [make_truth(50 + i) for i in range(2)]
    write_dsb(tmp_path / "stage1_train", truths, IDS)
    return tmp_path, truths


def test_read_exactly(dsb, caplog):
    root, truths = dsb
    with caplog.at_level("INFO", logger="insmix_fast"):
        ds = open_dataset(root)
    assert "DSB 2018 layout" in caplog.text
    assert isinstance(ds, DSB2018Dataset) and not ds.typed and ds.names == IDS
    for k, t in enumerate(truths):
        assert_matches(ds[k], t, typed=False)  # RGBA: alpha dropped; one id per mask file
    assert len(ds.mask_paths(0)) == truths[0][1].max()
    assert isinstance(open_dataset(root / "stage1_train"), DSB2018Dataset)


def test_overlap_and_empty_masks(dsb):
    root, truths = dsb
    d = root / "stage1_train" / IDS[1] / "masks"
    labels = truths[1][1]
    first = sorted(d.iterdir())[0]
    m = cv2.imread(str(first), cv2.IMREAD_UNCHANGED) > 0
    ys, xs = np.nonzero(m)
    over = np.zeros_like(m)
    over[ys.min() : ys.max() + 1, xs.min() : xs.max() + 3] = True  # overlaps the first mask, two columns wider
    cv2.imwrite(str(d / "ffff.png"), over.astype(np.uint8) * 255)
    cv2.imwrite(str(d / "eeee.png"), np.zeros_like(labels, np.uint8))  # empty: adds no id
    _, lab = DSB2018Dataset(root)[1]
    assert lab.max() == labels.max() + 1
    assert np.unique(lab[m]).size == 1 and lab[ys[0], xs[0]] != lab[ys.min(), xs.max() + 2]
    with pytest.raises(LabelMapError, match=rf"ffff.png: mask overlaps {first.name} on {int(m.sum())} pixel.*{IDS[1]}"):
        DSB2018Dataset(root, overlap="raise")[1]
    with pytest.raises(ConfigError, match="overlap"):
        DSB2018Dataset(root, overlap="last")


def test_missing_files(dsb):
    root, _ = dsb
    stage = root / "stage1_train"
    write_rgb(stage / "c0ffee" / "images" / "c0ffee.png", np.zeros((8, 8, 3), np.uint8))
    with pytest.raises(ReaderError, match=r"sample folder\(s\) c0ffee have no masks/ folder"):
        DSB2018Dataset(root)
    (stage / "c0ffee" / "masks").mkdir()
    assert len(DSB2018Dataset(root)) == 3
    (stage / "c0ffee" / "images" / "c0ffee.png").rename(stage / "c0ffee" / "images" / "other.png")
    with pytest.raises(ReaderError, match=r"c0ffee have no images/<id>.png"):
        DSB2018Dataset(root)
    cv2.imwrite(str(stage / IDS[0] / "masks" / "small.png"), np.full((5, 5), 255, np.uint8))
    (stage / "c0ffee" / "images" / "other.png").rename(stage / "c0ffee" / "images" / "c0ffee.png")
    with pytest.raises(ReaderError, match="small.png: mask size"):
        DSB2018Dataset(root)[0]


def test_real_dsb():
    ds = DSB2018Dataset(real_dir("INSMIX_DSB_DIR"), fix_labels=True)
    for k in (0, len(ds) - 1):
        check_real_sample(ds, k)
