"""Mix baselines keep instance maps valid, keep their promised proportions, are seeded."""

import numpy as np
import pytest

from insmix_fast import baselines as B
from insmix_fast.data.labels import find_label_problems
from insmix_fast.errors import ConfigError, InputError, InputTypeError

import cv2


def _sample(seed, size=64, n=12):
    rng = np.random.default_rng(seed)
    img = np.empty((size, size, 3), np.uint8)
    img[:] = (230, 200, 220)
    img = np.clip(img.astype(int) + rng.integers(-10, 10, img.shape), 0, 255).astype(np.uint8)
    lab = np.zeros((size, size), np.int32)
    for k in range(1, n + 1):
        cy, cx = rng.integers(4, size - 4, 2)
        ax = (int(rng.integers(3, 7)), int(rng.integers(3, 7)))
        m = np.zeros_like(lab, np.uint8)
        cv2.ellipse(m, (int(cx), int(cy)), ax, float(rng.uniform(0, 180)), 0, 360, 1, -1)
        lab[m > 0] = k
        img[m > 0] = (90 + 5 * k, 40, 120)
    from insmix_fast.data.labels import clean_labels
    return img, clean_labels(lab, min_size=8)


def _valid(labels):
    assert labels.dtype == np.int32
    assert labels.min() >= 0
    probs = find_label_problems(labels)
    assert probs.split_ids.size == 0, probs.describe()
    # no orphan fragments: every instance ≥ min_area (8)
    ids, counts = np.unique(labels[labels > 0], return_counts=True)
    assert (counts >= 8).all()


POL = [B.MixUp(), B.CutOut(), B.CutMix(), B.CowOut(), B.CowMix(), B.CopyPaste(), B.CopyPaste(scale_range=(0.5, 2.0))]


@pytest.mark.parametrize("pol", POL, ids=lambda p: repr(p))
def test_valid_deterministic(pol):
    a, la = _sample(1)
    b, lb = _sample(2)
    for seed in range(6):
        r = pol(a, la, b, lb, seed=seed, index=3)
        _valid(r.labels)
        assert r.image.dtype == np.uint8 and r.image.shape == a.shape
        assert r.mask.shape == la.shape and r.mask.dtype == bool
        assert 0.0 <= r.lam <= 1.0
        r2 = pol(a, la, b, lb, seed=seed, index=3)
        np.testing.assert_array_equal(r.image, r2.image)
        np.testing.assert_array_equal(r.labels, r2.labels)
        np.testing.assert_array_equal(r.mask, r2.mask)
        # outside the mask, labels of the first sample are kept unless a fragment was relabelled
        if pol.name != "mixup":
            np.testing.assert_array_equal(r.image[~r.mask], a[~r.mask])
            if pol.needs_partner and getattr(pol, "scale_range", None) is None:
                np.testing.assert_array_equal(r.image[r.mask], b[r.mask])
    outs = {pol(a, la, b, lb, seed=s).mask.tobytes() + pol(a, la, b, lb, seed=s).image.tobytes() for s in range(5)}
    assert len(outs) > 1  # the seed matters


def test_partner_ids_offset_and_unique():
    a, la = _sample(1)
    b, lb = _sample(2)
    r = B.cutmix(a, la, b, lb, seed=4)
    from_partner = np.unique(r.labels[r.mask])
    from_partner = from_partner[from_partner > 0]
    from_self = np.unique(r.labels[~r.mask])
    from_self = from_self[from_self > 0]
    # an id present on both sides of the box edge can only be one instance of one source
    assert (from_partner > la.max()).all()


def test_cut_instances_split_get_new_ids():
    img = np.full((32, 32, 3), 200, np.uint8)
    lab = np.zeros((32, 32), np.int32)
    lab[10:20, 2:30] = 5  # a long bar
    pimg = np.zeros_like(img)
    plab = np.zeros_like(lab)

    class Mid(B.MixPolicy):  # a mask that cuts the bar in its middle
        def _mix(self, image, labels, pimage, plabels, rp, rm):
            mask = np.zeros(labels.shape, bool)
            mask[:, 14:18] = True
            lab = labels.copy()
            lab[mask] = 0
            lab[10:20, 29] = 0
            lab[15, 29] = 5  # a tiny tail, still connected → stays
            return image, lab, mask, 0.5

    r = Mid()(img, lab, pimg, plab, seed=0)
    ids = np.unique(r.labels)
    assert list(ids[:2]) == [0, 5] and ids.size == 3  # left keeps 5 (ties: first), right new id
    _valid(r.labels)


def test_mixup_proportion_and_dominant_labels():
    a, la = _sample(1)
    b, lb = _sample(2)
    for s in range(20):
        r = B.mixup(a, la, b, lb, seed=s, alpha=1.0)
        expect = r.lam * a.astype(float) + (1 - r.lam) * b.astype(float)
        assert np.abs(r.image.astype(float) - expect).max() <= 0.5 + 1e-6
        if r.lam >= 0.5:
            np.testing.assert_array_equal(r.labels, la)
            assert not r.mask.any()
        else:
            assert r.mask.all()
            np.testing.assert_array_equal(r.labels > 0, lb > 0)


def test_cutmix_box_area_matches_lam():
    a, la = _sample(1, size=128)
    b, lb = _sample(2, size=128)
    lams, areas = [], []
    for s in range(200):
        r = B.cutmix(a, la, b, lb, seed=s)
        assert abs(r.lam - (1 - r.mask.mean())) < 1e-12
        ys, xs = np.nonzero(r.mask)
        if ys.size:  # the mask is one axis-aligned box
            assert r.mask[ys.min() : ys.max() + 1, xs.min() : xs.max() + 1].all()
        lams.append(r.lam)
    # lam ~ Beta(1,1) before clipping, clipping only raises it: mean in [0.5, 0.75]
    assert 0.5 <= np.mean(lams) <= 0.8


@pytest.mark.parametrize("cls,rng_attr", [(B.CowMix, "prop_range"), (B.CowOut, "prop_range")])
def test_cow_proportion(cls, rng_attr):
    a, la = _sample(1, size=96)
    b, lb = _sample(2, size=96)
    for p in (0.3, 0.5, 0.7):
        pol = cls(prop_range=(p, p), sigma_range=(4, 4))
        r = pol(a, la, b, lb, seed=p.__hash__() % 1000)
        assert abs(r.mask.mean() - (1 - p)) <= 1.0 / (96 * 96) + 1e-9
        # a cow mask is blobby, not salt-and-pepper: few boundary pixels
        edge = (r.mask[1:, :] != r.mask[:-1, :]).mean()
        assert edge < 0.15


def test_cow_mask_exact_fraction():
    rng = B.make_rng(0, 0)
    for p in (0.0, 0.1, 0.5, 0.9, 1.0):
        m = B.cow_mask((50, 70), p, 6.0, rng)
        assert m.sum() == round(p * 50 * 70)


def test_cutout_fills_and_zeroes_labels():
    a, la = _sample(1)
    r = B.cutout(a, la, seed=3, size=0.5, fill=(1, 2, 3))
    assert r.mask.any()
    assert (r.image[r.mask] == (1, 2, 3)).all()
    assert (r.labels[r.mask] == 0).all()
    assert r.mask.sum() <= 32 * 32
    _valid(r.labels)


def test_copy_paste_all_instances():
    a, la = _sample(1)
    b, lb = _sample(2)
    r = B.copy_paste(a, la, b, lb, seed=0, p_instance=1.0)
    np.testing.assert_array_equal(r.mask, lb > 0)
    r0 = B.copy_paste(a, la, b, lb, seed=0, p_instance=0.0)
    assert not r0.mask.any()
    np.testing.assert_array_equal(r0.labels, la)


@pytest.mark.parametrize("pol", POL[:6], ids=lambda p: p.name)
def test_batch_matches_single(pol):
    samples = [_sample(s, size=48, n=8) for s in range(5)]
    imgs = np.stack([s[0] for s in samples])
    labs = np.stack([s[1] for s in samples])
    idx = np.array([10, 11, 12, 13, 14])
    res = pol.batch(imgs, labs, seed=7, indices=idx)
    assert sorted(res.partners.tolist()) == list(range(5))
    assert (res.partners != np.arange(5)).all()
    for i in range(5):
        j = res.partners[i]
        r = pol(imgs[i], labs[i], imgs[j], labs[j], seed=7, index=int(idx[i]))
        np.testing.assert_array_equal(res.image[i], r.image)
        np.testing.assert_array_equal(res.labels[i], r.labels)
        assert res.lam[i] == r.lam
    res2 = pol.batch(imgs, labs, seed=7, indices=idx)
    np.testing.assert_array_equal(res.labels, res2.labels)


def test_bad_input():
    a, la = _sample(1)
    b, lb = _sample(2)
    with pytest.raises(InputError):
        B.cutmix(a, la, b[:10], lb[:10])
    with pytest.raises(InputError):
        B.cutmix(a.astype(np.float32), la, b, lb)
    with pytest.raises(InputError):
        B.cutmix(a, la.astype(np.float32), b, lb)
    with pytest.raises(InputError):
        B.cutmix(a, -la, b, lb)
    with pytest.raises(InputTypeError):
        B.cutmix(a, la, b, lb, seed=1.5)
    with pytest.raises(InputError):
        B.cutmix(a, la, b, lb, seed=-1)
    with pytest.raises(InputError):
        B.cutmix(a, la, b, lb, index=-2)
    with pytest.raises(InputTypeError):
        B.mixup(a, la, b.tolist(), lb)
    with pytest.raises(ConfigError):
        B.MixUp(alpha=0)
    with pytest.raises(ConfigError):
        B.CowMix(prop_range=(0.8, 0.2))
    with pytest.raises(ConfigError):
        B.CutOut(size=2.0)
    with pytest.raises(ConfigError):
        B.CutOut(fill=300)
    with pytest.raises(ConfigError):
        B.CopyPaste(p_instance=1.5)
    with pytest.raises(InputError):
        B.CutMix().batch(a, la)
    with pytest.raises(InputError):
        big = la.copy()
        big[big > 0] += 2**31 - 100
        B.mixup(a, big, b, lb + 100, seed=1, alpha=1.0)  # partner ids cannot be offset above int32
