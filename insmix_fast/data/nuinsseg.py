"""NuInsSeg (Mahbod et al. 2024): H&E tiles of 31 human and mouse organs, with ambiguous areas.

Layout (one folder per organ)::

    human liver/tissue images/<name>.png
    human liver/label masks modify/<name>.tif     instance map (overlaps resolved; use this one)
    human liver/vague areas/mask binary/<name>.png   ambiguous ("vague") areas, non-zero = vague

:class:`NuInsSegDataset` opens one organ folder or the folder holding them.
Samples are untyped ``(image, labels)``. The vague areas are **not** part of the
sample: :meth:`NuInsSegDataset.ignore_mask` returns them as an H×W bool mask
(all False when an image has no vague-area file). Users of the data set (the
instance bank) should neither take instances touching it nor paste onto it;
every data set that has such regions offers the same ``ignore_mask(k)`` method.
The vague-area file of an image is the ``.png``/``.tif`` of the same name
anywhere under ``vague areas/`` (a ``mask binary`` folder is preferred when
there are several).
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import numpy as np

from ..errors import ReaderError
from .base import resolve_index
from .io import read_image, read_label_map
from .layout import as_path, child_dir, index_files, pair_by_stem, select_parts, subdirs
from .typed import LayoutDataset

__all__ = ["NuInsSegDataset", "find_nuinsseg_layout"]

_IMAGES, _LABELS, _VAGUE = "tissue images", "label masks modify", "vague areas"
_OWN = (_LABELS, _VAGUE, "label masks", "mask binary", "distance maps", "Imagj_zips")


def _organ_dirs(d: Path) -> tuple[Path, Path | None, Path | None] | None:
    images = child_dir(d, _IMAGES)
    # "Tissue Images" alone is MoNuSeg's layout: ask for one of NuInsSeg's own folders too
    if images is None or child_dir(d, *_OWN) is None:
        return None
    return images, child_dir(d, _LABELS), child_dir(d, _VAGUE)


def find_nuinsseg_layout(root) -> list[tuple[str, Path, Path | None, Path | None]] | None:
    """``[(organ, tissue images, label masks modify or None, vague areas or None)]``, or None.

    ``root`` is an organ folder or a folder of them; an organ folder holds
    ``tissue images/`` and at least one other NuInsSeg folder (``label masks
    modify``, ``vague areas``, ``label masks``, ``mask binary``, ``distance maps``,
    ``Imagj_zips``).
    """
    root = as_path(root)
    if not root.is_dir():
        return None
    own = _organ_dirs(root)
    if own is not None:
        return [(root.name, *own)]
    organs = [(sub.name, *parts) for sub in subdirs(root) if (parts := _organ_dirs(sub)) is not None]
    return organs or None


def _vague_index(d: Path | None) -> dict[str, Path]:
    if d is None:
        return {}
    found: dict[str, list[Path]] = {}
    for f in sorted(d.rglob("*")):
        if f.is_file() and f.suffix.lower() in (".png", ".tif", ".tiff") and not f.name.startswith("."):
            found.setdefault(f.stem, []).append(f)
    return {s: next((p for p in ps if p.parent.name.lower() == "mask binary"), ps[0]) for s, ps in found.items()}


class NuInsSegDataset(LayoutDataset):
    """NuInsSeg samples ``(image, labels)`` with vague areas as :meth:`ignore_mask` (see the module docstring).

    Args:
        root: an organ folder or the folder of organ folders.
        organs: organ folder name(s) to read, default all, sorted.
        fix_labels, check: topology policy (:func:`~insmix_fast.data.typed.finish_sample`).

    Attributes:
        names, image_paths, label_paths: per sample; ``vague_paths`` (None where absent).

    Raises:
        ReaderError: no NuInsSeg layout, an organ without ``label masks modify/``,
            an image without its ``.tif`` or the reverse, an unknown organ.
    """

    def __init__(self, root, organs: str | Iterable[str] | None = None, fix_labels: bool = False, check: bool = True):
        layout = self._open(
            root, find_nuinsseg_layout,
            "not a NuInsSeg folder; expected '<organ>/tissue images/*.png' and "
            "'<organ>/label masks modify/*.tif' (vague areas optional)",
            fix_labels, check,
        )
        layout = select_parts(layout, organs, "organ folder", self.root)
        self.names: list[str] = []
        self.image_paths: list[Path] = []
        self.label_paths: list[Path] = []
        self.vague_paths: list[Path | None] = []
        self._organ: list[str] = []
        for organ, img_dir, lab_dir, vague_dir in layout:
            if lab_dir is None:
                raise ReaderError(f"{img_dir.parent}: NuInsSeg organ folder has no '{_LABELS}/' folder")
            images = index_files(img_dir, (".png", ".jpg", ".jpeg", ".tif", ".tiff"), "image")
            labels = index_files(lab_dir, (".tif", ".tiff", ".png"), "label")
            vague = _vague_index(vague_dir)
            for stem in pair_by_stem(images, labels, img_dir, lab_dir, "label mask"):
                self.names.append(stem)
                self.image_paths.append(images[stem])
                self.label_paths.append(labels[stem])
                self.vague_paths.append(vague.get(stem))
                self._organ.append(organ)

    def __len__(self) -> int:
        return len(self.names)

    def organ(self, k: int) -> str:
        """Organ folder name of sample ``k`` (e.g. ``"human liver"``)."""
        return self._organ[resolve_index(k, len(self), "NuInsSegDataset")]

    def ignore_mask(self, k: int) -> np.ndarray:
        """H×W bool: True on the vague (ambiguous) areas of sample ``k``; all False when it has none.

        Raises:
            ReaderError: the vague-area file is unreadable or of another size than the image.
        """
        k = resolve_index(k, len(self), "NuInsSegDataset")
        p = self.vague_paths[k]
        image = read_image(self.image_paths[k])
        if p is None:
            return np.zeros(image.shape[:2], bool)
        mask = read_label_map(p) > 0
        if mask.shape != image.shape[:2]:
            raise ReaderError(f"{p}: vague-area mask size {mask.shape} does not match image {self.image_paths[k].name} size {image.shape[:2]}")
        return mask

    def read(self, k: int):
        image = read_image(self.image_paths[k])
        labels = read_label_map(self.label_paths[k])
        if labels.shape != image.shape[:2]:
            raise ReaderError(f"{self.label_paths[k]}: label map size {labels.shape} does not match image size {image.shape[:2]}")
        return self._finish(image, labels, None, str(self.label_paths[k]))
