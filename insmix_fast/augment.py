"""Traditional augmentations of the paper's training recipe (random scale, shift,
rotation, flips, colour jitter, Gaussian blur) for an image and its instance map.

Plan / apply split
==================
:meth:`TraditionalAugment.draw` turns ``(seed, index)`` into a typed per-sample
:class:`AugmentDraw` (the warp matrix, the colour matrix, the blur); nothing else is
random. :meth:`TraditionalAugment.params` packs a draw with two statistics of the
crop (its luminance sum and its largest id) into one ``int64`` row of
:data:`N_PARAMS` numbers plus a row of blur taps — what every implementation
consumes: the Numba kernels here (CPU), CUDA kernels built from the per-pixel functions
here (:mod:`insmix_fast.loader.cuda_augment`), and the DALI operator graph
(:mod:`insmix_fast.loader.pipeline`).

Arithmetic (why all devices give the same labels and pixels)
============================================================
* **Geometry** — one affine warp, flips folded in. The destination→source matrix
  (pixel centres at ``+0.5``, DALI's ``warp_affine`` convention) is quantised to
  multiples of ``2**-k`` (``k`` from the crop size and the parameter ranges, about
  10), so the source coordinate of every output pixel is an exact binary fraction,
  computed in ``int64`` here and exact in float32 in DALI. Labels take the source
  pixel ``floor(src)`` (nearest); the image is bilinear at ``src − ½`` with integer
  weights; both reflect at the crop border (``BORDER_REFLECT_101``).
* **Reflected nuclei** — a source pixel outside the crop lies in a *reflection
  cell* ``(cy, cx)`` (``(0, 0)`` is the crop itself, ``(0, 1)`` its mirror image to
  the right, …). An instance ``v`` seen in cell ``(cy, cx) ≠ (0, 0)`` gets the id
  ``v + M·code(cy, cx)`` (``M`` = the crop's largest id, ``code`` in ``1 … K−1``,
  ``K = (2R+1)²`` cells within the parameter ranges, 9 for the defaults), so a
  mirrored copy is a separate instance and ids never collide. Then every id with
  fewer than ``min_area`` pixels in the output becomes background (nuclei that the
  output window cuts to a sliver). Ids are not renumbered otherwise; an instance
  that the window cuts into two pieces keeps one id.
* **Colour** — one affine colour map ``y = C·x + T`` per sample: brightness ``b``,
  contrast ``c`` about the crop's mean luminance (Rec. 601 weights), saturation
  ``s`` and hue ``h`` as a scaling and a rotation of the chroma about the grey
  axis: ``C = b·c·(P + s·(cos θ·(I−P) + sin θ·[n]×))``, ``T = b·(1−c)·luma``
  (``P`` the projection on the grey axis ``n``, ``θ = 2π·h``). ``C`` is quantised
  to ``2**-12``; it is applied to the bilinear value before the one rounding
  (half up) to uint8.
* **Blur** — with probability ``blur_p`` a separable Gaussian, ``2·ceil(3σ)+1``
  taps quantised to ``2**-16`` (summing to exactly 1), reflect-101 border,
  rounded half up.

Everything is integer arithmetic, so the CPU kernels and the CUDA kernels give
identical output: the CUDA kernels call the per-pixel functions (:func:`warp_geometry`,
:func:`coded_label`, :func:`colour_channel`, :func:`blur_round`); the CPU kernels compute the
same integers organised for the vector units (see "CPU kernels" below), checked against a
per-pixel reference in ``tests/test_augment.py`` and against the CUDA build in
``tests/test_loader_cuda_sim.py``. DALI's float operators give the same labels and images
within a few grey levels (see ``docs/loader.md``).

Randomness: 13 doubles from ``Generator(Philox(key=(seed, index)))`` (as in
:mod:`insmix_fast.baselines`) per sample — same seed and index, same output.

Example::

    aug = TraditionalAugment(rotate=180, scale=(0.8, 1.2))
    img2, lab2 = aug(img, lab, seed=0, index=5)
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numba import njit, uint64

from .baselines import keyed_rng
from .errors import InputError, LabelMapError
from .kernels.alloc import empty, zeros
from .kernels.jit import njit as kernel
from .validation import check_batch, check_bool, check_int, check_number, check_pair, check_sample, check_seed

__all__ = ["TraditionalAugment", "AugmentDraw", "traditional_augment", "augment_batch_kernel", "augment_sample",
           "crop_stats", "reflect_canvas", "area_filter", "gaussian_taps", "colour_matrix", "reflect101",
           "reflection_cell", "label_source", "reflected_neighbours", "warp_geometry", "coded_label",
           "colour_channel", "colour_constants", "blur_round", "canvas_source",
           "N_PARAMS", "COLOUR_BITS", "TAP_BITS", "LUMA_WEIGHTS", "P_A00", "P_A01", "P_A10", "P_A11", "P_T0",
           "P_T1", "P_FRAC", "P_C", "P_TC", "P_MAXID", "P_R", "P_MIN_AREA", "P_BLUR_R", "P_SIGMA"]

_S_GEOM = 11  # the Philox counter block of the augmentation's draws

#: Fractional bits of the colour matrix entries.
COLOUR_BITS = 12
#: Fractional bits of the blur taps.
TAP_BITS = 16
#: Luminance weights ×1000 (Rec. 601): ``luma = (299·R + 587·G + 114·B) / 1000``.
LUMA_WEIGHTS = (299, 587, 114)

# ---------------------------------------------------------------------- the parameter row
P_A00, P_A01, P_A10, P_A11, P_T0, P_T1, P_FRAC = range(7)  # warp: src·2^F = A·(2p+1) + T
P_C = 7                                                      # 9 colour entries (row-major), units 2^-COLOUR_BITS
P_TC = 16                                                    # colour offset, units 2^-COLOUR_BITS
P_MAXID, P_R, P_MIN_AREA, P_BLUR_R = 17, 18, 19, 20          # crop's largest id, cell range, min area, blur radius
P_SIGMA = 21                                                 # blur sigma, units 2^-TAP_BITS (DALI's blur)
#: Numbers per sample in the ``int64`` parameter row.
N_PARAMS = 22


@dataclass(frozen=True)
class AugmentDraw:
    """What :meth:`TraditionalAugment.draw` decided for one sample (a plan, comparable).

    Attributes:
        matrix: 2×3 destination→source matrix, pixel centres at ``+0.5`` (DALI's
            ``warp_affine`` convention), already quantised: ``matrix[:, :2]`` are
            multiples of ``2**-frac_bits``·2, ``matrix[:, 2]`` of ``2**-frac_bits``.
        frac_bits: ``F``; source coordinates are exact multiples of ``2**-F``.
        colour: 3×3 colour matrix ``C`` (quantised to ``2**-COLOUR_BITS``).
        offset_gain: ``b·(1−c)``: the colour offset is this times the crop's mean luminance.
        blur_sigma: Gaussian sigma in pixels; 0 = no blur.
        geometric: False when the warp is the identity (``p_geometric`` coin, no flips).
    """

    matrix: np.ndarray
    frac_bits: int
    colour: np.ndarray
    offset_gain: float
    blur_sigma: float
    geometric: bool

    def __eq__(self, other) -> bool:
        return (isinstance(other, AugmentDraw) and np.array_equal(self.matrix, other.matrix)
                and self.frac_bits == other.frac_bits and np.array_equal(self.colour, other.colour)
                and self.offset_gain == other.offset_gain and self.blur_sigma == other.blur_sigma
                and self.geometric == other.geometric)

    __hash__ = None


# ---------------------------------------------------------------------- per-pixel functions (CPU and CUDA)
@njit(cache=True, nogil=True)
def reflect101(i, n):
    """Index ``i`` (any integer) mirrored into ``[0, n)`` without repeating the edge (``BORDER_REFLECT_101``)."""
    if i >= 0 and i < n:
        return i
    if n == 1:
        return 0
    p = 2 * n - 2
    if i < 0:
        i = -i
    if i >= p:
        i = i % p
    if i >= n:
        i = p - i
    return i


@njit(cache=True, nogil=True)
def reflection_cell(i, n):
    """Which mirror copy of ``[0, n)`` index ``i`` falls in: 0 inside, ±1 the first reflections, …"""
    if n <= 1 or (i >= 0 and i < n):
        return 0
    if i >= n:
        return (i - 1) // (n - 1)
    return -((-i - 1) // (n - 1)) - 1


@njit(cache=True, nogil=True)
def _cell_code(cy, cx, r):
    """0 for the crop itself, ``1 … (2r+1)²−1`` for the other cells (clamped to ``[-r, r]``)."""
    if cy == 0 and cx == 0:
        return 0
    cy = min(max(cy, -r), r)
    cx = min(max(cx, -r), r)
    side = 2 * r + 1
    idx = (cy + r) * side + (cx + r)
    centre = r * side + r
    return idx + 1 if idx < centre else idx


@njit(cache=True, nogil=True)
def label_source(sx, sy, f, h, w):
    """The label's source pixel ``(iy, ix) = floor(src)`` of the fixed-point source coordinates
    ``(sy, sx)`` (``f`` fraction bits), reflected into an ``h×w`` crop, and its reflection cell
    ``(cy, cx)`` (``0, 0`` inside the crop): returns ``(iy, ix, cy, cx)``."""
    ix = sx >> f
    iy = sy >> f
    cy = 0
    cx = 0
    if ix < 0 or ix >= w or iy < 0 or iy >= h:
        cy = reflection_cell(iy, h)
        cx = reflection_cell(ix, w)
        ix = reflect101(ix, w)
        iy = reflect101(iy, h)
    return iy, ix, cy, cx


@njit(cache=True, nogil=True)
def reflected_neighbours(y0, x0, h, w):
    """The bilinear neighbour rows and columns ``(ya, yb, xa, xb)`` of ``(y0, x0)``, each
    reflected into an ``h×w`` crop (the border case of the warp)."""
    return reflect101(y0, h), reflect101(y0 + 1, h), reflect101(x0, w), reflect101(x0 + 1, w)


@njit(cache=True, nogil=True)
def warp_geometry(y, x, a00, a01, a10, a11, t0, t1, f, h, w):
    """Where output pixel ``(y, x)`` samples an ``h×w`` crop, for the matrix row of :data:`N_PARAMS`.

    Returns ``(iy, ix, cy, cx, ya, yb, xa, xb, w00, w01, w10, w11)``: the label's source pixel
    ``(iy, ix)`` (``floor(src)``, reflected into the crop) and its reflection cell ``(cy, cx)``;
    the four bilinear neighbours (rows ``ya, yb``, columns ``xa, xb``, reflected) and their
    weights in units of ``2**-2f``. Scalars only, so that CPU loops and CUDA threads share it."""
    px = 2 * x + 1
    py = 2 * y + 1
    sx = a00 * px + a01 * py + t0
    sy = a10 * px + a11 * py + t1
    iy, ix, cy, cx = label_source(sx, sy, f, h, w)
    one = np.int64(1) << f
    ux = sx - (one >> 1)
    uy = sy - (one >> 1)
    x0 = ux >> f
    y0 = uy >> f
    fx = ux - (x0 << f)
    fy = uy - (y0 << f)
    if x0 >= 0 and x0 + 1 < w and y0 >= 0 and y0 + 1 < h:
        xa = x0
        xb = x0 + 1
        ya = y0
        yb = y0 + 1
    else:
        ya, yb, xa, xb = reflected_neighbours(y0, x0, h, w)
    return iy, ix, cy, cx, ya, yb, xa, xb, (one - fy) * (one - fx), (one - fy) * fx, fy * (one - fx), fy * fx


@njit(cache=True, nogil=True)
def coded_label(v, cy, cx, maxid, r):
    """Label ``v`` seen in reflection cell ``(cy, cx)``: ``v + maxid·code`` outside the crop, 0 stays 0."""
    if v > 0 and (cy != 0 or cx != 0):
        return v + maxid * _cell_code(cy, cx, r)
    return v


@njit(cache=True, nogil=True)
def colour_channel(v0, v1, v2, c0, c1, c2, base, shift):
    """One output channel of the colour map: ``(c·v + base) >> shift`` clamped to uint8 (``base``
    holds the offset and the half for rounding; see :func:`colour_constants`)."""
    q = (c0 * v0 + c1 * v1 + c2 * v2 + base) >> shift
    return min(max(q, 0), 255)


@njit(cache=True, nogil=True)
def colour_constants(tc, f):
    """``(base, shift)`` of :func:`colour_channel` for the offset ``tc`` and coordinate bits ``f``."""
    shift = 2 * f + COLOUR_BITS
    return (tc << (2 * f)) + (np.int64(1) << (shift - 1)), shift


@njit(cache=True, nogil=True)
def blur_round(acc):
    """Vertical blur accumulator (units ``2**-2·TAP_BITS``) → uint8, rounded half up."""
    q = (acc + (np.int64(1) << (2 * TAP_BITS - 1))) >> (2 * TAP_BITS)
    return min(max(q, 0), 255)


@njit(cache=True, nogil=True)
def canvas_source(yy, xx, m, h, w):
    """Pixel ``(yy, xx)`` of the crop reflect-padded by ``m``: ``(sy, sx, cy, cx)`` = the crop pixel it
    shows and its reflection cell (the DALI operator graph warps such a canvas)."""
    y = yy - m
    x = xx - m
    return reflect101(y, h), reflect101(x, w), reflection_cell(y, h), reflection_cell(x, w)


# ---------------------------------------------------------------------- CPU kernels
#
# The CPU kernels compute, bit for bit, what the per-pixel functions above compute (the CUDA
# kernels call those; tests/test_loader_cuda_sim.py checks both agree), organised for the
# vector units. Per sample, one pass packs the image into "pairs" (``pairs[y·W + x]`` holds the
# RGB of pixels x and x+1 of row y, 24 bits each, in the low and high 32-bit halves) and copies
# the labels to a contiguous int32 scratch (which also brings them into the cache: the warp
# reads them in rotated order, which no prefetcher follows). Then, per output row:
#
# * the source coordinate is linear in x, so the pixels whose four bilinear neighbours lie in
#   the crop form one interval (``_row_span``): there the two neighbour pairs are two loads
#   and the label one (``_interior_gather``); around it, the pixels whose neighbours are at
#   most one reflection away form a second interval, gathered with branch-free reflections
#   (``_border_index`` vectorised, ``_border_gather``); the few beyond (extreme zoom-out) take
#   the general per-pixel code (``_general_pixels``);
# * the bilinear weights and the colour map then run over the whole row from the gathered
#   pairs, vectorised: in 32-bit lanes where the sums provably fit (``_bilinear_narrow``:
#   weights < 2**16, bilinear sums < 2**31 for F <= 11; ``_colour_narrow``: 32×32→64-bit
#   products), else in int64 (``_bilinear_colour_wide``). The factorised bilinear
#   ``gy·(gx·a + fx·b) + fy·(gx·c + fx·d)`` equals ``warp_geometry``'s four-weight sum exactly
#   (integers, no overflow for F <= 17).

#: Largest frac bits whose bilinear sums (``255·2**2F``) fit in int32 lanes.
_NARROW_F = 11
#: Largest frac bits the CPU kernels take (:meth:`TraditionalAugment.frac_bits` gives at most 17).
_MAX_F = 22
#: Colour entries below this keep ``c·v`` sums (v < 2**31) far from int64 overflow in the narrow path.
_NARROW_C = 1 << 24
#: Area filters with id tables larger than this many entries per pixel use the plain two-pass count.
_AREA_TABLE_PER_PIXEL = 4


@kernel(cache=True, nogil=True)
def _pack(img, lab, pairs, lab32):
    """``pairs`` (H·W uint64): RGB of pixels x and x+1 of each row (24 bits each, low and high
    half; the last column's high half is 0); ``lab32`` (H·W int32): the labels, contiguous."""
    h, w = lab.shape
    if w == 0:
        return
    for y in range(h):
        o = uint64(y * w)
        lrow = lab[y]
        for x in range(w):
            lab32[o + uint64(x)] = lrow[x]
        row = img[y]
        prev = uint64(row[0, 0]) | (uint64(row[0, 1]) << uint64(8)) | (uint64(row[0, 2]) << uint64(16))
        for x in range(w - 1):
            nxt = uint64(row[x + 1, 0]) | (uint64(row[x + 1, 1]) << uint64(8)) | (uint64(row[x + 1, 2]) << uint64(16))
            pairs[o + uint64(x)] = prev | (nxt << uint64(32))
            prev = nxt
        pairs[o + uint64(w - 1)] = prev


@kernel(cache=True, nogil=True)
def _span(u0, d, lo, hi, n):
    """``(start, end)``: the x in ``[0, n)`` with ``lo <= u0 + d·x <= hi`` (one interval; end == start if none)."""
    if d == 0:
        if lo <= u0 and u0 <= hi:
            return 0, n
        return 0, 0
    if d < 0:  # lo <= u0 + d·x <= hi  <=>  -hi <= -u0 + (-d)·x <= -lo
        u0, lo, hi, d = -u0, -hi, -lo, -d
    a = min(max(-((u0 - lo) // d), 0), n)  # ceil((lo - u0) / d)
    b = min((hi - u0) // d + 1, n)  # floor((hi - u0) / d) + 1
    return a, max(a, b)


@kernel(cache=True, nogil=True)
def _row_span(ux, dx, uy, dy, f, h, w, k):
    """The x in ``[0, w)`` of an output row whose bilinear neighbours ``x0, x0+1`` (``x0 = (ux + dx·x) >> f``)
    and ``y0, y0+1`` lie in ``[-k·(n−1), (k+1)·(n−1)]``: k = 0 the crop itself, k = 1 up to one reflection."""
    a0, b0 = _span(ux, dx, -k * ((w - 1) << f), (((k + 1) * (w - 1)) << f) - 1, w)
    a1, b1 = _span(uy, dy, -k * ((h - 1) << f), (((k + 1) * (h - 1)) << f) - 1, w)
    a = max(a0, a1)
    return a, max(a, min(b0, b1))


@kernel(cache=True, nogil=True)
def _general_pixels(pairs, lab32, g, ol, ob, lo, hi, sxr, syr, dx, dy, f, h, w, maxid, r):
    """Pixels ``0 … lo−1`` and ``hi … w−1`` of an output row, any number of reflections: labels into
    ``ol[ob + x]``, neighbour pairs into ``g`` (top row at ``x``, bottom row at ``w + x``)."""
    half = (np.int64(1) << f) >> 1
    m = uint64(0xFFFFFF)
    for k in range(lo + w - hi):
        x = k if k < lo else k - lo + hi
        sx = sxr + dx * x
        sy = syr + dy * x
        iy, ix, cy, cx = label_source(sx, sy, f, h, w)
        ol[ob + x] = coded_label(np.int64(lab32[iy * w + ix]), cy, cx, maxid, r)
        ya, yb, xa, xb = reflected_neighbours((sy - half) >> f, (sx - half) >> f, h, w)
        g[x] = (pairs[ya * w + xa] & m) | ((pairs[ya * w + xb] & m) << uint64(32))
        g[w + x] = (pairs[yb * w + xa] & m) | ((pairs[yb * w + xb] & m) << uint64(32))


@kernel(cache=True, nogil=True)
def _border_index(idx, s0, e0, s1, e1, ux, uy, dx, dy, f, h, w):
    """Pixels ``s0 … e0−1`` and ``s1 … e1−1`` of an output row whose neighbours are at most one
    reflection out (``ux + dx·x`` is pixel x's coordinate), vectorised: per pixel 4 entries of
    ``idx``: the pair index of the neighbour block (smaller row and column), swap flags (bit 0:
    columns mirrored, bit 1: rows), the label's source index, its reflection cell ``3·cy + cx + 4``.
    One reflection of ``i`` into ``[0, n)`` is ``(n−1) − |(n−1) − |i||``; ``x0`` and ``x0+1`` are
    mirrored iff ``x0`` is outside ``[0, n−2]``."""
    for seg in range(2):
        s = s0 if seg == 0 else s1
        _border_index_run(idx, s, (e0 if seg == 0 else e1) - s, ux + dx * s, uy + dy * s, dx, dy, f, h, w)


@kernel(cache=True, nogil=True)
def _border_index_run(idx, s, n, ux, uy, dx, dy, f, h, w):
    """:func:`_border_index` of pixels ``s … s+n−1`` (one vectorised loop; ``ux`` is pixel s's coordinate)."""
    w1 = w - 1
    h1 = h - 1
    for i in range(n):
        u = ux + dx * i
        v = uy + dy * i
        x0 = u >> f
        y0 = v >> f
        swx = np.int64((x0 < 0) | (x0 > w - 2))
        swy = np.int64((y0 < 0) | (y0 > h - 2))
        xm = w1 - abs(w1 - abs(x0)) - swx
        ym = h1 - abs(h1 - abs(y0)) - swy
        hx = (u >> (f - 1)) & 1  # floor(src) = x0 + hx
        hy = (v >> (f - 1)) & 1
        lx = x0 + hx
        ly = y0 + hy
        j = uint64(4 * (s + i))
        idx[j] = ym * w + xm
        idx[j + uint64(1)] = swx | (swy << 1)
        idx[j + uint64(2)] = (ym + (hy ^ swy)) * w + xm + (hx ^ swx)
        cy = np.int64(ly >= h) - np.int64(ly < 0)
        cx = np.int64(lx >= w) - np.int64(lx < 0)
        idx[j + uint64(3)] = 3 * cy + cx + 4


@kernel(cache=True, nogil=True)
def _border_gather(pairs, lab32, idx, codes, g, ol, ob, s0, e0, s1, e1, w):
    """The loads of :func:`_border_index`'s pixels ``s0 … e0−1``, ``s1 … e1−1``: the pairs (halves
    swapped and rows exchanged where mirrored) and the labels, coded by their cell
    (``codes[cell]`` = maxid·code)."""
    uw = uint64(w)
    s32 = uint64(32)
    n0 = e0 - s0
    for k in range(n0 + e1 - s1):
        x = s0 + k if k < n0 else s1 + k - n0
        j = uint64(4 * x)
        p = uint64(idx[j])
        a = pairs[p]
        b = pairs[p + uw]
        s = idx[j + uint64(1)]
        if s & 1:
            a = (a >> s32) | (a << s32)
            b = (b >> s32) | (b << s32)
        if s & 2:
            a, b = b, a
        g[uint64(x)] = a
        g[uw + uint64(x)] = b
        v = np.int64(lab32[uint64(idx[j + uint64(2)])])
        ol[uint64(ob + x)] = v + codes[uint64(idx[j + uint64(3)])] if v > 0 else v


@kernel(cache=True, nogil=True)
def _interior_gather(pairs, lab32, g, ol, ob, lo, hi, sx, sy, dx, dy, f, w):
    """Pixels ``lo … hi−1`` whose neighbours are all in the crop: two pair loads and the label."""
    half = (np.int64(1) << f) >> 1
    uw = uint64(w)
    for x in range(lo, hi):
        ol[uint64(ob + x)] = lab32[uint64((sy >> f) * w + (sx >> f))]
        p = uint64(((sy - half) >> f) * w + ((sx - half) >> f))
        g[uint64(x)] = pairs[p]
        g[uw + uint64(x)] = pairs[p + uw]
        sx += dx
        sy += dy


@kernel(cache=True, nogil=True)
def _weights(u, v, f, cast):
    """Bilinear weights ``(fx, fy, gx, gy)`` of the grid coordinates ``u, v`` (units ``2**-f``), at
    most ``2**f``, cast through ``cast`` (a type that holds them: the narrower, the better LLVM
    multiplies them — ``np.uint16`` for F <= 15, ``np.int32`` for F <= 30)."""
    one = np.int64(1) << f
    fx = np.int64(cast(u & (one - 1)))
    fy = np.int64(cast(v & (one - 1)))
    return fx, fy, np.int64(cast(one - fx)), np.int64(cast(one - fy))


@kernel(cache=True, nogil=True)
def _pair_sums(gx, fx, p, q):
    """The horizontal bilinear sums ``gx·left + fx·right`` of the three channels of the top and
    bottom pixel pairs ``p``, ``q``: ``(t0, b0, t1, b1, t2, b2)``, below ``255·2**F`` (< 2**31 for
    F <= :data:`_MAX_F`; the casts let LLVM multiply 32×32→64 when it knows the weights' width)."""
    s32 = uint64(32)
    a = np.int64(np.uint32(p))
    b = np.int64(np.uint32(p >> s32))
    c = np.int64(np.uint32(q))
    d = np.int64(np.uint32(q >> s32))
    return (np.int64(np.int32(gx * (a & 255) + fx * (b & 255))),
            np.int64(np.int32(gx * (c & 255) + fx * (d & 255))),
            np.int64(np.int32(gx * ((a >> 8) & 255) + fx * ((b >> 8) & 255))),
            np.int64(np.int32(gx * ((c >> 8) & 255) + fx * ((d >> 8) & 255))),
            np.int64(np.int32(gx * (a >> 16) + fx * (b >> 16))),
            np.int64(np.int32(gx * (c >> 16) + fx * (d >> 16))))


@kernel(cache=True, nogil=True)
def _bilinear_narrow(g, v, n, ux, uy, dx, dy, f):
    """Bilinear sums of a row (``f <= _NARROW_F``), units ``2**-2f``, into ``v`` (3 planes of n int32)."""
    un = uint64(n)
    for i in range(n):
        fx, fy, gx, gy = _weights(ux + dx * i, uy + dy * i, f, np.uint16)
        t0, b0, t1, b1, t2, b2 = _pair_sums(gx, fx, g[uint64(i)], g[un + uint64(i)])
        v[uint64(i)] = np.int32(gy * t0 + fy * b0)
        v[un + uint64(i)] = np.int32(gy * t1 + fy * b1)
        v[uint64(2) * un + uint64(i)] = np.int32(gy * t2 + fy * b2)


@kernel(cache=True, nogil=True)
def _colour_narrow(v, fo, o, n, c00, c01, c02, c10, c11, c12, c20, c21, c22, base, shift):
    """:func:`colour_channel` of :func:`_bilinear_narrow`'s sums into ``fo[o + 3·i + c]`` (|c| < 2**31)."""
    k00, k01, k02 = np.int64(np.int32(c00)), np.int64(np.int32(c01)), np.int64(np.int32(c02))
    k10, k11, k12 = np.int64(np.int32(c10)), np.int64(np.int32(c11)), np.int64(np.int32(c12))
    k20, k21, k22 = np.int64(np.int32(c20)), np.int64(np.int32(c21)), np.int64(np.int32(c22))
    un = uint64(n)
    uo = uint64(o)
    for i in range(n):
        v0 = np.int64(v[uint64(i)])
        v1 = np.int64(v[un + uint64(i)])
        v2 = np.int64(v[uint64(2) * un + uint64(i)])
        j = uo + uint64(3 * i)
        fo[j] = min(max((k00 * v0 + k01 * v1 + k02 * v2 + base) >> shift, 0), 255)
        fo[j + uint64(1)] = min(max((k10 * v0 + k11 * v1 + k12 * v2 + base) >> shift, 0), 255)
        fo[j + uint64(2)] = min(max((k20 * v0 + k21 * v1 + k22 * v2 + base) >> shift, 0), 255)


@kernel(cache=True, nogil=True)
def _bilinear_colour_wide(g, fo, o, n, ux, uy, dx, dy, f, c00, c01, c02, c10, c11, c12, c20, c21, c22, base,
                          shift):
    """Bilinear + colour of a row (F <= :data:`_MAX_F`, any colour entries) into ``fo[o + 3·i + c]``:
    the weights and the horizontal sums (``255·2**F``) fit int32 (the casts say so, and LLVM multiplies
    them 32×32→64), the rest is int64."""
    un = uint64(n)
    uo = uint64(o)
    for i in range(n):
        fx, fy, gx, gy = _weights(ux + dx * i, uy + dy * i, f, np.int32)
        t0, b0, t1, b1, t2, b2 = _pair_sums(gx, fx, g[uint64(i)], g[un + uint64(i)])
        v0 = gy * t0 + fy * b0
        v1 = gy * t1 + fy * b1
        v2 = gy * t2 + fy * b2
        j = uo + uint64(3 * i)
        fo[j] = colour_channel(v0, v1, v2, c00, c01, c02, base, shift)
        fo[j + uint64(1)] = colour_channel(v0, v1, v2, c10, c11, c12, base, shift)
        fo[j + uint64(2)] = colour_channel(v0, v1, v2, c20, c21, c22, base, shift)


@kernel(cache=True, nogil=True)
def _warp(pairs, lab32, prm, out_img, out_lab, g, v, idx, codes):
    """Warp + colour of one sample (see the notes above) from its :func:`_pack` arrays, with the
    scratch of :func:`_scratch` (independent of the input dtypes: compiled once)."""
    h, w = out_lab.shape
    a00, a01, a10, a11 = prm[P_A00], prm[P_A01], prm[P_A10], prm[P_A11]
    t0, t1, f, maxid, r = prm[P_T0], prm[P_T1], prm[P_FRAC], prm[P_MAXID], prm[P_R]
    c00, c01, c02, c10, c11, c12 = prm[P_C], prm[P_C + 1], prm[P_C + 2], prm[P_C + 3], prm[P_C + 4], prm[P_C + 5]
    c20, c21, c22 = prm[P_C + 6], prm[P_C + 7], prm[P_C + 8]
    if f < 1 or f > _MAX_F:
        raise InputError("augment kernels: the parameter row's frac bits (P_FRAC) must be 1 … 22")
    base, shift = colour_constants(prm[P_TC], f)
    narrow = f <= _NARROW_F and max(abs(c00), abs(c01), abs(c02), abs(c10), abs(c11), abs(c12), abs(c20), abs(c21),
                                    abs(c22)) < _NARROW_C
    half = (np.int64(1) << f) >> 1
    dx = 2 * a00  # source step per output column, units 2**-f
    dy = 2 * a10
    for cy in range(-1, 2):
        for cx in range(-1, 2):
            codes[3 * cy + cx + 4] = maxid * _cell_code(cy, cx, r)
    ol = out_lab.reshape(-1)
    fo = out_img.reshape(-1)
    for y in range(h):
        sxr = a01 * (2 * y + 1) + t0 + a00  # source coordinate of (y, 0), units 2**-f
        syr = a11 * (2 * y + 1) + t1 + a10
        ux = sxr - half  # the bilinear grid is shifted by half a pixel
        uy = syr - half
        xs, xe = _row_span(ux, dx, uy, dy, f, h, w, 0)
        bs, be = _row_span(ux, dx, uy, dy, f, h, w, 1)  # contains [xs, xe)
        if xe == xs:
            xs = be
            xe = be
        ob = y * w
        if bs > 0 or be < w:
            _general_pixels(pairs, lab32, g, ol, ob, bs, be, sxr, syr, dx, dy, f, h, w, maxid, r)
        if xs > bs or be > xe:
            _border_index(idx, bs, xs, xe, be, ux, uy, dx, dy, f, h, w)
            _border_gather(pairs, lab32, idx, codes, g, ol, ob, bs, xs, xe, be, w)
        if xe > xs:
            _interior_gather(pairs, lab32, g, ol, ob, xs, xe, sxr + dx * xs, syr + dy * xs, dx, dy, f, w)
        if narrow:
            _bilinear_narrow(g, v, w, ux, uy, dx, dy, f)
            _colour_narrow(v, fo, 3 * ob, w, c00, c01, c02, c10, c11, c12, c20, c21, c22, base, shift)
        else:
            _bilinear_colour_wide(g, fo, 3 * ob, w, ux, uy, dx, dy, f, c00, c01, c02, c10, c11, c12, c20, c21, c22,
                                  base, shift)


@kernel(cache=True, nogil=True)
def _blur(img, taps, r, tmp, acc, pad):
    """Separable Gaussian in place (reflect-101 border), integer taps: the same integer sums as the
    CUDA kernels, ordered for vectorisation. Each row is copied reflect-padded into ``pad``
    (≥ 3·(W+2r) int32) and convolved as one flat array, taps in the outer loop, into ``tmp``
    (≥ 3·H·W int32; the sums are at most 255·2**16). The vertical pass adds two taps' rows of ``tmp``
    at a time into ``acc`` (≥ 3W int64; 32×32→64-bit products), the last two with the rounding
    (:func:`blur_round`)."""
    h, w = img.shape[0], img.shape[1]
    n = 2 * r + 1
    m = 3 * w
    um = uint64(m)
    u3r = uint64(3 * r)
    px = img.reshape(-1)
    for y in range(h):
        o = uint64(y) * um
        for i in range(m):
            pad[u3r + uint64(i)] = px[o + uint64(i)]
        for x in range(r):  # the reflected columns either side
            left = o + uint64(3 * reflect101(x - r, w))
            right = o + uint64(3 * reflect101(w + x, w))
            for c in range(3):
                pad[uint64(3 * x + c)] = px[left + uint64(c)]
                pad[u3r + um + uint64(3 * x + c)] = px[right + uint64(c)]
        k = np.int64(np.int32(taps[0]))
        for i in range(m):
            tmp[o + uint64(i)] = np.int32(k * np.int64(pad[uint64(i)]))
        for t in range(1, n):
            k = np.int64(np.int32(taps[t]))
            ot = uint64(3 * t)
            for i in range(m):
                tmp[o + uint64(i)] = np.int32(np.int64(tmp[o + uint64(i)]) + k * np.int64(pad[ot + uint64(i)]))
    for y in range(h):
        k = np.int64(np.int32(taps[0]))
        o = uint64(reflect101(y - r, h)) * um
        for i in range(m):
            acc[uint64(i)] = k * np.int64(tmp[o + uint64(i)])
        for t in range(1, n - 2, 2):
            k0 = np.int64(np.int32(taps[t]))
            k1 = np.int64(np.int32(taps[t + 1]))
            o0 = uint64(reflect101(y + t - r, h)) * um
            o1 = uint64(reflect101(y + t + 1 - r, h)) * um
            for i in range(m):
                acc[uint64(i)] += k0 * np.int64(tmp[o0 + uint64(i)]) + k1 * np.int64(tmp[o1 + uint64(i)])
        k0 = np.int64(np.int32(taps[n - 2]))
        k1 = np.int64(np.int32(taps[n - 1]))
        o0 = uint64(reflect101(y + r - 1, h)) * um
        o1 = uint64(reflect101(y + r, h)) * um
        o = uint64(y) * um
        for i in range(m):
            px[o + uint64(i)] = blur_round(acc[uint64(i)] + k0 * np.int64(tmp[o0 + uint64(i)])
                                           + k1 * np.int64(tmp[o1 + uint64(i)]))


@kernel(cache=True, nogil=True)
def _area_filter(lab, table, min_area):
    """Ids with fewer than ``min_area`` pixels become background (``table`` is scratch, zeroed here):
    one count pass, one clearing pass (any table size). False (``lab`` unchanged) if an id is
    beyond the table."""
    table[:] = 0
    h, w = lab.shape
    n = table.shape[0]
    for y in range(h):
        for x in range(w):
            v = lab[y, x]
            if v > 0:
                if v >= n:
                    return False
                table[v] += 1
    for y in range(h):
        for x in range(w):
            v = lab[y, x]
            if v > 0 and table[v] < min_area:
                lab[y, x] = 0
    return True


@kernel(cache=True, nogil=True)
def _area_filter_runs(lab, m, min_area, tab):
    """:func:`_area_filter` for ids below ``m``, counting runs of equal ids and clearing each small id
    only in the rows it occurs in. ``tab`` (3 × ≥ m int32, zeroed): count, first row, last row."""
    ok = True
    h, w = lab.shape
    if w == 0:
        return True
    cnt = tab[0]
    first = tab[1]
    last = tab[2]
    for y in range(h):
        prev = lab[y, 0]
        start = 0
        for x in range(1, w + 1):
            v = lab[y, x] if x < w else prev + 1  # a value that ends the last run
            if v != prev:
                if prev >= m:
                    ok = False
                elif prev > 0:
                    k = uint64(prev)
                    if cnt[k] == 0:
                        first[k] = y
                    cnt[k] += x - start
                    last[k] = y
                prev = v
                start = x
    if not ok:
        return False
    for v in range(1, m):
        c = cnt[v]
        if c > 0 and c < min_area:
            for y in range(first[v], last[v] + 1):
                for x in range(w):
                    if lab[y, x] == v:
                        lab[y, x] = 0
    return True


@kernel(cache=True, nogil=True)
def _clean(lab, maxid, r, min_area, tab):
    """The area filter with the scratch table ``tab`` (3 × T int32) when the ids fit it (it is zeroed
    here), else with a table of its own. False (``lab`` unchanged) if an id is ``maxid·(2r+1)² + 1``
    or more (never, for the warp's output)."""
    side = 2 * r + 1
    m = maxid * side * side + 1
    h, w = lab.shape
    if m <= tab.shape[1]:
        for k in range(3):
            for v in range(m):
                tab[k, v] = 0
        return _area_filter_runs(lab, m, min_area, tab)
    if m <= _AREA_TABLE_PER_PIXEL * h * w + 1024:
        return _area_filter_runs(lab, m, min_area, zeros((3, m), np.int32))
    return _area_filter(lab, zeros(m, np.int64), min_area)  # very many possible ids (extreme cell ranges)


@kernel(cache=True, nogil=True)
def _scratch(h, w, blur_r, ids):
    """Scratch arrays of :func:`_augment_into` for H×W crops, blur radii up to ``blur_r`` and
    ``ids`` possible ids (``maxid·(2r+1)² + 1``) in the area filter."""
    m = min(ids, _AREA_TABLE_PER_PIXEL * h * w + 1024)
    return (empty(h * w, np.uint64), empty(h * w, np.int32), empty(2 * w, np.uint64),
            empty(3 * w, np.int32), empty(4 * w, np.int64), empty(9, np.int64),
            empty(3 * h * w if blur_r > 0 else 0, np.int32), empty(3 * w, np.int64),
            empty(3 * (w + 2 * blur_r), np.int32), empty((3, m), np.int32))


@kernel(cache=True, nogil=True, inline="always")
def _augment_into(img, lab, prm, taps, out_img, out_lab, blur, clean, scratch):
    """:func:`augment_sample` with the scratch of :func:`_scratch`."""
    pairs, lab32, g, v, idx, codes, tmp, acc, pad, tab = scratch
    _pack(img, lab, pairs, lab32)
    _warp(pairs, lab32, prm, out_img, out_lab, g, v, idx, codes)
    br = prm[P_BLUR_R]
    if blur and br > 0:
        _blur(out_img, taps, br, tmp, acc, pad)
    if clean:
        _clean(out_lab, prm[P_MAXID], prm[P_R], prm[P_MIN_AREA], tab)


@kernel(cache=True, nogil=True)
def augment_sample(img, lab, prm, taps, out_img, out_lab, blur, clean):
    """One sample on the CPU: warp + colour, the blur (if ``blur`` and its radius > 0), the
    area filter (``clean``). Releases the GIL. ``out_img`` and ``out_lab`` must be C-contiguous."""
    h, w = lab.shape
    side = 2 * prm[P_R] + 1
    scratch = _scratch(h, w, prm[P_BLUR_R] if blur else 0, prm[P_MAXID] * side * side + 1 if clean else 0)
    _augment_into(img, lab, prm, taps, out_img, out_lab, blur, clean, scratch)


@kernel(cache=True, nogil=True)
def augment_batch_kernel(images, labels, params, taps, out_images, out_labels):
    """:func:`augment_sample` over an N×H×W×3 batch (one thread; callers parallelise); the scratch
    is allocated once."""
    n, h, w = labels.shape
    br = 0
    ids = 0
    for b in range(n):
        side = 2 * params[b, P_R] + 1
        br = max(br, params[b, P_BLUR_R])
        ids = max(ids, params[b, P_MAXID] * side * side + 1)
    scratch = _scratch(h, w, br, ids)
    for b in range(n):
        _augment_into(images[b], labels[b], params[b], taps[b], out_images[b], out_labels[b], True, True, scratch)


@kernel(cache=True, nogil=True)
def reflect_canvas(img, lab, maxid, r, m, out_img, out_lab):
    """The crop reflect-padded by ``m`` pixels (``out_*`` are (H+2m)×(W+2m)); labels of the
    mirrored copies coded as in the warp (:func:`coded_label`)."""
    h, w = lab.shape
    for yy in range(out_lab.shape[0]):
        for xx in range(out_lab.shape[1]):
            sy, sx, cy, cx = canvas_source(yy, xx, m, h, w)
            out_lab[yy, xx] = coded_label(np.int64(lab[sy, sx]), cy, cx, maxid, r)
            out_img[yy, xx, 0] = img[sy, sx, 0]
            out_img[yy, xx, 1] = img[sy, sx, 1]
            out_img[yy, xx, 2] = img[sy, sx, 2]


@kernel(cache=True, nogil=True)
def area_filter(lab, maxid, r, min_area):
    """Ids with fewer than ``min_area`` pixels in ``lab`` (ids below ``maxid·(2r+1)² + 1``) become 0."""
    if not _clean(lab, maxid, r, min_area, empty((3, 0), np.int32)):
        raise LabelMapError("area_filter: labels have ids at or above maxid·(2r+1)² + 1")


@njit(cache=True, nogil=True)
def crop_stats(image, labels):
    """``(luma_sum, max_id)`` of one crop: ``Σ 299·R + 587·G + 114·B`` (exact) and the largest label."""
    s0 = np.int64(0)
    s1 = np.int64(0)
    s2 = np.int64(0)
    m = np.int64(0)
    h, w = labels.shape
    for y in range(h):
        for x in range(w):
            s0 += image[y, x, 0]
            s1 += image[y, x, 1]
            s2 += image[y, x, 2]
            v = np.int64(labels[y, x])
            if v > m:
                m = v
    return 299 * s0 + 587 * s1 + 114 * s2, m


# ---------------------------------------------------------------------- helpers
def colour_matrix(gain: float, s: float, hue: float) -> np.ndarray:
    """``gain·(P + s·(cos θ·(I−P) + sin θ·[n]×))``, θ = 2π·hue, quantised to ``2**-COLOUR_BITS``: chroma
    scaled by ``s`` and rotated about the grey axis ``n`` (``P`` projects on it; rows sum to ``gain``)."""
    th = 2.0 * math.pi * hue
    co, si = s * math.cos(th), s * math.sin(th) / math.sqrt(3.0)
    d = 1.0 / 3.0 + co * 2.0 / 3.0
    o = 1.0 / 3.0 - co / 3.0
    q = float(1 << COLOUR_BITS)
    m = [[d, o - si, o + si], [o + si, d, o - si], [o - si, o + si, d]]
    return np.array([[round(gain * v * q) / q for v in row] for row in m])


def gaussian_taps(sigma: float) -> np.ndarray:
    """``2·ceil(3σ)+1`` Gaussian taps as int64 multiples of ``2**-TAP_BITS`` summing to exactly ``2**TAP_BITS``."""
    r = int(math.ceil(3.0 * sigma))
    t = np.arange(-r, r + 1, dtype=np.float64)
    g = np.exp(-(t * t) / (2.0 * sigma * sigma))
    q = np.rint(g / g.sum() * (1 << TAP_BITS)).astype(np.int64)
    q[r] += (1 << TAP_BITS) - int(q.sum())
    return q


class TraditionalAugment:
    """Random scale, shift, rotation, flips, colour jitter and blur (see the module docstring
    for the exact arithmetic).

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
        min_area: instances with fewer pixels after the warp become background (8).
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
        self.scale = check_pair("scale", scale, 1e-2, 100.0)
        self.shift = check_number("shift", shift, 0.0, 1.0)
        self.rotate = check_number("rotate", rotate, 0.0, 360.0)
        self.flip = check_bool("flip", flip)
        self.brightness = check_number("brightness", brightness, 0.0, 1.0)
        self.contrast = check_number("contrast", contrast, 0.0, 1.0)
        self.saturation = check_number("saturation", saturation, 0.0, 1.0)
        self.hue = check_number("hue", hue, 0.0, 0.5)
        self.blur_p = check_number("blur_p", blur_p, 0.0, 1.0)
        self.blur_sigma = check_pair("blur_sigma", blur_sigma, 1e-3, 100.0)
        self.p_geometric = check_number("p_geometric", p_geometric, 0.0, 1.0)
        self.min_area = check_int("min_area", min_area, 1)

    def _settings(self) -> dict:
        return {k: v for k, v in vars(self).items() if not k.startswith("_")}

    def __repr__(self) -> str:
        return f"TraditionalAugment({', '.join(f'{k}={v!r}' for k, v in self._settings().items())})"

    # ------------------------------------------------------------------ bounds
    def _bounds(self, shape) -> tuple[int, int]:
        """``(frac_bits, cell_range)`` of an ``H×W`` crop (cached per shape)."""
        key = (int(shape[0]), int(shape[1]))
        cache = self.__dict__.setdefault("_bounds_cache", {})
        if key not in cache:
            cache[key] = (self.frac_bits(key), self.cell_range(key))
        return cache[key]

    def _reach(self, side: int) -> float:
        """Largest distance (pixels, along one axis) from the centre of a ``side``×``side`` crop that a
        source coordinate can reach: corners and shift, rotated, divided by the smallest scale."""
        if self.rotate >= 45.0:
            g = math.sqrt(2.0)
        else:
            g = math.cos(math.radians(self.rotate)) + math.sin(math.radians(self.rotate))
        return (side / 2.0 + self.shift * side) * g / self.scale[0] + 2.0

    def cell_range(self, shape) -> int:
        """``R``: every source pixel of a warp of an ``H×W`` crop lies within ``R`` reflections of it."""
        r = 1
        side = max(int(shape[0]), int(shape[1]))
        for n in (int(shape[0]), int(shape[1])):
            reach = self._reach(side)
            lo, hi = math.floor(n / 2.0 - reach), math.ceil(n / 2.0 + reach)
            r = max(r, abs(int(reflection_cell(lo, n))), abs(int(reflection_cell(hi, n))))
        return r

    def margin(self, shape) -> int:
        """Reflect padding (pixels, each side) that holds every source pixel of a warp of an ``H×W`` crop
        (the DALI operator graph warps such a padded canvas)."""
        side = max(int(shape[0]), int(shape[1]))
        return max(0, int(math.ceil(self._reach(side) - min(int(shape[0]), int(shape[1])) / 2.0)) + 2)

    def frac_bits(self, shape) -> int:
        """``F``: source coordinates are multiples of ``2**-F``; small enough that float32 computes them
        exactly on the padded canvas (24-bit significand), at most 17."""
        side = max(int(shape[0]), int(shape[1]))
        bound = 2.0 * math.sqrt(2.0) * side / self.scale[0] + 2.0 * (side + self.margin(shape)) + 4.0
        e = int(math.ceil(math.log2(bound)))
        return int(min(17, max(5, 22 - e)))

    def max_blur_radius(self) -> int:
        return int(math.ceil(3.0 * self.blur_sigma[1])) if self.blur_p > 0 else 0

    def id_factor(self, shape) -> int:
        """``K``: after the warp, ids of a crop whose largest id is ``M`` are below ``M·K + 1``."""
        return (2 * self.cell_range(shape) + 1) ** 2

    # ------------------------------------------------------------------ plan
    def draw(self, shape, seed: int, index: int = 0) -> AugmentDraw:
        """The per-sample decisions for ``(seed, index)`` on an ``H×W`` crop."""
        H, W = int(shape[0]), int(shape[1])
        # make_rng's draws (7 for the geometry, 6 for colour and blur) without a new generator per sample
        index = check_int("index", index, 0, (1 << 64) - 1, error=InputError)
        g = keyed_rng(check_seed(seed), index, _S_GEOM).random(13).tolist()
        apply = g[0] < self.p_geometric
        s = self.scale[0] + (self.scale[1] - self.scale[0]) * g[1]
        ang = -self.rotate + 2.0 * self.rotate * g[2]
        ty = (-self.shift + 2.0 * self.shift * g[3]) * H
        tx = (-self.shift + 2.0 * self.shift * g[4]) * W
        fh = self.flip and g[5] < 0.5
        fv = self.flip and g[6] < 0.5
        if not apply:
            s, ang, ty, tx = 1.0, 0.0, 0.0, 0.0
        f = self._bounds((H, W))[0]
        geometric = bool(apply or fh or fv)
        if geometric:
            matrix = _inverse_matrix(H, W, s, ang, tx, ty, fh, fv, f)
        else:
            matrix = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
        c = g[7:]
        b = 1 - self.brightness + 2.0 * self.brightness * c[0]
        con = 1 - self.contrast + 2.0 * self.contrast * c[1]
        sat = 1 - self.saturation + 2.0 * self.saturation * c[2]
        hue = -self.hue + 2.0 * self.hue * c[3]
        do_blur = c[4] < self.blur_p
        sigma = self.blur_sigma[0] + (self.blur_sigma[1] - self.blur_sigma[0]) * c[5]
        colour = colour_matrix(b * con, sat, hue)
        return AugmentDraw(matrix, f, colour, float(b * (1.0 - con)), float(sigma) if do_blur else 0.0, geometric)

    def params(self, draw: AugmentDraw, luma_sum: int, max_id: int, shape):
        """The kernel row (``int64[N_PARAMS]``) and blur taps (``int64[2·max_blur_radius+1]``) of a draw,
        for an ``H×W`` crop (``shape``) with luminance sum ``luma_sum`` (:func:`crop_stats`) and largest
        id ``max_id``."""
        f = draw.frac_bits
        row = np.zeros(N_PARAMS, np.int64)
        a = np.rint(draw.matrix[:, :2] * 2.0 ** (f - 1)).astype(np.int64)
        t = np.rint(draw.matrix[:, 2] * 2.0 ** f).astype(np.int64)
        row[P_A00], row[P_A01], row[P_A10], row[P_A11] = a[0, 0], a[0, 1], a[1, 0], a[1, 1]
        row[P_T0], row[P_T1], row[P_FRAC] = t[0], t[1], f
        row[P_C:P_C + 9] = np.rint(draw.colour * (1 << COLOUR_BITS)).astype(np.int64).ravel()
        luma = float(luma_sum) / (1000.0 * float(int(shape[0]) * int(shape[1])))
        row[P_TC] = int(round(draw.offset_gain * luma * (1 << COLOUR_BITS)))
        row[P_MAXID] = int(max_id)
        row[P_R] = self._bounds(shape)[1]
        row[P_MIN_AREA] = self.min_area
        taps = np.zeros(2 * self.max_blur_radius() + 1, np.int64)
        if draw.blur_sigma > 0:
            q = gaussian_taps(draw.blur_sigma)
            row[P_BLUR_R] = len(q) // 2
            row[P_SIGMA] = int(round(draw.blur_sigma * (1 << TAP_BITS)))
            taps[:len(q)] = q
        return row, taps

    def prepare(self, images, labels, seed: int, indices) -> tuple[np.ndarray, np.ndarray, list[AugmentDraw]]:
        """Parameter rows (N×N_PARAMS) and taps (N×T) of a checked N×H×W×3 / N×H×W batch."""
        n, h, w = labels.shape
        k = self.id_factor((h, w))
        rows = np.empty((n, N_PARAMS), np.int64)
        taps = np.zeros((n, 2 * self.max_blur_radius() + 1), np.int64)
        draws = []
        for j in range(n):
            d = self.draw((h, w), seed, int(indices[j]))
            luma, mx = crop_stats(images[j], labels[j])
            if mx * k >= 2**31:
                raise InputError(f"labels of sample {j} have ids up to {mx}: too large for the reflection "
                                 f"coding (× {k}); relabel the instances 1..K first")
            rows[j], taps[j] = self.params(d, luma, mx, (h, w))
            draws.append(d)
        return rows, taps, draws

    # ------------------------------------------------------------------ compatibility views
    def affine_matrix(self, shape, seed: int, index: int = 0) -> np.ndarray:
        """The 2×3 forward matrix (output ← input, OpenCV's convention, pixel centres at integers)
        of the warp actually applied (its quantised inverse, inverted)."""
        d = self.draw(shape, seed, index)
        inv = np.vstack([d.matrix, [0.0, 0.0, 1.0]])
        fwd = np.linalg.inv(np.array([[1.0, 0, -0.5], [0, 1, -0.5], [0, 0, 1]]) @ inv
                            @ np.array([[1.0, 0, 0.5], [0, 1, 0.5], [0, 0, 1]]))
        return fwd[:2]

    def _run(self, image, labels, seed, index, warp: bool, photometric: bool, clean: bool):
        image, labels = check_sample(image, labels)
        seed = check_seed(seed)
        images, labs = image[None], labels[None]
        rows, taps, _ = self.prepare(images, labs, seed, [index])
        if not warp:  # identity geometry
            f = rows[0, P_FRAC]
            rows[0, [P_A00, P_A11]] = 1 << (f - 1)
            rows[0, [P_A01, P_A10, P_T0, P_T1]] = 0
        if not photometric:
            rows[0, P_C:P_C + 9] = np.eye(3, dtype=np.int64).ravel() << COLOUR_BITS
            rows[0, P_TC] = 0
        out_i, out_l = np.empty_like(images), np.empty_like(labs)
        augment_sample(images[0], labs[0], rows[0], taps[0], out_i[0], out_l[0], photometric, clean)
        return out_i[0], out_l[0]

    def geometric(self, image, labels, seed: int, index: int = 0) -> tuple[np.ndarray, np.ndarray]:
        """Apply only the warp (same matrix to image and labels; reflected copies recoded, no area filter)."""
        return self._run(image, labels, seed, index, True, False, False)

    def photometric(self, image, seed: int, index: int = 0) -> np.ndarray:
        """Colour jitter then, with probability ``blur_p``, the Gaussian blur (image only)."""
        image = np.asarray(image)
        dummy = np.zeros(image.shape[:2], np.int32) if image.ndim == 3 else image
        return self._run(image, dummy, seed, index, False, True, False)[0]

    # ------------------------------------------------------------------ calls
    def __call__(self, image, labels, seed: int = 0, index: int = 0) -> tuple[np.ndarray, np.ndarray]:
        """Augment one sample; returns ``(image uint8 H×W×3, labels int32 H×W)``."""
        return self._run(image, labels, seed, index, True, True, True)

    def batch(self, images, labels, seed: int = 0, indices=None) -> tuple[np.ndarray, np.ndarray]:
        """Augment an N×H×W×3 batch; sample i uses index ``indices[i]`` (default i).
        Runs in one Numba kernel that releases the GIL (threads may call it in parallel)."""
        images, labels = check_batch(images, labels)
        seed = check_seed(seed)
        n = images.shape[0]
        idx = np.arange(n) if indices is None else [int(i) for i in indices]
        if len(idx) != n:
            raise InputError(f"indices must have one entry per sample ({n}), got {len(idx)}")
        rows, taps, _ = self.prepare(images, labels, seed, idx)
        out_i, out_l = np.empty_like(images), np.empty_like(labels)
        augment_batch_kernel(images, labels, rows, taps, out_i, out_l)
        return out_i, out_l


def _inverse_matrix(H: int, W: int, s: float, ang: float, tx: float, ty: float, fh: bool, fv: bool,
                    f: int) -> np.ndarray:
    """The quantised 2×3 destination→source matrix (pixel centres at +0.5) of the forward warp
    ``shift ∘ (rotation+scale about the centre) ∘ flips`` (OpenCV's ``getRotationMatrix2D`` angle sign)."""
    cx, cy = (W - 1) / 2.0, (H - 1) / 2.0
    a = math.radians(ang)
    # inverse of the rotation/scale part [[al, be], [-be, al]] is [[al, -be], [be, al]] / s²
    al, be = math.cos(a) / s, math.sin(a) / s
    # source (centre-integer coords) of output q: F⁻¹(R⁻¹(q − t − c) + c); flips are their own inverse
    # with output q = p − 0.5 and source + 0.5 at the end (half-pixel convention)
    m = [[al, -be], [be, al]]
    ox = -(tx + cx + 0.5)
    oy = -(ty + cy + 0.5)
    r0 = m[0][0] * ox + m[0][1] * oy + cx
    r1 = m[1][0] * ox + m[1][1] * oy + cy
    rows = [[m[0][0], m[0][1], r0], [m[1][0], m[1][1], r1]]
    if fh:  # x_src = W − 1 − x
        rows[0] = [-v for v in rows[0]]
        rows[0][2] += W - 1
    if fv:
        rows[1] = [-v for v in rows[1]]
        rows[1][2] += H - 1
    rows[0][2] += 0.5
    rows[1][2] += 0.5
    qa, qt = float(1 << (f - 1)), float(1 << f)
    return np.array([[round(rows[i][0] * qa) / qa, round(rows[i][1] * qa) / qa, round(rows[i][2] * qt) / qt]
                     for i in range(2)])


def traditional_augment(image, labels, seed: int = 0, index: int = 0, **params) -> tuple[np.ndarray, np.ndarray]:
    """Functional :class:`TraditionalAugment`; ``params`` go to the constructor."""
    return TraditionalAugment(**params)(image, labels, seed=seed, index=index)
