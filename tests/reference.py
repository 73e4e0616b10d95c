"""A slow, plain implementation of InsMix written from ../shared/SPEC.md, for tests only.

It shares nothing with the fast path except the Philox4x32 function (tested on
its own against the Random123 answer vectors), and recomputes everything with
full-size boolean masks: centroids as means, shape gaps as direct pixel XOR of
aligned masks, occlusion by mask intersection, connectivity with scikit-image.
"""

from __future__ import annotations

import math

import numpy as np
from skimage.measure import label as cc_label

from insmix_fast.kernels.rng import (STREAM_BACKGROUND, STREAM_PLACE, STREAM_SELECT, STREAM_TEMPLATE, STREAM_TILE,
                                     philox4x32_impl)

M32 = 0xFFFFFFFF


def words(seed, sample, stream, counter):
    r = philox4x32_impl(counter & M32, counter >> 32, sample & M32, stream, seed & M32, seed >> 32)
    return [int(v) for v in r]


def u64(seed, sample, stream, counter):
    w = words(seed, sample, stream, counter)
    return w[0] | (w[1] << 32)


def c2(a, b):
    return (a << 32) | (b & M32)


def anchor_of(mask):
    ys, xs = np.nonzero(mask)
    return int(math.floor(ys.mean() + 0.5)), int(math.floor(xs.mean() + 0.5))


def aligned_xor(mask_o, anchor_o, mask_t, anchor_t):
    """|Mo xor Mt| with anchors on the same pixel, on a canvas big enough for both."""
    ho, wo = mask_o.shape
    ht, wt = mask_t.shape
    pad = ho + wo + ht + wt
    canvas_o = np.zeros((2 * pad, 2 * pad), bool)
    canvas_t = np.zeros((2 * pad, 2 * pad), bool)
    canvas_o[pad - anchor_o[0]:pad - anchor_o[0] + ho, pad - anchor_o[1]:pad - anchor_o[1] + wo] = mask_o
    canvas_t[pad - anchor_t[0]:pad - anchor_t[0] + ht, pad - anchor_t[1]:pad - anchor_t[1] + wt] = mask_t
    return int(np.count_nonzero(canvas_o ^ canvas_t))


def bank_entries(bank):
    """(area, anchor-in-crop, crop mask, crop rgb) for every bank row."""
    out = []
    for t in range(len(bank)):
        rgb, mask = bank.crop(t)
        out.append((int(mask.sum()), anchor_of(mask), mask, rgb))
    return out


def originals(labels):
    ids = [int(i) for i in np.unique(labels) if i != 0]
    out = []
    for i in ids:
        m = labels == i
        out.append((i, m, int(m.sum()), anchor_of(m)))
    return out


def scale_ok(a, b, eps):
    return float(max(a, b) - min(a, b)) <= eps * float(min(a, b))


def shape_ok(xor, a, b, rho):
    return float(xor) <= rho * float(max(a, b))


def admissible_set(mask_o, area_o, anchor_o, entries, eps, rho):
    return [t for t, (a, anc, m, _) in enumerate(entries)
            if scale_ok(area_o, a, eps) and shape_ok(aligned_xor(mask_o, anchor_o, m, anc), area_o, a, rho)]


def choose(mask_o, area_o, anchor_o, entries, cfg, seed, sample, key):
    n_bank = len(entries)
    if n_bank == 0:
        return -1
    if not cfg.ssd:
        return u64(seed, sample, STREAM_TEMPLATE, c2(key, 0)) % n_bank
    in_scale = [t for t in range(n_bank) if scale_ok(area_o, entries[t][0], cfg.eps)]
    if not in_scale:
        return -1
    lo, hi = in_scale[0], in_scale[-1] + 1
    assert in_scale == list(range(lo, hi)), "scale-admissible templates must be contiguous in the sorted bank"

    def ok(t):
        a, anc, m, _ = entries[t]
        return shape_ok(aligned_xor(mask_o, anchor_o, m, anc), area_o, a, cfg.rho)

    for j in range(cfg.max_draws):
        t = lo + u64(seed, sample, STREAM_TEMPLATE, c2(key, j)) % (hi - lo)
        if ok(t):
            return t
    adm = [t for t in range(lo, hi) if ok(t)]
    if not adm:
        return -1
    return adm[u64(seed, sample, STREAM_TEMPLATE, c2(key, M32)) % len(adm)]


def pieces(mask):
    return int(cc_label(mask, connectivity=2).max())


def reference_insmix(image, labels, bank, cfg, seed, index=0):
    """Returns (image, labels, paste_mask, shuffled_mask, pastes list of dicts, moves list)."""
    image = image.copy()
    labels = labels.astype(np.int32).copy()
    H, W = labels.shape
    origs = originals(labels)
    entries = bank_entries(bank) if (cfg.foreground and bank is not None) else []
    paste_mask = np.zeros((H, W), bool)
    pastes = []
    max_id = max([o[0] for o in origs], default=0)
    g = int(math.floor(cfg.gamma))
    diagonal = cfg.offset_mode == "diagonal"
    if diagonal:
        d = u64(seed, index, STREAM_TILE, 0) % max(2 * g, 1) - g
    if cfg.foreground and entries:
        for i, (oid, m_o, a_o, anc_o) in enumerate(origs):
            u = (u64(seed, index, STREAM_SELECT, i) >> 11) * 2.0**-53
            if not u < cfg.p_paste:
                continue
            ys, xs = np.nonzero(m_o)
            y0o, x0o = ys.min(), xs.min()
            crop_o = m_o[y0o:ys.max() + 1, x0o:xs.max() + 1]
            t = choose(crop_o, a_o, (anc_o[0] - y0o, anc_o[1] - x0o), entries, cfg, seed, index, i)
            if t < 0:
                continue
            a_t, anc_t, m_t, rgb_t = entries[t]
            h, w = m_t.shape
            for tr in range(1 if diagonal else cfg.n_tries):
                if not cfg.ssd:
                    if h > H or w > W:
                        continue
                    y0 = u64(seed, index, STREAM_PLACE, c2(i, 2 * tr)) % (H - h + 1)
                    x0 = u64(seed, index, STREAM_PLACE, c2(i, 2 * tr + 1)) % (W - w + 1)
                    dy, dx = y0 + anc_t[0] - anc_o[0], x0 + anc_t[1] - anc_o[1]
                elif diagonal:
                    dy = dx = d
                else:
                    found = False
                    for j in range(256):
                        wd = words(seed, index, STREAM_PLACE, c2(i, tr * 256 + j))
                        dy = (wd[0] | wd[1] << 32) % (2 * g + 1) - g
                        dx = (wd[2] | wd[3] << 32) % (2 * g + 1) - g
                        if cfg.delta ** 2 <= dy * dy + dx * dx <= cfg.gamma ** 2:
                            found = True
                            break
                    if not found:
                        continue
                y0, x0 = anc_o[0] + dy - anc_t[0], anc_o[1] + dx - anc_t[1]
                if y0 < 0 or x0 < 0 or y0 + h > H or x0 + w > W:
                    continue
                canvas = np.zeros((H, W), bool)
                canvas[y0:y0 + h, x0:x0 + w] = m_t
                good = True
                for lid in np.unique(labels[canvas]):
                    if lid == 0:
                        continue
                    inst = labels == lid
                    over = int(np.count_nonzero(inst & canvas))
                    area = int(inst.sum())
                    if over > cfg.max_occlusion * area:
                        good = False
                        break
                    if over < area and pieces(inst & ~canvas) > pieces(inst):
                        good = False
                        break
                if not good:
                    continue
                new_id = max_id + 1 + len(pastes)
                labels[canvas] = new_id
                image[canvas] = rgb_t[m_t]
                paste_mask |= canvas
                pastes.append(dict(template=t, original=oid, label=new_id, y=y0, x=x0, dy=dy, dx=dx,
                                   f_scale=(max(a_o, a_t) - min(a_o, a_t)) / min(a_o, a_t),
                                   f_shape=aligned_xor(crop_o, (anc_o[0] - y0o, anc_o[1] - x0o), m_t, anc_t)
                                   / max(a_o, a_t),
                                   f_dis=math.sqrt(dy * dy + dx * dx)))
                break
    shuffled = np.zeros((H, W), bool)
    moves = []
    if cfg.background:
        T = cfg.patch
        gh, gw = H // T, W // T
        free = [py * gw + px for py in range(gh) for px in range(gw)
                if not labels[py * T:(py + 1) * T, px * T:(px + 1) * T].any()]
        nb = len(free)
        k = int(math.floor(cfg.alpha * nb + 0.5))
        if k >= 2:
            for i in range(k):
                j = i + u64(seed, index, STREAM_BACKGROUND, c2(0, i)) % (nb - i)
                free[i], free[j] = free[j], free[i]
            perm = list(range(k))
            for i in range(k - 1, 0, -1):
                j = u64(seed, index, STREAM_BACKGROUND, c2(1, i)) % (i + 1)
                perm[i], perm[j] = perm[j], perm[i]
            src_img = image.copy()
            for i in range(k):
                s, dst = free[perm[i]], free[i]
                moves.append((s, dst))
                sy, sx = (s // gw) * T, (s % gw) * T
                dy_, dx_ = (dst // gw) * T, (dst % gw) * T
                image[dy_:dy_ + T, dx_:dx_ + T] = src_img[sy:sy + T, sx:sx + T]
                if s != dst:
                    shuffled[dy_:dy_ + T, dx_:dx_ + T] = True
    return image, labels, paste_mask, shuffled, pastes, moves


def ellipse_labels(shape, specs):
    """Label map from (cy, cx, ry, rx, angle) ellipses, id = 1.., later ones not overlapping earlier ones."""
    import cv2

    lab = np.zeros(shape, np.int32)
    for k, (cy, cx, ry, rx, ang) in enumerate(specs, start=1):
        m = np.zeros(shape, np.uint8)
        cv2.ellipse(m, (int(cx), int(cy)), (int(rx), int(ry)), float(ang), 0, 360, 1, -1)
        lab[(m > 0) & (lab == 0)] = k
    return lab
