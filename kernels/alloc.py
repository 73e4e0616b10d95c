"""Array allocation inside the kernels without a compilation per call signature.

Numba implements ``np.empty`` / ``np.zeros`` / ``np.full`` as overloads: every distinct
(shape type, dtype) a kernel allocates with compiles a small function of its own
(``np.zeros`` three: its body, ``np.empty`` and the zero fill), each through Numba's
whole pipeline and LLVM (≈ 50 ms apiece with an empty cache; the first ``insmix`` after
building a bank compiled 44 of them, ≈ 2 s). :func:`empty` and :func:`zeros` here are
intrinsics: they emit the same allocation (Numba's own ``_empty_nd_impl``, plus a
``memset`` for :func:`zeros`, exactly what ``np.zeros`` does) directly into the calling
kernel, so an allocation costs no compilation of its own. Results and speed are those of
``np.empty`` / ``np.zeros``.

``shape`` is an integer or a tuple of integers, ``dtype`` a NumPy scalar type (``np.int32``)
or an array's ``dtype``; the result is a C-contiguous array. With ``NUMBA_DISABLE_JIT=1``
(or a Numba whose internals differ) they are ``np.empty`` / ``np.zeros`` themselves.
"""

from __future__ import annotations

import numpy as np
from numba.core import config

__all__ = ["empty", "zeros"]


def _intrinsics():
    from numba.core import cgutils, types
    from numba.core.extending import intrinsic
    from numba.core.typing.npydecl import parse_dtype, parse_shape
    from numba.np.arrayobj import _empty_nd_impl, _parse_shape

    def make(zero: bool):
        def alloc(typingctx, shape, dtype):
            nb_dtype = parse_dtype(dtype)
            ndim = parse_shape(shape)
            if nb_dtype is None or ndim is None:
                return None
            retty = types.Array(nb_dtype, ndim, "C")

            def codegen(context, builder, sig, args):
                shapes = _parse_shape(context, builder, sig.args[0], args[0])
                ary = _empty_nd_impl(context, builder, retty, shapes)
                if zero:
                    cgutils.memset(builder, ary.data, builder.mul(ary.itemsize, ary.nitems), 0)
                return ary._getvalue()

            return retty(shape, dtype), codegen

        alloc.__name__ = "zeros" if zero else "empty"
        return intrinsic(alloc)

    return make(False), make(True)


if config.DISABLE_JIT:
    empty, zeros = np.empty, np.zeros
else:
    try:
        empty, zeros = _intrinsics()
    except ImportError:  # a Numba without these internals: the overloads (slower to compile only)
        empty, zeros = np.empty, np.zeros
