"""PUMA (melanoma) and other QuPath GeoJSON tiles: ``*.tif`` ROIs with ``*_nuclei.geojson`` polygons.

The PUMA challenge download (Schuiveling et al., GigaScience 2025; zenodo 14869398)::

    01_training_dataset_tif_ROIs/training_set_metastatic_roi_001.tif      1024×1024 (RGB or RGBA)
    01_training_dataset_geojson_nuclei/training_set_metastatic_roi_001_nuclei.geojson
    01_training_dataset_geojson_tissue/...                                  (tissue; not read)

Image ``<stem>.tif`` (``.tiff``/``.png``) pairs with ``<stem>_nuclei.geojson``, in two
sibling folders under ``root`` (any names) or side by side in ``root``. Each GeoJSON
feature is one nucleus (``Polygon``, or a ``MultiPolygon`` whose parts are one nucleus;
``Point``/``LineString`` features are ignored) whose class is
``properties.classification.name``: ``nuclei_tumor``, ``nuclei_lymphocyte``, … — the ten
classes of :data:`PUMA_CLASSES` (the challenge's track 2); ``merge=True`` gives track 1's
three (:data:`PUMA_TRACK1_CLASSES`: tumour, TILs = lymphocytes + plasma cells, other).

The files are parsed and rasterised by the whole-slide annotation code
(:func:`insmix_fast.wsi.read_geojson`, :meth:`insmix_fast.wsi.Annotations.rasterize`,
degenerate outlines by :mod:`insmix_fast.data.polygons`) in pixel coordinates of the
tile with QuPath's pixel-edge convention: a pixel belongs to a polygon when its centre
lies inside (even-odd over the rings, holes stay background), polygons take ids in
document order and **where they overlap the first one keeps the pixel**; an instance cut in
pieces by that keeps its largest piece. Class ids of a file are mapped to the data set's by
name; a name that is not one of ``class_names`` (also ``"Unclassified"``: a feature
without a class in a classified file) raises :class:`~insmix_fast.errors.LabelMapError`
naming the file, the sample, the name and the polygons (``unknown="skip"`` leaves them out).
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np

from ..errors import LabelMapError, ReaderError
from ..validation import check_bool, check_choice
from .io import read_image
from .layout import as_path, pair_by_stem, subdirs, visible_files
from .typed import LayoutDataset, check_class_names, merge_lut

__all__ = ["PUMA_CLASSES", "PUMA_TRACK1_CLASSES", "PUMA_TRACK1_MERGE", "NUCLEI_SUFFIX", "PumaDataset",
           "find_puma_layout", "read_geojson_tile"]

#: PUMA's ten nucleus classes (track 2), named as in the files' ``classification.name``.
PUMA_CLASSES = ("background", "nuclei_tumor", "nuclei_lymphocyte", "nuclei_plasma_cell", "nuclei_histiocyte",
                "nuclei_melanophage", "nuclei_neutrophil", "nuclei_stroma", "nuclei_epithelium",
                "nuclei_endothelium", "nuclei_apoptosis")
#: Track 1's three classes (``merge=True``).
PUMA_TRACK1_CLASSES = ("background", "tumor", "TIL", "other")
#: PUMA class id → track-1 class id (lymphocytes and plasma cells are TILs; the rest other).
PUMA_TRACK1_MERGE = {1: 1, 2: 2, 3: 2, 4: 3, 5: 3, 6: 3, 7: 3, 8: 3, 9: 3, 10: 3}
#: The annotation file of image ``<stem>.tif`` is ``<stem>`` + this.
NUCLEI_SUFFIX = "_nuclei.geojson"
_IMAGE_SUFFIXES = (".tif", ".tiff", ".png")


def _files(folder: Path) -> tuple[dict[str, Path], dict[str, Path]]:
    """``(images by stem, nuclei GeoJSON files by image stem)`` of one folder."""
    images: dict[str, Path] = {}
    geo: dict[str, Path] = {}
    for f in visible_files(folder):
        low = f.name.lower()
        if low.endswith(NUCLEI_SUFFIX):
            geo[f.name[: -len(NUCLEI_SUFFIX)]] = f
        elif f.suffix.lower() in _IMAGE_SUFFIXES:
            if f.stem in images:
                raise ReaderError(f"{folder}: two image files share the stem {f.stem!r}: {images[f.stem]} and {f}")
            images[f.stem] = f
    return images, geo


def find_puma_layout(root) -> tuple[Path, Path] | None:
    """``(image folder, nuclei GeoJSON folder)`` of a PUMA-style download, or None.

    ``root`` holds ``*_nuclei.geojson`` files and images itself, or has one sub-folder of
    ``*_nuclei.geojson`` files and one of images (``.tif``/``.tiff``/``.png``) sharing a stem
    with them. (The pairing itself is checked when the data set opens.)
    """
    root = as_path(root)
    if not root.is_dir():
        return None
    images, geo = _files(root)
    if geo and set(geo) & set(images):
        return root, root
    geo_dirs, img_dirs = [], []
    for sub in subdirs(root):
        try:
            i, g = _files(sub)
        except ReaderError:
            continue
        if g:
            geo_dirs.append((sub, g))
        if i:
            img_dirs.append((sub, i))
    for gdir, g in geo_dirs:
        for idir, i in img_dirs:
            if set(g) & set(i):
                return idir, gdir
    return None


def read_geojson_tile(image_path, geojson_path, class_names: tuple[str, ...], *, lut=None, unknown: str = "raise",
                      on_error: str = "raise", name: str | None = None):
    """One GeoJSON tile: ``(image, labels, types)`` before the data-set checks.

    ``class_names`` names the data set's classes; each file class is mapped to the one of
    the same name (then ``lut`` maps those ids, e.g. a merge). ``unknown``: features of a
    class not in ``class_names`` raise (``"raise"``) or are left out (``"skip"``).
    ``on_error``: bad features (:func:`insmix_fast.wsi.read_geojson`).
    """
    # the whole-slide parser and rasteriser (imported on use: insmix_fast.wsi imports this package)
    from ..wsi.annotations import Annotations, read_geojson

    where = name or str(geojson_path)
    image = read_image(image_path)
    try:
        ann = read_geojson(geojson_path, on_error=on_error)
    except ReaderError as e:
        raise ReaderError(f"{where}: {e}") from e
    H, W = image.shape[:2]
    if len(ann) == 0:
        zero = np.zeros((H, W), np.int32)
        return image, zero, zero.copy()
    index = {n: c for c, n in enumerate(class_names) if c}
    file_names = ann.class_names or ("background",)
    to_ds = np.zeros(len(file_names), np.int64)
    for c, n in enumerate(file_names[1:], 1):
        to_ds[c] = index.get(n, 0)
    poly_cls = to_ds[np.asarray(ann.types, np.int64)] if ann.types is not None else np.zeros(len(ann), np.int64)
    bad = np.flatnonzero(poly_cls == 0)
    if bad.size:
        raw = np.asarray(ann.types)[bad] if ann.types is not None else np.zeros(bad.size, np.int64)
        found = {}
        for p, r in zip(bad.tolist(), raw.tolist()):
            found.setdefault(file_names[r] if r else "(no classification)", []).append(p)
        what = "; ".join(f"{n!r}: {len(ps)} polygon(s), e.g. polygon {', '.join(map(str, ps[:3]))}"
                         for n, ps in found.items())
        if unknown == "raise":
            raise LabelMapError(f"{where}: class name(s) not among the data set's classes ({what}; polygons counted "
                                f"from 0 in document order). Known: {', '.join(class_names[1:])}; pass "
                                "unknown='skip' to leave such nuclei out, or class_names= to add the class")
        warnings.warn(f"{where}: left out {bad.size} nucleus polygon(s) of unknown class ({what})", stacklevel=3)
        keep = poly_cls > 0
        ann, poly_cls = ann.subset(keep), poly_cls[keep]
        if len(ann) == 0:
            zero = np.zeros((H, W), np.int32)
            return image, zero, zero.copy()
    if lut is not None:
        poly_cls = np.asarray(lut)[poly_cls]
    # the same polygons with the data set's class ids: one rasterisation gives the ids and the classes
    typed = Annotations(ann.points, ann.ring_offsets, ann.poly_offsets, source=ann.source, closed=ann.closed,
                        types=poly_cls.astype(np.int16),
                        class_names=("background",) + tuple(str(c) for c in range(1, int(poly_cls.max()) + 1)))
    labels, types = typed.rasterize(0.0, 0.0, (H, W), 1.0, with_types=True)
    return image, labels, types


class PumaDataset(LayoutDataset):
    """PUMA / QuPath GeoJSON tiles ``(image, labels, types)`` (see the module docstring).

    Args:
        root: the download folder (ROI and nuclei GeoJSON folders), or a folder with both.
        merge: PUMA's track-1 classes (tumour, TIL, other) instead of the ten.
        class_names: the classes of other QuPath tile sets (``[0] == "background"``, then
            the ``classification.name`` of each class); not with ``merge``.
        unknown: features of a class not in ``class_names``: ``"raise"`` (default) or ``"skip"``.
        on_error: bad features (no geometry, degenerate ring, …): ``"raise"`` or ``"skip"``.
        fix_labels, check: topology policy (:func:`~insmix_fast.data.typed.finish_sample`).

    Attributes:
        names, image_paths, geojson_paths: per sample, in order.

    Raises:
        ReaderError: not such a folder; an image without ``*_nuclei.geojson`` or the reverse
            (the counts and files named). Reading a sample raises
            :class:`~insmix_fast.errors.LabelMapError` for an unknown class (file, sample,
            name, polygons) and for a nucleus with a hole (``check``).
    """

    def __init__(self, root, merge: bool = False, class_names=None, *, unknown: str = "raise",
                 on_error: str = "raise", fix_labels: bool = False, check: bool = True) -> None:
        layout = self._open(root, find_puma_layout,
                            "not a PUMA / GeoJSON tile folder; expected <stem>.tif + <stem>_nuclei.geojson (side by "
                            "side, or in an image folder and a GeoJSON folder)", fix_labels, check)
        self.merge = check_bool("merge", merge)
        self.unknown = check_choice("unknown", unknown, ("raise", "skip"))
        self.on_error = check_choice("on_error", on_error, ("raise", "skip"))
        if merge and class_names is not None:
            raise ReaderError("merge=True maps PUMA's classes; it cannot be combined with class_names=")
        self.file_classes = PUMA_CLASSES if class_names is None else check_class_names(class_names)
        self._lut = merge_lut(PUMA_TRACK1_MERGE, len(PUMA_CLASSES) - 1) if merge else None
        self.class_names = PUMA_TRACK1_CLASSES if merge else self.file_classes
        img_dir, geo_dir = layout
        images, _ = _files(img_dir)
        _, geo = _files(geo_dir)
        if not geo:
            raise ReaderError(f"{geo_dir}: no *{NUCLEI_SUFFIX} files")
        self.names: list[str] = pair_by_stem(images, geo, img_dir, geo_dir, f"*{NUCLEI_SUFFIX} file")
        self.image_paths: list[Path] = [images[s] for s in self.names]
        self.geojson_paths: list[Path] = [geo[s] for s in self.names]

    def __len__(self) -> int:
        return len(self.names)

    def read(self, k: int):
        name = f"{self.geojson_paths[k]} (sample {k}, {self.names[k]})"
        image, labels, types = read_geojson_tile(self.image_paths[k], self.geojson_paths[k], self.file_classes,
                                                 lut=self._lut, unknown=self.unknown, on_error=self.on_error,
                                                 name=name)
        return self._finish(image, labels, types, name)
