"""Struct-of-arrays containers passed to the Numba kernels.

``Table`` is the layout of the instance bank and of a tile's original instances:
``area`` (n,) int64, ``anchor`` (n, 2) int32 rounded centroid inside the crop,
``hw`` (n, 2) int32 crop size, ``offset`` (n+1,) int64 into ``masks`` (0/1 uint8,
row-major crops) — RGB pixels of crop ``i`` are ``pixels[3·offset[i] : 3·offset[i+1]]``
— ``desc`` (n, 16) uint64 packed 32×32 descriptors, ``fits`` (n,) bool.
"""

from __future__ import annotations

from collections import namedtuple

Table = namedtuple("Table", ["area", "anchor", "hw", "offset", "masks", "pixels", "desc", "fits"])

Params = namedtuple(
    "Params",
    [
        "eps", "rho", "delta", "gamma", "p_paste", "max_occlusion", "alpha",  # float64
        "n_tries", "tile", "max_draws", "max_crop",  # int64 (max_crop: largest template crop, h·w)
        "foreground", "background", "ssd", "diagonal",  # bool
    ],
)
