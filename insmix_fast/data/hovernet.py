"""HoVer-Net ``.mat`` layouts: CoNSeP, Kumar, CPM-15 and CPM-17.

One split is a folder with ``Images/`` and ``Labels/``, paired by file stem::

    CoNSeP/Train/Images/train_1.png       CoNSeP/Train/Labels/train_1.mat
    CoNSeP/Test/Images/test_1.png         CoNSeP/Test/Labels/test_1.mat
    Kumar/train/Images/<name>.tif         Kumar/train/Labels/<name>.mat
    cpm17/train/Images/image_00.png       cpm17/train/Labels/image_00.mat

:class:`HoVerNetDataset` opens one split folder or a folder of splits (all of
them, or those named by ``splits=``). Files may sit in sub-folders of
``Images/``/``Labels/`` (the older Kumar release: ``Images/test/same_tissue``).
What a ``.mat`` holds decides the samples (see :mod:`insmix_fast.data.matlabels`):

* ``inst_type``/``type_map`` (CoNSeP) → typed, :data:`~insmix_fast.data.matlabels.CONSEP_CLASSES`
  (other, inflammatory, healthy epithelial, malignant epithelial, fibroblast,
  muscle, endothelial); ``merge=True`` gives HoVer-Net's four classes
  (3|4 → epithelial, 5|6|7 → spindle-shaped). The class of an instance comes from
  ``inst_type`` and must agree with ``type_map`` on every pixel of it
  (``types_from="type_map"`` reads the pixels instead, as HoVer-Net's training does).
* ``id`` + ``class`` (Lizard-style) → typed, Lizard's six classes.
* ``inst_map`` only (Kumar, CPM) → untyped ``(image, labels)``.

The flavour is read from the first file's header; every file must then hold the
variables it needs.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from ..errors import ReaderError
from ..validation import check_bool, check_choice
from .base import resolve_index
from .io import IMAGE_SUFFIXES
from .layout import as_path, child_dir, index_files, pair_by_stem, select_parts, subdirs
from .matlabels import (
    CONSEP_CLASSES,
    CONSEP_MERGE,
    CONSEP_MERGED_CLASSES,
    LIZARD_CLASSES,
    TYPES_FROM,
    mat_flavour,
    mat_variables,
    read_mat_sample,
)
from .typed import LayoutDataset, check_class_names, merge_lut

__all__ = ["HoVerNetDataset", "find_hovernet_layout"]


def _split_dirs(d: Path) -> tuple[Path, Path] | None:
    images, labels = child_dir(d, "Images"), child_dir(d, "Labels")
    if images is None or labels is None:
        return None
    if not any(f.suffix.lower() == ".mat" for f in labels.rglob("*")):
        return None
    return images, labels


def find_hovernet_layout(root) -> list[tuple[str | None, Path, Path]] | None:
    """``[(split name or None, images dir, labels dir)]`` of a HoVer-Net ``.mat`` folder, or None.

    ``root`` holds ``Images/`` + ``Labels/*.mat`` itself (split None), or
    sub-folders that do (``Train``/``Test``; ``train``/``test_same``/``test_diff``).
    """
    root = as_path(root)
    if not root.is_dir():
        return None
    own = _split_dirs(root)
    if own is not None:
        return [(None, *own)]
    splits = [(sub.name, *parts) for sub in subdirs(root) if (parts := _split_dirs(sub)) is not None]
    return splits or None


class HoVerNetDataset(LayoutDataset):
    """Image + ``.mat`` samples in the HoVer-Net layouts (see the module docstring).

    Args:
        root: a split folder (``Images/`` + ``Labels/``) or a folder of splits.
        splits: split folder name(s) to read (case-insensitive), default all, sorted.
        merge: CoNSeP only — HoVer-Net's 4-class merge.
        types_from: CoNSeP only — ``"inst_type"`` (default) or ``"type_map"``.
        class_names: override the class names of a typed layout (e.g. a custom data
            set stored the CoNSeP way); ``class_names[0]`` must be ``"background"``.
        fix_labels, check: topology policy (:func:`~insmix_fast.data.typed.finish_sample`).
        allow_gray: read grayscale images by replicating the channel.

    Attributes:
        flavour: ``"consep"``, ``"lizard"`` or ``"untyped"``.
        class_names: None when untyped.
        names, image_paths, label_paths: per sample, in order.

    Raises:
        ReaderError: no such layout, an unknown split, an image without ``.mat`` or
            the reverse, ``merge`` on a layout without CoNSeP classes.
    """

    def __init__(
        self,
        root,
        splits: str | Iterable[str] | None = None,
        merge: bool = False,
        types_from: str = "inst_type",
        class_names: Iterable[str] | None = None,
        fix_labels: bool = False,
        check: bool = True,
        allow_gray: bool = False,
    ) -> None:
        layout = self._open(
            root, find_hovernet_layout,
            "not a HoVer-Net .mat folder; expected Images/ + Labels/*.mat (CoNSeP, Kumar, CPM), "
            "or split folders (Train/, Test/, ...) holding them",
            fix_labels, check,
        )
        self.merge = check_bool("merge", merge)
        self.types_from = check_choice("types_from", types_from, TYPES_FROM)
        self.allow_gray = check_bool("allow_gray", allow_gray)
        layout = select_parts(layout, splits, "split", self.root)
        self.splits = [s for s, _, _ in layout]
        self.names: list[str] = []
        self.image_paths: list[Path] = []
        self.label_paths: list[Path] = []
        self._split_of: list[str | None] = []
        for split, img_dir, lab_dir in layout:
            images = index_files(img_dir, IMAGE_SUFFIXES, "image", recursive=True)
            labels = index_files(lab_dir, (".mat",), "label", recursive=True)
            for stem in pair_by_stem(images, labels, img_dir, lab_dir, ".mat label file"):
                self.names.append(stem)
                self.image_paths.append(images[stem])
                self.label_paths.append(labels[stem])
                self._split_of.append(split)
        self.flavour = mat_flavour(mat_variables(self.label_paths[0]))
        self._lut = None
        if self.flavour == "consep":
            names = CONSEP_CLASSES
            if self.merge:
                self._lut = merge_lut(CONSEP_MERGE, len(CONSEP_CLASSES) - 1)
                names = CONSEP_MERGED_CLASSES
        elif self.merge:
            raise ReaderError(
                f"{self.root}: merge=True needs CoNSeP classes (inst_type/type_map); "
                f"{self.label_paths[0].name} has {'Lizard classes' if self.flavour == 'lizard' else 'no classes'}"
            )
        else:
            names = LIZARD_CLASSES if self.flavour == "lizard" else None
        if class_names is not None:
            if names is None:
                raise ReaderError(f"{self.root}: class_names given, but {self.label_paths[0].name} holds no classes")
            names = check_class_names(class_names)
        self.class_names = names

    def __len__(self) -> int:
        return len(self.names)

    def __repr__(self) -> str:
        return f"HoVerNetDataset({str(self.root)!r}, flavour={self.flavour!r}, n={len(self)})"

    def split(self, k: int) -> str | None:
        """Split folder name of sample ``k`` (None when ``root`` is itself a split)."""
        return self._split_of[resolve_index(k, len(self), 'HoVerNetDataset')]

    def read(self, k: int):
        return read_mat_sample(
            self.image_paths[k],
            self.label_paths[k],
            self.flavour,
            self.class_names,
            types_from=self.types_from,
            lut=self._lut,
            fix_labels=self.fix_labels,
            check=self.check,
            allow_gray=self.allow_gray,
        )
