"""Synthetic pyramidal whole-slide images (tiled TIFF) with matching nuclei annotations.

:func:`write_synthetic_slide` writes, fully offline:

* a **pyramidal tiled TIFF**: level 0 and reduced levels (downsample 4, 16, … by
  default) as main IFDs (what OpenSlide's generic-TIFF driver and tifffile both read),
  256×256 tiles, JPEG when ``imagecodecs`` is installed else deflate, resolution tags
  in pixels per centimetre (``1e4 / mpp``) plus ``ImageDescription`` ``"... |MPP = x"``;
* the nuclei outlines as a QuPath-style GeoJSON ``FeatureCollection`` of Polygons in
  level-0 pixel coordinates (pixel (0, 0) covers [0, 1)²) and/or the compact
  :class:`~insmix_fast.wsi.annotations.Annotations` ``.npz`` store. Outlines follow the
  pixel edges of each rendered nucleus (:func:`mask_outline`), so rasterizing them at
  level 0 gives back the rendered instance map.

Content model (fast, streaming). The slide is a mosaic of *generation tiles*
(``gen_tile`` = 512 px): tiles inside a smooth random tissue shape are synthetic H&E
tiles from :class:`~insmix_fast.data.SyntheticNuclei` (nuclei touching a generation
tile's border are removed before rendering, so no nucleus crosses a seam); the others
are near-white glass with noise. For big slides the tissue tiles repeat from a cache of
``unique_tiles`` distinct tiles (chosen per position by a hash) — enough for I/O and
memory benchmarks, not for learning. Each pyramid level is composed from the
per-level downsampled cache tiles (INTER_AREA, exact for aligned power-of-two blocks),
so the writer never holds a level in memory: it streams TIFF tiles to tifffile. Memory:
the distinct tiles (≈ 1 MiB each) plus the annotation arrays (≈ 8 bytes per outline
vertex, ~40 vertices per nucleus) when annotations are written.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from ..errors import ConfigError
from ..validation import check_choice

__all__ = ["write_synthetic_slide", "SyntheticSlide", "synthetic_tissue", "mask_outline"]


@dataclass(frozen=True)
class SyntheticSlide:
    """What :func:`write_synthetic_slide` wrote."""

    path: Path
    geojson: Path | None
    npz: Path | None
    size: tuple[int, int]  # (height, width) of level 0
    mpp: float
    downsamples: tuple[int, ...]
    n_nuclei: int
    n_tissue_tiles: int
    gen_tile: int
    compression: str


def _tissue_params(seed: int):
    rng = np.random.default_rng([seed, 0x7155])
    k = int(rng.integers(2, 5))
    cy = rng.uniform(0.3, 0.7, k)
    cx = rng.uniform(0.3, 0.7, k)
    ry = rng.uniform(0.15, 0.3, k)
    rx = rng.uniform(0.15, 0.3, k)
    th = rng.uniform(0, np.pi, k)
    return cy, cx, ry, rx, th


def synthetic_tissue(seed: int, ny: int, nx: int) -> np.ndarray:
    """The tissue layout: ``ny × nx`` bool grid of generation tiles (a union of ellipses)."""
    cy, cx, ry, rx, th = _tissue_params(seed)
    yy, xx = np.meshgrid((np.arange(ny) + 0.5) / ny, (np.arange(nx) + 0.5) / nx, indexing="ij")
    inside = np.zeros((ny, nx), bool)
    for a, b, c, d, t in zip(cy, cx, ry, rx, th):
        dy, dx = yy - a, xx - b
        u = dx * np.cos(t) + dy * np.sin(t)
        v = -dx * np.sin(t) + dy * np.cos(t)
        inside |= (u / d) ** 2 + (v / c) ** 2 <= 1.0
    return inside


class _TileCache:
    """Generation tiles: image per level + nuclei outlines (local level-0 coords)."""

    def __init__(self, seed: int, gen: int, downsamples, density: float, want_polys: bool = True):
        from ..data.synthetic import SyntheticNuclei

        self.want_polys = want_polys
        self.ds = SyntheticNuclei(seed=seed, size=gen, length=2**31 - 1, density=density, stain_jitter=0.03)
        self.gen = gen
        self.downsamples = downsamples
        self.tiles: dict[int, tuple[list[np.ndarray], list[np.ndarray]]] = {}
        rng = np.random.default_rng([seed, 0xB6])
        self.glass = []
        for _ in range(4):
            g = rng.normal(0, 2.0, (gen, gen)).astype(np.float32)
            base = np.array([243, 241, 244], np.float32)
            img = np.clip(base + g[..., None] + 0.5, 0, 255).astype(np.uint8)
            self.glass.append([self._down(img, d) for d in downsamples])

    def _down(self, img: np.ndarray, d: int) -> np.ndarray:
        if d == 1:
            return img
        s = self.gen // d
        return cv2.resize(img, (s, s), interpolation=cv2.INTER_AREA)

    def get(self, idx: int):
        t = self.tiles.get(idx)
        if t is None:
            labels = self.ds.geometry(idx)
            border = np.unique(np.concatenate([labels[0], labels[-1], labels[:, 0], labels[:, -1]]))
            lut = np.arange(int(labels.max()) + 1, dtype=np.int32)
            lut[border] = 0
            labels = lut[labels]
            image = self.ds.render(idx, labels)
            t = ([self._down(image, d) for d in self.downsamples], outlines(labels) if self.want_polys else [])
            self.tiles[idx] = t
        return t


def outlines(labels: np.ndarray) -> list[np.ndarray]:
    """:func:`mask_outline` of every instance of ``labels`` (increasing id), one bbox pass."""
    ys, xs = np.nonzero(labels)
    if ys.size == 0:
        return []
    ids = labels[ys, xs]
    top = int(ids.max()) + 1
    y0 = np.full(top, labels.shape[0]); x0 = np.full(top, labels.shape[1])
    y1 = np.full(top, -1); x1 = np.full(top, -1)
    np.minimum.at(y0, ids, ys); np.minimum.at(x0, ids, xs)
    np.maximum.at(y1, ids, ys); np.maximum.at(x1, ids, xs)
    out = []
    for k in np.flatnonzero(y1 >= 0):
        sub = labels[y0[k]:y1[k] + 1, x0[k]:x1[k] + 1] == k
        c = mask_outline(sub)
        if c is not None:
            out.append(c + np.array([x0[k], y0[k]], np.float32))
    return out


def mask_outline(mask: np.ndarray) -> np.ndarray | None:
    """The pixel-edge outline (x, y vertices, edge convention) of a mask's largest outer contour.

    Traced on the 2× nearest-upsampled mask, where a boundary pixel's index ``q`` maps to
    the pixel edge ``(q + 1) // 2``; for a 4-connected region without holes, filling the
    outline by the pixel-centre rule (:meth:`Annotations.rasterize`) gives the mask back.
    """
    ys, xs = np.nonzero(mask)
    if ys.size == 0:
        return None
    y0, x0 = ys.min(), xs.min()
    sub = np.ascontiguousarray(mask[y0:ys.max() + 1, x0:xs.max() + 1], np.uint8)
    up = np.repeat(np.repeat(sub, 2, 0), 2, 1)
    cs, _ = cv2.findContours(up, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    c = max(cs, key=cv2.contourArea).reshape(-1, 2)
    c = (c + 1) // 2
    keep = np.any(c != np.roll(c, 1, axis=0), axis=1)
    c = c[keep]
    if len(c) < 3:
        return None
    return (c + np.array([x0, y0])).astype(np.float32)


def _hash_index(ty: int, tx: int, n: int, seed: int) -> int:
    h = (ty * 0x9E3779B1 + tx * 0x85EBCA77 + seed * 0xC2B2AE3D) & 0xFFFFFFFF
    h ^= h >> 15
    h = (h * 0x2C1B3C6D) & 0xFFFFFFFF
    h ^= h >> 12
    return h % n


def write_synthetic_slide(
    path,
    size: int | tuple[int, int] = 4096,
    *,
    mpp: float = 0.25,
    seed: int = 0,
    downsamples: tuple[int, ...] | None = None,
    tile: int = 256,
    gen_tile: int = 512,
    unique_tiles: int | None = 256,
    density: float = 1.0,
    compression: str = "auto",
    annotations: str = "geojson",
    progress: bool = False,
) -> SyntheticSlide:
    """Write a synthetic pyramidal tiled TIFF at ``path`` and its nuclei annotations.

    Args:
        size: level-0 size, ``int`` (square) or ``(height, width)``.
        mpp: microns per pixel of level 0.
        downsamples: pyramid downsample factors, powers of two starting at 1; default
            ``1, 4, 16, …`` until the smallest level's long side is ≤ 2048 (at least 2 levels).
        tile: TIFF tile size. gen_tile: generation tile size (multiple of every downsample).
        unique_tiles: distinct tissue tiles; positions reuse them by hash (``None``: all distinct).
        compression: ``"jpeg"``, ``"deflate"`` or ``"auto"`` (JPEG when imagecodecs is installed).
        annotations: ``"geojson"`` (``path`` with ``.geojson``), ``"npz"``, ``"both"`` or ``"none"``.

    >>> import tempfile, pathlib
    >>> d = pathlib.Path(tempfile.mkdtemp())
    >>> info = write_synthetic_slide(d / "s.tif", 512, gen_tile=256, unique_tiles=2, annotations="both")
    >>> info.size, info.downsamples, info.geojson.name, info.npz.name
    ((512, 512), (1, 4), 's.geojson', 's.npz')
    """
    from .annotations import Annotations

    path = Path(path)
    H, W = (int(size), int(size)) if np.isscalar(size) else (int(size[0]), int(size[1]))
    downsamples, compression = _check_slide_args(H, W, downsamples, gen_tile, annotations, compression)
    layout = _Layout(H, W, gen_tile, seed, unique_tiles, _TileCache(seed, gen_tile, downsamples, density,
                                                                     want_polys=annotations != "none"))
    _write_pyramid(path, layout, downsamples, tile, mpp, seed, compression, progress)
    pts, off = _gather_outlines(layout)
    geo = npz = None
    if annotations in ("npz", "both"):
        ann = Annotations.from_parts(pts, off, np.arange(len(off), dtype=np.int64), source=str(path))
        npz = ann.save(path.with_suffix(".npz"))
    if annotations in ("geojson", "both"):
        geo = path.with_suffix(".geojson")
        _write_geojson(geo, pts, off)
    return SyntheticSlide(path, geo, npz, (H, W), float(mpp), downsamples, len(off) - 1, int(layout.tissue.sum()),
                          gen_tile, compression)


def _check_slide_args(H: int, W: int, downsamples, gen_tile: int, annotations: str,
                      compression: str) -> tuple[tuple[int, ...], str]:
    """Checked ``(downsamples, compression)`` of :func:`write_synthetic_slide` (defaults resolved)."""
    if min(H, W) < 64:
        raise ConfigError(f"size must be at least 64 px, got {(H, W)}")
    if downsamples is None:
        downsamples = [1, 4]
        while max(H, W) / downsamples[-1] > 2048:
            downsamples.append(downsamples[-1] * 4)
    downsamples = tuple(int(d) for d in downsamples)
    if downsamples[0] != 1 or any(d & (d - 1) for d in downsamples) or list(downsamples) != sorted(set(downsamples)):
        raise ConfigError(f"downsamples must be increasing powers of two starting at 1, got {downsamples}")
    if gen_tile % downsamples[-1] or gen_tile % 16:
        raise ConfigError(f"gen_tile={gen_tile} must be a multiple of 16 and of every downsample {downsamples}")
    check_choice("annotations", annotations, ("geojson", "npz", "both", "none"))
    if compression == "auto":
        try:
            import imagecodecs  # noqa: F401

            compression = "jpeg"
        except ImportError:
            compression = "deflate"
    check_choice("compression", compression, ("jpeg", "deflate", "zlib", "none"))
    return downsamples, compression


class _Layout:
    """Which generation tile covers which cell of the slide, and their pixels per level."""

    def __init__(self, H: int, W: int, gen: int, seed: int, unique_tiles: int | None, cache: _TileCache):
        self.H, self.W, self.G, self.seed = H, W, gen, seed
        self.ny, self.nx = -(-H // gen), -(-W // gen)
        self.tissue = synthetic_tissue(seed, self.ny, self.nx)
        self.unique_tiles = unique_tiles
        self.n_ids = self.ny * self.nx if unique_tiles is None else max(1, int(unique_tiles))
        if unique_tiles is None and self.ny * self.nx > 4096:
            raise ConfigError(f"unique_tiles=None keeps {self.ny * self.nx} distinct generation tiles in memory; "
                              "pass unique_tiles (e.g. 256) for slides this large")
        self.cache = cache

    def tile_index(self, ty: int, tx: int) -> int:
        """The generation tile (cache index) at cell ``(ty, tx)``."""
        return ty * self.nx + tx if self.unique_tiles is None else _hash_index(ty, tx, self.n_ids, self.seed)

    def image(self, ty: int, tx: int, li: int) -> np.ndarray:
        """Pixels of cell ``(ty, tx)`` at pyramid level ``li``: tissue, or glass outside it."""
        if self.tissue[ty, tx]:
            return self.cache.get(self.tile_index(ty, tx))[0][li]
        return self.cache.glass[(ty * 7 + tx * 3) & 3][li]

    def level_tiles(self, li: int, d: int, tile: int, bar=None):
        """The ``tile``×``tile`` TIFF tiles of level ``li`` (downsample ``d``), row by row;
        parts outside the slide are white."""
        g = self.G // d
        lh, lw = -(-self.H // d), -(-self.W // d)
        buf = np.empty((tile, tile, 3), np.uint8)
        for y0 in range(0, lh, tile):
            for x0 in range(0, lw, tile):
                buf[:] = 255
                y1, x1 = min(y0 + tile, lh), min(x0 + tile, lw)
                for ty in range(y0 // g, (y1 - 1) // g + 1):
                    for tx in range(x0 // g, (x1 - 1) // g + 1):
                        img = self.image(ty, tx, li)
                        gy0, gx0 = ty * g, tx * g
                        a0, a1 = max(y0, gy0), min(y1, gy0 + g)
                        b0, b1 = max(x0, gx0), min(x1, gx0 + g)
                        buf[a0 - y0:a1 - y0, b0 - x0:b1 - x0] = img[a0 - gy0:a1 - gy0, b0 - gx0:b1 - gx0]
                if bar is not None:
                    bar.update(1)
                yield buf.copy()


_COMPRESSION = {"jpeg": ("jpeg", {"level": 90}), "deflate": ("zlib", {"level": 6}), "zlib": ("zlib", {"level": 6}),
                "none": (None, {})}


def _write_pyramid(path: Path, layout: _Layout, downsamples: tuple[int, ...], tile: int, mpp: float, seed: int,
                   compression: str, progress: bool) -> None:
    """Stream every level of ``layout`` into a tiled TIFF (one main IFD per level)."""
    import tifffile

    H, W = layout.H, layout.W
    codec, codec_args = _COMPRESSION[compression]
    res = 1e4 / mpp
    bar = None
    if progress:
        from tqdm import tqdm

        total = sum(-(-(-(-H // d)) // tile) * -(-(-(-W // d)) // tile) for d in downsamples)
        bar = tqdm(total=total, desc=f"write {path.name}", unit="tile", mininterval=2.0)
    with tifffile.TiffWriter(path, bigtiff=H * W * 3 > 2**31) as tw:
        for li, d in enumerate(downsamples):
            kw = dict(shape=(-(-H // d), -(-W // d), 3), dtype=np.uint8, tile=(tile, tile), photometric="rgb",
                      resolution=(res / d, res / d), resolutionunit="CENTIMETER", metadata=None,
                      subfiletype=0 if li == 0 else 1)
            if codec is not None:
                kw["compression"] = codec
                if codec_args:
                    kw["compressionargs"] = codec_args
            if li == 0:
                kw["description"] = f"insmix_fast synthetic slide {W}x{H} |MPP = {mpp:.6g}|seed = {seed}"
            tw.write(layout.level_tiles(li, d, tile, bar), **kw)
    if bar is not None:
        bar.close()


def _gather_outlines(layout: _Layout) -> tuple[np.ndarray, np.ndarray]:
    """All nuclei outlines of the slide in level-0 coordinates: ``(points P×2 float32, offsets)``
    with nucleus ``i`` = ``points[offsets[i]:offsets[i+1]]``. Nuclei of a cell cut by the slide's
    right or bottom edge are left out. The arrays are allocated once, at their final size."""
    G, H, W = layout.G, layout.H, layout.W
    packed: dict[int, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}

    def pack(idx):
        """``(points, lengths, per-outline max x/y)`` of generation tile ``idx`` (local coordinates)."""
        t = packed.get(idx)
        if t is None:
            polys = layout.cache.get(idx)[1]
            lens = np.array([len(p) for p in polys], np.int64)
            pts = np.concatenate(polys).astype(np.float32) if polys else np.zeros((0, 2), np.float32)
            mx = np.array([p.max(axis=0) for p in polys], np.float32).reshape(-1, 2)
            t = packed[idx] = (pts, lens, mx)
        return t

    def keep_of(ty, tx, mx):
        if (tx + 1) * G <= W and (ty + 1) * G <= H:
            return None  # whole generation tile inside the slide
        return (mx[:, 0] + tx * G <= W) & (mx[:, 1] + ty * G <= H)

    cells = list(zip(*np.nonzero(layout.tissue)))
    n_nuc = n_pts = 0
    for ty, tx in cells:
        pts, lens, mx = pack(layout.tile_index(ty, tx))
        k = keep_of(ty, tx, mx)
        n_nuc += len(lens) if k is None else int(k.sum())
        n_pts += int(lens.sum()) if k is None else int(lens[k].sum())
    P = np.empty((n_pts, 2), np.float32)
    lens_all = np.empty(n_nuc, np.int64)
    a = b = 0
    for ty, tx in cells:
        pts, lens, mx = pack(layout.tile_index(ty, tx))
        k = keep_of(ty, tx, mx)
        shift = np.array([tx * G, ty * G], np.float32)
        if k is None:
            P[a:a + len(pts)] = pts + shift
            lens_all[b:b + len(lens)] = lens
            a += len(pts)
            b += len(lens)
        else:
            starts = np.concatenate([[0], np.cumsum(lens)])
            for j in np.flatnonzero(k):
                q = pts[starts[j]:starts[j + 1]]
                P[a:a + len(q)] = q + shift
                lens_all[b] = len(q)
                a += len(q)
                b += 1
    off = np.zeros(n_nuc + 1, np.int64)
    np.cumsum(lens_all, out=off[1:])
    return P, off


def _write_geojson(path: Path, pts: np.ndarray, off: np.ndarray) -> None:
    """Streamed QuPath-style FeatureCollection (one Polygon per nucleus, closed rings)."""
    props = json.dumps({"objectType": "detection", "classification": {"name": "Nucleus"}})
    with open(path, "w") as f:
        f.write('{"type":"FeatureCollection","features":[\n')
        for i in range(len(off) - 1):
            ring = pts[off[i]:off[i + 1]]
            ring = np.concatenate([ring, ring[:1]])
            body = ",".join(f"[{x:.1f},{y:.1f}]" for x, y in ring.tolist())
            f.write(('' if i == 0 else ',\n') + '{"type":"Feature","geometry":{"type":"Polygon","coordinates":[['
                    + body + ']]},"properties":' + props + '}')
        f.write('\n]}\n')
