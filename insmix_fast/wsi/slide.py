"""One ``Slide`` interface over the field's whole-slide readers.

Backends (``open_slide(path, backend=...)``):

* ``"tifffile"`` — pyramidal tiled TIFF / OME-TIFF / SVS read with ``tifffile``:
  pyramid levels are ``tif.series[0].levels`` (OME SubIFDs, SVS, or reduced main
  IFDs); tiles are read and decoded one by one (``TiffPage.decode``, codecs from
  ``imagecodecs``) into a size-bounded LRU tile cache, so a read touches only the
  tiles it needs — a slide is never loaded whole.
* ``"openslide"`` — OpenSlide (``openslide-python`` + ``openslide-bin``) for SVS,
  NDPI, MRXS, SCN, generic tiled TIFF, …; OpenSlide's own tile cache is sized
  with ``cache_bytes``.
* ``"cucim"`` — cuCIM's ``CuImage`` when it is installed (GPU decode path).
* ``"auto"`` — ``.tif/.tiff/.ome.tif(f)/.btf`` with tifffile, everything else with
  OpenSlide (tifffile when OpenSlide is missing and the file is a TIFF).

Coordinates: ``x`` (column), ``y`` (row) in **level-0 pixels**; level-0 pixel
``(r, c)`` covers ``[c, c+1) × [r, r+1)``. ``read(x, y, w, h, mpp)`` returns the
``h × w × 3`` uint8 RGB image at ``mpp`` microns per pixel whose top-left corner is
level-0 point ``(x, y)``: output pixel ``(i, j)`` covers level-0
``[x + j·s, x + (j+1)·s) × [y + i·s, y + (i+1)·s)`` with ``s = mpp / slide.mpp``.
It reads the coarsest level whose resolution is at least as fine as ``mpp`` (never
upsamples unless ``mpp`` is finer than level 0) and resizes with area averaging
(``cv2.INTER_AREA``); when ``mpp`` is a level's resolution and ``(x, y)`` falls on
that level's pixel grid, the result is exactly a crop of that level. Areas outside
the slide read as white.

Handles are opened lazily and reopened after ``fork``/unpickling (the object pickles
as its path and options), so a ``Slide`` can be handed to DataLoader workers.
Unreadable files raise :class:`SlideError` (a :class:`~insmix_fast.errors.ReaderError`)
naming the file.
"""

from __future__ import annotations

import math
import os
import re
import threading
from collections import OrderedDict
from pathlib import Path

import cv2
import numpy as np

from ..errors import ConfigError, InputError, ReaderError
from ._optional import available, require

__all__ = ["Slide", "SlideError", "open_slide", "TileCache", "BACKENDS"]

BACKENDS = ("auto", "tifffile", "openslide", "cucim")
_TIFF_SUFFIXES = (".tif", ".tiff", ".btf", ".tf8", ".tf2")
DEFAULT_CACHE_BYTES = 64 << 20


class SlideError(ReaderError):
    """A slide file cannot be opened or a region cannot be read (names the file)."""


class TileCache:
    """Thread-safe LRU cache of decoded tiles bounded in bytes."""

    def __init__(self, max_bytes: int = DEFAULT_CACHE_BYTES) -> None:
        if max_bytes < 0:
            raise ConfigError(f"cache_bytes must be ≥ 0, got {max_bytes}")
        self.max_bytes = int(max_bytes)
        self.nbytes = 0
        self.hits = 0
        self.misses = 0
        self._d: OrderedDict = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key):
        with self._lock:
            v = self._d.get(key)
            if v is None:
                self.misses += 1
                return None
            self._d.move_to_end(key)
            self.hits += 1
            return v

    def put(self, key, value: np.ndarray) -> None:
        n = value.nbytes
        if n > self.max_bytes:
            return
        with self._lock:
            old = self._d.pop(key, None)
            if old is not None:
                self.nbytes -= old.nbytes
            self._d[key] = value
            self.nbytes += n
            while self.nbytes > self.max_bytes:
                _, v = self._d.popitem(last=False)
                self.nbytes -= v.nbytes

    def clear(self) -> None:
        with self._lock:
            self._d.clear()
            self.nbytes = 0

    def __len__(self) -> int:
        return len(self._d)


def _to_rgb(a: np.ndarray) -> np.ndarray:
    """uint8 H×W, H×W×1, H×W×3 or H×W×4 (alpha composited on white) → H×W×3."""
    if a.dtype != np.uint8:
        if a.dtype == np.uint16:
            a = (a >> 8).astype(np.uint8)
        else:
            raise InputError(f"unsupported slide pixel type {a.dtype} (uint8/uint16 RGB expected)")
    if a.ndim == 2:
        a = a[..., None]
    c = a.shape[-1]
    if c == 1:
        return np.repeat(a, 3, axis=-1)
    if c == 3:
        return a
    if c == 4:
        alpha = a[..., 3:4].astype(np.uint16)
        rgb = a[..., :3].astype(np.uint16)
        return ((rgb * alpha + 255 * (255 - alpha) + 127) // 255).astype(np.uint8)
    raise InputError(f"unsupported number of samples per pixel: {c}")


class Slide:
    """A whole-slide image: pyramid levels, microns per pixel, region reads at any mpp.

    Use :func:`open_slide` to construct one. Attributes (plain data, picklable):
    ``path``, ``backend``, ``dimensions`` (level-0 ``(width, height)``),
    ``level_dimensions`` (``[(w, h), ...]``), ``level_downsamples``, ``mpp`` (level-0
    microns per pixel), ``level_mpp``.
    """

    backend = "?"

    def __init__(self, path, *, mpp: float | None = None, cache_bytes: int = DEFAULT_CACHE_BYTES) -> None:
        self.path = Path(path)
        self._mpp_override = None if mpp is None else float(mpp)
        if self._mpp_override is not None and not (math.isfinite(self._mpp_override) and self._mpp_override > 0):
            raise ConfigError(f"mpp must be a positive number, got {mpp!r}")
        self.cache_bytes = int(cache_bytes)
        self._handle = None
        self._pid = None
        self._lock = threading.Lock()
        if not self.path.exists():
            raise SlideError(f"slide file not found: {self.path}")
        try:
            self._ensure()
            dims, file_mpp = self._read_meta()
        except SlideError:
            raise
        except Exception as e:  # noqa: BLE001 - any decoder/library error: name the file
            raise SlideError(f"cannot open slide {self.path} with {self.backend}: {type(e).__name__}: {e}") from e
        if not dims:
            raise SlideError(f"slide {self.path} has no image levels")
        self.level_dimensions = [(int(w), int(h)) for w, h in dims]
        self.dimensions = self.level_dimensions[0]
        W0, H0 = self.dimensions
        self.level_downsamples = [0.5 * (W0 / w + H0 / h) for w, h in self.level_dimensions]
        m = self._mpp_override if self._mpp_override is not None else file_mpp
        if m is None or not (math.isfinite(m) and m > 0):
            raise SlideError(f"slide {self.path} has no microns-per-pixel metadata; pass slide_mpp=/mpp= explicitly")
        self.mpp = float(m)
        self.level_mpp = [self.mpp * d for d in self.level_downsamples]

    # -- lazy handle -------------------------------------------------------------------
    def _ensure(self):
        pid = os.getpid()
        if self._handle is None or self._pid != pid:
            with self._lock:  # reader threads (e.g. DALI's) may arrive together
                if self._handle is None or self._pid != pid:
                    self._handle = None
                    self._cache = TileCache(self.cache_bytes)
                    self._handle = self._open()
                    self._pid = pid
        return self._handle

    def _open(self):  # pragma: no cover - abstract
        raise NotImplementedError

    def _read_meta(self):  # pragma: no cover - abstract
        raise NotImplementedError

    def _read_level(self, level: int, x: int, y: int, w: int, h: int) -> np.ndarray:  # pragma: no cover
        raise NotImplementedError

    def close(self) -> None:
        h, self._handle = self._handle, None
        if h is not None and hasattr(h, "close") and self._pid == os.getpid():
            try:
                h.close()
            except Exception:  # noqa: BLE001
                pass

    def __getstate__(self):
        d = self.__dict__.copy()
        d["_handle"] = None
        d["_pid"] = None
        d.pop("_cache", None)
        d.pop("_lock", None)
        return d

    def __setstate__(self, d):
        self.__dict__.update(d)
        self._lock = threading.Lock()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __repr__(self) -> str:
        return (f"{type(self).__name__}({str(self.path)!r}, {self.dimensions[0]}×{self.dimensions[1]}, "
                f"mpp={self.mpp:.4g}, levels={len(self.level_dimensions)})")

    @property
    def level_count(self) -> int:
        return len(self.level_dimensions)

    @property
    def cache(self) -> TileCache:
        self._ensure()
        return self._cache

    # -- reads -------------------------------------------------------------------------
    def read_level(self, level: int, x: int, y: int, w: int, h: int) -> np.ndarray:
        """``h × w × 3`` uint8 RGB of level ``level`` at level coordinates ``(x, y)`` (white outside)."""
        if not 0 <= level < self.level_count:
            raise InputError(f"level must be in [0, {self.level_count}), got {level} for {self.path}")
        x, y, w, h = int(x), int(y), int(w), int(h)
        if w <= 0 or h <= 0:
            raise InputError(f"region size must be positive, got {w}×{h}")
        lw, lh = self.level_dimensions[level]
        out = np.full((h, w, 3), 255, np.uint8)
        ax0, ay0 = max(x, 0), max(y, 0)
        ax1, ay1 = min(x + w, lw), min(y + h, lh)
        if ax1 <= ax0 or ay1 <= ay0:
            return out
        self._ensure()
        try:
            part = self._read_level(level, ax0, ay0, ax1 - ax0, ay1 - ay0)
        except SlideError:
            raise
        except Exception as e:  # noqa: BLE001
            raise SlideError(f"cannot read level {level} region x={ax0} y={ay0} {ax1 - ax0}×{ay1 - ay0} of "
                             f"{self.path}: {type(e).__name__}: {e}") from e
        out[ay0 - y:ay1 - y, ax0 - x:ax1 - x] = part
        return out

    def best_level(self, mpp: float) -> int:
        """The coarsest level at least as fine as ``mpp`` (level 0 when ``mpp`` is finer than it)."""
        best = 0
        for i, m in enumerate(self.level_mpp):
            if m <= mpp * (1 + 1e-6):
                best = i
        return best

    def read(self, x: float, y: float, w: int, h: int, mpp: float | None = None, level: int | None = None) -> np.ndarray:
        """``h × w × 3`` uint8 RGB at ``mpp`` (default: level 0) with top-left at level-0 ``(x, y)``."""
        w, h = int(w), int(h)
        if w <= 0 or h <= 0:
            raise InputError(f"region size must be positive, got {w}×{h}")
        mpp = self.mpp if mpp is None else float(mpp)
        if not (math.isfinite(mpp) and mpp > 0):
            raise InputError(f"mpp must be a positive number, got {mpp!r}")
        L = self.best_level(mpp) if level is None else int(level)
        s0 = mpp / self.mpp                      # level-0 px per output px
        ds = self.level_downsamples[L]
        f = s0 / ds                              # level-L px per output px
        lx, ly = x / ds, y / ds                  # top-left in level-L coordinates
        if abs(f - 1) < 1e-9 and abs(lx - round(lx)) < 1e-6 and abs(ly - round(ly)) < 1e-6:
            return self.read_level(L, round(lx), round(ly), w, h)
        # large outputs in blocks so that the level window stays bounded
        B = 1024
        if w * h > B * B and f > 1:
            out = np.empty((h, w, 3), np.uint8)
            for i in range(0, h, B):
                for j in range(0, w, B):
                    out[i:i + B, j:j + B] = self.read(x + j * s0, y + i * s0, min(B, w - j), min(B, h - i), mpp, L)
            return out
        x0, y0 = math.floor(lx + 1e-6), math.floor(ly + 1e-6)
        x1, y1 = math.ceil(lx + w * f - 1e-6), math.ceil(ly + h * f - 1e-6)
        win = self.read_level(L, x0, y0, max(x1 - x0, 1), max(y1 - y0, 1))
        exact = (abs(lx - x0) < 1e-6 and abs(ly - y0) < 1e-6 and abs((x1 - x0) - w * f) < 1e-6
                 and abs((y1 - y0) - h * f) < 1e-6)
        if exact:
            interp = cv2.INTER_AREA if f > 1 else cv2.INTER_LINEAR
            return cv2.resize(win, (w, h), interpolation=interp)
        # general case: affine map output px → window px (pixel-centre convention)
        if f > 1:  # pre-shrink by the integer part with area averaging, then bilinear
            k = int(f)
            if k > 1:
                hh, ww = win.shape[0] // k, win.shape[1] // k
                win = cv2.resize(win[:hh * k, :ww * k], (ww, hh), interpolation=cv2.INTER_AREA)
                lx, ly, x0, y0, f = lx / k, ly / k, x0 / k, y0 / k, f / k
        M = np.array([[f, 0, (lx - x0) + 0.5 * f - 0.5], [0, f, (ly - y0) + 0.5 * f - 0.5]], np.float64)
        return cv2.warpAffine(win, M, (w, h), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                              borderMode=cv2.BORDER_REPLICATE)

    def thumbnail(self, mpp: float) -> np.ndarray:
        """The whole slide at ``mpp`` (read in bounded blocks; pick ``mpp`` so that it is small)."""
        W0, H0 = self.dimensions
        s = mpp / self.mpp
        return self.read(0, 0, max(1, int(W0 / s)), max(1, int(H0 / s)), mpp)


# --------------------------------------------------------------------------------------
# tifffile backend
# --------------------------------------------------------------------------------------
_MPP_RE = re.compile(r"MPP\s*=\s*([0-9.eE+-]+)")


class TiffSlide(Slide):
    """Pyramidal tiled TIFF / OME-TIFF / SVS via tifffile, tile-level LRU cache."""

    backend = "tifffile"

    def _open(self):
        tifffile = require("tifffile", "the tifffile slide backend")
        tif = tifffile.TiffFile(self.path)
        try:
            series = tif.series[0]
            pages = []
            for lv in series.levels:
                if len(lv.pages) != 1:
                    raise SlideError(f"{self.path}: series level with {len(lv.pages)} pages (z-stack/channels) is not "
                                     "supported by the tifffile backend; try backend='openslide'")
                p = lv.pages[0]
                if not hasattr(p, "decode"):
                    p = p.keyframe
                if p.planarconfig != 1 and p.samplesperpixel > 1:
                    raise SlideError(f"{self.path}: planar-separate samples are not supported; try backend='openslide'")
                if len(p.shape) not in (2, 3):
                    raise SlideError(f"{self.path}: unsupported page shape {p.shape}")
                pages.append(p)
        except Exception:
            tif.close()
            raise
        self._pages = pages
        self._io_lock = threading.Lock()
        return tif

    def __getstate__(self):
        d = super().__getstate__()
        d.pop("_pages", None)
        d.pop("_io_lock", None)
        return d

    def _read_meta(self):
        tif = self._handle
        dims = [(p.imagewidth, p.imagelength) for p in self._pages]
        return dims, self._find_mpp(tif, self._pages[0])

    @staticmethod
    def _find_mpp(tif, page):
        if tif.is_ome and tif.ome_metadata:
            m = re.search(r'PhysicalSizeX="([0-9.eE+-]+)"', tif.ome_metadata)
            if m:
                u = re.search(r'PhysicalSizeXUnit="([^"]+)"', tif.ome_metadata)
                unit = u.group(1) if u else "µm"
                scale = {"µm": 1.0, "um": 1.0, "\u00b5m": 1.0, "nm": 1e-3, "mm": 1e3, "cm": 1e4, "m": 1e6}.get(unit)
                if scale:
                    return float(m.group(1)) * scale
        desc = page.description or ""
        m = _MPP_RE.search(desc)
        if m:
            try:
                return float(m.group(1))
            except ValueError:
                pass
        tags = page.tags
        if "XResolution" in tags and "ResolutionUnit" in tags:
            num, den = tags["XResolution"].value
            unit = int(tags["ResolutionUnit"].value)
            if num > 0 and den > 0 and unit in (2, 3):
                ppu = num / den
                if ppu > 1:  # 1 px/unit is the "no resolution" default
                    return (25400.0 if unit == 2 else 1e4) / ppu
        return None

    def _tile(self, level: int, index: int) -> np.ndarray:
        key = (level, index)
        t = self._cache.get(key)
        if t is not None:
            return t
        page = self._pages[level]
        off, n = page.dataoffsets[index], page.databytecounts[index]
        if n:
            with self._io_lock:
                fh = self._handle.filehandle
                fh.seek(off)
                data = fh.read(n)
            if len(data) != n:
                raise SlideError(f"{self.path}: truncated file (tile {index} of level {level} needs {n} bytes at {off})")
        else:
            data = None
        seg = page.decode(data, index, jpegtables=page.jpegtables, jpegheader=getattr(page, "jpegheader", None))[0]
        if seg is None:
            raise SlideError(f"{self.path}: tile {index} of level {level} could not be decoded")
        seg = np.asarray(seg)
        seg = seg.reshape(seg.shape[-3:]) if seg.ndim >= 3 else seg
        if seg.ndim == 2:
            seg = seg[..., None]
        t = _to_rgb(seg)
        self._cache.put(key, t)
        return t

    def _read_level(self, level, x, y, w, h):
        page = self._pages[level]
        if page.is_tiled:
            th, tw = page.tilelength, page.tilewidth
        else:
            th, tw = page.rowsperstrip, page.imagewidth
            th = min(th, page.imagelength)
        nx = -(-page.imagewidth // tw)
        out = np.empty((h, w, 3), np.uint8)
        for ty in range(y // th, (y + h - 1) // th + 1):
            for tx in range(x // tw, (x + w - 1) // tw + 1):
                t = self._tile(level, ty * nx + tx)
                gy, gx = ty * th, tx * tw
                a0, a1 = max(y, gy), min(y + h, gy + th)
                b0, b1 = max(x, gx), min(x + w, gx + tw)
                out[a0 - y:a1 - y, b0 - x:b1 - x] = t[a0 - gy:a1 - gy, b0 - gx:b1 - gx]
        return out


# --------------------------------------------------------------------------------------
# OpenSlide backend
# --------------------------------------------------------------------------------------
class OpenSlideSlide(Slide):
    """OpenSlide (SVS, NDPI, MRXS, SCN, generic tiled TIFF, …)."""

    backend = "openslide"

    def _open(self):
        openslide = require("openslide", "the OpenSlide slide backend (also: pip install openslide-bin)")
        try:
            s = openslide.OpenSlide(str(self.path))
        except openslide.OpenSlideError as e:
            raise SlideError(f"OpenSlide cannot read {self.path}: {e}") from e
        except openslide.OpenSlideUnsupportedFormatError as e:  # pragma: no cover - subclass order varies
            raise SlideError(f"OpenSlide does not support the format of {self.path}: {e}") from e
        if hasattr(openslide, "OpenSlideCache") and self.cache_bytes > 0:
            s.set_cache(openslide.OpenSlideCache(self.cache_bytes))
        return s

    def _read_meta(self):
        s = self._handle
        mpp = s.properties.get("openslide.mpp-x")
        try:
            mpp = float(mpp) if mpp is not None else None
        except ValueError:
            mpp = None
        return list(s.level_dimensions), mpp

    def _read_level(self, level, x, y, w, h):
        s = self._handle
        ds = s.level_downsamples[level]
        img = s.read_region((int(round(x * ds)), int(round(y * ds))), level, (w, h))
        return _to_rgb(np.asarray(img))


# --------------------------------------------------------------------------------------
# cuCIM backend
# --------------------------------------------------------------------------------------
class CuCIMSlide(Slide):
    """cuCIM ``CuImage`` (GPU-accelerated decode of TIFF/SVS when cuCIM is installed)."""

    backend = "cucim"

    def _open(self):
        cucim = require("cucim", "the cuCIM slide backend (pip install cucim-cu12)")
        return cucim.CuImage(str(self.path))

    def _read_meta(self):
        img = self._handle
        res = img.resolutions
        dims = [tuple(d) for d in res["level_dimensions"]]
        mpp = None
        try:
            sp = img.spacing()
            units = img.spacing_units()
            if sp and units and str(units[0]).lower() in ("micrometer", "µm", "um", "micron"):
                mpp = float(sp[1] if len(sp) > 1 else sp[0])
        except Exception:  # noqa: BLE001
            mpp = None
        if mpp is None:
            meta = getattr(img, "metadata", "") or ""
            m = _MPP_RE.search(str(meta))
            mpp = float(m.group(1)) if m else None
        return dims, mpp

    def _read_level(self, level, x, y, w, h):
        ds = self._handle.resolutions["level_downsamples"][level]
        r = self._handle.read_region(location=(int(round(x * ds)), int(round(y * ds))), size=(w, h), level=level)
        return _to_rgb(np.asarray(r))


_CLASSES = {"tifffile": TiffSlide, "openslide": OpenSlideSlide, "cucim": CuCIMSlide}


def _is_tiff(path: Path) -> bool:
    try:
        with open(path, "rb") as f:
            head = f.read(4)
    except OSError:
        return False
    return head[:2] in (b"II", b"MM") and head[2:4] in (b"*\x00", b"\x00*", b"+\x00", b"\x00+")


def open_slide(path, backend: str = "auto", *, mpp: float | None = None,
               cache_bytes: int = DEFAULT_CACHE_BYTES) -> Slide:
    """Open a whole-slide image. ``mpp`` overrides (or supplies) level-0 microns per pixel."""
    if isinstance(path, Slide):
        return path
    if backend not in BACKENDS:
        raise ConfigError(f"backend must be one of {BACKENDS}, got {backend!r}")
    path = Path(path)
    if not path.exists():
        raise SlideError(f"slide file not found: {path}")
    if backend == "auto":
        name = path.name.lower()
        if name.endswith(_TIFF_SUFFIXES):
            backend = "tifffile"
        elif available("openslide"):
            backend = "openslide"
        elif _is_tiff(path):
            backend = "tifffile"
        else:
            raise SlideError(f"no backend for {path}: install OpenSlide (pip install openslide-python openslide-bin)")
    return _CLASSES[backend](path, mpp=mpp, cache_bytes=cache_bytes)
