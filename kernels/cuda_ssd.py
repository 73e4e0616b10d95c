"""Bank-wide SSD scoring on the device (the GPU twin of ``kernels.ssd.choose_template``
and ``admissible_counts``).

Originals are the rank slots ``(b, c)`` of :mod:`kernels.cuda_instances` (read
straight from the label map plus their packed descriptors); the bank is the
device bank's flat arrays. Nothing of size originals × bank is ever stored:

* :func:`k_choose` — one thread per original: binary search of the scale range,
  then the same ``max_draws`` Philox rejection draws as the CPU. Most originals
  end here. Those that miss every draw are marked ``-2``.
* :func:`k_fallback` — one *block* per marked original: the block sweeps the
  scale range ``BLOCK`` templates at a time, counts admissible ones (shared
  atomics), draws ``k`` with the CPU's counter and finds the k-th admissible
  template with a block prefix sum. Memory O(1) per original.
* :func:`k_counts` — one block per original: exhaustive admissible counts
  (statistics, the bank-size benchmark).

Both block kernels count with :func:`count_admissible`; every kernel reads an
original's scalars with ``cuda_device.original_at``.

Template classes (SPEC §3b): with ``mode`` ``TEMPLATE_SAME``/``TEMPLATE_BALANCED`` the
search runs on one class's segment of the class-ordered bank (``c_order``, ``c_start``,
``c_area``, ``c_cum`` of :class:`kernels.classes.ClassTable`), the segment chosen by the
CPU's own :func:`kernels.classes.class_segment`; position ``j`` is bank row
``c_order[j]``. With ``TEMPLATE_ANY`` the caller passes the bank's areas as ``c_area``
and positions are bank rows, as before classes existed.
"""

from __future__ import annotations

import numpy as np
from numba import cuda, int64

from .classes import TEMPLATE_ANY, TEMPLATE_SAME
from .cuda_device import (BLOCK, admissible_t, class_segment, counter2, original_at, scale_range, scale_range_in,
                          uniform_int)
from .rng import STREAM_TEMPLATE

NONE = -1
FALLBACK = -2


@cuda.jit(device=True)
def row_at(c_order, use_order, j):
    """Bank row at search position ``j``: ``c_order[j]`` in a class segment, else ``j`` (the
    CPU's ``kernels.classes.template_at``, with the mode a run-time flag of the launch)."""
    if use_order:
        return np.int64(c_order[j])
    return np.int64(j)


@cuda.jit
def k_choose(labels, k_arr, ids_ext, area, anchor, selected, desc, fits,
             b_area, b_anchor, b_hw, b_off, b_masks, b_desc, b_fits, c_order, c_start, c_area, c_cum, mode, id_class,
             eps, rho, ssd, max_draws, seed, samples, choice, lo_out, hi_out):
    """``kernels.ssd.choose_template``'s rejection draws for every selected original (``id_class[b, id]``:
    the class of instance ``id`` of tile ``b``, read with ``TEMPLATE_SAME``)."""
    nb, nslots = choice.shape
    start, step = cuda.grid(1), cuda.gridsize(1)
    n_bank = b_area.shape[0]
    use_order = mode != TEMPLATE_ANY
    for p in range(start, nb * nslots, step):
        b = p // nslots
        c = p - b * nslots
        choice[b, c] = NONE
        if c == 0 or c > k_arr[b] or not selected[b, c] or n_bank == 0:
            continue
        sample = samples[b]
        key = c - 1
        v, a_o, ao_r, ao_c, of = original_at(ids_ext, area, anchor, fits, b, c)
        begin = 0
        end = n_bank
        if use_order:
            o_class = 0
            if mode == TEMPLATE_SAME:
                o_class = id_class[b, v]
            begin, end = class_segment(mode, o_class, c_start, c_cum, seed, sample, key)
        if end <= begin:
            continue
        if not ssd:
            choice[b, c] = row_at(c_order, use_order,
                                  begin + uniform_int(seed, sample, STREAM_TEMPLATE, counter2(key, 0), end - begin))
            continue
        lo, hi = scale_range_in(c_area, begin, end, a_o, eps)
        lo_out[b, c] = lo
        hi_out[b, c] = hi
        n = hi - lo
        if n <= 0:
            continue
        lab = labels[b]
        od = desc[b, c]
        found = False
        for j in range(max_draws):
            t = row_at(c_order, use_order, lo + uniform_int(seed, sample, STREAM_TEMPLATE, counter2(key, j), n))
            if admissible_t(lab, v, a_o, od, of, ao_r, ao_c, b_area, b_anchor, b_hw, b_off, b_masks, b_desc,
                            b_fits, t, rho):
                choice[b, c] = t
                found = True
                break
        if not found:
            choice[b, c] = FALLBACK


@cuda.jit(device=True)
def count_admissible(cnt, labels, ids_ext, area, anchor, desc, fits, b, c, lo, hi,
                     b_area, b_anchor, b_hw, b_off, b_masks, b_desc, b_fits, rho, c_order, use_order):
    """Admissible templates at positions ``[lo, hi)`` (bank rows, or ``c_order[j]`` with
    ``use_order``) for original ``(b, c)``, counted by the whole block ``BLOCK`` at a time in
    the shared counter ``cnt``; every thread returns the total."""
    v, a_o, ao_r, ao_c, of = original_at(ids_ext, area, anchor, fits, b, c)
    lab = labels[b]
    od = desc[b, c]
    tid = cuda.threadIdx.x
    if tid == 0:
        cnt[0] = 0
    cuda.syncthreads()
    for base in range(lo, hi, BLOCK):
        j = base + tid
        if j < hi and admissible_t(lab, v, a_o, od, of, ao_r, ao_c, b_area, b_anchor, b_hw, b_off, b_masks,
                                   b_desc, b_fits, row_at(c_order, use_order, j), rho):
            cuda.atomic.add(cnt, 0, 1)
    cuda.syncthreads()
    total = cnt[0]
    cuda.syncthreads()  # cnt is reused by the block's next original
    return total


@cuda.jit(device=True)
def pick_admissible(sh, labels, ids_ext, area, anchor, desc, fits, b, c, lo, hi, rem,
                    b_area, b_anchor, b_hw, b_off, b_masks, b_desc, b_fits, rho, c_order, use_order, choice):
    """``choice[b, c]`` = the ``rem``-th (0-based) admissible template of positions ``[lo, hi)``
    (as :func:`count_admissible`), found by the whole block ``BLOCK`` templates at a time with
    a prefix sum in shared ``sh``."""
    v, a_o, ao_r, ao_c, of = original_at(ids_ext, area, anchor, fits, b, c)
    lab = labels[b]
    od = desc[b, c]
    tid = cuda.threadIdx.x
    for base in range(lo, hi, BLOCK):
        t = NONE
        if base + tid < hi:
            t = row_at(c_order, use_order, base + tid)
        f = 0
        if t >= 0 and admissible_t(lab, v, a_o, od, of, ao_r, ao_c, b_area, b_anchor, b_hw, b_off, b_masks,
                                   b_desc, b_fits, t, rho):
            f = 1
        sh[tid] = f
        cuda.syncthreads()
        off = 1
        while off < BLOCK:  # Hillis–Steele inclusive scan
            add = 0
            if tid >= off:
                add = sh[tid - off]
            cuda.syncthreads()
            sh[tid] += add
            cuda.syncthreads()
            off *= 2
        if f == 1 and sh[tid] - 1 == rem:
            choice[b, c] = t
        chunk = sh[BLOCK - 1]
        cuda.syncthreads()
        rem -= chunk
        if rem < 0:
            break


@cuda.jit
def k_fallback(labels, ids_ext, area, anchor, desc, fits,
               b_area, b_anchor, b_hw, b_off, b_masks, b_desc, b_fits, c_order, use_order,
               rho, seed, samples, choice, lo_arr, hi_arr):
    """Exact uniform choice among all admissible templates for the ``-2`` originals
    (positions ``[lo, hi)`` of :func:`k_choose`; ``c_order[j]`` with ``use_order``)."""
    nb, nslots = choice.shape
    sh = cuda.shared.array(BLOCK, int64)
    cnt = cuda.shared.array(1, int64)
    for slot in range(cuda.blockIdx.x, nb * nslots, cuda.gridDim.x):
        b = slot // nslots
        c = slot - b * nslots
        if choice[b, c] != FALLBACK:  # same value for the whole block
            continue
        lo = lo_arr[b, c]
        hi = hi_arr[b, c]
        total = count_admissible(cnt, labels, ids_ext, area, anchor, desc, fits, b, c, lo, hi,
                                 b_area, b_anchor, b_hw, b_off, b_masks, b_desc, b_fits, rho, c_order, use_order)
        if total == 0:
            if cuda.threadIdx.x == 0:
                choice[b, c] = NONE
            continue
        rem = uniform_int(seed, samples[b], STREAM_TEMPLATE, counter2(c - 1, 0xFFFFFFFF), total)
        pick_admissible(sh, labels, ids_ext, area, anchor, desc, fits, b, c, lo, hi, rem,
                        b_area, b_anchor, b_hw, b_off, b_masks, b_desc, b_fits, rho, c_order, use_order, choice)


@cuda.jit
def k_counts(labels, k_arr, ids_ext, area, anchor, desc, fits,
             b_area, b_anchor, b_hw, b_off, b_masks, b_desc, b_fits, eps, rho, counts):
    """counts[b, c] = number of admissible bank templates for original (b, c) (-1 for empty slots)."""
    nb, nslots = counts.shape
    cnt = cuda.shared.array(1, int64)
    for slot in range(cuda.blockIdx.x, nb * nslots, cuda.gridDim.x):
        b = slot // nslots
        c = slot - b * nslots
        if c == 0 or c > k_arr[b]:
            if cuda.threadIdx.x == 0:
                counts[b, c] = -1
            continue
        lo, hi = scale_range(b_area, area[b, c], eps)
        total = count_admissible(cnt, labels, ids_ext, area, anchor, desc, fits, b, c, lo, hi,
                                 b_area, b_anchor, b_hw, b_off, b_masks, b_desc, b_fits, rho, b_area, False)
        if cuda.threadIdx.x == 0:
            counts[b, c] = total


__all__ = ["k_choose", "k_fallback", "k_counts", "count_admissible", "pick_admissible", "row_at", "NONE", "FALLBACK"]
