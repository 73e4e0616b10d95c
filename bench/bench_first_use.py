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

    pytest bench/bench_first_use.py --benchmark-only          # pytest-benchmark: 3 rounds, auto / no-background
    python bench/bench_first_use.py --rounds 5                # plain table, this tree
    python bench/bench_first_use.py --rounds 5 --tree /path/to/other/checkout --tree .
                                                              # trees alternated round by round (A/B)

Each tree runs three times per round: as a user would (``auto``: the background compile
process of :mod:`insmix_fast.kernels.warmup` starts when a CPU is free), with it forced
(``bg``: ``INSMIX_FAST_PRECOMPILE=1``) and without it (``nobg``: ``=0``, everything compiled
in the calling process); ``--modes`` picks.

``extra_info`` holds the per-phase medians. CPU seconds are the fairer figure on a shared
machine (compilation is single-threaded; the wall time also counts waiting for a core); the
background process's CPU seconds are reported apart (it runs on another core when one is free).
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
import os
try:  # the background compile process, if this run started one: wait (untimed) to count its CPU
    from insmix_fast.kernels import warmup
    proc = warmup._spawned.get("proc")
    out["background"] = proc is not None
    if proc is not None:
        proc.wait()
except ImportError:
    out["background"] = False
times = os.times()
out["children_cpu"] = times.children_user + times.children_system
print("FIRST_USE " + json.dumps(out))
"""


def run_once(tree: Path, cache_dir: str, background: bool | None = None) -> dict:
    """One fresh process of the first-use path on ``tree`` with ``cache_dir``: {phase: (wall s, cpu s)},
    plus ``background`` (a background compile process ran) and ``children_cpu`` (its CPU seconds).
    ``background``: ``True`` sets ``INSMIX_FAST_PRECOMPILE=1`` (start it whatever the load),
    ``False`` sets ``0`` (never), ``None`` leaves it unset (automatic: only with a free CPU)."""
    env = dict(os.environ, NUMBA_CACHE_DIR=cache_dir, PYTHONPATH=str(tree))
    env.pop("INSMIX_FAST_PRECOMPILE", None)
    if background is not None:
        env["INSMIX_FAST_PRECOMPILE"] = "1" if background else "0"
    proc = subprocess.run([sys.executable, "-c", _CHILD], env=env, cwd=tempfile.gettempdir(),
                          capture_output=True, text=True, timeout=900)
    if proc.returncode != 0:
        raise RuntimeError(f"first-use run failed on {tree}:\n{proc.stderr[-4000:]}")
    line = next(ln for ln in proc.stdout.splitlines() if ln.startswith("FIRST_USE "))
    raw = json.loads(line[len("FIRST_USE "):])
    out = {k: tuple(raw[k]) for k in PHASES}
    out["total"] = (sum(v[0] for v in out.values()), sum(v[1] for v in out.values()))
    out["background"] = bool(raw.get("background", False))
    out["children_cpu"] = float(raw.get("children_cpu", 0.0))
    return out


def cold_and_warm(tree: Path, background: bool | None = None) -> tuple[dict, dict]:
    """A cold run (empty cache) and a warm run on the cache it filled."""
    with tempfile.TemporaryDirectory(prefix="numba-cache-") as d:
        return run_once(tree, d, background), run_once(tree, d, background)


def _medians(runs: list[dict]) -> dict[str, tuple[float, float]]:
    return {k: (statistics.median(r[k][0] for r in runs), statistics.median(r[k][1] for r in runs))
            for k in (*PHASES, "total")}


def _info(runs: list[dict]) -> dict:
    med = _medians(runs)
    info = {f"{k}_wall_s": round(v[0], 2) for k, v in med.items()}
    info.update({f"{k}_cpu_s": round(v[1], 2) for k, v in med.items()})
    info["total_wall_range_s"] = [round(min(r["total"][0] for r in runs), 2),
                                  round(max(r["total"][0] for r in runs), 2)]
    info["background_process_cpu_s"] = round(statistics.median(r["children_cpu"] for r in runs), 2)
    return info


def _load() -> str:
    try:
        return "%.1f %.1f %.1f" % os.getloadavg()
    except OSError:
        return "n/a"


@pytest.mark.parametrize("background", [None, False], ids=["auto", "no-background"])
@pytest.mark.parametrize("cache", ["cold", "warm"])
def test_first_use(benchmark, cache, background):
    """Import + bank of 8 synthetic 256² tiles + first insmix, in a fresh process."""
    runs = []

    def one():
        cold, warm = cold_and_warm(ROOT, background)
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
    ap.add_argument("--modes", default="auto,bg,nobg",
                    help="comma list: auto (INSMIX_FAST_PRECOMPILE unset: background compile only with a free "
                         "CPU), bg (=1: always), nobg (=0: never)")
    args = ap.parse_args(argv)
    trees = [t.resolve() for t in (args.tree or [ROOT])]
    variants = [(t, m) for t in trees for m in args.modes.split(",")]
    cold = {v: [] for v in variants}
    warm = {v: [] for v in variants}
    print(f"load before: {_load()}", flush=True)
    for r in range(args.rounds):
        for v in variants:
            c, w = cold_and_warm(v[0], {"auto": None, "bg": True, "nobg": False}[v[1]])
            cold[v].append(c)
            warm[v].append(w)
            print(f"round {r} {v[0]} [{v[1]}{'' if c['background'] else ', none ran'}]: cold "
                  + " ".join(f"{k} {c[k][0]:.1f}/{c[k][1]:.1f}" for k in (*PHASES, "total"))
                  + f" + background cpu {c['children_cpu']:.1f} | warm total {w['total'][0]:.2f}/{w['total'][1]:.2f}"
                  f"  (wall/cpu s, load {_load()})", flush=True)
    print("\nmedians over rounds, wall s / cpu s")
    for v in variants:
        mc, mw = _medians(cold[v]), _medians(warm[v])
        bg = statistics.median(r["children_cpu"] for r in cold[v])
        print(f"{v[0]} [{v[1]}]\n  cold: " + ", ".join(f"{k} {mc[k][0]:.1f} / {mc[k][1]:.1f}" for k in (*PHASES, "total"))
              + f" (+ background process {bg:.1f} cpu s)\n  warm: total {mw['total'][0]:.2f} / {mw['total'][1]:.2f}")


if __name__ == "__main__":
    main()
