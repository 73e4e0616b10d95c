"""Nucleus classes and ignore regions at the API boundary (SPEC §3b).

A typed tile comes with ``types``: an H×W integer map, 0 on background and one class
id ≥ 1 on every pixel of an instance (HoVer-Net / CoNIC convention). An ignore mask
is an H×W boolean map of regions nothing may be pasted onto or taken from (e.g.
NuInsSeg's vague areas, ``NuInsSegDataset.ignore_mask(k)``).

:func:`check_types` validates a type map against its label map in one pass
(:func:`insmix_fast.kernels.classes.fill_class_lut`) and returns the per-id class
table the kernels read; :func:`check_ignore` validates an ignore mask;
:func:`check_class_names` a list of class names. Shape and dtype problems raise
:class:`~insmix_fast.errors.InputError`, content problems
:class:`~insmix_fast.errors.LabelMapError`; messages name the argument, the
instance id, the class and the pixel.
"""

from __future__ import annotations

import numpy as np

from .config import InsMixConfig
from .errors import BankError, ConfigError, InputError, InputTypeError, LabelMapError
from .kernels.classes import (TYPES_MIXED, TYPES_OK, TYPES_ON_BACKGROUND, TYPES_OUTSIDE, class_luts,
                              fill_class_lut)
from .threads import numba_parallel

__all__ = ["as_types_map", "check_types", "check_batch_types", "check_ignore", "check_class_names", "check_class_mode",
           "types_problem", "UNBOUNDED_CLASSES"]

#: ``n_classes`` when no bank bounds the class ids (any id ≥ 1 is accepted).
UNBOUNDED_CLASSES = int(np.iinfo(np.int32).max)

_INT32 = np.iinfo(np.int32)


def as_types_map(types, shape: tuple, name: str = "types") -> np.ndarray:
    """``types`` as a C-contiguous int32 array of ``shape`` (any integer dtype within int32);
    raises :class:`InputTypeError` / :class:`InputError` naming ``name``. Content is checked by
    :func:`check_types`."""
    if not isinstance(types, np.ndarray):
        if hasattr(types, "__array__") and not isinstance(types, (list, tuple)):
            types = np.asarray(types)
        else:
            raise InputTypeError(f"{name} must be a numpy array (H×W class ids), got {type(types).__name__}")
    if types.dtype == np.bool_ or not np.issubdtype(types.dtype, np.integer):
        raise InputError(f"{name} must be an integer class map (0 = background), got dtype {types.dtype}")
    if tuple(types.shape) != tuple(shape):
        raise InputError(f"{name} shape {types.shape} does not match the labels' shape {tuple(shape)}")
    if types.dtype != np.int32 and types.size:
        lo, hi = int(types.min()), int(types.max())
        if lo < _INT32.min or hi > _INT32.max:
            raise InputError(f"{name} holds class ids outside the int32 range ({lo}..{hi})")
    return np.ascontiguousarray(types, dtype=np.int32)


def types_problem(verdict: tuple, name: str, n_classes: int, ids: np.ndarray | None = None,
                  class_names: tuple[str, ...] | None = None) -> LabelMapError:
    """The :class:`LabelMapError` for a :func:`fill_class_lut` verdict ``(code, row, col, id,
    class, other)``; ``ids`` maps the kernels' dense ids back to the caller's."""
    code, y, x, v, t, prev = (int(a) for a in verdict)
    if ids is not None and v:
        v = int(ids[v])
    at = f"row {y}, column {x}"
    if code == TYPES_ON_BACKGROUND:
        return LabelMapError(f"{name}: a background pixel ({at}) carries class {t}; the type map must be 0 wherever "
                             "labels is 0")
    if code == TYPES_OUTSIDE:
        known = f"1..{n_classes}" + (f" ({', '.join(class_names[1:])})" if class_names else "")
        return LabelMapError(f"{name}: class id {t} of instance id {v} ({at}) is not one of the bank's classes "
                             f"{known}")
    if code == TYPES_MIXED:
        return LabelMapError(f"{name}: instance id {v} carries several classes ({prev} and {t}, e.g. at {at}); "
                             "every pixel of an instance must have the same class")
    return LabelMapError(f"{name}: instance id {v} has class {t} at {at}; every instance pixel needs a class ≥ 1 "
                         "(pass types=None for an untyped tile)")


def check_types(types, labels: np.ndarray, n_classes: int = UNBOUNDED_CLASSES, *, max_id: int | None = None,
                name: str = "types", ids: np.ndarray | None = None,
                class_names: tuple[str, ...] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """``(types, lut)``: ``types`` as a C-contiguous H×W int32 map and ``lut[id]`` (int32,
    length ``max_id + 1``) the class of every instance of ``labels`` (checked int32 map).

    Raises :class:`InputError` for a wrong type, dtype or shape and :class:`LabelMapError`
    for a class on background, an instance pixel of class 0, a class id above
    ``n_classes`` or an instance with several classes (``ids``: the caller's ids of the
    dense ``labels``, for the message).
    """
    types = as_types_map(types, labels.shape, name)
    if max_id is None:
        max_id = int(labels.max()) if labels.size else 0
    lut = np.zeros(max_id + 1, np.int32)
    verdict = fill_class_lut(labels, types, np.int64(n_classes), lut)
    if verdict[0] != TYPES_OK:
        raise types_problem(verdict, name, n_classes, ids, class_names)
    return types, lut


def check_batch_types(types, labels: np.ndarray, n_classes: int, width: int,
                      class_names: tuple[str, ...] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """:func:`check_types` for an N×H×W batch: ``(types N×H×W int32, luts (N, width) int32)``
    (``width`` > every tile's largest id); the message names the first bad tile."""
    types = as_types_map(types, labels.shape, "types")
    with numba_parallel():  # a parallel kernel: fork-safe pool, one launch at a time if the layer needs it
        luts, verdicts = class_luts(labels, types, np.int64(n_classes), np.int64(width))
    bad = np.flatnonzero(verdicts[:, 0] != TYPES_OK)
    if bad.size:
        b = int(bad[0])
        raise types_problem(verdicts[b], f"types[{b}]", n_classes, None, class_names)
    return types, luts


def check_ignore(ignore, shape: tuple, name: str = "ignore") -> np.ndarray:
    """An ignore mask as a C-contiguous bool array of ``shape`` (bool, or integers with
    non-zero = ignore); raises :class:`InputError` / :class:`InputTypeError`."""
    if not isinstance(ignore, np.ndarray):
        if hasattr(ignore, "__array__") and not isinstance(ignore, (list, tuple)):
            ignore = np.asarray(ignore)
        else:
            raise InputTypeError(f"{name} must be a numpy array (H×W bool), got {type(ignore).__name__}")
    if tuple(ignore.shape) != tuple(shape):
        raise InputError(f"{name} shape {ignore.shape} does not match the labels' shape {tuple(shape)}")
    if ignore.dtype == np.bool_:
        return np.ascontiguousarray(ignore)
    if not np.issubdtype(ignore.dtype, np.integer):
        raise InputError(f"{name} must be a bool mask (True = ignore), got dtype {ignore.dtype}")
    return np.ascontiguousarray(ignore != 0)


def check_class_names(class_names, name: str = "class_names") -> tuple[str, ...]:
    """``class_names`` as a tuple of ≥ 2 strings whose first entry is ``"background"``
    (class id = index); raises :class:`BankError`."""
    if isinstance(class_names, str):
        raise BankError(f"{name} must be a sequence of strings, got the string {class_names!r}")
    try:
        names = tuple(class_names)
    except TypeError:
        raise BankError(f"{name} must be a sequence of strings, got {class_names!r}") from None
    if len(names) < 2 or not all(isinstance(n, str) for n in names) or names[0] != "background":
        raise BankError(f"{name} must list 'background' (class 0) then at least one class name, got {names!r}")
    return names


def check_class_mode(config: InsMixConfig, bank_typed: bool, has_types: bool) -> None:
    """Refuse template-class requests the inputs cannot serve (the CPU and GPU paths both ask).

    ``bank_typed``: the templates carry classes; ``has_types``: the call got ``types``.
    Raises :class:`ConfigError` (``"same"``/``"balanced"`` with an untyped bank, ``"same"``
    without ``types``) or :class:`BankError` (``types`` with an untyped bank: pasted nuclei
    would have no class).
    """
    if not config.foreground:
        return
    mode = config.template_class
    if mode != "any" and not bank_typed:
        raise ConfigError(f"InsMixConfig.template_class={mode!r} needs a typed instance bank (built from "
                          "(image, labels, types) samples); this bank has no classes")
    if mode == "same" and not has_types:
        raise ConfigError("InsMixConfig.template_class='same' needs the tile's classes: pass types=")
    if has_types and not bank_typed:
        raise BankError("types were given but the instance bank is untyped, so pasted nuclei would have no class: "
                        "build the bank from typed (image, labels, types) samples")
