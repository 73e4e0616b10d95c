"""Compile the InsMix kernels before their first use: now (:func:`precompile`) or in the
background (:func:`background_main`, started by :mod:`insmix_fast.kernels.warmup`).

With an empty Numba cache the first :func:`~insmix_fast.core.insmix` compiles its kernels
(~8 s) and the first :func:`~insmix_fast.core.insmix_batch` its parallel kernel; both then
load from Numba's on-disk cache. ``import insmix_fast`` already starts a background process
that compiles them when the cache is cold (see :mod:`insmix_fast.kernels.warmup`; set
``INSMIX_FAST_PRECOMPILE=0`` to turn it off). To pay the cost up front instead, e.g. in a
container build step, run::

    python -m insmix_fast.precompile

which compiles (or loads) them in the calling process and reports how long it took.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np

from .bank import InstanceBank
from .config import InsMixConfig
from .core import insmix, insmix_batch
from .kernels.warmup import STAGES, record_stage

__all__ = ["precompile", "background_main", "tiny_inputs"]


def tiny_inputs():
    """A one-instance bank and two 32×32 tiles holding that instance: the smallest inputs that
    run every kernel of insmix / insmix_batch, with the argument types real calls use."""
    cross = np.zeros((3, 3), np.uint8)
    cross[1, :] = 1
    cross[:, 1] = 1
    flat = cross.reshape(-1)
    bank = InstanceBank(area=np.array([5], np.int64), anchor=np.array([[1, 1]], np.int32),
                        hw=np.array([[3, 3]], np.int32), offset=np.array([0, 9], np.int64), masks=flat.copy(),
                        pixels=np.repeat(flat, 3) * np.uint8(90), desc=np.zeros((1, 16), np.uint64),
                        fits=np.ones(1, np.bool_), source=np.zeros(1, np.int64), source_label=np.ones(1, np.int32),
                        source_origin=np.ones((1, 2), np.int32), n_samples=1, min_area=1)
    labels = np.zeros((2, 32, 32), np.int32)
    labels[:, 10:13, 10:13] = cross
    images = np.full((2, 32, 32, 3), 200, np.uint8)
    return bank, images, labels


def _run_stage(stage: str, inputs) -> None:
    bank, images, labels = inputs
    config = InsMixConfig(p_paste=1.0)
    if stage == "insmix":
        insmix(images[0], labels[0], bank, config, seed=0)
    elif stage == "batch":
        insmix_batch(images, labels, bank, config, seed=0)
    else:
        raise ValueError(f"unknown precompile stage {stage!r}; stages: {list(STAGES)}")


def precompile(stages=tuple(STAGES)) -> float:
    """Compile (or load from the Numba cache) the kernels of ``stages`` in this process now;
    returns the seconds it took."""
    t0 = time.perf_counter()
    inputs = tiny_inputs()
    for stage in stages:
        _run_stage(stage, inputs)
    return time.perf_counter() - t0


def background_main(state_path: str) -> None:
    """The background process: compile stage by stage, recording each in the state file,
    which it removes when done (or when it fails)."""
    path = Path(state_path)
    try:
        inputs = tiny_inputs()
        for stage in STAGES:
            _run_stage(stage, inputs)
            record_stage(path, stage)
    finally:
        path.unlink(missing_ok=True)


if __name__ == "__main__":
    sys.stdout.write(f"insmix_fast kernels compiled (or loaded from the Numba cache) in {precompile():.1f} s\n")
