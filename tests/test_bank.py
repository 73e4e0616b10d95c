import numpy as np
import pytest

from insmix_fast import BankError, InstanceBank, LabelMapError


def test_bank_is_sorted_flat_and_excludes_border_instances(tiles256, bank256):
    assert np.all(np.diff(bank256.area) >= 0)
    assert bank256.offset[-1] == bank256.masks.size and bank256.pixels.size == 3 * bank256.masks.size
    n_inner = 0
    for image, labels in tiles256:
        for i in np.unique(labels)[1:]:
            ys, xs = np.nonzero(labels == i)
            whole = ys.min() > 0 and xs.min() > 0 and ys.max() < labels.shape[0] - 1 and xs.max() < labels.shape[1] - 1
            whole = whole and not _encloses_other(labels, i)
            n_inner += bool(whole and len(ys) >= 10)
    assert len(bank256) == n_inner
    # a bank row is exactly its source instance
    for t in (0, len(bank256) // 2, len(bank256) - 1):
        rgb, mask = bank256.crop(t)
        image, labels = tiles256[bank256.source[t]]
        y0, x0 = bank256.source_origin[t]
        h, w = mask.shape
        src = labels[y0:y0 + h, x0:x0 + w] == bank256.source_label[t]
        assert np.array_equal(src, mask)
        assert np.array_equal(rgb[mask], image[y0:y0 + h, x0:x0 + w][mask])
        assert bank256.area[t] == mask.sum()


def test_save_load_roundtrip(tmp_path, bank256):
    path = bank256.save(tmp_path / "bank")
    assert path.suffix == ".npz"
    loaded = InstanceBank.load(path)
    for k in ("area", "anchor", "hw", "offset", "masks", "pixels", "desc", "fits", "source", "source_label"):
        assert np.array_equal(getattr(loaded, k), getattr(bank256, k)), k
    assert len(loaded) == len(bank256) and loaded.summary() == bank256.summary()


def test_load_rejects_missing_corrupt_and_foreign_files(tmp_path, bank256):
    with pytest.raises(BankError, match="not found"):
        InstanceBank.load(tmp_path / "nope.npz")
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"this is not a zip file")
    with pytest.raises(BankError, match="cannot read"):
        InstanceBank.load(bad)
    foreign = tmp_path / "foreign.npz"
    np.savez(foreign, x=np.zeros(3))
    with pytest.raises(BankError, match="not an insmix_fast instance bank"):
        InstanceBank.load(foreign)
    path = bank256.save(tmp_path / "ok.npz")
    with np.load(path) as z:
        data = dict(z)
    data["area"] = data["area"][::-1].copy()
    np.savez(tmp_path / "unsorted.npz", **data)
    with pytest.raises(BankError, match="sorted"):
        InstanceBank.load(tmp_path / "unsorted.npz")


def test_memory_is_proportional_to_instances_not_tiles():
    big = np.zeros((2048, 2048), np.int32)
    big[100:110, 100:112] = 1
    big[500:520, 700:709] = 7
    bank = InstanceBank.from_samples([(np.zeros((2048, 2048, 3), np.uint8), big)], progress=False)
    assert len(bank) == 2 and bank.nbytes < 4096


def test_invalid_instances_raise_or_are_skipped():
    lab = np.zeros((40, 40), np.int32)
    lab[5:10, 5:10] = 1
    lab[20:25, 20:25] = 1  # id 1 split in two pieces
    lab[10:20, 28:38] = 2
    lab[14:16, 32:34] = 0  # hole in id 2
    lab[30:36, 5:11] = 3
    img = np.zeros((40, 40, 3), np.uint8)
    with pytest.raises(LabelMapError, match=r"split.*\[1\].*holes.*\[2\]"):
        InstanceBank.from_samples([(img, lab)], min_area=1, progress=False)
    with pytest.warns(UserWarning, match="left out 2"):
        bank = InstanceBank.from_samples([(img, lab)], min_area=1, on_invalid="skip", progress=False)
    assert bank.source_label.tolist() == [3]


def test_bad_build_arguments():
    with pytest.raises(BankError, match="min_area"):
        InstanceBank.from_samples([], min_area=0)
    with pytest.raises(BankError, match="no samples"):
        InstanceBank.from_samples([], progress=False)
    with pytest.raises(BankError, match="not an"):
        InstanceBank.from_samples([np.zeros(3)], progress=False)


def test_summary_and_repr(bank256):
    s = bank256.summary()
    assert s["instances"] == len(bank256) and s["area_min"] <= s["area_median"] <= s["area_max"]
    assert "InstanceBank(" in repr(bank256) and "instances" in repr(bank256)


def _encloses_other(labels, i):
    from scipy import ndimage

    m = labels == i
    filled = ndimage.binary_fill_holes(m)
    return bool(np.any(labels[filled & ~m] != 0))


def test_ring_around_another_instance_is_left_out():
    lab = np.zeros((40, 40), np.int32)
    lab[5:20, 5:20] = 1
    lab[9:15, 9:15] = 2  # id 2 sits inside ring 1
    img = np.zeros((40, 40, 3), np.uint8)
    bank = InstanceBank.from_samples([(img, lab)], min_area=1, progress=False)
    assert bank.source_label.tolist() == [2]
