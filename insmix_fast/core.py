"""InsMix on CPU: ``plan`` (pure function of labels, bank, config and seed) and
``apply`` (paste + background shuffle), fused in :func:`insmix` / :func:`insmix_batch`.

A plan is two small arrays you can print and compare across devices:
``pastes`` (one record per accepted paste) and ``moves`` (background patch moves);
the plan and result types live in :mod:`insmix_fast.results`.

Typed tiles (SPEC §3b): every entry point takes ``types=`` (H×W class ids, 0 on
background) and returns ``result.types`` — the input classes with each pasted
instance typed with its template's class; ``InsMixConfig.template_class`` chooses
templates of any class (the paper), of the original's class, or of a balanced class
draw. ``ignore=`` (H×W bool) marks regions nothing is pasted onto and no background
patch holding them moves. Untyped calls are unchanged.
``insmix_batch(..., device="cuda")`` hands the batch to :mod:`insmix_fast.gpu`
(the only place this module reaches the GPU path).
"""

from __future__ import annotations

import numpy as np

from dataclasses import dataclass

from .bank import InstanceBank
from .classes import (UNBOUNDED_CLASSES, as_types_map, check_batch_types, check_class_mode, check_ignore,
                      check_types)
from .config import InsMixConfig
from .devices import parse_device
from .errors import BankError, ConfigError, InputError, InputTypeError
from .kernels.classes import ClassTable, any_class_table
from .kernels.instances import DENSE_ID_LIMIT, build_table, tile_stats
from .kernels.pipeline import apply_tile, insmix_batch_kernel, insmix_tile, plan_tile
from .kernels.ssd import admissible_list
from .kernels.tables import Params, Table, empty_table, largest_crop, make_params
from .results import (PASTE_DTYPE, InsMixBatchResult, InsMixPlan, InsMixResult, paste_records, record_rows,
                      record_tables)
from .threads import numba_parallel
from .validation import (check_batch, check_index, check_indices, check_int, check_labels, check_sample,
                         check_seed)

__all__ = [
    "plan_insmix",
    "apply_plan",
    "insmix",
    "insmix_batch",
    "admissible_templates",
]

# PASTE_DTYPE, InsMixPlan, InsMixResult and InsMixBatchResult are defined in insmix_fast.results;
# they stay importable from here for code written before the split.
_COMPAT = (PASTE_DTYPE, InsMixPlan, InsMixResult, InsMixBatchResult)

_INITIAL_RECORDS = 256


# ---------------------------------------------------------------------- helpers
@dataclass
class _Templates:
    """Where one call's templates come from: the kernels' table and class table, the scratch
    size, and whether they carry classes (``typed``; ``class_names`` bound the input classes)."""

    table: Table
    classes: ClassTable
    max_crop: int
    typed: bool

    def params(self, config: InsMixConfig) -> Params:
        return make_params(config, self.max_crop)


def _no_templates(typed: bool = False) -> _Templates:
    t = empty_table()
    return _Templates(t, any_class_table(np.zeros(0, np.int32), t.area), 1, typed)


def _from_bank(bank: InstanceBank, config: InsMixConfig) -> _Templates:
    return _Templates(bank.table, bank.class_table(config.template_class, config.balance_power), bank.max_crop,
                      bank.typed)


def _config(config) -> InsMixConfig:
    if config is None:
        return InsMixConfig()
    if not isinstance(config, InsMixConfig):
        raise InputTypeError(f"config must be an InsMixConfig, got {type(config).__name__}")
    return config


def _templates(bank, config: InsMixConfig, image, labels, types=None, ignore=None) -> _Templates:
    """The templates of one tile (``template_source='self'`` builds them from the tile, typed when
    ``types`` is given, leaving out instances touching ``ignore``); checks the template-class mode."""
    if not config.foreground:
        tpl = _from_bank(bank, config) if isinstance(bank, InstanceBank) and len(bank) else _no_templates()
    elif config.template_source == "self":
        if image is None:
            raise ConfigError("template_source='self' needs the image (use insmix, not plan_insmix without image)")
        sample = (image, labels) if types is None else (image, labels, types)
        try:
            own = InstanceBank.from_samples([sample], min_area=1, on_invalid="skip", progress=False,
                                            ignore=None if ignore is None else (lambda _k: ignore))
            tpl = _from_bank(own, config)
        except BankError:
            tpl = _no_templates(types is not None)
    else:
        if not isinstance(bank, InstanceBank):
            raise InputTypeError(f"bank must be an InstanceBank, got {type(bank).__name__}")
        if len(bank) == 0:
            raise BankError("the instance bank is empty: build it from samples that contain whole nuclei")
        tpl = _from_bank(bank, config)
    check_class_mode(config, tpl.typed, types is not None)
    return tpl


def _class_bound(bank, config: InsMixConfig) -> tuple[int, tuple[str, ...] | None]:
    """``(largest class id, class names)`` an input type map may hold: the bank's classes, or
    unbounded (templates from the tile itself, or no typed bank)."""
    if isinstance(bank, InstanceBank) and bank.typed and config.template_source == "bank":
        return len(bank.class_names) - 1, bank.class_names
    return UNBOUNDED_CLASSES, None


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


def _records(shape: tuple[int, int], patch: int, cap: int):
    """Record tables for ``cap`` pastes and room for every background move of one tile."""
    g = (shape[0] // patch) * (shape[1] // patch)
    return (*record_tables(cap), np.zeros((max(g, 1), 2), np.int64))


_PIXEL_I32 = np.zeros((1, 1), np.int32)
_PIXEL_BOOL = np.zeros((1, 1), np.bool_)


@dataclass
class _Extras:
    """A tile's classes and ignore region as the kernels take them (one-pixel stand-ins when absent)."""

    typed: bool
    types: np.ndarray      #: H×W int32
    id_class: np.ndarray   #: class of each kernel id
    ignore: np.ndarray     #: H×W bool
    use_ignore: bool

    @classmethod
    def of(cls, types, ignore, dense: "_Dense | None", bank, config: InsMixConfig) -> "_Extras":
        """Checked ``types`` (class ids bounded by the bank's classes) and ``ignore`` of one tile."""
        if types is None:
            typed, types, lut = False, _PIXEL_I32, np.zeros(1, np.int32)
        else:
            n_classes, names = _class_bound(bank, config)
            typed = True
            types, lut = check_types(types, dense.labels, n_classes, max_id=dense.kernel_max, ids=dense.ids,
                                     class_names=names)
        if ignore is None:
            return cls(typed, types, lut, _PIXEL_BOOL, False)
        return cls(typed, types, lut, check_ignore(ignore, dense.labels.shape), True)

    def out_types(self) -> np.ndarray:
        return np.empty_like(self.types) if self.typed else self.types

    def for_templates(self):
        """``(types, ignore)`` as ``template_source='self'`` builds its bank from them."""
        return (self.types if self.typed else None), (self.ignore if self.use_ignore else None)


# ---------------------------------------------------------------------- public API
def plan_insmix(labels, bank: InstanceBank | None, config: InsMixConfig | None = None, *, seed: int = 0,
                index: int = 0, image=None, types=None, ignore=None) -> InsMixPlan:
    """Decide which templates go where and which background patches move — no pixels are touched.

    A pure function of ``(labels, bank, config, seed, index)`` (and ``types`` / ``ignore``
    when given, as in :func:`insmix`); ``index`` is the sample's global index, so the plan
    does not depend on batching.
    """
    config = _config(config)
    seed = check_seed(seed)
    index = check_index(index)
    labels = check_labels(labels)
    if image is not None:
        image, labels = check_sample(image, labels)
    dense = _Dense(labels, _max_id(labels))
    ex = _Extras.of(types, ignore, dense, bank, config)
    tpl = _templates(bank, config, image, labels, *ex.for_templates())
    P = tpl.params(config)
    cap = _INITIAL_RECORDS
    while True:
        rec_i, rec_f, moves = _records(labels.shape, config.patch, cap)
        work = dense.labels.copy()
        n, k = plan_tile(work, tpl.table, tpl.classes, P, np.uint64(seed), np.int64(index), rec_i, rec_f, moves,
                         dense.kernel_max, ex.id_class, ex.ignore, ex.use_ignore)
        if n >= 0:
            break
        cap = _n_instances(labels) + 1
    pastes = paste_records(rec_i, rec_f, n)
    dense.restore(work, pastes)
    return InsMixPlan(pastes, moves[:k].copy(), config.patch, labels.shape, seed, index)


def apply_plan(image, labels, plan: InsMixPlan, bank: InstanceBank | None, *, types=None) -> InsMixResult:
    """Execute a plan: paste its templates, then move its background patches.

    With ``types`` (the tile's H×W class map) the result's ``types`` carries each paste's
    class (the ``class`` field of its record) on its pixels."""
    image, labels = check_sample(image, labels)
    if not isinstance(plan, InsMixPlan):
        raise InputTypeError(f"plan must be an InsMixPlan, got {type(plan).__name__}")
    if tuple(plan.shape) != labels.shape:
        raise InputError(f"plan was made for a {plan.shape} tile, labels are {labels.shape}")
    patch = check_int("plan.patch", plan.patch, 2, error=InputError)
    moves = np.ascontiguousarray(plan.moves, dtype=np.int64).reshape(-1, 2)
    n_patches = (labels.shape[0] // patch) * (labels.shape[1] // patch)
    if len(moves) and (moves.min() < 0 or moves.max() >= n_patches):
        raise InputError(f"plan.moves name patches outside the {n_patches} {patch}×{patch} patches of this tile")
    if len(plan.pastes):
        if not isinstance(bank, InstanceBank):
            raise InputTypeError("apply_plan needs the InstanceBank the plan was made with")
        _check_pastes_fit(plan.pastes, bank, labels.shape)
        bt = bank.table
    else:
        bt = empty_table()
    ex = _Extras.of(types, None, _Dense(labels, _max_id(labels)) if types is not None else None, bank, InsMixConfig())
    out_image = np.empty_like(image)
    out_labels = np.empty_like(labels)
    out_types = ex.out_types()
    paste_mask = np.empty(labels.shape, np.bool_)
    shuffled = np.empty(labels.shape, np.bool_)
    apply_tile(image, labels, bt, patch, record_rows(plan.pastes), len(plan.pastes), moves, len(moves),
               out_image, out_labels, paste_mask, shuffled, ex.typed, ex.types, out_types)
    return InsMixResult(out_image, out_labels, paste_mask, shuffled, plan.pastes, plan,
                        types=out_types if ex.typed else None)


def _check_pastes_fit(pastes: np.ndarray, bank: InstanceBank, shape: tuple[int, int]) -> None:
    """Every planned template exists in ``bank`` and lies inside the tile (the kernels do not bounds-check)."""
    t = pastes["template"]
    if int(t.min()) < 0 or int(t.max()) >= len(bank):
        raise BankError("the plan refers to templates beyond this bank: use the bank it was planned with")
    if "class" in pastes.dtype.names and not np.array_equal(pastes["class"], bank.classes[t]):
        raise BankError("the plan's paste classes differ from this bank's template classes: use the bank it was "
                        "planned with")
    hw = bank.hw[t]
    y, x = pastes["y"].astype(np.int64), pastes["x"].astype(np.int64)
    if (y < 0).any() or (x < 0).any() or (y + hw[:, 0] > shape[0]).any() or (x + hw[:, 1] > shape[1]).any():
        raise InputError(f"the plan pastes templates outside the {shape[0]}×{shape[1]} tile: use the bank it was "
                         "planned with")


def insmix(image, labels, bank: InstanceBank | None, config: InsMixConfig | None = None, *, seed: int = 0,
           index: int = 0, types=None, ignore=None) -> InsMixResult:
    """InsMix one tile: SSD-constrained paste from the bank, then background shuffle.

    ``image`` H×W×3 uint8 RGB, ``labels`` H×W integer instance map (0 = background).
    ``bank`` may be ``None`` when ``config.foreground`` is False or templates come
    from the tile itself (``template_source='self'``). Same ``(seed, index)`` ⇒ same output.

    ``types`` (optional): the tile's H×W class map (0 on background, one class ≥ 1 per
    instance, within the bank's ``class_names``); the result's ``types`` then holds the
    input classes with each pasted instance typed with its template's class (needs a typed
    bank). ``config.template_class`` picks templates of any class, of the original's class
    (``"same"``, needs ``types``) or of a balanced class draw (``"balanced"``).
    ``ignore`` (optional): H×W bool; no template pixel is pasted onto it and no background
    patch holding an ignore pixel moves.
    """
    config = _config(config)
    seed = check_seed(seed)
    index = check_index(index)
    image, labels = check_sample(image, labels)
    dense = _Dense(labels, _max_id(labels))
    ex = _Extras.of(types, ignore, dense, bank, config)
    tpl = _templates(bank, config, image, labels, *ex.for_templates())
    P = tpl.params(config)
    out_image = np.empty_like(image)
    out_labels = np.empty_like(labels)
    out_types = ex.out_types()
    paste_mask = np.empty(labels.shape, np.bool_)
    shuffled = np.empty(labels.shape, np.bool_)
    cap = _INITIAL_RECORDS
    while True:
        rec_i, rec_f, moves = _records(labels.shape, config.patch, cap)
        n, k = insmix_tile(image, dense.labels, tpl.table, tpl.classes, P, np.uint64(seed), np.int64(index), rec_i,
                           rec_f, moves, out_image, out_labels, paste_mask, shuffled, dense.kernel_max, ex.typed,
                           ex.types, out_types, ex.id_class, ex.ignore, ex.use_ignore)
        if n >= 0:
            break
        cap = _n_instances(labels) + 1
    pastes = paste_records(rec_i, rec_f, n)
    dense.restore(out_labels, pastes)
    plan = InsMixPlan(pastes, moves[:k].copy(), config.patch, labels.shape, seed, index)
    return InsMixResult(out_image, out_labels, paste_mask, shuffled, plan.pastes, plan,
                        types=out_types if ex.typed else None)


def insmix_batch(images, labels, bank: InstanceBank | None, config: InsMixConfig | None = None, *,
                 seed: int = 0, indices=None, device="cpu", stream=None, types=None,
                 ignore=None) -> InsMixBatchResult:
    """InsMix over an N×H×W×3 batch (tiles processed in parallel with Numba threads).

    ``indices`` are the samples' global indices (default ``0..N-1``); sample ``b``
    gives exactly ``insmix(images[b], labels[b], ..., index=indices[b])`` (and
    ``result[b].plan`` equals that call's plan). ``types`` (N×H×W class maps) and
    ``ignore`` (N×H×W bool) are optional, as in :func:`insmix`; with ``types`` the
    result has ``types`` (N×H×W int32).

    ``device="cuda"`` / ``"cuda:N"`` runs the whole batch on the GPU
    (:func:`insmix_fast.gpu.batch.insmix_batch_cuda`; the inputs may then be device
    arrays, which stay there). ``stream`` (GPU only): a numba stream, a
    ``torch.cuda.Stream``, a CuPy stream or a raw ``cudaStream_t`` handle; every kernel
    and copy of the call is queued on it and, for device input, the call returns
    without waiting for the work (``None``: numba's default stream, as before).
    """
    dev = parse_device(device, error=InputError)
    config = _config(config)
    seed = check_seed(seed)
    if dev.kind == "cuda":
        return _insmix_batch_gpu(images, labels, bank, config, seed, indices, dev, stream, types, ignore)
    if stream is not None:
        raise InputError(f"stream={stream!r} is for device='cuda'; the CPU path takes no stream")
    images, labels = check_batch(images, labels)
    indices = check_indices(indices, images.shape[0])
    if types is not None:
        types = as_types_map(types, labels.shape)
    if ignore is not None:
        ignore = check_ignore(ignore, labels.shape)
    if config.template_source == "self":
        results = [insmix(images[b], labels[b], None, config, seed=seed, index=int(indices[b]),
                          types=None if types is None else types[b], ignore=None if ignore is None else ignore[b])
                   for b in range(len(indices))]
        return InsMixBatchResult(np.stack([r.image for r in results]), np.stack([r.labels for r in results]),
                                 np.stack([r.paste_mask for r in results]),
                                 np.stack([r.shuffled_mask for r in results]),
                                 [r.pastes for r in results], [r.plan.moves for r in results], indices, seed,
                                 config.patch, types=None if types is None else np.stack([r.types for r in results]))
    return _insmix_batch_cpu(images, labels, bank, config, seed, indices, types, ignore)


def _insmix_batch_gpu(images, labels, bank, config: InsMixConfig, seed: int, indices, device, stream, types, ignore):
    """The one way from here to the GPU path (imported on first use: numba.cuda stays unloaded otherwise)."""
    from .gpu.batch import insmix_batch_cuda

    return insmix_batch_cuda(images, labels, bank, config, seed=seed, indices=indices, device=device, stream=stream,
                             types=types, ignore=ignore)


def _insmix_batch_cpu(images: np.ndarray, labels: np.ndarray, bank, config: InsMixConfig, seed: int,
                      indices: np.ndarray, types, ignore) -> InsMixBatchResult:
    """The batch kernel over checked inputs; tiles it cannot take are redone one by one."""
    n = images.shape[0]
    max_ids = np.array([_max_id(labels[b]) for b in range(n)], np.int64)
    typed = types is not None
    tpl = _templates(bank, config, None, None, types if typed else None)
    P = tpl.params(config)
    h, w = labels.shape[1:]
    rec_i, rec_f = record_tables(_INITIAL_RECORDS, n)
    moves = np.zeros((n, max((h // config.patch) * (w // config.patch), 1), 2), np.int64)
    out_images = np.empty_like(images)
    out_labels = np.empty_like(labels)
    paste_masks = np.empty(labels.shape, np.bool_)
    shuffled = np.empty(labels.shape, np.bool_)
    counts = np.zeros((n, 2), np.int64)
    sparse = max_ids > DENSE_ID_LIMIT
    kernel_labels = labels
    kernel_types = types
    if sparse.any():  # such tiles are redone one by one below (relabelled); give the kernel empty maps
        kernel_labels = labels.copy()
        kernel_labels[sparse] = 0
        if typed:
            kernel_types = types.copy()
            kernel_types[sparse] = 0
    kernel_max = np.where(sparse, 0, max_ids)
    if typed:
        n_classes, names = _class_bound(bank, config)
        kernel_types, luts = check_batch_types(kernel_types, kernel_labels, n_classes, int(kernel_max.max()) + 1,
                                               names)
        out_types = np.empty_like(kernel_types)
    else:
        kernel_types = out_types = np.zeros((n, 1, 1), np.int32)
        luts = np.zeros((n, 1), np.int32)
    ign = ignore if ignore is not None else np.zeros((n, 1, 1), np.bool_)
    with numba_parallel():  # a fork-safe pool that keeps torch's thread count; one launch at a time if needed
        insmix_batch_kernel(images, kernel_labels, tpl.table, tpl.classes, P, np.uint64(seed), indices, rec_i, rec_f,
                            moves, out_images, out_labels, paste_masks, shuffled, counts, kernel_max, typed,
                            kernel_types, out_types, luts, ign, ignore is not None)
    pastes, mv = [], []
    for b in range(n):
        if counts[b, 0] < 0 or sparse[b]:  # record buffer too small, or huge ids: redo this tile alone
            r = insmix(images[b], labels[b], bank, config, seed=seed, index=int(indices[b]),
                       types=types[b] if typed else None, ignore=None if ignore is None else ignore[b])
            out_images[b], out_labels[b], paste_masks[b], shuffled[b] = r.image, r.labels, r.paste_mask, r.shuffled_mask
            if typed:
                out_types[b] = r.types
            pastes.append(r.pastes)
            mv.append(r.plan.moves)
            continue
        pastes.append(paste_records(rec_i[b], rec_f[b], int(counts[b, 0])))
        mv.append(moves[b, :counts[b, 1]].copy())
    return InsMixBatchResult(out_images, out_labels, paste_masks, shuffled, pastes, mv, indices, seed, config.patch,
                             types=out_types if typed else None)


def admissible_templates(labels, bank: InstanceBank, config: InsMixConfig | None = None) -> dict[int, np.ndarray]:
    """For each instance id of ``labels``: the bank indices that pass the scale and shape
    constraints (``f_scale ≤ eps`` and ``f_shape ≤ rho``), ascending. For inspection and tests."""
    config = _config(config)
    labels = check_labels(labels)
    if not isinstance(bank, InstanceBank):
        raise InputTypeError(f"bank must be an InstanceBank, got {type(bank).__name__}")
    dense = _Dense(labels, _max_id(labels))
    ids, _lut, area, sum_r, sum_c, bbox, _ = tile_stats(dense.labels, config.patch, dense.kernel_max, 0)
    t_area, anchor, hw, _origin, offset, masks, desc, fits = build_table(dense.labels, ids, area, sum_r, sum_c, bbox)
    if dense.ids is not None:
        ids = dense.ids[ids]
    ot = Table(t_area, anchor, hw, offset, masks, np.zeros(0, np.uint8), desc, fits)
    bt = bank.table
    return {int(ids[i]): admissible_list(ot, i, bt, float(config.eps), float(config.rho)) for i in range(len(ids))}
