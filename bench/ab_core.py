"""A/B of the core CPU warm path between source trees (same cases as ``bench_insmix.py``).

Rounds alternate the trees, each round a fresh Python process per tree, all on one saved
bank (``bank20k``: 40 synthetic 1024² tiles) and the 64 synthetic 256² crops of ``crops64``,
with ``NUMBA_NUM_THREADS=1``. A process times 256 single-crop ``insmix`` calls per case (full,
paste only, shuffle only) and 8 ``insmix_batch`` calls of 64 crops, after warm-up calls, and
reports medians; the table gives the median over rounds and the range::

    python bench/ab_core.py --tree /path/to/before --tree . --rounds 7

Each tree must import as ``insmix_fast`` with ``PYTHONPATH=<tree>`` (a checkout whose
``insmix_fast/kernels`` points at its ``kernels/``, or this repository with an editable
install). The first run of a tree compiles its kernels into its Numba cache (not timed).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CASES = ("full", "paste-only", "shuffle-only", "batch-64 per crop")

_CHILD = r"""
import json, sys, time
import numpy as np
from insmix_fast.bank import InstanceBank
from insmix_fast.config import InsMixConfig
from insmix_fast.core import insmix, insmix_batch

bank = InstanceBank.load(sys.argv[1])
z = np.load(sys.argv[2])
images, labels = z["images"], z["labels"]
out = {}
for name, cfg in (("full", InsMixConfig()), ("paste-only", InsMixConfig(background=False)),
                  ("shuffle-only", InsMixConfig(foreground=False))):
    for i in range(8):
        insmix(images[i], labels[i], bank, cfg, seed=0, index=i)
    ts = []
    for k in range(256):
        i = k % len(images)
        t = time.perf_counter()
        insmix(images[i], labels[i], bank, cfg, seed=0, index=i)
        ts.append(time.perf_counter() - t)
    out[name] = 1e3 * float(np.median(ts))
insmix_batch(images, labels, bank, seed=0)
ts = []
for r in range(8):
    t = time.perf_counter()
    insmix_batch(images, labels, bank, seed=r + 1)
    ts.append(time.perf_counter() - t)
out["batch-64 per crop"] = 1e3 * float(np.median(ts)) / len(images)
print(json.dumps(out))
"""


def _data(folder: Path, tree: Path) -> tuple[Path, Path]:
    """The shared bank and crops, made once with the first tree."""
    bank, crops = folder / "bank20k.npz", folder / "crops64.npz"
    script = (f"import numpy as np\nfrom insmix_fast.bank import InstanceBank\n"
              f"from insmix_fast.data import SyntheticNuclei\n"
              f"InstanceBank.from_samples(SyntheticNuclei(seed=1, size=1024, length=40), progress=False)"
              f".save({str(bank)!r})\n"
              f"im, lb = SyntheticNuclei(seed=2, size=256, length=64).as_arrays()\n"
              f"np.savez({str(crops)!r}, images=im, labels=lb)\n")
    subprocess.run([sys.executable, "-c", script], env=_env(tree), check=True)
    return bank, crops


def _env(tree: Path) -> dict:
    return dict(os.environ, PYTHONPATH=str(tree), NUMBA_NUM_THREADS="1", INSMIX_FAST_PRECOMPILE="0")


def run_tree(tree: Path, bank: Path, crops: Path) -> dict:
    proc = subprocess.run([sys.executable, "-c", _CHILD, str(bank), str(crops)], env=_env(tree),
                          capture_output=True, text=True, timeout=1800)
    if proc.returncode != 0:
        raise RuntimeError(f"A/B run failed on {tree}:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tree", action="append", type=Path, required=True, help="a source tree (give two or more)")
    ap.add_argument("--rounds", type=int, default=7)
    args = ap.parse_args(argv)
    trees = [t.resolve() for t in args.tree]
    with tempfile.TemporaryDirectory(prefix="insmix-ab-") as d:
        bank, crops = _data(Path(d), trees[0])
        for t in trees:  # compile (and fill each tree's cache) outside the timed rounds
            run_tree(t, bank, crops)
        results = {t: [] for t in trees}
        for r in range(args.rounds):
            order = trees if r % 2 == 0 else trees[::-1]
            for t in order:
                results[t].append(run_tree(t, bank, crops))
                print(f"round {r + 1}/{args.rounds} {t.name}: {results[t][-1]}", file=sys.stderr, flush=True)
    print("| case (ms, median [range] over rounds) | " + " | ".join(t.name for t in trees) + " |")
    print("| --- |" + " --- |" * len(trees))
    for case in CASES:
        cells = []
        for t in trees:
            v = [res[case] for res in results[t]]
            cells.append(f"{statistics.median(v):.3f} [{min(v):.3f}–{max(v):.3f}]")
        print(f"| {case} | " + " | ".join(cells) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
