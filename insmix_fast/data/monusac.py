"""MoNuSAC 2020: per-patient folders of image + Aperio XML, one annotation layer per class.

Layout (training and testing downloads alike)::

    MoNuSAC_images_and_annotations/
        TCGA-55-1594-01Z-00-DX1/
            TCGA-55-1594-01Z-00-DX1_001.svs     (or .tif / .tiff / .png: the first of these found wins)
            TCGA-55-1594-01Z-00-DX1_001.xml
            ...
        TCGA-5P-A9K0-01Z-00-DX1/ ...

``root`` may also be one patient folder. In each XML file every ``Annotation`` is one
class, named by its ``Attribute Name``: Epithelial, Lymphocyte, Neutrophil, Macrophage
(:data:`MONUSAC_CLASSES`, the challenge's class ids 1–4); the test set's ``Ambiguous``
layers mark areas where nothing is certain — they are no nuclei and become
:meth:`MoNuSACDataset.ignore_mask` (InsMix pastes nothing there; the instance bank leaves
out nuclei touching them). Polygons are rasterised by
:func:`~insmix_fast.data.monuseg.read_aperio_xml_typed` (MoNuSeg's rules: ids in document
order, first claim wins, degenerate regions raise or are skipped).

``.svs`` images are read with ``tifffile`` (level 0; JPEG 2000 tiles need ``imagecodecs``)
and, failing that, OpenSlide — both in the ``wsi`` extra; ``.tif`` copies need only the
``datasets`` extra.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from ..errors import ReaderError
from ..validation import check_choice
from .base import resolve_index
from .io import read_image
from .layout import as_path, pair_by_stem, select_parts, subdirs, visible_files
from .monuseg import aperio_layer_names, read_aperio_xml_typed
from .typed import LayoutDataset, check_class_names

__all__ = ["MONUSAC_CLASSES", "MONUSAC_IGNORE", "MoNuSACDataset", "find_monusac_layout", "read_monusac",
           "read_slide_image"]

#: MoNuSAC's classes (challenge ids 1–4), the annotation layer names.
MONUSAC_CLASSES = ("background", "Epithelial", "Lymphocyte", "Neutrophil", "Macrophage")
#: Layer names whose regions are ignore areas, not nuclei.
MONUSAC_IGNORE = ("Ambiguous",)
#: Image suffixes of a sample, in order of preference (a ``.tif`` copy beside the ``.svs`` is read instead).
IMAGE_ORDER = (".tif", ".tiff", ".png", ".svs")


def read_slide_image(path) -> np.ndarray:
    """Level 0 of a small slide file (``.svs``) as H×W×3 uint8 RGB; other suffixes go to
    :func:`~insmix_fast.data.io.read_image`.

    Raises:
        ReaderError: unreadable file (with how to install a reader), not 8-bit RGB(A).
    """
    p = as_path(path)
    if p.suffix.lower() != ".svs":
        return read_image(p)
    if not p.is_file():
        raise ReaderError(f"image file not found: {p}")
    errors = []
    arr = None
    try:
        import tifffile

        arr = np.asarray(tifffile.imread(str(p), key=0))
    except Exception as exc:  # noqa: BLE001 - ImportError, codec errors, corrupt files
        errors.append(f"tifffile: {type(exc).__name__}: {exc}")
    if arr is None:
        try:
            import openslide

            with openslide.OpenSlide(str(p)) as s:
                arr = np.asarray(s.read_region((0, 0), 0, s.level_dimensions[0]))
        except Exception as exc:  # noqa: BLE001
            errors.append(f"OpenSlide: {type(exc).__name__}: {exc}")
    if arr is None:
        raise ReaderError(f"{p}: cannot read the slide image ({'; '.join(errors)}); install a reader with "
                          "pip install 'insmix-fast[wsi]' (tifffile + imagecodecs, OpenSlide) or convert it to .tif")
    if arr.dtype != np.uint8 or arr.ndim != 3 or arr.shape[2] not in (3, 4) or 0 in arr.shape:
        raise ReaderError(f"{p}: expected an 8-bit RGB(A) image at level 0, got {arr.dtype} {arr.shape}")
    return np.ascontiguousarray(arr[..., :3])


def _pairs(folder: Path) -> tuple[dict[str, Path], dict[str, Path]]:
    """``(images, xmls)`` of one folder keyed by stem (images: the preferred suffix per stem)."""
    images: dict[str, Path] = {}
    xmls: dict[str, Path] = {}
    rank = {s: k for k, s in enumerate(IMAGE_ORDER)}
    for f in visible_files(folder):
        suf = f.suffix.lower()
        if suf == ".xml":
            xmls[f.stem] = f
        elif suf in rank and (f.stem not in images or rank[suf] < rank[images[f.stem].suffix.lower()]):
            images[f.stem] = f
    return images, xmls


def _names_classes(xml: Path) -> bool:
    """True when an XML file's annotation layers name a MoNuSAC class (or an ``Ambiguous`` area)."""
    known = {n.lower() for n in MONUSAC_CLASSES[1:] + MONUSAC_IGNORE}
    try:
        layers = aperio_layer_names(xml)
    except ReaderError:
        return False
    return any(n.lower() in known for _, names, _ in layers for n in names)


def _looks_like_monusac(folder: Path) -> bool:
    images, xmls = _pairs(folder)
    both = sorted(set(images) & set(xmls))
    if not both:
        return False
    if any(images[s].suffix.lower() == ".svs" for s in both):
        return True
    return _names_classes(xmls[both[0]])


def find_monusac_layout(root) -> list[tuple[str | None, Path]] | None:
    """``[(patient folder name or None, folder)]`` of a MoNuSAC download, or None.

    ``root`` holds patient folders of image + ``.xml`` pairs (the download), or is one such
    folder (patient None). A folder counts when it pairs an image with an XML file and
    either holds ``.svs`` images or its first XML names a MoNuSAC class in an ``Annotation``
    layer (MoNuSeg's side-by-side test folder names none, so it is not taken for MoNuSAC).
    In a download, the first patient folder decides; every sub-folder holding images or XML
    files is then a patient (one with a file missing fails when the data set opens).
    """
    root = as_path(root)
    if not root.is_dir():
        return None
    if _looks_like_monusac(root):
        return [(None, root)]
    parts = [sub for sub in subdirs(root) if any(_pairs(sub))]  # patient folders (an image or an XML file)
    first = next((sub for sub in parts if _pairs(sub)[1]), None)
    if first is None or not _looks_like_monusac(first):
        return None
    return [(sub.name, sub) for sub in parts]


def read_monusac(image_path, xml_path, class_names=MONUSAC_CLASSES, *, ignore_classes=MONUSAC_IGNORE,
                 unknown: str = "raise", degenerate: str = "raise", name: str | None = None):
    """One MoNuSAC sample without the data-set checks: ``(image, labels, types, ignore)``
    (see :func:`~insmix_fast.data.monuseg.read_aperio_xml_typed`)."""
    image = read_slide_image(image_path)
    t = read_aperio_xml_typed(xml_path, image.shape[:2], tuple(class_names), degenerate=degenerate,
                              unknown=unknown, ignore_classes=tuple(ignore_classes), name=name)
    return image, t.labels, t.types, t.ignore


class MoNuSACDataset(LayoutDataset):
    """MoNuSAC samples ``(image, labels, types)`` (see the module docstring).

    Args:
        root: the download folder (patient folders) or one patient folder.
        patients: patient folder name(s) to read (default all, sorted).
        class_names: layer name of each class (default :data:`MONUSAC_CLASSES`).
        ignore_classes: layer names that mark ignore areas (default ``("Ambiguous",)``).
        unknown: regions of a layer that is no class: ``"raise"`` (default) or ``"skip"``.
        degenerate: degenerate polygons: ``"raise"`` (default) or ``"skip"``.
        fix_labels, check: topology policy (:func:`~insmix_fast.data.typed.finish_sample`).

    Attributes:
        names, image_paths, xml_paths: per sample, in order; :meth:`patient` its folder.

    Raises:
        ReaderError: not a MoNuSAC folder, an unknown patient, an image without XML or the
            reverse (names the files). Reading a sample raises
            :class:`~insmix_fast.errors.LabelMapError` for regions of an unknown layer
            (names the file, the sample, the ``Annotation`` Id and the name).
    """

    def __init__(self, root, patients: str | Iterable[str] | None = None, class_names=MONUSAC_CLASSES, *,
                 ignore_classes: Iterable[str] = MONUSAC_IGNORE, unknown: str = "raise", degenerate: str = "raise",
                 fix_labels: bool = False, check: bool = True) -> None:
        layout = self._open(root, find_monusac_layout,
                            "not a MoNuSAC folder; expected patient folders holding <name>.svs (or .tif) + <name>.xml "
                            "whose Annotation layers are classes (Epithelial, Lymphocyte, Neutrophil, Macrophage)",
                            fix_labels, check)
        self.class_names = check_class_names(class_names)
        self.ignore_classes = tuple(str(n) for n in ignore_classes)
        self.unknown = check_choice("unknown", unknown, ("raise", "skip"))
        self.degenerate = check_choice("degenerate", degenerate, ("raise", "skip"))
        layout = select_parts(layout, patients, "patient", self.root)
        self.names: list[str] = []
        self.image_paths: list[Path] = []
        self.xml_paths: list[Path] = []
        self._patient_of: list[str | None] = []
        for patient, folder in layout:
            images, xmls = _pairs(folder)
            for stem in pair_by_stem(images, xmls, folder, folder, "XML annotation"):
                self.names.append(stem)
                self.image_paths.append(images[stem])
                self.xml_paths.append(xmls[stem])
                self._patient_of.append(patient)
        self._shapes: dict[int, tuple[int, int]] = {}

    def __len__(self) -> int:
        return len(self.names)

    def patient(self, k: int) -> str | None:
        """Patient folder of sample ``k`` (None when ``root`` is one patient's folder)."""
        return self._patient_of[resolve_index(k, len(self), "MoNuSACDataset")]

    def _sample_name(self, k: int) -> str:
        return f"{self.xml_paths[k]} (sample {k}, {self.names[k]})"

    def _read(self, k: int):
        image, labels, types, ignore = read_monusac(
            self.image_paths[k], self.xml_paths[k], self.class_names, ignore_classes=self.ignore_classes,
            unknown=self.unknown, degenerate=self.degenerate, name=self._sample_name(k))
        self._shapes[k] = image.shape[:2]
        return image, labels, types, ignore

    def read(self, k: int):
        image, labels, types, _ = self._read(k)
        return self._finish(image, labels, types, self._sample_name(k))

    def ignore_mask(self, k: int) -> np.ndarray:
        """H×W bool: the ``Ambiguous`` areas of sample ``k`` (all False when it has none)."""
        k = resolve_index(k, len(self), "MoNuSACDataset")
        if k not in self._shapes:
            return self._read(k)[3]
        with warnings.catch_warnings():  # skipped regions were reported when the sample was read
            warnings.simplefilter("ignore")
            return read_aperio_xml_typed(self.xml_paths[k], self._shapes[k], self.class_names,
                                         degenerate=self.degenerate, unknown=self.unknown,
                                         ignore_classes=self.ignore_classes, name=self._sample_name(k)).ignore
