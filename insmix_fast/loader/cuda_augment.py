"""The traditional augmentation on an NVIDIA GPU: the CPU kernels of :mod:`insmix_fast.augment`
compiled for the device (``kernels.cuda_device.device_function``), so both give the same bits.

Importing this module imports ``numba.cuda``: do it only when the CUDA path runs (or under
the simulator, ``NUMBA_ENABLE_CUDASIM=1``). Every launch takes the stream it must run on
(a torch stream wrapped by :func:`numba_stream`); nothing here synchronises.

Kernels, one thread per pixel (grid-stride):

* :func:`launch_augment` — warp + colour (:func:`~insmix_fast.augment.warp_geometry`, ...),
  the separable blur of the samples that draw one, the area filter (ids counted with
  atomics in a per-sample table, then the small ones cleared). Atomic *counts* do not
  depend on the order of the additions, so the result is deterministic.
* :func:`launch_canvas` — the reflect-padded canvas the DALI operator graph warps.
"""

from __future__ import annotations

import numpy as np
from numba import cuda

from ..augment import (P_A00, P_A01, P_A10, P_A11, P_BLUR_R, P_C, P_FRAC, P_MAXID, P_MIN_AREA, P_R, P_T0, P_T1,
                       P_TC)
from ..augment import blur_round as _cpu_blur_round
from ..augment import canvas_source as _cpu_canvas_source
from ..augment import coded_label as _cpu_coded_label
from ..augment import colour_channel as _cpu_colour_channel
from ..augment import colour_constants as _cpu_colour_constants
from ..augment import reflect101 as _cpu_reflect101
from ..augment import warp_geometry as _cpu_warp_geometry
from ..kernels.cuda_device import SIMULATOR, device_function, unravel_pixel

__all__ = ["launch_augment", "launch_area_filter", "launch_canvas", "numba_stream", "as_device", "THREADS"]

THREADS = 32 if SIMULATOR else 256

warp_geometry = device_function(_cpu_warp_geometry)
coded_label = device_function(_cpu_coded_label)
colour_channel = device_function(_cpu_colour_channel)
colour_constants = device_function(_cpu_colour_constants)
blur_round = device_function(_cpu_blur_round)
reflect101 = device_function(_cpu_reflect101)
canvas_source = device_function(_cpu_canvas_source)


@cuda.jit
def _warp_kernel(images, labels, params, out_images, out_labels, counts, clean):
    n, h, w = out_labels.shape
    start, stride = cuda.grid(1), cuda.gridsize(1)
    for p in range(start, n * h * w, stride):
        b, y, x = unravel_pixel(p, h, w)
        prm = params[b]
        f = prm[P_FRAC]
        iy, ix, cy, cx, ya, yb, xa, xb, w00, w01, w10, w11 = warp_geometry(
            y, x, prm[P_A00], prm[P_A01], prm[P_A10], prm[P_A11], prm[P_T0], prm[P_T1], f, h, w)
        v = coded_label(np.int64(labels[b, iy, ix]), cy, cx, prm[P_MAXID], prm[P_R])
        out_labels[b, y, x] = v
        if clean and v > 0:
            cuda.atomic.add(counts, (b, v), 1)
        img = images[b]
        v0 = w00 * img[ya, xa, 0] + w01 * img[ya, xb, 0] + w10 * img[yb, xa, 0] + w11 * img[yb, xb, 0]
        v1 = w00 * img[ya, xa, 1] + w01 * img[ya, xb, 1] + w10 * img[yb, xa, 1] + w11 * img[yb, xb, 1]
        v2 = w00 * img[ya, xa, 2] + w01 * img[ya, xb, 2] + w10 * img[yb, xa, 2] + w11 * img[yb, xb, 2]
        base, shift = colour_constants(prm[P_TC], f)
        out_images[b, y, x, 0] = colour_channel(v0, v1, v2, prm[P_C], prm[P_C + 1], prm[P_C + 2], base, shift)
        out_images[b, y, x, 1] = colour_channel(v0, v1, v2, prm[P_C + 3], prm[P_C + 4], prm[P_C + 5], base, shift)
        out_images[b, y, x, 2] = colour_channel(v0, v1, v2, prm[P_C + 6], prm[P_C + 7], prm[P_C + 8], base, shift)


@cuda.jit(device=True)
def _blur_sums(src, b, y, x, r, taps, horizontal):
    """The three channel sums of one blur pass at ``(y, x)``: along the row or along the column."""
    h, w = src.shape[1], src.shape[2]
    a0 = np.int64(0)
    a1 = np.int64(0)
    a2 = np.int64(0)
    for t in range(2 * r + 1):
        yy = y
        xx = x
        if horizontal:
            xx = reflect101(x + t - r, w)
        else:
            yy = reflect101(y + t - r, h)
        k = taps[b, t]
        a0 += k * src[b, yy, xx, 0]
        a1 += k * src[b, yy, xx, 1]
        a2 += k * src[b, yy, xx, 2]
    return a0, a1, a2


@cuda.jit
def _blur_kernel(src, params, taps, dst, horizontal):
    """One pass of the separable blur over the samples that draw one: horizontal into the int32
    scratch, vertical back to uint8 (rounded half up)."""
    n, h, w = dst.shape[0], dst.shape[1], dst.shape[2]
    start, stride = cuda.grid(1), cuda.gridsize(1)
    for p in range(start, n * h * w, stride):
        b, y, x = unravel_pixel(p, h, w)
        r = params[b, P_BLUR_R]
        if r == 0:
            continue
        a0, a1, a2 = _blur_sums(src, b, y, x, r, taps, horizontal)
        if horizontal:
            dst[b, y, x, 0] = a0
            dst[b, y, x, 1] = a1
            dst[b, y, x, 2] = a2
        else:
            dst[b, y, x, 0] = blur_round(a0)
            dst[b, y, x, 1] = blur_round(a1)
            dst[b, y, x, 2] = blur_round(a2)


@cuda.jit
def _count_kernel(labels, counts):
    n, h, w = labels.shape
    start, stride = cuda.grid(1), cuda.gridsize(1)
    for p in range(start, n * h * w, stride):
        b, y, x = unravel_pixel(p, h, w)
        v = labels[b, y, x]
        if v > 0:
            cuda.atomic.add(counts, (b, v), 1)


@cuda.jit
def _area_kernel(labels, params, counts):
    n, h, w = labels.shape
    start, stride = cuda.grid(1), cuda.gridsize(1)
    for p in range(start, n * h * w, stride):
        b, y, x = unravel_pixel(p, h, w)
        v = labels[b, y, x]
        if v > 0 and counts[b, v] < params[b, P_MIN_AREA]:
            labels[b, y, x] = 0


@cuda.jit
def _canvas_kernel(images, labels, params, margin, out_images, out_labels):
    n, hh, ww = out_labels.shape
    h, w = labels.shape[1], labels.shape[2]
    start, stride = cuda.grid(1), cuda.gridsize(1)
    for p in range(start, n * hh * ww, stride):
        b, yy, xx = unravel_pixel(p, hh, ww)
        sy, sx, cy, cx = canvas_source(yy, xx, margin, h, w)
        out_labels[b, yy, xx] = coded_label(np.int64(labels[b, sy, sx]), cy, cx, params[b, P_MAXID], params[b, P_R])
        out_images[b, yy, xx, 0] = images[b, sy, sx, 0]
        out_images[b, yy, xx, 1] = images[b, sy, sx, 1]
        out_images[b, yy, xx, 2] = images[b, sy, sx, 2]


def _blocks(total: int) -> int:
    return max(1, min((total + THREADS - 1) // THREADS, 4 if SIMULATOR else 65535))


def numba_stream(stream):
    """A numba stream for ``stream``: ``None`` (the default stream, 0), a numba stream, a torch
    ``cuda.Stream``, a CuPy stream or an int handle."""
    if stream is None:
        return 0
    if isinstance(stream, int):
        return cuda.external_stream(stream)
    for attr in ("cuda_stream", "ptr"):  # torch / CuPy
        if hasattr(stream, attr):
            return cuda.external_stream(int(getattr(stream, attr)))
    return stream


def as_device(x, stream=None):
    """A numba device view of ``x`` without a copy or a sync (torch CUDA tensors, CuPy arrays, numba
    device arrays); numpy arrays are copied in (the simulator's tests)."""
    if isinstance(x, np.ndarray):
        return cuda.to_device(x, stream=stream) if stream is not None else cuda.to_device(x)
    if cuda.is_cuda_array(x) and not hasattr(x, "copy_to_host"):
        return cuda.as_cuda_array(x, sync=False)
    return x


def launch_augment(images, labels, params, taps, out_images, out_labels, counts, tmp, *, blur: bool, clean: bool,
                   stream):
    """Augment a batch on the device. ``images`` N×H×W×3 uint8, ``labels`` N×H×W int16/int32,
    ``params`` N×N_PARAMS int64, ``taps`` N×T int64 (:meth:`TraditionalAugment.prepare`);
    outputs ``out_images`` (uint8) and ``out_labels`` (int32). Scratch: ``counts`` N×L int32 zeros
    (``L`` > every coded id, i.e. ``max(maxid)·K + 1``), ``tmp`` N×H×W×3 int32 (used when ``blur``).
    All are device arrays (see :func:`as_device`); ``stream`` a numba stream."""
    total = out_labels.shape[0] * out_labels.shape[1] * out_labels.shape[2]
    grid = _blocks(total)
    _warp_kernel[grid, THREADS, stream](images, labels, params, out_images, out_labels, counts, clean)
    if blur:
        _blur_kernel[grid, THREADS, stream](out_images, params, taps, tmp, True)
        _blur_kernel[grid, THREADS, stream](tmp, params, taps, out_images, False)
    if clean:
        _area_kernel[grid, THREADS, stream](out_labels, params, counts)


def launch_area_filter(labels, params, counts, *, stream):
    """The area filter alone (labels warped elsewhere, e.g. by DALI): count, then clear small ids."""
    grid = _blocks(labels.shape[0] * labels.shape[1] * labels.shape[2])
    _count_kernel[grid, THREADS, stream](labels, counts)
    _area_kernel[grid, THREADS, stream](labels, params, counts)


def launch_canvas(images, labels, params, margin: int, out_images, out_labels, *, stream):
    """Reflect-pad a batch by ``margin`` (labels of mirrored copies coded) into ``out_*``."""
    grid = _blocks(out_labels.shape[0] * out_labels.shape[1] * out_labels.shape[2])
    _canvas_kernel[grid, THREADS, stream](images, labels, params, np.int64(margin), out_images, out_labels)
