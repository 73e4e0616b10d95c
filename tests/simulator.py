"""Run a test file's CUDA-simulator worker in a subprocess (``NUMBA_ENABLE_CUDASIM=1`` must be
set before numba is first imported) and read back the ``.npz`` it writes."""

import os
import subprocess
import sys

import numpy as np
import pytest


def run_simulator_worker(script: str, out_path, timeout: int = 900) -> dict:
    """``python script out_path`` under the simulator, from the repository root; the arrays it saved.
    Fails the test with the worker's output when it exits non-zero."""
    env = dict(os.environ, NUMBA_ENABLE_CUDASIM="1")
    root = os.path.dirname(os.path.dirname(os.path.abspath(script)))
    p = subprocess.run([sys.executable, os.path.abspath(script), str(out_path)], env=env, capture_output=True,
                       text=True, timeout=timeout, cwd=root)
    if p.returncode != 0:
        pytest.fail(f"CUDA-simulator worker failed (rc {p.returncode}):\n{p.stdout[-3000:]}\n{p.stderr[-6000:]}")
    with np.load(out_path, allow_pickle=False) as z:
        return {k: z[k] for k in z.files}
