"""CPU thread pools: Numba's parallel kernels that neither change PyTorch's thread count nor
make ``fork`` unsafe.

Numba's parallel kernels (``insmix_batch``'s tiles in parallel) run on a thread pool that
Numba starts once per process, on the first parallel call, with a *threading layer* chosen
then: TBB, OpenMP or Numba's own ``workqueue``.

* **fork** — GNU OpenMP (the layer Numba picks on Linux when TBB is not installed) is not
  fork-safe: once its pool runs, a forked child that calls a parallel kernel is killed
  ("Terminating: fork() called from a process already using GNU OpenMP"). A training script
  that ran InsMix once and then started ``DataLoader`` workers (forked on Linux) lost them.
  Before Numba's pool starts, this module therefore selects Numba's ``"forksafe"`` layer
  choice (TBB if it is usable, else ``workqueue``) unless the user chose a layer
  (``NUMBA_THREADING_LAYER`` or ``numba.config.THREADING_LAYER``). It does so when
  ``insmix_fast`` is imported and again just before the pool starts (both only while the pool
  has not started). The choice does not change any result — each tile is computed by one
  thread — and was not slower than OpenMP on the 2-core development machine
  (``bench/bench_threading_layer.py``, bench/RESULTS.md).
* **threads** — ``workqueue`` is not thread-safe: two Python threads that launch parallel
  kernels at the same time abort the process. :func:`numba_parallel` (every parallel kernel
  call of the package runs inside it) serialises those launches when the layer is not
  thread-safe; with TBB or OpenMP it takes no lock.
* **torch's thread count** — with the OpenMP layer the pool start calls
  ``omp_set_num_threads(NUMBA_NUM_THREADS)`` in the calling thread; when PyTorch (built with
  OpenMP) was imported first it is the same OpenMP runtime, so torch's intra-op thread count
  silently changed and a torch CPU model computed slightly different floats.
  :func:`start_numba_threads` starts the pool and puts torch's thread count back.
"""

from __future__ import annotations

import contextlib
import os
import sys
import threading

__all__ = ["start_numba_threads", "numba_parallel", "use_fork_safe_layer", "threading_layer", "fork_safe",
           "FORK_SAFE_LAYERS", "THREAD_SAFE_LAYERS"]

#: Numba threading layers after whose start a forked child may still run parallel kernels.
FORK_SAFE_LAYERS = ("tbb", "workqueue")
#: Numba threading layers that take parallel launches from several threads at once.
THREAD_SAFE_LAYERS = ("tbb", "omp")

_started = False
_start_lock = threading.Lock()
_launch_lock = threading.Lock()  # serialises parallel launches on a layer that is not thread-safe
_serialise = False


def _pool_started() -> bool:
    try:
        from numba.np.ufunc import parallel
    except ImportError:  # pragma: no cover - a Numba without the parallel backend
        return False
    return bool(getattr(parallel, "_is_initialized", False))


def use_fork_safe_layer() -> bool:
    """Select Numba's ``"forksafe"`` threading layer (TBB, else ``workqueue``) if Numba's pool
    has not started and the user has not chosen a layer. Returns True when it selected it."""
    import numba

    if _pool_started() or os.environ.get("NUMBA_THREADING_LAYER"):
        return False
    if numba.config.THREADING_LAYER not in ("default", "forksafe"):
        return False  # set in code by the user
    numba.config.THREADING_LAYER = "forksafe"
    return True


def threading_layer() -> str | None:
    """The layer of Numba's running pool (``"tbb"``, ``"omp"``, ``"workqueue"``), or None
    before it started."""
    if not _pool_started():
        return None
    import numba

    return numba.threading_layer()


def fork_safe() -> bool:
    """True unless Numba's pool runs on a layer that kills forked children (GNU OpenMP)."""
    layer = threading_layer()
    return layer is None or layer in FORK_SAFE_LAYERS


def start_numba_threads() -> None:
    """Start Numba's parallel thread pool (once per process) on a fork-safe layer, keeping
    torch's thread count.

    Safe to call from any thread and any number of times. When torch is not imported yet
    there is nothing to keep: torch loaded later uses its own OpenMP runtime's settings.
    """
    global _started, _serialise
    if _started:
        return
    with _start_lock:
        if _started:
            return
        import numba

        use_fork_safe_layer()
        torch = sys.modules.get("torch")
        before = torch.get_num_threads() if torch is not None else None
        numba.get_num_threads()  # launches the pool (the OpenMP layer sets this thread's OpenMP count)
        if torch is not None and torch.get_num_threads() != before:
            torch.set_num_threads(before)
        _serialise = threading_layer() not in THREAD_SAFE_LAYERS
        _started = True


@contextlib.contextmanager
def numba_parallel():
    """Context of one parallel-kernel launch: starts the pool (:func:`start_numba_threads`) and,
    on a layer that is not thread-safe (``workqueue``), holds a process-wide lock so that two
    threads never launch at once (Numba would abort the process)."""
    start_numba_threads()
    if not _serialise:
        yield
        return
    with _launch_lock:
        yield


use_fork_safe_layer()  # at import: before anything (ours or the user's) starts Numba's pool
