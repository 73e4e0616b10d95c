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
from .results import (PASTE_DTYPE, InsMixBatchResult, InsMixPlan, InsMixResult, PlanFingerprint, labels_fingerprint,
                      paste_records, record_rows, record_tables)
from .threads import numba_parallel
from .validation import (channel_first_planes, check_batch, check_index, check_indices, check_int, check_labels,
                         check_number, check_sample, check_seed)

__all__ = [
    "plan_insmix",
    "apply_plan",
    "insmix_into",
    "insmix_arrays",
    "insmix_batch_into",
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


def _for_class_choice(id_class: np.ndarray, config: InsMixConfig) -> np.ndarray | None:
    """The per-id classes the kernels read for the template-class choice; None when
    ``template_class="any"`` makes no such choice (a None is compiled out of the kernels)."""
    return None if config.template_class == "any" else id_class


@dataclass
class _Extras:
    """A tile's classes and ignore region as the kernels take them (one-pixel stand-ins when absent)."""

    typed: bool
    types: np.ndarray      #: H×W int32
    id_class: np.ndarray   #: class of each kernel id
    ignore: np.ndarray | None  #: H×W bool (None: no ignore region, compiled out of the kernels)
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
            return cls(typed, types, lut, None, False)
        return cls(typed, types, lut, check_ignore(ignore, dense.labels.shape), True)

    def out_types(self) -> np.ndarray:
        return np.empty_like(self.types) if self.typed else self.types

    def for_templates(self):
        """``(types, ignore)`` as ``template_source='self'`` builds its bank from them."""
        return (self.types if self.typed else None), (self.ignore if self.use_ignore else None)


# ---------------------------------------------------------------------- plan fingerprints (issue 15)
def _bank_part(bank, config: InsMixConfig) -> tuple:
    """(size, content hash) of the bank a plan takes templates from; (None, None) when it takes none."""
    if config.foreground and config.template_source != "self" and isinstance(bank, InstanceBank):
        return len(bank), bank.content_hash
    return None, None


def _fingerprint(labels: np.ndarray | None, bank, config: InsMixConfig) -> PlanFingerprint:
    """The plan's fingerprint; ``labels=None``: the bank part only (insmix / insmix_batch: hashing
    each label map would add ~20 µs, 4–10 % of a call; apply_plan still checks the pasted ids)."""
    return PlanFingerprint(None if labels is None else labels_fingerprint(labels), *_bank_part(bank, config))


def _check_fingerprint(plan: InsMixPlan, labels: np.ndarray, bank) -> None:
    """Refuse a plan made for another label map or another bank (both fingerprints named)."""
    fp = getattr(plan, "fingerprint", None)  # None: plans built by hand or before fingerprints
    if fp is not None and fp.labels is not None:
        got = labels_fingerprint(labels)
        if got != fp.labels:
            raise InputError(f"the plan was made for another label map (fingerprint {fp.labels:#018x}); these "
                             f"labels have fingerprint {got:#018x}: apply a plan to the tile it was planned for")
    if fp is not None and fp.bank_hash is not None and len(plan.pastes) and isinstance(bank, InstanceBank):
        if (len(bank), bank.content_hash) != (fp.bank_size, fp.bank_hash):
            mine = PlanFingerprint(None, len(bank), bank.content_hash)
            raise InputError(f"the plan was made with another bank ({fp.describe_bank()}); this bank has "
                             f"{mine.describe_bank()}: use the bank the plan was made with")
    if len(plan.pastes):  # every plan: pasted ids are max + 1, max + 2, … of the map it was made for
        pasted = plan.pastes["label"]
        top = _max_id(labels)
        if not np.array_equal(pasted, top + 1 + np.arange(len(pasted))):
            raise InputError(f"the plan was made for another label map: it gives pasted nuclei the ids "
                             f"{int(pasted[0])}.., these labels need {top + 1}.. (largest id {top})")


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
                         dense.kernel_max, _for_class_choice(ex.id_class, config), ex.ignore, ex.use_ignore)
        if n >= 0:
            break
        cap = _n_instances(labels) + 1
    pastes = paste_records(rec_i, rec_f, n)
    dense.restore(work, pastes)
    return InsMixPlan(pastes, moves[:k].copy(), config.patch, labels.shape, seed, index,
                      _fingerprint(labels, bank, config))


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
    _check_fingerprint(plan, labels, bank)
    if len(plan.pastes):
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


#: Template value → float image value tables of :func:`insmix_into`, by (dtype, max_value).
_LUTS: dict = {}
_FLOAT_IMAGES = (np.dtype(np.float32), np.dtype(np.float64))


def _lut(dtype: np.dtype, max_value) -> np.ndarray | None:
    """``None`` for uint8 (template values are copied), else ``v / (255 / max_value)`` for v = 0..255,
    computed in float64 and rounded once to ``dtype`` (exactly what a float64 division stored into
    ``dtype`` gives)."""
    if dtype == np.uint8:
        return None
    if dtype not in _FLOAT_IMAGES:
        raise InputError(f"out must be uint8 or float32/float64, got dtype {dtype}")
    if max_value is None:
        raise InputError("a float image needs max_value= (its full intensity: 1.0 for [0, 1], 255.0 for 0..255)")
    max_value = check_number("max_value", max_value, 0.0, lo_open=True, error=InputError)
    lut = _LUTS.get((dtype, max_value))
    if lut is None:
        lut = _LUTS[dtype, max_value] = (np.arange(256, dtype=np.float64) / (255.0 / max_value)).astype(dtype)
    return lut


def _check_out(out, want: tuple[int, ...], max_value, what: str) -> np.ndarray | None:
    """Check an image InsMix writes into in place; return its template-value table (:func:`_lut`)."""
    if not isinstance(out, np.ndarray):
        raise InputTypeError(f"out must be a numpy array, got {type(out).__name__}")
    if out.shape != want:
        raise InputError(f"out must be {'×'.join(map(str, want))} (any strides) to match {what}, got shape "
                         f"{out.shape}")
    if not out.flags.writeable:
        raise InputError("out is read-only: InsMix writes into it")
    return _lut(out.dtype, max_value)


def insmix_into(out, labels, bank: InstanceBank | None, config: InsMixConfig | None = None, *, seed: int = 0,
                index: int = 0, types=None, ignore=None, max_value=None) -> InsMixResult:
    """InsMix one tile whose image is ``out``, written in place in its own layout and dtype.

    ``out`` is H×W×3 with any strides — ``x.transpose(1, 2, 0)`` of a channel-first 3×H×W
    array is written in place, channel-first — holding uint8, or float32 / float64
    intensities in ``[0, max_value]``; ``labels``, ``types``, ``ignore``, ``seed`` and
    ``index`` are those of :func:`insmix`, whose plan this is. A uint8 ``out`` ends up equal,
    bit for bit, to ``insmix(out, labels, ...).image``; a float one has each pasted pixel
    ``template / 255 · max_value`` (computed in float64, rounded once) and every other pixel
    its own value, or the value it had in the background patch that moved onto it. The
    returned :class:`~insmix_fast.results.InsMixResult` has ``image`` = ``out`` and the label
    map, masks, pastes, plan and types of :func:`insmix`.

    Templates must come from ``bank`` (or ``config.foreground`` be False): the plan then never
    reads the image's pixels, which is why any layout and dtype will do.
    ``template_source='self'`` cuts templates from the tile's own uint8 pixels: use
    :func:`insmix` for it.
    """
    config = _config(config)
    _refuse_self_templates(config, "insmix_into", "insmix")
    seed = check_seed(seed)
    index = check_index(index)
    labels = check_labels(labels)
    lut = _check_out(out, labels.shape + (3,), max_value, "labels")
    return _insmix_tile(None, labels, out, lut, bank, config, seed, index, types, ignore)


def insmix_arrays(image, labels, bank: InstanceBank | None, config: InsMixConfig | None = None, *, seed: int = 0,
                  index: int = 0, types=None, ignore=None, in_place: bool = False, max_value=None,
                  labels_dtype=None, on_outputs=None) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """InsMix one tile and return its arrays alone: ``(image, labels, types)`` (``types`` None
    for an untyped call), equal bit for bit to ``result.image``, ``.labels`` and ``.types`` of
    :func:`insmix` — or, with ``in_place=True``, of :func:`insmix_into` writing into ``image``
    (any strides; uint8, or float32 / float64 with ``max_value``), which is then returned.

    For callers that keep nothing else (the drop-in adapters of :mod:`insmix_fast.transforms`):
    the paste records, the plan with its fingerprint, the paste and shuffle masks and the result
    object that :func:`insmix` builds are not made (the masks are compiled out of the kernel;
    together ≈ 25 µs of a 256² tile's ≈ 370). The arguments and their checks are those of
    :func:`insmix` / :func:`insmix_into`, except that a uint8 ``image`` may also be a
    channel-first 3×H×W array seen through ``.transpose(1, 2, 0)`` when templates come from the
    bank: the new image is then laid out channel-first too (the same values), and the kernels
    work on the planes directly instead of copying the image to H×W×3 first.

    ``labels_dtype``: the returned label map's dtype, int32 (the default) or int64 (widened as
    it is written: torch's label dtype). ``on_outputs``: called as ``on_outputs(image, labels)``
    with the output arrays (new ones, or ``image`` itself in place) once they exist and before
    InsMix writes them, for a caller that wraps its outputs in objects (tensors, MONAI
    ``MetaTensor``): made there, next to the reads of its inputs, that code is still in the
    CPU's caches, which the kernel evicts. It must not write them; what it returns is ignored.
    """
    config = _config(config)
    seed = check_seed(seed)
    index = check_index(index)
    wide = False if labels_dtype is None else _wide_labels(labels_dtype)
    if on_outputs is not None and not callable(on_outputs):
        raise InputTypeError(f"on_outputs must be a function of (image, labels), got {type(on_outputs).__name__}")
    if in_place:
        _refuse_self_templates(config, "insmix_arrays(in_place=True)", "insmix_arrays")
        labels = check_labels(labels)
        lut = _check_out(image, labels.shape + (3,), max_value, "labels")
        return _insmix_tile(None, labels, image, lut, bank, config, seed, index, types, ignore, records=False,
                            wide=wide, on_outputs=on_outputs)
    image, labels = check_sample(image, labels, channel_first_ok=not _self_templates(config))
    return _insmix_tile(image, labels, np.empty_like(image), None, bank, config, seed, index, types, ignore,
                        records=False, wide=wide, on_outputs=on_outputs)


def _wide_labels(dtype) -> bool:
    """``labels_dtype`` of :func:`insmix_arrays`: whether the labels are returned as int64."""
    try:
        dt = np.dtype(dtype)
    except TypeError:
        dt = None
    if dt not in (np.int32, np.int64):
        raise InputError(f"labels_dtype must be int32 or int64, got {dtype!r}")
    return dt == np.int64


def _self_templates(config: InsMixConfig) -> bool:
    """Whether the plan cuts templates from the tile's own pixels (it then reads them H×W×3)."""
    return config.foreground and config.template_source == "self"


def _refuse_self_templates(config: InsMixConfig, what: str, instead: str) -> None:
    if _self_templates(config):
        raise ConfigError(f"{what} takes templates from a bank; template_source='self' cuts them from the "
                          f"tiles' own uint8 …×H×W×3 pixels: use {instead}() for it")


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
    return _insmix_tile(image, labels, np.empty_like(image), None, bank, config, seed, index, types, ignore)


def _insmix_tile(image: np.ndarray | None, labels: np.ndarray, out_image: np.ndarray, lut, bank, config: InsMixConfig,
                 seed: int, index: int, types, ignore, records: bool = True, wide: bool = False,
                 on_outputs=None):
    """:func:`insmix` (``image`` given) or :func:`insmix_into` (``image`` None: ``out_image``
    holds it, any strides, float through ``lut``) on checked arguments: one kernel call.
    Returns the :class:`~insmix_fast.results.InsMixResult`, or with ``records=False`` the
    ``(image, labels, types or None)`` arrays alone (:func:`insmix_arrays`, whose ``wide``
    int64 labels and ``on_outputs`` hook these are)."""
    dense = _Dense(labels, _max_id(labels))
    ex = _Extras.of(types, ignore, dense, bank, config)
    tpl = _templates(bank, config, image, labels, *ex.for_templates())
    P = tpl.params(config)
    out_labels = np.empty_like(labels)
    wide = np.empty(labels.shape, np.int64) if wide else None  # the kernels' int32 map, widened at the end
    out_types = ex.out_types()
    # the masks only go into the result object (records=False: not made, compiled out of the kernel)
    paste_mask = np.empty(labels.shape, np.bool_) if records else None
    shuffled = np.empty(labels.shape, np.bool_) if records else None
    # optional trailing arguments, omitted when unused: insmix's specialisation stays as it was
    # (a source image is C-contiguous or channel-first — check_sample — and out_image, its empty_like, alike)
    planes = channel_first_planes(out_image)
    if planes is not None and (image is None or channel_first_planes(image) is not None):  # channel-first in memory
        image = None if image is None else image.transpose(2, 0, 1)
        kernel_image, tail = planes, (lut, True)
    else:
        kernel_image, tail = out_image, (() if lut is None else (lut,))
    if on_outputs is not None:
        on_outputs(out_image, out_labels if wide is None else wide)
    cap = _INITIAL_RECORDS
    while True:  # (a call whose records are too small writes no image: retried with room for every instance)
        rec_i, rec_f, moves = _records(labels.shape, config.patch, cap)
        n, k = insmix_tile(image, dense.labels, tpl.table, tpl.classes, P, np.uint64(seed), np.int64(index), rec_i,
                           rec_f, moves, kernel_image, out_labels, paste_mask, shuffled, dense.kernel_max, ex.typed,
                           ex.types, out_types, _for_class_choice(ex.id_class, config), ex.ignore, ex.use_ignore,
                           *tail)
        if n >= 0:
            break
        cap = _n_instances(labels) + 1
    if not records:
        if dense.ids is not None:  # relabelled ids are mapped back through the paste records
            dense.restore(out_labels, paste_records(rec_i, rec_f, n))
        if wide is not None:
            np.copyto(wide, out_labels)
            out_labels = wide
        return out_image, out_labels, out_types if ex.typed else None
    pastes = paste_records(rec_i, rec_f, n)
    dense.restore(out_labels, pastes)
    plan = InsMixPlan(pastes, moves[:k].copy(), config.patch, labels.shape, seed, index,
                      _fingerprint(None, bank, config))
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
                                 config.patch, types=None if types is None else np.stack([r.types for r in results]),
                                 fingerprints=[r.plan.fingerprint for r in results])
    return _insmix_batch_cpu(images, labels, bank, config, seed, indices, types, ignore)


def insmix_batch_into(out, labels, bank: InstanceBank | None, config: InsMixConfig | None = None, *, seed: int = 0,
                      indices=None, types=None, ignore=None, max_value=None, out_labels=None,
                      masks: bool = True) -> InsMixBatchResult:
    """:func:`insmix_batch` on the CPU whose images are ``out``, written in place in their own
    layout and dtype (what :func:`insmix_into` does for one tile). A channel-first ``out`` (a
    C-contiguous N×3×H×W array seen through ``.transpose(0, 2, 3, 1)``) is worked on plane by
    plane, without the generic stride arithmetic of the transposed view.

    ``out`` is N×H×W×3 with any strides — ``x.transpose(0, 2, 3, 1)`` of a channel-first
    N×3×H×W array is written in place, channel-first — holding uint8, or float32 / float64
    intensities in ``[0, max_value]``; the other arguments are those of :func:`insmix_batch`.
    Tile ``b`` of a uint8 ``out`` ends up equal, bit for bit, to ``insmix_batch(out,
    ...).images[b]``; a float one as :func:`insmix_into` describes. The returned
    :class:`~insmix_fast.results.InsMixBatchResult` has ``images`` = ``out`` and the labels,
    masks, pastes, moves and types of :func:`insmix_batch`. Templates must come from
    ``bank`` (or ``config.foreground`` be False), as for :func:`insmix_into`.

    ``out_labels`` (optional): a C-contiguous N×H×W int32 or int64 array the output label maps
    are written into (then ``result.labels``), so an int64 pipeline gets int64 maps without a
    casting pass; default a new int32 array. A C-contiguous int64 ``labels`` batch is checked
    by the kernel as it copies it: on a bad id (negative, or beyond int32) the
    :class:`~insmix_fast.errors.InputError` comes after the other tiles of ``out`` were written.

    ``masks=False``: the paste and shuffle masks are not made (compiled out of the kernel) and
    the result's ``paste_masks`` / ``shuffled_masks`` are None — for callers that drop them.
    """
    config = _config(config)
    _refuse_self_templates(config, "insmix_batch_into", "insmix_batch")
    seed = check_seed(seed)
    labels, in_kernel = _as_label_batch(labels, types is not None)
    lut = _check_out(out, labels.shape + (3,), max_value, "labels")
    indices = check_indices(indices, labels.shape[0])
    if types is not None:
        types = as_types_map(types, labels.shape)
    if ignore is not None:
        ignore = check_ignore(ignore, labels.shape)
    if out_labels is not None:
        if not (isinstance(out_labels, np.ndarray) and out_labels.shape == labels.shape
                and out_labels.dtype in (np.int32, np.int64) and out_labels.flags.c_contiguous
                and out_labels.flags.writeable):
            raise InputError(f"out_labels must be a writeable C-contiguous int32/int64 array of shape {labels.shape}, "
                             f"got {getattr(out_labels, 'dtype', type(out_labels).__name__)} "
                             f"{getattr(out_labels, 'shape', '')}")
    return _insmix_batch_cpu(None, labels, bank, config, seed, indices, types, ignore, out=out, lut=lut,
                             max_value=max_value, check_in_kernel=in_kernel, wide=out_labels, masks=bool(masks))


def kernel_templates(bank, config: InsMixConfig | None, typed: bool):
    """What :func:`insmix_batch_into` hands the kernels for ``bank`` and ``config``, for callers
    that run ``insmix_tile`` themselves (the loader's DALI operator): ``(table, class_table,
    params, n_classes, class_names)`` — the bank's kernel tables, the configuration's kernel
    scalars, and the largest class id (with the bank's class names, or None) an input type map
    may hold. ``typed``: the tiles come with type maps. Makes the checks of
    :func:`insmix_batch_into` (an empty bank, the template-class mode, ``template_source="self"``
    refused)."""
    config = _config(config)
    _refuse_self_templates(config, "kernel_templates", "insmix_batch")
    tpl = _templates(bank, config, None, None, np.zeros((1, 1), np.int32) if typed else None)
    n_classes, names = _class_bound(bank, config)
    return tpl.table, tpl.classes, tpl.params(config), n_classes, names


def _as_label_batch(labels, typed: bool) -> tuple[np.ndarray, bool]:
    """N×H×W label maps checked as :func:`~insmix_fast.validation.check_batch` checks them, and
    whether the batch kernel checks them instead: a C-contiguous int64 batch (torch's label
    dtype) is passed on as it is and narrowed, checked and scanned for its largest ids by the
    kernel's own copy (typed batches excepted: their checks need the ids first); others become
    int32 here."""
    if not isinstance(labels, np.ndarray):
        labels = np.asarray(labels)
    if labels.ndim != 3 or labels.shape[0] == 0:
        raise InputError(f"labels must be N×H×W with N ≥ 1, got shape {labels.shape}")
    if not typed and labels.dtype == np.int64 and labels.size and labels.flags.c_contiguous:
        return labels, True
    return check_labels(labels.reshape(-1, labels.shape[2]) if labels.size else labels[0]).reshape(labels.shape), False


def _insmix_batch_gpu(images, labels, bank, config: InsMixConfig, seed: int, indices, device, stream, types, ignore):
    """The one way from here to the GPU path (imported on first use: numba.cuda stays unloaded otherwise)."""
    from .gpu.batch import insmix_batch_cuda

    return insmix_batch_cuda(images, labels, bank, config, seed=seed, indices=indices, device=device, stream=stream,
                             types=types, ignore=ignore)


def _insmix_batch_cpu(images: np.ndarray | None, labels: np.ndarray, bank, config: InsMixConfig, seed: int,
                      indices: np.ndarray, types, ignore, *, out: np.ndarray | None = None, lut=None,
                      max_value=None, check_in_kernel: bool = False, wide=None,
                      masks: bool = True) -> InsMixBatchResult:
    """The batch kernel over checked inputs; tiles it cannot take are redone one by one.
    ``images`` None: ``out`` (checked by :func:`_check_out`, which gave its ``lut``; ``max_value``
    for the tiles redone alone) holds them and is written in place (:func:`insmix_batch_into`). ``check_in_kernel``: ``labels`` are unchecked C-contiguous int64
    maps the kernel narrows and checks (see :func:`_as_label_batch`); a bad one then raises after
    the kernel wrote the other tiles. ``wide``: the N×H×W int32/int64 array the output labels go to.
    ``masks=False``: no paste / shuffle masks (None in the result). Channel-first images (``out``
    and ``images`` N×H×W×3 views of C-contiguous N×3×H×W arrays) go to the kernel as planes."""
    n = labels.shape[0]
    if check_in_kernel:
        max_ids = np.zeros(n, np.int64)  # the kernel finds them
    else:
        max_ids = np.array([_max_id(labels[b]) for b in range(n)], np.int64)
    typed = types is not None
    tpl = _templates(bank, config, None, None, types if typed else None)
    P = tpl.params(config)
    h, w = labels.shape[1:]
    rec_i, rec_f = record_tables(_INITIAL_RECORDS, n)
    moves = np.zeros((n, max((h // config.patch) * (w // config.patch), 1), 2), np.int64)
    out_images = np.empty_like(images) if images is not None else out
    out_labels = wide if wide is not None and wide.dtype == np.int32 else np.empty(labels.shape, np.int32)
    wide = None if wide is out_labels else wide
    paste_masks = np.empty(labels.shape, np.bool_) if masks else None
    shuffled = np.empty(labels.shape, np.bool_) if masks else None
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
    # in place, the kernel shuffles the background of the stand-in empty maps of sparse tiles: keep their inputs
    kept = {b: out[b].copy() for b in np.flatnonzero(sparse)} if images is None else {}
    planes = channel_first_planes(out_images[0]) if n else None
    channel_first = planes is not None and (images is None or channel_first_planes(images[0]) is not None)
    kernel_args = (images if images is None or not channel_first else images.transpose(0, 3, 1, 2), kernel_labels,
                   tpl.table, tpl.classes, P, np.uint64(seed), indices, rec_i, rec_f, moves,
                   out_images.transpose(0, 3, 1, 2) if channel_first else out_images, out_labels, paste_masks,
                   shuffled, counts, kernel_max, typed, kernel_types, out_types, _for_class_choice(luts, config),
                   ignore, ignore is not None)
    # the optional arguments only when given: omitted, they leave insmix_batch's specialisation (and cache entry)
    # as it was
    if channel_first:
        extra = (lut, wide, DENSE_ID_LIMIT if check_in_kernel else None, True)
    else:
        extra = (lut, wide, DENSE_ID_LIMIT) if check_in_kernel else (lut, wide) if wide is not None else \
            (lut,) if lut is not None else ()
    with numba_parallel():  # a fork-safe pool that keeps torch's thread count; one launch at a time if needed
        insmix_batch_kernel(*kernel_args, *extra)
    if check_in_kernel:  # tiles the kernel left alone: a bad id (raise as check_labels does), or sparse ids
        for b in np.flatnonzero(counts[:, 0] == -2):
            if kernel_max[b] < 0:
                check_labels(labels[b], name=f"labels[{b}]")
            _max_id(labels[b])
            sparse[b] = True
    fingerprints = [_fingerprint(None, bank, config)] * n
    pastes, mv = [], []
    for b in range(n):
        if counts[b, 0] < 0 or sparse[b]:  # record buffer too small, or huge ids: redo this tile alone
            tile = dict(seed=seed, index=int(indices[b]), types=types[b] if typed else None,
                        ignore=None if ignore is None else ignore[b])
            if images is None:  # (a tile whose records were too small is untouched)
                if b in kept:
                    out[b] = kept[b]
                r = insmix_into(out[b], labels[b], bank, config, max_value=max_value, **tile)
            else:
                r = insmix(images[b], labels[b], bank, config, **tile)
                out_images[b] = r.image
            out_labels[b] = r.labels
            if masks:
                paste_masks[b], shuffled[b] = r.paste_mask, r.shuffled_mask
            if wide is not None:
                wide[b] = r.labels
            if typed:
                out_types[b] = r.types
            pastes.append(r.pastes)
            mv.append(r.plan.moves)
            continue
        pastes.append(paste_records(rec_i[b], rec_f[b], int(counts[b, 0])))
        mv.append(moves[b, :counts[b, 1]].copy())
    return InsMixBatchResult(out_images, out_labels if wide is None else wide, paste_masks, shuffled, pastes, mv,
                             indices, seed, config.patch,
                             types=out_types if typed else None, fingerprints=fingerprints)


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
