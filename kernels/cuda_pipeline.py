"""Placement, background plan and the fused paste + shuffle on the device (the GPU
twin of ``kernels.pipeline.insmix_tile``).

* :func:`k_copy_labels` — out_labels = labels (per pixel).
* :func:`k_place` — one thread per tile: the CPU's sequential placement loop
  (``kernels.placement.place_pastes``, the same source compiled for the device by
  :func:`kernels.cuda_device.device_function`) over the tile's selected
  originals in rank order, writing the new label map in place and the paste
  records; then the background plan (``kernels.shuffle``'s ``collect_background``
  and ``plan_moves``, with caller-provided scratch and the host-made k table).
* :func:`k_apply` — per pixel, no races: a pixel inside a moved background patch
  takes the input pixel of its source patch (background patches hold no
  instance pixel after the paste, so their pasted content is the input); a pixel
  whose final label is a pasted id ``max_id + 1 + j`` takes template ``j``'s
  pixel (the last paste covering a pixel is the one whose id it carries);
  everything else is the input. With ``typed`` the output type map is the input's
  with paste ``j``'s class on its pixels.
"""

from __future__ import annotations

import numpy as np
from numba import cuda

from .cuda_device import (collect_background, original_at, place_pastes, plan_moves, shape_gap, shape_xor,
                          unravel_pixel)
from .records import F_SHAPE, R_CLASS, R_ORIGINAL, R_TEMPLATE, R_X, R_Y


@cuda.jit
def k_copy_labels(labels, out_labels):
    nb, hh, ww = labels.shape
    start, step = cuda.grid(1), cuda.gridsize(1)
    for p in range(start, nb * hh * ww, step):
        b, y, x = unravel_pixel(p, hh, ww)
        out_labels[b, y, x] = labels[b, y, x]


@cuda.jit(device=True)
def plan_background(occupied, k_table, seed, sample, moves, free):
    """``kernels.shuffle.plan_background`` on the device: the same
    :func:`collect_background` and :func:`plan_moves`, with caller scratch ``free``
    (gh·gw) and ``k_table[n] = ⌊α·n + ½⌋`` (made on the host by
    :func:`kernels.shuffle.background_count_table`, so no FMA on the device can change it)."""
    nb = collect_background(occupied, free)
    return plan_moves(free, nb, k_table[nb], seed, sample, moves)


@cuda.jit
def k_place(labels, work, max_ids, k_arr, lut, ids_ext, area, bbox, anchor, desc, fits, choice,
            b_area, b_anchor, b_hw, b_off, b_masks, b_desc, b_fits, b_classes, ignore, use_ignore,
            occupied, cur_area, ibbox, pieces, occ, touched, rx0, rx1, parent, free, k_table,
            delta, gamma, max_occ, n_tries, patch, foreground, background, ssd, diagonal,
            seed, samples, rec_i, rec_f, moves, counts):
    """One thread per tile: ``plan_tile``'s placement (the same :func:`place_pastes`; ``ignore[b]``
    read when ``use_ignore``), the shape gap of each paste, then the background plan."""
    b = cuda.grid(1)
    if b >= work.shape[0]:
        return
    sample = samples[b]
    k = k_arr[b]
    n = 0
    if foreground and k > 0 and b_area.shape[0] > 0:
        for c in range(cur_area.shape[1]):
            cur_area[b, c] = 0
            pieces[b, c] = -1
            occ[b, c] = 0
            touched[b, c] = 0
            for j in range(4):
                ibbox[b, c, j] = 0
        for c in range(1, k + 1):
            cur_area[b, c] = area[b, c]
            for j in range(4):
                ibbox[b, c, j] = bbox[b, c, j]
        lut_b = lut[b]
        n = place_pastes(work[b], k, max_ids[b], choice[b], area[b], anchor[b], lut_b, ids_ext[b], cur_area[b],
                         ibbox[b], pieces[b], occupied[b], occ[b], touched[b], (rx0[b], rx1[b], parent[b]), b_area,
                         b_anchor, b_hw, b_off, b_masks, b_classes, ignore[b], use_ignore, patch, n_tries, ssd,
                         diagonal, delta, gamma, max_occ, seed, sample, rec_i[b], rec_f[b])
        if n < 0:
            counts[b, 0] = -1
            return
        lab = labels[b]
        for j in range(n):
            c = lut_b[rec_i[b, j, R_ORIGINAL]]
            t = rec_i[b, j, R_TEMPLATE]
            v, a_o, ao_r, ao_c, o_fits = original_at(ids_ext, area, anchor, fits, b, c)
            xor = shape_xor(lab, v, a_o, desc[b, c], o_fits, ao_r, ao_c, b_area, b_anchor, b_hw, b_off, b_masks,
                            b_desc, b_fits, t)
            rec_f[b, j, F_SHAPE] = shape_gap(xor, a_o, b_area[t])
    n_moves = 0
    if background:
        n_moves = plan_background(occupied[b], k_table, seed, sample, moves[b], free[b])
    counts[b, 0] = n
    counts[b, 1] = n_moves


@cuda.jit
def k_src_clear(src_of):
    """src_of[:] = -1 (then :func:`k_src_fill` writes src_of[b, dst_patch] = src_patch)."""
    nb, g = src_of.shape
    start, step = cuda.grid(1), cuda.gridsize(1)
    for p in range(start, nb * g, step):
        b = p // g
        src_of[b, p - b * g] = -1


@cuda.jit
def k_src_fill(moves, counts, src_of):
    nb, g = src_of.shape
    start, step = cuda.grid(1), cuda.gridsize(1)
    for p in range(start, nb * g, step):
        b = p // g
        i = p - b * g
        if i < counts[b, 1]:
            src_of[b, moves[b, i, 1]] = moves[b, i, 0]


@cuda.jit
def k_apply(images, out_labels, max_ids, counts, rec_i, src_of, patch, b_hw, b_off, b_pixels,
            out_images, paste_mask, shuffled, typed, types, out_types):
    """Per pixel: fused paste (from the final label map) and background move; with ``typed``
    the output class (the paste's, else the input's)."""
    nb, hh, ww = out_labels.shape
    gw = ww // patch
    gh = hh // patch
    start, step = cuda.grid(1), cuda.gridsize(1)
    for p in range(start, nb * hh * ww, step):
        b, y, x = unravel_pixel(p, hh, ww)
        sy = y
        sx = x
        moved = False
        py = y // patch
        px = x // patch
        if py < gh and px < gw:
            d = py * gw + px
            s = src_of[b, d]
            if s >= 0:
                sy = (s // gw) * patch + (y - py * patch)
                sx = (s % gw) * patch + (x - px * patch)
                moved = s != d
        shuffled[b, y, x] = moved
        v = out_labels[b, y, x]
        j = np.int64(v) - max_ids[b] - 1
        if j >= 0 and j < counts[b, 0]:
            t = rec_i[b, j, R_TEMPLATE]
            w = np.int64(b_hw[t, 1])
            pp = b_off[t] + (y - rec_i[b, j, R_Y]) * w + (x - rec_i[b, j, R_X])
            out_images[b, y, x, 0] = b_pixels[3 * pp]
            out_images[b, y, x, 1] = b_pixels[3 * pp + 1]
            out_images[b, y, x, 2] = b_pixels[3 * pp + 2]
            paste_mask[b, y, x] = True
            if typed:
                out_types[b, y, x] = rec_i[b, j, R_CLASS]
        else:
            out_images[b, y, x, 0] = images[b, sy, sx, 0]
            out_images[b, y, x, 1] = images[b, sy, sx, 1]
            out_images[b, y, x, 2] = images[b, sy, sx, 2]
            paste_mask[b, y, x] = False
            if typed:
                out_types[b, y, x] = types[b, y, x]


__all__ = ["k_copy_labels", "k_place", "k_src_clear", "k_src_fill", "k_apply", "plan_background"]
