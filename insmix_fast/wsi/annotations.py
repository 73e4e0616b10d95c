"""Nuclei annotations of a slide: polygons in flat arrays, a grid index, on-the-fly rasterization.

Coordinates are **level-0 pixels with the pixel-edge convention** used by QuPath:
pixel ``(r, c)`` covers ``[c, c+1) × [r, r+1)``, so its centre is ``(c + 0.5, r + 0.5)``.
(HoVer-Net JSON contours run through boundary-pixel indices and HoVer-Net fills them
inclusively; :func:`read_hovernet_json` adds 0.5 and grows each contour by 0.5 px with
mitre joins (shapely), which covers the same pixels under the rule below.)

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

Readers: :func:`read_geojson` (QuPath "Export objects as GeoJSON": a FeatureCollection,
a list of Features or one Feature; Polygon and MultiPolygon geometries; a cell's
``nucleusGeometry`` is used when present), :func:`read_hovernet_json` (``{"nuc": {id:
{"contour": [[x, y], ...]}}}``), :meth:`Annotations.load` (the compact ``.npz`` form,
:meth:`Annotations.save`). :func:`load_annotations` picks by suffix.
"""

from __future__ import annotations

import json
import math
import re
import struct
import zipfile
from array import array
from pathlib import Path

import numba
import numpy as np

from ..errors import ConfigError, InputError, ReaderError
from ._optional import require

__all__ = ["Annotations", "read_geojson", "read_hovernet_json", "load_annotations"]

_CELL = 256  # grid-index cell size, level-0 px


@numba.njit(cache=True, nogil=True)
def _raster_polys(out, pts, ring_off, poly_off, polys, ids, x0, y0, inv_s):
    """Scanline even-odd fill of polygons ``polys`` into ``out`` (first claim wins).

    Vertex (X, Y) maps to output coordinate ((X - x0) * inv_s - 0.5, (Y - y0) * inv_s - 0.5)
    in which output pixel (r, c) is centred on (c, r).
    """
    H, W = out.shape
    xs = np.empty(64, np.float64)
    for k in range(polys.shape[0]):
        p = polys[k]
        lab = ids[k]
        rs, re_ = poly_off[p], poly_off[p + 1]
        # bbox
        ymin, ymax = 1e300, -1e300
        for e in range(ring_off[rs], ring_off[re_]):
            v = (pts[e, 1] - y0) * inv_s - 0.5
            ymin = min(ymin, v)
            ymax = max(ymax, v)
        r0 = max(int(math.ceil(ymin)), 0)
        r1 = min(int(math.floor(ymax)), H - 1)
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
            # insertion sort
            for i in range(1, n):
                v = xs[i]
                j = i - 1
                while j >= 0 and xs[j] > v:
                    xs[j + 1] = xs[j]
                    j -= 1
                xs[j + 1] = v
            for i in range(0, n - 1, 2):
                c0 = max(int(math.ceil(xs[i])), 0)
                c1 = min(int(math.ceil(xs[i + 1])) - 1, W - 1)
                for c in range(c0, c1 + 1):
                    if out[r, c] == 0:
                        out[r, c] = lab


class Annotations:
    """Polygons of one slide in flat arrays with a uniform-grid spatial index.

    ``points`` (P×2 float32 — 1/64 px resolution up to 131k px —, x/y level-0, edge convention), ``ring_offsets`` (R+1: ring
    ``i`` is ``points[ring_offsets[i]:ring_offsets[i+1]]``), ``poly_offsets`` (N+1:
    polygon ``j`` is rings ``poly_offsets[j]:poly_offsets[j+1]``, the first its
    exterior). Picklable (plain arrays).
    """

    def __init__(self, points, ring_offsets, poly_offsets, *, source: str = "", cell: int = _CELL,
                 _index=None, _file=None) -> None:
        self.points = np.ascontiguousarray(points, np.float32).reshape(-1, 2)
        self.ring_offsets = np.ascontiguousarray(ring_offsets, np.int64)
        self.poly_offsets = np.ascontiguousarray(poly_offsets, np.int64)
        self.source = str(source)
        self._file = _file
        n = len(self.poly_offsets) - 1
        if n < 0 or self.ring_offsets[-1] != len(self.points) or self.poly_offsets[-1] != len(self.ring_offsets) - 1:
            raise ReaderError(f"inconsistent annotation arrays ({self.source or 'in memory'})")
        if _index is not None:  # a saved store: validated when it was written
            self.bbox, self.cell, self._gshape, self._cell_off, self._cell_ids = _index
            if len(self.bbox) != n:
                raise ReaderError(f"inconsistent annotation index ({self.source})")
            return
        if not np.isfinite(self.points).all():
            raise ReaderError(f"annotation coordinates must be finite ({self.source or 'in memory'})")
        self.cell = int(cell)
        # bounding boxes of exteriors+holes
        if n:
            starts = self.ring_offsets[self.poly_offsets[:-1]]
            ends = self.ring_offsets[self.poly_offsets[1:]]
            if (ends <= starts).any() or not np.array_equal(starts[1:], ends[:-1]):
                raise ReaderError(f"annotation polygons must have points, stored contiguously ({self.source})")
            x, y = self.points[:, 0], self.points[:, 1]
            self.bbox = np.stack([np.minimum.reduceat(x, starts), np.minimum.reduceat(y, starts),
                                  np.maximum.reduceat(x, starts), np.maximum.reduceat(y, starts)], 1).astype(np.float64)
        else:
            self.bbox = np.zeros((0, 4))
        self._build_index()

    @classmethod
    def from_parts(cls, points, ring_offsets, poly_offsets, source: str = "") -> "Annotations":
        return cls(points, ring_offsets, poly_offsets, source=source)

    @classmethod
    def from_polygons(cls, polygons, source: str = "") -> "Annotations":
        """From a list of polygons, each an ``(N, 2)`` exterior or a list ``[exterior, hole, ...]``."""
        pts, roff, poff = [], [0], [0]
        for p in polygons:
            rings = [p] if isinstance(p, np.ndarray) and p.ndim == 2 else list(p)
            for r in rings:
                r = np.asarray(r, np.float64).reshape(-1, 2)
                pts.append(r)
                roff.append(roff[-1] + len(r))
            poff.append(poff[-1] + len(rings))
        P = np.concatenate(pts) if pts else np.zeros((0, 2))
        return cls(P, roff, poff, source=source)

    def _build_index(self) -> None:
        n = len(self)
        if n == 0:
            self._gshape = (0, 0)
            self._cell_off = np.zeros(1, np.int64)
            self._cell_ids = np.zeros(0, np.int64)
            return
        c = self.cell
        lo = np.floor(self.bbox[:, :2] / c).astype(np.int64)
        hi = np.floor(self.bbox[:, 2:] / c).astype(np.int64)
        lo = np.maximum(lo, 0)
        hi = np.maximum(hi, lo)
        gx, gy = int(hi[:, 0].max()) + 1, int(hi[:, 1].max()) + 1
        self._gshape = (gy, gx)
        nx = hi[:, 0] - lo[:, 0] + 1
        ny = hi[:, 1] - lo[:, 1] + 1
        cnt = nx * ny
        pid = np.repeat(np.arange(n, dtype=np.int64), cnt)
        k = np.arange(cnt.sum()) - np.repeat(np.cumsum(cnt) - cnt, cnt)
        cx = lo[pid, 0] + k % nx[pid]
        cy = lo[pid, 1] + k // nx[pid]
        cell_id = cy * gx + cx
        order = np.lexsort((pid, cell_id))
        self._cell_ids = pid[order]
        counts = np.bincount(cell_id, minlength=gx * gy)
        self._cell_off = np.zeros(gx * gy + 1, np.int64)
        np.cumsum(counts, out=self._cell_off[1:])

    def __len__(self) -> int:
        return len(self.poly_offsets) - 1

    def __repr__(self) -> str:
        return f"Annotations({len(self)} polygons, source={self.source!r})"

    def query(self, x0: float, y0: float, x1: float, y1: float) -> np.ndarray:
        """Ids (document order) of polygons whose bounding box meets ``[x0, x1) × [y0, y1)``."""
        if len(self) == 0:
            return np.zeros(0, np.int64)
        gy, gx = self._gshape
        c = self.cell
        cx0, cy0 = max(int(x0 // c), 0), max(int(y0 // c), 0)
        cx1, cy1 = min(int((x1 - 1e-9) // c), gx - 1), min(int((y1 - 1e-9) // c), gy - 1)
        if cx1 < cx0 or cy1 < cy0:
            return np.zeros(0, np.int64)
        parts = [self._cell_ids[self._cell_off[cy * gx + cx0]:self._cell_off[cy * gx + cx1 + 1]]
                 for cy in range(cy0, cy1 + 1)]
        cand = np.unique(np.concatenate(parts))
        b = self.bbox[cand]
        keep = (b[:, 0] < x1) & (b[:, 2] >= x0) & (b[:, 1] < y1) & (b[:, 3] >= y0)
        return cand[keep]

    def rasterize(self, x0: float, y0: float, shape: tuple[int, int], scale: float = 1.0, *,
                  ids: np.ndarray | None = None, clean: bool = True) -> np.ndarray:
        """Instance map (int32 ``shape``) of the patch whose top-left is level-0 ``(x0, y0)``
        and whose pixels are ``scale`` level-0 px wide (``scale = mpp / slide_mpp``).

        ``ids``: draw only these polygons (default: all that meet the patch).
        """
        H, W = int(shape[0]), int(shape[1])
        if scale <= 0:
            raise InputError(f"scale must be positive, got {scale}")
        if ids is None:
            ids = self.query(x0, y0, x0 + W * scale, y0 + H * scale)
        ids = np.asarray(ids, np.int64)
        out = np.zeros((H, W), np.int32)
        if ids.size == 0:
            return out
        ids = np.sort(ids)
        _raster_polys(out, self.points, self.ring_offsets, self.poly_offsets, ids,
                      np.arange(1, ids.size + 1, dtype=np.int32), float(x0), float(y0), 1.0 / float(scale))
        if clean:
            from ..data.labels import clean_labels, relabel_sequential

            out = clean_labels(out, fill_holes=False, split="largest")
            out = relabel_sequential(out)[0]
        return out

    # -- persistence -------------------------------------------------------------------
    def save(self, path) -> Path:
        """Write the uncompressed ``.npz`` store (arrays + spatial index), memory-mappable by :meth:`load`."""
        path = Path(path)
        with open(path, "wb") as f:
            np.savez(f, points=self.points, ring_offsets=self.ring_offsets, poly_offsets=self.poly_offsets,
                     bbox=self.bbox, cell_off=self._cell_off, cell_ids=self._cell_ids,
                     grid=np.array([self.cell, *self._gshape], np.int64), source=np.array(self.source))
        return path

    @classmethod
    def load(cls, path, mmap: bool = True) -> "Annotations":
        """Read a store written by :meth:`save`. ``mmap``: map the arrays read-only from the
        file instead of reading them (pages shared by all processes, read on demand); the
        object then pickles as its path and re-maps the file where it is unpickled."""
        path = Path(path)
        try:
            arrays = _read_npz(path, mmap)
            index = None
            if all(k in arrays for k in ("bbox", "cell_off", "cell_ids", "grid")):
                g = [int(v) for v in arrays["grid"]]
                index = (arrays["bbox"], g[0], (g[1], g[2]), arrays["cell_off"], arrays["cell_ids"])
            return cls(arrays["points"], arrays["ring_offsets"], arrays["poly_offsets"], source=str(path),
                       _index=index, _file=(str(path), mmap) if mmap else None)
        except ReaderError:
            raise
        except Exception as e:  # noqa: BLE001
            raise ReaderError(f"cannot read annotations {path}: {type(e).__name__}: {e}") from e

    def __getstate__(self):
        if self._file is not None:
            return {"_file": self._file}
        return self.__dict__.copy()

    def __setstate__(self, d):
        if "points" not in d:
            other = Annotations.load(d["_file"][0], mmap=d["_file"][1])
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


def _rings_of(geom, path, k):
    t = geom.get("type") if isinstance(geom, dict) else None
    coords = geom.get("coordinates") if isinstance(geom, dict) else None
    if t == "Polygon":
        polys = [coords]
    elif t == "MultiPolygon":
        polys = coords
    else:
        return None
    rings = []
    try:
        for poly in polys:
            for ring in poly:
                r = np.asarray(ring, np.float64)
                if r.ndim != 2 or r.shape[1] < 2:
                    raise ValueError("ring is not a list of [x, y]")
                r = r[:, :2]
                if len(r) > 1 and np.array_equal(r[0], r[-1]):
                    r = r[:-1]
                rings.append(r)
    except (ValueError, TypeError) as e:
        raise ReaderError(f"{path}: feature {k} has malformed coordinates ({e})") from e
    return rings


def _validate(rings, path, k, degenerate):
    bad = None
    if not rings or len(rings[0]) < 3:
        bad = "fewer than 3 vertices"
    elif not all(np.isfinite(r).all() for r in rings):
        bad = "non-finite coordinate"
    else:
        e = rings[0]
        area = 0.5 * abs(np.dot(e[:, 0], np.roll(e[:, 1], -1)) - np.dot(e[:, 1], np.roll(e[:, 0], -1)))
        if area == 0:
            bad = "zero area"
    if bad and degenerate == "raise":
        raise ReaderError(f"{path}: feature {k} is degenerate ({bad}); pass degenerate='skip' to drop such features")
    return bad is None


class _Builder:
    """Polygons accumulated into flat, amortised-growth arrays (no per-polygon objects kept)."""

    def __init__(self) -> None:
        self.pts = np.empty((1024, 2), np.float32)
        self.n = 0
        self.ring_lens = array("q")
        self.poly_rings = array("q")

    def add(self, rings) -> None:
        m = sum(len(r) for r in rings)
        if self.n + m > len(self.pts):
            grown = np.empty((max(2 * len(self.pts), self.n + m), 2), np.float32)
            grown[: self.n] = self.pts[: self.n]
            self.pts = grown
        for r in rings:
            self.pts[self.n:self.n + len(r)] = r
            self.n += len(r)
            self.ring_lens.append(len(r))
        self.poly_rings.append(len(rings))

    def build(self, source: str) -> "Annotations":
        roff = np.zeros(len(self.ring_lens) + 1, np.int64)
        np.cumsum(np.frombuffer(self.ring_lens, np.int64), out=roff[1:])
        poff = np.zeros(len(self.poly_rings) + 1, np.int64)
        np.cumsum(np.frombuffer(self.poly_rings, np.int64), out=poff[1:])
        return Annotations(self.pts[: self.n].copy(), roff, poff, source=source)


def _iter_features(path: Path, chunk: int = 1 << 20):
    """Features of a GeoJSON file, decoded one at a time from a sliding text buffer.

    A FeatureCollection's ``features`` array (or a top-level array of features) is read
    incrementally, so memory holds one chunk and one feature, not the document. Other
    documents (one Feature or geometry) are small and parsed whole.
    """
    dec = json.JSONDecoder()
    with open(path, encoding="utf-8") as f:
        buf = f.read(chunk)
        eof = len(buf) < chunk
        i = len(buf) - len(buf.lstrip())
        if i >= len(buf):
            raise ReaderError(f"{path} is empty")
        if buf[i] == "{":
            m = re.search(r'"features"\s*:\s*\[', buf)
            while m is None and not eof:
                more = f.read(chunk)
                eof = len(more) < chunk
                buf += more
                m = re.search(r'"features"\s*:\s*\[', buf)
            if m is None:  # a single Feature / geometry
                doc = json.loads(buf)
                if isinstance(doc, dict) and doc.get("type") == "Feature":
                    yield doc
                elif isinstance(doc, dict) and doc.get("type") in ("Polygon", "MultiPolygon"):
                    yield {"type": "Feature", "geometry": doc}
                else:
                    raise ReaderError(f"{path} is not a GeoJSON FeatureCollection, Feature or list of features")
                return
            pos = m.end()
        elif buf[i] == "[":
            pos = i + 1
        else:
            raise ReaderError(f"{path} is not JSON (starts with {buf[i:i + 20]!r})")
        while True:
            while True:  # skip separators
                while pos < len(buf) and buf[pos] in " \t\r\n,":
                    pos += 1
                if pos < len(buf) or eof:
                    break
                buf, pos = f.read(chunk), 0
                eof = len(buf) < chunk
            if pos >= len(buf):
                raise ReaderError(f"{path}: unexpected end of file inside the features array")
            if buf[pos] == "]":
                return
            while True:
                try:
                    obj, end = dec.raw_decode(buf, pos)
                    break
                except json.JSONDecodeError as e:
                    if eof:
                        raise ReaderError(f"cannot read GeoJSON {path}: {e}") from e
                    more = f.read(max(chunk, len(buf)))
                    eof = len(more) < max(chunk, len(buf))
                    buf, pos = buf[pos:] + more, 0
            yield obj
            pos = end
            if pos > chunk:
                buf, pos = buf[pos:], 0


def read_geojson(path, *, classes=None, degenerate: str = "raise") -> Annotations:
    """Nuclei polygons from a QuPath GeoJSON export (level-0 px, edge convention).

    ``classes``: keep only features whose ``properties.classification.name`` is in it.
    Non-polygon features (points, lines) are ignored. ``degenerate``: ``"raise"`` or
    ``"skip"`` polygons with < 3 vertices, non-finite coordinates or zero area. The file
    is parsed feature by feature into flat arrays (memory ≈ the result, not the JSON).
    """
    if degenerate not in ("raise", "skip"):
        raise ConfigError(f"degenerate must be 'raise' or 'skip', got {degenerate!r}")
    path = Path(path)
    classes = None if classes is None else set(classes)
    out, skipped = _Builder(), 0
    try:
        for k, ft in enumerate(_iter_features(path)):
            if not isinstance(ft, dict):
                raise ReaderError(f"{path}: feature {k} is not an object")
            if classes is not None:
                cl = (ft.get("properties") or {}).get("classification") or {}
                if (cl.get("name") if isinstance(cl, dict) else cl) not in classes:
                    continue
            geom = ft.get("nucleusGeometry") or ft.get("geometry")
            rings = _rings_of(geom, path, k)
            if rings is None:
                continue
            if _validate(rings, path, k, degenerate):
                out.add(rings)
            else:
                skipped += 1
    except (OSError, UnicodeDecodeError, ValueError) as e:
        if isinstance(e, ReaderError):
            raise
        raise ReaderError(f"cannot read GeoJSON {path}: {e}") from e
    if skipped:
        import warnings

        warnings.warn(f"{path}: skipped {skipped} degenerate polygon(s)", stacklevel=2)
    return out.build(str(path))


def read_hovernet_json(path, *, degenerate: str = "raise") -> Annotations:
    """HoVer-Net inference JSON (``{"nuc": {id: {"contour": [[x, y], ...], ...}}}``)."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            doc = json.load(f)
    except (OSError, ValueError) as e:
        raise ReaderError(f"cannot read HoVer-Net JSON {path}: {e}") from e
    nuc = doc.get("nuc") if isinstance(doc, dict) else None
    if not isinstance(nuc, dict):
        raise ReaderError(f"{path} has no 'nuc' object (HoVer-Net JSON expected)")
    shapely = require("shapely", "reading HoVer-Net contours")
    keys = sorted(nuc, key=lambda s: (len(str(s)), str(s)))
    polys = []
    for k in keys:
        c = nuc[k].get("contour") if isinstance(nuc[k], dict) else None
        try:
            r = np.asarray(c, np.float64).reshape(-1, 2) + 0.5
        except (ValueError, TypeError) as e:
            raise ReaderError(f"{path}: nucleus {k} has a malformed contour ({e})") from e
        if not _validate([r], path, k, degenerate):
            continue
        polys.append(_centre_contour_to_outline(shapely, r))
    return Annotations.from_polygons(polys, source=str(path))


def _centre_contour_to_outline(shapely, r: np.ndarray) -> list[np.ndarray]:
    """A contour through boundary-pixel centres (cv2.findContours, filled inclusively by
    HoVer-Net's ``cv2.drawContours``) → the outline 0.5 px further out (mitre joins), whose
    pixel-centre fill covers the same pixels."""
    g = shapely.Polygon(r)
    if not g.is_valid:
        g = shapely.make_valid(g)
    g = g.buffer(0.5, join_style="mitre", mitre_limit=3.0)
    parts = list(getattr(g, "geoms", [g]))
    rings = []
    for part in parts:
        if part.geom_type != "Polygon" or part.is_empty:
            continue
        rings.append(np.asarray(part.exterior.coords)[:-1, :2])
        rings.extend(np.asarray(h.coords)[:-1, :2] for h in part.interiors)
    return rings if rings else [r]


def load_annotations(path, **kw) -> Annotations:
    """By suffix: ``.npz`` (compact store), ``.geojson``; ``.json`` is GeoJSON unless it has ``"nuc"``."""
    if isinstance(path, Annotations):
        return path
    path = Path(path)
    s = path.suffix.lower()
    if s == ".npz":
        return Annotations.load(path)
    if s == ".json":
        with open(path, "rb") as f:
            head = f.read(4096)
        if b'"nuc"' in head:
            return read_hovernet_json(path, **kw)
    return read_geojson(path, **kw)
