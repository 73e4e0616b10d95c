"""Numba threading layer: ``insmix_batch`` on the fork-safe ``workqueue`` layer (what
insmix_fast selects when TBB is absent, so that forked DataLoader workers keep working) against
GNU OpenMP (Numba's default on Linux, which kills forked children once its pool ran).

Each layer runs in a fresh interpreter (Numba picks the layer once per process), rounds
interleaved: per round and layer, one warm-up call then the median of 7 timed calls of
``insmix_batch`` on 64 synthetic 256² tiles (bank from the same tiles), ``NUMBA_NUM_THREADS=2``.

    python bench/bench_threading_layer.py [--rounds 5] [--tiles 64]

Results are bit-identical across layers (each tile is computed by one thread); only speed
can differ. Recorded in bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LAYERS = ("omp", "workqueue")

_CHILD = """
import sys, time
import numpy as np
import numba
from insmix_fast.bank import InstanceBank
from insmix_fast.core import insmix_batch
from insmix_fast.data.synthetic import SyntheticNuclei

n = int(sys.argv[1])
ds = SyntheticNuclei(seed=0, size=256, length=n)
bank = InstanceBank.from_samples(ds, progress=False)
images = np.stack([ds[i][0] for i in range(n)]); labels = np.stack([ds[i][1] for i in range(n)])
insmix_batch(images, labels, bank, seed=0)
times = []
for s in range(7):
    t = time.perf_counter(); insmix_batch(images, labels, bank, seed=s + 1); times.append(time.perf_counter() - t)
print(numba.threading_layer(), 1000 * float(np.median(times)))
"""


def run_layer(layer: str, tiles: int) -> tuple[str, float]:
    env = {**os.environ, "NUMBA_THREADING_LAYER": layer, "NUMBA_NUM_THREADS": "2",
           "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    out = subprocess.run([sys.executable, "-c", _CHILD, str(tiles)], capture_output=True, text=True, env=env,
                         check=True, timeout=600).stdout.split()
    return out[-2], float(out[-1])


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--tiles", type=int, default=64)
    args = ap.parse_args(argv)
    results: dict[str, list[float]] = {layer: [] for layer in LAYERS}
    for r in range(args.rounds):
        for layer in LAYERS if r % 2 == 0 else LAYERS[::-1]:
            ran, ms = run_layer(layer, args.tiles)
            results[layer].append(ms)
            print(f"round {r}: {ran:9s} {ms:7.1f} ms", flush=True)
    for layer, ms in results.items():
        ms = sorted(ms)
        print(f"{layer:9s} median {ms[len(ms) // 2]:7.1f} ms (range {ms[0]:.1f}–{ms[-1]:.1f}) "
              f"per insmix_batch of {args.tiles} 256² tiles")


if __name__ == "__main__":
    main()
