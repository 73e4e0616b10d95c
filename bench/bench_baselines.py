"""Benchmark of the mix baselines (insmix_fast.baselines) and the traditional
augmentation on synthetic 256×256 tiles: one pair, and a batch of 64.

Run: ``python -m pytest bench/bench_baselines.py --benchmark-only``
(the file is not matched by the test collection pattern; name it explicitly).
"""

from __future__ import annotations

import numpy as np
import pytest

from insmix_fast import baselines as B
from insmix_fast.augment import TraditionalAugment
from insmix_fast.data import SyntheticNuclei

POLICIES = [B.MixUp(), B.CutOut(), B.CutMix(), B.CowOut(), B.CowMix(), B.CopyPaste()]


@pytest.fixture(scope="module")
def batch():
    images, labels = SyntheticNuclei(seed=0, size=256, length=64).as_arrays()
    return images, labels


@pytest.mark.parametrize("pol", POLICIES, ids=lambda p: p.name)
def test_pair(benchmark, batch, pol):
    images, labels = batch
    pol(images[0], labels[0], images[1], labels[1], seed=0)  # warm-up (Numba cache)
    counter = iter(range(10**9))
    r = benchmark(lambda: pol(images[0], labels[0], images[1], labels[1], seed=0, index=next(counter)))
    assert r.labels.shape == (256, 256)


@pytest.mark.parametrize("pol", POLICIES, ids=lambda p: p.name)
def test_batch64(benchmark, batch, pol):
    images, labels = batch
    counter = iter(range(10**9))
    r = benchmark.pedantic(lambda: pol.batch(images, labels, seed=next(counter)), rounds=5, iterations=1,
                           warmup_rounds=1)
    assert r.labels.shape == (64, 256, 256)


def test_traditional_augment_batch64(benchmark, batch):
    images, labels = batch
    aug = TraditionalAugment()
    counter = iter(range(10**9))
    out = benchmark.pedantic(lambda: aug.batch(images, labels, seed=next(counter)), rounds=5, iterations=1,
                             warmup_rounds=1)
    assert out[1].shape == (64, 256, 256)
