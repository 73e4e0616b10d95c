"""Deterministic synthetic H&E nuclei tiles (the embedded default data set).

:class:`SyntheticNuclei` renders, for every index ``i``, one RGB tile and its
instance map from ``(seed, i)`` alone, so any tile can be regenerated in any
order, in any process. The model, in short:

* **Geometry.** Nucleus centres are drawn from a clustered density (a few
  Gaussian blobs over a base level: dense and sparse regions). Each nucleus is an
  irregular ellipse — radius drawn in ``radius_range`` (skewed to small),
  elongation in ``elongation``, random orientation, a low-order Fourier
  perturbation of the outline — rasterised with sub-pixel vertices. A fraction
  ``touching`` of the nuclei is placed against an existing one (sharing a
  border); the others keep at least one background pixel of distance. A later
  nucleus only takes free pixels, so one pixel has one id. The map is finally
  cleaned (largest piece kept, holes filled, pieces below ``min_area`` dropped)
  and numbered 1..K in raster order of the nuclei's first pixel, so it always
  passes :func:`~insmix_fast.data.labels.find_label_problems`.
* **Appearance.** Beer–Lambert optical density ``OD = c_H·h + c_E·e`` with the
  usual H&E stain vectors (Macenko's reference), per-tile jitter of both stain
  vectors and of their strengths (``stain_jitter``); eosin background with
  low-frequency variation, fibres and pale gaps; slightly denser cytoplasm
  around nuclei; hematoxylin nuclei of varied darkness with chromatin texture
  and a darker membrane rim; a Gaussian blur (``blur``) and sensor noise.

* **Classes** (``n_classes > 0``: typed tiles ``(image, labels, types)``). Every
  candidate nucleus draws a class from ``class_mix`` on its own keyed stream
  ``(seed, i, 3)``, so the geometry and texture streams are drawn exactly as for an
  untyped tile. Classes cycle through four archetypes that change the nucleus'
  size, elongation, outline and darkness (:data:`ARCHETYPES`): lymphocyte-like
  (small, round, dark), tumour-like (large, pale, vesicular), spindle-like
  (elongated, medium) and irregular (lobed outline); classes 5, 6, … repeat them
  a little darker each cycle. A type head can learn them from the pixels. With
  ``n_classes = 0`` (the default) nothing of this runs and tiles are bit-identical
  to those of earlier versions.

Rendering a 256×256 tile takes ~10 ms on one core (1000×1000: ~0.2 s).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import cv2
import numpy as np

from ..errors import InputError, ReaderError
from ..validation import check_int, check_labels, check_number, check_pair, check_seed
from .base import IndexedDataset, resolve_index
from .labels import clean_labels, relabel_raster_order
from .typed import check_class_names

__all__ = ["SyntheticNuclei", "StainInfo", "HE_REFERENCE", "ARCHETYPES"]

#: Reference H&E optical-density stain vectors (rows: hematoxylin, eosin; RGB).
HE_REFERENCE = np.array([[0.5626, 0.7201, 0.4062], [0.2159, 0.8012, 0.5581]], dtype=np.float64)

_STREAM_GEOMETRY = 0
_STREAM_STAIN = 1
_STREAM_TEXTURE = 2
_STREAM_CLASS = 3


class _Archetype(NamedTuple):
    """How a class changes a candidate nucleus (applied to the draws of the geometry stream)."""

    name: str
    size: tuple[float, float]  # the radius quantile u ∈ [0, 1) is mapped to size[0] + (size[1] - size[0])·u
    elong: tuple[float, float]  # elongation = elong[0] + (elong[1] − elong[0])·(quantile of the drawn elongation)
    harm: float  # outline perturbation multiplier
    dark: float  # added to the hematoxylin darkness of the nucleus


#: The class archetypes of typed synthetic tiles, in class order (class c uses ``ARCHETYPES[(c-1) % 4]``).
ARCHETYPES = (
    _Archetype("lymphocyte-like", (0.0, 0.22), (1.0, 1.15), 0.6, 0.35),
    _Archetype("tumour-like", (0.5, 1.0), (1.0, 1.5), 1.0, -0.25),
    _Archetype("spindle-like", (0.2, 0.5), (2.4, 3.4), 0.6, 0.1),
    _Archetype("irregular", (0.3, 0.7), (1.1, 1.6), 3.0, 0.0),
)


@dataclass(frozen=True)
class StainInfo:
    """The stain of one synthetic tile.

    Attributes:
        matrix: 2×3 float64, unit optical-density vectors of hematoxylin (row 0)
            and eosin (row 1) in RGB order.
        strength: (hematoxylin, eosin) concentration multipliers of the tile.
        background: incident light intensity I0 (0..255) of the tile.
    """

    matrix: np.ndarray
    strength: tuple[float, float]
    background: float


_N_PTS = 28  # outline vertices of a nucleus
_T = np.linspace(0, 2 * np.pi, _N_PTS, endpoint=False)


class _Shapes(NamedTuple):
    """Random shape parameters of the candidate nuclei of one tile (one entry per candidate)."""

    radii: np.ndarray
    elong: np.ndarray  # long / short axis
    theta: np.ndarray  # orientation
    touch: np.ndarray  # bool: placed against an existing nucleus
    harm: np.ndarray  # n×3 amplitudes of the 2nd, 3rd, 5th outline harmonics
    phase: np.ndarray  # n×3 their phases
    jitter: np.ndarray  # n×_N_PTS radial noise
    tdir: np.ndarray  # direction to the touched nucleus
    tgap: np.ndarray  # centre distance / (r0 + r) when touching
    pick: np.ndarray  # which placed nucleus to touch (fraction of the list)


def _outline(sh: _Shapes, k: int, cy: float, cx: float) -> tuple[np.ndarray, np.ndarray]:
    """The irregular-ellipse outline ``(ys, xs)`` of candidate ``k`` centred on ``(cy, cx)``."""
    a = sh.radii[k] * np.sqrt(sh.elong[k])
    b = sh.radii[k] / np.sqrt(sh.elong[k])
    ct, st = np.cos(_T - sh.theta[k]), np.sin(_T - sh.theta[k])
    rho = a * b / np.sqrt((b * ct) ** 2 + (a * st) ** 2)
    h, ph = sh.harm[k], sh.phase[k]
    rho = rho * (1.0 + h[0] * np.cos(2 * _T + ph[0]) + h[1] * np.cos(3 * _T + ph[1]) + h[2] * np.cos(5 * _T + ph[2])
                 + sh.jitter[k])
    return cy + rho * np.sin(_T), cx + rho * np.cos(_T)


def _rasterise(outline: tuple[np.ndarray, np.ndarray], shape: tuple[int, int]):
    """``(uint8 mask of the filled outline, (y0, x0) of the mask)`` with sub-pixel vertices
    (1/8 px), or ``None`` when the mask's box (2 px margin) leaves ``shape``."""
    py, px = outline
    y0 = int(np.floor(py.min())) - 2
    x0 = int(np.floor(px.min())) - 2
    y1 = int(np.ceil(py.max())) + 3
    x1 = int(np.ceil(px.max())) + 3
    if y0 < 0 or x0 < 0 or y1 > shape[0] or x1 > shape[1]:
        return None
    mask = np.zeros((y1 - y0, x1 - x0), np.uint8)
    pts = np.round(np.stack([(px - x0) * 8, (py - y0) * 8], axis=1)).astype(np.int32)
    cv2.fillPoly(mask, [pts], 1, lineType=cv2.LINE_8, shift=3)
    return mask, (y0, x0)


class SyntheticNuclei(IndexedDataset):
    """A deterministic, indexable sequence of synthetic H&E tiles.

    ``ds[i]`` returns ``(image H×W×3 uint8 RGB, labels H×W int32)`` with ids
    1..K, and depends only on ``(seed, i)`` and the constructor arguments.

    Args:
        seed: integer in [0, 2**64).
        size: tile size, an int (square) or ``(H, W)``; each side ≥ 16.
        length: number of tiles (``len(ds)``).
        density: nucleus density; 1.0 ≈ nuclei covering ~20–25 % of a tile
            (each tile draws its own density around this, 0.5×–1.5×).
        radius_range: (min, max) mean radius of a nucleus in pixels.
        elongation: (min, max) ratio of long to short axis.
        touching: fraction of nuclei placed against an existing nucleus.
        clustering: 0 = uniform placement, 1 = strongly clustered.
        stain_jitter: spread of the per-tile stain variation (0 = identical stain).
        blur: Gaussian blur sigma in pixels (0 = none).
        noise: standard deviation of the additive pixel noise (0..255 scale).
        stain: optional 2×3 base stain matrix (rows H, E optical-density
            vectors); default :data:`HE_REFERENCE`. A different matrix gives
            tiles "of another stain".
        min_area: nuclei smaller than this (after overlaps and border cuts) are dropped.
        n_classes: 0 (default): untyped tiles ``(image, labels)``; ``C ≥ 1``: typed tiles
            ``(image, labels, types)`` with classes 1..C of class-dependent size, shape and
            darkness (see the module docstring).
        class_mix: C relative class frequencies (default: equal); a class's share of the
            *candidate* nuclei — larger classes are placed a little less often in crowded tiles.
        class_names: C + 1 names, ``"background"`` first (default: the archetype names).

    Raises:
        InputError / InputTypeError: an argument is out of range or of the wrong type.

    >>> ds = SyntheticNuclei(seed=0, size=64, length=4)
    >>> image, labels = ds[-1]
    >>> image.shape, image.dtype, labels.dtype, len(ds[1:3])
    ((64, 64, 3), dtype('uint8'), dtype('int32'), 2)
    >>> bool((ds.generate(3)[1] == labels).all())  # a pure function of (seed, index)
    True
    >>> typed = SyntheticNuclei(seed=0, size=64, length=4, n_classes=3, class_mix=(0.6, 0.3, 0.1))
    >>> image, labels, types = typed[0]
    >>> typed.class_names
    ('background', 'lymphocyte-like', 'tumour-like', 'spindle-like')
    >>> bool(((types > 0) == (labels > 0)).all()) and int(types.max()) <= 3
    True
    """

    def __init__(
        self,
        seed: int = 0,
        size: int | tuple[int, int] = 256,
        length: int = 64,
        *,
        density: float = 1.0,
        radius_range: tuple[float, float] = (4.0, 14.0),
        elongation: tuple[float, float] = (1.0, 1.8),
        touching: float = 0.3,
        clustering: float = 0.6,
        stain_jitter: float = 0.05,
        blur: float = 0.6,
        noise: float = 3.0,
        stain: np.ndarray | None = None,
        min_area: int = 12,
        n_classes: int = 0,
        class_mix=None,
        class_names=None,
    ) -> None:
        self.seed = check_seed(seed)
        hw = (size, size) if isinstance(size, (int, np.integer)) else size  # check_int rejects bools
        if isinstance(hw, (str, bytes)) or not hasattr(hw, "__len__") or len(hw) != 2:
            raise InputError(f"size must be an int or a pair (H, W), got {size!r}")
        hw = tuple(check_int("size", v, 16, error=InputError) for v in hw)
        self.size: tuple[int, int] = hw
        self.length = check_int("length", length, 0, error=InputError)
        rmin, rmax = check_pair("radius_range", radius_range, 1.5, min(hw) / 2, error=InputError)
        emin, emax = check_pair("elongation", elongation, 1.0, 4.0, error=InputError)
        self.density = check_number("density", density, 0.0, 10.0, error=InputError)
        self.radius_range = (rmin, rmax)
        self.elongation = (emin, emax)
        self.touching = check_number("touching", touching, 0.0, 1.0, error=InputError)
        self.clustering = check_number("clustering", clustering, 0.0, 1.0, error=InputError)
        self.stain_jitter = check_number("stain_jitter", stain_jitter, 0.0, 0.5, error=InputError)
        self.blur = check_number("blur", blur, 0.0, 10.0, error=InputError)
        self.noise = check_number("noise", noise, 0.0, 64.0, error=InputError)
        self.min_area = check_int("min_area", min_area, 1, error=InputError)
        if stain is None:
            base = HE_REFERENCE.copy()
        else:
            base = np.asarray(stain, dtype=np.float64)
            if base.shape != (2, 3) or not np.all(np.isfinite(base)) or np.any(base < 0) or np.any(base.sum(1) <= 0):
                raise InputError(f"stain must be a 2×3 non-negative optical-density matrix (rows H, E), got {stain!r}")
        self.base_stain = base / np.linalg.norm(base, axis=1, keepdims=True)
        self.n_classes = check_int("n_classes", n_classes, 0, 255, error=InputError)
        self.class_mix, self.class_names = self._classes(class_mix, class_names)

    def _classes(self, class_mix, class_names) -> tuple[tuple[float, ...] | None, tuple[str, ...] | None]:
        """Checked ``(class_mix normalised, class_names)``; ``(None, None)`` for untyped tiles."""
        c = self.n_classes
        if c == 0:
            if class_mix is not None or class_names is not None:
                raise InputError("class_mix / class_names need n_classes ≥ 1 (typed tiles)")
            return None, None
        if class_mix is None:
            mix = np.full(c, 1.0 / c)
        else:
            try:
                mix = np.asarray(class_mix, dtype=np.float64).reshape(-1)
            except (TypeError, ValueError):
                raise InputError(f"class_mix must be {c} non-negative numbers, got {class_mix!r}") from None
            if mix.size != c or not np.all(np.isfinite(mix)) or (mix < 0).any() or mix.sum() <= 0:
                raise InputError(f"class_mix must be {c} non-negative numbers (one per class) with a positive sum, "
                                 f"got {class_mix!r}")
            mix = mix / mix.sum()
        if class_names is None:
            names = ("background",) + tuple(
                ARCHETYPES[k % 4].name + ("" if k < 4 else f" {k // 4 + 1}") for k in range(c))
        else:
            try:
                names = check_class_names(class_names)
            except ReaderError as e:
                raise InputError(str(e)) from None
            if len(names) != c + 1:
                raise InputError(f"class_names must have n_classes + 1 = {c + 1} entries ('background' first), "
                                 f"got {len(names)}")
        return tuple(float(v) for v in mix), names

    # ------------------------------------------------------------------ Sequence
    def __len__(self) -> int:
        return self.length

    def read(self, k: int):
        """Tile ``k`` (``0 ≤ k < len``); the same as :meth:`generate`."""
        return self.generate(k)

    def __repr__(self) -> str:
        typed = f", n_classes={self.n_classes}" if self.n_classes else ""
        return (f"SyntheticNuclei(seed={self.seed}, size={self.size}, length={self.length}, density={self.density}"
                f"{typed})")

    def _rng(self, i: int, stream: int) -> np.random.Generator:
        return np.random.default_rng([self.seed, i, stream])

    # ------------------------------------------------------------------ public helpers
    def stain_of(self, i: int) -> StainInfo:
        """The stain (vectors, strengths, background light) of tile ``i``."""
        i = resolve_index(i, self.length, "SyntheticNuclei")
        rng = self._rng(i, _STREAM_STAIN)
        j = self.stain_jitter
        m = self.base_stain + rng.normal(0.0, j, size=(2, 3))
        m = np.clip(m, 0.02, None)
        m /= np.linalg.norm(m, axis=1, keepdims=True)
        s_h = float(np.clip(1.0 + rng.normal(0.0, 2.0 * j), 0.6, 1.5))
        s_e = float(np.clip(1.0 + rng.normal(0.0, 3.0 * j), 0.5, 1.6))
        i0 = float(np.clip(rng.normal(244.0, 4.0), 225.0, 255.0))
        return StainInfo(m, (s_h, s_e), i0)

    def as_arrays(self, n: int | None = None) -> tuple[np.ndarray, ...]:
        """The first ``n`` tiles (default all) stacked: (N×H×W×3 uint8, N×H×W int32), and
        N×H×W int32 types for typed tiles."""
        n = self.length if n is None else check_int("n", n, 0, self.length, error=InputError)
        H, W = self.size
        images = np.empty((n, H, W, 3), np.uint8)
        labels = np.empty((n, H, W), np.int32)
        types = np.empty((n, H, W), np.int32) if self.n_classes else None
        for k in range(n):
            sample = self.generate(k)
            images[k], labels[k] = sample[0], sample[1]
            if types is not None:
                types[k] = sample[2]
        return (images, labels) if types is None else (images, labels, types)

    def generate(self, i: int):
        """Render tile ``i`` (0 ≤ i; not bounded by ``length``): ``(image, labels)``, or
        ``(image, labels, types)`` for typed tiles.

        The same as ``render(i, geometry(i))`` (typed: ``labels, types = geometry(i, types=True)``
        and ``render(i, labels, types)``).
        """
        if self.n_classes:
            labels, types = self.geometry(i, types=True)
            return self.render(i, labels, types), labels, types
        labels = self.geometry(i)
        return self.render(i, labels), labels

    # ------------------------------------------------------------------ geometry
    def geometry(self, i: int, types: bool = False):
        """The H×W int32 instance map of tile ``i`` (0 ≤ i; not bounded by ``length``), ids 1..K;
        with ``types=True`` (typed tiles only) ``(labels, types)``.

        Draws, in this order, from the tile's geometry stream: the density blobs
        (:meth:`_density_map`), the candidate centres (:meth:`_candidates`), the shape
        of every candidate (:meth:`_shapes`); typed tiles draw every candidate's class from
        their class stream and adapt its shape (:meth:`_typed_shapes`); then the nuclei are
        placed (:meth:`_place`).
        """
        i = check_int("tile index", i, 0, error=InputError)
        if types and not self.n_classes:
            raise InputError("geometry(types=True) needs typed tiles (n_classes ≥ 1)")
        rng = self._rng(i, _STREAM_GEOMETRY)
        dens = self._density_map(rng)
        n_target, cy, cx = self._candidates(rng, dens)
        shapes = self._shapes(rng, cy.size)
        cls = None
        if self.n_classes:
            cls = self._rng(i, _STREAM_CLASS).choice(self.n_classes, size=cy.size, p=self.class_mix) + 1
            shapes = self._typed_shapes(shapes, cls)
        canvas, pad, placed = self._place(shapes, cy, cx, n_target)
        H, W = self.size
        cleaned = clean_labels(canvas[pad:pad + H, pad:pad + W], min_size=self.min_area, fill_holes=True,
                               split="largest")
        # ids 1..K in raster order of each nucleus's first pixel: independent of the placement order
        labels = relabel_raster_order(cleaned)
        if not types:
            return labels
        # placement id p (cleaning keeps ids) is candidate placed[p - 1]; one pixel per final id gives its class
        cls_of_placed = np.zeros(len(placed) + 1, np.int32)
        cls_of_placed[1:] = cls[np.asarray(placed, np.int64)] if placed else []
        lut = np.zeros(int(labels.max()) + 1, np.int32)
        fg = labels > 0
        lut[labels[fg]] = cls_of_placed[cleaned[fg]]
        return labels, lut[labels]

    def _typed_shapes(self, sh: "_Shapes", cls: np.ndarray) -> "_Shapes":
        """The shapes of typed candidates: the same draws, mapped through each class's archetype."""
        rmin, rmax = self.radius_range
        emin, emax = self.elongation
        arch = [ARCHETYPES[(c - 1) % 4] for c in range(1, self.n_classes + 1)]
        lo = np.array([a.size[0] for a in arch])[cls - 1]
        hi = np.array([a.size[1] for a in arch])[cls - 1]
        u = ((sh.radii - rmin) / max(rmax - rmin, 1e-9)) ** (1 / 1.6)  # back to the uniform draw
        radii = np.maximum(rmin + (rmax - rmin) * (lo + (hi - lo) * u), 2.0)
        t = (sh.elong - emin) / (emax - emin) if emax > emin else np.zeros_like(sh.elong)
        e_lo = np.array([a.elong[0] for a in arch])[cls - 1]
        e_hi = np.array([a.elong[1] for a in arch])[cls - 1]
        harm = sh.harm * np.array([a.harm for a in arch])[cls - 1][:, None]
        return sh._replace(radii=radii, elong=e_lo + (e_hi - e_lo) * t, harm=harm)

    def _class_darkness(self) -> np.ndarray:
        """Darkness offset per class id (index 0 unused): the archetype's, + 0.08 per cycle of four."""
        return np.array([0.0] + [ARCHETYPES[k % 4].dark + 0.08 * (k // 4) for k in range(self.n_classes)], np.float32)

    _GRID = 32  # cells per side of the coarse density grid

    def _density_map(self, rng: np.random.Generator) -> np.ndarray:
        """Clustered density on a coarse grid: a base level plus 1–4 Gaussian blobs, max 1."""
        H, W = self.size
        g = self._GRID
        gy = (np.arange(g) + 0.5) / g * H
        gx = (np.arange(g) + 0.5) / g * W
        dens = np.full((g, g), 1.0 - 0.85 * self.clustering)
        n_blobs = int(rng.integers(1, 5))
        for _ in range(n_blobs):
            cy, cx = rng.uniform(0, H), rng.uniform(0, W)
            sig = rng.uniform(0.12, 0.35) * min(H, W)
            dens += rng.uniform(0.6, 1.6) * self.clustering * np.exp(
                -((gy[:, None] - cy) ** 2 + (gx[None, :] - cx) ** 2) / (2 * sig * sig)
            )
        return dens / dens.max()

    def _candidates(self, rng: np.random.Generator, dens: np.ndarray) -> tuple[int, np.ndarray, np.ndarray]:
        """``(n_target, cy, cx)``: how many nuclei to place and the candidate centres (tile
        coordinates, up to ``3·n_target + 8``), drawn by rejection against ``dens``."""
        H, W = self.size
        rmin, rmax = self.radius_range
        g = self._GRID
        r_mean = rmin + (rmax - rmin) * 0.4
        tile_density = self.density * rng.uniform(0.5, 1.5)
        n_target = int(round(tile_density * 0.3 * H * W / (np.pi * r_mean**2) * dens.mean()))
        n_attempt = 3 * n_target + 8
        cand_y = rng.uniform(-rmin, H + rmin, size=4 * n_attempt)
        cand_x = rng.uniform(-rmin, W + rmin, size=4 * n_attempt)
        gi = np.clip((cand_y / H * g).astype(int), 0, g - 1)
        gj = np.clip((cand_x / W * g).astype(int), 0, g - 1)
        accept = rng.uniform(size=cand_y.size) < dens[gi, gj]
        return n_target, cand_y[accept][:n_attempt], cand_x[accept][:n_attempt]

    def _shapes(self, rng: np.random.Generator, n: int) -> _Shapes:
        """The random shape parameters of ``n`` candidate nuclei."""
        rmin, rmax = self.radius_range
        u = rng.uniform(size=n)
        radii = rmin + (rmax - rmin) * u**1.6
        elong = rng.uniform(*self.elongation, size=n)
        theta = rng.uniform(0, np.pi, size=n)
        touch = rng.uniform(size=n) < self.touching
        harm = rng.normal(0.0, 1.0, size=(n, 3)) * np.array([0.06, 0.035, 0.02])
        phase = rng.uniform(0, 2 * np.pi, size=(n, 3))
        jitter = rng.normal(0.0, 0.015, size=(n, _N_PTS))
        tdir = rng.uniform(0, 2 * np.pi, size=n)
        tgap = rng.uniform(0.75, 0.95, size=n)
        pick = rng.uniform(size=n)
        return _Shapes(radii, elong, theta, touch, harm, phase, jitter, tdir, tgap, pick)

    def _place(self, sh: _Shapes, cy_all: np.ndarray, cx_all: np.ndarray,
               n_target: int) -> tuple[np.ndarray, int, list[int]]:
        """Place up to ``n_target`` nuclei on a padded canvas: ``(canvas, padding, placed)``;
        ``placed[p - 1]`` is the candidate that got id ``p``.

        Candidate ``k`` is centred on its candidate centre, or — when it is a touching
        one and a nucleus exists — against a placed nucleus. It is kept when it lies on
        the canvas, has ``min_area`` pixels and (touching) finds 70 % of its pixels free
        or (not touching) keeps one background pixel from every placed nucleus.
        """
        H, W = self.size
        P = int(np.ceil(self.radius_range[1] * np.sqrt(self.elongation[1]) * 1.3)) + 2  # canvas padding
        if self.n_classes and sh.radii.size:  # class archetypes may exceed radius_range/elongation
            P = max(P, int(np.ceil(np.max(sh.radii * np.sqrt(sh.elong)) * 1.3)) + 2)
        canvas = np.zeros((H + 2 * P, W + 2 * P), np.int32)
        kernel = np.ones((3, 3), np.uint8)
        centres: list[tuple[float, float, float]] = []  # (y, x, r) of placed nuclei (canvas coords)
        placed: list[int] = []
        for k in range(cy_all.size):
            if len(centres) >= n_target:
                break
            r = sh.radii[k]
            if sh.touch[k] and centres:
                y0, x0, r0 = centres[int(sh.pick[k] * len(centres))]
                dist = (r0 + r) * sh.tgap[k]
                cy = y0 + dist * np.sin(sh.tdir[k])
                cx = x0 + dist * np.cos(sh.tdir[k])
            else:
                cy = cy_all[k] + P
                cx = cx_all[k] + P
            drawn = _rasterise(_outline(sh, k, cy, cx), canvas.shape)
            if drawn is None:
                continue
            mask, (y0i, x0i) = drawn
            m = mask.astype(bool)
            area = int(m.sum())
            if area < self.min_area:
                continue
            win = canvas[y0i:y0i + mask.shape[0], x0i:x0i + mask.shape[1]]
            occ = win > 0
            if sh.touch[k]:
                free = m & ~occ
                if free.sum() < 0.7 * area:
                    continue
                win[free] = len(centres) + 1
            else:
                if np.any(cv2.dilate(mask, kernel).astype(bool) & occ):
                    continue
                win[m] = len(centres) + 1
            centres.append((cy, cx, r))
            placed.append(k)
        return canvas, P, placed

    # ------------------------------------------------------------------ appearance
    @staticmethod
    def _smooth_noise(rng: np.random.Generator, H: int, W: int, cells: int) -> np.ndarray:
        """Zero-mean, unit-ish low-frequency noise (bicubic upsampled random grid)."""
        gh = max(2, int(round(cells * H / max(H, W))) + 1)
        gw = max(2, int(round(cells * W / max(H, W))) + 1)
        grid = rng.standard_normal((gh, gw), dtype=np.float32)
        return cv2.resize(grid, (W, H), interpolation=cv2.INTER_CUBIC)

    def render(self, i: int, labels: np.ndarray, types: np.ndarray | None = None) -> np.ndarray:
        """The H×W×3 uint8 image of tile ``i`` drawn around the instance map ``labels``
        (normally :meth:`geometry` ``(i)``; a map with some nuclei removed works too).
        ``types`` (typed tiles): each nucleus is drawn with its class's darkness."""
        i = check_int("tile index", i, 0, error=InputError)
        labels = check_labels(labels, self.size)
        if types is not None:
            if not self.n_classes:
                raise InputError("render(types=...) needs typed tiles (n_classes ≥ 1)")
            types = np.asarray(types)
            if types.shape != labels.shape or not np.issubdtype(types.dtype, np.integer):
                raise InputError(f"types must be an integer map of shape {labels.shape}, got {types.dtype} {types.shape}")
            if types.size and (types.min() < 0 or types.max() > self.n_classes):
                raise InputError(f"types must hold class ids 0..{self.n_classes}")
        rng = self._rng(i, _STREAM_TEXTURE)
        H, W = labels.shape
        stain = self.stain_of(i)
        s_h, s_e = stain.strength
        fg = labels > 0
        n = int(labels.max())

        # eosin: base level, low-frequency variation, fibres, pale gaps
        e = np.float32(rng.uniform(0.30, 0.60)) + 0.10 * self._smooth_noise(rng, H, W, 6)
        fib = np.zeros((H, W), np.uint8)
        n_fib = int(rng.integers(10, 26) * H * W / 65536) + 2
        for _ in range(n_fib):
            steps = int(rng.integers(6, 14))
            head = rng.uniform(0, 2 * np.pi) + np.cumsum(rng.normal(0, 0.25, steps))
            step = rng.uniform(8, 20)
            y = rng.uniform(0, H) + np.cumsum(step * np.sin(head))
            x = rng.uniform(0, W) + np.cumsum(step * np.cos(head))
            pts = np.round(np.stack([x, y], 1) * 4).astype(np.int32)
            cv2.polylines(fib, [pts], False, int(rng.integers(90, 255)), int(rng.integers(1, 3)), cv2.LINE_AA, 2)
        fib_f = cv2.GaussianBlur(fib, (0, 0), 0.8).astype(np.float32) * np.float32(0.45 / 255.0)
        e += fib_f
        gaps = self._smooth_noise(rng, H, W, 4)
        gap_w = np.clip((gaps - 1.2) * 1.5, 0.0, 0.8)  # some pale, almost empty regions
        e *= 1.0 - gap_w
        fine = rng.standard_normal((H, W), dtype=np.float32)
        e += 0.05 * fine
        # cytoplasm: a denser pink halo around nuclei
        if n:
            halo = cv2.GaussianBlur(fg.astype(np.float32), (0, 0), 3.0)
            e += 0.25 * halo
        # hematoxylin: faint background + nuclei
        h = np.float32(rng.uniform(0.04, 0.10)) + 0.03 * self._smooth_noise(rng, H, W, 8)
        if n:
            # small nuclei (lymphocyte-like) are darker, large ones paler (vesicular)
            rmin, rmax = self.radius_range
            r_eq = np.sqrt(np.bincount(labels.ravel(), minlength=n + 1)[1:] / np.pi)
            small = np.clip((rmax - r_eq) / max(rmax - rmin, 1e-6), 0.0, 1.0)
            dark = rng.uniform(0.5, 1.0, size=n) + 0.4 * small
            dark = np.concatenate([[0.0], dark]).astype(np.float32)
            if types is not None:  # class darkness: one pixel of each id gives its class
                cls = np.zeros(n + 1, np.int64)
                cls[labels[fg]] = types[fg]
                dark = np.maximum(dark + self._class_darkness()[cls], np.float32(0.15))
                dark[0] = 0.0
            chrom = cv2.GaussianBlur(fine[::-1].copy(), (0, 0), 0.9)
            chrom *= np.float32(1.0 / (chrom.std() + 1e-6))
            tex = 1.0 + np.float32(rng.uniform(0.15, 0.3)) * chrom
            edge = np.zeros_like(fg)
            edge[1:, :] |= labels[1:, :] != labels[:-1, :]
            edge[:-1, :] |= labels[:-1, :] != labels[1:, :]
            edge[:, 1:] |= labels[:, 1:] != labels[:, :-1]
            edge[:, :-1] |= labels[:, :-1] != labels[:, 1:]
            edge &= fg
            hn = dark[labels] * tex + np.float32(0.3) * edge.astype(np.float32)
            h = np.where(fg, hn, h)
            e = np.where(fg, e * 0.35, e)
        h = np.clip(h, 0.0, None) * np.float32(1.6 * s_h)
        e = np.clip(e, 0.0, None) * np.float32(1.0 * s_e)
        m = stain.matrix.astype(np.float32)
        od = h[..., None] * m[0] + e[..., None] * m[1]
        img = np.float32(stain.background) * np.exp(-od)
        if self.blur > 0:
            img = cv2.GaussianBlur(img, (0, 0), self.blur)
        if self.noise > 0:
            # luminance-like sensor noise (one field for all channels; cheaper than 3)
            img += (rng.standard_normal((H, W), dtype=np.float32) * np.float32(self.noise))[..., None]
        return np.clip(img + 0.5, 0, 255).astype(np.uint8)
