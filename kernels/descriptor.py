"""The packed 32×32 shape descriptor and exact mask intersections.

Definition (SPEC §2 allows a fixed-size descriptor if it is documented and exact):

* The *anchor* of an instance is its centroid rounded half-up on each axis,
  computed in integers: ``anchor = (2·Σcoord + area) // (2·area)``.
* Two instances are *centroid-aligned* by putting their anchors on the same pixel.
* The descriptor is the instance's mask inside the 32×32 window whose rows are
  ``anchor_row − 16 … anchor_row + 15`` (same for columns), packed row-major as
  sixteen uint64 words: row ``r`` lives in word ``r // 2``, bits
  ``32·(r % 2) + col``.
* ``fits`` is true when the whole mask lies inside that window.

``|Mo ∧ Mt|`` after alignment is ``popcount(Do & Dt)`` whenever at least one of
the two masks fits its window (the intersection is inside both masks, so
inside that window). When neither fits, the intersection is counted directly
on the packed masks. Hence ``|Mo xor Mt| = |Mo| + |Mt| − 2·|Mo ∧ Mt|`` is
always exact, and equal to the plain pixel computation (tested).
"""

from __future__ import annotations

import numpy as np
from .jit import njit

DESC_SIZE = 32
DESC_HALF = 16
DESC_WORDS = 16

_K1 = np.uint64(0x5555555555555555)
_K2 = np.uint64(0x3333333333333333)
_K4 = np.uint64(0x0F0F0F0F0F0F0F0F)
_KF = np.uint64(0x0101010101010101)


@njit(cache=True, nogil=True, inline="always")
def popcount64(x):
    x = x - ((x >> np.uint64(1)) & _K1)
    x = (x & _K2) + ((x >> np.uint64(2)) & _K2)
    x = (x + (x >> np.uint64(4))) & _K4
    return np.int64((x * _KF) >> np.uint64(56))


@njit(cache=True, nogil=True, inline="always")
def desc_and_count(da, db):
    """popcount(da & db) over the 16 words of two descriptors."""
    s = 0
    for k in range(DESC_WORDS):
        s += popcount64(da[k] & db[k])
    return s


@njit(cache=True, nogil=True, inline="always")
def descriptor_from_mask(mask, ar, ac, out):
    """Fill ``out`` (16 uint64) from a 2-D 0/1 mask crop whose anchor is (ar, ac).

    Returns True when the whole mask lies inside the window.
    """
    h, w = mask.shape
    for k in range(DESC_WORDS):
        out[k] = np.uint64(0)
    fits = True
    for y in range(h):
        r = y - ar + DESC_HALF
        for x in range(w):
            if mask[y, x]:
                c = x - ac + DESC_HALF
                if 0 <= r < DESC_SIZE and 0 <= c < DESC_SIZE:
                    out[r >> 1] |= np.uint64(1) << np.uint64((r & 1) * 32 + c)
                else:
                    fits = False
    return fits


@njit(cache=True, nogil=True, inline="always")
def crop_intersection(mask_a, ar_a, ac_a, mask_b, ar_b, ac_b):
    """|A ∧ B| of two mask crops aligned on their anchors (direct count)."""
    ha, wa = mask_a.shape
    hb, wb = mask_b.shape
    dy = ar_a - ar_b
    dx = ac_a - ac_b
    y_lo = max(0, -dy)
    y_hi = min(hb, ha - dy)
    x_lo = max(0, -dx)
    x_hi = min(wb, wa - dx)
    s = 0
    for y in range(y_lo, y_hi):
        for x in range(x_lo, x_hi):
            if mask_b[y, x] and mask_a[y + dy, x + dx]:
                s += 1
    return s
