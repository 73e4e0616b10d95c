"""Benchmark of insmix_fast.metrics on a 1000×1000 map with ~800 instances.

Run: ``python -m pytest bench/bench_metrics.py --benchmark-only``
(the file is not matched by the test collection pattern; name it explicitly).
"""

from __future__ import annotations

import numpy as np
import pytest

from insmix_fast.metrics import aji, aji_plus, dice, evaluate, pq

H = W = 1000
N = 800


def discs(centers, radii, ids, shape=(H, W)):
    """Paint discs (later ones on top) with plain numpy, one bounding box each."""
    lab = np.zeros(shape, np.int32)
    for (cy, cx), r, i in zip(centers, radii, ids):
        r0, r1 = max(int(cy - r), 0), min(int(cy + r) + 2, shape[0])
        c0, c1 = max(int(cx - r), 0), min(int(cx + r) + 2, shape[1])
        yy, xx = np.ogrid[r0:r1, c0:c1]
        m = (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r
        lab[r0:r1, c0:c1][m] = i
    return lab


@pytest.fixture(scope="module")
def maps():
    rng = np.random.default_rng(0)
    centers = rng.uniform(0, H, (N, 2))
    radii = rng.uniform(6, 16, N)
    true = discs(centers, radii, np.arange(1, N + 1))
    keep = rng.random(N) > 0.08  # 8 % missed
    n_fp = 60
    p_centers = np.concatenate([centers[keep] + rng.normal(0, 2.0, (keep.sum(), 2)), rng.uniform(0, H, (n_fp, 2))])
    p_radii = np.concatenate([radii[keep] * rng.uniform(0.8, 1.2, keep.sum()), rng.uniform(5, 12, n_fp)])
    p_ids = rng.permutation(np.arange(1, p_radii.size + 1)) * 3  # non-contiguous, scrambled
    pred = discs(p_centers, p_radii, p_ids)
    return true, pred


def test_bench_evaluate(benchmark, maps):
    true, pred = maps
    res = benchmark(evaluate, true, pred)
    assert 0.5 < res["aji"] < 1.0 and res["tp"] > 500


@pytest.mark.parametrize("fn", [dice, aji, aji_plus, pq], ids=lambda f: f.__name__)
def test_bench_single(benchmark, maps, fn):
    true, pred = maps
    benchmark(fn, true, pred)


def test_bench_pq_hungarian(benchmark, maps):
    true, pred = maps
    benchmark(pq, true, pred, 0.3)
