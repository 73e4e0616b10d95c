"""Cheap argument checks shared by every public entry point.

These run on every call, so they only look at dtype/shape/range — never at
the topology of a label map (see :mod:`insmix_fast.data.labels` for that).
"""

from __future__ import annotations

import math

import numpy as np

from .errors import ConfigError, InputError, InputTypeError, InsMixError

__all__ = ["check_image", "check_labels", "check_sample", "check_batch", "check_seed", "check_int", "check_number",
           "check_pair", "check_indices", "check_index", "check_bool", "check_choice", "MAX_SEED", "MAX_SAMPLE"]

MAX_SEED = 2**64 - 1
#: Largest per-sample global index: sample keys are 32-bit words of the Philox counter.
MAX_SAMPLE = 2**32 - 1


def _interval(lo, hi, lo_open: bool = False, hi_open: bool = False) -> str:
    if hi is None or hi == math.inf:
        return f"{'>' if lo_open else '≥'} {lo}"
    return f"in {'(' if lo_open else '['}{lo}, {hi}{')' if hi_open else ']'}"


def check_int(name: str, v, lo: int | None = None, hi: int | None = None, *,
              error: type[InsMixError] = ConfigError) -> int:
    """``v`` as a Python int (numpy integers accepted, bools and floats rejected) in ``[lo, hi]``.

    ``name`` is how the message refers to the argument (e.g. ``"InsMixConfig.n_tries"``)."""
    if isinstance(v, (bool, np.bool_)) or not isinstance(v, (int, np.integer)):
        raise error(f"{name} must be an integer, got {type(v).__name__} {v!r}")
    v = int(v)
    if (lo is not None and v < lo) or (hi is not None and v > hi):
        where = _interval(lo, hi) if lo is not None else f"≤ {hi}"
        raise error(f"{name} must be an integer {where}, got {v}")
    return v


def check_number(name: str, v, lo: float = -math.inf, hi: float = math.inf, *, lo_open: bool = False,
                 hi_open: bool = False, error: type[InsMixError] = ConfigError,
                 type_error: type[InsMixError] | None = None) -> float:
    """``v`` as a finite float (ints and numpy scalars accepted, bools rejected) in the interval.

    ``error`` is raised for a bad value; ``type_error`` (default: ``error``) for a non-number."""
    if isinstance(v, (bool, np.bool_)) or not isinstance(v, (int, float, np.integer, np.floating)):
        raise (type_error or error)(f"{name} must be a number, got {type(v).__name__} {v!r}")
    v = float(v)
    if not math.isfinite(v):
        raise error(f"{name} must be finite, got {v}")
    if v < lo or v > hi or (lo_open and v == lo) or (hi_open and v == hi):
        left = "(" if lo_open else "["
        right = ")" if hi_open else "]"
        raise error(f"{name} = {v} is out of range {left}{lo}, {hi}{right}")
    return v


def check_pair(name: str, r, lo: float = -math.inf, hi: float = math.inf, *,
               error: type[InsMixError] = ConfigError) -> tuple[float, float]:
    """A ``(low, high)`` pair of finite numbers with ``lo ≤ low ≤ high ≤ hi``."""
    try:
        a, b = r
        a, b = float(a), float(b)
    except (TypeError, ValueError) as e:
        raise error(f"{name} must be a pair (low, high), got {r!r}") from e
    if isinstance(r, (str, bytes)) or not (math.isfinite(a) and math.isfinite(b)) or a > b or a < lo or b > hi:
        raise error(f"{name} = {r!r} must satisfy {lo} ≤ low ≤ high ≤ {hi}")
    return a, b


def check_bool(name: str, v, *, error: type[InsMixError] = ConfigError) -> bool:
    """``v`` must be a bool (numpy bools accepted); 0/1 and strings are rejected."""
    if not isinstance(v, (bool, np.bool_)):
        raise error(f"{name} must be True or False, got {v!r}")
    return bool(v)


def check_choice(name: str, v, choices, *, error: type[InsMixError] = ConfigError):
    """``v`` must be one of ``choices`` (compared with ``==``; the message lists them)."""
    if not any(v == c and type(v) is type(c) for c in choices):
        raise error(f"{name} must be one of {', '.join(repr(c) for c in choices)}; got {v!r}")
    return v


def check_indices(indices, n: int, name: str = "indices") -> np.ndarray:
    """Per-sample global indices for a batch of ``n``: ``None`` → ``0..n-1``; else ``n``
    integers in ``[0, 2**32)`` as int64."""
    if indices is None:
        return np.arange(n, dtype=np.int64)
    arr = np.asarray(indices)
    if arr.shape != (n,) or arr.dtype == np.bool_ or not np.issubdtype(arr.dtype, np.integer):
        raise InputError(f"{name} must be {n} integers (one per sample), got {arr.dtype} of shape {arr.shape}")
    if n and (arr.min() < 0 or arr.max() > MAX_SAMPLE):
        raise InputError(f"{name} must lie in [0, 2**32), got min {int(arr.min())}, max {int(arr.max())}")
    return arr.astype(np.int64)


def check_index(index, name: str = "sample index") -> int:
    """One per-sample global index in ``[0, 2**32)``."""
    return check_int(name, index, 0, MAX_SAMPLE, error=InputError)


def _as_array(x, name: str) -> np.ndarray:
    if isinstance(x, np.ndarray):
        return x
    if hasattr(x, "__array__") and not isinstance(x, (list, tuple)):
        return np.asarray(x)
    raise InputTypeError(f"{name} must be a numpy array, got {type(x).__name__}")


def channel_first_planes(x: np.ndarray | None) -> np.ndarray | None:
    """An H×W×3 image that is a C-contiguous 3×H×W array in memory (``a.transpose(1, 2, 0)``),
    seen as that array — the kernels' channel-first specialisation; None for any other layout (a
    C-contiguous H×W×3 array included, also when H or W is 1)."""
    if x is None or x.flags.c_contiguous:
        return None
    t = x.transpose(2, 0, 1)
    return t if t.flags.c_contiguous else None


def check_image(image, name: str = "image", *, channel_first_ok: bool = False) -> np.ndarray:
    """Return ``image`` as a C-contiguous H×W×3 uint8 array or raise :class:`InputError`.
    ``channel_first_ok``: an H×W×3 view of a C-contiguous 3×H×W array is returned as it is."""
    image = _as_array(image, name)
    if image.dtype != np.uint8:
        raise InputError(f"{name} must have dtype uint8 (RGB 0..255), got {image.dtype}")
    if image.ndim != 3:
        raise InputError(f"{name} must be H×W×3 (RGB), got shape {image.shape}")
    if image.shape[2] != 3:
        raise InputError(f"{name} must have 3 channels (RGB), got {image.shape[2]} (shape {image.shape})")
    if image.shape[0] == 0 or image.shape[1] == 0:
        raise InputError(f"{name} is empty (shape {image.shape})")
    if channel_first_ok and channel_first_planes(image) is not None:
        return image
    return np.ascontiguousarray(image)


def check_labels(labels, shape: tuple[int, int] | None = None, name: str = "labels", *, scan: bool = True,
                 convert: bool = True) -> np.ndarray:
    """Return ``labels`` as a C-contiguous H×W int32 instance map or raise.

    Accepts any integer dtype whose values fit int32; rejects floats, bools,
    negative ids and a shape that differs from ``shape`` (the image's H×W).
    ``scan=False`` checks only the dtype and shape (no pass over the values);
    ``convert=False`` returns the (checked) array as it is, in its own dtype and strides
    (a reader that uses a window of a large map checks the window's values only).
    """
    labels = _as_array(labels, name)
    if labels.dtype == np.bool_ or not np.issubdtype(labels.dtype, np.integer):
        raise InputError(f"{name} must be an integer instance map (0 = background), got dtype {labels.dtype}")
    if labels.ndim != 2:
        raise InputError(f"{name} must be a 2-D H×W instance map, got shape {labels.shape}")
    if shape is not None and tuple(labels.shape) != tuple(shape):
        raise InputError(f"{name} shape {labels.shape} does not match the image's H×W {tuple(shape)}")
    if scan and labels.size:
        if labels.dtype.kind == "i":  # unsigned maps hold no negative ids
            lo = labels.min()
            if lo < 0:
                raise InputError(f"{name} holds negative ids (min {int(lo)}); ids must be ≥ 0, 0 = background")
        if labels.dtype.itemsize > 4 or labels.dtype == np.uint32:  # narrower dtypes always fit
            hi = labels.max()
            if hi > np.iinfo(np.int32).max:
                raise InputError(f"{name} holds ids above int32 range (max {int(hi)})")
    return np.ascontiguousarray(labels, dtype=np.int32) if convert else labels


def check_sample(image, labels, name: str = "sample", *, channel_first_ok: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Validate an ``(image, labels)`` pair; sizes must agree (``channel_first_ok``: see :func:`check_image`)."""
    image = check_image(image, f"{name} image", channel_first_ok=channel_first_ok)
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
