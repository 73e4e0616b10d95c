"""Traditional augmentations: exact label warp, reflected copies, colour, blur, batching, errors."""

import math

import cv2
import numpy as np
import pytest

from insmix_fast import augment as A
from insmix_fast.augment import (P_MAXID, TAP_BITS, TraditionalAugment, colour_matrix, area_filter, crop_stats,
                                 gaussian_taps, reflect101, reflect_canvas, reflection_cell, traditional_augment)
from insmix_fast.errors import ConfigError, InputError, LabelMapError

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


def _per_pixel(img, lab, prm, taps, blur, clean):
    """The CPU kernel's definition, pixel by pixel from the scalar helpers the CUDA kernels call
    (warp_geometry, coded_label, colour_channel, blur_round); numpy for the blur and the area filter."""
    h, w = lab.shape
    f, maxid, r = int(prm[A.P_FRAC]), int(prm[A.P_MAXID]), int(prm[A.P_R])
    geo = [int(prm[k]) for k in (A.P_A00, A.P_A01, A.P_A10, A.P_A11, A.P_T0, A.P_T1)]
    c = [int(v) for v in prm[A.P_C:A.P_C + 9]]
    base, shift = A.colour_constants(int(prm[A.P_TC]), f)
    px = img.astype(np.int64).tolist()
    out_i = np.empty((h, w, 3), np.int64)
    out_l = np.empty((h, w), np.int64)
    for y in range(h):
        for x in range(w):
            iy, ix, cy, cx, ya, yb, xa, xb, w00, w01, w10, w11 = A.warp_geometry(y, x, *geo, f, h, w)
            out_l[y, x] = A.coded_label(int(lab[iy, ix]), cy, cx, maxid, r)
            v = [w00 * px[ya][xa][k] + w01 * px[ya][xb][k] + w10 * px[yb][xa][k] + w11 * px[yb][xb][k]
                 for k in range(3)]
            for k in range(3):
                out_i[y, x, k] = A.colour_channel(v[0], v[1], v[2], c[3 * k], c[3 * k + 1], c[3 * k + 2], base, shift)
    br = int(prm[A.P_BLUR_R])
    if blur and br > 0:
        t = taps[:2 * br + 1].astype(np.int64)
        cols = [[A.reflect101(x + k - br, w) for x in range(w)] for k in range(len(t))]
        rows = [[A.reflect101(y + k - br, h) for y in range(h)] for k in range(len(t))]
        hor = sum(t[k] * out_i[:, cols[k], :] for k in range(len(t)))
        acc = sum(t[k] * hor[rows[k], :, :] for k in range(len(t)))
        out_i = np.clip((acc + (1 << (2 * TAP_BITS - 1))) >> (2 * TAP_BITS), 0, 255)
    if clean:
        ids, cnt = np.unique(out_l[out_l > 0], return_counts=True)
        out_l[np.isin(out_l, ids[cnt < int(prm[A.P_MIN_AREA])])] = 0
    return out_i.astype(np.uint8), out_l.astype(np.int32)


@pytest.mark.parametrize("shape, params, label_dtype", [
    ((96, 128), dict(scale=(0.3, 3.0), blur_p=1.0), np.int16),    # F <= 11: 32-bit lanes; border zone; blur
    ((96, 127), dict(), np.int32),                                # F = 12: the first F needing 64-bit sums
    ((37, 53), dict(blur_p=1.0, blur_sigma=(1.0, 3.0)), np.int32),  # F = 13; blur wider than rows
    ((24, 24), dict(scale=(0.05, 0.2)), np.int64),                # far zoom-out: many reflections (general pixels)
    ((2, 9), dict(scale=(0.3, 3.0), blur_p=1.0), np.int32),       # tiny crops
    ((1, 7), dict(blur_p=1.0), np.uint8),
])
def test_cpu_kernel_is_the_per_pixel_definition(shape, params, label_dtype):
    """The vectorised CPU kernel (row intervals, packed pixel pairs, 32/64-bit lanes, padded blur,
    run-counting area filter) gives the per-pixel definition's bytes for every path."""
    rng = np.random.default_rng(sum(shape))
    h, w = shape
    img = rng.integers(0, 256, (3, h, w, 3), dtype=np.uint8)
    lab = np.zeros((3, h, w), np.int64)
    for k in range(3):  # blobs of many ids, some cut by the border
        for i in range(1, 2 + h * w // 30):
            cy, cx, ry, rx = rng.uniform(-2, h + 2), rng.uniform(-2, w + 2), rng.uniform(0.7, 6), rng.uniform(0.7, 6)
            yy, xx = np.mgrid[:h, :w]
            lab[k][((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1] = i
    lab = lab.astype(label_dtype)
    aug = TraditionalAugment(**params)
    rows, taps, _ = aug.prepare(img, lab.astype(np.int32), 11, [0, 1, 2])
    if shape in ((96, 128), (96, 127)):  # the 32-bit path, the 64-bit one
        assert (rows[:, A.P_FRAC] == 12).all() == (shape == (96, 127)) and (rows[:, A.P_FRAC] <= 12).all()
    if shape == (96, 128):
        rows[2, A.P_C:A.P_C + 9] *= 1 << 12  # colour entries too large for the 32-bit lanes
    got_i = np.empty_like(img)
    got_l = np.empty(lab.shape, np.int32)
    A.augment_batch_kernel(img, lab, rows, taps, got_i, got_l)
    for k in range(3):
        want_i, want_l = _per_pixel(img[k], lab[k], rows[k], taps[k], True, True)
        np.testing.assert_array_equal(got_i[k], want_i)
        np.testing.assert_array_equal(got_l[k], want_l)
    for blur, clean in ((False, False), (True, False), (False, True)):
        one_i, one_l = np.empty_like(img[1]), np.empty(lab.shape[1:], np.int32)
        A.augment_sample(img[1], lab[1], rows[1], taps[1], one_i, one_l, blur, clean)
        want_i, want_l = _per_pixel(img[1], lab[1], rows[1], taps[1], blur, clean)
        np.testing.assert_array_equal(one_i, want_i)
        np.testing.assert_array_equal(one_l, want_l)


def test_area_filter_table_sizes_and_bad_ids():
    rng = np.random.default_rng(5)
    lab = rng.integers(0, 40, (16, 16)).astype(np.int32)
    lab[4:9, 4:9] = 7
    ids, cnt = np.unique(lab[lab > 0], return_counts=True)
    want = lab.copy()
    want[np.isin(want, ids[cnt < 6])] = 0
    for maxid, r in ((40, 1), (3000, 3)):  # a small id table, and one far larger than the crop
        got = lab.copy()
        area_filter(got, maxid, r, 6)
        np.testing.assert_array_equal(got, want)
    with pytest.raises(LabelMapError, match="maxid"):
        area_filter(lab.copy(), 3, 1, 6)  # ids up to 39 >= 3·9 + 1
