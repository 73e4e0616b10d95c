"""Instance extraction: one pass over a label map gives compact ids and per-instance stats.

Outputs are flat struct-of-arrays tables (the same layout as the instance bank),
so the SSD kernels score a tile's originals against the bank with one code path.
"""

from __future__ import annotations

import numpy as np
from .jit import njit

from .alloc import empty, zeros
from .descriptor import DESC_WORDS, descriptor_from_mask



@njit(cache=True, nogil=True)
def max_label(labels):
    h, w = labels.shape
    mx = 0
    for y in range(h):
        for x in range(w):
            if labels[y, x] > mx:
                mx = labels[y, x]
    return mx


@njit(cache=True, nogil=True)
def tile_stats(labels, patch, max_id, extra):
    """One pass over a label map: per-instance statistics and the id lookup table.

    ``max_id`` is the map's largest id (callers know it from validation; ids must
    be ≤ :data:`DENSE_ID_LIMIT`). Returns ``(ids, lut, area, sum_r, sum_c, bbox,
    occupied)``: ``ids`` (K,) ascending, ``lut`` (max_id + 1 + extra,) int32 mapping
    an id to its rank 1..K (0 for background and absent ids; the ``extra`` slots
    are for ids added later), ``area``/``sum_r``/``sum_c`` (K+1,) int64 indexed by
    rank (0 unused), ``bbox`` (K+1, 4) int32 ``(y0, x0, y1, x1)`` exclusive ends,
    ``occupied`` (H//patch, W//patch) bool for the full patch×patch background-grid
    patches holding instance pixels.
    """
    h, w = labels.shape
    n = max_id + 1
    r_area = zeros(n, np.int64)
    r_sr = zeros(n, np.int64)
    r_sc = zeros(n, np.int64)
    r_box = empty((n, 4), np.int32)
    gh = h // patch
    gw = w // patch
    occupied = zeros((gh, gw), np.bool_)
    for y in range(h):
        py = y // patch
        for x in range(w):
            v = labels[y, x]
            if v:
                if r_area[v] == 0:
                    r_box[v, 0] = y
                    r_box[v, 1] = x
                    r_box[v, 2] = y + 1
                    r_box[v, 3] = x + 1
                else:
                    if x < r_box[v, 1]:
                        r_box[v, 1] = x
                    if x >= r_box[v, 3]:
                        r_box[v, 3] = x + 1
                    r_box[v, 2] = y + 1
                r_area[v] += 1
                r_sr[v] += y
                r_sc[v] += x
                if py < gh:
                    px = x // patch
                    if px < gw:
                        occupied[py, px] = True
    k = 0
    for v in range(1, n):
        if r_area[v]:
            k += 1
    lut = zeros(n + extra, np.int32)
    ids = empty(k, np.int32)
    area = zeros(k + 1, np.int64)
    sum_r = zeros(k + 1, np.int64)
    sum_c = zeros(k + 1, np.int64)
    bbox = zeros((k + 1, 4), np.int32)
    c = 0
    for v in range(1, n):
        if r_area[v]:
            c += 1
            lut[v] = c
            ids[c - 1] = v
            area[c] = r_area[v]
            sum_r[c] = r_sr[v]
            sum_c[c] = r_sc[v]
            for j in range(4):  # element-wise: an array slice assignment costs ~3 s of first-use compile
                bbox[c, j] = r_box[v, j]
    return ids, lut, area, sum_r, sum_c, bbox, occupied


#: Largest instance id the kernels take directly; larger ids are relabelled first.
DENSE_ID_LIMIT = 1 << 16


@njit(cache=True, nogil=True, inline="always")
def rounded_mean(total, n):
    """floor(total / n + 1/2) in exact integer arithmetic (n > 0, total ≥ 0)."""
    return (2 * total + n) // (2 * n)


@njit(cache=True, nogil=True, inline="always")  # a thin wrapper: inlined, not compiled as a layer
def build_table(labels, ids, area, sum_r, sum_c, bbox):
    """Flat table of the K instances of a compact map (masks cropped to their bboxes).

    Returns ``(t_area, anchor, hw, origin, offset, masks, desc, fits)`` where
    ``anchor`` is relative to the bbox, ``origin`` the bbox top-left in the map,
    ``offset`` (K+1,) indexes ``masks`` (uint8 0/1, row-major crops).
    """
    want = empty(area.shape[0] - 1, np.bool_)
    for i in range(want.shape[0]):
        want[i] = True
    return build_table_rows(labels, ids, area, sum_r, sum_c, bbox, want)


@njit(cache=True, nogil=True)
def build_table_rows(labels, ids, area, sum_r, sum_c, bbox, want):
    """:func:`build_table` filling masks and descriptors only where ``want[i]``
    (area, anchor, size and origin are filled for every row)."""
    k = area.shape[0] - 1
    t_area = empty(k, np.int64)
    anchor = empty((k, 2), np.int32)
    hw = empty((k, 2), np.int32)
    origin = empty((k, 2), np.int32)
    offset = zeros(k + 1, np.int64)
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
    masks = zeros(offset[k], np.uint8)
    desc = zeros((k, DESC_WORDS), np.uint64)
    fits = zeros(k, np.bool_)
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
        if not want[i]:
            continue
        hh = hw[i, 0]
        ww = hw[i, 1]
        m = masks[offset[i]:offset[i + 1]].reshape((hh, ww))
        y0 = bbox[c, 0]
        x0 = bbox[c, 1]
        v = ids[i]
        for y in range(hh):
            for x in range(ww):
                if labels[y0 + y, x0 + x] == v:
                    m[y, x] = 1
        fits[i] = descriptor_from_mask(m, anchor[i, 0], anchor[i, 1], desc[i])
    return t_area, anchor, hw, origin, offset, masks, desc, fits


@njit(cache=True, nogil=True)
def _find(parent, i):
    while parent[i] != i:
        parent[i] = parent[parent[i]]
        i = parent[i]
    return i


@njit(cache=True, nogil=True)
def count_components(cmap, v, y0, x0, y1, x1, cov, cy0, cx0, cy1, cx1, cov_off, scratch):
    """Number of 8-connected pieces of {p in bbox : cmap[p] == v and p not covered}.

    ``cov`` is a 0/1 mask crop placed at (cy0, cx0)–(cy1, cx1) in map coordinates
    whose pixels count as removed (pass an empty box to count plain pieces).
    Works on horizontal runs with a union-find: runs in consecutive rows join when
    ``a0 ≤ b1 and b0 ≤ a1`` (half-open runs, 8-connectivity). ``scratch`` is a
    :func:`new_scratch` at least as large as the bbox. Work ∝ bbox pixels + runs.
    """
    rx0, rx1, parent = scratch
    cw = cx1 - cx0
    nr = 0
    unions = 0
    prev_start = 0
    prev_end = 0
    for y in range(y0, y1):
        cur_start = nr
        x = x0
        in_cov_row = cy0 <= y < cy1
        row = cov_off + (y - cy0) * cw - cx0
        while x < x1:
            # membership written out: a helper call per pixel is not inlined by Numba (25x slower)
            if cmap[y, x] == v and not (in_cov_row and cx0 <= x < cx1 and cov[row + x]):
                xs = x
                x += 1
                while x < x1 and cmap[y, x] == v and not (in_cov_row and cx0 <= x < cx1 and cov[row + x]):
                    x += 1
                rx0[nr] = xs
                rx1[nr] = x
                parent[nr] = nr
                nr += 1
            else:
                x += 1
        i = prev_start
        j = cur_start
        while i < prev_end and j < nr:
            if rx0[i] <= rx1[j] and rx0[j] <= rx1[i]:
                a = _find(parent, i)
                b = _find(parent, j)
                if a != b:
                    parent[max(a, b)] = min(a, b)
                    unions += 1
            if rx1[i] < rx1[j]:
                i += 1
            else:
                j += 1
        prev_start = cur_start
        prev_end = nr
    return nr - unions


@njit(cache=True, nogil=True)
def new_scratch(size):
    """Reusable run buffers for :func:`count_components` on boxes of up to ``size`` pixels."""
    n = size // 2 + 2
    return empty(n, np.int32), empty(n, np.int32), empty(n, np.int32)


@njit(cache=True, nogil=True, inline="always")
def enclosed_pixels(mask, cmap, y0, x0):
    """Pixels of a 0/1 crop's complement not 4-connected to the crop border.

    Returns ``(background, other)``: how many of them are background (label 0,
    i.e. a hole) and how many belong to other instances (an instance enclosed
    by this one). ``cmap`` is the map the crop was cut from at (y0, x0).
    """
    hh, ww = mask.shape
    seen = zeros((hh, ww), np.uint8)
    stack = empty(hh * ww + 1, np.int64)
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


@njit(cache=True, nogil=True)
def bank_entries(image, labels):
    """All instances of one sample as bank rows (before filtering).

    Returns ``(table, pixels, origin, ids, pieces, hole, encloses, border)``: the
    flat table fields of :func:`build_table`, the RGB crops (zero outside the
    mask), the bbox origin and original id of each instance, its number of
    8-connected pieces, whether it encloses background (a hole), whether it
    encloses another instance, and whether it touches the tile border.
    """
    hh, ww = labels.shape
    ids, _lut, area, sum_r, sum_c, bbox, _occ = tile_stats(labels, hh + ww + 1, max_label(labels), 0)
    t_area, anchor, hw, origin, offset, masks, desc, fits = build_table(labels, ids, area, sum_r, sum_c, bbox)
    k = ids.shape[0]
    pixels = zeros(3 * offset[k], np.uint8)
    pieces = zeros(k, np.int64)
    big = 1
    for i in range(k):
        big = max(big, hw[i, 0] * hw[i, 1])
    scratch = new_scratch(big)
    hole = zeros(k, np.bool_)
    encloses = zeros(k, np.bool_)
    border = zeros(k, np.bool_)
    for i in range(k):
        c = i + 1
        y0 = bbox[c, 0]
        x0 = bbox[c, 1]
        y1 = bbox[c, 2]
        x1 = bbox[c, 3]
        border[i] = y0 == 0 or x0 == 0 or y1 == hh or x1 == ww
        pieces[i] = count_components(labels, ids[i], y0, x0, y1, x1, masks, 0, 0, 0, 0, 0, scratch)
        m = masks[offset[i]:offset[i + 1]].reshape((hw[i, 0], hw[i, 1]))
        n_bg, n_other = enclosed_pixels(m, labels, y0, x0)
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


@njit(cache=True, nogil=True)
def gather_segments(buf, offset, order, scale):
    """Concatenate segments ``buf[scale·offset[i] : scale·offset[i+1]]`` for i in ``order``.

    Returns the new buffer and the new (len(order)+1,) offsets (in units of ``scale``).
    """
    n = order.shape[0]
    new_off = zeros(n + 1, np.int64)
    for j in range(n):
        i = order[j]
        new_off[j + 1] = new_off[j] + offset[i + 1] - offset[i]
    out = empty(scale * new_off[n], buf.dtype)
    for j in range(n):
        i = order[j]
        a = scale * offset[i]
        b = scale * offset[i + 1]
        o = scale * new_off[j]
        for q in range(b - a):  # element-wise: an array slice assignment costs ~3 s of first-use compile
            out[o + q] = buf[a + q]
    return out, new_off
