"""Placement, background plan and the fused paste + shuffle on the device (the GPU
twin of ``kernels.pipeline.insmix_tile``).

* :func:`k_copy_labels` — out_labels = labels (per pixel).
* :func:`k_place` — one thread per tile: the CPU's sequential placement loop
  (``draw_annulus_offset`` / ``draw_free_position`` / diagonal, ``placement_ok``,
  ``paste_into_work``: the same source compiled for the device by
  :func:`kernels.cuda_device.device_function`) over the tile's selected
  originals in rank order, writing the new label map in place and the paste
  records; then the background plan (``kernels.shuffle``'s ``collect_background``
  and ``plan_moves``, with caller-provided scratch and the host-made k table).
* :func:`k_apply` — per pixel, no races: a pixel inside a moved background patch
  takes the input pixel of its source patch (background patches hold no
  instance pixel after the paste, so their pasted content is the input); a pixel
  whose final label is a pasted id ``max_id + 1 + j`` takes template ``j``'s
  pixel (the last paste covering a pixel is the one whose id it carries);
  everything else is the input.
"""

from __future__ import annotations

import math

import numpy as np
from numba import cuda

from .cuda_device import (collect_background, draw_annulus_offset, draw_free_position, paste_into_work,
                          placement_ok, plan_moves, shape_xor, uniform_int, unravel_pixel)
from .paste import F_DIS, F_SCALE, F_SHAPE, R_DX, R_DY, R_LABEL, R_ORIGINAL, R_TEMPLATE, R_X, R_Y
from .rng import STREAM_TILE


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
def k_place(labels, work, max_ids, k_arr, lut, ids_ext, area, bbox, anchor, selected, desc, fits, choice,
            b_area, b_anchor, b_hw, b_off, b_masks, b_desc, b_fits,
            occupied, cur_area, ibbox, pieces, occ, touched, rx0, rx1, parent, free, k_table,
            delta, gamma, max_occ, n_tries_cfg, tile, foreground, background, ssd, diagonal,
            seed, samples, rec_i, rec_f, moves, counts):
    """One thread per tile: ``plan_tile``'s placement loop, then the background plan."""
    b = cuda.grid(1)
    if b >= work.shape[0]:
        return
    sample = samples[b]
    wk = work[b]
    lab = labels[b]
    hh = wk.shape[0]
    ww = wk.shape[1]
    k = k_arr[b]
    max_id = max_ids[b]
    cap = rec_i.shape[1]
    n = 0
    if foreground and k > 0 and b_area.shape[0] > 0:
        ncap = cur_area.shape[1]
        for c in range(ncap):
            cur_area[b, c] = 0
            pieces[b, c] = -1
            occ[b, c] = 0
            touched[b, c] = 0
            ibbox[b, c, 0] = 0
            ibbox[b, c, 1] = 0
            ibbox[b, c, 2] = 0
            ibbox[b, c, 3] = 0
        for c in range(1, k + 1):
            cur_area[b, c] = area[b, c]
            for j in range(4):
                ibbox[b, c, j] = bbox[b, c, j]
        g = np.int64(math.floor(gamma))
        d_diag = np.int64(0)
        n_tries = n_tries_cfg
        if diagonal:
            d_diag = uniform_int(seed, sample, STREAM_TILE, 0, max(2 * g, 1)) - g
            n_tries = 1
        scratch = (rx0[b], rx1[b], parent[b])
        lut_b = lut[b]
        ids_b = ids_ext[b]
        cur_b = cur_area[b]
        ibbox_b = ibbox[b]
        pieces_b = pieces[b]
        occ_b = occ[b]
        touched_b = touched[b]
        occupied_b = occupied[b]
        for i in range(k):
            c = i + 1
            if not selected[b, c]:
                continue
            t = choice[b, c]
            if t < 0:
                continue
            if n >= cap:
                counts[b, 0] = -1
                return
            h = np.int64(b_hw[t, 0])
            w = np.int64(b_hw[t, 1])
            at_r = np.int64(b_anchor[t, 0])
            at_c = np.int64(b_anchor[t, 1])
            ao_r = anchor[b, c, 0]
            ao_c = anchor[b, c, 1]
            t_off = b_off[t]
            for tr in range(n_tries):
                ok = True
                dy = np.int64(0)
                dx = np.int64(0)
                if not ssd:
                    ok, y0, x0 = draw_free_position(seed, sample, i, tr, h, w, hh, ww)
                    dy = y0 + at_r - ao_r
                    dx = x0 + at_c - ao_c
                elif diagonal:
                    dy = d_diag
                    dx = d_diag
                else:
                    ok, dy, dx = draw_annulus_offset(seed, sample, i, tr, delta, gamma)
                if not ok:
                    continue
                y0 = ao_r + dy - at_r
                x0 = ao_c + dx - at_c
                if not placement_ok(wk, lut_b, ids_b, cur_b, ibbox_b, pieces_b, b_masks, t_off, h, w, y0, x0,
                                    max_occ, occ_b, touched_b, scratch):
                    continue
                new_c = k + 1 + n
                new_id = max_id + 1 + n
                lut_b[new_id] = new_c
                ids_b[new_c] = new_id
                paste_into_work(wk, lut_b, cur_b, ibbox_b, pieces_b, occupied_b, tile, b_masks, t_off, h, w,
                                y0, x0, new_c, new_id, b_area[t])
                a_o = area[b, c]
                a_t = b_area[t]
                rec_i[b, n, R_TEMPLATE] = t
                rec_i[b, n, R_ORIGINAL] = ids_b[c]
                rec_i[b, n, R_LABEL] = new_id
                rec_i[b, n, R_Y] = y0
                rec_i[b, n, R_X] = x0
                rec_i[b, n, R_DY] = dy
                rec_i[b, n, R_DX] = dx
                xor = shape_xor(lab, ids_b[c], a_o, desc[b, c], fits[b, c], ao_r, ao_c, b_area, b_anchor, b_hw,
                                b_off, b_masks, b_desc, b_fits, t)
                rec_f[b, n, F_SCALE] = np.float64(max(a_o, a_t) - min(a_o, a_t)) / np.float64(min(a_o, a_t))
                rec_f[b, n, F_SHAPE] = np.float64(xor) / np.float64(max(a_o, a_t))
                rec_f[b, n, F_DIS] = math.sqrt(np.float64(dy * dy + dx * dx))
                n += 1
                break
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
def k_apply(images, out_labels, max_ids, counts, rec_i, src_of, tile, b_hw, b_off, b_pixels,
            out_images, paste_mask, shuffled):
    """Per pixel: fused paste (from the final label map) and background move."""
    nb, hh, ww = out_labels.shape
    gw = ww // tile
    gh = hh // tile
    start, step = cuda.grid(1), cuda.gridsize(1)
    for p in range(start, nb * hh * ww, step):
        b, y, x = unravel_pixel(p, hh, ww)
        sy = y
        sx = x
        moved = False
        py = y // tile
        px = x // tile
        if py < gh and px < gw:
            d = py * gw + px
            s = src_of[b, d]
            if s >= 0:
                sy = (s // gw) * tile + (y - py * tile)
                sx = (s % gw) * tile + (x - px * tile)
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
        else:
            out_images[b, y, x, 0] = images[b, sy, sx, 0]
            out_images[b, y, x, 1] = images[b, sy, sx, 1]
            out_images[b, y, x, 2] = images[b, sy, sx, 2]
            paste_mask[b, y, x] = False


__all__ = ["k_copy_labels", "k_place", "k_src_clear", "k_src_fill", "k_apply", "plan_background"]
