"""A folder of images and instance label maps.

Layout::

    root/images/<stem>.png|jpg|jpeg|tif|tiff|bmp
    root/labels/<stem>.png|tif|tiff|npy

Images and label maps are paired by file stem and sorted by stem. Label files
without an image are ignored. :func:`write_folder` writes this layout.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np

from ..errors import InputError, InputTypeError, LabelMapError, ReaderError
from ..validation import check_bool, check_sample
from .base import IndexedDataset
from .io import IMAGE_SUFFIXES, LABEL_SUFFIXES, read_image, read_label_map, write_image, write_label_map
from .labels import clean_labels, find_label_problems

__all__ = ["FolderDataset", "write_folder"]


def _index_dir(d: Path, suffixes: tuple[str, ...], what: str) -> dict[str, Path]:
    files: dict[str, Path] = {}
    for f in sorted(d.iterdir()):
        if f.is_file() and f.suffix.lower() in suffixes and not f.name.startswith("."):
            if f.stem in files:
                raise ReaderError(f"{d}: two {what} files share the stem {f.stem!r}: {files[f.stem].name} and {f.name}")
            files[f.stem] = f
    return files


class FolderDataset(IndexedDataset):
    """Samples ``(image H×W×3 uint8, labels H×W int32)`` read from ``root``.

    Files are read lazily, on indexing.

    Args:
        root: folder holding ``images/`` and ``labels/``.
        fix_labels: repair label topology with
            :func:`~insmix_fast.data.labels.clean_labels` (split pieces get new
            ids, holes are filled) instead of raising.
        check: check label topology on read (raises :class:`LabelMapError`
            naming the file). Ignored when ``fix_labels`` is True.
        allow_gray: read grayscale images by replicating the channel.

    Attributes:
        names: the sorted stems.
        image_paths, label_paths: the paired files, in the order of ``names``.

    Raises:
        ReaderError: missing folders, no images, an image without a label map.

    >>> import tempfile
    >>> from insmix_fast.data.synthetic import SyntheticNuclei
    >>> root = write_folder(tempfile.mkdtemp(), SyntheticNuclei(seed=1, size=32, length=2)[:], names=["a", "b"])
    >>> ds = FolderDataset(root)
    >>> ds.names, ds[1][0].shape
    (['a', 'b'], (32, 32, 3))
    """

    def __init__(self, root, fix_labels: bool = False, check: bool = True, allow_gray: bool = False) -> None:
        self.root = Path(os.fspath(root))
        img_dir, lab_dir = self.root / "images", self.root / "labels"
        for d in (self.root, img_dir, lab_dir):
            if not d.is_dir():
                raise ReaderError(
                    f"{d}: folder not found; a FolderDataset needs root/images/<stem>.png|jpg|tif and "
                    "root/labels/<stem>.png|tif|npy"
                )
        images = _index_dir(img_dir, IMAGE_SUFFIXES, "image")
        labels = _index_dir(lab_dir, LABEL_SUFFIXES, "label")
        if not images:
            raise ReaderError(f"{img_dir}: no image files ({', '.join(IMAGE_SUFFIXES)})")
        missing = [s for s in images if s not in labels]
        if missing:
            shown = ", ".join(images[s].name for s in missing[:10])
            more = f" (+{len(missing) - 10} more)" if len(missing) > 10 else ""
            raise ReaderError(f"{lab_dir}: no label map for image(s) {shown}{more}")
        self.names: list[str] = sorted(images)
        self.image_paths: list[Path] = [images[s] for s in self.names]
        self.label_paths: list[Path] = [labels[s] for s in self.names]
        self.fix_labels = check_bool("fix_labels", fix_labels, error=InputTypeError)
        self.check = check_bool("check", check, error=InputTypeError)
        self.allow_gray = check_bool("allow_gray", allow_gray, error=InputTypeError)

    def __len__(self) -> int:
        return len(self.names)

    def __repr__(self) -> str:
        return f"FolderDataset({str(self.root)!r}, n={len(self)})"

    def read(self, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Read, validate (and optionally repair) sample ``k``."""
        ip, lp = self.image_paths[k], self.label_paths[k]
        image = read_image(ip, allow_gray=self.allow_gray)
        labels = read_label_map(lp)
        if labels.shape != image.shape[:2]:
            raise ReaderError(f"{lp}: label map size {labels.shape} does not match image {ip.name} size {image.shape[:2]}")
        if self.fix_labels:
            labels = clean_labels(labels)
        elif self.check:
            problems = find_label_problems(labels)
            if not problems.ok:
                raise LabelMapError(
                    f"{lp}: {problems.describe()}. Each nucleus must be one connected piece without holes; "
                    "use FolderDataset(..., fix_labels=True) or insmix_fast.data.clean_labels to repair it."
                )
        return check_sample(image, labels, name=str(lp.stem))


def write_folder(root, samples: Iterable[tuple[np.ndarray, np.ndarray]], names: Sequence[str] | None = None) -> Path:
    """Write samples in the :class:`FolderDataset` layout.

    Images are written as ``images/<name>.png``; label maps as 16-bit
    ``labels/<name>.png``, or ``labels/<name>.npy`` when an id exceeds 65535.
    Existing files of the same name are overwritten.

    Args:
        root: output folder (created).
        samples: iterable of ``(image, labels)``.
        names: file stems (default ``0000``, ``0001``, ...); must be unique and
            as many as the samples.

    Returns:
        ``Path(root)``.
    """
    root = Path(os.fspath(root))
    samples = list(samples)
    if names is None:
        names = [f"{k:04d}" for k in range(len(samples))]
    names = [str(n) for n in names]
    if len(names) != len(samples):
        raise InputError(f"write_folder: {len(names)} names for {len(samples)} samples")
    if len(set(names)) != len(names):
        raise InputError("write_folder: names must be unique")
    for n in names:
        if not n or "/" in n or "\\" in n or n.startswith("."):
            raise InputError(f"write_folder: {n!r} is not a valid file stem")
    (root / "images").mkdir(parents=True, exist_ok=True)
    (root / "labels").mkdir(parents=True, exist_ok=True)
    for name, (image, labels) in zip(names, samples):
        image, labels = check_sample(image, labels, name=name)
        write_image(root / "images" / f"{name}.png", image)
        big = labels.size > 0 and int(labels.max()) > 65535
        for stale in (root / "labels" / f"{name}.npy", root / "labels" / f"{name}.png"):
            if stale.exists():
                stale.unlink()
        write_label_map(root / "labels" / f"{name}.{'npy' if big else 'png'}", labels)
    return root
