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
"""

from __future__ import annotations

import math
import os
import warnings
import xml.etree.ElementTree as ET
from pathlib import Path

import cv2
import numpy as np

from ..errors import InputError, ReaderError
from ..validation import check_choice
from .base import IndexedDataset
from .io import read_image
from .labels import clean_labels, relabel_sequential
from .polygons import OK, clip_polygon, describe_problem, ring_problem

__all__ = ["read_monuseg", "read_aperio_xml", "MoNuSegDataset"]

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


def _parse_regions(xml_path: Path) -> list[tuple[str, bool, np.ndarray | None, str]]:
    """Regions as (id, negative, vertices N×2 (x, y) or None, reason if degenerate)."""
    try:
        tree = ET.parse(str(xml_path))
    except ET.ParseError as exc:
        raise ReaderError(f"{xml_path}: XML does not parse: {exc}") from exc
    except OSError as exc:
        raise ReaderError(f"{xml_path}: cannot read annotation file ({exc})") from exc
    regions = []
    for k, region in enumerate(tree.getroot().iter("Region")):
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
        regions.append((rid, negative, pts, bad))
    return regions


def _check_degenerate(degenerate: str) -> None:
    check_choice("degenerate", degenerate, ("raise", "skip"), error=InputError)


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
    try:
        H, W = (int(s) for s in shape)
    except (TypeError, ValueError):
        raise InputError(f"shape must be (H, W), got {shape!r}") from None
    if H <= 0 or W <= 0:
        raise InputError(f"shape must be positive, got {shape!r}")
    regions = _parse_regions(xml_path)
    bad = [(rid, why) for rid, _, _, why in regions if why is not None]
    if bad:
        if degenerate == "raise":
            rid, why = bad[0]
            more = f" (and {len(bad) - 1} more degenerate region(s))" if len(bad) > 1 else ""
            raise ReaderError(f"{xml_path}: region Id={rid} is degenerate: {why}{more}; pass degenerate='skip' to skip such regions")
        ids = ", ".join(r for r, _ in bad[:10])
        warnings.warn(f"{xml_path}: skipped {len(bad)} degenerate region(s) (Id {ids})", stacklevel=3)

    labels = np.zeros((H, W), np.int32)
    negatives = []
    next_id = 1
    for rid, negative, pts, why in regions:
        if why is not None:
            continue
        if negative:
            negatives.append(pts)
            continue
        r = _raster(pts, (H, W))
        if r is not None:
            m, r0, c0 = r
            win = labels[r0 : r0 + m.shape[0], c0 : c0 + m.shape[1]]
            win[m & (win == 0)] = next_id  # first region claims the pixel
        next_id += 1
    if next_id > 1:
        labels = clean_labels(labels, split="largest", fill_holes=True)
    if negatives and labels.any():
        for pts in negatives:
            r = _raster(pts, (H, W))
            if r is not None:
                m, r0, c0 = r
                labels[r0 : r0 + m.shape[0], c0 : c0 + m.shape[1]][m] = 0
        labels = clean_labels(labels, split="largest", fill_holes=False)
    return relabel_sequential(labels)[0]


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
