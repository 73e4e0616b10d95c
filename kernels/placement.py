"""Placement (SPEC §3): seeded offsets, the occlusion/split/bounds test, and the
paste into the working label map used while planning.

All work is proportional to the template's and touched instances' bounding
boxes; nothing scans the whole tile per paste.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from .instances import count_components
from .rng import STREAM_PLACE, counter2, uniform_int, uniform_int_pair

#: Square draws per try before the annulus draw gives up (acceptance ≥ π/4·(1−δ²/γ²)).
MAX_OFFSET_DRAWS = 256


@njit(cache=True, nogil=True)
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


@njit(cache=True, nogil=True)
def draw_free_position(seed, sample, key, try_idx, h, w, tile_h, tile_w):
    """Top-left (y0, x0) uniform over positions where an h×w crop fits (no SSD)."""
    if h > tile_h or w > tile_w:
        return False, np.int64(0), np.int64(0)
    y0 = uniform_int(seed, sample, STREAM_PLACE, counter2(key, 2 * try_idx), tile_h - h + 1)
    x0 = uniform_int(seed, sample, STREAM_PLACE, counter2(key, 2 * try_idx + 1), tile_w - w + 1)
    return True, y0, x0


@njit(cache=True, nogil=True)
def placement_ok(work, lut, ids_ext, cur_area, ibbox, pieces, masks, t_off, h, w, y0, x0, max_occ, occ, touched,
                 scratch):
    """Is pasting the crop ``masks[t_off : t_off+h·w]`` at (y0, x0) allowed?

    ``work`` is the label map as it stands (raw ids); ``lut`` maps a raw id to its
    rank ``c`` and ``ids_ext[c]`` back. Rejects a crop leaving the tile, covering
    more than ``max_occ`` of any existing instance, or splitting an instance into
    more pieces than it has. ``occ``/``touched`` are zeroed scratch arrays (left
    zeroed on return); ``pieces[c]`` caches piece counts (-1 = unknown);
    ``scratch`` is :func:`~insmix_fast.kernels.instances.new_scratch` of the tile.
    """
    hh, ww = work.shape
    if y0 < 0 or x0 < 0 or y0 + h > hh or x0 + w > ww:
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


@njit(cache=True, nogil=True)
def paste_into_work(work, lut, cur_area, ibbox, pieces, occupied, tile, masks, t_off, h, w, y0, x0, new_c, new_id,
                    area_t):
    """Write the accepted crop (id ``new_id``, rank ``new_c``) into the working map; update state."""
    gh, gw = occupied.shape
    touched_any = False
    for y in range(h):
        row = t_off + y * w
        yy = y0 + y
        py = yy // tile
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
                px = xx // tile
                if py < gh and px < gw:
                    occupied[py, px] = True
    cur_area[new_c] = area_t
    ibbox[new_c, 0] = y0
    ibbox[new_c, 1] = x0
    ibbox[new_c, 2] = y0 + h
    ibbox[new_c, 3] = x0 + w
    pieces[new_c] = 1
    return touched_any
