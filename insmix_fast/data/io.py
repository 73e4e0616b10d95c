"""Reading images and instance label maps from files.

* :func:`read_image` → H×W×3 uint8 RGB (png, jpg/jpeg, tif/tiff, bmp).
* :func:`read_label_map` → H×W int32 instance map (png 8/16-bit, tif/tiff, npy).

TIFF files are read with ``tifffile`` when it is installed (it handles 32-bit
and multi-page files), otherwise with OpenCV. Every failure raises
:class:`~insmix_fast.errors.ReaderError` naming the file.
"""

from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np

from ..errors import ReaderError

__all__ = ["read_image", "read_label_map", "write_image", "write_label_map", "IMAGE_SUFFIXES", "LABEL_SUFFIXES"]

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")
LABEL_SUFFIXES = (".png", ".tif", ".tiff", ".npy")

try:  # optional
    import tifffile as _tifffile
except ImportError:  # pragma: no cover - depends on the environment
    _tifffile = None


def _check_path(path, suffixes: tuple[str, ...], what: str) -> Path:
    p = Path(os.fspath(path))
    if not p.is_file():
        raise ReaderError(f"{what} file not found: {p}")
    if p.suffix.lower() not in suffixes:
        raise ReaderError(f"{p}: unsupported {what} file type {p.suffix!r}; expected one of {', '.join(suffixes)}")
    return p


def _read_raw(p: Path) -> np.ndarray:
    """Read pixels as stored; colour images come back in RGB(A) order."""
    suffix = p.suffix.lower()
    tiff_error = ""
    if suffix in (".tif", ".tiff") and _tifffile is not None:
        try:
            arr = np.asarray(_tifffile.imread(str(p), key=0))
        except Exception as exc:  # tifffile raises many types (e.g. a codec needing imagecodecs)
            tiff_error = f"; tifffile: {type(exc).__name__}: {exc}"
        else:
            # planar (C×H×W) RGB(A) → H×W×C
            if arr.ndim == 3 and arr.shape[0] in (3, 4) and arr.shape[2] not in (3, 4):
                arr = np.moveaxis(arr, 0, -1)
            return arr
    try:
        data = np.fromfile(str(p), dtype=np.uint8)
    except OSError as exc:
        raise ReaderError(f"{p}: cannot read the file ({exc})") from exc
    arr = cv2.imdecode(data, cv2.IMREAD_UNCHANGED) if data.size else None
    if arr is None:
        raise ReaderError(f"{p}: cannot decode the file (corrupt or not a {suffix} image){tiff_error}")
    if arr.ndim == 3 and arr.shape[2] == 3:
        arr = cv2.cvtColor(arr, cv2.COLOR_BGR2RGB)
    elif arr.ndim == 3 and arr.shape[2] == 4:
        arr = cv2.cvtColor(arr, cv2.COLOR_BGRA2RGBA)
    return arr


def read_image(path, allow_gray: bool = False) -> np.ndarray:
    """Read an RGB image as H×W×3 uint8.

    RGBA drops the alpha channel. A grayscale image raises unless
    ``allow_gray=True`` (then the channel is replicated). Images that are not
    8-bit (e.g. 16-bit microscopy exports) raise, naming the dtype.

    Raises:
        ReaderError: missing/unreadable file, unsupported type, grayscale, not 8-bit.
    """
    p = _check_path(path, IMAGE_SUFFIXES, "image")
    arr = _read_raw(p)
    if arr.dtype != np.uint8:
        raise ReaderError(
            f"{p}: image has dtype {arr.dtype}; an 8-bit RGB image (uint8) is needed — convert it first"
        )
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[..., 0]
    if arr.ndim == 2:
        if not allow_gray:
            raise ReaderError(f"{p}: image is grayscale (shape {arr.shape}); an RGB image is needed (or pass allow_gray=True)")
        arr = np.repeat(arr[..., None], 3, axis=2)
    if arr.ndim != 3 or arr.shape[2] not in (3, 4):
        raise ReaderError(f"{p}: expected an RGB or RGBA image, got array shape {arr.shape}")
    if arr.shape[0] == 0 or arr.shape[1] == 0:
        raise ReaderError(f"{p}: image is empty (shape {arr.shape})")
    return np.ascontiguousarray(arr[..., :3])


def read_label_map(path) -> np.ndarray:
    """Read a single-channel instance map as H×W int32 (0 = background).

    Accepted: png (8- or 16-bit single channel), tif/tiff (any integer type
    fitting int32), npy (integer, or float with integral values). A 3-channel
    file whose channels are identical is read as its first channel; a true
    colour (RGB) label image raises, because colours are not instance ids.

    Raises:
        ReaderError: missing/unreadable file, colour image, non-integral or
            negative values, ids beyond int32.
    """
    p = _check_path(path, LABEL_SUFFIXES, "label map")
    if p.suffix.lower() == ".npy":
        try:
            arr = np.load(str(p), allow_pickle=False)
        except Exception as exc:
            raise ReaderError(f"{p}: cannot load .npy ({type(exc).__name__}: {exc})") from exc
    else:
        arr = _read_raw(p)
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[..., 0]
    if arr.ndim == 3 and arr.shape[2] in (3, 4):
        rgb = arr[..., :3]
        if np.array_equal(rgb[..., 0], rgb[..., 1]) and np.array_equal(rgb[..., 0], rgb[..., 2]):
            arr = rgb[..., 0]
        else:
            raise ReaderError(
                f"{p}: label map is a colour (RGB) image; a single-channel instance map is needed "
                "(0 = background, one integer id per nucleus, e.g. a 16-bit png or .npy)"
            )
    if arr.ndim != 2:
        raise ReaderError(f"{p}: label map must be 2-D (H×W), got shape {arr.shape}")
    if arr.dtype == np.bool_:
        raise ReaderError(f"{p}: label map is boolean (a binary mask); an instance map with one id per nucleus is needed")
    if np.issubdtype(arr.dtype, np.floating):
        if not np.all(np.isfinite(arr)) or not np.array_equal(arr, np.round(arr)):
            raise ReaderError(f"{p}: label map has non-integral float values (dtype {arr.dtype}); instance ids must be integers")
    elif not np.issubdtype(arr.dtype, np.integer):
        raise ReaderError(f"{p}: label map has unsupported dtype {arr.dtype}")
    if arr.size:
        lo, hi = arr.min(), arr.max()
        if lo < 0:
            raise ReaderError(f"{p}: label map holds negative values (min {lo}); ids must be ≥ 0, 0 = background")
        if hi > np.iinfo(np.int32).max:
            raise ReaderError(f"{p}: label map holds ids above the int32 range (max {hi})")
    return np.ascontiguousarray(arr, dtype=np.int32)


def write_image(path, image: np.ndarray) -> Path:
    """Write an H×W×3 uint8 RGB image (format from the suffix)."""
    p = Path(os.fspath(path))
    ok, buf = cv2.imencode(p.suffix, cv2.cvtColor(np.ascontiguousarray(image), cv2.COLOR_RGB2BGR))
    if not ok:
        raise ReaderError(f"{p}: cannot encode image as {p.suffix}")
    buf.tofile(str(p))
    return p


def write_label_map(path, labels: np.ndarray) -> Path:
    """Write an instance map: ``.png`` as 16-bit (ids ≤ 65535) or ``.npy`` as int32."""
    p = Path(os.fspath(path))
    labels = np.asarray(labels)
    if p.suffix.lower() == ".npy":
        np.save(str(p), labels.astype(np.int32))
        return p
    if p.suffix.lower() != ".png":
        raise ReaderError(f"{p}: label maps are written as .png or .npy")
    if labels.size and (labels.min() < 0 or labels.max() > 65535):
        raise ReaderError(f"{p}: ids outside 0..65535 do not fit a 16-bit png; use .npy")
    ok, buf = cv2.imencode(".png", labels.astype(np.uint16))
    if not ok:
        raise ReaderError(f"{p}: cannot encode label map as png")
    buf.tofile(str(p))
    return p
