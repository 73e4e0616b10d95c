"""CoNIC (2022 challenge) and Lizard (its source): colon tiles with six nucleus classes.

**CoNIC** — one folder::

    images.npy      N×256×256×3 uint8
    labels.npy      N×256×256×2: [..., 0] instance ids, [..., 1] class 0..6 (any integer dtype)
    counts.csv      N rows: neutrophil,epithelial,lymphocyte,plasma,eosinophil,connective (optional)
    patch_info.csv  N rows: patch name, e.g. "consep_1-0000" (optional)

Both arrays are memory-mapped; one tile is read per index.

**Lizard** — the official download::

    Lizard_Images1/*.png   Lizard_Images2/*.png   (each possibly nested once more)
    Lizard_Labels/Labels/*.mat                    inst_map, id, class, bbox, centroid
    Lizard_Labels/info.csv                        Filename, Source, Split (optional)

A nucleus's class is ``class[i]`` for the row ``i`` with ``id[i]`` equal to its
instance id — found through ``id``, never by row order.

Both use :data:`CONIC_CLASSES` (neutrophil, epithelial, lymphocyte, plasma,
eosinophil, connective = 1..6).
"""

from __future__ import annotations

import csv
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from ..errors import ReaderError
from .base import resolve_index
from .layout import as_path, child_dir, index_files, list_names, open_npy, pair_by_stem, subdirs
from .matlabels import LIZARD_CLASSES, read_mat_sample
from .typed import LayoutDataset

__all__ = ["CoNICDataset", "LizardDataset", "find_conic_layout", "find_lizard_layout", "CONIC_CLASSES"]

#: Class names of CoNIC and Lizard (index = class id).
CONIC_CLASSES = LIZARD_CLASSES


def _read_csv(path: Path) -> tuple[list[str], list[list[str]]]:
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            rows = [r for r in csv.reader(f) if r]
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise ReaderError(f"{path}: cannot read the CSV file ({exc})") from exc
    if not rows:
        raise ReaderError(f"{path}: the CSV file is empty")
    return [h.strip() for h in rows[0]], rows[1:]


def find_conic_layout(root) -> Path | None:
    """``root`` when it holds CoNIC's ``labels.npy`` (or ``images.npy`` with CoNIC's CSV files), else None.

    A folder missing one of the arrays is still recognised, so that the reader can
    say which file is missing.
    """
    root = as_path(root)
    if (root / "labels.npy").is_file():
        return root
    if (root / "images.npy").is_file() and ((root / "counts.csv").is_file() or (root / "patch_info.csv").is_file()):
        return root
    return None


class CoNICDataset(LayoutDataset):
    """CoNIC tiles as typed samples ``(image, labels, types)`` (see the module docstring).

    Args:
        root: the folder with ``images.npy`` and ``labels.npy``.
        fix_labels, check: topology policy (:func:`~insmix_fast.data.typed.finish_sample`).

    Attributes:
        class_names: :data:`CONIC_CLASSES`.
        names: patch names from ``patch_info.csv``, or None without it.

    Raises:
        ReaderError: a missing array, arrays of different lengths or sizes, images
            that are not uint8, labels that are not integers, a ``counts.csv``/
            ``patch_info.csv`` whose row count or columns do not fit.
    """

    class_names = CONIC_CLASSES

    def __init__(self, root, fix_labels: bool = False, check: bool = True) -> None:
        self._open(root, lambda r: r if r.is_dir() else None, "folder not found", fix_labels, check)
        self._mmap(self.root / "images.npy", open_npy(self.root / "images.npy", "CoNIC images", 4, (3,)))
        self._mmap(self.root / "labels.npy", open_npy(self.root / "labels.npy", "CoNIC labels", 4, (2,)))
        if self.images.dtype != np.uint8:
            raise ReaderError(f"{self.root / 'images.npy'}: CoNIC images must be uint8, got {self.images.dtype}")
        if self.labels.dtype == np.bool_ or not np.issubdtype(self.labels.dtype, np.integer):
            raise ReaderError(f"{self.root / 'labels.npy'}: CoNIC labels must be integers, got {self.labels.dtype}")
        if self.images.shape[:3] != self.labels.shape[:3]:
            raise ReaderError(
                f"{self.root}: image/label count mismatch: images.npy {self.images.shape} and labels.npy "
                f"{self.labels.shape} must hold the same N tiles of the same size"
            )
        n = self.images.shape[0]
        self._counts = None
        counts_path = self.root / "counts.csv"
        if counts_path.is_file():
            header, rows = _read_csv(counts_path)
            want = list(CONIC_CLASSES[1:])
            if [h.lower() for h in header] != want:
                raise ReaderError(f"{counts_path}: columns must be {','.join(want)}, got {','.join(header)}")
            if len(rows) != n:
                raise ReaderError(f"{counts_path}: {len(rows)} rows for {n} tiles in images.npy (count mismatch)")
            try:
                self._counts = np.asarray([[int(v) for v in r] for r in rows], np.int64)
            except ValueError as exc:
                raise ReaderError(f"{counts_path}: counts must be integers ({exc})") from None
        self.names = None
        info_path = self.root / "patch_info.csv"
        if info_path.is_file():
            _, rows = _read_csv(info_path)
            if len(rows) != n:
                raise ReaderError(f"{info_path}: {len(rows)} rows for {n} tiles in images.npy (count mismatch)")
            self.names = [r[0] for r in rows]

    @property
    def images(self) -> np.ndarray:
        """``images.npy``, memory-mapped (N×H×W×3 uint8)."""
        return self._mmap(self.root / "images.npy")

    @property
    def labels(self) -> np.ndarray:
        """``labels.npy``, memory-mapped (N×H×W×2)."""
        return self._mmap(self.root / "labels.npy")

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def counts(self, k: int) -> dict[str, int] | None:
        """Nuclei per class of tile ``k`` from ``counts.csv`` (CoNIC counts the central 224×224), or None."""
        if self._counts is None:
            return None
        row = self._counts[resolve_index(k, len(self), "CoNICDataset")]
        return {name: int(v) for name, v in zip(CONIC_CLASSES[1:], row)}

    def read(self, k: int):
        lab = np.asarray(self.labels[k])
        name = f"{self.root / 'labels.npy'}, sample {k}" + (f" ({self.names[k]})" if self.names else "")
        return self._finish(np.asarray(self.images[k]), lab[..., 0], lab[..., 1], name)


def _walk(root: Path, depth: int) -> list[Path]:
    """``root`` and its visible sub-folders down to ``depth`` levels, breadth first."""
    out, level = [root], [root]
    for _ in range(depth):
        level = [s for d in level for s in subdirs(d)]
        out += level
    return out


def find_lizard_layout(root) -> tuple[list[Path], Path, Path | None] | None:
    """``(image folders, labels folder, info.csv or None)`` of a Lizard download, or None.

    Looks (case-insensitively, up to two folders down) for ``Lizard_Labels/Labels``
    holding ``.mat`` files, and for folders named ``Lizard_Images*`` holding ``.png``.
    """
    root = as_path(root)
    if not root.is_dir():
        return None
    dirs = _walk(root, 2)
    labels = None
    for d in dirs:
        if d.name.lower() == "lizard_labels":
            lab = child_dir(d, "Labels")
            if lab is not None and any(f.suffix.lower() == ".mat" for f in lab.iterdir()):
                labels = lab
                break
    if labels is None:
        return None
    images = [d for d in _walk(root, 3) if d.name.lower().startswith("lizard_images")
              and any(f.suffix.lower() == ".png" for f in d.iterdir() if f.is_file())]
    info = labels.parent / "info.csv"
    return images, labels, info if info.is_file() else None


class LizardDataset(LayoutDataset):
    """Lizard images with their ``.mat`` labels as typed samples (see the module docstring).

    Args:
        root: the folder holding ``Lizard_Images1``, ``Lizard_Images2`` and
            ``Lizard_Labels`` (or a folder above them, at most two levels).
        split: ``info.csv`` split number(s) (1, 2, 3) to read, default all images.
        fix_labels, check: topology policy (:func:`~insmix_fast.data.typed.finish_sample`).

    Attributes:
        class_names: :data:`CONIC_CLASSES`.
        names, image_paths, label_paths: per sample, sorted by name.

    Raises:
        ReaderError: no Lizard layout or no image folder, an image without ``.mat``
            or the reverse, ``split`` without ``info.csv`` or naming no image.
    """

    class_names = CONIC_CLASSES

    def __init__(self, root, split: int | Iterable[int] | None = None, fix_labels: bool = False, check: bool = True):
        image_dirs, label_dir, info = self._open(
            root, find_lizard_layout, "not a Lizard folder; expected Lizard_Labels/Labels/*.mat and Lizard_Images*/*.png",
            fix_labels, check,
        )
        if not image_dirs:
            raise ReaderError(f"{self.root}: Lizard labels found at {label_dir}, but no Lizard_Images* folder with .png files")
        images: dict[str, Path] = {}
        for d in image_dirs:
            for stem, p in index_files(d, (".png",), "image").items():
                if stem in images:
                    raise ReaderError(f"{self.root}: image {stem!r} is in two folders: {images[stem]} and {p}")
                images[stem] = p
        labels = index_files(label_dir, (".mat",), "label")
        stems = pair_by_stem(images, labels, image_dirs[0].parent, label_dir, ".mat label file")
        self._info = {}
        if info is not None:
            header, rows = _read_csv(info)
            cols = {h.lower(): i for i, h in enumerate(header)}
            if not {"filename", "source", "split"} <= set(cols):
                raise ReaderError(f"{info}: columns must include Filename, Source, Split; got {header}")
            for r in rows:
                self._info[r[cols["filename"]]] = (r[cols["source"]], r[cols["split"]])
        if split is not None:
            if info is None:
                raise ReaderError(f"{self.root}: split= needs Lizard_Labels/info.csv, which is missing")
            wanted = {str(split)} if isinstance(split, (int, np.integer, str)) else {str(s) for s in split}
            stems = [s for s in stems if s in self._info and self._info[s][1] in wanted]
            if not stems:
                raise ReaderError(f"{info}: no image of split {sorted(wanted)}")
        self.names = stems
        self.image_paths = [images[s] for s in stems]
        self.label_paths = [labels[s] for s in stems]
        unknown = [s for s in stems if self._info and s not in self._info]
        if unknown:
            raise ReaderError(f"{info}: no row for image(s) {list_names(unknown)}")

    def __len__(self) -> int:
        return len(self.names)

    def source(self, k: int) -> str | None:
        """Source data set of image ``k`` (``info.csv``: consep, crag, dpath, glas, pannuke), or None."""
        info = self._info.get(self.names[resolve_index(k, len(self), "LizardDataset")])
        return info[0] if info else None

    def split(self, k: int) -> int | None:
        """``info.csv`` split number of image ``k``, or None."""
        info = self._info.get(self.names[resolve_index(k, len(self), "LizardDataset")])
        return int(info[1]) if info and info[1].strip().isdigit() else None

    def read(self, k: int):
        return read_mat_sample(
            self.image_paths[k], self.label_paths[k], "lizard", self.class_names,
            fix_labels=self.fix_labels, check=self.check,
        )
