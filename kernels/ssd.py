"""SSD constraints (SPEC §2): scale and shape gaps, and the seeded template choice.

Thresholds are decided in float64 on exact integer counts, identically on every
device: ``f_scale ≤ eps  ⇔  (max − min) ≤ eps·min`` and
``f_shape ≤ rho  ⇔  xor ≤ rho·max``.

The bank is sorted by area, so the scale-admissible templates of an original
form one contiguous index range, found by binary search on the predicate
itself. Inside it, uniform draws are checked against the shape constraint;
after ``max_draws`` misses an exhaustive count picks the k-th admissible one.
Both stages are uniform over the admissible set, so the choice is an exact
uniform draw among admissible templates (SPEC §3).

With ``template_class="same"``/``"balanced"`` (SPEC §3b) the same two stages run on
one class's segment of the class-ordered bank (:class:`~.classes.ClassTable`: each
class's rows sorted by area, so its scale range is contiguous too); a position ``j``
of that segment is bank row ``order[j]``. ``"any"`` searches the bank itself with the
same draws as before classes existed.
"""

from __future__ import annotations

import numpy as np
from numba import prange

from .alloc import empty, zeros
from .classes import TEMPLATE_ANY, class_segment, template_at
from .descriptor import crop_intersection, desc_and_count
from .jit import njit
from .rng import STREAM_TEMPLATE, counter2, uniform_int


@njit(cache=True, nogil=True)
def scale_ok(a_o, a_t, eps):
    mx = max(a_o, a_t)
    mn = min(a_o, a_t)
    return np.float64(mx - mn) <= eps * np.float64(mn)


@njit(cache=True, nogil=True)
def lower_bound_in(a, begin, end, v):
    """First index i in ``[begin, end)`` with ``a[i] >= v`` (``end`` if none), written as a
    plain loop so that the CUDA path compiles this same source (``cuda_device.device_function``)."""
    lo = begin
    hi = end
    while lo < hi:
        m = (lo + hi) // 2
        if a[m] < v:
            lo = m + 1
        else:
            hi = m
    return lo


@njit(cache=True, nogil=True)
def lower_bound(a, v):
    """First index i with ``a[i] >= v`` (``np.searchsorted(a, v)``, side='left')."""
    return lower_bound_in(a, 0, a.shape[0], v)


@njit(cache=True, nogil=True)
def scale_range_in(area, begin, end, a_o, eps):
    """[lo, hi) ⊆ [begin, end): positions of the area-sorted ``area[begin:end]`` whose scale gap
    to ``a_o`` is ≤ eps (absolute indices into ``area``)."""
    p = lower_bound_in(area, begin, end, a_o)
    a = begin
    b = p
    while a < b:  # smaller templates: predicate is False … True
        m = (a + b) // 2
        if scale_ok(a_o, area[m], eps):
            b = m
        else:
            a = m + 1
    lo = a
    a = p
    b = end
    while a < b:  # larger templates: predicate is True … False
        m = (a + b) // 2
        if scale_ok(a_o, area[m], eps):
            a = m + 1
        else:
            b = m
    return lo, a


@njit(cache=True, nogil=True)
def scale_range(bank_area, a_o, eps):
    """[lo, hi): indices of the area-sorted bank whose scale gap to ``a_o`` is ≤ eps."""
    return scale_range_in(bank_area, 0, bank_area.shape[0], a_o, eps)


@njit(cache=True, nogil=True, inline="always")
def aligned_intersection(ot, i, bt, t):
    """|Mo ∧ Mt| with the two masks aligned on their anchors (exact)."""
    if ot.fits[i] or bt.fits[t]:
        return desc_and_count(ot.desc[i], bt.desc[t])
    mo = ot.masks[ot.offset[i]:ot.offset[i + 1]].reshape((ot.hw[i, 0], ot.hw[i, 1]))
    mt = bt.masks[bt.offset[t]:bt.offset[t + 1]].reshape((bt.hw[t, 0], bt.hw[t, 1]))
    return crop_intersection(mo, ot.anchor[i, 0], ot.anchor[i, 1], mt, bt.anchor[t, 0], bt.anchor[t, 1])


@njit(cache=True, nogil=True)
def shape_xor(ot, i, bt, t):
    """|Mo xor Mt| after centroid (anchor) alignment."""
    return ot.area[i] + bt.area[t] - 2 * aligned_intersection(ot, i, bt, t)


@njit(cache=True, nogil=True)
def shape_ok(xor, a_o, a_t, rho):
    return np.float64(xor) <= rho * np.float64(max(a_o, a_t))


@njit(cache=True, nogil=True)
def admissible(ot, i, bt, t, eps, rho):
    a_o = ot.area[i]
    a_t = bt.area[t]
    if not scale_ok(a_o, a_t, eps):
        return False
    return shape_ok(shape_xor(ot, i, bt, t), a_o, a_t, rho)


@njit(cache=True, nogil=True)
def choose_in(ot, i, bt, area, order, begin, end, eps, rho, ssd, max_draws, seed, sample, key):
    """Seeded uniform choice of an admissible template for original ``i`` among positions
    ``[begin, end)`` of ``area``: the bank's own areas (``order`` None), or a class segment of
    the class-ordered bank (position ``j`` is bank row ``order[j]``); -1 if none."""
    n = end - begin
    if n <= 0:
        return -1
    if not ssd:
        return template_at(order, begin + uniform_int(seed, sample, STREAM_TEMPLATE, counter2(key, 0), n))
    a_o = ot.area[i]
    lo, hi = scale_range_in(area, begin, end, a_o, eps)
    n = hi - lo
    if n <= 0:
        return -1
    for j in range(max_draws):
        t = template_at(order, lo + uniform_int(seed, sample, STREAM_TEMPLATE, counter2(key, j), n))
        if shape_ok(shape_xor(ot, i, bt, t), a_o, bt.area[t], rho):
            return t
    count = 0
    for p in range(lo, hi):
        t = template_at(order, p)
        if shape_ok(shape_xor(ot, i, bt, t), a_o, bt.area[t], rho):
            count += 1
    if count == 0:
        return -1
    k = uniform_int(seed, sample, STREAM_TEMPLATE, counter2(key, 0xFFFFFFFF), count)
    for p in range(lo, hi):
        t = template_at(order, p)
        if shape_ok(shape_xor(ot, i, bt, t), a_o, bt.area[t], rho):
            if k == 0:
                return t
            k -= 1
    return -1  # unreachable


@njit(cache=True, nogil=True)
def choose_template(ot, i, bt, ct, mode, o_class, eps, rho, ssd, max_draws, seed, sample, key):
    """Seeded uniform choice of an admissible bank template for original ``i``; -1 if none.

    ``key`` identifies the original within its sample (its rank by label id),
    so the draw is independent of processing order. ``mode`` is the template class mode
    (:mod:`.classes`), ``o_class`` the original's class (read by ``TEMPLATE_SAME``), ``ct``
    the bank's :class:`~.classes.ClassTable`.
    """
    if mode == TEMPLATE_ANY:
        return choose_in(ot, i, bt, bt.area, None, 0, bt.area.shape[0], eps, rho, ssd, max_draws, seed, sample, key)
    begin, end = class_segment(mode, o_class, ct.start, ct.cum, seed, sample, key)
    return choose_in(ot, i, bt, ct.area, ct.order, begin, end, eps, rho, ssd, max_draws, seed, sample, key)


@njit(cache=True, nogil=True, parallel=True)
def score_originals_class(ot, bt, ct, mode, o_classes, eps, rho, ssd, max_draws, seed, samples, keys):
    """Template choice for every original of a batch against the whole bank (one call).

    ``samples[i]``/``keys[i]``: sample index and per-sample rank of original ``i``;
    ``o_classes[i]`` its class (read with ``mode = TEMPLATE_SAME``).
    Returns ``choice`` (n,) int64, -1 where no template is admissible.
    """
    n = ot.area.shape[0]
    choice = empty(n, np.int64)
    for i in prange(n):
        choice[i] = choose_template(ot, i, bt, ct, mode, o_classes[i], eps, rho, ssd, max_draws, seed, samples[i],
                                    keys[i])
    return choice


@njit(cache=True, nogil=True, parallel=True)
def score_originals(ot, bt, eps, rho, ssd, max_draws, seed, samples, keys):
    """:func:`score_originals_class` with ``template_class="any"`` (no class table needed)."""
    n = ot.area.shape[0]
    n_bank = bt.area.shape[0]
    choice = empty(n, np.int64)
    for i in prange(n):
        choice[i] = choose_in(ot, i, bt, bt.area, None, 0, n_bank, eps, rho, ssd, max_draws, seed, samples[i], keys[i])
    return choice


@njit(cache=True, nogil=True, parallel=True)
def admissible_counts(ot, bt, eps, rho):
    """Exhaustive count of admissible templates per original (for statistics and tests)."""
    n = ot.area.shape[0]
    counts = zeros(n, np.int64)
    for i in prange(n):
        lo, hi = scale_range(bt.area, ot.area[i], eps)
        c = 0
        for t in range(lo, hi):
            if shape_ok(shape_xor(ot, i, bt, t), ot.area[i], bt.area[t], rho):
                c += 1
        counts[i] = c
    return counts


@njit(cache=True, nogil=True)
def admissible_list(ot, i, bt, eps, rho):
    """All bank indices admissible for original ``i`` (ascending)."""
    lo, hi = scale_range(bt.area, ot.area[i], eps)
    out = empty(max(hi - lo, 0), np.int64)
    n = 0
    for t in range(lo, hi):
        if shape_ok(shape_xor(ot, i, bt, t), ot.area[i], bt.area[t], rho):
            out[n] = t
            n += 1
    return out[:n]
