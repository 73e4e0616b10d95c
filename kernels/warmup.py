"""First use with an empty Numba cache: compile the InsMix kernels in a background process.

With an empty cache (a new install, a new ``NUMBA_CACHE_DIR``, an upgrade) the first
``insmix`` compiles its kernels for ~8 s and the first ``insmix_batch`` its parallel
kernel for a few more; afterwards both load from Numba's on-disk cache in milliseconds.

:func:`start_background` (run when :mod:`.pipeline` is imported, i.e. by
``import insmix_fast``) starts one background Python process that compiles them
(:func:`insmix_fast.precompile.background_main`: ``insmix`` and ``insmix_batch`` on a tiny
tile) and writes them to the cache, while this process goes on importing, loading data and
building the instance bank. The first call that needs one of them waits for that process
(when it is still running) and then loads the compiled code instead of compiling it again
(:func:`wait_for`, a compile hook of :mod:`.jit`). It starts only when

* the cache of ``insmix_tile`` is empty (a warm cache costs one ``stat`` at import),
* a CPU is free: at least 2 usable CPUs and a 1-minute load average at least 1 below their
  number (on a busy machine it would only compete with this process: measured on the shared
  2-core machine at load 3.5, the first-use path took 22 s with it, 16 s without),
* Numba's JIT is on, and ``INSMIX_FAST_PRECOMPILE`` is unset (the checks above decide), ``1``
  (start whenever the cache is cold) or anything but ``0`` (``0``: never);

and at most one runs per cache folder: a state file there (created exclusively) names its
process id and the stages it has finished, so DDP ranks or loader workers starting together
share one, and every process waits on the file, not on a handle. Nothing is held in this
process while it runs (no thread, no lock), so forking loader workers is safe. Results never
depend on it: the same code is compiled either way. If it fails or is killed, the first call
compiles as it would have without it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

from .jit import add_compile_hook

__all__ = ["STAGES", "start_background", "wait_for", "state_path", "record_stage"]

#: The background process's stages, in order, and the kernels each one compiles.
STAGES = {
    "insmix": ("insmix_tile",),
    "batch": ("insmix_batch_kernel",),
}
_STAGE_OF = {name: stage for stage, names in STAGES.items() for name in names}
_STATE_NAME = "insmix_fast-precompile.json"
ENV = "INSMIX_FAST_PRECOMPILE"
_PACKAGE = __name__.rsplit(".kernels", 1)[0]  # "insmix_fast"
_MAX_WAIT_S = 300.0  # wait at most this long for the background process, then compile here
_STALE_S = 900.0  # a state file older than this belongs to a process that died
_POLL_S = 0.05

_kernel = None  # the dispatcher whose cache decides "cold" (set by start_background)
_spawned: dict = {}


def state_path(kernel=None) -> Path | None:
    """The state file beside Numba's cache of ``kernel`` (default: the one
    :func:`start_background` was given); None when that kernel is not cached on disk."""
    kernel = kernel if kernel is not None else _kernel
    try:
        return Path(kernel._cache._cache_path) / _STATE_NAME
    except AttributeError:  # caching off, JIT disabled, or a Numba whose cache object differs
        return None


def _cold(kernel) -> bool:
    try:
        return not os.path.exists(kernel._cache._cache_file._index_path)
    except AttributeError:
        return False


def _read(path: Path) -> dict | None:
    try:
        state = json.loads(path.read_text("utf-8"))
    except (OSError, ValueError):
        return None
    return state if isinstance(state, dict) else None


def _write(path: Path, state: dict) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(state), "utf-8")
    os.replace(tmp, path)


def _alive(pid) -> bool:
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:  # Linux: a zombie has exited
            return f.read().rsplit(b")", 1)[1].split()[0] != b"Z"
    except FileNotFoundError:
        return False
    except (OSError, IndexError):
        pass
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True
    return True


def _fresh(state: dict) -> bool:
    started = state.get("started", 0)
    return isinstance(started, (int, float)) and time.time() - started < _STALE_S


def _abandoned(path: Path) -> bool:
    """An empty or unreadable state file not written for a while: its starter died."""
    try:
        return time.time() - path.stat().st_mtime > 30.0
    except OSError:
        return True


def _usable_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def _free_cpu() -> bool:
    cpus = _usable_cpus()
    try:
        load = os.getloadavg()[0]
    except (AttributeError, OSError):  # no load average (Windows): trust the CPU count
        load = 0.0
    return cpus >= 2 and load <= cpus - 1


def start_background(kernel) -> bool:
    """Start the background compile if the conditions of the module docstring hold (``kernel``:
    the dispatcher whose on-disk cache tells whether the cache is cold); returns whether this call
    started it. Never raises: a failure only loses the head start."""
    global _kernel
    _kernel = kernel
    try:
        mode = os.environ.get(ENV, "")
        if mode in ("0", "child") or os.environ.get("NUMBA_DISABLE_JIT", "0") not in ("", "0"):
            return False
        if not _cold(kernel) or not sys.executable or (mode != "1" and not _free_cpu()):
            return False
        path = state_path(kernel)
        if path is None:
            return False
        path.parent.mkdir(parents=True, exist_ok=True)
        state = _read(path)
        if state is not None:
            if _fresh(state) and _alive(state.get("pid")):
                return False  # another process is compiling them
            path.unlink(missing_ok=True)  # left by a process that died
        elif path.exists() and _abandoned(path):
            path.unlink(missing_ok=True)
        try:
            os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644))
        except FileExistsError:
            return False  # another process started one a moment ago
        code = f"from {_PACKAGE}.precompile import background_main; background_main({str(path)!r})"
        try:
            proc = subprocess.Popen([sys.executable, "-c", code], env=dict(os.environ, **{ENV: "child"}),
                                    stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                    stderr=subprocess.DEVNULL, close_fds=True)
        except BaseException:
            path.unlink(missing_ok=True)
            raise
        _write(path, {"pid": proc.pid, "started": time.time(), "done": []})
        _spawned.update(proc=proc, owner=os.getpid())
        return True
    except Exception:  # noqa: BLE001 - optional head start; compiling on first use still works
        return False


def record_stage(path: Path, stage: str) -> None:
    """Called by the background process after each stage: waiters on ``stage`` may go on."""
    state = _read(path) or {"pid": os.getpid(), "started": time.time(), "done": []}
    _write(path, {**state, "done": [*state.get("done", []), stage]})


def wait_for(name: str) -> None:
    """Compile hook: before kernel ``name`` is compiled for a call from Python, wait while a
    live background process is still compiling it, so that it is then loaded from the cache."""
    stage = _STAGE_OF.get(name)
    if stage is None or os.environ.get(ENV) == "child":
        return
    path = state_path()
    if path is None or not path.exists():
        return
    proc = _spawned.get("proc") if _spawned.get("owner") == os.getpid() else None
    deadline = time.monotonic() + _MAX_WAIT_S
    while time.monotonic() < deadline:
        state = _read(path)
        if state is None:
            if _abandoned(path):
                return
        elif stage in state.get("done", ()) or not _fresh(state):
            return
        elif proc is not None and state.get("pid") == proc.pid:
            if proc.poll() is not None:  # also reaps it
                return
        elif state.get("pid") is not None and not _alive(state.get("pid")):
            return
        time.sleep(_POLL_S)


add_compile_hook(wait_for)
