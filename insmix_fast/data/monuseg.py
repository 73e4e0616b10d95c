"""MoNuSeg / Kumar data: Aperio ImageScope XML polygons → instance maps.

Rasterisation rules (:func:`read_aperio_xml`, used by :func:`read_monuseg`):

* Every ``Annotations/Annotation/Regions/Region`` is a polygon of its
  ``Vertices/Vertex`` (float ``X`` = column, ``Y`` = row; pixel ``(r, c)`` is
  centred on ``(Y, X) = (r, c)``). Vertices are kept to 1/16 px (fixed point)
  and the polygon is filled with ``cv2.fillPoly``, whose outline is inclusive
  and lands on the nearest pixel: the square with corners (10, 10) and
  (20, 20) covers rows/columns 10..20, i.e. 11 × 11 = 121 pixels; corners
  (10.4, 10.4)–(19.6, 19.6) cover the same 121, corners (10.6, 10.6)–(19.4,
  19.4) cover 11..19, i.e. 81.
* Polygons are clipped to the image in floating point (Sutherland–Hodgman against a
  box one pixel wider than the image, which leaves every in-image pixel's membership
  unchanged), before any conversion to integers.
* Regions get ids 1..K in document order. **Where regions overlap or touch, a
  pixel belongs to the first region that claims it.** A region left in several
  pieces by that keeps its largest piece (ties: first in raster order); a region
  left with no pixel is dropped and the remaining ids are renumbered 1..K,
  keeping their order. Holes a region encloses by itself (a self-intersecting
  outline) are filled with its id.
* Regions with ``NegativeROI="1"`` get no id: after all other regions are
  drawn they set what they cover to background. A nucleus cut into pieces by
  them keeps its largest piece. A negative region strictly inside one nucleus
  leaves a deliberate hole there — the one case in which the output does not
  pass :func:`~insmix_fast.data.labels.find_label_problems`.
* Degenerate regions — fewer than 3 vertices, a missing/non-numeric/NaN/inf
  coordinate, a coordinate beyond ±2³¹ px, all vertices on one line (zero area);
  the rule every reader shares, :mod:`insmix_fast.data.polygons` — raise :class:`ReaderError` naming the file
  and the region ``Id`` (``degenerate="raise"``) or are skipped with one
  ``warnings.warn`` giving their count (``degenerate="skip"``). A valid region
  entirely outside the image is simply empty and dropped.
* An XML file without regions gives an all-zero map.

**Classes** (:func:`read_aperio_xml_typed`, MoNuSAC): every ``Annotation`` is one class,
named by its ``Attributes/Attribute Name`` (e.g. ``Epithelial``); its regions are
nuclei of that class, with the rules above (ids 1..K in document order over all
layers, first claim wins). Layers named in ``ignore_classes`` (MoNuSAC's
``Ambiguous``) are no nuclei: their regions form the ignore mask. Regions of a
layer whose name is not a class — an unknown name, or MoNuSeg's unnamed
``Description`` layer — raise :class:`~insmix_fast.errors.LabelMapError` naming the
file, the ``Annotation`` Id, the name and the classes known (``unknown="raise"``),
or are left out with one warning (``unknown="skip"``).
"""

from __future__ import annotations

import math
import os
import warnings
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import NamedTuple

import cv2
import numpy as np

from ..errors import InputError, LabelMapError, ReaderError
from ..validation import check_choice
from .base import IndexedDataset
from .io import read_image
from .labels import clean_labels, relabel_sequential
from .polygons import OK, clip_polygon, describe_problem, ring_problem

__all__ = ["read_monuseg", "read_aperio_xml", "read_aperio_xml_typed", "aperio_layer_names", "TypedXML",
           "MoNuSegDataset"]

_SHIFT = 4  # fillPoly fixed-point bits: vertices kept to 1/16 px
_IMAGE_SUFFIXES = (".tif", ".tiff", ".png")
_IMAGE_DIRS = ("Tissue Images", "Tissue_Images", "TissueImages", "images", "Images")
_XML_DIRS = ("Annotations", "annotations")


def _raster(pts: np.ndarray, shape: tuple[int, int]) -> tuple[np.ndarray, int, int] | None:
    """Fill a clipped polygon; returns (local bool mask, row0, col0) or None when empty."""
    H, W = shape
    lo, hi = pts.min(axis=0), pts.max(axis=0)
    if lo[0] < -1.0 or lo[1] < -1.0 or hi[0] > W or hi[1] > H:  # clip only when needed
        pts = clip_polygon(pts, -1.0, -1.0, float(W), float(H))  # in float, before any int conversion
    if pts.shape[0] < 3:
        return None
    c0 = max(int(math.floor(pts[:, 0].min())), 0)
    r0 = max(int(math.floor(pts[:, 1].min())), 0)
    c1 = min(int(math.ceil(pts[:, 0].max())) + 1, W)
    r1 = min(int(math.ceil(pts[:, 1].max())) + 1, H)
    if c1 <= c0 or r1 <= r0:
        return None
    fixed = np.round((pts - (c0, r0)) * (1 << _SHIFT)).astype(np.int32)
    mask = np.zeros((r1 - r0, c1 - c0), np.uint8)
    cv2.fillPoly(mask, [fixed], 1, lineType=cv2.LINE_8, shift=_SHIFT)
    return mask.view(bool), r0, c0


class _Region(NamedTuple):
    rid: str  # the region's Id (or "#k")
    negative: bool  # NegativeROI="1"
    pts: np.ndarray | None  # N×2 (x, y), None when degenerate
    bad: str | None  # why it is degenerate
    layer: str  # Id of the enclosing Annotation ("" outside any)
    names: tuple[str, ...]  # candidate class names of that Annotation (Attribute Names, then its Name)


def _layer_names(ann) -> tuple[str, ...]:
    """Names an ``Annotation`` element gives itself: its ``Attributes/Attribute`` Names, then its own Name."""
    names = [a.get("Name") for a in ann.findall("Attributes/Attribute")] + [ann.get("Name")]
    return tuple(n.strip() for n in names if n and n.strip())


def _walk(elem, layer: str, names: tuple[str, ...]):
    """``(region, layer Id, layer names)`` of every ``Region`` under ``elem``, in document order."""
    for child in elem:
        if child.tag == "Annotation":
            yield from _walk(child, child.get("Id") or "?", _layer_names(child))
        elif child.tag == "Region":
            yield child, layer, names
        else:
            yield from _walk(child, layer, names)


def _parse_xml(xml_path: Path):
    try:
        return ET.parse(str(xml_path)).getroot()
    except ET.ParseError as exc:
        raise ReaderError(f"{xml_path}: XML does not parse: {exc}") from exc
    except OSError as exc:
        raise ReaderError(f"{xml_path}: cannot read annotation file ({exc})") from exc


def _parse_regions(xml_path: Path) -> list[_Region]:
    """Every region of the file in document order (see :class:`_Region`)."""
    root = _parse_xml(xml_path)
    regions = []
    items = [(root, "", ())] if root.tag == "Region" else _walk(root, "", ())
    for k, (region, layer, names) in enumerate(items):
        rid = region.get("Id") or f"#{k + 1}"
        negative = (region.get("NegativeROI") or "0").strip() == "1"
        coords = []
        bad = None
        for v in region.iter("Vertex"):
            try:
                x, y = float(v.get("X")), float(v.get("Y"))
            except (TypeError, ValueError):
                bad = f"vertex with missing or non-numeric X/Y ({v.get('X')!r}, {v.get('Y')!r})"
                break
            coords.append((x, y))
        pts = None
        if bad is None:
            pts = np.asarray(coords, dtype=np.float64).reshape(-1, 2)
            code = ring_problem(pts)  # the one rule of every reader (insmix_fast.data.polygons)
            if code != OK:
                bad, pts = describe_problem(code, pts), None
        regions.append(_Region(rid, negative, pts, bad, layer, names))
    return regions


def aperio_layer_names(xml_path) -> list[tuple[str, tuple[str, ...], int]]:
    """``(Annotation Id, its names, number of regions)`` of every annotation layer of an Aperio
    XML file that holds regions, in document order (what :func:`read_aperio_xml_typed` sees)."""
    xml_path = Path(os.fspath(xml_path))
    out: dict[str, list] = {}
    for _, layer, names in _walk(_parse_xml(xml_path), "", ()):
        out.setdefault(layer, [layer, names, 0])[2] += 1
    return [tuple(v) for v in out.values()]


def _check_degenerate(degenerate: str) -> None:
    check_choice("degenerate", degenerate, ("raise", "skip"), error=InputError)


def _check_shape(shape) -> tuple[int, int]:
    try:
        H, W = (int(s) for s in shape)
    except (TypeError, ValueError):
        raise InputError(f"shape must be (H, W), got {shape!r}") from None
    if H <= 0 or W <= 0:
        raise InputError(f"shape must be positive, got {shape!r}")
    return H, W


def _degenerate(xml_path: Path, regions: list[_Region], degenerate: str) -> None:
    """Raise for (``"raise"``) or warn once about (``"skip"``) the degenerate regions."""
    bad = [(r.rid, r.bad) for r in regions if r.bad is not None]
    if bad:
        if degenerate == "raise":
            rid, why = bad[0]
            more = f" (and {len(bad) - 1} more degenerate region(s))" if len(bad) > 1 else ""
            raise ReaderError(f"{xml_path}: region Id={rid} is degenerate: {why}{more}; pass degenerate='skip' to skip such regions")
        ids = ", ".join(r for r, _ in bad[:10])
        warnings.warn(f"{xml_path}: skipped {len(bad)} degenerate region(s) (Id {ids})", stacklevel=4)


def _rasterise_regions(regions: list[_Region], shape: tuple[int, int]) -> np.ndarray:
    """The instance map of the valid regions (the module docstring's rules) *before* the final
    renumbering: region ``j`` of the valid, non-negative ones has id ``j + 1`` (or is gone)."""
    H, W = shape
    labels = np.zeros((H, W), np.int32)
    negatives = []
    next_id = 1
    for r in regions:
        if r.bad is not None:
            continue
        if r.negative:
            negatives.append(r.pts)
            continue
        drawn = _raster(r.pts, (H, W))
        if drawn is not None:
            m, r0, c0 = drawn
            win = labels[r0 : r0 + m.shape[0], c0 : c0 + m.shape[1]]
            win[m & (win == 0)] = next_id  # first region claims the pixel
        next_id += 1
    if next_id > 1:
        labels = clean_labels(labels, split="largest", fill_holes=True)
    if negatives and labels.any():
        for pts in negatives:
            drawn = _raster(pts, (H, W))
            if drawn is not None:
                m, r0, c0 = drawn
                labels[r0 : r0 + m.shape[0], c0 : c0 + m.shape[1]][m] = 0
        labels = clean_labels(labels, split="largest", fill_holes=False)
    return labels


def read_aperio_xml(xml_path, shape: tuple[int, int], degenerate: str = "raise") -> np.ndarray:
    """Rasterise an Aperio/MoNuSeg XML file into an H×W int32 instance map.

    See the module docstring for the exact rules.

    Args:
        xml_path: the ``.xml`` file.
        shape: ``(H, W)`` of the image.
        degenerate: ``"raise"`` or ``"skip"`` (warn once with the count).

    Raises:
        ReaderError: unreadable/unparsable XML, degenerate region (``"raise"``).
    """
    _check_degenerate(degenerate)
    xml_path = Path(os.fspath(xml_path))
    shape = _check_shape(shape)
    regions = _parse_regions(xml_path)
    _degenerate(xml_path, regions, degenerate)
    return relabel_sequential(_rasterise_regions(regions, shape))[0]


class TypedXML(NamedTuple):
    """What :func:`read_aperio_xml_typed` returns."""

    labels: np.ndarray  #: H×W int32 instance map, ids 1..K in document order
    types: np.ndarray  #: H×W int32 class map (0 on background)
    ignore: np.ndarray  #: H×W bool, the regions of the ``ignore_classes`` layers


def _class_of(names: tuple[str, ...], index: dict[str, int]) -> int:
    """The class id of a layer: its first name found in ``index`` (exact, then case-insensitive), or 0."""
    for n in names:
        if n in index:
            return index[n]
    for n in names:
        if n.lower() in index:
            return index[n.lower()]
    return 0


def read_aperio_xml_typed(xml_path, shape: tuple[int, int], class_names: tuple[str, ...], *,
                          degenerate: str = "raise", unknown: str = "raise",
                          ignore_classes: tuple[str, ...] = ("Ambiguous",), name: str | None = None) -> TypedXML:
    """Rasterise an Aperio XML file whose annotation layers are classes (MoNuSAC).

    Args:
        xml_path: the ``.xml`` file.
        shape: ``(H, W)`` of the image.
        class_names: ``class_names[c]`` is the layer name of class ``c`` (``[0] == "background"``).
        degenerate: ``"raise"`` or ``"skip"`` degenerate regions (see the module docstring).
        unknown: regions of a layer whose name is not in ``class_names`` (nor ``ignore_classes``):
            ``"raise"`` a :class:`~insmix_fast.errors.LabelMapError` or ``"skip"`` them (one warning).
        ignore_classes: layer names whose regions form the ignore mask instead of nuclei.
        name: the sample in messages (default: the file).

    Returns:
        :class:`TypedXML` ``(labels, types, ignore)``.
    """
    _check_degenerate(degenerate)
    check_choice("unknown", unknown, ("raise", "skip"), error=InputError)
    xml_path = Path(os.fspath(xml_path))
    shape = _check_shape(shape)
    where = name or str(xml_path)
    index = {n: c for c, n in enumerate(class_names) if c}
    index.update({n.lower(): c for c, n in enumerate(class_names) if c and n.lower() not in index})
    ignored = {n.lower() for n in ignore_classes}
    regions = _parse_regions(xml_path)
    nuclei, ambiguous, unknown_layers = [], [], {}
    for r in regions:
        if any(n.lower() in ignored for n in r.names) and not _class_of(r.names, index):
            ambiguous.append(r)
            continue
        if r.negative:
            nuclei.append((r, 0))
            continue
        c = _class_of(r.names, index)
        if c == 0:
            unknown_layers.setdefault(r.layer, [r.names, []])[1].append(r.rid)
            continue
        nuclei.append((r, c))
    if unknown_layers:
        parts = [f"Annotation Id={layer} named {' / '.join(map(repr, names)) or '(no name)'} "
                 f"({len(rids)} region(s), Id {', '.join(rids[:5])}{' ...' if len(rids) > 5 else ''})"
                 for layer, (names, rids) in unknown_layers.items()]
        known = ", ".join(class_names[1:])
        if unknown == "raise":
            raise LabelMapError(f"{where}: regions of an annotation layer that is no class: {'; '.join(parts)}. "
                                f"Known classes: {known}" + (f" (ignored: {', '.join(ignore_classes)})"
                                                             if ignore_classes else "")
                                + "; pass unknown='skip' to leave such regions out, or class_names= to add the class")
        warnings.warn(f"{where}: left out the regions of {len(parts)} annotation layer(s) that are no class: "
                      f"{'; '.join(parts)}", stacklevel=2)
    _degenerate(xml_path, [r for r, _ in nuclei] + ambiguous, degenerate)
    valid = [(r, c) for r, c in nuclei if r.bad is None]
    raw = _rasterise_regions([r for r, _ in valid], shape)
    # raw id j + 1 is the j-th valid region that is not a NegativeROI (_rasterise_regions numbers them so)
    cls_of_id = np.array([0] + [c for r, c in valid if not r.negative], np.int32)
    labels, old_ids = relabel_sequential(raw)
    lut = np.zeros(old_ids.size + 1, np.int32)
    lut[1:] = cls_of_id[old_ids]
    ignore = np.zeros(shape, bool)
    for r in ambiguous:
        if r.bad is None and not r.negative:
            drawn = _raster(r.pts, shape)
            if drawn is not None:
                m, r0, c0 = drawn
                ignore[r0 : r0 + m.shape[0], c0 : c0 + m.shape[1]] |= m
    return TypedXML(labels, lut[labels], ignore)


def read_monuseg(image_path, xml_path, degenerate: str = "raise") -> tuple[np.ndarray, np.ndarray]:
    """Read a MoNuSeg tile and its XML annotation: ``(image H×W×3 uint8, labels H×W int32)``.

    The image is read with :func:`~insmix_fast.data.io.read_image`; labels
    follow :func:`read_aperio_xml` (ids 1..K in region order).
    """
    _check_degenerate(degenerate)
    image = read_image(image_path)
    labels = read_aperio_xml(xml_path, image.shape[:2], degenerate=degenerate)
    return image, labels


def _find_dir(root: Path, names: tuple[str, ...]) -> Path | None:
    for n in names:
        if (root / n).is_dir():
            return root / n
    return None


def find_monuseg_layout(root) -> tuple[Path, Path] | None:
    """``(image_dir, xml_dir)`` of a MoNuSeg folder, or None when ``root`` is not one.

    Accepted: ``root/Tissue Images`` + ``root/Annotations`` (official training
    set), ``root/images`` + ``root/annotations``, or images and ``.xml`` files
    side by side in ``root`` (official test set).
    """
    root = Path(os.fspath(root))
    if not root.is_dir():
        return None
    img_dir, xml_dir = _find_dir(root, _IMAGE_DIRS), _find_dir(root, _XML_DIRS)
    if img_dir is not None and xml_dir is not None and any(xml_dir.glob("*.xml")):
        return img_dir, xml_dir
    if any(root.glob("*.xml")) and any(f.suffix.lower() in _IMAGE_SUFFIXES for f in root.iterdir()):
        return root, root
    return None


class MoNuSegDataset(IndexedDataset):
    """MoNuSeg/Kumar tiles with instance maps rasterised from their XML annotations.

    Args:
        root: a folder in one of the layouts of :func:`find_monuseg_layout`.
        degenerate: ``"raise"`` or ``"skip"`` (see :func:`read_aperio_xml`).

    Attributes:
        names: sorted stems; ``image_paths``, ``xml_paths`` in the same order.

    Raises:
        ReaderError: no MoNuSeg layout, no images, an image without annotation.
    """

    def __init__(self, root, degenerate: str = "raise") -> None:
        _check_degenerate(degenerate)
        self.root = Path(os.fspath(root))
        layout = find_monuseg_layout(self.root)
        if layout is None:
            raise ReaderError(
                f"{self.root}: not a MoNuSeg folder; expected 'Tissue Images/*.tif' + 'Annotations/*.xml', "
                "'images/' + 'annotations/', or images and .xml files side by side"
            )
        img_dir, xml_dir = layout
        images = {f.stem: f for f in sorted(img_dir.iterdir()) if f.is_file() and f.suffix.lower() in _IMAGE_SUFFIXES}
        xmls = {f.stem: f for f in sorted(xml_dir.glob("*.xml")) if f.is_file()}
        if not images:
            raise ReaderError(f"{img_dir}: no image files ({', '.join(_IMAGE_SUFFIXES)})")
        missing = [s for s in images if s not in xmls]
        if missing:
            shown = ", ".join(images[s].name for s in missing[:10])
            raise ReaderError(f"{xml_dir}: no XML annotation for image(s) {shown}")
        self.names: list[str] = sorted(images)
        self.image_paths: list[Path] = [images[s] for s in self.names]
        self.xml_paths: list[Path] = [xmls[s] for s in self.names]
        self.degenerate = degenerate

    def __len__(self) -> int:
        return len(self.names)

    def __repr__(self) -> str:
        return f"MoNuSegDataset({str(self.root)!r}, n={len(self)})"

    def read(self, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Read sample ``k`` (image and its rasterised XML annotation)."""
        return read_monuseg(self.image_paths[k], self.xml_paths[k], degenerate=self.degenerate)
