"""CUDA device functions shared by the GPU kernels (``numba.cuda``).

Importing this module imports ``numba.cuda``: do it only after
:func:`insmix_fast.gpu.cuda_available` said yes (or with ``NUMBA_ENABLE_CUDASIM=1``
set before the first import, for the CUDA simulator).

Code reuse with the CPU kernels: :func:`device_function` compiles the *same
Python source* as an ``@njit`` CPU kernel for the GPU. It takes the njit
dispatcher's ``py_func``, rebinds the njit functions it calls to their own
device versions (recursively), and hands the result to
``cuda.jit(device=True)``. The CPU kernels are untouched (they keep their
hand-inlined loops and their compile caches); the GPU gets the same integer
arithmetic and the same Philox draws, hence the same results. Only CPU helpers
that allocate (``np.empty`` …) cannot be retargeted; their GPU twins are written
below with caller-provided scratch.
"""

from __future__ import annotations

import os
import types

import numpy as np
from numba import cuda

from .descriptor import DESC_HALF, DESC_SIZE
from . import classes as _classes
from . import instances as _inst
from . import placement as _place
from . import records as _records
from . import rng as _rng
from . import shuffle as _shuffle
from . import ssd as _ssd

#: True under the CUDA simulator (``NUMBA_ENABLE_CUDASIM=1``): launch small grids.
SIMULATOR = os.environ.get("NUMBA_ENABLE_CUDASIM", "0") not in ("", "0")

#: Threads per block of the block-per-original kernels (shared-memory size, a compile-time constant).
BLOCK = 32 if SIMULATOR else 256

#: uint32 words of a descriptor on the device: row r of the 32×32 window is word r
#: (the CPU's 16 uint64 words viewed as 32 little-endian uint32 halves).
DESC_WORDS32 = 32

_retargeted: dict[int, object] = {}


def _numpy_for_device():
    """``numpy`` as the retargeted code sees it: the same module except that the
    scalar ufuncs numba cannot call in device code map to their ``math`` twins
    (same IEEE float64 results: ``floor`` is exact, ``sqrt`` correctly rounded)."""
    import math

    shim = types.ModuleType("numpy")
    shim.__dict__.update({k: v for k, v in np.__dict__.items() if not k.startswith("__")})
    shim.floor = math.floor
    shim.sqrt = math.sqrt
    return shim


_NP_DEVICE = _numpy_for_device()


def _is_njit(obj) -> bool:
    return hasattr(obj, "py_func") and hasattr(obj, "targetoptions") and callable(obj)


def device_function(dispatcher):
    """The CUDA device version of an ``@njit`` function (same source, same arithmetic)."""
    key = id(dispatcher)
    if key in _retargeted:
        return _retargeted[key]
    f = dispatcher.py_func if _is_njit(dispatcher) else dispatcher
    g = dict(f.__globals__)
    if g.get("np") is np:
        g["np"] = _NP_DEVICE
    for name in f.__code__.co_names:
        obj = g.get(name)
        if obj is not None and _is_njit(obj):
            g[name] = device_function(obj)
    clone = types.FunctionType(f.__code__, g, f.__name__, f.__defaults__, f.__closure__)
    clone.__qualname__ = f.__qualname__
    clone.__doc__ = f.__doc__
    dev = cuda.jit(device=True)(clone)
    _retargeted[key] = dev
    return dev


# ----------------------------------------------------------------- the CPU kernels, compiled for the device
philox4x32 = device_function(_rng.philox4x32)
uniform_int = device_function(_rng.uniform_int)
uniform01 = device_function(_rng.uniform01)
counter2 = device_function(_rng.counter2)
scale_ok = device_function(_ssd.scale_ok)
lower_bound = device_function(_ssd.lower_bound)
scale_range = device_function(_ssd.scale_range)
scale_range_in = device_function(_ssd.scale_range_in)
class_segment = device_function(_classes.class_segment)
shape_ok = device_function(_ssd.shape_ok)
rounded_mean = device_function(_inst.rounded_mean)
count_components = device_function(_inst.count_components)
draw_annulus_offset = device_function(_place.draw_annulus_offset)
draw_free_position = device_function(_place.draw_free_position)
placement_ok = device_function(_place.placement_ok)
paste_into_work = device_function(_place.paste_into_work)
place_pastes = device_function(_place.place_pastes)
shape_gap = device_function(_records.shape_gap)
collect_background = device_function(_shuffle.collect_background)
plan_moves = device_function(_shuffle.plan_moves)


# ----------------------------------------------------------------- device-only helpers
@cuda.jit(device=True)
def unravel_pixel(p, hh, ww):
    """(b, y, x) of flat index ``p`` in a C-ordered nb×hh×ww array (grid-stride loops)."""
    b = p // (hh * ww)
    q = p - b * hh * ww
    y = q // ww
    return b, y, q - y * ww


@cuda.jit(device=True)
def original_at(ids_ext, area, anchor, fits, b, c):
    """The scalars of original ``(b, c)`` (tile, rank) the SSD tests read: its id, area,
    absolute anchor row and column, and whether its mask fits the descriptor window.
    (Array views such as ``labels[b]``/``desc[b, c]`` cannot be returned from device code.)"""
    return ids_ext[b, c], area[b, c], anchor[b, c, 0], anchor[b, c, 1], fits[b, c]


# ----------------------------------------------------------------- device twins of allocating CPU helpers
@cuda.jit(device=True)
def popc32(x):
    """Population count of a uint32 (SWAR, identical on the simulator and the device)."""
    x = x - ((x >> np.uint32(1)) & np.uint32(0x55555555))
    x = (x & np.uint32(0x33333333)) + ((x >> np.uint32(2)) & np.uint32(0x33333333))
    x = (x + (x >> np.uint32(4))) & np.uint32(0x0F0F0F0F)
    return np.int64(((np.uint64(x) * np.uint64(0x01010101)) & np.uint64(0xFFFFFFFF)) >> np.uint64(24))


@cuda.jit(device=True)
def aligned_intersection(labels, v, o_desc, o_fits, ao_r, ao_c, b_desc, b_fits, b_masks, b_off, b_h, b_w,
                         at_r, at_c):
    """|Mo ∧ Mt| with anchors aligned, exactly as ``kernels.ssd.aligned_intersection``.

    The original is read from the label map itself (pixels equal to ``v``; absolute
    anchor ``(ao_r, ao_c)``), so no crop of it is ever materialised: the descriptor
    popcount when either mask fits its window, else a direct count over the
    template crop.
    """
    s = np.int64(0)
    if o_fits or b_fits:
        for r in range(DESC_WORDS32):
            s += popc32(o_desc[r] & b_desc[r])
        return s
    hh = labels.shape[0]
    ww = labels.shape[1]
    for y in range(b_h):
        yy = ao_r + y - at_r
        if yy < 0 or yy >= hh:
            continue
        row = b_off + y * b_w
        for x in range(b_w):
            xx = ao_c + x - at_c
            if 0 <= xx < ww and b_masks[row + x] and labels[yy, xx] == v:
                s += 1
    return s


@cuda.jit(device=True)
def admissible_t(labels, v, a_o, o_desc, o_fits, ao_r, ao_c, b_area, b_anchor, b_hw, b_off, b_masks, b_desc,
                 b_fits, t, rho):
    """Shape test of template ``t`` (its scale test is implied by the range it comes from)."""
    a_t = b_area[t]
    inter = aligned_intersection(labels, v, o_desc, o_fits, ao_r, ao_c, b_desc[t], b_fits[t], b_masks, b_off[t],
                                 np.int64(b_hw[t, 0]), np.int64(b_hw[t, 1]), np.int64(b_anchor[t, 0]),
                                 np.int64(b_anchor[t, 1]))
    return shape_ok(a_o + a_t - 2 * inter, a_o, a_t, rho)


@cuda.jit(device=True)
def shape_xor(labels, v, a_o, o_desc, o_fits, ao_r, ao_c, b_area, b_anchor, b_hw, b_off, b_masks, b_desc, b_fits,
              t):
    inter = aligned_intersection(labels, v, o_desc, o_fits, ao_r, ao_c, b_desc[t], b_fits[t], b_masks, b_off[t],
                                 np.int64(b_hw[t, 0]), np.int64(b_hw[t, 1]), np.int64(b_anchor[t, 0]),
                                 np.int64(b_anchor[t, 1]))
    return a_o + b_area[t] - 2 * inter


__all__ = [
    "SIMULATOR", "BLOCK", "DESC_WORDS32", "DESC_HALF", "DESC_SIZE", "device_function",
    "philox4x32", "uniform_int", "uniform01", "counter2", "scale_ok", "shape_ok", "rounded_mean",
    "count_components", "draw_annulus_offset", "draw_free_position", "placement_ok", "paste_into_work",
    "place_pastes", "shape_gap", "collect_background", "plan_moves", "unravel_pixel", "original_at", "lower_bound",
    "scale_range", "scale_range_in", "class_segment", "popc32", "aligned_intersection",
    "admissible_t", "shape_xor",
]
