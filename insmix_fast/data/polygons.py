"""Polygon rules shared by every annotation reader (MoNuSeg XML, GeoJSON, HoVer-Net JSON).

One rule decides which outlines are **degenerate** — readers raise a
:class:`~insmix_fast.errors.ReaderError` naming the region / feature for them, or skip
and count them when asked — whatever the file format:

* fewer than 3 vertices (a closing vertex equal to the first is not counted);
* a non-finite coordinate (NaN, ±inf);
* an **absurd** coordinate: ``|x|`` or ``|y|`` above :data:`MAX_COORD` = 2³¹ px (no image
  format indexes pixels that far; such values are corrupt exports and would lose all
  precision in the intersection arithmetic of a clip or a scanline);
* **zero area**: every vertex on one straight line (within 10⁻⁹ of the outline's extent).

A self-intersecting outline (a bow-tie, a star) is *not* degenerate: it encloses area,
and each reader fills it by its documented rule. (The WSI readers once rejected a
bow-tie because its signed area is zero, while the XML reader kept it; this module is
the one rule both use now.)

:func:`clip_polygon` clips in floating point, computing every intersection from the
vertex inside the box, so a vertex millions of pixels away does not shift the clipped
edge; integer conversion happens only after clipping.
"""

from __future__ import annotations

import math

import numba
import numpy as np

__all__ = ["MAX_COORD", "OK", "TOO_FEW", "NON_FINITE", "ABSURD", "ZERO_AREA", "ring_problem", "describe_problem",
           "clip_polygon"]

#: Largest accepted ``|coordinate|`` in pixels (2³¹: the int32 pixel range).
MAX_COORD = float(2**31)

OK, TOO_FEW, NON_FINITE, ABSURD, ZERO_AREA = 0, 1, 2, 3, 4
_REL_TOL = 1e-9  # collinearity tolerance relative to the outline's extent (≥ 1 px)


@numba.njit(cache=True, nogil=True)
def ring_problem(pts) -> int:
    """Problem code of one outline (``N×2`` x/y, any float dtype): :data:`OK` (0) or one of
    :data:`TOO_FEW`, :data:`NON_FINITE`, :data:`ABSURD`, :data:`ZERO_AREA` (first that applies).

    A last vertex equal to the first (a closed ring) is not counted as a vertex."""
    n = pts.shape[0]
    if n > 1 and pts[n - 1, 0] == pts[0, 0] and pts[n - 1, 1] == pts[0, 1]:
        n -= 1
    for i in range(n):
        x, y = float(pts[i, 0]), float(pts[i, 1])
        if not (math.isfinite(x) and math.isfinite(y)):
            return NON_FINITE
    for i in range(n):
        if abs(float(pts[i, 0])) > MAX_COORD or abs(float(pts[i, 1])) > MAX_COORD:
            return ABSURD
    if n < 3:
        return TOO_FEW
    # zero area: all vertices within tol of the line through vertex 0 and the vertex farthest from it
    x0, y0 = float(pts[0, 0]), float(pts[0, 1])
    far, d2 = 0, 0.0
    for i in range(1, n):
        dx, dy = float(pts[i, 0]) - x0, float(pts[i, 1]) - y0
        q = dx * dx + dy * dy
        if q > d2:
            far, d2 = i, q
    if d2 == 0.0:
        return ZERO_AREA
    ux, uy = float(pts[far, 0]) - x0, float(pts[far, 1]) - y0
    length = math.sqrt(d2)
    tol = _REL_TOL * max(1.0, length)
    for i in range(1, n):
        dist = abs((float(pts[i, 0]) - x0) * uy - (float(pts[i, 1]) - y0) * ux) / length
        if dist > tol:
            return OK
    return ZERO_AREA


def describe_problem(code: int, pts=None) -> str:
    """A short human description of a :func:`ring_problem` code (with the offending value)."""
    pts = None if pts is None else np.asarray(pts, np.float64).reshape(-1, 2)
    if code == TOO_FEW:
        n = 0 if pts is None else len(pts) - (len(pts) > 1 and bool(np.array_equal(pts[0], pts[-1])))
        return f"only {n} vertices (a polygon needs ≥ 3)"
    if code == NON_FINITE:
        bad = "" if pts is None else f" {tuple(pts[~np.isfinite(pts).all(1)][0].tolist())}"
        return f"vertex with NaN/infinite coordinates{bad}"
    if code == ABSURD:
        bad = ""
        if pts is not None:
            v = pts[(np.abs(pts) > MAX_COORD).any(1)][0]
            bad = f" ({v[0]:.6g}, {v[1]:.6g})"
        return f"absurd coordinate{bad}: |x|, |y| must be ≤ 2^31 px"
    if code == ZERO_AREA:
        return "zero polygon area (all vertices on one line)"
    return "ok" if code == OK else f"problem code {code}"


def clip_polygon(pts: np.ndarray, x0: float, y0: float, x1: float, y1: float) -> np.ndarray:
    """Sutherland–Hodgman clip of a polygon (``N×2`` x/y) to the box ``[x0, x1] × [y0, y1]``.

    Each intersection is computed from the edge's endpoint inside the half-plane and set
    exactly on the bound, so far-away vertices (up to :data:`MAX_COORD`) clip exactly.
    Returns the clipped vertices (float64, possibly fewer than 3 when nothing is left)."""
    poly = [(float(p[0]), float(p[1])) for p in np.asarray(pts, np.float64).reshape(-1, 2)]
    for axis, bound, keep_greater in ((0, x0, True), (0, x1, False), (1, y0, True), (1, y1, False)):
        if not poly:
            break
        out = []
        for k in range(len(poly)):
            cur, prev = poly[k], poly[k - 1]
            cin = cur[axis] >= bound if keep_greater else cur[axis] <= bound
            pin = prev[axis] >= bound if keep_greater else prev[axis] <= bound
            if cin != pin:
                a, b = (cur, prev) if cin else (prev, cur)  # a inside, b outside
                t = (bound - a[axis]) / (b[axis] - a[axis])
                o = 1 - axis
                other = a[o] + t * (b[o] - a[o])
                out.append((bound, other) if axis == 0 else (other, bound))
            if cin:
                out.append(cur)
        poly = out
    return np.asarray(poly, dtype=np.float64).reshape(-1, 2)
