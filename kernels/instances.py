"""Instance extraction: one pass over a label map gives compact ids and per-instance stats.

Outputs are flat struct-of-arrays tables (the same layout as the instance bank),
so the SSD kernels score a tile's originals against the bank with one code path.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from .descriptor import DESC_WORDS, descriptor_from_mask

# Dense id lookup table is used while max id ≤ this bound, else a sorted search.
_DENSE_LUT_LIMIT = 1 << 24


@njit(cache=True)
def compact_labels(labels, tile):
    """Map arbitrary instance ids to 1..K in ascending-id order, with stats.

    Returns ``(compact, ids, area, sum_r, sum_c, bbox, occupied)``:
    ``compact`` H×W int32 (0 = background), ``ids`` (K,) original ids ascending,
    ``area``/``sum_r``/``sum_c`` (K+1,) int64 (index 0 unused), ``bbox`` (K+1, 4)
    int32 ``(y0, x0, y1, x1)`` with exclusive ends, ``occupied`` (H//tile, W//tile)
    bool: full ``tile``×``tile`` patches holding at least one instance pixel.
    """
    h, w = labels.shape
    mx = 0
    for y in range(h):
        for x in range(w):
            if labels[y, x] > mx:
                mx = labels[y, x]
    compact = np.empty((h, w), np.int32)
    if mx <= _DENSE_LUT_LIMIT:
        lut = np.zeros(mx + 1, np.int32)
        for y in range(h):
            for x in range(w):
                lut[labels[y, x]] = 1
        lut[0] = 0
        k = 0
        for i in range(1, mx + 1):
            if lut[i]:
                k += 1
                lut[i] = k
        ids = np.empty(k, np.int32)
        for i in range(1, mx + 1):
            if lut[i]:
                ids[lut[i] - 1] = i
        for y in range(h):
            for x in range(w):
                compact[y, x] = lut[labels[y, x]]
    else:
        u = np.unique(labels)
        if u[0] == 0:
            ids = u[1:].astype(np.int32)
        else:
            ids = u.astype(np.int32)
        k = ids.shape[0]
        for y in range(h):
            for x in range(w):
                v = labels[y, x]
                compact[y, x] = 0 if v == 0 else np.searchsorted(ids, v) + 1
    area = np.zeros(k + 1, np.int64)
    sum_r = np.zeros(k + 1, np.int64)
    sum_c = np.zeros(k + 1, np.int64)
    bbox = np.empty((k + 1, 4), np.int32)
    for i in range(k + 1):
        bbox[i, 0] = h
        bbox[i, 1] = w
        bbox[i, 2] = 0
        bbox[i, 3] = 0
    gh = h // tile
    gw = w // tile
    occupied = np.zeros((gh, gw), np.bool_)
    for y in range(h):
        py = y // tile
        for x in range(w):
            c = compact[y, x]
            if c:
                area[c] += 1
                sum_r[c] += y
                sum_c[c] += x
                if y < bbox[c, 0]:
                    bbox[c, 0] = y
                if x < bbox[c, 1]:
                    bbox[c, 1] = x
                if y + 1 > bbox[c, 2]:
                    bbox[c, 2] = y + 1
                if x + 1 > bbox[c, 3]:
                    bbox[c, 3] = x + 1
                px = x // tile
                if py < gh and px < gw:
                    occupied[py, px] = True
    return compact, ids, area, sum_r, sum_c, bbox, occupied


@njit(cache=True, inline="always")
def rounded_mean(total, n):
    """floor(total / n + 1/2) in exact integer arithmetic (n > 0, total ≥ 0)."""
    return (2 * total + n) // (2 * n)


@njit(cache=True)
def build_table(compact, area, sum_r, sum_c, bbox):
    """Flat table of the K instances of a compact map (masks cropped to their bboxes).

    Returns ``(t_area, anchor, hw, origin, offset, masks, desc, fits)`` where
    ``anchor`` is relative to the bbox, ``origin`` the bbox top-left in the map,
    ``offset`` (K+1,) indexes ``masks`` (uint8 0/1, row-major crops).
    """
    k = area.shape[0] - 1
    t_area = np.empty(k, np.int64)
    anchor = np.empty((k, 2), np.int32)
    hw = np.empty((k, 2), np.int32)
    origin = np.empty((k, 2), np.int32)
    offset = np.zeros(k + 1, np.int64)
    for i in range(k):
        c = i + 1
        hh = bbox[c, 2] - bbox[c, 0]
        ww = bbox[c, 3] - bbox[c, 1]
        if area[c] == 0:
            hh = 0
            ww = 0
        hw[i, 0] = hh
        hw[i, 1] = ww
        offset[i + 1] = offset[i] + hh * ww
    masks = np.zeros(offset[k], np.uint8)
    desc = np.zeros((k, DESC_WORDS), np.uint64)
    fits = np.zeros(k, np.bool_)
    for i in range(k):
        c = i + 1
        t_area[i] = area[c]
        origin[i, 0] = bbox[c, 0]
        origin[i, 1] = bbox[c, 1]
        if area[c] == 0:
            anchor[i, 0] = 0
            anchor[i, 1] = 0
            continue
        anchor[i, 0] = rounded_mean(sum_r[c], area[c]) - bbox[c, 0]
        anchor[i, 1] = rounded_mean(sum_c[c], area[c]) - bbox[c, 1]
        hh = hw[i, 0]
        ww = hw[i, 1]
        m = masks[offset[i]:offset[i + 1]].reshape((hh, ww))
        y0 = bbox[c, 0]
        x0 = bbox[c, 1]
        for y in range(hh):
            for x in range(ww):
                if compact[y0 + y, x0 + x] == c:
                    m[y, x] = 1
        fits[i] = descriptor_from_mask(m, anchor[i, 0], anchor[i, 1], desc[i])
    return t_area, anchor, hw, origin, offset, masks, desc, fits


@njit(cache=True)
def count_components(cmap, c, y0, x0, y1, x1, cov, cy0, cx0, cy1, cx1, cov_off):
    """Number of 8-connected pieces of {p in bbox : map[p] == c and p not covered}.

    ``cov`` is a 0/1 mask crop placed at (cy0, cx0)–(cy1, cx1) in map coordinates
    whose pixels count as removed (pass an empty bbox to count plain pieces).
    Work is proportional to the bbox, never to the map.
    """
    hh = y1 - y0
    ww = x1 - x0
    if hh <= 0 or ww <= 0:
        return 0
    seen = np.zeros(hh * ww, np.uint8)
    stack = np.empty(hh * ww, np.int64)
    cw = cx1 - cx0
    pieces = 0
    for sy in range(hh):
        for sx in range(ww):
            s = sy * ww + sx
            if seen[s]:
                continue
            y = y0 + sy
            x = x0 + sx
            if cmap[y, x] != c:
                continue
            if cy0 <= y < cy1 and cx0 <= x < cx1 and cov[cov_off + (y - cy0) * cw + (x - cx0)]:
                continue
            pieces += 1
            seen[s] = 1
            top = 0
            stack[top] = s
            top += 1
            while top > 0:
                top -= 1
                q = stack[top]
                qy = q // ww
                qx = q - qy * ww
                for ny in range(max(0, qy - 1), min(hh, qy + 2)):
                    for nx in range(max(0, qx - 1), min(ww, qx + 2)):
                        n = ny * ww + nx
                        if seen[n]:
                            continue
                        yy = y0 + ny
                        xx = x0 + nx
                        if cmap[yy, xx] != c:
                            continue
                        if cy0 <= yy < cy1 and cx0 <= xx < cx1 and cov[cov_off + (yy - cy0) * cw + (xx - cx0)]:
                            continue
                        seen[n] = 1
                        stack[top] = n
                        top += 1
    return pieces


@njit(cache=True)
def enclosed_pixels(mask, cmap, y0, x0):
    """Pixels of a 0/1 crop's complement not 4-connected to the crop border.

    Returns ``(background, other)``: how many of them are background (label 0,
    i.e. a hole) and how many belong to other instances (an instance enclosed
    by this one). ``cmap`` is the map the crop was cut from at (y0, x0).
    """
    hh, ww = mask.shape
    seen = np.zeros((hh, ww), np.uint8)
    stack = np.empty(hh * ww + 1, np.int64)
    top = 0
    for y in range(hh):
        for x in range(ww):
            if (y == 0 or x == 0 or y == hh - 1 or x == ww - 1) and not mask[y, x]:
                seen[y, x] = 1
                stack[top] = y * ww + x
                top += 1
    while top > 0:
        top -= 1
        q = stack[top]
        qy = q // ww
        qx = q - qy * ww
        for d in range(4):
            ny = qy + (1 if d == 0 else (-1 if d == 1 else 0))
            nx = qx + (1 if d == 2 else (-1 if d == 3 else 0))
            if 0 <= ny < hh and 0 <= nx < ww and not seen[ny, nx] and not mask[ny, nx]:
                seen[ny, nx] = 1
                stack[top] = ny * ww + nx
                top += 1
    background = 0
    other = 0
    for y in range(hh):
        for x in range(ww):
            if not mask[y, x] and not seen[y, x]:
                if cmap[y0 + y, x0 + x] == 0:
                    background += 1
                else:
                    other += 1
    return background, other


@njit(cache=True)
def bank_entries(image, labels):
    """All instances of one sample as bank rows (before filtering).

    Returns ``(table, pixels, origin, ids, pieces, hole, encloses, border)``: the
    flat table fields of :func:`build_table`, the RGB crops (zero outside the
    mask), the bbox origin and original id of each instance, its number of
    8-connected pieces, whether it encloses background (a hole), whether it
    encloses another instance, and whether it touches the tile border.
    """
    hh, ww = labels.shape
    compact, ids, area, sum_r, sum_c, bbox, _occ = compact_labels(labels, hh + ww + 1)
    t_area, anchor, hw, origin, offset, masks, desc, fits = build_table(compact, area, sum_r, sum_c, bbox)
    k = ids.shape[0]
    pixels = np.zeros(3 * offset[k], np.uint8)
    pieces = np.zeros(k, np.int64)
    hole = np.zeros(k, np.bool_)
    encloses = np.zeros(k, np.bool_)
    border = np.zeros(k, np.bool_)
    for i in range(k):
        c = i + 1
        y0 = bbox[c, 0]
        x0 = bbox[c, 1]
        y1 = bbox[c, 2]
        x1 = bbox[c, 3]
        border[i] = y0 == 0 or x0 == 0 or y1 == hh or x1 == ww
        pieces[i] = count_components(compact, c, y0, x0, y1, x1, masks, 0, 0, 0, 0, 0)
        m = masks[offset[i]:offset[i + 1]].reshape((hw[i, 0], hw[i, 1]))
        n_bg, n_other = enclosed_pixels(m, compact, y0, x0)
        hole[i] = n_bg > 0
        encloses[i] = n_other > 0
        w = hw[i, 1]
        for y in range(hw[i, 0]):
            for x in range(w):
                p = offset[i] + y * w + x
                if masks[p]:
                    pixels[3 * p] = image[y0 + y, x0 + x, 0]
                    pixels[3 * p + 1] = image[y0 + y, x0 + x, 1]
                    pixels[3 * p + 2] = image[y0 + y, x0 + x, 2]
    return t_area, anchor, hw, offset, masks, pixels, desc, fits, origin, ids, pieces, hole, encloses, border


@njit(cache=True)
def gather_segments(buf, offset, order, scale):
    """Concatenate segments ``buf[scale·offset[i] : scale·offset[i+1]]`` for i in ``order``.

    Returns the new buffer and the new (len(order)+1,) offsets (in units of ``scale``).
    """
    n = order.shape[0]
    new_off = np.zeros(n + 1, np.int64)
    for j in range(n):
        i = order[j]
        new_off[j + 1] = new_off[j] + offset[i + 1] - offset[i]
    out = np.empty(scale * new_off[n], buf.dtype)
    for j in range(n):
        i = order[j]
        a = scale * offset[i]
        b = scale * offset[i + 1]
        o = scale * new_off[j]
        out[o:o + b - a] = buf[a:b]
    return out, new_off
