"""PanNuke (Gamper et al. 2019/2020): 256×256 tiles of 19 tissues, five nucleus classes.

Layout of the official download (``Fold 2``, ``Fold 3`` alike)::

    Fold 1/images/fold1/images.npy   N×256×256×3 float64, values 0..255
    Fold 1/images/fold1/types.npy    N tissue names ("Breast", "Colon", ...)
    Fold 1/masks/fold1/masks.npy     N×256×256×6 float64

``masks[..., c]`` for ``c = 0..4`` holds the instances of class Neoplastic,
Inflammatory, Connective, Dead and Epithelial, each channel numbering its
instances from 1 again; channel 5 is background and is not read. A folder
holding ``images.npy``, ``masks.npy`` and ``types.npy`` side by side is read too.

Reading (:class:`PanNukeDataset`): the ``.npy`` files are memory-mapped (a fold's
``masks.npy`` is ~3 GB) and one sample is read per index. Instance ids are made
unique across channels, channel by channel in increasing order of their ids;
``types`` is ``c + 1`` on the pixels of channel ``c``. Where channels overlap, the
later channel wins — the rule of PanNuke's own evaluation code (``binarize`` in
PanNuke-metrics), so that instance maps equal the ones its bPQ is computed on.
An instance left in pieces by that is a topology problem like any other
(``fix_labels``/``check``, see :mod:`insmix_fast.data.typed`). Float images must
hold integers 0..255 (to within 0.01); they are rounded to uint8.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from ..errors import LabelMapError, ReaderError
from .base import resolve_index
from .layout import as_path, child_dir, open_npy, select_parts, subdirs
from .typed import LayoutDataset, as_int_map

__all__ = ["PanNukeDataset", "find_pannuke_layout", "PANNUKE_CLASSES", "image_to_uint8"]

#: Class names of PanNuke (index = class id = mask channel + 1).
PANNUKE_CLASSES = ("background", "Neoplastic", "Inflammatory", "Connective", "Dead", "Epithelial")

_FOLD_RE = re.compile(r"^fold[ _-]?(\d+)$", re.IGNORECASE)
_FILES = ("images.npy", "masks.npy", "types.npy")


def image_to_uint8(arr: np.ndarray, what: str) -> np.ndarray:
    """An H×W×3 image stored as floats 0..255 (or any integer type) as uint8.

    Raises:
        ReaderError: NaN/inf, values outside 0..255 or not integers to within 0.01
            (e.g. images scaled to 0..1).
    """
    arr = np.asarray(arr)
    if arr.dtype == np.uint8:
        return np.ascontiguousarray(arr)
    if np.issubdtype(arr.dtype, np.floating):
        if not np.all(np.isfinite(arr)):
            raise ReaderError(f"{what}: image holds NaN or infinite values")
        r = np.round(arr)
        if arr.size and (r.min() < 0 or r.max() > 255 or np.max(np.abs(arr - r)) > 0.01):
            raise ReaderError(
                f"{what}: float image values must be integers 0..255 (found min {arr.min():g}, max {arr.max():g}); "
                "an image scaled to 0..1 must be multiplied by 255 first"
            )
        return r.astype(np.uint8)
    if np.issubdtype(arr.dtype, np.integer) and arr.dtype != np.bool_:
        if arr.size and (arr.min() < 0 or arr.max() > 255):
            raise ReaderError(f"{what}: image values must lie in 0..255 (found {arr.min()}..{arr.max()})")
        return arr.astype(np.uint8)
    raise ReaderError(f"{what}: unsupported image dtype {arr.dtype}")


def _find_npy(d: Path, kind: str, name: str) -> Path | None:
    """``d/<kind>/fold*/<name>`` (official) or ``d/<kind>/<name>``; None when absent."""
    top = child_dir(d, kind)
    if top is None:
        return None
    if (top / name).is_file():
        return top / name
    for sub in subdirs(top):
        if _FOLD_RE.match(sub.name) and (sub / name).is_file():
            return sub / name
    return None


def _fold_files(d: Path) -> tuple[Path | None, Path | None, Path | None] | None:
    """(images, masks, types) paths of one fold folder, or None when ``d`` is no PanNuke fold."""
    if (d / "images.npy").is_file() and (d / "masks.npy").is_file():
        flat = tuple(d / n if (d / n).is_file() else None for n in _FILES)
        return flat  # type: ignore[return-value]
    images = _find_npy(d, "images", "images.npy")
    masks = _find_npy(d, "masks", "masks.npy")
    types = _find_npy(d, "images", "types.npy")
    if images is None and masks is None:
        return None
    return images, masks, types


def _fold_number(d: Path) -> int | None:
    m = _FOLD_RE.match(d.name)
    return int(m.group(1)) if m else None


def find_pannuke_layout(root) -> list[tuple[int | None, Path, tuple]] | None:
    """The folds under ``root``: ``[(fold number or None, folder, (images, masks, types))]``.

    ``root`` is a fold folder (``Fold 1``), a folder holding ``Fold 1``..``Fold 3``,
    or a folder with ``images.npy`` + ``masks.npy`` side by side. A file that is
    missing is None (the reader raises). None when ``root`` is none of these.
    """
    root = as_path(root)
    if not root.is_dir():
        return None
    own = _fold_files(root)
    if own is not None:
        return [(_fold_number(root), root, own)]
    folds = []
    for sub in subdirs(root):
        n = _fold_number(sub)
        if n is not None:
            files = _fold_files(sub)
            if files is not None:
                folds.append((n, sub, files))
    return sorted(folds, key=lambda f: f[0]) or None


class PanNukeDataset(LayoutDataset):
    """PanNuke folds as typed samples ``(image, labels, types)`` (see the module docstring).

    Args:
        root: a fold folder, the folder holding the folds, or a folder with
            ``images.npy``/``masks.npy``/``types.npy``.
        folds: fold numbers to read (an int or several), default all found, in
            increasing order.
        fix_labels, check: topology policy (:func:`~insmix_fast.data.typed.finish_sample`).

    Attributes:
        class_names: :data:`PANNUKE_CLASSES`.
        folds: the fold numbers read (None for a folder without a fold number).

    Raises:
        ReaderError: not a PanNuke layout, a fold missing a file, a requested fold
            not found, arrays of different lengths or sizes.
    """

    class_names = PANNUKE_CLASSES

    def __init__(self, root, folds: int | Iterable[int] | None = None, fix_labels: bool = False, check: bool = True):
        layout = self._open(
            root, find_pannuke_layout,
            "not a PanNuke folder; expected 'Fold N/images/foldN/images.npy' (+ types.npy) and "
            "'Fold N/masks/foldN/masks.npy', a folder holding such 'Fold N' folders, or images.npy + masks.npy + "
            "types.npy side by side",
            fix_labels, check,
        )
        layout = select_parts(layout, folds, "fold", self.root)
        self.folds = [n for n, *_ in layout]
        self._parts = []
        for n, d, (img_p, mask_p, type_p) in layout:
            for p, name in zip((img_p, mask_p, type_p), _FILES):
                if p is None:
                    raise ReaderError(f"{d}: PanNuke fold{'' if n is None else ' ' + str(n)} has no {name} "
                                      f"(expected at images/fold{n or 'N'}/ or masks/fold{n or 'N'}/)")
            images = open_npy(img_p, "PanNuke images", 4, (3,))
            masks = open_npy(mask_p, "PanNuke masks", 4, (6,))
            tissues = open_npy(type_p, "PanNuke tissue types", 1)
            if images.shape[:3] != masks.shape[:3] or tissues.shape[0] != images.shape[0]:
                raise ReaderError(
                    f"{d}: image/mask count mismatch: images.npy {images.shape}, masks.npy {masks.shape}, "
                    f"types.npy {tissues.shape} must describe the same N tiles of the same size"
                )
            self._mmap(img_p, images)
            self._mmap(mask_p, masks)
            self._parts.append((n, img_p, mask_p, images.shape[0], np.asarray(tissues).astype(str)))
        self._offsets = np.cumsum([0] + [p[3] for p in self._parts])

    def __len__(self) -> int:
        return int(self._offsets[-1])

    def __repr__(self) -> str:
        return f"PanNukeDataset({str(self.root)!r}, folds={self.folds}, n={len(self)})"

    def _locate(self, k: int) -> tuple[tuple, int]:
        part = int(np.searchsorted(self._offsets, k, side="right")) - 1
        return self._parts[part], k - int(self._offsets[part])

    def tissue(self, k: int) -> str:
        """Tissue name of sample ``k`` (from ``types.npy``)."""
        part, i = self._locate(self._index(k))
        return str(part[4][i])

    def fold(self, k: int) -> int | None:
        """Fold number of sample ``k``."""
        part, _ = self._locate(self._index(k))
        return part[0]

    @property
    def tissues(self) -> list[str]:
        """Tissue name of every sample, in order."""
        return [str(t) for p in self._parts for t in p[4]]

    def _index(self, k) -> int:
        return resolve_index(k, len(self), type(self).__name__)

    def read(self, k: int):
        (_, img_p, mask_p, _, _), i = self._locate(k)
        name = f"{mask_p}, sample {i}"
        image = image_to_uint8(self._mmap(img_p)[i], f"{img_p}, sample {i}")
        mask = np.asarray(self._mmap(mask_p)[i])
        try:
            chans = as_int_map(mask[..., :5], name, error=LabelMapError)
        except LabelMapError:  # say which channel
            for c in range(5):
                as_int_map(mask[..., c], f"{name}, channel {c} ({PANNUKE_CLASSES[c + 1]})", error=LabelMapError)
            raise
        labels = np.zeros(mask.shape[:2], np.int32)
        types = np.zeros(mask.shape[:2], np.int32)
        offset = 0
        for c in range(5):
            ch = chans[..., c]
            top = int(ch.max())
            if top == 0:
                continue
            lut = np.zeros(top + 1, np.int32)
            lut[ch.ravel()] = 1
            lut[0] = 0
            n = int(lut.sum())
            lut[lut > 0] = np.arange(offset + 1, offset + 1 + n, dtype=np.int32)  # increasing old id order
            on = ch > 0
            labels[on] = lut[ch[on]]  # later channels win where channels overlap (as PanNuke's binarize)
            types[on] = c + 1
            offset += n
        return self._finish(image, labels, types, name)
