"""Data sets, file readers and label-map topology tools.

A sample everywhere is ``(image H×W×3 uint8 RGB, labels H×W int32)``, 0 =
background, one positive id per nucleus (see SPEC "Data model").

* :class:`SyntheticNuclei` — deterministic synthetic H&E tiles (the default).
* :class:`FolderDataset` / :func:`write_folder` — ``root/images`` + ``root/labels``.
* :class:`MoNuSegDataset` / :func:`read_monuseg` — MoNuSeg/Kumar XML annotations.
* :func:`open_dataset` — any of the above from a string.
* :func:`find_label_problems`, :func:`check_label_topology`,
  :func:`clean_labels`, :func:`relabel_sequential` — label-map topology.
"""

from __future__ import annotations

import os
from pathlib import Path

from ..errors import InputTypeError, ReaderError
from .folder import FolderDataset, write_folder
from .io import read_image, read_label_map
from .labels import LabelProblems, check_label_topology, clean_labels, find_label_problems, relabel_sequential
from .monuseg import MoNuSegDataset, find_monuseg_layout, read_monuseg
from .synthetic import SyntheticNuclei

__all__ = [
    "SyntheticNuclei",
    "FolderDataset",
    "MoNuSegDataset",
    "read_monuseg",
    "read_image",
    "read_label_map",
    "write_folder",
    "open_dataset",
    "find_label_problems",
    "check_label_topology",
    "clean_labels",
    "relabel_sequential",
    "LabelProblems",
]


def open_dataset(spec, **kw):
    """Open a data set from a string (or path).

    * ``"synthetic"`` or ``"synthetic:SEED"`` → :class:`SyntheticNuclei`
      (``seed=SEED``; other keywords such as ``size``, ``length`` pass through).
    * a folder with ``images/`` and ``labels/`` → :class:`FolderDataset`.
    * a folder in a MoNuSeg layout (``Tissue Images/`` + ``Annotations/*.xml``,
      ``images/`` + ``annotations/``, or images and ``.xml`` side by side)
      → :class:`MoNuSegDataset`.

    Keywords ``**kw`` go to the data set's constructor.

    Raises:
        ReaderError: the spec matches none of these (the message lists them).
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
        if (root / "images").is_dir() and (root / "labels").is_dir():
            return FolderDataset(root, **kw)
        if find_monuseg_layout(root) is not None:
            return MoNuSegDataset(root, **kw)
    where = "is not a folder" if not root.is_dir() else "has no recognised layout"
    raise ReaderError(
        f"open_dataset: {text!r} {where}. Accepted: 'synthetic' or 'synthetic:SEED'; a folder with "
        "images/ and labels/ (paired by file stem); a MoNuSeg folder ('Tissue Images/' + 'Annotations/*.xml', "
        "'images/' + 'annotations/', or images and .xml files side by side)."
    )
