"""Data sets, file readers and label-map topology tools.

A sample everywhere is ``(image H×W×3 uint8 RGB, labels H×W int32)``, 0 =
background, one positive id per nucleus (see SPEC "Data model"); a *typed*
sample adds ``types`` (H×W int32, 0 on background, the class id ≥ 1 on every
pixel of an instance) and its data set has ``class_names`` (index = class id,
``class_names[0] == "background"``). See docs/datasets.md.

* :class:`SyntheticNuclei` — deterministic synthetic H&E tiles (the default).
* :class:`FolderDataset` / :func:`write_folder` — ``root/images`` + ``root/labels``.
* :class:`MoNuSegDataset` / :func:`read_monuseg` — MoNuSeg/Kumar XML annotations.
* :class:`MoNuSACDataset` — MoNuSAC (typed: one Aperio XML layer per class; ``Ambiguous`` areas as ``ignore_mask(k)``).
* :class:`PumaDataset` — PUMA / QuPath GeoJSON tiles (``*.tif`` + ``*_nuclei.geojson``, typed).
* :class:`PanNukeDataset` — PanNuke folds (typed, memory-mapped ``.npy``).
* :class:`HoVerNetDataset` — CoNSeP (typed), Kumar and CPM ``.mat`` layouts.
* :class:`CoNICDataset`, :class:`LizardDataset` — CoNIC ``.npy`` and Lizard ``.mat`` (typed).
* :class:`DSB2018Dataset` — Data Science Bowl 2018 (one mask file per nucleus).
* :class:`NuInsSegDataset` — NuInsSeg, with vague areas as ``ignore_mask(k)``.
* :func:`open_dataset` — any of the above from a string; logs the layout it found.
* :func:`find_label_problems`, :func:`check_label_topology`,
  :func:`clean_labels`, :func:`relabel_sequential` — label-map topology.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from ..errors import InputTypeError, ReaderError
from .conic import CONIC_CLASSES, CoNICDataset, LizardDataset, find_conic_layout, find_lizard_layout
from .dsb import DSB2018Dataset, find_dsb_layout
from .folder import FolderDataset, write_folder
from .hovernet import HoVerNetDataset, find_hovernet_layout
from .io import read_image, read_label_map
from .labels import LabelProblems, check_label_topology, clean_labels, find_label_problems, relabel_sequential
from .matlabels import CONSEP_CLASSES, CONSEP_MERGED_CLASSES, LIZARD_CLASSES
from .monusac import MONUSAC_CLASSES, MoNuSACDataset, find_monusac_layout
from .monuseg import MoNuSegDataset, find_monuseg_layout, read_monuseg
from .nuinsseg import NuInsSegDataset, find_nuinsseg_layout
from .pannuke import PANNUKE_CLASSES, PanNukeDataset, find_pannuke_layout
from .puma import PUMA_CLASSES, PUMA_TRACK1_CLASSES, PumaDataset, find_puma_layout
from .synthetic import SyntheticNuclei

__all__ = [
    "SyntheticNuclei",
    "FolderDataset",
    "MoNuSegDataset",
    "PanNukeDataset",
    "HoVerNetDataset",
    "CoNICDataset",
    "LizardDataset",
    "DSB2018Dataset",
    "NuInsSegDataset",
    "MoNuSACDataset",
    "PumaDataset",
    "PANNUKE_CLASSES",
    "MONUSAC_CLASSES",
    "PUMA_CLASSES",
    "PUMA_TRACK1_CLASSES",
    "CONSEP_CLASSES",
    "CONSEP_MERGED_CLASSES",
    "CONIC_CLASSES",
    "LIZARD_CLASSES",
    "read_monuseg",
    "read_image",
    "read_label_map",
    "write_folder",
    "open_dataset",
    "LAYOUTS",
    "find_label_problems",
    "check_label_topology",
    "clean_labels",
    "relabel_sequential",
    "LabelProblems",
]

_log = logging.getLogger("insmix_fast")


def _is_folder_layout(root: Path):
    return root if (root / "images").is_dir() and (root / "labels").is_dir() else None


#: The folder layouts :func:`open_dataset` recognises, tried in this order:
#: ``(name, detect(root) -> truthy when it matches, data-set class, what it looks like)``.
LAYOUTS = (
    ("PanNuke", find_pannuke_layout, PanNukeDataset,
     "PanNuke: 'Fold N/images/foldN/images.npy' + types.npy and 'Fold N/masks/foldN/masks.npy', a folder holding "
     "'Fold 1'..'Fold 3', or images.npy + masks.npy + types.npy side by side"),
    ("CoNIC", find_conic_layout, CoNICDataset, "CoNIC: images.npy + labels.npy (+ counts.csv)"),
    ("Lizard", find_lizard_layout, LizardDataset, "Lizard: Lizard_Images1/*.png, Lizard_Images2/*.png + Lizard_Labels/Labels/*.mat"),
    ("HoVer-Net .mat", find_hovernet_layout, HoVerNetDataset,
     "CoNSeP / Kumar / CPM-15 / CPM-17: Images/ + Labels/*.mat, or split folders (Train/, Test/, ...) holding them"),
    ("DSB 2018", find_dsb_layout, DSB2018Dataset, "DSB 2018: stage1_train/<id>/images/<id>.png + stage1_train/<id>/masks/*.png"),
    ("NuInsSeg", find_nuinsseg_layout, NuInsSegDataset,
     "NuInsSeg: <organ>/tissue images/*.png + <organ>/label masks modify/*.tif (+ vague areas/), or a folder of organs"),
    ("MoNuSAC", find_monusac_layout, MoNuSACDataset,
     "MoNuSAC: patient folders of <name>.svs (or .tif) + <name>.xml whose Annotation layers are classes "
     "(Epithelial, Lymphocyte, Neutrophil, Macrophage; Ambiguous areas), or one such folder"),
    ("PUMA / GeoJSON tiles", find_puma_layout, PumaDataset,
     "PUMA / QuPath GeoJSON tiles: <stem>.tif + <stem>_nuclei.geojson (classification.name per polygon), side by "
     "side or in an image folder and a GeoJSON folder"),
    ("images/labels folder", _is_folder_layout, FolderDataset, "a folder with images/ and labels/ (paired by file stem)"),
    ("MoNuSeg", find_monuseg_layout, MoNuSegDataset,
     "MoNuSeg: 'Tissue Images/' + 'Annotations/*.xml', 'images/' + 'annotations/', or images and .xml files side by side"),
)


def open_dataset(spec, **kw):
    """Open a data set from a string (or path), recognising its layout.

    * ``"synthetic"`` or ``"synthetic:SEED"`` → :class:`SyntheticNuclei`
      (``seed=SEED``; other keywords such as ``size``, ``length`` pass through).
    * a folder in one of the :data:`LAYOUTS` (PanNuke, CoNIC, Lizard, CoNSeP/Kumar/CPM
      ``.mat``, DSB 2018, NuInsSeg, MoNuSAC, PUMA / GeoJSON tiles, ``images/`` + ``labels/``,
      MoNuSeg), tried in that order; the first that matches opens it.

    Which layout was found is logged (``logging.getLogger("insmix_fast")``, INFO).
    Keywords ``**kw`` go to the data set's constructor (e.g. ``folds=``,
    ``merge=``, ``fix_labels=``).

    Raises:
        ReaderError: the spec matches none of these (the message lists them all), or
            the layout found is incomplete (the message names the missing file).
    """
    if not isinstance(spec, (str, os.PathLike)):
        raise InputTypeError(f"open_dataset: spec must be a string or path, got {type(spec).__name__}")
    text = os.fspath(spec)
    low = text.strip().lower()
    if low == "synthetic" or low.startswith("synthetic:"):
        if ":" in low:
            seed_txt = text.strip().split(":", 1)[1]
            try:
                seed = int(seed_txt)
            except ValueError:
                raise ReaderError(f"open_dataset: {text!r}: the seed after 'synthetic:' must be an integer") from None
            if "seed" in kw:
                raise ReaderError(f"open_dataset: {text!r} gives a seed and seed= is given too")
            kw = dict(kw, seed=seed)
        return SyntheticNuclei(**kw)
    root = Path(text)
    if root.is_dir():
        for name, detect, cls, _ in LAYOUTS:
            if detect(root):
                _log.info("open_dataset: %s: %s layout, opening %s", text, name, cls.__name__)
                return cls(root, **kw)
    where = "is not a folder" if not root.is_dir() else "has no recognised layout"
    accepted = "; ".join(f"({i}) {desc}" for i, (*_, desc) in enumerate(LAYOUTS, 1))
    raise ReaderError(f"open_dataset: {text!r} {where}. Accepted: 'synthetic' or 'synthetic:SEED'; {accepted}.")
