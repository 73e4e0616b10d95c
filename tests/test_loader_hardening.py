"""Loader failures from the bad-input audit (issue 15): a source that blocks (``timeout=``),
a bad saved state, two threads on one loader, and worker start-up in a plain script after
InsMix ran in the main process (must not hang)."""

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from insmix_fast.errors import ConfigError, InsMixError, LoaderTimeoutError
from insmix_fast.loader import InsMixLoader, dali_available

ROOT = Path(__file__).resolve().parent.parent
needs_dali = pytest.mark.skipif(not dali_available(), reason="NVIDIA DALI is not installed (pip install nvidia-dali-cuda120)")
TIMEOUT = 2.5  # short, yet a loaded 2-core machine still starts workers within it


class BlockingSource:
    """Tile i is filled with i; reading an index in ``block`` waits on ``gate`` (forever in a
    forked worker, where nobody sets it)."""

    def __init__(self, n=8, block=(), size=16):
        self.n, self.block, self.size = n, set(block), size
        self.gate = threading.Event()

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        if i in self.block:
            self.gate.wait()
        return np.full((self.size, self.size, 3), i, np.uint8), np.zeros((self.size, self.size), np.int32)


def plain(source, **kw):
    kw = dict(dict(batch_size=2, crop=16, insmix=False, augment=False, backend="torch", shuffle=False), **kw)
    return InsMixLoader(source, **kw)


# ---------------------------------------------------------------------- timeout (item 9)
@pytest.mark.parametrize("kw", [dict(num_workers=0), dict(num_workers=2), dict(augment_on="device", num_workers=2),
                                pytest.param(dict(backend="dali"), marks=needs_dali)],
                         ids=["torch-0", "torch-2", "torch-device-2", "dali"])
def test_timeout_names_the_batch_samples_and_leaves_no_worker(kw):
    import multiprocessing

    before = set(multiprocessing.active_children())  # other tests' loaders may still hold workers
    src = BlockingSource(block={3})
    loader = plain(src, timeout=TIMEOUT, **kw)
    try:
        it = iter(loader)
        t0 = time.monotonic()
        with pytest.raises(LoaderTimeoutError, match=r"samples \[2, 3\]") as e:
            next(it)  # samples 0, 1 (DALI, which reads ahead, may already report the stuck batch)
            next(it)
        assert time.monotonic() - t0 < TIMEOUT + 15  # past the timeout, not forever (workers stopped quickly)
        assert isinstance(e.value, InsMixError) and isinstance(e.value, TimeoutError)
        assert f"timeout={TIMEOUT:g}" in str(e.value)
        deadline = time.monotonic() + 10
        mine = lambda: set(multiprocessing.active_children()) - before  # noqa: E731
        while mine() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not mine(), "a worker process outlived the timeout"
    finally:
        src.gate.set()
        loader.close()


class OnceStuck(BlockingSource):
    """Blocks the first read of an index in ``block`` only (a marker file, seen by every process)."""

    def __init__(self, marker, **kw):
        super().__init__(**kw)
        self.marker = str(marker)

    def __getitem__(self, i):
        if i in self.block and not os.path.exists(self.marker):
            open(self.marker, "w").close()
            threading.Event().wait(60)
        return np.full((self.size, self.size, 3), i, np.uint8), np.zeros((self.size, self.size), np.int32)


@pytest.mark.parametrize("kw", [dict(num_workers=0), dict(num_workers=2),
                                pytest.param(dict(backend="dali"), marks=needs_dali)],
                         ids=["torch-0", "torch-2", "dali"])
def test_after_a_timeout_the_next_loop_continues_with_the_stuck_batch(tmp_path, kw):
    loader = plain(OnceStuck(tmp_path / "stuck", block={3}), timeout=TIMEOUT, **kw)
    got = []
    with pytest.raises(LoaderTimeoutError):
        for images, _ in loader:
            got.append(images.clone())
    got += [images.clone() for images, _ in loader]  # new workers / a new pipeline; same position
    ref = [b[0].clone() for b in plain(BlockingSource())]
    assert len(got) == len(ref) == 4 and all(torch.equal(a, b) for a, b in zip(got, ref))
    loader.close()


def test_timeout_is_checked():
    for bad in (0, -1, "2", True, float("nan")):
        with pytest.raises(ConfigError, match="timeout"):
            plain(BlockingSource(), timeout=bad)
    assert plain(BlockingSource(), timeout=None).timeout is None


def test_a_fast_source_is_unaffected_by_the_timeout():
    a = [b[0].clone() for b in plain(BlockingSource(), timeout=30)]
    b = [b[0].clone() for b in plain(BlockingSource())]
    assert len(a) == 4 and all((x == y).all() for x, y in zip(a, b))


_ORPHAN = """
import os, sys, threading, numpy as np
from insmix_fast.loader import InsMixLoader

class Stuck:
    def __len__(self): return 4
    def __getitem__(self, i):
        if i > 0:
            threading.Event().wait()
        return np.zeros((16, 16, 3), np.uint8), np.zeros((16, 16), np.int32)

loader = InsMixLoader(Stuck(), batch_size=1, crop=16, insmix=False, augment=False, backend="torch",
                      shuffle=False, num_workers=2)
it = iter(loader)
next(it)
print(" ".join(str(w.pid) for w in loader._impl.dataloader._iterator._workers), flush=True)
threading.Event().wait()
"""


def test_workers_do_not_outlive_a_killed_main_process(tmp_path):
    """A worker stuck in the source never reaches the DataLoader's own parent check; it must
    still end when the main process is killed (no orphan)."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    p = subprocess.Popen([sys.executable, "-c", _ORPHAN], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         env=env)
    try:
        line = p.stdout.readline()
        assert line.strip(), p.stderr.read()[-3000:]
        pids = [int(x) for x in line.split()]
    finally:
        p.send_signal(signal.SIGKILL)
        p.wait(30)
    deadline = time.monotonic() + 15
    alive = pids
    while alive and time.monotonic() < deadline:
        time.sleep(0.2)
        alive = [q for q in pids if _alive(q)]
    assert not alive, f"worker processes {alive} outlived the killed main process"


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except FileNotFoundError:
        return False


# ---------------------------------------------------------------------- saved state (item 10)
@pytest.mark.parametrize("field, value", [("epoch", -1), ("epoch", "1"), ("batch", 2.7), ("batch", True),
                                          ("seed", -3), ("seed", 1.0), ("rank", 5), ("shuffle", 1),
                                          ("n", 0), ("version", "1")])
def test_load_state_dict_checks_types_and_ranges(field, value):
    loader = plain(BlockingSource())
    state = loader.state_dict()
    with pytest.raises(ConfigError, match=repr(field)):
        loader.load_state_dict({**state, field: value})
    assert loader.state_dict() == state  # nothing half-applied


def test_load_state_dict_refuses_unknown_fields_and_accepts_numpy_ints():
    loader = plain(BlockingSource())
    state = loader.state_dict()
    with pytest.raises(ConfigError, match="unknown fields"):
        loader.load_state_dict({**state, "epok": 1})
    loader.load_state_dict({**state, "epoch": np.int64(2), "batch": np.int32(1)})
    assert loader.state_dict()["epoch"] == 2 and loader.state_dict()["batch"] == 1


# ---------------------------------------------------------------------- threads (item 12)
def test_a_second_thread_gets_a_clear_error():
    src = BlockingSource(block={2})
    loader = plain(src)
    it = iter(loader)
    next(it)
    box = {}

    def first():
        try:
            box["batch"] = next(it)  # blocks in the source until the gate opens
        except BaseException as e:  # noqa: BLE001
            box["error"] = e

    t = threading.Thread(target=first, name="trainer")
    t.start()
    try:
        time.sleep(0.3)  # "trainer" is inside next() now
        with pytest.raises(RuntimeError, match="'trainer'.*one thread at a time"):
            next(it)
        with pytest.raises(RuntimeError, match="being iterated"):
            iter(loader)
        with pytest.raises(RuntimeError, match="being iterated"):
            loader.set_epoch(3)
    finally:
        src.gate.set()
        t.join(30)
    assert "error" not in box and box["batch"][0].shape[0] == 2
    loader.close()


def test_an_iterator_replaced_by_a_newer_one_raises():
    loader = plain(BlockingSource())
    old = iter(loader)
    next(old)
    new = iter(loader)  # continues where `old` stopped
    with pytest.raises(RuntimeError, match="iterated again"):
        next(old)
    assert len(list(new)) == len(loader) - 1
    loader.close()
    assert list(new) == []  # a closed loader's iterator ends, as a DataLoader's


# ---------------------------------------------------------------------- worker start-up (item 13)
_SCRIPT = """
import numpy as np
from insmix_fast.bank import InstanceBank
from insmix_fast.core import insmix_batch
from insmix_fast.data.synthetic import SyntheticNuclei
from insmix_fast.loader import InsMixLoader

ds = SyntheticNuclei(seed=0, size=64, length=4)
bank = InstanceBank.from_samples(ds, progress=False)
images = np.stack([ds[i][0] for i in range(2)]); labels = np.stack([ds[i][1] for i in range(2)])
insmix_batch(images, labels, bank, seed=0)  # Numba's parallel pool starts in the main process
n = 0
for images, labels in InsMixLoader(ds, bank=bank, batch_size=2, crop=32, num_workers=2, backend="torch"):
    n += images.shape[0]
print("samples", n)
"""


def _run_script(tmp_path, env_extra=None):
    path = tmp_path / "train.py"  # a plain script: no `if __name__ == "__main__":` guard
    path.write_text(textwrap.dedent(_SCRIPT))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
           "NUMBA_NUM_THREADS": "2", **(env_extra or {})}
    env.pop("NUMBA_THREADING_LAYER", None) if not env_extra else None
    return subprocess.run([sys.executable, str(path)], capture_output=True, text=True, env=env, timeout=120,
                          cwd=tmp_path)


def test_plain_script_insmix_then_workers_does_not_hang(tmp_path):
    r = _run_script(tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    assert r.stdout.split()[-2:] == ["samples", "4"]


def test_forking_after_an_openmp_pool_fails_at_once_with_what_to_do(tmp_path):
    """The user forced GNU OpenMP: forked workers would be killed, so the loader refuses to fork
    and says what to do — at once, not a hang."""
    r = _run_script(tmp_path, {"NUMBA_THREADING_LAYER": "omp"})
    if r.returncode == 0:
        pytest.skip("Numba's OpenMP layer is not available here (another layer ran)")
    assert "ConfigError" in r.stderr and "NUMBA_THREADING_LAYER" in r.stderr, r.stderr[-3000:]
