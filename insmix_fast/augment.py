"""Traditional augmentations of the paper's training recipe (random scale, shift,
rotation, flip, colour jitter, Gaussian blur), for an image and its instance map.

All geometry is one affine warp (``cv2.warpAffine``): bilinear for the image,
nearest for the labels, the same matrix for both, ``BORDER_REFLECT_101`` for
both (so nuclei reflected in from the border are labelled too; a reflected copy
of an instance is a separate piece and gets its own id).  Afterwards the label
map is cleaned (:func:`insmix_fast.data.clean_labels`, no hole filling): pieces
of an instance that the warp split get new ids, and pieces smaller than
``min_area`` pixels become background.  Colour jitter and blur touch the image
only.

Randomness: ``Generator(Philox(key=(seed, index)))`` as in
:mod:`insmix_fast.baselines` — same seed and index, same output.

Example::

    aug = TraditionalAugment(rotate=180, scale=(0.8, 1.2))
    img2, lab2 = aug(img, lab, seed=0, index=5)
"""

from __future__ import annotations

import math

import cv2
import numpy as np

from .baselines import _check_pos, _check_range, _clean, make_rng
from .errors import ConfigError
from .validation import check_batch, check_sample, check_seed

__all__ = ["TraditionalAugment", "traditional_augment"]

_S_GEOM = 11
_S_COLOR = 12


class TraditionalAugment:
    """Random scale, shift, rotation, flips, colour jitter and blur.

    Args:
        scale: isotropic zoom factor range, drawn uniformly ((0.8, 1.2)).
        shift: maximal translation as a fraction of H and W (0.1).
        rotate: maximal rotation in degrees, uniform in [−rotate, rotate] (180).
        flip: random horizontal and vertical flips (each with probability ½).
        brightness, contrast, saturation: multiplicative factors drawn in
            [1 − x, 1 + x] (0.2, 0.2, 0.2).
        hue: hue shift as a fraction of the colour circle in [−hue, hue] (0.04).
        blur_p: probability of a Gaussian blur (0.2).
        blur_sigma: sigma range of the blur in pixels ((0.1, 1.5)).
        p_geometric: probability that the affine warp is applied at all (1.0;
            flips are drawn independently).
        min_area: label fragments smaller than this become background (8).
    """

    def __init__(
        self,
        scale=(0.8, 1.2),
        shift: float = 0.1,
        rotate: float = 180.0,
        flip: bool = True,
        brightness: float = 0.2,
        contrast: float = 0.2,
        saturation: float = 0.2,
        hue: float = 0.04,
        blur_p: float = 0.2,
        blur_sigma=(0.1, 1.5),
        p_geometric: float = 1.0,
        min_area: int = 8,
    ):
        self.scale = _check_range("scale", scale, 1e-2, 100.0)
        self.shift = _check_pos("shift", shift, 0.0, 1.0, lo_open=False)
        self.rotate = _check_pos("rotate", rotate, 0.0, 360.0, lo_open=False)
        if not isinstance(flip, bool):
            raise ConfigError(f"flip must be a bool, got {flip!r}")
        self.flip = flip
        self.brightness = _check_pos("brightness", brightness, 0.0, 1.0, lo_open=False)
        self.contrast = _check_pos("contrast", contrast, 0.0, 1.0, lo_open=False)
        self.saturation = _check_pos("saturation", saturation, 0.0, 1.0, lo_open=False)
        self.hue = _check_pos("hue", hue, 0.0, 0.5, lo_open=False)
        self.blur_p = _check_pos("blur_p", blur_p, 0.0, 1.0, lo_open=False)
        self.blur_sigma = _check_range("blur_sigma", blur_sigma, 1e-3, 100.0)
        self.p_geometric = _check_pos("p_geometric", p_geometric, 0.0, 1.0, lo_open=False)
        if isinstance(min_area, bool) or not isinstance(min_area, (int, np.integer)) or min_area < 1:
            raise ConfigError(f"min_area must be an integer ≥ 1, got {min_area!r}")
        self.min_area = int(min_area)

    def __repr__(self) -> str:
        return f"TraditionalAugment({', '.join(f'{k}={v!r}' for k, v in vars(self).items())})"

    # ------------------------------------------------------------------ parts

    def affine_matrix(self, shape, seed: int, index: int = 0) -> np.ndarray:
        """The 2×3 matrix (output ← input, cv2 convention) drawn for (seed, index)."""
        H, W = int(shape[0]), int(shape[1])
        rng = make_rng(seed, index, _S_GEOM)
        apply = rng.random() < self.p_geometric
        s = float(rng.uniform(*self.scale))
        ang = float(rng.uniform(-self.rotate, self.rotate))
        ty = float(rng.uniform(-self.shift, self.shift)) * H
        tx = float(rng.uniform(-self.shift, self.shift)) * W
        fh = self.flip and rng.random() < 0.5
        fv = self.flip and rng.random() < 0.5
        if not apply:
            s, ang, ty, tx = 1.0, 0.0, 0.0, 0.0
        cx, cy = (W - 1) / 2.0, (H - 1) / 2.0
        rot = cv2.getRotationMatrix2D((cx, cy), ang, s)  # 2×3
        A = np.vstack([rot, [0.0, 0.0, 1.0]])
        F = np.eye(3)
        if fh:
            F = np.array([[-1.0, 0, W - 1], [0, 1, 0], [0, 0, 1]]) @ F
        if fv:
            F = np.array([[1.0, 0, 0], [0, -1, H - 1], [0, 0, 1]]) @ F
        T = np.array([[1.0, 0, tx], [0, 1, ty], [0, 0, 1]])
        return (T @ A @ F)[:2]

    def geometric(self, image, labels, seed: int, index: int = 0) -> tuple[np.ndarray, np.ndarray]:
        """Apply only the affine part (same matrix to image and labels)."""
        H, W = labels.shape
        M = self.affine_matrix(labels.shape, seed, index)
        if np.allclose(M, [[1, 0, 0], [0, 1, 0]]):
            return image.copy(), labels.copy()
        img = cv2.warpAffine(image, M, (W, H), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT_101)
        lab = cv2.warpAffine(labels, M, (W, H), flags=cv2.INTER_NEAREST, borderMode=cv2.BORDER_REFLECT_101)
        return img, lab.astype(np.int32, copy=False)

    def photometric(self, image, seed: int, index: int = 0) -> np.ndarray:
        """Colour jitter (brightness, contrast, saturation, hue — in this fixed
        order), then, with probability ``blur_p``, a Gaussian blur."""
        rng = make_rng(seed, index, _S_COLOR)
        b = float(rng.uniform(1 - self.brightness, 1 + self.brightness))
        c = float(rng.uniform(1 - self.contrast, 1 + self.contrast))
        s = float(rng.uniform(1 - self.saturation, 1 + self.saturation))
        h = float(rng.uniform(-self.hue, self.hue))
        do_blur = rng.random() < self.blur_p
        sigma = float(rng.uniform(*self.blur_sigma))
        x = image.astype(np.float32)
        x *= b
        mean = float((x @ np.array([0.299, 0.587, 0.114], np.float32)).mean())
        x = (x - mean) * c + mean
        np.clip(x, 0, 255, out=x)
        if s != 1.0 or h != 0.0:
            hsv = cv2.cvtColor(x / 255.0, cv2.COLOR_RGB2HSV)  # H in [0, 360)
            hsv[..., 0] = np.mod(hsv[..., 0] + h * 360.0, 360.0)
            hsv[..., 1] = np.clip(hsv[..., 1] * s, 0.0, 1.0)
            x = cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB) * 255.0
        out = np.clip(np.rint(x), 0, 255).astype(np.uint8)
        if do_blur:
            k = int(2 * math.ceil(3 * sigma) + 1)
            out = cv2.GaussianBlur(out, (k, k), sigmaX=sigma, sigmaY=sigma, borderType=cv2.BORDER_REFLECT_101)
        return out

    # ------------------------------------------------------------------ calls

    def __call__(self, image, labels, seed: int = 0, index: int = 0) -> tuple[np.ndarray, np.ndarray]:
        """Augment one sample; returns ``(image uint8 H×W×3, labels int32 H×W)``."""
        image, labels = check_sample(image, labels)
        seed = check_seed(seed)
        img, lab = self.geometric(image, labels, seed, index)
        img = self.photometric(img, seed, index)
        return img, _clean(lab, self.min_area)

    def batch(self, images, labels, seed: int = 0, indices=None) -> tuple[np.ndarray, np.ndarray]:
        """Augment an N×H×W×3 batch; sample i uses index ``indices[i]`` (default i)."""
        images, labels = check_batch(images, labels)
        n = images.shape[0]
        idx = range(n) if indices is None else [int(i) for i in indices]
        out_i, out_l = np.empty_like(images), np.empty_like(labels)
        for k, i in enumerate(idx):
            out_i[k], out_l[k] = self(images[k], labels[k], seed=seed, index=i)
        return out_i, out_l


def traditional_augment(image, labels, seed: int = 0, index: int = 0, **params) -> tuple[np.ndarray, np.ndarray]:
    """Functional :class:`TraditionalAugment`; ``params`` go to the constructor."""
    return TraditionalAugment(**params)(image, labels, seed=seed, index=index)
