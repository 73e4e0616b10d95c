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

from .errors import InputError
from .kernels.fingerprint import hash_words
from .kernels.records import (F_DIS, F_SCALE, F_SHAPE, N_REC_F, N_REC_I, R_CLASS, R_DX, R_DY, R_LABEL,
                              R_ORIGINAL, R_TEMPLATE, R_X, R_Y)

__all__ = ["PASTE_DTYPE", "InsMixPlan", "InsMixResult", "InsMixBatchResult", "PlanFingerprint", "labels_fingerprint",
           "paste_records", "record_rows", "record_tables"]

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


# Odd random multipliers of the label-map hash (fixed: fingerprints are stable across runs).
_LABEL_MULT = (np.random.default_rng(0x1A5E_F1A6).integers(0, 2**63, 4096, dtype=np.uint64) << np.uint64(1)) | np.uint64(1)
_MASK64 = (1 << 64) - 1


def _shape_key(rows: int, cols: int) -> int:
    return (rows * 0x100000001B3) ^ (cols << 40)


def labels_fingerprint(labels: np.ndarray) -> int:
    """64-bit fingerprint of a 2-D int32 label map (its shape and every id; ~8 µs for 256×256).

    Equal maps give equal fingerprints; maps that differ anywhere collide only with negligible
    probability (a random linear hash, :mod:`insmix_fast.kernels.fingerprint`: it detects
    mix-ups, it is not cryptographic)."""
    flat = np.ascontiguousarray(labels, dtype=np.int32).reshape(-1)
    if flat.size % 2:
        flat = np.concatenate([flat, np.zeros(1, np.int32)])
    rows, cols = labels.shape
    return (int(hash_words(flat.view(np.uint64), _LABEL_MULT)) ^ _shape_key(rows, cols)) & _MASK64


@dataclass(frozen=True)
class PlanFingerprint:
    """What a plan was made for, so that :func:`~insmix_fast.core.apply_plan` can refuse
    other inputs: ``labels`` is :func:`labels_fingerprint` of the label map (recorded by
    :func:`~insmix_fast.core.plan_insmix`; ``None`` in plans of ``insmix`` / ``insmix_batch``,
    where hashing every map would cost 4–10 % of a call), ``bank_size`` / ``bank_hash`` the
    bank's length and :attr:`~insmix_fast.bank.InstanceBank.content_hash` (every plan that
    pastes from a bank). A ``None`` part is not checked."""

    labels: int | None
    bank_size: int | None = None
    bank_hash: int | None = None

    def describe_bank(self) -> str:
        return f"{self.bank_size} instances, content hash {self.bank_hash:#018x}"


@dataclass(frozen=True, eq=False)
class InsMixPlan:
    """What InsMix will do to one tile: pastes (``PASTE_DTYPE``) and background moves.

    ``moves[k] = (src, dst)`` are row-major indices of the ``patch``×``patch``
    background patches; ``shape`` is the tile's H×W; ``seed`` and ``index`` the
    draw that made the plan; ``fingerprint`` (:class:`PlanFingerprint`) the label map
    and bank it was made for (``None``: not recorded, nothing is checked). Plans
    compare equal when they do the same thing (patch side, shape, pastes and moves),
    whatever seed produced them and whatever their fingerprint.
    """

    pastes: np.ndarray
    moves: np.ndarray
    patch: int
    shape: tuple[int, int]
    seed: int
    index: int
    fingerprint: PlanFingerprint | None = None

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
    maps of a typed call, else ``None``. ``paste_masks`` / ``shuffled_masks`` are ``None``
    when the call was asked not to make them (``insmix_batch_into(..., masks=False)``).
    """

    images: np.ndarray
    labels: np.ndarray
    paste_masks: np.ndarray | None
    shuffled_masks: np.ndarray | None
    pastes: list[np.ndarray]
    moves: list[np.ndarray]
    indices: np.ndarray
    seed: int
    patch: int
    types: np.ndarray | None = None
    #: per sample, the :class:`PlanFingerprint` its plan carries (``None``: not recorded)
    fingerprints: list[PlanFingerprint] | None = field(default=None, repr=False)

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def plan(self, b: int) -> InsMixPlan:
        """The plan of sample ``b``."""
        fp = None if self.fingerprints is None else self.fingerprints[b]
        return InsMixPlan(self.pastes[b], self.moves[b], int(self.patch), tuple(self.labels.shape[1:3]),
                          int(self.seed), int(self.indices[b]), fp)

    def __getitem__(self, b: int) -> InsMixResult:
        return InsMixResult(self.images[b], self.labels[b], None if self.paste_masks is None else self.paste_masks[b],
                            None if self.shuffled_masks is None else self.shuffled_masks[b],
                            self.pastes[b], self.plan(b), types=None if self.types is None else self.types[b])

    @property
    def original_masks(self) -> np.ndarray:
        if self.paste_masks is None:
            raise InputError("this result has no paste masks (made with masks=False), so no original masks either")
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
