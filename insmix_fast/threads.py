"""CPU thread pools: start Numba's without changing the caller's PyTorch/OpenMP thread count.

Numba's parallel kernels (``insmix_batch``'s tiles in parallel) run on a thread pool that
Numba starts once per process, on the first parallel call. With Numba's OpenMP threading
layer (the default where TBB is absent) that start calls ``omp_set_num_threads(NUMBA_NUM_THREADS)``
in the calling thread — and when PyTorch (built with OpenMP) was imported first, it is the
same OpenMP runtime, so torch's intra-op thread count silently changes from what the user set
(``torch.set_num_threads``) to Numba's. Whether torch then sees the change depends on what ran
before (torch re-applies its own count only at its first parallel operation in a thread), and
a torch CPU model computes slightly different floats with another thread count: a training
run's result depended on whether an earlier run in the same process had used InsMix.

:func:`start_numba_threads` starts the pool and puts torch's thread count back. Every
entry point of insmix_fast that runs a parallel Numba kernel, or asks Numba about threads,
calls it first; it costs one flag check after the first call.
"""

from __future__ import annotations

import sys

__all__ = ["start_numba_threads"]

_started = False


def start_numba_threads() -> None:
    """Start Numba's parallel thread pool (once per process) keeping torch's thread count.

    Safe to call from any thread and any number of times. When torch is not imported yet
    there is nothing to keep: torch loaded later uses its own OpenMP runtime's settings.
    """
    global _started
    if _started:
        return
    import numba

    torch = sys.modules.get("torch")
    before = torch.get_num_threads() if torch is not None else None
    numba.get_num_threads()  # launches the pool (the OpenMP layer sets this thread's OpenMP count)
    if torch is not None and torch.get_num_threads() != before:
        torch.set_num_threads(before)
    _started = True
