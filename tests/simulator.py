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


def assert_same_batch(sim: dict, prefix: str, cpu) -> None:
    """The simulator's batch result stored under ``prefix`` equals the CPU's ``cpu``
    (an ``InsMixBatchResult``): outputs, paste records, background moves and — when the
    worker stored them — the output types (a 0-d array marks ``None``)."""
    for f in ("images", "labels", "paste_masks", "shuffled_masks"):
        np.testing.assert_array_equal(sim[f"{prefix}/{f}"], getattr(cpu, f), err_msg=f"{prefix}: {f}")
    if f"{prefix}/types" in sim:
        if cpu.types is None:
            assert sim[f"{prefix}/types"].shape == (), f"{prefix}: types should be None"
        else:
            np.testing.assert_array_equal(sim[f"{prefix}/types"], cpu.types, err_msg=f"{prefix}: types")
    for b in range(len(cpu.pastes)):
        got = sim[f"{prefix}/pastes{b}"]
        assert got.dtype == cpu.pastes[b].dtype
        assert got.tolist() == cpu.pastes[b].tolist(), f"{prefix}: paste records of tile {b}"
        np.testing.assert_array_equal(sim[f"{prefix}/moves{b}"].reshape(-1, 2), cpu.moves[b].reshape(-1, 2),
                                      err_msg=f"{prefix}: background moves of tile {b}")
