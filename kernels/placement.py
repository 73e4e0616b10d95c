"""Placement (SPEC §3): seeded offsets, the occlusion/split/bounds test, the
paste into the working label map used while planning, and the placement loop
(:func:`place_pastes`) that the CPU pipeline runs and the GPU kernel runs
compiled for the device (``kernels.cuda_device.device_function``).

All work is proportional to the template's and touched instances' bounding
boxes; nothing scans the whole tile per paste.
"""

from __future__ import annotations

import numpy as np
from .jit import njit

from .instances import count_components
from .records import write_record
from .rng import STREAM_PLACE, STREAM_TILE, counter2, uniform_int, uniform_int_pair

#: Square draws per try before the annulus draw gives up (acceptance ≥ π/4·(1−δ²/γ²)).
MAX_OFFSET_DRAWS = 256


@njit(cache=True, nogil=True, inline="always")
def draw_annulus_offset(seed, sample, key, try_idx, delta, gamma):
    """Integer (dy, dx) uniform on δ² ≤ dy²+dx² ≤ γ², by rejection from [−⌊γ⌋, ⌊γ⌋]²."""
    g = np.int64(np.floor(gamma))
    n = 2 * g + 1
    d2 = delta * delta
    g2 = gamma * gamma
    for j in range(MAX_OFFSET_DRAWS):
        dy, dx = uniform_int_pair(seed, sample, STREAM_PLACE, counter2(key, try_idx * MAX_OFFSET_DRAWS + j), n)
        dy -= g
        dx -= g
        r2 = np.float64(dy * dy + dx * dx)
        if d2 <= r2 and r2 <= g2:
            return True, dy, dx
    return False, np.int64(0), np.int64(0)


@njit(cache=True, nogil=True, inline="always")
def draw_free_position(seed, sample, key, try_idx, h, w, tile_h, tile_w):
    """Top-left (y0, x0) uniform over positions where an h×w crop fits (no SSD)."""
    if h > tile_h or w > tile_w:
        return False, np.int64(0), np.int64(0)
    y0 = uniform_int(seed, sample, STREAM_PLACE, counter2(key, 2 * try_idx), tile_h - h + 1)
    x0 = uniform_int(seed, sample, STREAM_PLACE, counter2(key, 2 * try_idx + 1), tile_w - w + 1)
    return True, y0, x0


@njit(cache=True, nogil=True, inline="always")
def placement_ok(work, lut, ids_ext, cur_area, ibbox, pieces, masks, t_off, h, w, y0, x0, max_occ, occ, touched,
                 scratch, ignore, use_ignore):
    """Is pasting the crop ``masks[t_off : t_off+h·w]`` at (y0, x0) allowed?

    ``work`` is the label map as it stands (raw ids); ``lut`` maps a raw id to its
    rank ``c`` and ``ids_ext[c]`` back. Rejects a crop leaving the tile, putting a
    pixel on an ignore pixel (``ignore``, read when ``use_ignore``; None: compiled out), covering
    more than ``max_occ`` of any existing instance, or splitting an instance into
    more pieces than it has. ``occ``/``touched`` are zeroed scratch arrays (left
    zeroed on return); ``pieces[c]`` caches piece counts (-1 = unknown);
    ``scratch`` is :func:`~insmix_fast.kernels.instances.new_scratch` of the tile.
    """
    hh, ww = work.shape
    if y0 < 0 or x0 < 0 or y0 + h > hh or x0 + w > ww:
        return False
    if ignore is not None and use_ignore:  # ignore None (CPU calls without one): compiled out
        for y in range(h):
            row = t_off + y * w
            for x in range(w):
                if masks[row + x] and ignore[y0 + y, x0 + x]:
                    return False
    nt = 0
    for y in range(h):
        row = t_off + y * w
        for x in range(w):
            if masks[row + x]:
                v = work[y0 + y, x0 + x]
                if v:
                    c = lut[v]
                    if occ[c] == 0:
                        touched[nt] = c
                        nt += 1
                    occ[c] += 1
    ok = True
    for k in range(nt):
        c = touched[k]
        if np.float64(occ[c]) > max_occ * np.float64(cur_area[c]):
            ok = False
            break
    if ok:
        for k in range(nt):
            c = touched[k]
            if occ[c] >= cur_area[c]:
                continue  # fully covered (only when max_occ = 1): nothing left to split
            if pieces[c] < 0:
                pieces[c] = count_components(work, ids_ext[c], ibbox[c, 0], ibbox[c, 1], ibbox[c, 2], ibbox[c, 3],
                                             masks, 0, 0, 0, 0, 0, scratch)
            after = count_components(work, ids_ext[c], ibbox[c, 0], ibbox[c, 1], ibbox[c, 2], ibbox[c, 3],
                                     masks, y0, x0, y0 + h, x0 + w, t_off, scratch)
            if after > pieces[c]:
                ok = False
                break
    for k in range(nt):
        occ[touched[k]] = 0
    return ok


@njit(cache=True, nogil=True, inline="always")
def paste_into_work(work, lut, cur_area, ibbox, pieces, occupied, patch, masks, t_off, h, w, y0, x0, new_c, new_id,
                    area_t):
    """Write the accepted crop (id ``new_id``, rank ``new_c``) into the working map; update state
    (``occupied``: the patch×patch background grid, marks the patches the crop covers)."""
    gh, gw = occupied.shape
    touched_any = False
    for y in range(h):
        row = t_off + y * w
        yy = y0 + y
        py = yy // patch
        for x in range(w):
            if masks[row + x]:
                xx = x0 + x
                v = work[yy, xx]
                if v:
                    c = lut[v]
                    cur_area[c] -= 1
                    pieces[c] = -1  # recount lazily: the occluded instance changed
                    touched_any = True
                work[yy, xx] = new_id
                px = xx // patch
                if py < gh and px < gw:
                    occupied[py, px] = True
    cur_area[new_c] = area_t
    ibbox[new_c, 0] = y0
    ibbox[new_c, 1] = x0
    ibbox[new_c, 2] = y0 + h
    ibbox[new_c, 3] = x0 + w
    pieces[new_c] = 1
    return touched_any


@njit(cache=True, nogil=True)
def place_pastes(work, k, max_id, choice, area, anchor, lut, ids_ext, cur_area, ibbox, pieces, occupied, occ,
                 touched, scratch, b_area, b_anchor, b_hw, b_off, b_masks, b_classes, ignore, use_ignore, patch, n_tries,
                 ssd, diagonal, delta, gamma, max_occ, seed, sample, rec_i, rec_f):
    """Place the chosen templates of one tile, originals in rank order; return the number
    of pastes (-1 when ``rec_i`` has no room for one more).

    Per original rank ``c`` = 1..k: ``choice[c]`` its bank template (-1: none),
    ``area[c]`` its pixel count, ``anchor[c]`` its absolute anchor (row, col),
    ``ids_ext[c]`` its id. ``lut``/``ids_ext``/``cur_area``/``ibbox``/``pieces``
    are the rank tables of :func:`placement_ok` with room for the pasted instances
    (ranks ``k + 1 + j``, ids ``max_id + 1 + j``); ``occ``/``touched`` zeroed
    scratch. Each original gets up to ``n_tries`` offsets (annulus draws; uniform
    positions without SSD; one diagonal offset per tile with ``diagonal``); with
    ``use_ignore`` no template pixel may land on an ``ignore`` pixel. An
    accepted paste is written into ``work`` and ``occupied`` and recorded in
    ``rec_i[j]``/``rec_f[j]`` (:func:`~.records.write_record`; the caller fills
    ``F_SHAPE``).
    """
    hh = work.shape[0]
    ww = work.shape[1]
    g = np.int64(np.floor(gamma))
    d_diag = np.int64(0)
    tries = n_tries
    if diagonal:
        d_diag = uniform_int(seed, sample, STREAM_TILE, 0, max(2 * g, 1)) - g
        tries = 1
    n = 0
    for i in range(k):
        c = i + 1
        t = choice[c]
        if t < 0:
            continue
        if n >= rec_i.shape[0]:
            return -1
        h = np.int64(b_hw[t, 0])
        w = np.int64(b_hw[t, 1])
        at_r = np.int64(b_anchor[t, 0])
        at_c = np.int64(b_anchor[t, 1])
        ao_r = np.int64(anchor[c, 0])
        ao_c = np.int64(anchor[c, 1])
        t_off = b_off[t]
        for tr in range(tries):
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
            if not placement_ok(work, lut, ids_ext, cur_area, ibbox, pieces, b_masks, t_off, h, w, y0, x0, max_occ,
                                occ, touched, scratch, ignore, use_ignore):
                continue
            new_c = k + 1 + n
            new_id = max_id + 1 + n
            lut[new_id] = new_c
            ids_ext[new_c] = new_id
            paste_into_work(work, lut, cur_area, ibbox, pieces, occupied, patch, b_masks, t_off, h, w, y0, x0, new_c,
                            new_id, b_area[t])
            write_record(rec_i[n], rec_f[n], t, ids_ext[c], new_id, y0, x0, dy, dx, area[c], b_area[t], b_classes[t])
            n += 1
            break
    return n
