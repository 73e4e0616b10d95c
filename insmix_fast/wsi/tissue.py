"""Tissue detection at low resolution: saturation, Otsu, small-object removal.

``detect_tissue(slide)`` reads the slide at a coarse resolution (``mpp`` ≥ 8 µm/px by
default, and coarse enough that the thumbnail's long side is ≤ ``max_size``), takes the
HSV saturation (stained tissue is coloured, glass is grey/white), smooths it, and
thresholds it with Otsu's method — but never below ``min_saturation`` so that an empty
slide does not turn its noise into tissue. Pixels that are nearly black (pen, dust,
out-of-slide) are dropped; a closing fills small gaps; connected components smaller
than ``min_area_um2`` µm² are removed; holes smaller than that are filled.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from ..errors import ConfigError

__all__ = ["TissueMask", "detect_tissue", "tissue_mask_from_image"]


@dataclass
class TissueMask:
    """A boolean tissue map; mask pixel ``(r, c)`` covers level-0
    ``[c·scale, (c+1)·scale) × [r·scale, (r+1)·scale)``."""

    mask: np.ndarray
    mpp: float
    scale: float  # level-0 pixels per mask pixel
    threshold: float

    @property
    def fraction(self) -> float:
        return float(self.mask.mean()) if self.mask.size else 0.0

    def integral(self) -> np.ndarray:
        ii = np.zeros((self.mask.shape[0] + 1, self.mask.shape[1] + 1), np.int64)
        np.cumsum(np.cumsum(self.mask, 0), 1, out=ii[1:, 1:])
        return ii

    def fraction_in(self, x0, y0, size0, ii: np.ndarray | None = None) -> np.ndarray:
        """Tissue fraction inside level-0 boxes ``[x0, x0+size0) × [y0, y0+size0)`` (vectorised)."""
        ii = self.integral() if ii is None else ii
        H, W = self.mask.shape
        x0 = np.asarray(x0, np.float64)
        y0 = np.asarray(y0, np.float64)
        c0 = np.clip(np.floor(x0 / self.scale), 0, W).astype(np.int64)
        r0 = np.clip(np.floor(y0 / self.scale), 0, H).astype(np.int64)
        c1 = np.clip(np.ceil((x0 + size0) / self.scale), 0, W).astype(np.int64)
        r1 = np.clip(np.ceil((y0 + size0) / self.scale), 0, H).astype(np.int64)
        area = np.maximum((r1 - r0) * (c1 - c0), 1)
        s = ii[r1, c1] - ii[r0, c1] - ii[r1, c0] + ii[r0, c0]
        return s / area


def tissue_mask_from_image(rgb: np.ndarray, mpp: float, *, min_saturation: float = 20.0,
                           min_area_um2: float = 20000.0, close_um: float = 32.0) -> tuple[np.ndarray, float]:
    """The tissue mask of a low-resolution RGB image and the saturation threshold used."""
    hsv = cv2.cvtColor(np.ascontiguousarray(rgb), cv2.COLOR_RGB2HSV)
    sat = cv2.GaussianBlur(hsv[..., 1], (5, 5), 0)
    if sat.size and int(sat.max()) > int(sat.min()):
        t, _ = cv2.threshold(sat, 0, 255, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
    else:
        t = 255.0
    t = max(float(t), float(min_saturation))
    mask = (sat > t) & (hsv[..., 2] > 30)
    k = max(1, int(round(close_um / mpp)))
    if k > 1:
        ker = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (k | 1, k | 1))
        mask = cv2.morphologyEx(mask.astype(np.uint8), cv2.MORPH_CLOSE, ker).astype(bool)
    min_px = int(round(min_area_um2 / (mpp * mpp)))
    if min_px > 1 and mask.any():
        n, cc, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8), connectivity=8)
        keep = stats[:, cv2.CC_STAT_AREA] >= min_px
        keep[0] = False
        mask = keep[cc]
        # fill small holes (background components not touching the border, smaller than min_px)
        n, cc, stats, _ = cv2.connectedComponentsWithStats((~mask).astype(np.uint8), connectivity=4)
        small = stats[:, cv2.CC_STAT_AREA] < min_px
        border = np.unique(np.concatenate([cc[0], cc[-1], cc[:, 0], cc[:, -1]]))
        small[border] = False
        small[0] = False
        mask |= small[cc]
    return mask, t


def detect_tissue(slide, *, mpp: float = 8.0, max_size: int = 2048, min_saturation: float = 20.0,
                  min_area_um2: float = 20000.0) -> TissueMask:
    """Tissue mask of ``slide`` at ≥ ``mpp`` µm/px (long side ≤ ``max_size``)."""
    if mpp <= 0 or max_size < 8:
        raise ConfigError(f"tissue mpp must be > 0 and max_size ≥ 8, got mpp={mpp}, max_size={max_size}")
    W0, H0 = slide.dimensions
    m = max(float(mpp), slide.mpp, slide.mpp * max(W0, H0) / max_size)
    thumb = slide.thumbnail(m)
    mask, t = tissue_mask_from_image(thumb, m, min_saturation=min_saturation, min_area_um2=min_area_um2)
    return TissueMask(mask, m, m / slide.mpp, t)
