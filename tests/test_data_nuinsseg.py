"""NuInsSeg reader: organ folders, instance maps in 'label masks modify', vague areas as an ignore mask."""

from __future__ import annotations

import numpy as np
import pytest
from dataset_fixtures import assert_matches, check_real_sample, make_truth, real_dir, write_nuinsseg_organ

from insmix_fast.data import MoNuSegDataset, NuInsSegDataset, open_dataset
from insmix_fast.errors import ReaderError


@pytest.fixture()
def nuinsseg(tmp_path):
    liver = [make_truth(60 + i) for i in range(2)]
    brain = [make_truth(70)]
    vague = np.zeros(liver[0][1].shape, bool)
    vague[5:15, 20:35] = True
    write_nuinsseg_organ(tmp_path / "human liver", liver, ["human_liver_01", "human_liver_02"], vague=[vague, None])
    write_nuinsseg_organ(tmp_path / "mouse brain", brain, ["mouse_brain_01"])
    return tmp_path, liver, brain, vague


def test_read_exactly_with_ignore_mask(nuinsseg, caplog):
    root, liver, brain, vague = nuinsseg
    with caplog.at_level("INFO", logger="insmix_fast"):
        ds = open_dataset(root)
    assert "NuInsSeg layout" in caplog.text
    assert isinstance(ds, NuInsSegDataset) and not ds.typed and len(ds) == 3
    for k, t in enumerate(liver + brain):
        assert_matches(ds[k], t, typed=False)
    assert ds.organ(0) == "human liver" and ds.organ(-1) == "mouse brain"
    m = ds.ignore_mask(0)
    assert m.dtype == bool and np.array_equal(m, vague)
    assert not ds.ignore_mask(1).any() and ds.ignore_mask(1).shape == liver[1][1].shape
    one = NuInsSegDataset(root / "mouse brain")
    assert len(one) == 1 and one.organ(0) == "mouse brain"
    assert NuInsSegDataset(root, organs="human liver").names == ["human_liver_01", "human_liver_02"]
    with pytest.raises(ReaderError, match=r"organ folder\(s\) \['human lung'\] not found"):
        NuInsSegDataset(root, organs=["human lung"])


def test_missing_files(nuinsseg):
    root, *_ = nuinsseg
    (root / "human liver" / "label masks modify" / "human_liver_02.tif").unlink()
    with pytest.raises(ReaderError, match=r"count mismatch \(2 images, 1 label masks\).*human_liver_02.png"):
        NuInsSegDataset(root)
    for f in (root / "human liver" / "label masks modify").iterdir():
        f.unlink()
    (root / "human liver" / "label masks modify").rmdir()
    with pytest.raises(ReaderError, match="human liver: NuInsSeg organ folder has no 'label masks modify/'"):
        open_dataset(root)


def test_vague_mask_size_checked(nuinsseg):
    root, *_ = nuinsseg
    import cv2

    cv2.imwrite(str(root / "human liver" / "vague areas" / "mask binary" / "human_liver_01.png"), np.zeros((4, 4), np.uint8))
    with pytest.raises(ReaderError, match="vague-area mask size"):
        NuInsSegDataset(root).ignore_mask(0)


def test_monuseg_tissue_images_is_not_nuinsseg(tmp_path):
    """MoNuSeg's 'Tissue Images' + 'Annotations' must still open as MoNuSeg."""
    import cv2

    (tmp_path / "Tissue Images").mkdir()
    (tmp_path / "Annotations").mkdir()
    cv2.imwrite(str(tmp_path / "Tissue Images" / "a.tif"), np.zeros((8, 8, 3), np.uint8))
    (tmp_path / "Annotations" / "a.xml").write_text("<Annotations></Annotations>")
    assert isinstance(open_dataset(tmp_path), MoNuSegDataset)


def test_real_nuinsseg():
    ds = NuInsSegDataset(real_dir("INSMIX_NUINSSEG_DIR"), fix_labels=True)
    for k in (0, len(ds) - 1):
        check_real_sample(ds, k)
        assert ds.ignore_mask(k).shape == ds[k][1].shape
