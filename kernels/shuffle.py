"""Background perturbation (SPEC §4): choose a fraction α of the instance-free
``patch``×``patch`` patches and permute them among their own positions."""

from __future__ import annotations

import numpy as np
from .jit import njit

from .alloc import empty
from .rng import STREAM_BACKGROUND, counter2, uniform_int


@njit(cache=True, nogil=True, inline="always")
def collect_background(occupied, free):
    """Write the row-major indices of the background patches (``occupied == False``)
    into ``free`` (length ≥ gh·gw) in row-major order; return their number."""
    gh, gw = occupied.shape
    nb = 0
    for py in range(gh):
        for px in range(gw):
            if not occupied[py, px]:
                free[nb] = py * gw + px
                nb += 1
    return nb


@njit(cache=True, nogil=True, inline="always")
def background_count(alpha, nb):
    """``k = ⌊α·n_background + ½⌋`` in float64 (the GPU reads it from :func:`background_count_table`)."""
    return np.int64(np.floor(alpha * np.float64(nb) + 0.5))


@njit(cache=True, nogil=True)
def background_count_table(alpha, g):
    """``background_count(alpha, n)`` for n = 0..g: the table the GPU plan indexes (made on the
    host by this same function, so both devices use one formula)."""
    out = empty(g + 1, np.int64)
    for n in range(g + 1):
        out[n] = background_count(alpha, n)
    return out


@njit(cache=True, nogil=True, inline="always")
def plan_moves(free, nb, k, seed, sample, moves):
    """Choose ``k`` of the ``nb`` patches in ``free`` (seeded partial Fisher–Yates,
    reorders ``free``) and permute them (seeded Fisher–Yates; the permutation is
    built in ``moves[:, 0]``); fill ``moves[:k] = (src_patch, dst_patch)``, return k
    (0 when k < 2: nothing to permute)."""
    if k < 2:
        return 0
    for i in range(k):
        j = i + uniform_int(seed, sample, STREAM_BACKGROUND, counter2(0, i), nb - i)
        tmp = free[i]
        free[i] = free[j]
        free[j] = tmp
    for i in range(k):
        moves[i, 0] = i
    for i in range(k - 1, 0, -1):
        j = uniform_int(seed, sample, STREAM_BACKGROUND, counter2(1, i), i + 1)
        tmp = moves[i, 0]
        moves[i, 0] = moves[j, 0]
        moves[j, 0] = tmp
    for i in range(k):
        moves[i, 0] = free[moves[i, 0]]
        moves[i, 1] = free[i]
    return k


@njit(cache=True, nogil=True, inline="always")
def plan_background(occupied, alpha, seed, sample, moves):
    """Fill ``moves[:k] = (src_patch, dst_patch)`` (row-major patch indices); return k.

    Background patches are the full grid patches with ``occupied == False``;
    ``k = ⌊α·n_background + ½⌋`` of them are chosen by a seeded partial
    Fisher–Yates shuffle and permuted by a seeded Fisher–Yates permutation.
    The GPU plan (``kernels.cuda_pipeline.plan_background``) runs the same
    :func:`collect_background` and :func:`plan_moves`.
    """
    free = empty(occupied.shape[0] * occupied.shape[1], np.int64)
    nb = collect_background(occupied, free)
    return plan_moves(free, nb, background_count(alpha, nb), seed, sample, moves)


@njit(cache=True, nogil=True)
def apply_background(image, moves, k, patch, shuffled, channel_first=None):
    """Move patch ``src`` to ``dst`` for each planned move (reads before writing) and mark the
    moved pixels in ``shuffled`` (None: not marked, compiled out). ``image`` is H×W×3 of any dtype
    and strides, or with ``channel_first`` not None a C-contiguous 3×H×W array (see
    :func:`.paste.apply_pastes`): then each patch moves as 3·patch contiguous rows."""
    if k <= 0:
        return
    gw = (image.shape[1] if channel_first is None else image.shape[2]) // patch
    buf = empty((k, patch, patch, 3) if channel_first is None else (k, 3, patch, patch), image.dtype)
    for i in range(k):
        s = moves[i, 0]
        sy = (s // gw) * patch
        sx = (s % gw) * patch
        if channel_first is None:
            for y in range(patch):
                for x in range(patch):
                    for ch in range(3):
                        buf[i, y, x, ch] = image[sy + y, sx + x, ch]
        else:
            for ch in range(3):
                for y in range(patch):
                    for x in range(patch):
                        buf[i, ch, y, x] = image[ch, sy + y, sx + x]
    for i in range(k):
        d = moves[i, 1]
        dy = (d // gw) * patch
        dx = (d % gw) * patch
        if channel_first is None:
            for y in range(patch):
                for x in range(patch):
                    for ch in range(3):
                        image[dy + y, dx + x, ch] = buf[i, y, x, ch]
        else:
            for ch in range(3):
                for y in range(patch):
                    for x in range(patch):
                        image[ch, dy + y, dx + x] = buf[i, ch, y, x]
        if shuffled is not None and moves[i, 0] != d:
            for y in range(patch):
                for x in range(patch):
                    shuffled[dy + y, dx + x] = True
