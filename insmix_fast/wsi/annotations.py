"""Nuclei annotations of a slide: polygons in flat arrays, a grid index, on-the-fly rasterization.

Coordinates are **level-0 pixels with the pixel-edge convention** used by QuPath:
pixel ``(r, c)`` covers ``[c, c+1) × [r, r+1)``, so its centre is ``(c + 0.5, r + 0.5)``.

Rasterization rule (:meth:`Annotations.rasterize`): an output pixel belongs to a polygon
when its **centre lies inside** the polygon under the even-odd rule over all of the
polygon's rings (exterior + holes, so holes stay background; MultiPolygon parts are
rings of the same nucleus). A centre exactly on an edge: left/top edges are inside,
right/bottom edges outside (half-open scanline rule), so two polygons sharing an edge
never both claim a pixel and never leave a gap between them. Polygons get ids in
document order; **where polygons overlap, the pixel belongs to the first one**. An
instance left in several pieces by that, or by the patch border, keeps its largest piece
(:func:`~insmix_fast.data.clean_labels` ``split="largest"``, holes not filled), and ids
are then renumbered 1..K in document order.

HoVer-Net contours run through the centres of a nucleus' boundary pixels, and HoVer-Net
fills them inclusively (``cv2.drawContours``). Their vertices are stored +0.5 px (edge
convention) and the store is *closed*: a pixel whose centre lies on the contour belongs
to the nucleus too, so at level 0 the instance map is exactly HoVer-Net's.

**Types**: ``types`` holds a class id per polygon and ``class_names`` the names
(``class_names[0] == "background"``); ``rasterize(..., with_types=True)`` also returns
the H×W int32 type map (0 on background, the polygon's class id ≥ 1 on its pixels).
QuPath classes (``properties.classification.name``) are numbered in order of first
appearance; HoVer-Net keeps its ``type`` ids (see :func:`~insmix_fast.wsi.jsonscan.class_table`).
Files without any class are untyped (``class_names is None``).

Reading: :func:`load_annotations` (what :class:`~insmix_fast.wsi.WSIPatchSource` uses)
converts a GeoJSON / HoVer-Net JSON file **once** into the memory-mapped annotation
store (:mod:`insmix_fast.wsi.store`: streaming parser, cache beside the file or in a
cache folder, safe under concurrent opens) and maps it on every later open, in any
process. :func:`read_geojson` / :func:`read_hovernet_json` parse into memory without a
cache; :meth:`Annotations.save` / :meth:`Annotations.load` keep the older ``.npz`` form.
"""

from __future__ import annotations

import math
import os
import struct
import warnings
import zipfile
from pathlib import Path

import numba
import numpy as np

from ..data.polygons import MAX_COORD
from ..errors import InputError, ReaderError
from ..validation import check_choice
from .jsonscan import class_table, scan_annotations
from .spatial import CELL, GridIndex
from .store import STORE_SUFFIX, open_store, read_store

__all__ = ["Annotations", "read_geojson", "read_hovernet_json", "load_annotations"]

_CELL = CELL  # grid-index cell size, level-0 px


@numba.njit(cache=True, nogil=True)
def _mark(out, r, c, lab):
    if out[r, c] == 0:
        out[r, c] = lab


@numba.njit(cache=True, nogil=True)
def _raster_polys(out, pts, ring_off, poly_off, polys, ids, x0, y0, inv_s, closed):
    """Scanline even-odd fill of polygons ``polys`` into ``out`` (first claim wins).

    Vertex (X, Y) maps to output coordinate ((X - x0) * inv_s - 0.5, (Y - y0) * inv_s - 0.5)
    in which output pixel (r, c) is centred on (c, r). ``closed``: pixels whose centre lies
    exactly on an edge belong to the polygon too. Coordinates are clamped to the patch in
    floating point before any integer conversion.
    """
    H, W = out.shape
    fw = float(W)
    xs = np.empty(64, np.float64)
    for k in range(polys.shape[0]):
        p = polys[k]
        lab = ids[k]
        rs, re_ = poly_off[p], poly_off[p + 1]
        ymin, ymax = np.inf, -np.inf
        for e in range(ring_off[rs], ring_off[re_]):
            v = (pts[e, 1] - y0) * inv_s - 0.5
            ymin = min(ymin, v)
            ymax = max(ymax, v)
        r0 = max(int(math.ceil(max(ymin, -1.0))), 0)
        r1 = min(int(math.floor(min(ymax, float(H)))), H - 1)
        for r in range(r0, r1 + 1):
            yc = float(r)
            n = 0
            for ring in range(rs, re_):
                a, b = ring_off[ring], ring_off[ring + 1]
                m = b - a
                if m < 3:
                    continue
                for i in range(m):
                    ax = (pts[a + i, 0] - x0) * inv_s - 0.5
                    ay = (pts[a + i, 1] - y0) * inv_s - 0.5
                    j = a + (i + 1) % m
                    bx = (pts[j, 0] - x0) * inv_s - 0.5
                    by = (pts[j, 1] - y0) * inv_s - 0.5
                    if (ay <= yc) != (by <= yc):
                        if n == xs.shape[0]:
                            tmp = np.empty(2 * n, np.float64)
                            tmp[:n] = xs
                            xs = tmp
                        xs[n] = ax + (yc - ay) * (bx - ax) / (by - ay)
                        n += 1
                    if closed:  # centres on the outline
                        if ay == yc and by == yc:
                            lo = max(min(ax, bx), -1.0)
                            hi = min(max(ax, bx), fw)
                            for c in range(max(int(math.ceil(lo)), 0), min(int(math.floor(hi)), W - 1) + 1):
                                _mark(out, r, c, lab)
                        elif min(ay, by) <= yc <= max(ay, by):
                            x = ax + (yc - ay) * (bx - ax) / (by - ay)
                            if 0.0 <= x < fw and x == math.floor(x):
                                _mark(out, r, int(x), lab)
            # insertion sort
            for i in range(1, n):
                v = xs[i]
                j = i - 1
                while j >= 0 and xs[j] > v:
                    xs[j + 1] = xs[j]
                    j -= 1
                xs[j + 1] = v
            for i in range(0, n - 1, 2):
                c0 = max(int(math.ceil(max(xs[i], -1.0))), 0)
                c1 = min(int(math.ceil(min(xs[i + 1], fw + 1.0))) - 1, W - 1)
                for c in range(c0, c1 + 1):
                    _mark(out, r, c, lab)


def _ranges(starts: np.ndarray, ends: np.ndarray) -> np.ndarray:
    """Concatenation of ``arange(s, e)`` for each pair (int64)."""
    lens = ends - starts
    total = int(lens.sum())
    if total == 0:
        return np.zeros(0, np.int64)
    offs = np.repeat(starts - np.concatenate(([0], np.cumsum(lens)[:-1])), lens)
    return np.arange(total, dtype=np.int64) + offs


class Annotations:
    """Polygons of one slide in flat arrays with a sparse grid index.

    ``points`` (P×2 float32 — 1/64 px resolution up to 131k px —, x/y level-0, edge
    convention), ``ring_offsets`` (R+1: ring ``i`` is ``points[ring_offsets[i]:ring_offsets[i+1]]``),
    ``poly_offsets`` (N+1: polygon ``j`` is rings ``poly_offsets[j]:poly_offsets[j+1]``, the
    first its exterior), ``bbox`` (N×4 float64 ``x0, y0, x1, y1``), ``types`` (N int16 class
    ids or None) and ``class_names`` (tuple, ``[0] == "background"``, or None), ``closed``
    (outline pixels belong to the polygon: HoVer-Net). ``info``: the store header when the
    arrays come from an annotation store. Picklable: a mapped store or ``.npz`` pickles as
    its path and is re-mapped where it is unpickled.
    """

    def __init__(self, points, ring_offsets, poly_offsets, *, source: str = "", cell: int = _CELL,
                 types=None, class_names=None, closed: bool = False, _bbox=None, _index=None, _file=None,
                 _info=None) -> None:
        self.points = np.ascontiguousarray(points, np.float32).reshape(-1, 2)
        self.ring_offsets = np.ascontiguousarray(ring_offsets, np.int64)
        self.poly_offsets = np.ascontiguousarray(poly_offsets, np.int64)
        self.source = str(source)
        self.closed = bool(closed)
        self.info = _info
        self._file = _file
        where = self.source or "in memory"
        n = len(self.poly_offsets) - 1
        if n < 0 or self.ring_offsets[-1] != len(self.points) or self.poly_offsets[-1] != len(self.ring_offsets) - 1:
            raise ReaderError(f"inconsistent annotation arrays ({where})")
        self.class_names = None if class_names is None else tuple(str(c) for c in class_names)
        if types is None:
            if self.class_names is not None:
                raise InputError(f"class_names without types ({where})")
            self.types = None
        else:
            self.types = np.asarray(types)
            if self.types.shape != (n,) or not np.issubdtype(self.types.dtype, np.integer):
                raise InputError(f"types must be {n} integers (one per polygon), got {self.types.dtype} "
                                 f"{self.types.shape} ({where})")
            if self.class_names is None or not self.class_names or self.class_names[0] != "background":
                raise InputError(f"typed annotations need class_names with class_names[0] == 'background' ({where})")
            if n and (self.types.min() < 1 or self.types.max() >= len(self.class_names)):
                raise InputError(f"types must be class ids in [1, {len(self.class_names) - 1}], got "
                                 f"[{int(self.types.min())}, {int(self.types.max())}] ({where})")
        if _bbox is not None:  # from a store: validated when it was written
            self.bbox = _bbox
            self.cell = int(cell)
            self.index = _index if _index is not None else GridIndex.build(np.asarray(self.bbox), self.cell)
            if len(self.bbox) != n:
                raise ReaderError(f"inconsistent annotation index ({where})")
            return
        if not np.isfinite(self.points).all():
            raise ReaderError(f"annotation coordinates must be finite ({where})")
        if len(self.points) and np.abs(self.points).max() > MAX_COORD:
            raise ReaderError(f"absurd annotation coordinates: |x|, |y| must be ≤ 2^31 px ({where})")
        self.cell = int(cell)
        if n:
            starts = self.ring_offsets[self.poly_offsets[:-1]]
            ends = self.ring_offsets[self.poly_offsets[1:]]
            if (ends <= starts).any() or not np.array_equal(starts[1:], ends[:-1]):
                raise ReaderError(f"annotation polygons must have points, stored contiguously ({where})")
            x, y = self.points[:, 0], self.points[:, 1]
            self.bbox = np.stack([np.minimum.reduceat(x, starts), np.minimum.reduceat(y, starts),
                                  np.maximum.reduceat(x, starts), np.maximum.reduceat(y, starts)], 1).astype(np.float64)
        else:
            self.bbox = np.zeros((0, 4))
        self.index = GridIndex.build(self.bbox, self.cell)

    # -- construction ------------------------------------------------------------------
    @classmethod
    def from_parts(cls, points, ring_offsets, poly_offsets, source: str = "", **kw) -> "Annotations":
        return cls(points, ring_offsets, poly_offsets, source=source, **kw)

    @classmethod
    def from_polygons(cls, polygons, source: str = "", **kw) -> "Annotations":
        """From a list of polygons, each an ``(N, 2)`` exterior or a list ``[exterior, hole, ...]``
        (``types=``, ``class_names=``, ``closed=`` as in the constructor)."""
        pts, roff, poff = [], [0], [0]
        for p in polygons:
            rings = [p] if isinstance(p, np.ndarray) and p.ndim == 2 else list(p)
            for r in rings:
                r = np.asarray(r, np.float64).reshape(-1, 2)
                pts.append(r)
                roff.append(roff[-1] + len(r))
            poff.append(poff[-1] + len(rings))
        P = np.concatenate(pts) if pts else np.zeros((0, 2))
        return cls(P, roff, poff, source=source, **kw)

    @classmethod
    def from_store(cls, path, mmap: bool = True, *, type_names=None, _opened=None, source: str | None = None
                   ) -> "Annotations":
        """Map an annotation store file (``*.insmix-store``, :mod:`insmix_fast.wsi.store`) as is."""
        if _opened is None:
            arrays, header = read_store(path, mmap=mmap)
        else:
            arrays, header = _opened.arrays, _opened.header
        names = header.get("class_names")
        if names is not None and type_names is not None:
            names = _rename_types(names, header.get("source_types"), type_names)
        index = GridIndex(arrays["index_keys"], arrays["index_offsets"], arrays["index_ids"], arrays["index_big"],
                          header.get("cell", _CELL))
        src = source if source is not None else (header.get("source") or {}).get("path", str(path))
        return cls(arrays["points"], arrays["ring_offsets"], arrays["poly_offsets"], source=src,
                   cell=header.get("cell", _CELL), types=arrays["types"] if names is not None else None,
                   class_names=names, closed=header.get("closed", False), _bbox=arrays["bbox"], _index=index,
                   _file=(str(path), "store", mmap, type_names), _info=dict(header, store=str(path)))

    # -- basics ------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.poly_offsets) - 1

    def __repr__(self) -> str:
        typed = f", {len(self.class_names) - 1} classes" if self.class_names else ""
        return f"Annotations({len(self)} polygons{typed}, source={self.source!r})"

    @property
    def typed(self) -> bool:
        return self.class_names is not None

    @property
    def nbytes(self) -> int:
        """Bytes of the arrays (mapped or in memory)."""
        arrs = [self.points, self.ring_offsets, self.poly_offsets, np.asarray(self.bbox)]
        arrs += [] if self.types is None else [self.types]
        return int(sum(a.nbytes for a in arrs) + self.index.nbytes)

    def query(self, x0: float, y0: float, x1: float, y1: float) -> np.ndarray:
        """Ids (document order) of polygons whose bounding box meets ``[x0, x1) × [y0, y1)``."""
        if len(self) == 0:
            return np.zeros(0, np.int64)
        return self.index.query(self.bbox, x0, y0, x1, y1)

    def rasterize(self, x0: float, y0: float, shape: tuple[int, int], scale: float = 1.0, *,
                  ids: np.ndarray | None = None, clean: bool = True, with_types: bool = False):
        """Instance map (int32 ``shape``) of the patch whose top-left is level-0 ``(x0, y0)``
        and whose pixels are ``scale`` level-0 px wide (``scale = mpp / slide_mpp``).

        ``ids``: draw only these polygons (default: all that meet the patch).
        ``with_types``: return ``(labels, types)``, ``types`` the H×W int32 class map (0 on
        background, the polygon's class id on its pixels); needs typed annotations.
        """
        H, W = int(shape[0]), int(shape[1])
        if not (scale > 0 and math.isfinite(scale)):
            raise InputError(f"scale must be a positive number, got {scale}")
        if with_types and self.types is None:
            raise InputError(f"{self.source or 'these annotations'} carry no classes (class_names is None); "
                             "with_types=True needs typed annotations")
        if ids is None:
            ids = self.query(x0, y0, x0 + W * scale, y0 + H * scale)
        ids = np.asarray(ids, np.int64)
        out = np.zeros((H, W), np.int32)
        if ids.size == 0:
            return (out, np.zeros((H, W), np.int32)) if with_types else out
        ids = np.sort(ids)
        _raster_polys(out, self.points, self.ring_offsets, self.poly_offsets, ids,
                      np.arange(1, ids.size + 1, dtype=np.int32), float(x0), float(y0), 1.0 / float(scale),
                      self.closed)
        if clean:
            from ..data.labels import clean_labels

            out = clean_labels(out, fill_holes=False, split="largest")
        tmap = None
        if with_types:
            lut = np.zeros(ids.size + 1, np.int32)
            lut[1:] = self.types[ids]
            tmap = lut[out]
        if clean:
            from ..data.labels import relabel_sequential

            out = relabel_sequential(out)[0]
        return (out, tmap) if with_types else out

    def subset(self, keep) -> "Annotations":
        """A new in-memory :class:`Annotations` of the polygons ``keep`` (bool mask or ids), in order."""
        keep = np.asarray(keep)
        ids = np.flatnonzero(keep) if keep.dtype == np.bool_ else np.sort(keep.astype(np.int64))
        rings = _ranges(self.poly_offsets[ids], self.poly_offsets[ids + 1])
        pts = _ranges(self.ring_offsets[rings], self.ring_offsets[rings + 1])
        rlen = self.ring_offsets[rings + 1] - self.ring_offsets[rings]
        plen = self.poly_offsets[ids + 1] - self.poly_offsets[ids]
        roff = np.concatenate(([0], np.cumsum(rlen))).astype(np.int64)
        poff = np.concatenate(([0], np.cumsum(plen))).astype(np.int64)
        return Annotations(self.points[pts], roff, poff, source=self.source, cell=self.cell,
                           types=None if self.types is None else np.asarray(self.types)[ids],
                           class_names=self.class_names, closed=self.closed)

    def select_classes(self, names) -> "Annotations":
        """:meth:`subset` of the polygons whose class name is in ``names`` (class ids kept)."""
        if self.class_names is None:
            raise InputError(f"{self.source or 'these annotations'} carry no classes; cannot select {names!r}")
        names = set(names)
        known = [c for c, nm in enumerate(self.class_names) if c and nm in names]
        keep = np.isin(np.asarray(self.types), np.asarray(known, np.int64))
        return self.subset(keep)

    # -- persistence -------------------------------------------------------------------
    def save(self, path) -> Path:
        """Write the uncompressed ``.npz`` form (arrays + spatial index), memory-mappable by :meth:`load`.

        (Slides' GeoJSON / HoVer-Net files need no manual conversion: :func:`load_annotations`
        keeps an annotation store for them.)"""
        path = Path(path)
        extra = {}
        if self.types is not None:
            extra = dict(types=np.asarray(self.types, np.int16), class_names=np.array(self.class_names))
        tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
        try:
            with open(tmp, "wb") as f:
                np.savez(f, points=self.points, ring_offsets=self.ring_offsets, poly_offsets=self.poly_offsets,
                         bbox=np.asarray(self.bbox, np.float64), closed=np.array(self.closed),
                         grid=np.array([self.cell], np.int64), source=np.array(self.source),
                         **{"index_" + k: v for k, v in self.index.arrays().items()}, **extra)
            os.replace(tmp, path)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        return path

    @classmethod
    def load(cls, path, mmap: bool = True) -> "Annotations":
        """Read an ``.npz`` written by :meth:`save` (or an annotation store, by suffix).
        ``mmap``: map the arrays read-only from the file instead of reading them (pages shared
        by all processes, read on demand); the object then pickles as its path and re-maps the
        file where it is unpickled."""
        path = Path(path)
        if path.name.endswith(STORE_SUFFIX):
            return cls.from_store(path, mmap)
        try:
            a = _read_npz(path, mmap)
            bbox = index = None
            cell = _CELL
            if "grid" in a:
                g = [int(v) for v in a["grid"]]
                cell = g[0]
                if all("index_" + k in a for k in GridIndex.ARRAYS):
                    index = GridIndex(*(a["index_" + k] for k in GridIndex.ARRAYS), cell=cell)
                elif "cell_off" in a and "cell_ids" in a and len(g) == 3:  # dense index of older files
                    index = GridIndex.from_dense(a["cell_off"], a["cell_ids"], (g[1], g[2]), cell=cell)
                if index is not None and "bbox" in a:
                    bbox = a["bbox"]
            names = [str(v) for v in a["class_names"]] if "class_names" in a else None
            return cls(a["points"], a["ring_offsets"], a["poly_offsets"], source=str(path), cell=cell,
                       types=a.get("types") if names is not None else None, class_names=names,
                       closed=bool(a["closed"]) if "closed" in a else False, _bbox=bbox, _index=index,
                       _file=(str(path), "npz", mmap, None) if mmap else None)
        except (ReaderError, InputError):
            raise
        except Exception as e:  # noqa: BLE001
            raise ReaderError(f"cannot read annotations {path}: {type(e).__name__}: {e}") from e

    def __getstate__(self):
        if self._file is not None:
            return {"_file": self._file, "source": self.source}
        return self.__dict__.copy()

    def __setstate__(self, d):
        if "points" not in d:
            path, kind, mmap, type_names = d["_file"]
            if kind == "store":
                other = Annotations.from_store(path, mmap, type_names=type_names, source=d.get("source"))
            else:
                other = Annotations.load(path, mmap=mmap)
            d = other.__dict__
        self.__dict__.update(d)


def _read_npz(path: Path, mmap: bool) -> dict:
    """Arrays of an ``.npz``; stored (uncompressed) members are memory-mapped when ``mmap``."""
    out = {}
    with zipfile.ZipFile(path) as z:
        infos = z.infolist()
    with open(path, "rb") as f:
        for info in infos:
            name = info.filename[:-4] if info.filename.endswith(".npy") else info.filename
            if mmap and info.compress_type == zipfile.ZIP_STORED:
                f.seek(info.header_offset)
                head = f.read(30)
                if head[:4] != b"PK\x03\x04":
                    raise ReaderError(f"{path}: corrupt zip member {info.filename}")
                nlen, elen = struct.unpack("<HH", head[26:30])
                f.seek(info.header_offset + 30 + nlen + elen)
                version = np.lib.format.read_magic(f)
                if version == (1, 0):
                    shape, fortran, dtype = np.lib.format.read_array_header_1_0(f)
                else:
                    shape, fortran, dtype = np.lib.format.read_array_header_2_0(f)
                if dtype.hasobject:
                    raise ReaderError(f"{path}: object arrays are not allowed")
                off = f.tell()
                if int(np.prod(shape)) == 0 or dtype.kind == "U":
                    f.seek(off)
                    out[name] = np.fromfile(f, dtype=dtype, count=int(np.prod(shape))).reshape(shape)
                else:
                    out[name] = np.memmap(path, dtype=dtype, mode="r", offset=off, shape=shape,
                                          order="F" if fortran else "C")
            else:
                with zipfile.ZipFile(path) as z, z.open(info.filename) as m:
                    out[name] = np.lib.format.read_array(m, allow_pickle=False)
    return out




def _rename_types(names, source_types, type_names) -> tuple:
    """Class names of a HoVer-Net store renamed from ``type_names`` ({type id: name} or a
    HoVer-Net ``type_info.json``: {"1": ["neopla", [r, g, b]], ...})."""
    mapping = _type_names(type_names)
    names = list(names)
    for c, t in enumerate(source_types or []):
        if c and t is not None and t in mapping:
            names[c] = mapping[t]
    return tuple(names)


def _type_names(spec) -> dict:
    if spec is None:
        return {}
    if isinstance(spec, (str, os.PathLike)):
        import json

        try:
            spec = json.loads(Path(spec).read_text())
        except (OSError, ValueError) as e:
            raise ReaderError(f"cannot read HoVer-Net type names {spec}: {e}") from e
    try:
        return {int(k): str(v[0] if isinstance(v, (list, tuple)) else v) for k, v in dict(spec).items()}
    except (TypeError, ValueError) as e:
        raise InputError(f"type_names must map HoVer-Net type ids to names, got {spec!r}") from e


def _on_error(on_error: str, degenerate: str | None) -> str:
    if degenerate is not None:  # the older name of the argument
        on_error = degenerate
    return check_choice("on_error", on_error, ("raise", "skip"))


def _read_json(path, fmt: str, on_error: str, type_names=None) -> Annotations:
    """Parse a GeoJSON / HoVer-Net file into memory (no store)."""
    path = Path(os.fspath(path))
    parts: list[list] = [[], [], [], [], []]

    def sink(*arrays):
        for lst, a in zip(parts, arrays):
            lst.append(a.copy())

    info = scan_annotations(path, sink, expect=fmt, on_error=on_error)
    pts, rlen, nr, lab, bbox = (np.concatenate(p) if p else None for p in parts)
    if pts is None:
        pts, rlen, nr, lab, bbox = (np.zeros((0, 2), np.float32), np.zeros(0, np.int64), np.zeros(0, np.int64),
                                    np.zeros(0, np.int32), np.zeros((0, 4)))
    types, names, source_types = class_table(info.format, lab, info.raw_names)
    if names is not None and type_names is not None:
        names = _rename_types(names, source_types, type_names)
    if info.skipped:
        ex = "; ".join(f"feature {i} {why}" for i, why in info.skipped_examples[:3])
        warnings.warn(f"{path}: skipped {info.skipped} bad feature(s) ({ex})", stacklevel=3)
    roff = np.concatenate(([0], np.cumsum(rlen))).astype(np.int64)
    poff = np.concatenate(([0], np.cumsum(nr))).astype(np.int64)
    return Annotations(pts, roff, poff, source=str(path), types=types if names else None, class_names=names,
                       closed=info.format == "hovernet", _bbox=bbox)


def read_geojson(path, *, classes=None, on_error: str = "raise", degenerate: str | None = None) -> Annotations:
    """Nuclei polygons from a QuPath GeoJSON export, parsed into memory (no store; for
    slides use :func:`load_annotations`, which converts once and memory-maps).

    ``classes``: keep only polygons whose ``properties.classification.name`` is in it.
    Point / LineString features are ignored. ``on_error``: ``"raise"`` (default) a
    :class:`ReaderError` naming the first bad feature (no geometry, unsupported geometry,
    malformed coordinates, degenerate ring — :mod:`insmix_fast.data.polygons`), or
    ``"skip"`` such features (one warning with their count). ``degenerate`` is the older
    name of ``on_error``.
    """
    ann = _read_json(path, "geojson", _on_error(on_error, degenerate))
    return ann if classes is None else _select(ann, classes)


def read_hovernet_json(path, *, on_error: str = "raise", type_names=None, degenerate: str | None = None
                       ) -> Annotations:
    """HoVer-Net inference JSON (``{"nuc": {id: {"contour": [[x, y], ...], "type": t}}}``), in memory.

    ``type_names``: names of HoVer-Net's type ids ({id: name}, or the path of a
    ``type_info.json``); default ``"type_<id>"``. See :func:`read_geojson` for ``on_error``."""
    return _read_json(path, "hovernet", _on_error(on_error, degenerate), type_names)


def _select(ann: Annotations, classes) -> Annotations:
    if ann.class_names is None:
        return ann.subset(np.zeros(len(ann), bool))
    return ann.select_classes(classes)


def load_annotations(path, *, cache: bool = True, cache_dir=None, on_error: str = "raise", classes=None,
                     type_names=None, progress: bool | None = None, rebuild: bool = False,
                     degenerate: str | None = None) -> Annotations:
    """Annotations of a slide from a file, by suffix.

    * ``.geojson`` / ``.json`` (GeoJSON, or HoVer-Net when the top level has ``"nuc"``): the
      first open converts the file into its annotation store (streaming, bounded memory;
      :mod:`insmix_fast.wsi.store`) — beside the file when that folder is writable, else in
      ``cache_dir`` (default ``$INSMIX_FAST_CACHE_DIR`` or ``~/.cache/insmix_fast/annotations``)
      —, and every later open, in any process, memory-maps it. Concurrent first opens
      convert once. ``cache=False``: parse into memory, write nothing. ``rebuild``: convert
      again even when the store is fresh.
    * ``*.insmix-store``: that store, mapped. ``.npz``: :meth:`Annotations.load`.

    ``on_error``: ``"raise"`` (bad feature → :class:`ReaderError` naming it; no store is
    written) or ``"skip"`` (bad features left out and counted in ``ann.info``).
    ``classes``: keep only polygons of these class names (an in-memory subset).
    ``type_names``: HoVer-Net type id → name ({id: name} or a ``type_info.json`` path).
    ``progress``: a progress bar while converting (None: when stderr is a terminal).
    """
    if isinstance(path, Annotations):
        return path if classes is None else _select(path, classes)
    on_error = _on_error(on_error, degenerate)
    path = Path(os.fspath(path))
    name = path.name.lower()
    if name.endswith(STORE_SUFFIX):
        ann = Annotations.from_store(path, type_names=type_names)
    elif path.suffix.lower() == ".npz":
        ann = Annotations.load(path)
    elif not cache:
        ann = _read_json(path, "auto", on_error, type_names)
    else:
        opened = open_store(path, cache_dir=cache_dir, on_error=on_error, progress=progress, rebuild=rebuild)
        ann = Annotations.from_store(opened.path, type_names=type_names, _opened=opened, source=str(path))
        ann.info["built"] = opened.built
    return ann if classes is None else _select(ann, classes)
