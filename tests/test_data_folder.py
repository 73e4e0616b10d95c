"""Tests of insmix_fast.data.io (file readers) and insmix_fast.data.folder."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

import insmix_fast.data.io as dio
from insmix_fast.data import (
    FolderDataset,
    SyntheticNuclei,
    open_dataset,
    read_image,
    read_label_map,
    write_folder,
)
from insmix_fast.errors import LabelMapError, ReaderError


def _rgb(h: int = 20, w: int = 30, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def _write_bgr(path: Path, arr: np.ndarray) -> Path:
    """Write with OpenCV (arr is given in RGB(A) or single-channel)."""
    if arr.ndim == 3 and arr.shape[2] == 3:
        arr = cv2.cvtColor(arr, cv2.COLOR_RGB2BGR)
    elif arr.ndim == 3 and arr.shape[2] == 4:
        arr = cv2.cvtColor(arr, cv2.COLOR_RGBA2BGRA)
    assert cv2.imwrite(str(path), arr)
    return path


# ----------------------------------------------------------------------------- read_image


def test_read_image_png_rgb_order(tmp_path):
    img = _rgb()
    img[0, 0] = (255, 0, 0)  # pure red must stay in channel 0
    out = read_image(_write_bgr(tmp_path / "a.png", img))
    np.testing.assert_array_equal(out, img)
    assert out.dtype == np.uint8 and out.flags.c_contiguous


def test_read_image_rgba_drops_alpha(tmp_path):
    rgba = np.dstack([_rgb(), np.full((20, 30), 7, np.uint8)])
    out = read_image(_write_bgr(tmp_path / "a.png", rgba))
    np.testing.assert_array_equal(out, rgba[..., :3])


def test_read_image_gray(tmp_path):
    gray = _rgb()[..., 0].copy()
    p = _write_bgr(tmp_path / "g.png", gray)
    with pytest.raises(ReaderError, match="grayscale") as exc:
        read_image(p)
    assert "g.png" in str(exc.value)
    out = read_image(p, allow_gray=True)
    assert out.shape == (20, 30, 3)
    np.testing.assert_array_equal(out[..., 2], gray)


def test_read_image_16bit_is_rejected(tmp_path):
    p = _write_bgr(tmp_path / "deep.png", (_rgb().astype(np.uint16) * 200))
    with pytest.raises(ReaderError, match="uint16"):
        read_image(p)


def test_read_image_missing_corrupt_and_unsupported(tmp_path):
    with pytest.raises(ReaderError, match="nothere.png"):
        read_image(tmp_path / "nothere.png")
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"not a png at all")
    with pytest.raises(ReaderError, match="broken.png"):
        read_image(bad)
    odd = tmp_path / "x.gif"
    odd.write_bytes(b"GIF89a")
    with pytest.raises(ReaderError, match="unsupported"):
        read_image(odd)


def test_read_image_jpg_and_bmp(tmp_path):
    img = np.zeros((16, 16, 3), np.uint8)
    img[:, :8] = (200, 40, 60)
    out = read_image(_write_bgr(tmp_path / "a.jpg", img))
    assert abs(int(out[4, 2, 0]) - 200) < 12 and abs(int(out[4, 2, 2]) - 60) < 12
    np.testing.assert_array_equal(read_image(_write_bgr(tmp_path / "a.bmp", img)), img)


@pytest.mark.parametrize("use_tifffile", [True, False])
def test_read_image_tif(tmp_path, monkeypatch, use_tifffile):
    img = _rgb(12, 9, seed=3)
    p = tmp_path / "t.tif"
    if use_tifffile:
        tifffile = pytest.importorskip("tifffile")
        tifffile.imwrite(str(p), img, photometric="rgb")
    else:
        monkeypatch.setattr(dio, "_tifffile", None)
        _write_bgr(p, img)
    np.testing.assert_array_equal(read_image(p), img)


# ----------------------------------------------------------------------------- read_label_map


def test_read_label_map_png_8_and_16_bit(tmp_path):
    lab = np.zeros((10, 12), np.uint16)
    lab[2:5, 2:5] = 40000
    lab[6:8, 6:9] = 3
    out = read_label_map(_write_bgr(tmp_path / "l16.png", lab))
    assert out.dtype == np.int32
    np.testing.assert_array_equal(out, lab.astype(np.int32))
    out8 = read_label_map(_write_bgr(tmp_path / "l8.png", (lab > 0).astype(np.uint8) * 5))
    assert set(np.unique(out8).tolist()) == {0, 5}


def test_read_label_map_npy(tmp_path):
    lab = np.arange(12, dtype=np.int64).reshape(3, 4) * 100000
    np.save(tmp_path / "a.npy", lab)
    np.testing.assert_array_equal(read_label_map(tmp_path / "a.npy"), lab)
    np.save(tmp_path / "f.npy", lab.astype(np.float64))
    assert read_label_map(tmp_path / "f.npy").dtype == np.int32
    np.save(tmp_path / "frac.npy", lab.astype(np.float64) + 0.5)
    with pytest.raises(ReaderError, match="non-integral"):
        read_label_map(tmp_path / "frac.npy")
    np.save(tmp_path / "neg.npy", -np.ones((3, 3), np.int32))
    with pytest.raises(ReaderError, match="negative"):
        read_label_map(tmp_path / "neg.npy")
    np.save(tmp_path / "big.npy", np.full((2, 2), 2**40, np.int64))
    with pytest.raises(ReaderError, match="int32"):
        read_label_map(tmp_path / "big.npy")
    np.save(tmp_path / "cube.npy", np.zeros((2, 2, 2), np.int32))
    with pytest.raises(ReaderError, match="2-D"):
        read_label_map(tmp_path / "cube.npy")


def test_read_label_map_rejects_colour(tmp_path):
    colour = _rgb(8, 8)
    p = _write_bgr(tmp_path / "colour.png", colour)
    with pytest.raises(ReaderError, match="single-channel") as exc:
        read_label_map(p)
    assert "colour.png" in str(exc.value)
    # a grey image saved as RGB (identical channels) is accepted
    grey = np.repeat(colour[..., :1], 3, axis=2)
    np.testing.assert_array_equal(read_label_map(_write_bgr(tmp_path / "grey.png", grey)), colour[..., 0])


def test_read_label_map_tif_uint32(tmp_path):
    tifffile = pytest.importorskip("tifffile")
    lab = np.zeros((6, 7), np.uint32)
    lab[1:3, 1:3] = 100000
    tifffile.imwrite(str(tmp_path / "l.tif"), lab)
    np.testing.assert_array_equal(read_label_map(tmp_path / "l.tif"), lab.astype(np.int32))


def test_read_label_map_missing(tmp_path):
    with pytest.raises(ReaderError, match="gone.npy"):
        read_label_map(tmp_path / "gone.npy")


# ----------------------------------------------------------------------------- FolderDataset


@pytest.fixture()
def samples():
    return SyntheticNuclei(seed=21, size=48, length=3)[:]


def test_write_and_read_folder_roundtrip(tmp_path, samples):
    root = write_folder(tmp_path / "ds", samples, names=["c", "a", "b"])
    assert sorted(p.name for p in (root / "labels").iterdir()) == ["a.png", "b.png", "c.png"]
    ds = FolderDataset(root)
    assert len(ds) == 3 and ds.names == ["a", "b", "c"]
    image, labels = ds[2]  # "c" is sample 0
    np.testing.assert_array_equal(image, samples[0][0])
    np.testing.assert_array_equal(labels, samples[0][1])
    np.testing.assert_array_equal(ds[-3][1], samples[1][1])
    with pytest.raises(IndexError):
        ds[3]
    assert isinstance(open_dataset(str(root)), FolderDataset)


def test_write_folder_large_ids_go_to_npy(tmp_path, samples):
    image, labels = samples[0]
    big = np.where(labels > 0, labels + 70000, 0).astype(np.int32)
    root = write_folder(tmp_path / "ds", [(image, big)])
    assert (root / "labels" / "0000.npy").exists()
    np.testing.assert_array_equal(FolderDataset(root)[0][1], big)
    # rewriting with small ids replaces the npy with a png (no stale duplicate)
    write_folder(root, [(image, labels)])
    assert not (root / "labels" / "0000.npy").exists()
    np.testing.assert_array_equal(FolderDataset(root)[0][1], labels)


def test_folder_missing_label_names_image(tmp_path, samples):
    root = write_folder(tmp_path / "ds", samples)
    (root / "labels" / "0001.png").unlink()
    with pytest.raises(ReaderError, match="0001.png"):
        FolderDataset(root)


def test_folder_missing_or_empty_dirs(tmp_path):
    with pytest.raises(ReaderError, match="images"):
        FolderDataset(tmp_path / "nothing")
    (tmp_path / "e" / "images").mkdir(parents=True)
    (tmp_path / "e" / "labels").mkdir()
    with pytest.raises(ReaderError, match="no image files"):
        FolderDataset(tmp_path / "e")


def test_folder_size_mismatch_names_file(tmp_path, samples):
    root = write_folder(tmp_path / "ds", samples)
    np.save(root / "labels" / "0002.npy", np.zeros((10, 10), np.int32))
    (root / "labels" / "0002.png").unlink()
    ds = FolderDataset(root)
    ds[0]
    with pytest.raises(ReaderError, match="0002.npy"):
        ds[2]


def test_folder_duplicate_stem(tmp_path, samples):
    root = write_folder(tmp_path / "ds", samples)
    np.save(root / "labels" / "0000.npy", samples[0][1])
    with pytest.raises(ReaderError, match="0000"):
        FolderDataset(root)


def test_folder_topology_check_and_fix(tmp_path, samples):
    image, labels = samples[0]
    bad = labels.copy()
    bad[0:3, 0:3] = 999
    bad[-3:, -3:] = 999  # id 999 in two pieces
    root = write_folder(tmp_path / "ds", [(image, bad)], names=["broken"])
    ds = FolderDataset(root)
    with pytest.raises(LabelMapError, match="broken.png") as exc:
        ds[0]
    assert "999" in str(exc.value)
    fixed = FolderDataset(root, fix_labels=True)[0][1]
    assert (fixed[0:3, 0:3] == 999).all() != (fixed[-3:, -3:] == 999).all()
    from insmix_fast.data import find_label_problems

    assert find_label_problems(fixed).ok
    raw = FolderDataset(root, check=False)[0][1]
    np.testing.assert_array_equal(raw, bad)


def test_write_folder_validates(tmp_path, samples):
    with pytest.raises(ValueError):
        write_folder(tmp_path / "x", samples, names=["a", "b"])
    with pytest.raises(ValueError):
        write_folder(tmp_path / "x", samples, names=["a", "a", "b"])
    with pytest.raises(ValueError):
        write_folder(tmp_path / "x", [(samples[0][0], samples[0][1][:5])])


def test_open_dataset_rejects_unknown(tmp_path):
    with pytest.raises(ReaderError, match="Accepted"):
        open_dataset(str(tmp_path))
    with pytest.raises(ReaderError, match="not a folder"):
        open_dataset(str(tmp_path / "missing"))
    with pytest.raises(ReaderError, match="integer"):
        open_dataset("synthetic:abc")
    d = open_dataset("synthetic:7", size=32, length=2)
    assert isinstance(d, SyntheticNuclei) and d.seed == 7 and len(d) == 2
    assert open_dataset("synthetic").seed == 0
