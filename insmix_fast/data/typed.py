"""Typed samples: checks and repairs shared by every data-set reader.

A typed sample is ``(image H×W×3 uint8, labels H×W int32, types H×W int32)``:
``types`` is 0 on background and the class id (≥ 1) on every pixel of an
instance (HoVer-Net / CoNIC convention); ``class_names[c]`` names class ``c``
and ``class_names[0] == "background"``. An untyped sample is ``(image, labels)``.

Every reader ends in :func:`finish_sample`, which applies one policy to all
formats:

1. ``types`` (when given) is checked against ``labels``: a class id outside
   ``class_names``, an instance whose pixels carry several classes, an instance
   pixel of class 0 or a background pixel with a class raise
   :class:`~insmix_fast.errors.LabelMapError` naming the sample (file and index)
   and the instance id as stored in the file.
2. Topology, as :class:`~insmix_fast.data.folder.FolderDataset` does it: with
   ``fix_labels=True`` the map is repaired with
   :func:`~insmix_fast.data.labels.clean_labels` (split pieces get new ids and
   keep their class; enclosed holes are filled with the enclosing id and take its
   class); otherwise, with ``check=True``, a split instance or a hole raises
   :class:`~insmix_fast.errors.LabelMapError`.
3. Ids are renumbered 1..K in the order of their old ids
   (:func:`~insmix_fast.data.labels.relabel_sequential`); ``types`` follows.

Nothing half-read is returned: a reader either returns the whole checked sample
or raises.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ..errors import LabelMapError, ReaderError
from ..validation import check_bool, check_image, check_labels
from .base import IndexedDataset
from .labels import clean_labels, find_label_problems, relabel_sequential

__all__ = [
    "finish_sample",
    "instance_classes",
    "paint_classes",
    "as_int_map",
    "check_class_names",
    "merge_lut",
    "LayoutDataset",
]

_INT32_MAX = int(np.iinfo(np.int32).max)


def as_int_map(arr, what: str, *, error: type[Exception] = ReaderError) -> np.ndarray:
    """An integer array read from a file as non-negative int32 (same shape).

    Accepts any integer dtype, and floats whose values are all finite integers
    (MATLAB ``.mat`` files and PanNuke's ``masks.npy`` store ids as float64).

    Raises:
        ReaderError (or ``error``): bool/non-numeric dtype, non-integral or
            non-finite floats, negative values, values above int32.
    """
    arr = np.asarray(arr)
    if arr.dtype == np.bool_ or not (np.issubdtype(arr.dtype, np.integer) or np.issubdtype(arr.dtype, np.floating)):
        raise error(f"{what}: expected integer values, got dtype {arr.dtype}")
    if np.issubdtype(arr.dtype, np.floating):
        if arr.size and not np.all(np.isfinite(arr)):
            raise error(f"{what}: holds NaN or infinite values")
        if arr.size and not np.array_equal(arr, np.round(arr)):
            raise error(f"{what}: holds non-integral values (dtype {arr.dtype}); ids and classes must be integers")
    if arr.size:
        lo, hi = arr.min(), arr.max()
        if lo < 0:
            raise error(f"{what}: holds negative values (min {lo}); ids and classes must be ≥ 0")
        if hi > _INT32_MAX:
            raise error(f"{what}: holds values above the int32 range (max {hi})")
    return np.ascontiguousarray(arr, dtype=np.int32)


def check_class_names(class_names, name: str = "class_names") -> tuple[str, ...]:
    """``class_names`` as a tuple of ≥ 2 strings whose first entry is ``"background"``."""
    try:
        names = tuple(class_names)
    except TypeError:
        raise ReaderError(f"{name} must be a sequence of strings, got {class_names!r}") from None
    if len(names) < 2 or not all(isinstance(n, str) for n in names) or names[0] != "background":
        raise ReaderError(
            f"{name} must list 'background' (class 0) then at least one class name, got {names!r}"
        )
    return names


def merge_lut(mapping, n_classes: int, name: str = "merge") -> np.ndarray:
    """Lookup table (int32, length ``n_classes + 1``) of a class merge ``{old: new}``; unlisted classes keep their id."""
    lut = np.arange(n_classes + 1, dtype=np.int32)
    for old, new in dict(mapping).items():
        if not (0 < int(old) <= n_classes and 0 < int(new)):
            raise ReaderError(f"{name}: cannot map class {old} to {new} (classes are 1..{n_classes})")
        lut[int(old)] = int(new)
    return lut


def _first_pixel(mask: np.ndarray) -> str:
    r, c = np.unravel_index(int(np.flatnonzero(mask.ravel())[0]), mask.shape)
    return f"row {r}, column {c}"


def instance_classes(labels: np.ndarray, types: np.ndarray, n_classes: int, name: str) -> tuple[np.ndarray, np.ndarray]:
    """The one class of every instance of ``labels``.

    Args:
        labels: H×W int32 instance map.
        types: H×W int32 class map, same shape.
        n_classes: largest valid class id (``len(class_names) - 1``).
        name: the sample, for messages (file and index).

    Returns:
        ``(ids, classes)``: the sorted instance ids present and the class of each.

    Raises:
        LabelMapError: a class id outside ``0..n_classes``, an instance whose pixels
            carry several classes (names the id and the pixel count of each class),
            an instance with class-0 pixels, a background pixel with a class.
    """
    if types.shape != labels.shape:
        raise LabelMapError(f"{name}: type map shape {types.shape} does not match the instance map's {labels.shape}")
    if types.size == 0:
        return np.zeros(0, np.int32), np.zeros(0, np.int32)
    top = int(types.max())
    if top > n_classes:
        bad = types > n_classes
        ids = np.unique(labels[bad])
        ids = ids[ids > 0]
        where = f"instance id(s) {', '.join(str(int(i)) for i in ids[:10])}" if ids.size else "background"
        raise LabelMapError(
            f"{name}: class id {top} is outside the data set's classes 1..{n_classes} "
            f"(at {_first_pixel(bad)}; {where})"
        )
    fg = labels > 0
    stray = (~fg) & (types > 0)
    if stray.any():
        raise LabelMapError(
            f"{name}: {int(stray.sum())} background pixel(s) carry a class (e.g. class {int(types[stray][0])} at "
            f"{_first_pixel(stray)}); the type map must be 0 wherever the instance map is 0"
        )
    seq, old_ids = relabel_sequential(labels)
    k = old_ids.size
    if k == 0:
        return old_ids, np.zeros(0, np.int32)
    counts = np.bincount(seq[fg].astype(np.int64) * (top + 1) + types[fg], minlength=(k + 1) * (top + 1))
    counts = counts.reshape(k + 1, top + 1)[1:]
    n_cls = np.count_nonzero(counts[:, 1:], axis=1)
    untyped = counts[:, 0] > 0
    mixed = (n_cls + untyped) > 1
    if mixed.any():
        rows = np.flatnonzero(mixed)
        parts = []
        for r in rows[:5]:
            cls = np.flatnonzero(counts[r])
            parts.append(
                f"id {int(old_ids[r])} ("
                + ", ".join(f"class {int(c)}: {int(counts[r, c])} px" for c in cls)
                + ")"
            )
        more = f" and {rows.size - 5} more" if rows.size > 5 else ""
        raise LabelMapError(
            f"{name}: instance(s) whose pixels carry several classes: " + "; ".join(parts) + more
            + ". Every pixel of an instance must have the same class."
        )
    if untyped.any():
        rows = np.flatnonzero(untyped)
        ids = ", ".join(str(int(old_ids[r])) for r in rows[:10])
        more = f" and {rows.size - 10} more" if rows.size > 10 else ""
        raise LabelMapError(f"{name}: instance id(s) {ids}{more} have class 0 (no class); every instance needs a class ≥ 1")
    classes = np.argmax(counts[:, 1:] > 0, axis=1).astype(np.int32) + 1
    return old_ids, classes


def paint_classes(labels: np.ndarray, ids: np.ndarray, classes: np.ndarray, name: str, what: str = "class list") -> np.ndarray:
    """Type map from a per-instance class list: ``types = class of id`` on each instance, 0 elsewhere.

    Args:
        labels: H×W int32 instance map.
        ids: instance ids (1-D); ``classes[i]`` is the class of ``ids[i]``.
            Ids listed but absent from ``labels`` are ignored; an id listed twice
            must have the same class both times.
        classes: 1-D, same length as ``ids``.
        name: the sample, for messages.
        what: what the list is called in the file (e.g. ``"'id'/'class'"``).

    Raises:
        LabelMapError: an instance of ``labels`` missing from ``ids``; an id listed
            twice with different classes; ids/classes of different lengths.
    """
    ids = np.asarray(ids, dtype=np.int64).ravel()
    classes = np.asarray(classes, dtype=np.int64).ravel()
    if ids.shape != classes.shape:
        raise LabelMapError(f"{name}: {what} has {ids.size} ids but {classes.size} classes")
    top = max(int(labels.max()) if labels.size else 0, int(ids.max()) if ids.size else 0)
    lut = np.full(top + 1, -1, np.int64)
    lut[0] = 0
    if ids.size:
        keep = ids > 0
        ids_k, cls_k = ids[keep], classes[keep]
        order = np.argsort(ids_k, kind="stable")
        ids_s, cls_s = ids_k[order], cls_k[order]
        dup = (ids_s[1:] == ids_s[:-1]) & (cls_s[1:] != cls_s[:-1])
        if dup.any():
            i = int(ids_s[1:][dup][0])
            found = sorted({int(c) for c in cls_s[ids_s == i]})
            raise LabelMapError(f"{name}: instance id {i} is listed more than once in {what} with different classes {found}")
        lut[ids_s] = cls_s
    present = np.zeros(top + 1, bool)
    present[labels.ravel()] = True
    present[0] = False
    missing = np.flatnonzero(present & (lut < 0))
    if missing.size:
        shown = ", ".join(str(int(i)) for i in missing[:10])
        more = f" and {missing.size - 10} more" if missing.size > 10 else ""
        raise LabelMapError(f"{name}: instance id(s) {shown}{more} of the instance map have no entry in {what}")
    lut[lut < 0] = 0
    return lut.astype(np.int32)[labels]


def finish_sample(
    image,
    labels,
    types=None,
    class_names: tuple[str, ...] | None = None,
    *,
    fix_labels: bool = False,
    check: bool = True,
    name: str = "sample",
):
    """Check (and optionally repair) one sample; the last step of every reader.

    See the module docstring for the policy.

    Args:
        image: H×W×3 uint8.
        labels: H×W integer instance map (ids as stored; 0 = background).
        types: H×W integer class map, or None for an untyped sample.
        class_names: required with ``types`` (``class_names[0] == "background"``).
        fix_labels: repair topology instead of raising.
        check: check topology (ignored when ``fix_labels``).
        name: the sample in messages, e.g. ``"…/masks.npy, sample 17"``.

    Returns:
        ``(image, labels)`` or ``(image, labels, types)``; ids are 1..K, int32.
    """
    image = check_image(image, f"{name} image")
    labels = check_labels(labels, image.shape[:2], f"{name} labels")
    if types is not None:
        if class_names is None:
            raise ReaderError(f"{name}: a type map needs class_names")
        types = as_int_map(types, f"{name} type map", error=LabelMapError)
        instance_classes(labels, types, len(class_names) - 1, name)
    if fix_labels:
        fixed = clean_labels(labels)
    else:
        if check:
            problems = find_label_problems(labels)
            if not problems.ok:
                raise LabelMapError(
                    f"{name}: {problems.describe()}. Each nucleus must be one connected piece without holes; "
                    "pass fix_labels=True to repair (split pieces get new ids, holes are filled) or check=False."
                )
        fixed = labels
    seq, _ = relabel_sequential(fixed)
    if types is None:
        return image, seq
    k = int(seq.max()) if seq.size else 0
    lut = np.zeros(k + 1, np.int32)
    # every instance has one class (checked above), and a new id's originally-foreground
    # pixels all come from one old instance (clean_labels never merges ids), so any of
    # its pixels gives its class; pixels of filled holes (class 0) do not count.
    src = (labels > 0) & (seq > 0)
    lut[seq[src]] = types[src]
    return image, seq, lut[seq]


class LayoutDataset(IndexedDataset):
    """Base of the readers of public data-set layouts: a root folder and the shared policy.

    Subclasses call :meth:`_open` first in ``__init__`` and end ``read`` with
    :meth:`_finish`.
    """

    root: Path
    fix_labels: bool = False
    check: bool = True

    def _open(self, root, find, expected: str, fix_labels: bool, check: bool):
        """Set ``root``, ``fix_labels`` and ``check``; return ``find(root)`` or raise ``"<root>: <expected>"``."""
        self.root = Path(os.fspath(root))
        self.fix_labels = check_bool("fix_labels", fix_labels)
        self.check = check_bool("check", check)
        layout = find(self.root)
        if layout is None:
            raise ReaderError(f"{self.root}: {expected}")
        return layout

    def _mmap(self, path: Path, opened: np.ndarray | None = None) -> np.ndarray:
        """The memory map of ``path``, opened once per process (``opened``: one already checked)."""
        cache = self.__dict__.setdefault("_mmaps", {})
        if opened is not None:
            cache[path] = opened
        if path not in cache:
            cache[path] = np.load(str(path), mmap_mode="r", allow_pickle=False)
        return cache[path]

    def __getstate__(self) -> dict:
        # a pickled np.memmap carries its whole data: send paths to worker processes, not arrays
        state = self.__dict__.copy()
        state.pop("_mmaps", None)
        return state

    def _finish(self, image, labels, types, name: str):
        """:func:`finish_sample` with this data set's classes and topology policy."""
        return finish_sample(image, labels, types, self.class_names, fix_labels=self.fix_labels, check=self.check,
                             name=name)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({str(self.root)!r}, n={len(self)})"
