"""First use with an empty Numba cache (issue 15): one specialisation per kernel, allocations
that compile nothing of their own, the plain call compiling neither the class choice nor the
ignore tests, the compile hook, and the background compile process (kernels/warmup.py) — safe
under fork, never changing a result, never waiting on a dead process. Timings live in
bench/bench_first_use.py."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from insmix_fast.config import InsMixConfig
from insmix_fast.core import insmix
from insmix_fast.kernels import warmup
from insmix_fast.kernels.alloc import empty, zeros
from insmix_fast.kernels.jit import KernelDispatcher, add_compile_hook, njit
from insmix_fast.precompile import tiny_inputs

ROOT = Path(__file__).resolve().parent.parent


@njit(nogil=True)
def _leaf(a, k):
    return a[0] + k


@njit(nogil=True)
def _caller(a):
    x = np.int32(3)
    return _leaf(a, 0) + _leaf(a, x) + _leaf(a, 7)


def test_one_specialisation_for_constants_and_narrow_ints():
    """Numba compiles a callee once per argument-type tuple; constants (Literal[int]) and
    int32 scalars would each add a copy. The kernels' njit types them all as int64."""
    assert isinstance(_leaf, KernelDispatcher)
    assert _caller(np.arange(3, dtype=np.int64)) == 0 + 3 + 7
    assert [str(sig[1]) for sig in _leaf.signatures] == ["int64"]


@njit(nogil=True)
def _allocate(n):
    a = empty((n, 2), np.int16)
    b = zeros(n, np.uint16)
    c = zeros((n, 3, 2), b.dtype)
    for i in range(n):
        a[i, 0] = i
        a[i, 1] = -i
    return a, b, c


_ALLOCATOR = "numba.np.arrayobj"  # where Numba's dtype-independent array allocator lives


def test_alloc_is_numpy_allocation_without_a_compilation_of_its_own():
    from numba.core import event

    with event.install_recorder("numba:compile") as rec:
        a, b, c = _allocate(4)
    compiled = [ev.data["dispatcher"].py_func.__module__ for _, ev in rec.buffer if ev.is_start]
    # no np.empty / np.zeros overload compiled; Numba's raw allocator (one function for every
    # dtype and shape, which np.empty compiles too) may be compiled once per process
    assert [m for m in compiled if m != _ALLOCATOR] == [_allocate.py_func.__module__], compiled
    assert compiled.count(_ALLOCATOR) <= 1, compiled
    assert a.shape == (4, 2) and a.dtype == np.int16 and a.flags.c_contiguous
    np.testing.assert_array_equal(a, np.stack([np.arange(4), -np.arange(4)], axis=1))
    assert b.shape == (4,) and b.dtype == np.uint16 and not b.any()
    assert c.shape == (4, 3, 2) and c.dtype == np.uint16 and c.flags.c_contiguous and not c.any()
    assert _allocate(0)[1].shape == (0,)
    with pytest.raises(ValueError, match="negative dimensions"):  # as np.empty
        _allocate(-1)


def test_compile_hook_runs_once_before_the_first_compile(monkeypatch):
    seen = []
    monkeypatch.setattr("insmix_fast.kernels.jit._compile_hooks", [])
    add_compile_hook(seen.append)

    @njit(nogil=True)
    def fresh(x):
        return x + 1

    assert fresh(1) == 2 and fresh(2) == 3
    assert seen == ["fresh"]
    assert fresh(1.5) == 2.5  # new argument types: a new compile
    assert seen == ["fresh", "fresh"]


# ---------------------------------------------------------------------- waiting on the background process
@pytest.fixture()
def state(tmp_path, monkeypatch):
    path = tmp_path / "insmix_fast-precompile.json"
    monkeypatch.setattr(warmup, "state_path", lambda kernel=None: path)
    monkeypatch.setattr(warmup, "_spawned", {})
    monkeypatch.delenv(warmup.ENV, raising=False)
    return path


def _timed_wait(name="insmix_tile") -> float:
    t0 = time.monotonic()
    warmup.wait_for(name)
    return time.monotonic() - t0


def test_wait_returns_at_once_without_a_live_process(state):
    assert _timed_wait() < 0.5  # no state file
    state.write_text(json.dumps({"pid": os.getpid(), "started": time.time(), "done": ["insmix"]}))
    assert _timed_wait() < 0.5  # stage done
    assert _timed_wait("gather_segments") < 0.5  # a kernel no stage compiles
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    state.write_text(json.dumps({"pid": dead.pid, "started": time.time(), "done": []}))
    assert _timed_wait() < 0.5  # its process is gone
    state.write_text(json.dumps({"pid": os.getpid(), "started": time.time() - 3600, "done": []}))
    assert _timed_wait() < 0.5  # stale
    state.write_text("")
    os.utime(state, (time.time() - 120, time.time() - 120))
    assert _timed_wait() < 0.5  # an empty file its starter never filled in


def test_wait_blocks_while_the_stage_is_compiling(state):
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(1.0)"])
    try:
        state.write_text(json.dumps({"pid": proc.pid, "started": time.time(), "done": []}))
        assert _timed_wait() >= 0.7  # waited for the process to exit
        assert _timed_wait("insmix_batch_kernel") < 0.5
    finally:
        proc.kill()
        proc.wait()


def test_no_background_process_when_turned_off_or_warm(monkeypatch):
    from insmix_fast.kernels.pipeline import insmix_tile

    monkeypatch.setenv(warmup.ENV, "0")
    assert warmup.start_background(insmix_tile) is False
    monkeypatch.setenv(warmup.ENV, "1")
    monkeypatch.setattr(warmup, "_cold", lambda kernel: False)
    assert warmup.start_background(insmix_tile) is False
    monkeypatch.setattr(warmup, "_cold", lambda kernel: True)
    monkeypatch.delenv(warmup.ENV)  # automatic: only with a free CPU
    monkeypatch.setattr(warmup, "_usable_cpus", lambda: 1)
    assert warmup.start_background(insmix_tile) is False
    monkeypatch.setattr(warmup, "_usable_cpus", lambda: 2)
    monkeypatch.setattr(warmup.os, "getloadavg", lambda: (1.5, 1.5, 1.5))
    assert warmup._free_cpu() is False
    monkeypatch.setattr(warmup.os, "getloadavg", lambda: (0.2, 0.2, 0.2))
    assert warmup._free_cpu() is True


# ---------------------------------------------------------------------- a real cold start
_COLD = textwrap.dedent("""
    import os, sys, json, time
    import numpy as np
    import insmix_fast
    from insmix_fast.config import InsMixConfig
    from insmix_fast.core import insmix, insmix_batch
    from insmix_fast.kernels import warmup
    from insmix_fast.precompile import tiny_inputs

    started = "proc" in warmup._spawned
    path = warmup.state_path()
    state_seen = path.exists()
    bank, images, labels = tiny_inputs()
    cfg = InsMixConfig(p_paste=1.0, alpha=0.5, patch=8)
    pid = os.fork()  # a loader worker forked while the background process compiles
    r = insmix(images[0], labels[0], bank, cfg, seed=3)
    np.savez(sys.argv[1] + ("/child.npz" if pid == 0 else "/parent.npz"), image=r.image, labels=r.labels)
    if pid == 0:
        os._exit(0)
    _, status = os.waitpid(pid, 0)
    proc = warmup._spawned.get("proc")
    if proc is not None:
        proc.wait(timeout=300)
    b = insmix_batch(images, labels, bank, cfg, seed=3)
    print(json.dumps({"started": started, "state_seen": state_seen, "child_status": status,
                      "state_left": path.exists(), "background_rc": None if proc is None else proc.returncode,
                      "batch_equal": bool(np.array_equal(b.images[0], r.image))}))
""")


@pytest.mark.slow
def test_cold_start_with_a_background_compile_is_fork_safe_and_deterministic(tmp_path):
    env = dict(os.environ, NUMBA_CACHE_DIR=str(tmp_path / "numba-cache"), PYTHONPATH=str(ROOT))
    env[warmup.ENV] = "1"  # whatever the machine's load
    proc = subprocess.run([sys.executable, "-c", _COLD, str(tmp_path)], env=env, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["started"] and out["state_seen"], out
    assert out["child_status"] == 0 and out["background_rc"] == 0, out
    assert not out["state_left"] and out["batch_equal"], out
    bank, images, labels = tiny_inputs()
    ref = insmix(images[0], labels[0], bank, InsMixConfig(p_paste=1.0, alpha=0.5, patch=8), seed=3)
    for name in ("parent", "child"):
        with np.load(tmp_path / f"{name}.npz") as z:
            np.testing.assert_array_equal(z["image"], ref.image)
            np.testing.assert_array_equal(z["labels"], ref.labels)
    assert not list((tmp_path / "numba-cache").rglob("*.tmp"))


# ---------------------------------------------------------------------- what the plain call compiles
_PLAIN = textwrap.dedent("""
    import json
    from numba.core import event
    from insmix_fast.config import InsMixConfig
    from insmix_fast.core import insmix
    from insmix_fast.kernels import pipeline, placement, ssd
    from insmix_fast.precompile import tiny_inputs

    bank, images, labels = tiny_inputs()
    with event.install_recorder("numba:compile") as rec:
        r = insmix(images[0], labels[0], bank, InsMixConfig(p_paste=1.0), seed=3)
    print(json.dumps({
        "valid": bool(r.labels.shape == labels[0].shape),
        "modules": [ev.data["dispatcher"].py_func.__module__ for _, ev in rec.buffer if ev.is_start],
        "choose_template": len(ssd.choose_template.signatures),
        "choose_in_order": [str(sig[4]) for sig in ssd.choose_in.signatures],
        "place_pastes_ignore": [str(sig[21]) for sig in placement.place_pastes.signatures],
        "tile_class_ignore": [[str(sig[18]), str(sig[19])] for sig in pipeline.insmix_tile.signatures],
    }))
""")


@pytest.mark.slow
def test_the_plain_call_compiles_no_class_choice_ignore_tests_or_allocation_overloads(tmp_path):
    """An untyped ``insmix`` without ``ignore`` on an empty cache: ``id_class`` and ``ignore`` reach
    the kernels as None, so Numba compiles neither the class-aware template choice nor the ignore
    tests, and the allocations compile no ``np.empty``/``np.zeros`` overload."""
    env = dict(os.environ, NUMBA_CACHE_DIR=str(tmp_path / "numba-cache"), PYTHONPATH=str(ROOT))
    env[warmup.ENV] = "0"
    proc = subprocess.run([sys.executable, "-c", _PLAIN], env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["valid"], out
    assert out["choose_template"] == 0, out
    assert out["choose_in_order"] == ["none"], out
    assert out["place_pastes_ignore"] == ["none"], out
    assert out["tile_class_ignore"] == [["none", "none"]], out
    # no allocation overloads: at most Numba's one dtype-independent allocator
    assert [m for m in out["modules"] if m.startswith("numba.np")] in ([], [_ALLOCATOR]), out
    assert all(m.startswith("insmix_fast.kernels.") or m.startswith("numba.") for m in out["modules"]), out
