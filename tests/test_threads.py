"""Starting Numba's thread pool must not change torch's thread count (the cause of experiment
results that depended on which arm ran first in a process).

Numba starts its pool once per process, so each check runs in a fresh interpreter.
"""

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

_CODE = """
import numpy as np, torch, numba
torch.set_num_threads(1)
torch.get_num_threads()  # torch has set up its OpenMP count in this thread
from insmix_fast.bank import InstanceBank
from insmix_fast.core import insmix_batch
from insmix_fast.data.synthetic import SyntheticNuclei
data = SyntheticNuclei(seed=0, size=64, length=2)
bank = InstanceBank.from_samples(data, progress=False)
images = np.stack([data[i][0] for i in range(2)]); labels = np.stack([data[i][1] for i in range(2)])
insmix_batch(images, labels, bank, seed=0)  # the first parallel kernel starts Numba's pool
print(torch.get_num_threads(), numba.get_num_threads(), numba.threading_layer())
"""


def test_numba_pool_start_keeps_torch_threads():
    env = {**os.environ, "NUMBA_NUM_THREADS": "2", "PYTHONPATH": os.pathsep.join(
        [str(ROOT), os.environ.get("PYTHONPATH", "")])}
    r = subprocess.run([sys.executable, "-c", _CODE], capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    torch_threads, numba_threads, layer = r.stdout.split()[-3:]
    assert numba_threads == "2"
    assert torch_threads == "1", f"Numba's {layer} pool start changed torch's thread count to {torch_threads}"


def test_start_numba_threads_is_idempotent():
    import numba
    import torch

    from insmix_fast.threads import start_numba_threads

    before = torch.get_num_threads()
    start_numba_threads()
    start_numba_threads()
    assert torch.get_num_threads() == before
    assert numba.get_num_threads() >= 1


_CONCURRENT = """
import threading
import numpy as np
from insmix_fast.bank import InstanceBank
from insmix_fast.core import insmix_batch
from insmix_fast.data.synthetic import SyntheticNuclei
from insmix_fast.threads import threading_layer
data = SyntheticNuclei(seed=0, size=64, length=4)
bank = InstanceBank.from_samples(data, progress=False)
images = np.stack([data[i][0] for i in range(4)]); labels = np.stack([data[i][1] for i in range(4)])
want = insmix_batch(images, labels, bank, seed=1).labels
errors = []
def work():
    try:
        for _ in range(20):
            assert np.array_equal(insmix_batch(images, labels, bank, seed=1).labels, want)
    except BaseException as e:
        errors.append(e)
threads = [threading.Thread(target=work) for _ in range(4)]
[t.start() for t in threads]; [t.join() for t in threads]
print(threading_layer(), len(errors))
"""


def test_parallel_kernels_from_several_threads_on_the_fork_safe_layer():
    """Numba's workqueue layer aborts the process when two threads launch parallel kernels at
    once; the package serialises its launches on it (threads.numba_parallel)."""
    env = {**os.environ, "NUMBA_NUM_THREADS": "2", "PYTHONPATH": os.pathsep.join(
        [str(ROOT), os.environ.get("PYTHONPATH", "")])}
    env.pop("NUMBA_THREADING_LAYER", None)
    r = subprocess.run([sys.executable, "-c", _CONCURRENT], capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    layer, errors = r.stdout.split()[-2:]
    assert layer in ("tbb", "workqueue"), f"Numba's pool runs on {layer!r}, which kills forked workers"
    assert errors == "0"
