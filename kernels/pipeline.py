"""Per-tile InsMix: plan (a pure function of labels, bank, parameters and seed)
then apply (paste + background shuffle). One call per tile, or one per batch."""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from .instances import build_table_rows, new_scratch, tile_stats
from .paste import (F_DIS, F_SCALE, F_SHAPE, R_DX, R_DY, R_LABEL, R_ORIGINAL, R_TEMPLATE, R_X, R_Y,
                    apply_pastes, copy_into, fill_false)
from .placement import draw_annulus_offset, draw_free_position, paste_into_work, placement_ok
from .rng import STREAM_SELECT, STREAM_TILE, uniform01, uniform_int
from .shuffle import apply_background, plan_background
from .ssd import choose_template, shape_xor
from .tables import Table


@njit(cache=True, nogil=True)
def plan_tile(work, bt, P, seed, sample, rec_i, rec_f, moves, max_id):
    """Plan InsMix for one tile.

    ``work`` holds the tile's label map on entry (largest id ``max_id``) and the
    new label map on return (pasted instances written in).

    Writes paste records into ``rec_i`` (int64: template, original id, new label,
    y0, x0, dy, dx) / ``rec_f`` (float64: f_scale, f_shape, f_dis) and background
    moves into ``moves``. Returns ``(n_pastes, n_moves)``; ``n_pastes = -1`` when
    ``rec_i`` is too small (the caller retries with room for one paste per instance).
    """
    hh, ww = work.shape
    ids, lut, area, sum_r, sum_c, bbox, occupied = tile_stats(work, P.tile, max_id, rec_i.shape[0])
    k = ids.shape[0]
    n = 0
    if P.foreground and k > 0 and bt.area.shape[0] > 0:
        selected = np.empty(k, np.bool_)
        for i in range(k):
            selected[i] = uniform01(seed, sample, STREAM_SELECT, i) < P.p_paste
        t_area, anchor, hw, origin, offset, masks, desc, fits = build_table_rows(work, ids, area, sum_r, sum_c,
                                                                                 bbox, selected)
        ot = Table(t_area, anchor, hw, offset, masks, np.empty(0, np.uint8), desc, fits)
        cap_ids = k + 1 + rec_i.shape[0]
        ids_ext = np.zeros(cap_ids, np.int64)
        cur_area = np.zeros(cap_ids, np.int64)
        ibbox = np.zeros((cap_ids, 4), np.int32)
        pieces = np.full(cap_ids, -1, np.int64)
        for c in range(1, k + 1):
            cur_area[c] = area[c]
            ibbox[c] = bbox[c]
            ids_ext[c] = ids[c - 1]
        occ = np.zeros(cap_ids, np.int64)
        touched = np.zeros(cap_ids, np.int64)
        big = P.max_crop
        for c in range(1, k + 1):
            big = max(big, (bbox[c, 2] - bbox[c, 0]) * (bbox[c, 3] - bbox[c, 1]))
        scratch = new_scratch(big)
        g = np.int64(np.floor(P.gamma))
        d_diag = np.int64(0)
        n_tries = P.n_tries
        if P.diagonal:
            d_diag = uniform_int(seed, sample, STREAM_TILE, 0, max(2 * g, 1)) - g
            n_tries = 1
        for i in range(k):
            if not selected[i]:
                continue
            t = choose_template(ot, i, bt, P.eps, P.rho, P.ssd, P.max_draws, seed, sample, i)
            if t < 0:
                continue
            if n >= rec_i.shape[0]:
                return -1, 0
            h = np.int64(bt.hw[t, 0])
            w = np.int64(bt.hw[t, 1])
            at_r = np.int64(bt.anchor[t, 0])
            at_c = np.int64(bt.anchor[t, 1])
            ao_r = np.int64(origin[i, 0]) + anchor[i, 0]
            ao_c = np.int64(origin[i, 1]) + anchor[i, 1]
            t_off = bt.offset[t]
            for tr in range(n_tries):
                if not P.ssd:
                    ok, y0, x0 = draw_free_position(seed, sample, i, tr, h, w, hh, ww)
                    dy = y0 + at_r - ao_r
                    dx = x0 + at_c - ao_c
                elif P.diagonal:
                    ok = True
                    dy = d_diag
                    dx = d_diag
                else:
                    ok, dy, dx = draw_annulus_offset(seed, sample, i, tr, P.delta, P.gamma)
                if not ok:
                    continue
                y0 = ao_r + dy - at_r
                x0 = ao_c + dx - at_c
                if not placement_ok(work, lut, ids_ext, cur_area, ibbox, pieces, bt.masks, t_off, h, w, y0, x0,
                                    P.max_occlusion, occ, touched, scratch):
                    continue
                new_c = k + 1 + n
                new_id = max_id + 1 + n
                lut[new_id] = new_c
                ids_ext[new_c] = new_id
                paste_into_work(work, lut, cur_area, ibbox, pieces, occupied, P.tile, bt.masks, t_off, h, w,
                                y0, x0, new_c, new_id, bt.area[t])
                a_o = t_area[i]
                a_t = bt.area[t]
                rec_i[n, R_TEMPLATE] = t
                rec_i[n, R_ORIGINAL] = ids[i]
                rec_i[n, R_LABEL] = new_id
                rec_i[n, R_Y] = y0
                rec_i[n, R_X] = x0
                rec_i[n, R_DY] = dy
                rec_i[n, R_DX] = dx
                rec_f[n, F_SCALE] = np.float64(max(a_o, a_t) - min(a_o, a_t)) / np.float64(min(a_o, a_t))
                rec_f[n, F_SHAPE] = np.float64(shape_xor(ot, i, bt, t)) / np.float64(max(a_o, a_t))
                rec_f[n, F_DIS] = np.sqrt(np.float64(dy * dy + dx * dx))
                n += 1
                break
    n_moves = 0
    if P.background:
        n_moves = plan_background(occupied, P.alpha, seed, sample, moves)
    return n, n_moves


@njit(cache=True, nogil=True)
def apply_tile(image, labels, bt, tile, rec_i, n, moves, n_moves, out_image, out_labels, paste_mask, shuffled):
    """Apply a plan: copy inputs to the outputs, paste, then move background patches."""
    copy_into(out_image, image)
    copy_into(out_labels, labels)
    fill_false(paste_mask)
    fill_false(shuffled)
    apply_pastes(out_image, out_labels, paste_mask, rec_i, n, bt)
    apply_background(out_image, moves, n_moves, tile, shuffled)


@njit(cache=True, nogil=True)
def insmix_tile(image, labels, bt, P, seed, sample, rec_i, rec_f, moves,
                out_image, out_labels, paste_mask, shuffled, max_id):
    """Plan and apply for one tile; returns ``(n_pastes, n_moves)`` (-1 pastes: records too small).

    The planner works directly in ``out_labels``; the apply step then pastes the
    image (and writes the same labels again, which costs only the pasted pixels).
    """
    copy_into(out_labels, labels)
    n, n_moves = plan_tile(out_labels, bt, P, seed, sample, rec_i, rec_f, moves, max_id)
    if n < 0:
        return n, n_moves
    copy_into(out_image, image)
    fill_false(paste_mask)
    fill_false(shuffled)
    apply_pastes(out_image, out_labels, paste_mask, rec_i, n, bt)
    apply_background(out_image, moves, n_moves, P.tile, shuffled)
    return n, n_moves


@njit(cache=True, nogil=True, parallel=True)
def insmix_batch_kernel(images, labels, bt, P, seed, samples, rec_i, rec_f, moves,
                        out_images, out_labels, paste_masks, shuffled, counts, max_ids):
    """``insmix_tile`` over a batch, tiles in parallel; ``counts[b] = (n_pastes, n_moves)``."""
    for b in prange(images.shape[0]):
        n, m = insmix_tile(images[b], labels[b], bt, P, seed, samples[b], rec_i[b], rec_f[b], moves[b],
                           out_images[b], out_labels[b], paste_masks[b], shuffled[b], max_ids[b])
        counts[b, 0] = n
        counts[b, 1] = m
