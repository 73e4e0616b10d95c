"""InsMix on CPU: ``plan`` (pure function of labels, bank, config and seed) and
``apply`` (paste + background shuffle), fused in :func:`insmix` / :func:`insmix_batch`.

A plan is two small arrays you can print and compare across devices:
``pastes`` (one record per accepted paste) and ``moves`` (background patch moves).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .bank import InstanceBank
from .config import InsMixConfig
from .errors import BankError, ConfigError, InputError, InputTypeError
from .kernels import paste as _rec
from .kernels.instances import DENSE_ID_LIMIT, build_table, tile_stats
from .kernels.pipeline import apply_tile, insmix_batch_kernel, insmix_tile, plan_tile
from .kernels.ssd import admissible_list
from .kernels.tables import Params, Table
from .validation import check_batch, check_labels, check_sample, check_seed

__all__ = [
    "PASTE_DTYPE",
    "InsMixPlan",
    "InsMixResult",
    "InsMixBatchResult",
    "plan_insmix",
    "apply_plan",
    "insmix",
    "insmix_batch",
    "admissible_templates",
]

#: One record per paste: bank index, id of the original it was matched to, its id in
#: the new map, bbox top-left (y, x) in the tile, anchor offset (dy, dx), and the gaps.
PASTE_DTYPE = np.dtype([
    ("template", np.int64), ("original", np.int32), ("label", np.int32), ("y", np.int32), ("x", np.int32),
    ("dy", np.int32), ("dx", np.int32), ("f_scale", np.float64), ("f_shape", np.float64), ("f_dis", np.float64),
])

_INITIAL_RECORDS = 256
_MAX_SAMPLE = 2**32 - 1
_EMPTY_TABLE = None


@dataclass(frozen=True, eq=False)
class InsMixPlan:
    """What InsMix will do to one tile: pastes (``PASTE_DTYPE``) and background moves.

    ``moves[k] = (src, dst)`` are row-major indices of ``tile``×``tile`` patches.
    """

    pastes: np.ndarray
    moves: np.ndarray
    tile: int
    shape: tuple[int, int]
    seed: int
    index: int

    def __eq__(self, other) -> bool:
        if not isinstance(other, InsMixPlan):
            return NotImplemented
        return (self.tile == other.tile and self.shape == other.shape
                and np.array_equal(self.pastes, other.pastes) and np.array_equal(self.moves, other.moves))

    def __repr__(self) -> str:
        return (f"InsMixPlan({len(self.pastes)} pastes, {len(self.moves)} background moves, "
                f"tile {self.shape[0]}×{self.shape[1]}, seed={self.seed}, index={self.index})")


@dataclass(eq=False)
class InsMixResult:
    """Output of :func:`insmix` for one tile.

    ``image`` H×W×3 uint8, ``labels`` H×W int32 (input ids kept, pasted instances get
    new ids above the input's maximum), ``paste_mask`` H×W bool (pixels of pasted
    templates: the smooth-GAN's M), ``shuffled_mask`` H×W bool (patches whose
    content moved), ``pastes`` (``PASTE_DTYPE`` records), ``plan``.
    """

    image: np.ndarray
    labels: np.ndarray
    paste_mask: np.ndarray
    shuffled_mask: np.ndarray
    pastes: np.ndarray
    plan: InsMixPlan = field(repr=False)

    @property
    def original_mask(self) -> np.ndarray:
        """Pixels of the tile's own (not pasted) nuclei after the paste."""
        return (self.labels > 0) & ~self.paste_mask


@dataclass(eq=False)
class InsMixBatchResult:
    """Output of :func:`insmix_batch`: stacked arrays plus per-sample paste records."""

    images: np.ndarray
    labels: np.ndarray
    paste_masks: np.ndarray
    shuffled_masks: np.ndarray
    pastes: list[np.ndarray]
    moves: list[np.ndarray]
    indices: np.ndarray

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def __getitem__(self, b: int) -> InsMixResult:
        plan = InsMixPlan(self.pastes[b], self.moves[b], -1, self.labels.shape[1:3], -1, int(self.indices[b]))
        return InsMixResult(self.images[b], self.labels[b], self.paste_masks[b], self.shuffled_masks[b],
                            self.pastes[b], plan)

    @property
    def original_masks(self) -> np.ndarray:
        return (self.labels > 0) & ~self.paste_masks


# ---------------------------------------------------------------------- helpers
def _params(config: InsMixConfig, bank) -> Params:
    """Kernel scalars; ``bank`` is the InstanceBank (or Table) the templates come from."""
    if isinstance(bank, InstanceBank):
        max_crop = bank.max_crop
    else:
        max_crop = int((bank.hw[:, 0].astype(np.int64) * bank.hw[:, 1]).max()) if len(bank.area) else 1
    return Params(
        float(config.eps), float(config.rho), float(config.delta), float(config.gamma), float(config.p_paste),
        float(config.max_occlusion), float(config.alpha),
        int(config.n_tries), int(config.tile), int(config.max_draws), max_crop,
        bool(config.foreground), bool(config.background), bool(config.ssd), config.offset_mode == "diagonal",
    )


def _config(config) -> InsMixConfig:
    if config is None:
        return InsMixConfig()
    if not isinstance(config, InsMixConfig):
        raise InputTypeError(f"config must be an InsMixConfig, got {type(config).__name__}")
    return config


def _index(index) -> int:
    if isinstance(index, bool) or not isinstance(index, (int, np.integer)) or not 0 <= int(index) <= _MAX_SAMPLE:
        raise InputError(f"sample index must be an integer in [0, 2**32), got {index!r}")
    return int(index)


def _empty_table() -> Table:
    global _EMPTY_TABLE
    if _EMPTY_TABLE is None:
        from .kernels.descriptor import DESC_WORDS
        _EMPTY_TABLE = Table(np.zeros(0, np.int64), np.zeros((0, 2), np.int32), np.zeros((0, 2), np.int32),
                             np.zeros(1, np.int64), np.zeros(0, np.uint8), np.zeros(0, np.uint8),
                             np.zeros((0, DESC_WORDS), np.uint64), np.zeros(0, np.bool_))
    return _EMPTY_TABLE


def _bank_table(bank, config: InsMixConfig, image, labels) -> Table:
    """The template table for one tile (``template_source='self'`` builds it from the tile)."""
    if not config.foreground:
        return bank.table if isinstance(bank, InstanceBank) else _empty_table()
    if config.template_source == "self":
        if image is None:
            raise ConfigError("template_source='self' needs the image (use insmix, not plan_insmix without image)")
        try:
            return InstanceBank.from_samples([(image, labels)], min_area=1, on_invalid="skip", progress=False).table
        except BankError:
            return _empty_table()
    if not isinstance(bank, InstanceBank):
        raise InputTypeError(f"bank must be an InstanceBank, got {type(bank).__name__}")
    if len(bank) == 0:
        raise BankError("the instance bank is empty: build it from samples that contain whole nuclei")
    return bank.table


def _max_id(labels: np.ndarray) -> int:
    mx = int(labels.max()) if labels.size else 0
    if mx + labels.size >= np.iinfo(np.int32).max:
        raise InputError("labels ids are too close to the int32 limit to add pasted instances; relabel first")
    return mx


class _Dense:
    """Kernels index per-id tables by raw id, so ids above ``DENSE_ID_LIMIT`` are
    relabelled to 1..K first and mapped back afterwards (pasted ids stay max + 1 + j)."""

    def __init__(self, labels: np.ndarray, max_id: int):
        self.max_id = max_id
        self.ids = None
        self.labels = labels
        self.kernel_max = max_id
        if max_id > DENSE_ID_LIMIT:
            ids, inv = np.unique(labels, return_inverse=True)
            dense = inv.reshape(labels.shape).astype(np.int32)
            if ids[0] != 0:
                dense += 1
                ids = np.concatenate([[0], ids])
            self.ids = ids.astype(np.int64)
            self.labels = dense
            self.kernel_max = len(ids) - 1

    def restore(self, out_labels: np.ndarray, pastes: np.ndarray) -> None:
        if self.ids is None:
            return
        n = len(pastes)
        lut = np.concatenate([self.ids, self.max_id + 1 + np.arange(n, dtype=np.int64)])
        out_labels[...] = lut[out_labels]
        pastes["original"] = self.ids[pastes["original"]]
        pastes["label"] = self.max_id + 1 + np.arange(n)


def _n_instances(labels: np.ndarray) -> int:
    return int(np.unique(labels).size)


def _records(shape: tuple[int, int], tile: int, cap: int):
    g = max(shape[0] // tile, 0) * max(shape[1] // tile, 0)
    return (np.zeros((cap, _rec.N_REC_I), np.int64), np.zeros((cap, _rec.N_REC_F), np.float64),
            np.zeros((max(g, 1), 2), np.int64))


def _to_struct(rec_i: np.ndarray, rec_f: np.ndarray, n: int) -> np.ndarray:
    out = np.empty(n, PASTE_DTYPE)
    out["template"] = rec_i[:n, _rec.R_TEMPLATE]
    out["original"] = rec_i[:n, _rec.R_ORIGINAL]
    out["label"] = rec_i[:n, _rec.R_LABEL]
    out["y"] = rec_i[:n, _rec.R_Y]
    out["x"] = rec_i[:n, _rec.R_X]
    out["dy"] = rec_i[:n, _rec.R_DY]
    out["dx"] = rec_i[:n, _rec.R_DX]
    out["f_scale"] = rec_f[:n, _rec.F_SCALE]
    out["f_shape"] = rec_f[:n, _rec.F_SHAPE]
    out["f_dis"] = rec_f[:n, _rec.F_DIS]
    return out


def _from_struct(pastes: np.ndarray) -> np.ndarray:
    rec = np.zeros((len(pastes), _rec.N_REC_I), np.int64)
    for col, name in ((_rec.R_TEMPLATE, "template"), (_rec.R_ORIGINAL, "original"), (_rec.R_LABEL, "label"),
                      (_rec.R_Y, "y"), (_rec.R_X, "x"), (_rec.R_DY, "dy"), (_rec.R_DX, "dx")):
        rec[:, col] = pastes[name]
    return rec


# ---------------------------------------------------------------------- public API
def plan_insmix(labels, bank: InstanceBank | None, config: InsMixConfig | None = None, *, seed: int = 0,
                index: int = 0, image=None) -> InsMixPlan:
    """Decide which templates go where and which background patches move — no pixels are touched.

    A pure function of ``(labels, bank, config, seed, index)``; ``index`` is the
    sample's global index, so the plan does not depend on batching.
    """
    config = _config(config)
    seed = check_seed(seed)
    index = _index(index)
    labels = check_labels(labels)
    if image is not None:
        image, labels = check_sample(image, labels)
    dense = _Dense(labels, _max_id(labels))
    bt = _bank_table(bank, config, image, labels)
    P = _params(config, bank if isinstance(bank, InstanceBank) and bt is bank.table_cached else bt)
    cap = _INITIAL_RECORDS
    while True:
        rec_i, rec_f, moves = _records(labels.shape, config.tile, cap)
        work = dense.labels.copy()
        n, k = plan_tile(work, bt, P, np.uint64(seed), np.int64(index), rec_i, rec_f, moves, dense.kernel_max)
        if n >= 0:
            break
        cap = _n_instances(labels) + 1
    pastes = _to_struct(rec_i, rec_f, n)
    dense.restore(work, pastes)
    return InsMixPlan(pastes, moves[:k].copy(), config.tile, labels.shape, seed, index)


def apply_plan(image, labels, plan: InsMixPlan, bank: InstanceBank | None) -> InsMixResult:
    """Execute a plan: paste its templates, then move its background patches."""
    image, labels = check_sample(image, labels)
    if not isinstance(plan, InsMixPlan):
        raise InputTypeError(f"plan must be an InsMixPlan, got {type(plan).__name__}")
    if tuple(plan.shape) != labels.shape:
        raise InputError(f"plan was made for a {plan.shape} tile, labels are {labels.shape}")
    if len(plan.pastes):
        if not isinstance(bank, InstanceBank):
            raise InputTypeError("apply_plan needs the InstanceBank the plan was made with")
        if int(plan.pastes["template"].max()) >= len(bank):
            raise BankError("the plan refers to templates beyond this bank: use the bank it was planned with")
        bt = bank.table
    else:
        bt = _empty_table()
    out_image = np.empty_like(image)
    out_labels = np.empty_like(labels)
    paste_mask = np.empty(labels.shape, np.bool_)
    shuffled = np.empty(labels.shape, np.bool_)
    moves = np.ascontiguousarray(plan.moves, dtype=np.int64).reshape(-1, 2)
    apply_tile(image, labels, bt, plan.tile, _from_struct(plan.pastes), len(plan.pastes), moves, len(moves),
               out_image, out_labels, paste_mask, shuffled)
    return InsMixResult(out_image, out_labels, paste_mask, shuffled, plan.pastes, plan)


def insmix(image, labels, bank: InstanceBank | None, config: InsMixConfig | None = None, *, seed: int = 0,
           index: int = 0) -> InsMixResult:
    """InsMix one tile: SSD-constrained paste from the bank, then background shuffle.

    ``image`` H×W×3 uint8 RGB, ``labels`` H×W integer instance map (0 = background).
    ``bank`` may be ``None`` when ``config.foreground`` is False or templates come
    from the tile itself (``template_source='self'``). Same ``(seed, index)`` ⇒ same output.
    """
    config = _config(config)
    seed = check_seed(seed)
    index = _index(index)
    image, labels = check_sample(image, labels)
    dense = _Dense(labels, _max_id(labels))
    bt = _bank_table(bank, config, image, labels)
    P = _params(config, bank if isinstance(bank, InstanceBank) and bt is bank.table_cached else bt)
    out_image = np.empty_like(image)
    out_labels = np.empty_like(labels)
    paste_mask = np.empty(labels.shape, np.bool_)
    shuffled = np.empty(labels.shape, np.bool_)
    cap = _INITIAL_RECORDS
    while True:
        rec_i, rec_f, moves = _records(labels.shape, config.tile, cap)
        n, k = insmix_tile(image, dense.labels, bt, P, np.uint64(seed), np.int64(index), rec_i, rec_f, moves,
                           out_image, out_labels, paste_mask, shuffled, dense.kernel_max)
        if n >= 0:
            break
        cap = _n_instances(labels) + 1
    pastes = _to_struct(rec_i, rec_f, n)
    dense.restore(out_labels, pastes)
    plan = InsMixPlan(pastes, moves[:k].copy(), config.tile, labels.shape, seed, index)
    return InsMixResult(out_image, out_labels, paste_mask, shuffled, plan.pastes, plan)


def insmix_batch(images, labels, bank: InstanceBank | None, config: InsMixConfig | None = None, *,
                 seed: int = 0, indices=None, device: str = "cpu") -> InsMixBatchResult:
    """InsMix over an N×H×W×3 batch (tiles processed in parallel with Numba threads).

    ``indices`` are the samples' global indices (default ``0..N-1``); sample ``b``
    gives exactly ``insmix(images[b], labels[b], ..., index=indices[b])``.
    """
    if device != "cpu":
        from .gpu.bank import parse_device

        if parse_device(device)[0] != "cpu":  # raises InputError for an unknown device
            from .gpu import require_cuda

            require_cuda()  # InputError naming the reason when no GPU can be used
            from .gpu.batch import insmix_batch_cuda

            return insmix_batch_cuda(images, labels, bank, _config(config), seed=check_seed(seed), indices=indices,
                                     device=str(device))
    config = _config(config)
    seed = check_seed(seed)
    images, labels = check_batch(images, labels)
    n = images.shape[0]
    if indices is None:
        indices = np.arange(n, dtype=np.int64)
    else:
        indices = np.asarray(indices)
        if indices.shape != (n,) or not np.issubdtype(indices.dtype, np.integer):
            raise InputError(f"indices must be {n} integers (one per sample), got shape {indices.shape}")
        if n and (indices.min() < 0 or indices.max() > _MAX_SAMPLE):
            raise InputError("indices must lie in [0, 2**32)")
        indices = indices.astype(np.int64)
    max_ids = np.array([_max_id(labels[b]) for b in range(n)], np.int64)
    if config.template_source == "self":
        results = [insmix(images[b], labels[b], None, config, seed=seed, index=int(indices[b])) for b in range(n)]
        return InsMixBatchResult(np.stack([r.image for r in results]), np.stack([r.labels for r in results]),
                                 np.stack([r.paste_mask for r in results]),
                                 np.stack([r.shuffled_mask for r in results]),
                                 [r.pastes for r in results], [r.plan.moves for r in results], indices)
    bt = _bank_table(bank, config, None, None)
    P = _params(config, bank if isinstance(bank, InstanceBank) and bt is bank.table_cached else bt)
    h, w = labels.shape[1:]
    g = max((h // config.tile) * (w // config.tile), 1)
    cap = _INITIAL_RECORDS
    rec_i = np.zeros((n, cap, _rec.N_REC_I), np.int64)
    rec_f = np.zeros((n, cap, _rec.N_REC_F), np.float64)
    moves = np.zeros((n, g, 2), np.int64)
    out_images = np.empty_like(images)
    out_labels = np.empty_like(labels)
    paste_masks = np.empty(labels.shape, np.bool_)
    shuffled = np.empty(labels.shape, np.bool_)
    counts = np.zeros((n, 2), np.int64)
    sparse = max_ids > DENSE_ID_LIMIT
    kernel_max = np.where(sparse, 0, max_ids)
    kernel_labels = labels
    if sparse.any():  # such tiles are redone one by one below (relabelled); give the kernel empty maps
        kernel_labels = labels.copy()
        kernel_labels[sparse] = 0
    insmix_batch_kernel(images, kernel_labels, bt, P, np.uint64(seed), indices, rec_i, rec_f, moves,
                        out_images, out_labels, paste_masks, shuffled, counts, kernel_max)
    pastes, mv = [], []
    for b in range(n):
        if counts[b, 0] < 0 or sparse[b]:  # record buffer too small, or huge ids: redo this tile alone
            r = insmix(images[b], labels[b], bank, config, seed=seed, index=int(indices[b]))
            out_images[b], out_labels[b], paste_masks[b], shuffled[b] = r.image, r.labels, r.paste_mask, r.shuffled_mask
            pastes.append(r.pastes)
            mv.append(r.plan.moves)
            continue
        pastes.append(_to_struct(rec_i[b], rec_f[b], int(counts[b, 0])))
        mv.append(moves[b, :counts[b, 1]].copy())
    return InsMixBatchResult(out_images, out_labels, paste_masks, shuffled, pastes, mv, indices)


def admissible_templates(labels, bank: InstanceBank, config: InsMixConfig | None = None) -> dict[int, np.ndarray]:
    """For each instance id of ``labels``: the bank indices that pass the scale and shape
    constraints (``f_scale ≤ eps`` and ``f_shape ≤ rho``), ascending. For inspection and tests."""
    config = _config(config)
    labels = check_labels(labels)
    if not isinstance(bank, InstanceBank):
        raise InputTypeError(f"bank must be an InstanceBank, got {type(bank).__name__}")
    dense = _Dense(labels, _max_id(labels))
    ids, _lut, area, sum_r, sum_c, bbox, _ = tile_stats(dense.labels, config.tile, dense.kernel_max, 0)
    t_area, anchor, hw, _origin, offset, masks, desc, fits = build_table(dense.labels, ids, area, sum_r, sum_c, bbox)
    if dense.ids is not None:
        ids = dense.ids[ids]
    ot = Table(t_area, anchor, hw, offset, masks, np.zeros(0, np.uint8), desc, fits)
    bt = bank.table
    return {int(ids[i]): admissible_list(ot, i, bt, float(config.eps), float(config.rho)) for i in range(len(ids))}
