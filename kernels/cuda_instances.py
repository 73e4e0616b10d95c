"""Instance statistics of a batch of label maps on the device (the GPU twin of
``kernels.instances.tile_stats`` + ``build_table_rows``).

Per-pixel kernels accumulate, per tile and raw id, area, coordinate sums and the
bounding box with atomics (integer sums and min/max: order-independent, hence
identical to the CPU's sequential pass); one thread per tile then ranks the ids
(ascending, like the CPU) and derives anchors, ``fits`` and the Bernoulli
selection; a last per-pixel kernel packs the 32×32 descriptors of the selected
originals. Nothing leaves the device.

Layout: ``B`` tiles, raw ids ``0..max_id`` (``max_id`` = largest id of the batch),
ranks ``1..K_b`` per tile (0 unused); rank tables are ``(B, max_id + 1 + cap)``
so the placement can append pasted instances after the originals.
"""

from __future__ import annotations

import numpy as np
from numba import cuda

from .cuda_device import DESC_HALF, DESC_SIZE, DESC_WORDS32, rounded_mean, uniform01, unravel_pixel
from .rng import STREAM_SELECT

_BIG = np.int32(2**31 - 1)


@cuda.jit
def k_minmax(labels, out_max, out_min):
    """out_max[b] = max id of tile b, out_min[0] = smallest value of the batch (both pre-set)."""
    nb, hh, ww = labels.shape
    n = nb * hh * ww
    start, step = cuda.grid(1), cuda.gridsize(1)
    for p in range(start, n, step):
        b, y, x = unravel_pixel(p, hh, ww)
        v = labels[b, y, x]
        cuda.atomic.max(out_max, b, v)
        cuda.atomic.min(out_min, 0, v)


@cuda.jit
def k_fill1(a, value):
    """a[:] = value (1-D)."""
    start, step = cuda.grid(1), cuda.gridsize(1)
    for i in range(start, a.shape[0], step):
        a[i] = value


@cuda.jit
def k_max1(vals, out):
    """out[0] = max(out[0], max(vals))."""
    start, step = cuda.grid(1), cuda.gridsize(1)
    for i in range(start, vals.shape[0], step):
        cuda.atomic.max(out, 0, vals[i])


@cuda.jit
def k_pack2(a, b, out):
    """out = (a[0], b[0]): one 2-element read instead of two."""
    if cuda.grid(1) == 0:
        out[0] = a[0]
        out[1] = b[0]


@cuda.jit
def k_init_stats(r_area, r_sr, r_sc, r_box, occupied):
    """Zero the raw-id accumulators; bbox mins start at +inf, maxes at -1."""
    nb, n = r_area.shape
    start, step = cuda.grid(1), cuda.gridsize(1)
    for p in range(start, nb * n, step):
        b = p // n
        v = p - b * n
        r_area[b, v] = 0
        r_sr[b, v] = 0
        r_sc[b, v] = 0
        r_box[b, v, 0] = _BIG
        r_box[b, v, 1] = _BIG
        r_box[b, v, 2] = -1
        r_box[b, v, 3] = -1
    gb, gh, gw = occupied.shape
    for p in range(start, gb * gh * gw, step):
        b = p // (gh * gw)
        q = p - b * gh * gw
        py = q // gw
        occupied[b, py, q - py * gw] = False


@cuda.jit
def k_stats(labels, patch, r_area, r_sr, r_sc, r_box, occupied):
    """Per pixel: area, Σrow, Σcol, bbox (inclusive max) per raw id; occupied patches."""
    nb, hh, ww = labels.shape
    gh = occupied.shape[1]
    gw = occupied.shape[2]
    n = nb * hh * ww
    start, step = cuda.grid(1), cuda.gridsize(1)
    for p in range(start, n, step):
        b, y, x = unravel_pixel(p, hh, ww)
        v = labels[b, y, x]
        if v:
            cuda.atomic.add(r_area, (b, v), 1)
            cuda.atomic.add(r_sr, (b, v), y)
            cuda.atomic.add(r_sc, (b, v), x)
            cuda.atomic.min(r_box, (b, v, 0), y)
            cuda.atomic.min(r_box, (b, v, 1), x)
            cuda.atomic.max(r_box, (b, v, 2), y)
            cuda.atomic.max(r_box, (b, v, 3), x)
            py = y // patch
            px = x // patch
            if py < gh and px < gw:
                occupied[b, py, px] = True


@cuda.jit
def k_rank(r_area, r_sr, r_sc, r_box, n_ids, samples, seed, p_paste, select_mode,
           lut, ids_ext, area, bbox, anchor, fits, selected, k_out):
    """One thread per tile: ids ascending → ranks 1..K (as ``tile_stats``), absolute
    anchors (``rounded_mean``), ``fits`` (bbox inside the 32×32 window) and the
    selection: ``select_mode`` 0 none, 1 the Bernoulli draw
    ``uniform01(seed, sample, STREAM_SELECT, rank − 1) < p_paste``, 2 all (for counts)."""
    b = cuda.grid(1)
    if b >= r_area.shape[0]:
        return
    sample = samples[b]
    for v in range(lut.shape[1]):
        lut[b, v] = 0
    c = 0
    for v in range(1, n_ids):
        a = r_area[b, v]
        if a:
            c += 1
            lut[b, v] = c
            ids_ext[b, c] = v
            area[b, c] = a
            y0 = np.int64(r_box[b, v, 0])
            x0 = np.int64(r_box[b, v, 1])
            y1 = np.int64(r_box[b, v, 2]) + 1
            x1 = np.int64(r_box[b, v, 3]) + 1
            bbox[b, c, 0] = y0
            bbox[b, c, 1] = x0
            bbox[b, c, 2] = y1
            bbox[b, c, 3] = x1
            ar = rounded_mean(r_sr[b, v], a)
            ac = rounded_mean(r_sc[b, v], a)
            anchor[b, c, 0] = ar
            anchor[b, c, 1] = ac
            fits[b, c] = (y0 >= ar - DESC_HALF and y1 - 1 < ar + DESC_HALF
                          and x0 >= ac - DESC_HALF and x1 - 1 < ac + DESC_HALF)
            sel = select_mode == 2
            if select_mode == 1:
                sel = uniform01(seed, sample, STREAM_SELECT, c - 1) < p_paste
            selected[b, c] = sel
    k_out[b] = c


@cuda.jit
def k_zero_desc(desc):
    nb, n, nw = desc.shape
    start, step = cuda.grid(1), cuda.gridsize(1)
    for p in range(start, nb * n * nw, step):
        b, i, w = unravel_pixel(p, n, nw)
        desc[b, i, w] = np.uint32(0)


@cuda.jit
def k_desc(labels, lut, anchor, selected, desc):
    """Per pixel of a selected original: set its bit of the packed 32×32 window
    (row r → uint32 word r, bit col), as ``kernels.descriptor.descriptor_from_mask``."""
    nb, hh, ww = labels.shape
    n = nb * hh * ww
    start, step = cuda.grid(1), cuda.gridsize(1)
    for p in range(start, n, step):
        b, y, x = unravel_pixel(p, hh, ww)
        v = labels[b, y, x]
        if v:
            c = lut[b, v]
            if selected[b, c]:
                r = y - anchor[b, c, 0] + DESC_HALF
                col = x - anchor[b, c, 1] + DESC_HALF
                if 0 <= r < DESC_SIZE and 0 <= col < DESC_SIZE:
                    cuda.atomic.or_(desc, (b, c, r), np.uint32(1) << np.uint32(col))


@cuda.jit
def k_types_init(id_class, bad):
    """id_class[:, :] = 0 and bad[0] = INT32_MAX (no bad tile yet)."""
    nb, n = id_class.shape
    start, step = cuda.grid(1), cuda.gridsize(1)
    for p in range(start, nb * n, step):
        b = p // n
        id_class[b, p - b * n] = 0
    if start == 0:
        bad[0] = _BIG


@cuda.jit
def k_types(labels, types, n_classes, id_class, bad):
    """Per pixel of a typed batch: ``id_class[b, id]`` = the largest class on instance ``id``; a
    class on background, an instance pixel of class 0 or above ``n_classes`` marks tile ``b``
    bad (``bad[0]`` = the smallest bad tile)."""
    nb, hh, ww = labels.shape
    start, step = cuda.grid(1), cuda.gridsize(1)
    for p in range(start, nb * hh * ww, step):
        b, y, x = unravel_pixel(p, hh, ww)
        v = labels[b, y, x]
        t = types[b, y, x]
        if v == 0:
            if t != 0:
                cuda.atomic.min(bad, 0, np.int32(b))
        elif t < 1 or t > n_classes:
            cuda.atomic.min(bad, 0, np.int32(b))
        else:
            cuda.atomic.max(id_class, (b, v), t)


@cuda.jit
def k_types_check(labels, types, id_class, bad):
    """Per instance pixel: a class other than its instance's (``k_types``) marks the tile bad
    (an instance with several classes)."""
    nb, hh, ww = labels.shape
    start, step = cuda.grid(1), cuda.gridsize(1)
    for p in range(start, nb * hh * ww, step):
        b, y, x = unravel_pixel(p, hh, ww)
        v = labels[b, y, x]
        if v and types[b, y, x] != id_class[b, v]:
            cuda.atomic.min(bad, 0, np.int32(b))


@cuda.jit
def k_ignore_occupied(ignore, patch, occupied):
    """Patches of the background grid holding an ignore pixel count as occupied (they never
    move), as ``kernels.classes.mark_ignored``."""
    nb, hh, ww = ignore.shape
    gh = occupied.shape[1]
    gw = occupied.shape[2]
    start, step = cuda.grid(1), cuda.gridsize(1)
    for p in range(start, nb * hh * ww, step):
        b, y, x = unravel_pixel(p, hh, ww)
        if ignore[b, y, x]:
            py = y // patch
            px = x // patch
            if py < gh and px < gw:
                occupied[b, py, px] = True


__all__ = ["k_minmax", "k_max1", "k_pack2", "k_fill1", "k_init_stats", "k_stats", "k_rank", "k_zero_desc", "k_desc",
           "k_types_init", "k_types", "k_types_check", "k_ignore_occupied", "DESC_WORDS32"]
