"""Traditional augmentations: exact label warp, reflected copies, colour, blur, batching, errors."""

import math

import cv2
import numpy as np
import pytest

from insmix_fast.augment import (P_MAXID, TAP_BITS, TraditionalAugment, colour_matrix, area_filter, crop_stats,
                                 gaussian_taps, reflect101, reflect_canvas, reflection_cell, traditional_augment)
from insmix_fast.errors import ConfigError, InputError

from test_baselines import _sample

NO_COLOUR = dict(brightness=0, contrast=0, saturation=0, hue=0, blur_p=0)


def _reference_labels(aug, lab, seed, index):
    """The label warp written out in float64 (exact: the matrix entries are dyadic): floor of the
    source coordinate, reflect-101, reflected copies coded v + M·code, small ids cleared."""
    h, w = lab.shape
    d = aug.draw(lab.shape, seed, index)
    m = int(lab.max())
    r = aug.cell_range(lab.shape)
    side = 2 * r + 1
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float64)
    sx = np.floor(d.matrix[0, 0] * (xs + 0.5) + d.matrix[0, 1] * (ys + 0.5) + d.matrix[0, 2]).astype(np.int64)
    sy = np.floor(d.matrix[1, 0] * (xs + 0.5) + d.matrix[1, 1] * (ys + 0.5) + d.matrix[1, 2]).astype(np.int64)
    out = np.zeros((h, w), np.int64)
    for y in range(h):
        for x in range(w):
            iy, ix = int(sy[y, x]), int(sx[y, x])
            v = int(lab[reflect101(iy, h), reflect101(ix, w)])
            cy, cx = reflection_cell(iy, h), reflection_cell(ix, w)
            if v and (cy or cx):
                cy, cx = min(max(cy, -r), r), min(max(cx, -r), r)
                idx = (cy + r) * side + (cx + r)
                centre = r * side + r
                v += m * (idx + 1 if idx < centre else idx)
            out[y, x] = v
    ids, cnt = np.unique(out[out > 0], return_counts=True)
    out[np.isin(out, ids[cnt < aug.min_area])] = 0
    return out


def test_labels_are_the_exact_nearest_warp_and_deterministic():
    img, lab = _sample(3, size=48)
    aug = TraditionalAugment(scale=(0.6, 1.3))
    for s in range(6):
        a, l = aug(img, lab, seed=s, index=2)
        assert a.dtype == np.uint8 and a.shape == img.shape
        assert l.dtype == np.int32 and l.shape == lab.shape
        np.testing.assert_array_equal(l, _reference_labels(aug, lab, s, 2))
        ids, cnt = np.unique(l[l > 0], return_counts=True)
        assert (cnt >= aug.min_area).all()
        a2, l2 = aug(img, lab, seed=s, index=2)
        np.testing.assert_array_equal(a, a2)
        np.testing.assert_array_equal(l, l2)
    a3, _ = aug(img, lab, seed=0, index=3)
    a4, _ = aug(img, lab, seed=0, index=2)
    assert not np.array_equal(a3, a4)


def test_reflected_copies_get_their_own_ids():
    """Zooming out shows mirror images of the crop: their instances get ids above the crop's largest."""
    img, lab = _sample(8, size=48, n=16)
    m = int(lab.max())
    aug = TraditionalAugment(scale=(0.5, 0.55), rotate=0, shift=0, flip=False, **NO_COLOUR)
    _, l = aug(img, lab, seed=1)
    k = aug.id_factor(lab.shape)
    copies = np.unique(l[l > m])
    assert copies.size > 0 and copies.max() <= m * k
    base = (copies - 1) % m + 1  # v + m·code → v
    assert set(base.tolist()) <= set(np.unique(lab[lab > 0]).tolist())
    # a copy and its original are different instances: no id is both inside and mirrored
    inside = np.unique(l[(l > 0) & (l <= m)])
    assert inside.size > 0


def test_instances_cut_to_slivers_are_dropped():
    lab = np.zeros((32, 32), np.int32)
    lab[0:3, 10:13] = 1  # 9 px at the top border, mostly shifted out
    lab[10:20, 10:20] = 2
    img = np.full((32, 32, 3), 200, np.uint8)
    aug = TraditionalAugment(scale=(1, 1), rotate=0, shift=0, flip=False, min_area=30, **NO_COLOUR)
    _, l = aug(img, lab, seed=0)
    assert set(np.unique(l).tolist()) == {0, 2}  # the 9-pixel instance is below min_area=30
    area_filter(l, 2, 1, 200)
    assert not l.any()


def test_geometry_moves_image_and_labels_together():
    img, lab = _sample(4, size=96, n=20)
    enc = np.zeros_like(img)
    enc[lab > 0] = 255
    aug = TraditionalAugment(scale=(0.7, 1.3), rotate=180, **NO_COLOUR)
    for s in range(6):
        a, l = aug(enc, lab, seed=s)
        agree = ((a[..., 0] > 127) == (l > 0)).mean()
        assert agree > 0.97, (s, agree)
        assert not np.array_equal(l > 0, lab > 0)


def test_identity_and_flips_are_exact():
    img, lab = _sample(5, size=40)
    ident = TraditionalAugment(scale=(1, 1), shift=0, rotate=0, flip=False, **NO_COLOUR)
    a, l = ident(img, lab, seed=4)
    np.testing.assert_array_equal(a, img)
    np.testing.assert_array_equal(l, lab)
    aug = TraditionalAugment(scale=(1, 1), shift=0, rotate=0, **NO_COLOUR)
    seen = set()
    for s in range(12):
        a, l = aug(img, lab, seed=s)
        for name, f in (("id", lambda x: x), ("h", lambda x: x[:, ::-1]), ("v", lambda x: x[::-1]),
                        ("hv", lambda x: x[::-1, ::-1])):
            if np.array_equal(a, f(img)) and np.array_equal(l, f(lab)):
                seen.add(name)
                break
        else:
            raise AssertionError("flip-only result is not a flip of the input")
    assert len(seen) >= 3


def test_image_warp_is_close_to_opencv():
    """Bilinear with 2**-F weights vs OpenCV's 1/32-pixel fixed point: a grey level or two apart."""
    img, lab = _sample(9, size=64)
    img = cv2.GaussianBlur(img, (5, 5), 1.5)  # smooth content, as tissue is
    aug = TraditionalAugment(**NO_COLOUR)
    for s in range(4):
        a, _ = aug.geometric(img, lab, seed=s)
        m = aug.draw(lab.shape, s, 0).matrix
        cv_inv = m.copy()  # half-pixel → OpenCV's integer-centre convention
        cv_inv[:, 2] += m[:, 0] * 0.5 + m[:, 1] * 0.5 - 0.5
        ref = cv2.warpAffine(img, cv_inv, (64, 64), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                             borderMode=cv2.BORDER_REFLECT_101)
        diff = np.abs(a.astype(int) - ref.astype(int))
        assert diff.max() <= 3 and diff.mean() < 0.3, (s, diff.max(), diff.mean())


def test_colour_map_scales_chroma_about_the_grey_axis():
    q = 1 << 12
    np.testing.assert_allclose(colour_matrix(1.0, 1.0, 0.0), np.eye(3), atol=1 / q)
    np.testing.assert_allclose(colour_matrix(0.8, 0.0, 0.3), np.full((3, 3), 0.8 / 3), atol=1 / q)  # s = 0: grey
    for gain, s, h in ((1.2, 0.7, 0.03), (0.9, 1.3, -0.04)):
        m = colour_matrix(gain, s, h)
        np.testing.assert_allclose(m.sum(1), gain, atol=3 / q)  # grey stays grey, scaled by the gain
        assert np.all(np.rint(m * q) == m * q)  # quantised


def test_photometric_keeps_labels_and_changes_colour():
    img, lab = _sample(6, size=48)
    aug = TraditionalAugment(scale=(1, 1), shift=0, rotate=0, flip=False, blur_p=1.0)
    a, l = aug(img, lab, seed=1)
    np.testing.assert_array_equal(l, lab)
    assert np.abs(a.astype(int) - img.astype(int)).mean() > 1
    grey = np.full((16, 16, 3), 120, np.uint8)
    g = TraditionalAugment(brightness=0, contrast=0.5, saturation=0.5, hue=0.1, blur_p=0).photometric(grey, seed=2)
    assert np.abs(g.astype(int) - 120).max() <= 1  # contrast about the mean; hue/saturation leave grey alone


def test_blur_taps_and_opencv():
    for sigma in (0.3, 0.8, 1.5, 4.0):
        t = gaussian_taps(sigma)
        assert t.sum() == 1 << TAP_BITS and len(t) == 2 * math.ceil(3 * sigma) + 1 and np.all(t == t[::-1])
    img, lab = _sample(10, size=48)
    aug = TraditionalAugment(scale=(1, 1), shift=0, rotate=0, flip=False, brightness=0, contrast=0, saturation=0,
                             hue=0, blur_p=1.0)
    for s in range(3):
        a = aug.photometric(img, seed=s)
        sigma = aug.draw(lab.shape, s, 0).blur_sigma
        k = 2 * math.ceil(3 * sigma) + 1
        ref = cv2.GaussianBlur(img, (k, k), sigmaX=sigma, sigmaY=sigma, borderType=cv2.BORDER_REFLECT_101)
        assert np.abs(a.astype(int) - ref.astype(int)).max() <= 1


def test_canvas_is_the_reflect_pad_with_coded_copies():
    img, lab = _sample(11, size=24, n=6)
    m = 10
    ci = np.empty((44, 44, 3), np.uint8)
    cl = np.empty((44, 44), np.int32)
    reflect_canvas(img, lab, int(lab.max()), 1, m, ci, cl)
    np.testing.assert_array_equal(ci, np.pad(img, ((m, m), (m, m), (0, 0)), mode="reflect"))
    np.testing.assert_array_equal(cl[m:-m, m:-m], lab)
    mirrored = np.pad(lab, m, mode="reflect")
    outside = np.ones_like(cl, bool)
    outside[m:-m, m:-m] = False
    assert np.all((cl[outside] > lab.max()) == (mirrored[outside] > 0))


def test_crop_stats_is_exact():
    img, lab = _sample(12, size=32)
    s, mx = crop_stats(img, lab)
    w = np.array([299, 587, 114], np.int64)
    assert s == int((img.astype(np.int64) * w).sum()) and mx == lab.max()


def test_batch_and_functional():
    img, lab = _sample(7, size=32)
    imgs = np.stack([img, img])
    labs = np.stack([lab, lab])
    aug = TraditionalAugment()
    bi, bl = aug.batch(imgs, labs, seed=3, indices=[5, 6])
    a, l = traditional_augment(img, lab, seed=3, index=6)
    np.testing.assert_array_equal(bi[1], a)
    np.testing.assert_array_equal(bl[1], l)
    rows, taps, draws = aug.prepare(imgs, labs, 3, [5, 6])
    assert rows[0, P_MAXID] == lab.max() and draws[1] == aug.draw(lab.shape, 3, 6) and draws[0] != draws[1]


def test_bad_args():
    img, lab = _sample(7, size=32)
    with pytest.raises(ConfigError, match="scale"):
        TraditionalAugment(scale=(1.2, 0.8))
    with pytest.raises(ConfigError, match="hue"):
        TraditionalAugment(hue=0.9)
    with pytest.raises(ConfigError, match="flip"):
        TraditionalAugment(flip=1)
    with pytest.raises(ConfigError, match="min_area"):
        TraditionalAugment(min_area=0)
    with pytest.raises(ConfigError, match="blur_sigma"):
        TraditionalAugment(blur_sigma=(0, 1))
    with pytest.raises(InputError):
        TraditionalAugment()(img, lab[:10])
    with pytest.raises(InputError, match="indices"):
        TraditionalAugment().batch(np.stack([img]), np.stack([lab]), indices=[1, 2])
    huge = lab.astype(np.int64) * 2**27
    with pytest.raises(InputError, match="relabel"):
        TraditionalAugment()(img, huge.astype(np.int32))
