"""Struct-of-arrays containers passed to the Numba kernels, and the kernels' scalars.

``Table`` is the layout of the instance bank and of a tile's original instances:
``area`` (n,) int64, ``anchor`` (n, 2) int32 rounded centroid inside the crop,
``hw`` (n, 2) int32 crop size, ``offset`` (n+1,) int64 into ``masks`` (0/1 uint8,
row-major crops) — RGB pixels of crop ``i`` are ``pixels[3·offset[i] : 3·offset[i+1]]``
— ``desc`` (n, 16) uint64 packed 32×32 descriptors, ``fits`` (n,) bool.

``Params`` holds the scalars of one InsMix configuration as the kernels read them
(:func:`make_params` builds it from an ``InsMixConfig``).
"""

from __future__ import annotations

from collections import namedtuple

import numpy as np

from .classes import TEMPLATE_MODES
from .descriptor import DESC_WORDS

Table = namedtuple("Table", ["area", "anchor", "hw", "offset", "masks", "pixels", "desc", "fits"])

Params = namedtuple(
    "Params",
    [
        "eps", "rho", "delta", "gamma", "p_paste", "max_occlusion", "alpha",  # float64
        "n_tries", "patch", "max_draws", "max_crop",  # int64 (max_crop: largest template crop, h·w)
        "template_class",  # int64: kernels.classes.TEMPLATE_ANY / _SAME / _BALANCED
        "foreground", "background", "ssd", "diagonal",  # bool
    ],
)

_EMPTY: list[Table] = []


def make_params(config, max_crop: int) -> Params:
    """The kernel scalars of ``config`` (an ``InsMixConfig``); ``max_crop`` is the largest
    template crop (h·w) of the table the templates come from (:func:`largest_crop`)."""
    return Params(
        float(config.eps), float(config.rho), float(config.delta), float(config.gamma), float(config.p_paste),
        float(config.max_occlusion), float(config.alpha),
        int(config.n_tries), int(config.patch), int(config.max_draws), int(max_crop),
        TEMPLATE_MODES[config.template_class],
        bool(config.foreground), bool(config.background), bool(config.ssd), config.offset_mode == "diagonal",
    )


def largest_crop(table: Table) -> int:
    """Largest crop (h·w) of a table; 1 for an empty one (sizes the kernels' scratch buffers)."""
    if not len(table.area):
        return 1
    return int((table.hw[:, 0].astype(np.int64) * table.hw[:, 1]).max())


def empty_table() -> Table:
    """A table without rows (a bank-less call); one shared instance (nothing writes to it)."""
    if not _EMPTY:
        _EMPTY.append(Table(np.zeros(0, np.int64), np.zeros((0, 2), np.int32), np.zeros((0, 2), np.int32),
                            np.zeros(1, np.int64), np.zeros(0, np.uint8), np.zeros(0, np.uint8),
                            np.zeros((0, DESC_WORDS), np.uint64), np.zeros(0, np.bool_)))
    return _EMPTY[0]


__all__ = ["Table", "Params", "make_params", "largest_crop", "empty_table"]
