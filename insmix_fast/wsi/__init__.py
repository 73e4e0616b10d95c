"""Whole-slide images: readers, tissue detection, nuclei annotations, patch sources.

Needs the ``wsi`` extra (``pip install insmix-fast[wsi]``: tifffile, imagecodecs,
shapely, openslide-python, openslide-bin); a missing backend raises an ImportError
naming the package when it is used.

* :func:`open_slide` / :class:`Slide` — OpenSlide, tifffile or cuCIM behind one interface:
  ``levels``, ``mpp``, ``read(x, y, w, h, mpp)``.
* :func:`detect_tissue` — saturation + Otsu tissue mask at low resolution.
* :class:`Annotations`, :func:`read_geojson`, :func:`read_hovernet_json` — nuclei polygons,
  grid-indexed, rasterized on the fly into a patch's instance map.
* :class:`WSIPatchSource` — ``(image, labels)`` patches (random in tissue or a sliding grid)
  at a target mpp, deterministic per ``(seed, epoch)``, sharded across ranks; works with
  :class:`insmix_fast.loader.InsMixLoader` and ``torch.utils.data.DataLoader``. Classified
  annotations give ``(image, labels, types)`` with one class table for all slides
  (:func:`shared_class_table`).
* :func:`build_bank_from_slides` — an :class:`~insmix_fast.InstanceBank` streamed from slides.
* :func:`write_synthetic_slide` — a synthetic pyramidal tiled TIFF + GeoJSON, streamed.
"""

from .annotations import Annotations, load_annotations, read_geojson, read_hovernet_json
from .slide import BACKENDS, Slide, SlideError, TileCache, open_slide
from .source import (WSIPatchSource, build_bank_from_slides, find_annotations, grid_coords, list_slides, random_coords,
                     shared_class_table)
from .synthetic_slide import SyntheticSlide, mask_outline, write_synthetic_slide
from .tissue import TissueMask, detect_tissue, tissue_mask_from_image

__all__ = [
    "Annotations", "load_annotations", "read_geojson", "read_hovernet_json",
    "BACKENDS", "Slide", "SlideError", "TileCache", "open_slide",
    "WSIPatchSource", "build_bank_from_slides", "find_annotations", "grid_coords", "list_slides", "random_coords",
    "shared_class_table",
    "SyntheticSlide", "mask_outline", "write_synthetic_slide",
    "TissueMask", "detect_tissue", "tissue_mask_from_image",
]
