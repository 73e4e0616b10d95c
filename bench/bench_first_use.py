"""First use (issue 15): import + bank of 8 tiles + first ``insmix`` with an EMPTY Numba cache.

A new user's first script pays Numba's compilation once (then it is cached on disk).
Each round runs the path below in a fresh Python process with a fresh, empty
``NUMBA_CACHE_DIR``, and reports wall and CPU seconds per phase; the warm case re-runs
it in a new process on the cache the cold run filled::

    import insmix_fast …                                   # "import"
    data = SyntheticNuclei(seed=0, size=256, length=9)
    tiles = data[:8]                                       # "data" (also compiles its label kernels)
    bank = InstanceBank.from_samples(tiles)                # "bank"
    insmix(*data[8], bank, seed=0)                         # "insmix"

Run::

    pytest bench/bench_first_use.py --benchmark-only          # pytest-benchmark (3 cold + 3 warm rounds)
    python bench/bench_first_use.py --rounds 5                # plain table, this tree
    python bench/bench_first_use.py --rounds 5 --tree /path/to/other/checkout --tree .
                                                              # trees alternated round by round (A/B)

``extra_info`` holds the per-phase medians. CPU seconds are the fairer figure on a shared
machine (compilation is single-threaded; the wall time also counts waiting for a core).
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

import pytest

ROOT = Path(__file__).resolve().parent.parent
PHASES = ("import", "data", "bank", "insmix")

_CHILD = r"""
import json, time
w0, c0 = time.perf_counter(), time.process_time()
def mark(out, name, t):
    w, c = time.perf_counter(), time.process_time()
    out[name] = (w - t[0], c - t[1]); t[0], t[1] = w, c
out, t = {}, [w0, c0]
from insmix_fast.bank import InstanceBank
from insmix_fast.core import insmix
from insmix_fast.data import SyntheticNuclei
mark(out, "import", t)
data = SyntheticNuclei(seed=0, size=256, length=9)
tiles = data[:8]
mark(out, "data", t)
bank = InstanceBank.from_samples(tiles, progress=False)
mark(out, "bank", t)
r = insmix(*data[8], bank, seed=0)
mark(out, "insmix", t)
assert len(r.pastes) > 0
print("FIRST_USE " + json.dumps(out))
"""


def run_once(tree: Path, cache_dir: str, threads: int | None = None) -> dict[str, tuple[float, float]]:
    """One fresh process of the first-use path on ``tree`` with ``cache_dir``: {phase: (wall s, cpu s)}."""
    env = dict(os.environ, NUMBA_CACHE_DIR=cache_dir, PYTHONPATH=str(tree))
    if threads is not None:
        env["NUMBA_NUM_THREADS"] = str(threads)
    proc = subprocess.run([sys.executable, "-c", _CHILD], env=env, cwd=tempfile.gettempdir(),
                          capture_output=True, text=True, timeout=900)
    if proc.returncode != 0:
        raise RuntimeError(f"first-use run failed on {tree}:\n{proc.stderr[-4000:]}")
    line = next(ln for ln in proc.stdout.splitlines() if ln.startswith("FIRST_USE "))
    out = {k: tuple(v) for k, v in json.loads(line[len("FIRST_USE "):]).items()}
    out["total"] = (sum(v[0] for v in out.values()), sum(v[1] for v in out.values()))
    return out


def cold_and_warm(tree: Path) -> tuple[dict, dict]:
    """A cold run (empty cache) and a warm run on the cache it filled."""
    with tempfile.TemporaryDirectory(prefix="numba-cache-") as d:
        return run_once(tree, d), run_once(tree, d)


def _medians(runs: list[dict]) -> dict[str, tuple[float, float]]:
    return {k: (statistics.median(r[k][0] for r in runs), statistics.median(r[k][1] for r in runs))
            for k in (*PHASES, "total")}


def _info(runs: list[dict]) -> dict:
    med = _medians(runs)
    info = {f"{k}_wall_s": round(v[0], 2) for k, v in med.items()}
    info.update({f"{k}_cpu_s": round(v[1], 2) for k, v in med.items()})
    info["total_wall_range_s"] = [round(min(r["total"][0] for r in runs), 2),
                                  round(max(r["total"][0] for r in runs), 2)]
    return info


def _load() -> str:
    try:
        return "%.1f %.1f %.1f" % os.getloadavg()
    except OSError:
        return "n/a"


@pytest.mark.parametrize("cache", ["cold", "warm"])
def test_first_use(benchmark, cache):
    """Import + bank of 8 synthetic 256² tiles + first insmix, in a fresh process."""
    runs = []

    def one():
        cold, warm = cold_and_warm(ROOT)
        runs.append(cold if cache == "cold" else warm)
        return runs[-1]

    benchmark.pedantic(one, rounds=3, iterations=1)
    benchmark.extra_info.update(_info(runs))
    benchmark.extra_info["load_before_after"] = _load()


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--tree", action="append", type=Path,
                    help="checkout(s) to measure, alternated round by round (default: this one)")
    args = ap.parse_args(argv)
    trees = [t.resolve() for t in (args.tree or [ROOT])]
    cold = {t: [] for t in trees}
    warm = {t: [] for t in trees}
    print(f"load before: {_load()}", flush=True)
    for r in range(args.rounds):
        for t in trees:
            c, w = cold_and_warm(t)
            cold[t].append(c)
            warm[t].append(w)
            print(f"round {r} {t}: cold " + " ".join(f"{k} {c[k][0]:.1f}/{c[k][1]:.1f}" for k in (*PHASES, "total"))
                  + f" | warm total {w['total'][0]:.2f}/{w['total'][1]:.2f}  (wall/cpu s, load {_load()})",
                  flush=True)
    print("\nmedians over rounds, wall s / cpu s")
    for t in trees:
        mc, mw = _medians(cold[t]), _medians(warm[t])
        print(f"{t}\n  cold: " + ", ".join(f"{k} {mc[k][0]:.1f} / {mc[k][1]:.1f}" for k in (*PHASES, "total"))
              + f"\n  warm: total {mw['total'][0]:.2f} / {mw['total'][1]:.2f}")


if __name__ == "__main__":
    main()
