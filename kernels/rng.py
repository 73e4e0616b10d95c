"""Counter-based random numbers: Philox4x32-10 keyed by (seed, sample, stream, counter).

Every random choice of InsMix is ``draw(seed, sample, stream, counter)``: a pure
function of four integers, so a value does not depend on the order in which
samples are processed, on batch size, worker count or device (SPEC §6).

Layout of one Philox call (Salmon et al., SC'11; the Random123/cuRAND algorithm):

* key   = (seed & 0xffffffff, seed >> 32)
* ctr   = (counter & 0xffffffff, counter >> 32, sample & 0xffffffff, stream)

Derived draws (all integer arithmetic, identical on CPU and GPU):

* ``random_u64``    = word0 | word1 << 32
* ``uniform_int(n)`` = random_u64 % n    (bias ≤ n / 2**64, i.e. < 1e-14 for any n we use)
* ``uniform01``     = (random_u64 >> 11) · 2**-53  in [0, 1), float64

The ``*_impl`` functions are plain Python over fixed-width integers; ``njit``
versions are exported for the CPU kernels and the same source can be compiled
with ``numba.cuda.jit(device=True)`` for the GPU kernels.
"""

from __future__ import annotations

import numpy as np
from .jit import njit

__all__ = [
    "philox4x32",
    "random_u64",
    "uniform_int",
    "uniform01",
    "uniform_int_pair",
    "counter2",
    "STREAM_SELECT",
    "STREAM_TEMPLATE",
    "STREAM_PLACE",
    "STREAM_BACKGROUND",
    "STREAM_TILE",
    "STREAM_CLASS",
]

# Streams: one per kind of decision, so adding draws to one never shifts another.
STREAM_SELECT = 1  # does original i receive a paste (Bernoulli p_paste)
STREAM_TEMPLATE = 2  # which template for original i (rejection draws, then exact fallback)
STREAM_PLACE = 3  # placement offsets for original i, try t
STREAM_BACKGROUND = 4  # which background patches, and their permutation
STREAM_TILE = 5  # per-tile draws (diagonal offset of the official mode)
STREAM_CLASS = 6  # template_class="balanced": the class original i draws its template from

_M0 = np.uint64(0xD2511F53)
_M1 = np.uint64(0xCD9E8D57)
_W0 = np.uint64(0x9E3779B9)
_W1 = np.uint64(0xBB67AE85)
_MASK32 = np.uint64(0xFFFFFFFF)
_S32 = np.uint64(32)
_S11 = np.uint64(11)
_INV53 = 1.0 / 9007199254740992.0  # 2**-53


def philox4x32_impl(c0, c1, c2, c3, k0, k1):
    """Philox4x32-10 on 32-bit words held in uint64 values; returns four words."""
    c0 = np.uint64(c0) & _MASK32
    c1 = np.uint64(c1) & _MASK32
    c2 = np.uint64(c2) & _MASK32
    c3 = np.uint64(c3) & _MASK32
    k0 = np.uint64(k0) & _MASK32
    k1 = np.uint64(k1) & _MASK32
    for _ in range(10):
        p0 = _M0 * c0
        p1 = _M1 * c2
        n0 = ((p1 >> _S32) ^ c1 ^ k0) & _MASK32
        n1 = p1 & _MASK32
        n2 = ((p0 >> _S32) ^ c3 ^ k1) & _MASK32
        n3 = p0 & _MASK32
        c0, c1, c2, c3 = n0, n1, n2, n3
        k0 = (k0 + _W0) & _MASK32
        k1 = (k1 + _W1) & _MASK32
    return c0, c1, c2, c3


philox4x32 = njit(cache=True, nogil=True)(philox4x32_impl)


@njit(cache=True, nogil=True)
def random_u64(seed, sample, stream, counter):
    """64 random bits for (seed, sample, stream, counter)."""
    s = np.uint64(seed)
    c = np.uint64(counter)
    r0, r1, _r2, _r3 = philox4x32(c & _MASK32, c >> _S32, np.uint64(sample) & _MASK32, np.uint64(stream),
                                  s & _MASK32, s >> _S32)
    return r0 | (r1 << _S32)


@njit(cache=True, nogil=True)
def uniform_int(seed, sample, stream, counter, n):
    """Integer uniform in [0, n) (n ≥ 1)."""
    return np.int64(random_u64(seed, sample, stream, counter) % np.uint64(n))


@njit(cache=True, nogil=True)
def uniform01(seed, sample, stream, counter):
    """float64 uniform in [0, 1) with 53 random bits."""
    return np.float64(random_u64(seed, sample, stream, counter) >> _S11) * _INV53


@njit(cache=True, nogil=True)
def uniform_int_pair(seed, sample, stream, counter, n):
    """Two independent integers uniform in [0, n) from one Philox call (64 bits each)."""
    s = np.uint64(seed)
    c = np.uint64(counter)
    r0, r1, r2, r3 = philox4x32(c & _MASK32, c >> _S32, np.uint64(sample) & _MASK32, np.uint64(stream),
                                s & _MASK32, s >> _S32)
    nn = np.uint64(n)
    return np.int64((r0 | (r1 << _S32)) % nn), np.int64((r2 | (r3 << _S32)) % nn)


@njit(cache=True, nogil=True)
def counter2(a, b):
    """A 64-bit counter from two 32-bit parts (e.g. instance index, draw index)."""
    return (np.uint64(a) << _S32) | (np.uint64(b) & _MASK32)
