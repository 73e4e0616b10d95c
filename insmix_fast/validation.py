"""Cheap argument checks shared by every public entry point.

These run on every call, so they only look at dtype/shape/range — never at
the topology of a label map (see :mod:`insmix_fast.data.labels` for that).
"""

from __future__ import annotations

import numpy as np

from .errors import InputError, InputTypeError

__all__ = ["check_image", "check_labels", "check_sample", "check_batch", "check_seed", "MAX_SEED"]

MAX_SEED = 2**64 - 1


def _as_array(x, name: str) -> np.ndarray:
    if isinstance(x, np.ndarray):
        return x
    if hasattr(x, "__array__") and not isinstance(x, (list, tuple)):
        return np.asarray(x)
    raise InputTypeError(f"{name} must be a numpy array, got {type(x).__name__}")


def check_image(image, name: str = "image") -> np.ndarray:
    """Return ``image`` as a C-contiguous H×W×3 uint8 array or raise :class:`InputError`."""
    image = _as_array(image, name)
    if image.dtype != np.uint8:
        raise InputError(f"{name} must have dtype uint8 (RGB 0..255), got {image.dtype}")
    if image.ndim != 3:
        raise InputError(f"{name} must be H×W×3 (RGB), got shape {image.shape}")
    if image.shape[2] != 3:
        raise InputError(f"{name} must have 3 channels (RGB), got {image.shape[2]} (shape {image.shape})")
    if image.shape[0] == 0 or image.shape[1] == 0:
        raise InputError(f"{name} is empty (shape {image.shape})")
    return np.ascontiguousarray(image)


def check_labels(labels, shape: tuple[int, int] | None = None, name: str = "labels") -> np.ndarray:
    """Return ``labels`` as a C-contiguous H×W int32 instance map or raise.

    Accepts any integer dtype whose values fit int32; rejects floats, bools,
    negative ids and a shape that differs from ``shape`` (the image's H×W).
    """
    labels = _as_array(labels, name)
    if labels.dtype == np.bool_ or not np.issubdtype(labels.dtype, np.integer):
        raise InputError(f"{name} must be an integer instance map (0 = background), got dtype {labels.dtype}")
    if labels.ndim != 2:
        raise InputError(f"{name} must be a 2-D H×W instance map, got shape {labels.shape}")
    if shape is not None and tuple(labels.shape) != tuple(shape):
        raise InputError(f"{name} shape {labels.shape} does not match the image's H×W {tuple(shape)}")
    if labels.size:
        lo = labels.min()
        if lo < 0:
            raise InputError(f"{name} holds negative ids (min {int(lo)}); ids must be ≥ 0, 0 = background")
        hi = labels.max()
        if hi > np.iinfo(np.int32).max:
            raise InputError(f"{name} holds ids above int32 range (max {int(hi)})")
    return np.ascontiguousarray(labels, dtype=np.int32)


def check_sample(image, labels, name: str = "sample") -> tuple[np.ndarray, np.ndarray]:
    """Validate an ``(image, labels)`` pair; sizes must agree."""
    image = check_image(image, f"{name} image")
    labels = check_labels(labels, image.shape[:2], f"{name} labels")
    return image, labels


def check_batch(images, labels) -> tuple[np.ndarray, np.ndarray]:
    """Validate an N×H×W×3 uint8 batch and its N×H×W label maps."""
    images = _as_array(images, "images")
    labels = _as_array(labels, "labels")
    if images.dtype != np.uint8:
        raise InputError(f"images must have dtype uint8, got {images.dtype}")
    if images.ndim != 4 or images.shape[3] != 3:
        raise InputError(f"images must be N×H×W×3, got shape {images.shape}")
    if labels.ndim != 3:
        raise InputError(f"labels must be N×H×W, got shape {labels.shape}")
    if labels.shape != images.shape[:3]:
        raise InputError(f"labels shape {labels.shape} does not match images N×H×W {images.shape[:3]}")
    if images.shape[0] == 0:
        raise InputError("the batch is empty (N = 0)")
    flat = check_labels(labels.reshape(labels.shape[0] * labels.shape[1], labels.shape[2]) if labels.size else labels[0], name="labels")
    return np.ascontiguousarray(images), flat.reshape(labels.shape)


def check_seed(seed) -> int:
    """Seeds are Python/numpy integers in [0, 2**64)."""
    if isinstance(seed, (bool, np.bool_)) or not isinstance(seed, (int, np.integer)):
        raise InputTypeError(f"seed must be an integer, got {type(seed).__name__}")
    seed = int(seed)
    if not 0 <= seed <= MAX_SEED:
        raise InputError(f"seed must be in [0, 2**64), got {seed}")
    return seed
