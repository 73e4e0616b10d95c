"""What InsMix returns: the paste record (``PASTE_DTYPE``), plans and results.

A plan is two small arrays you can print and compare across devices: ``pastes``
(one ``PASTE_DTYPE`` record per accepted paste) and ``moves`` (background patch
moves), plus what is needed to replay it (patch side, tile shape, seed, index).
The kernels write records as two numeric tables (layout in
:mod:`insmix_fast.kernels.records`); :func:`paste_records` and :func:`record_rows`
convert between the two forms.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field

import numpy as np

from .kernels.records import (F_DIS, F_SCALE, F_SHAPE, N_REC_F, N_REC_I, R_CLASS, R_DX, R_DY, R_LABEL,
                              R_ORIGINAL, R_TEMPLATE, R_X, R_Y)

__all__ = ["PASTE_DTYPE", "InsMixPlan", "InsMixResult", "InsMixBatchResult", "paste_records", "record_rows",
           "record_tables"]

#: One record per paste: bank index, id of the original it was matched to, its id in
#: the new map, bbox top-left (y, x) in the tile, anchor offset (dy, dx), the gaps, and
#: the template's class (``bank.classes[template]``; 0 for an untyped bank).
PASTE_DTYPE = np.dtype([
    ("template", np.int64), ("original", np.int32), ("label", np.int32), ("y", np.int32), ("x", np.int32),
    ("dy", np.int32), ("dx", np.int32), ("f_scale", np.float64), ("f_shape", np.float64), ("f_dis", np.float64),
    ("class", np.int32),
])

_INT_FIELDS = (("template", R_TEMPLATE), ("original", R_ORIGINAL), ("label", R_LABEL), ("y", R_Y), ("x", R_X),
               ("dy", R_DY), ("dx", R_DX), ("class", R_CLASS))
_FLOAT_FIELDS = (("f_scale", F_SCALE), ("f_shape", F_SHAPE), ("f_dis", F_DIS))


def _tile_deprecated(owner: str) -> None:
    warnings.warn(f"{owner}.tile is deprecated: it is the background patch side, use {owner}.patch",
                  DeprecationWarning, stacklevel=3)


@dataclass(frozen=True, eq=False)
class InsMixPlan:
    """What InsMix will do to one tile: pastes (``PASTE_DTYPE``) and background moves.

    ``moves[k] = (src, dst)`` are row-major indices of the ``patch``×``patch``
    background patches; ``shape`` is the tile's H×W; ``seed`` and ``index`` the
    draw that made the plan. Plans compare equal when they do the same thing
    (patch side, shape, pastes and moves), whatever seed produced them.
    """

    pastes: np.ndarray
    moves: np.ndarray
    patch: int
    shape: tuple[int, int]
    seed: int
    index: int

    @property
    def tile(self) -> int:
        """Deprecated alias of :attr:`patch` (the background patch side)."""
        _tile_deprecated("InsMixPlan")
        return self.patch

    def __eq__(self, other) -> bool:
        if not isinstance(other, InsMixPlan):
            return NotImplemented
        return (self.patch == other.patch and tuple(self.shape) == tuple(other.shape)
                and np.array_equal(self.pastes, other.pastes) and np.array_equal(self.moves, other.moves))

    def __repr__(self) -> str:
        return (f"InsMixPlan({len(self.pastes)} pastes, {len(self.moves)} background moves of {self.patch}×"
                f"{self.patch} patches, tile {self.shape[0]}×{self.shape[1]}, seed={self.seed}, index={self.index})")


@dataclass(eq=False)
class InsMixResult:
    """Output of :func:`~insmix_fast.core.insmix` for one tile.

    ``image`` H×W×3 uint8, ``labels`` H×W int32 (input ids kept, pasted instances get
    new ids above the input's maximum), ``paste_mask`` H×W bool (pixels of pasted
    templates: the smooth-GAN's M), ``shuffled_mask`` H×W bool (patches whose
    content moved), ``pastes`` (``PASTE_DTYPE`` records), ``plan``, and ``types``
    (H×W int32: the input's classes, each pasted instance with its template's class;
    ``None`` for an untyped call).
    """

    image: np.ndarray
    labels: np.ndarray
    paste_mask: np.ndarray
    shuffled_mask: np.ndarray
    pastes: np.ndarray
    plan: InsMixPlan = field(repr=False)
    types: np.ndarray | None = field(default=None, repr=False)

    @property
    def original_mask(self) -> np.ndarray:
        """Pixels of the tile's own (not pasted) nuclei after the paste."""
        return (self.labels > 0) & ~self.paste_mask


@dataclass(eq=False)
class InsMixBatchResult:
    """Output of :func:`~insmix_fast.core.insmix_batch`: stacked arrays plus per-sample records.

    ``result[b]`` is sample ``b`` as an :class:`InsMixResult` whose plan equals the one
    ``insmix(..., seed=seed, index=indices[b])`` makes (``seed`` and ``patch`` are kept
    for that), so ``apply_plan`` replays it exactly. ``types``: N×H×W int32 output class
    maps of a typed call, else ``None``.
    """

    images: np.ndarray
    labels: np.ndarray
    paste_masks: np.ndarray
    shuffled_masks: np.ndarray
    pastes: list[np.ndarray]
    moves: list[np.ndarray]
    indices: np.ndarray
    seed: int
    patch: int
    types: np.ndarray | None = None

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def plan(self, b: int) -> InsMixPlan:
        """The plan of sample ``b``."""
        return InsMixPlan(self.pastes[b], self.moves[b], int(self.patch), tuple(self.labels.shape[1:3]),
                          int(self.seed), int(self.indices[b]))

    def __getitem__(self, b: int) -> InsMixResult:
        return InsMixResult(self.images[b], self.labels[b], self.paste_masks[b], self.shuffled_masks[b],
                            self.pastes[b], self.plan(b), types=None if self.types is None else self.types[b])

    @property
    def original_masks(self) -> np.ndarray:
        return (self.labels > 0) & ~self.paste_masks


def record_tables(cap: int, batch: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Zeroed ``(rec_i, rec_f)`` tables with room for ``cap`` pastes (per tile of a ``batch``)."""
    lead = (cap,) if batch is None else (batch, cap)
    return np.zeros((*lead, N_REC_I), np.int64), np.zeros((*lead, N_REC_F), np.float64)


def paste_records(rec_i: np.ndarray, rec_f: np.ndarray, n: int) -> np.ndarray:
    """The first ``n`` rows of the kernels' record tables as ``PASTE_DTYPE`` records."""
    out = np.empty(n, PASTE_DTYPE)
    for name, col in _INT_FIELDS:
        out[name] = rec_i[:n, col]
    for name, col in _FLOAT_FIELDS:
        out[name] = rec_f[:n, col]
    return out


def record_rows(pastes: np.ndarray) -> np.ndarray:
    """``PASTE_DTYPE`` records back to the kernels' int64 table (what the apply step reads)."""
    rec = np.zeros((len(pastes), N_REC_I), np.int64)
    names = pastes.dtype.names or ()
    for name, col in _INT_FIELDS:
        if name in names:  # records made before the class field have class 0
            rec[:, col] = pastes[name]
    return rec
