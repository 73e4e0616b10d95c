"""The paste record: its layout and the one routine that writes it (CPU and GPU).

A paste is two rows, one in an int64 table ``rec_i`` and one in a float64 table
``rec_f``, with the columns below. ``insmix_fast.results.PASTE_DTYPE`` is the
same record as a numpy structured dtype (``paste_records`` converts).
"""

from __future__ import annotations

import numpy as np
from .jit import njit

#: Columns of ``rec_i`` (int64): bank template, original id, new id, bbox top-left (y, x), offset (dy, dx),
#: and the template's class (0 = untyped bank).
R_TEMPLATE, R_ORIGINAL, R_LABEL, R_Y, R_X, R_DY, R_DX, R_CLASS = 0, 1, 2, 3, 4, 5, 6, 7
N_REC_I = 8
#: Columns of ``rec_f`` (float64): the scale, shape and distance gaps of the paste.
F_SCALE, F_SHAPE, F_DIS = 0, 1, 2
N_REC_F = 3


@njit(cache=True, nogil=True, inline="always")
def write_record(rec_i, rec_f, t, original, label, y0, x0, dy, dx, a_o, a_t, cls):
    """Fill one record (``rec_i``/``rec_f`` are its two rows); ``F_SHAPE`` is left to
    :func:`shape_gap`, which the caller computes with the shape test of its device."""
    rec_i[R_TEMPLATE] = t
    rec_i[R_ORIGINAL] = original
    rec_i[R_LABEL] = label
    rec_i[R_Y] = y0
    rec_i[R_X] = x0
    rec_i[R_DY] = dy
    rec_i[R_DX] = dx
    rec_i[R_CLASS] = cls
    rec_f[F_SCALE] = np.float64(max(a_o, a_t) - min(a_o, a_t)) / np.float64(min(a_o, a_t))
    rec_f[F_DIS] = np.sqrt(np.float64(dy * dy + dx * dx))


@njit(cache=True, nogil=True, inline="always")
def shape_gap(xor, a_o, a_t):
    """``f_shape = |Mo xor Mt| / max(|Mo|, |Mt|)``."""
    return np.float64(xor) / np.float64(max(a_o, a_t))


__all__ = ["R_TEMPLATE", "R_ORIGINAL", "R_LABEL", "R_Y", "R_X", "R_DY", "R_DX", "R_CLASS", "N_REC_I", "F_SCALE", "F_SHAPE",
           "F_DIS", "N_REC_F", "write_record", "shape_gap"]
