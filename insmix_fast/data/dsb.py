"""Data Science Bowl 2018 (stage 1 training set): one binary mask file per nucleus.

Layout::

    stage1_train/<id>/images/<id>.png     RGBA (alpha is dropped) or RGB/gray
    stage1_train/<id>/masks/<m>.png       one binary mask (0 / non-zero) per nucleus

:class:`DSB2018Dataset` opens ``stage1_train`` or the folder holding it. Each mask
becomes one instance id, in the sorted order of the mask file names; an empty
mask adds none. The competition states that masks do not overlap, but a few do:
with ``overlap="first"`` (default) a pixel belongs to the first mask that claims
it (the rule of :mod:`insmix_fast.data.monuseg`), with ``overlap="raise"`` an
overlap raises :class:`~insmix_fast.errors.LabelMapError` naming both files. The
result then goes through the usual topology policy (``fix_labels``/``check``).
Samples are untyped ``(image, labels)``. ``stage1_test`` (no ``masks/``) raises.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import LabelMapError, ReaderError
from ..validation import check_choice
from .io import read_image, read_label_map
from .layout import as_path, child_dir, list_names, subdirs
from .typed import LayoutDataset

__all__ = ["DSB2018Dataset", "find_dsb_layout"]

_OVERLAP = ("first", "raise")


def _is_sample(d: Path) -> bool:
    return (d / "images").is_dir()


def find_dsb_layout(root) -> Path | None:
    """The folder of DSB sample folders at or just below ``root``, or None.

    ``root/stage1_train`` when it exists; else ``root`` itself when its first
    sub-folders (up to three looked at) all hold an ``images/`` folder and one of
    them ``images/<its name>.png``.
    """
    root = as_path(root)
    if not root.is_dir():
        return None
    stage = child_dir(root, "stage1_train")
    if stage is not None:
        return stage
    subs = subdirs(root)[:3]
    if subs and all(_is_sample(s) for s in subs) and any((s / "images" / f"{s.name}.png").is_file() for s in subs):
        return root
    return None


class DSB2018Dataset(LayoutDataset):
    """DSB 2018 stage-1 training samples ``(image, labels)`` (see the module docstring).

    Args:
        root: ``stage1_train`` or the folder holding it.
        overlap: ``"first"`` or ``"raise"`` (overlapping masks).
        fix_labels, check: topology policy (:func:`~insmix_fast.data.typed.finish_sample`).

    Attributes:
        names: the sample ids (folder names), sorted.

    Raises:
        ReaderError: no DSB layout; a sample folder without ``images/<id>.png`` or
            without ``masks/``.
    """

    def __init__(self, root, overlap: str = "first", fix_labels: bool = False, check: bool = True) -> None:
        stage = self._open(
            root, find_dsb_layout,
            "not a DSB 2018 folder; expected stage1_train/<id>/images/<id>.png and stage1_train/<id>/masks/*.png",
            fix_labels, check,
        )
        self.overlap = check_choice("overlap", overlap, _OVERLAP)
        self.stage_dir = stage
        dirs = subdirs(stage)
        no_image = [d for d in dirs if not (d / "images" / f"{d.name}.png").is_file()]
        if no_image:
            raise ReaderError(f"{stage}: sample folder(s) {list_names(no_image)} have no images/<id>.png")
        no_masks = [d for d in dirs if not (d / "masks").is_dir()]
        if no_masks:
            raise ReaderError(
                f"{stage}: sample folder(s) {list_names(no_masks)} have no masks/ folder "
                "(stage1_test and stage2_test have no labels)"
            )
        self.names = [d.name for d in dirs]

    def __len__(self) -> int:
        return len(self.names)

    def __repr__(self) -> str:
        return f"DSB2018Dataset({str(self.stage_dir)!r}, n={len(self)})"

    def mask_paths(self, k: int) -> list[Path]:
        """The mask files of sample ``k``, in id order."""
        d = self.stage_dir / self.names[k] / "masks"
        return sorted(f for f in d.iterdir() if f.is_file() and f.suffix.lower() == ".png" and not f.name.startswith("."))

    def read(self, k: int):
        name = self.names[k]
        image = read_image(self.stage_dir / name / "images" / f"{name}.png", allow_gray=True)
        labels = np.zeros(image.shape[:2], np.int32)
        owner: list[Path] = []
        for p in self.mask_paths(k):
            m = read_label_map(p) > 0
            if m.shape != labels.shape:
                raise ReaderError(f"{p}: mask size {m.shape} does not match the image's {labels.shape}")
            if not m.any():
                continue
            taken = m & (labels > 0)
            if taken.any() and self.overlap == "raise":
                other = owner[int(labels[taken][0]) - 1]
                raise LabelMapError(
                    f"{p}: mask overlaps {other.name} on {int(taken.sum())} pixel(s) (sample {name}); "
                    "pass overlap='first' to give such pixels to the first mask"
                )
            owner.append(p)
            labels[m & (labels == 0)] = len(owner)
        return self._finish(image, labels, None, str(self.stage_dir / name))
