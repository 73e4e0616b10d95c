"""MATLAB ``.mat`` label files of the HoVer-Net family (CoNSeP, Kumar, CPM, Lizard).

Three flavours, told apart by the variables a file holds:

* **untyped** (Kumar, CPM-15, CPM-17): ``inst_map`` only (H×W, ids 1..N).
* **CoNSeP** (HoVer-Net): ``inst_map``, ``type_map`` (H×W, class per pixel),
  ``inst_type`` (N×1: row ``i`` is the class of instance id ``i + 1``) and
  ``inst_centroid`` (N×2, x then y; not used here).
* **Lizard**: ``inst_map``, ``id`` (N×1 instance ids), ``class`` (N×1: row ``i`` is
  the class of instance ``id[i]`` — found through ``id``, not by row order),
  ``bbox`` and ``centroid`` (not used here).

Reading needs scipy (``pip install insmix-fast[datasets]``). MATLAB v7.3 files
(HDF5) are not supported by scipy and raise a :class:`ReaderError` saying so.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import LabelMapError, ReaderError
from .io import read_image
from .typed import as_int_map, finish_sample, paint_classes

__all__ = [
    "load_mat",
    "mat_variables",
    "mat_flavour",
    "mat_inst_map",
    "consep_classes",
    "lizard_types",
    "read_mat_sample",
    "TYPES_FROM",
    "CONSEP_CLASSES",
    "CONSEP_MERGED_CLASSES",
    "CONSEP_MERGE",
    "LIZARD_CLASSES",
]

#: CoNSeP's seven classes (``type_map``/``inst_type`` values 1..7).
CONSEP_CLASSES = (
    "background",
    "other",
    "inflammatory",
    "healthy epithelial",
    "malignant epithelial",
    "fibroblast",
    "muscle",
    "endothelial",
)
#: HoVer-Net's merge of CoNSeP's classes (its ``dataset.py``): 3|4 → 3, 5|6|7 → 4.
CONSEP_MERGE = {3: 3, 4: 3, 5: 4, 6: 4, 7: 4}
#: The four classes HoVer-Net trains and evaluates on CoNSeP.
CONSEP_MERGED_CLASSES = ("background", "other", "inflammatory", "epithelial", "spindle-shaped")
#: Lizard's (and CoNIC's) six classes, ``class`` values 1..6.
LIZARD_CLASSES = ("background", "neutrophil", "epithelial", "lymphocyte", "plasma", "eosinophil", "connective")

#: Where a CoNSeP file's classes come from (see :func:`consep_classes`).
TYPES_FROM = ("inst_type", "type_map")


def _scipy_io():
    try:
        import scipy.io as sio
    except ImportError:  # pragma: no cover - scipy is installed in the test environment
        raise ReaderError(
            "reading MATLAB .mat label files needs scipy: pip install scipy (or insmix-fast[datasets])"
        ) from None
    return sio


def mat_variables(path: Path) -> set[str]:
    """Names of the variables in a ``.mat`` file, read from its header (cheap)."""
    sio = _scipy_io()
    try:
        return {v[0] for v in sio.whosmat(str(path))}
    except NotImplementedError:
        raise ReaderError(f"{path}: MATLAB v7.3 (HDF5) .mat files are not supported; re-save it with -v7") from None
    except Exception as exc:
        raise ReaderError(f"{path}: cannot read the .mat file ({type(exc).__name__}: {exc})") from exc


def load_mat(path: Path, required: tuple[str, ...] = ("inst_map",)) -> dict:
    """Load a ``.mat`` file; raise naming the file when a ``required`` variable is missing."""
    sio = _scipy_io()
    try:
        mat = sio.loadmat(str(path))
    except NotImplementedError:
        raise ReaderError(f"{path}: MATLAB v7.3 (HDF5) .mat files are not supported; re-save it with -v7") from None
    except Exception as exc:
        raise ReaderError(f"{path}: cannot read the .mat file ({type(exc).__name__}: {exc})") from exc
    missing = [k for k in required if k not in mat]
    if missing:
        have = sorted(k for k in mat if not k.startswith("__"))
        raise ReaderError(f"{path}: the .mat file has no variable {', '.join(repr(m) for m in missing)} (it has {have})")
    return mat


def mat_flavour(names: set[str]) -> str:
    """``"consep"``, ``"lizard"`` or ``"untyped"`` from a file's variable names."""
    if "inst_type" in names or "type_map" in names:
        return "consep"
    if "id" in names and "class" in names:
        return "lizard"
    return "untyped"


def mat_inst_map(mat: dict, path: Path) -> np.ndarray:
    """``inst_map`` as H×W int32 (float storage accepted when integral)."""
    inst = np.asarray(mat["inst_map"])
    if inst.ndim != 2:
        raise ReaderError(f"{path}: 'inst_map' must be 2-D (H×W), got shape {inst.shape}")
    return as_int_map(inst, f"{path}: 'inst_map'")


def _column(mat: dict, key: str, path: Path) -> np.ndarray:
    arr = np.asarray(mat[key])
    if arr.size and arr.ndim == 2 and 1 not in arr.shape:
        raise ReaderError(f"{path}: {key!r} must be a column (N×1), got shape {arr.shape}")
    return as_int_map(arr.ravel(), f"{path}: {key!r}", error=LabelMapError)


def consep_classes(mat: dict, inst: np.ndarray, path: Path, types_from: str = "inst_type") -> np.ndarray:
    """Type map of a CoNSeP-style file (class ids as stored, 1..7 for CoNSeP).

    ``types_from="inst_type"`` (default; the per-instance record HoVer-Net's
    evaluation uses): instance ``i`` gets ``inst_type[i - 1]``; when the file also
    has ``type_map``, every pixel of every instance must carry that same class there
    (type_map values on background pixels are ignored). ``types_from="type_map"``
    (what HoVer-Net trains on): the class of each pixel is read from ``type_map``
    inside instances; :func:`~insmix_fast.data.typed.finish_sample` then checks that
    each instance has one class. A file with only one of the two uses that one.

    Raises:
        LabelMapError: an instance id beyond ``inst_type``'s rows; ``type_map``
            disagreeing with ``inst_type`` (names the id and both classes).
        ReaderError: neither variable, or a ``type_map`` of another size.
    """
    if types_from not in TYPES_FROM:
        raise ReaderError(f"types_from must be one of {TYPES_FROM}, got {types_from!r}")
    has_it, has_tm = "inst_type" in mat, "type_map" in mat
    if not (has_it or has_tm):
        raise ReaderError(f"{path}: the .mat file has neither 'inst_type' nor 'type_map'")
    tmap = None
    if has_tm:
        tmap = as_int_map(np.asarray(mat["type_map"]), f"{path}: 'type_map'", error=LabelMapError)
        if tmap.shape != inst.shape:
            raise ReaderError(f"{path}: 'type_map' shape {tmap.shape} differs from 'inst_map' shape {inst.shape}")
    if (types_from == "type_map" and has_tm) or not has_it:
        return np.where(inst > 0, tmap, 0).astype(np.int32)
    itype = _column(mat, "inst_type", path)
    n = itype.size
    top = int(inst.max()) if inst.size else 0
    if top > n:
        over = np.unique(inst[inst > n])
        raise LabelMapError(
            f"{path}: instance id(s) {', '.join(str(int(i)) for i in over[:10])} of 'inst_map' have no row in "
            f"'inst_type' ({n} rows; row i is the class of id i + 1)"
        )
    types = paint_classes(inst, np.arange(1, n + 1), itype, str(path), "'inst_type'")
    if tmap is not None:
        bad = (inst > 0) & (tmap != types)
        if bad.any():
            i = int(inst[bad][0])
            found = sorted(int(c) for c in np.unique(tmap[inst == i]))
            n_bad = np.unique(inst[bad]).size
            raise LabelMapError(
                f"{path}: 'type_map' disagrees with 'inst_type' for {n_bad} instance(s), e.g. id {i}: inst_type "
                f"says class {int(itype[i - 1])}, type_map has class(es) {found} on its pixels. "
                "Pass types_from='type_map' to use the pixel classes instead."
            )
    return types


def lizard_types(mat: dict, inst: np.ndarray, path: Path) -> np.ndarray:
    """Type map of a Lizard-style file: instance ``id[i]`` has class ``class[i]``.

    Raises:
        LabelMapError: an instance of ``inst_map`` not listed in ``id``; an id listed
            twice with different classes; ``id`` and ``class`` of different lengths.
    """
    ids = _column(mat, "id", path)
    cls = _column(mat, "class", path)
    return paint_classes(inst, ids, cls, str(path), "'id'/'class'")


def read_mat_sample(
    image_path: Path,
    mat_path: Path,
    flavour: str,
    class_names: tuple[str, ...] | None,
    *,
    types_from: str = "inst_type",
    lut: np.ndarray | None = None,
    fix_labels: bool = False,
    check: bool = True,
    allow_gray: bool = False,
):
    """One sample from an image file and its ``.mat`` labels.

    Args:
        flavour: ``"untyped"`` → ``(image, labels)``; ``"consep"`` or ``"lizard"`` →
            ``(image, labels, types)`` (see :func:`consep_classes`, :func:`lizard_types`).
        class_names: the classes of typed flavours (after ``lut``).
        lut: optional class merge table (``lut[old] = new``); classes beyond it are
            kept, so that :func:`~insmix_fast.data.typed.finish_sample` reports them.
        fix_labels, check: topology policy.

    Raises:
        ReaderError: unreadable files, a missing variable, image and map sizes differ.
        LabelMapError: see :func:`consep_classes`, :func:`lizard_types`, ``finish_sample``.
    """
    image = read_image(image_path, allow_gray=allow_gray)
    required = ("inst_map", "id", "class") if flavour == "lizard" else ("inst_map",)
    mat = load_mat(mat_path, required)
    inst = mat_inst_map(mat, mat_path)
    if inst.shape != image.shape[:2]:
        raise ReaderError(f"{mat_path}: 'inst_map' size {inst.shape} does not match image {image_path.name} size {image.shape[:2]}")
    types = None
    if flavour == "consep":
        types = consep_classes(mat, inst, mat_path, types_from)
    elif flavour == "lizard":
        types = lizard_types(mat, inst, mat_path)
    if types is not None and lut is not None:
        beyond = types >= lut.size
        types = np.where(beyond, types, lut[np.where(beyond, 0, types)]).astype(np.int32)
    return finish_sample(image, inst, types, class_names, fix_labels=fix_labels, check=check, name=str(mat_path))
