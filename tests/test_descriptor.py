"""The packed 32×32 descriptor gives exactly the direct pixel XOR after centroid alignment."""

import numpy as np

from insmix_fast import InstanceBank
from insmix_fast.kernels.ssd import shape_xor

from reference import ellipse_labels
from reference import aligned_xor


def _bank_of_ellipses(seed, n, rmax):
    rng = np.random.default_rng(seed)
    specs = []
    size = 8 * rmax
    samples = []
    for _ in range(n):
        ry, rx = rng.integers(2, rmax, 2)
        specs = [(size // 2 + rng.integers(-3, 4), size // 2 + rng.integers(-3, 4), ry, rx, rng.uniform(0, 180))]
        lab = ellipse_labels((size, size), specs)
        img = np.zeros((size, size, 3), np.uint8)
        samples.append((img, lab))
    return InstanceBank.from_samples(samples, min_area=1, progress=False)


def test_shape_xor_matches_direct_pixel_xor_for_small_and_large_instances():
    bank = _bank_of_ellipses(0, 40, 30)  # radii up to 29: many masks overflow the 32×32 window
    assert 0 < bank.fits.sum() < len(bank), "need both fitting and overflowing descriptors"
    bt = bank.table
    crops = [bank.crop(t)[1] for t in range(len(bank))]
    checked = {"both_fit": 0, "one_fits": 0, "none_fits": 0}
    for i in range(len(bank)):
        for t in range(len(bank)):
            direct = aligned_xor(crops[i], tuple(bank.anchor[i]), crops[t], tuple(bank.anchor[t]))
            assert shape_xor(bt, i, bt, t) == direct, (i, t)
            key = "both_fit" if bank.fits[i] and bank.fits[t] else (
                "one_fits" if bank.fits[i] or bank.fits[t] else "none_fits")
            checked[key] += 1
    assert all(v > 0 for v in checked.values()), checked


def test_anchor_is_centroid_rounded_half_up():
    lab = np.zeros((20, 20), np.int32)
    lab[5:7, 5:9] = 1  # rows 5,6 -> mean 5.5 -> 6 ; cols 5..8 -> mean 6.5 -> 7
    bank = InstanceBank.from_samples([(np.zeros((20, 20, 3), np.uint8), lab)], min_area=1, progress=False)
    assert tuple(bank.anchor[0]) == (6 - 5, 7 - 5)
