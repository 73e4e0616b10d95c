"""A fast 64-bit fingerprint of a buffer of 64-bit words (label maps of plans).

``hash_words(words, mult)`` = Σ over blocks b of ``K^(B−1−b) · Σ_i f(words[b·n + i]) · mult[i]``
(mod 2**64), ``n = len(mult)``, ``mult`` random odd 64-bit multipliers and
``f(w) = w ^ (w >> 32)`` (a bijection that brings the high half into the low bits): a
random linear hash of the words, so two buffers that differ anywhere collide with
probability at most 2**-32 for any given pair, ≈ 2**-64 for typical differences (not a
cryptographic hash: it detects mix-ups, not forgeries). The inner loop is a multiply-add
that LLVM vectorises: a 256×256 int32 map takes ~8 µs.
"""

from __future__ import annotations

import numpy as np

from .jit import njit

_K = np.uint64(0x9E3779B97F4A7C15)
_S32 = np.uint64(32)


@njit(cache=True, nogil=True)
def hash_words(words, mult):
    """Hash of ``words`` (uint64, 1-D) with the multipliers ``mult`` (odd uint64, 1-D)."""
    n = mult.shape[0]
    total = words.shape[0]
    h = np.uint64(total)
    for start in range(0, total, n):
        stop = min(start + n, total)
        block = words[start:stop]  # slices: the loop below then vectorises (2× faster)
        m = mult[:stop - start]
        s = np.uint64(0)
        for i in range(stop - start):
            w = block[i]
            s += (w ^ (w >> _S32)) * m[i]
        h = h * _K + s
    return h


__all__ = ["hash_words"]
