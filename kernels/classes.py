"""Nucleus classes and ignore regions in the kernels (SPEC §3b).

Template class modes (``InsMixConfig.template_class``), as the kernels read them:

* :data:`TEMPLATE_ANY` — the paper: every bank template may be chosen.
* :data:`TEMPLATE_SAME` — only templates of the original's class.
* :data:`TEMPLATE_BALANCED` — first draw a class ``c`` from the keyed stream
  ``STREAM_CLASS`` (counter: the original's rank), then the SSD choice among the
  templates of class ``c``; when none of them is admissible the original gets no
  paste (SPEC §3b).

:class:`ClassTable` is the bank seen by class: ``order`` lists the bank rows
class by class (a stable sort of the area-sorted bank, so each class's rows stay
sorted by area and the scale-range binary search works on its segment
``order[start[c]:start[c+1]]``, whose areas are ``area[start[c]:start[c+1]]``);
``classes`` is the class of every bank row (0 = untyped); ``cum`` the cumulative
class probabilities of the balanced draw, made once on the host by
:func:`class_weights` (so both devices compare the same float64 numbers).

Also here: the per-id class table of a typed tile with its checks
(:func:`fill_class_lut`), and the ignore-region helpers (:func:`mark_ignored`,
:func:`touches_ignore`).
"""

from __future__ import annotations

from collections import namedtuple

import numpy as np
from numba import prange

from .jit import njit

from .alloc import zeros
from .instances import max_label
from .rng import STREAM_CLASS, uniform01

__all__ = ["TEMPLATE_ANY", "TEMPLATE_SAME", "TEMPLATE_BALANCED", "TEMPLATE_MODES", "ClassTable", "class_table",
           "any_class_table", "class_weights", "draw_class", "class_segment", "template_at", "fill_class_lut",
           "class_luts", "mark_ignored", "touches_ignore", "TYPES_OK", "TYPES_ON_BACKGROUND", "TYPES_UNTYPED",
           "TYPES_OUTSIDE", "TYPES_MIXED"]

TEMPLATE_ANY, TEMPLATE_SAME, TEMPLATE_BALANCED = 0, 1, 2
#: ``InsMixConfig.template_class`` → the kernels' mode number.
TEMPLATE_MODES = {"any": TEMPLATE_ANY, "same": TEMPLATE_SAME, "balanced": TEMPLATE_BALANCED}

#: Verdicts of :func:`fill_class_lut` (0: the type map is valid).
TYPES_OK, TYPES_ON_BACKGROUND, TYPES_UNTYPED, TYPES_OUTSIDE, TYPES_MIXED = 0, 1, 2, 3, 4

ClassTable = namedtuple("ClassTable", ["classes", "order", "start", "area", "cum"])


def class_weights(counts: np.ndarray, balance_power: float) -> np.ndarray:
    """Cumulative class probabilities of the balanced draw: ``cum[c]`` (float64, length
    ``len(counts)``) for classes ``1..C``; class ``c`` is drawn when ``cum[c-1] ≤ u < cum[c]``.

    Each template of class ``c`` weighs ``n_c^(−β)``, so class ``c`` (present in the bank,
    ``n_c > 0``) is drawn with probability ∝ ``n_c^(1−β)``: ``β = 1`` uniform over the
    classes, ``β = 0`` the bank frequencies, ``β > 1`` favours rare classes further. The last
    present class ends at exactly 1.0 (``u < 1`` always finds a class).
    """
    counts = np.asarray(counts, np.float64)
    w = np.zeros(counts.shape[0], np.float64)
    present = np.flatnonzero(counts[1:] > 0) + 1
    if present.size == 0:
        return w
    w[present] = counts[present] ** (1.0 - float(balance_power))
    cum = np.cumsum(w) / w.sum()
    cum[0] = 0.0
    cum[present[-1]:] = 1.0
    return np.ascontiguousarray(cum)


def class_table(classes: np.ndarray, area: np.ndarray, n_classes: int, balance_power: float) -> ClassTable:
    """The :class:`ClassTable` of an area-sorted bank (``classes`` int32 per row, ``area`` int64)."""
    classes = np.ascontiguousarray(classes, np.int32)
    order = np.argsort(classes, kind="stable").astype(np.int64)
    counts = np.bincount(classes, minlength=n_classes + 1).astype(np.int64)
    start = np.zeros(n_classes + 2, np.int64)
    np.cumsum(counts, out=start[1:])
    return ClassTable(classes, order, start, np.ascontiguousarray(area[order], np.int64),
                      class_weights(counts, balance_power))


def any_class_table(classes: np.ndarray, area: np.ndarray) -> ClassTable:
    """The table ``template_class="any"`` passes: only ``classes`` is read (for the records);
    the bank's own areas stand in for ``order``/``area`` (no per-class copy is made)."""
    area = np.ascontiguousarray(area, np.int64)
    return ClassTable(np.ascontiguousarray(classes, np.int32), area, np.zeros(2, np.int64), area,
                      np.zeros(1, np.float64))


@njit(cache=True, nogil=True, inline="always")
def draw_class(cum, seed, sample, key):
    """The class of the balanced draw for original ``key`` of ``sample`` (-1 when the bank has no class)."""
    u = uniform01(seed, sample, STREAM_CLASS, key)
    for c in range(1, cum.shape[0]):
        if u < cum[c]:
            return c
    return -1


@njit(cache=True, nogil=True, inline="always")
def class_segment(mode, o_class, start, cum, seed, sample, key):
    """``(begin, end)``: the rows of the class-ordered bank the template of original ``key`` is
    chosen from — its own class ``o_class`` (``TEMPLATE_SAME``) or the drawn one
    (``TEMPLATE_BALANCED``); ``(0, 0)`` when that class has no template."""
    c = o_class
    if mode == TEMPLATE_BALANCED:
        c = draw_class(cum, seed, sample, key)
    if c < 1 or c + 1 >= start.shape[0]:
        return np.int64(0), np.int64(0)
    return start[c], start[c + 1]


@njit(cache=True, inline="always")
def template_at(order, j):
    """The bank row at position ``j`` of the searched array: ``order[j]`` in a class segment,
    ``j`` itself when ``order`` is None (the bank searched directly; Numba compiles that case
    without the lookup)."""
    if order is None:
        return np.int64(j)
    return np.int64(order[j])


@njit(cache=True, nogil=True)
def fill_class_lut(labels, types, n_classes, lut):
    """``lut[id] = class`` for every instance of a typed tile, checking the type map on the way.

    ``lut`` (≥ largest id + 1, int32) must be zeroed. Returns ``(verdict, row, col, id,
    class, other class)`` of the first problem in raster order (``TYPES_OK`` and zeros when
    none): a class on a background pixel, an instance pixel of class 0, a class outside
    ``1..n_classes``, an instance whose pixels carry two classes (``class`` and ``other``).
    """
    h, w = labels.shape
    for y in range(h):
        for x in range(w):
            v = labels[y, x]
            t = types[y, x]
            if v == 0:
                if t != 0:
                    return TYPES_ON_BACKGROUND, y, x, 0, np.int64(t), 0
                continue
            if t < 1:
                return TYPES_UNTYPED, y, x, np.int64(v), np.int64(t), 0
            if t > n_classes:
                return TYPES_OUTSIDE, y, x, np.int64(v), np.int64(t), 0
            prev = lut[v]
            if prev == 0:
                lut[v] = t
            elif prev != t:
                return TYPES_MIXED, y, x, np.int64(v), np.int64(t), np.int64(prev)
    return TYPES_OK, 0, 0, 0, np.int64(0), 0


@njit(cache=True, nogil=True, parallel=True)
def class_luts(labels, types, n_classes, width):
    """:func:`fill_class_lut` for every tile of a batch: ``(luts (B, width) int32, verdicts (B, 6) int64)``."""
    nb = labels.shape[0]
    luts = zeros((nb, width), np.int32)
    errs = zeros((nb, 6), np.int64)
    for b in prange(nb):
        r = fill_class_lut(labels[b], types[b], n_classes, luts[b])
        for j in range(6):
            errs[b, j] = r[j]
    return luts, errs


@njit(cache=True, nogil=True, inline="always")
def mark_ignored(occupied, ignore, patch):
    """Mark the ``patch``×``patch`` background-grid patches holding an ignore pixel as occupied
    (they never move)."""
    gh, gw = occupied.shape
    h, w = ignore.shape
    for y in range(min(h, gh * patch)):
        py = y // patch
        for x in range(min(w, gw * patch)):
            if ignore[y, x]:
                occupied[py, x // patch] = True


@njit(cache=True, nogil=True)
def touches_ignore(labels, ignore):
    """``hit[id]``: instance ``id`` has a pixel on, or 8-adjacent to, an ignore pixel."""
    h, w = labels.shape
    hit = zeros(max_label(labels) + 1, np.bool_)
    for y in range(h):
        for x in range(w):
            if ignore[y, x]:
                for yy in range(max(y - 1, 0), min(y + 2, h)):
                    for xx in range(max(x - 1, 0), min(x + 2, w)):
                        hit[labels[yy, xx]] = True
    hit[0] = False
    return hit
