"""The ``njit`` decorator of the kernels: Numba's, minus the wasted specialisations.

Numba compiles an ``@njit`` function once per distinct argument-type tuple it is
called with from other jitted code, and it types a constant argument as a
*literal* (``Literal[int](0)``): ``tile_stats(labels, p, m, 0)`` and
``tile_stats(labels, p, m, extra)`` become two compilations of the same body, and
type inference even compiles throw-away specialisations for the literal a
variable holds before its type is widened (``big = 1`` … ``new_scratch(big)``
compiled for ``Literal[int](1)`` *and* ``int64``). With an empty cache each such
copy costs 0.1–1 s, and every caller links (and LLVM re-optimises) them again.

:func:`njit` here is ``numba.njit`` whose dispatchers see constants by their plain
type (``int64``, ``float64``, ``bool``), so each kernel is compiled once per real
argument-type tuple. The kernels never need a literal argument (no ``literally``,
no literal-indexed tuples), and LLVM still propagates constants after inlining, so
the generated code is the same. Callers from Python are unaffected (Python values
are never typed as literals).

Use it like ``numba.njit`` (``@njit(cache=True, nogil=True)``, ``inline=...``,
``parallel=...``); ``NUMBA_DISABLE_JIT=1`` returns the plain Python function. It also makes no
C-callable (cfunc) wrapper: kernels are never passed as first-class function objects.

Compile-time rules the kernels follow (issue 15; measured with an empty cache, ``bench/RESULTS.md``):

* allocate with :mod:`.alloc` (``empty``/``zeros``), not ``np.empty``/``np.zeros``/``np.full``:
  Numba compiles those overloads once per (shape type, dtype), 1–3 small functions each
  (≈ 50 ms apiece; 44 of them in the first ``insmix`` after a bank);
* no array slice assignment (``a[i] = b[j]`` with array sides): each one compiles Numba's
  shape-mismatch error message, string formatting included (~1–3 s once per process);
* an optional feature is an argument that is None when unused, tested with ``x is not None``
  (``ignore``, ``id_class``): Numba prunes the dead branch before typing, so the plain call
  never types, lowers or optimises the feature's code (ignore tests, the class-aware template
  choice: ~2 s). A runtime flag (``use_ignore``) alone would compile both branches;
* ``inline="always"`` for a helper called from one place (``plan_tile``, ``build_table``,
  the placement, descriptor and background helpers): the helper then costs no library of its
  own (wrapper, LLVM finalisation, machine code and cache entry; ≈ 0.05–0.15 s each). Helpers
  called from many places are compiled once and left to LLVM's inliner: Numba's IR inlining
  copies (deep-copies: slow for big functions) and types them again at every call site;
* a call with 30 or more arguments cannot be IR-inlined (CPython passes them as ``*args``);
* a conditional expression choosing between None and an array inside a ``prange`` loop trips
  Numba's parfor array analysis: use a small function (``pipeline.row_or_none``).
"""

from __future__ import annotations

from numba.core import config, types
from numba.core.registry import CPUDispatcher

__all__ = ["njit", "KernelDispatcher", "add_compile_hook"]

_compile_hooks: list = []


def add_compile_hook(hook) -> None:
    """Call ``hook(kernel_name)`` before a kernel is compiled (or loaded from the cache) for a
    call from Python, i.e. once per kernel and argument types per process. Never on calls that
    find a compiled version, so it costs nothing on the warm path (:mod:`.warmup` uses it)."""
    _compile_hooks.append(hook)


class KernelDispatcher(CPUDispatcher):
    """A CPU dispatcher that compiles for the non-literal types of its arguments."""

    def _compile_for_args(self, *args, **kws):
        for hook in _compile_hooks:
            hook(self.py_func.__name__)
        return super()._compile_for_args(*args, **kws)

    def get_call_template(self, args, kws):
        args = tuple(_plain(a) for a in args)
        kws = {k: _plain(v) for k, v in kws.items()}
        return super().get_call_template(args, kws)


def _plain(t):
    """The type a kernel is compiled for: literals by their plain type, signed integer
    scalars narrower than 64 bits as ``int64`` (Numba computes in int64 anyway)."""
    t = types.unliteral(t)
    if isinstance(t, types.Integer) and t.signed and t.bitwidth < 64:
        return types.int64
    return t


def njit(func=None, *, cache: bool = False, locals=None, boundscheck=None, **options):
    """``numba.njit`` building a :class:`KernelDispatcher` (see the module docstring)."""
    options["nopython"] = True
    options["boundscheck"] = boundscheck
    # No C-callable wrapper: kernels are never passed as first-class function objects.
    options.setdefault("no_cfunc_wrapper", True)

    def wrap(f):
        if config.DISABLE_JIT:
            return f
        disp = KernelDispatcher(py_func=f, locals=dict(locals or {}), targetoptions=options)
        if cache:
            disp.enable_caching()
        return disp

    return wrap if func is None else wrap(func)
