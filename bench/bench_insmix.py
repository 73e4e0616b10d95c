"""Core CPU benchmarks (issue 3): bank build, bank-wide SSD scoring, InsMix per crop and per batch.

Single-core numbers come from tests run with NUMBA_NUM_THREADS=1 in the
environment; ``insmix_batch`` uses all Numba threads.
"""

import numpy as np
import pytest

from insmix_fast import InsMixConfig, InstanceBank, insmix, insmix_batch
from insmix_fast.data import SyntheticNuclei
from insmix_fast.kernels.instances import build_table, tile_stats
from insmix_fast.kernels.ssd import admissible_counts, score_originals
from insmix_fast.kernels.tables import Table


def _originals(crops, n):
    """A table of ``n`` original instances taken from the crops (as a batch would give)."""
    rows = []
    for lab in crops[1]:
        ids, _lut, area, sr, sc, bbox, _ = tile_stats(lab, 20, int(lab.max()), 0)
        rows.append(build_table(lab, ids, area, sr, sc, bbox))
        if sum(len(r[0]) for r in rows) >= n:
            break
    area, anchor, hw, _origin, offset, masks, desc, fits = (np.concatenate([r[j] for r in rows]) for j in range(8))
    sizes = np.concatenate([np.diff(r[4]) for r in rows])
    offset = np.concatenate([[0], np.cumsum(sizes)])
    t = Table(area[:n], anchor[:n], hw[:n], offset[:n + 1], masks, np.zeros(0, np.uint8), desc[:n], fits[:n])
    return t


def test_bank_build_8_tiles_1024(benchmark):
    samples = [SyntheticNuclei(seed=3, size=1024, length=8)[i] for i in range(8)]
    bank = benchmark.pedantic(lambda: InstanceBank.from_samples(samples, progress=False), rounds=3, iterations=1)
    benchmark.extra_info["instances"] = len(bank)


def test_ssd_choice_100_originals_x_bank(benchmark, bank20k, crops64):
    ot = _originals(crops64, 100)
    samples = np.zeros(100, np.int64)
    keys = np.arange(100, dtype=np.int64)
    bt = bank20k.table
    score_originals(ot, bt, 1.0, 0.8, True, 32, np.uint64(0), samples, keys)
    benchmark(score_originals, ot, bt, 1.0, 0.8, True, 32, np.uint64(1), samples, keys)
    benchmark.extra_info["bank"] = len(bank20k)


def test_ssd_exhaustive_counts_100_originals_x_bank(benchmark, bank20k, crops64):
    ot = _originals(crops64, 100)
    bt = bank20k.table
    admissible_counts(ot, bt, 1.0, 0.8)
    counts = benchmark.pedantic(admissible_counts, args=(ot, bt, 1.0, 0.8), rounds=3, iterations=1)
    benchmark.extra_info["mean_admissible"] = float(counts.mean())


@pytest.mark.parametrize("part", ["full", "paste-only", "shuffle-only"])
def test_insmix_one_crop_256(benchmark, bank20k, crops64, part):
    images, labels = crops64
    cfg = {"full": InsMixConfig(), "paste-only": InsMixConfig(background=False),
           "shuffle-only": InsMixConfig(foreground=False)}[part]
    insmix(images[0], labels[0], bank20k, cfg, seed=0)
    state = {"i": 0}

    def one():
        i = state["i"] = (state["i"] + 1) % len(images)
        return insmix(images[i], labels[i], bank20k, cfg, seed=0, index=i)

    benchmark.pedantic(one, rounds=256, iterations=1, warmup_rounds=8)
    benchmark.extra_info["bank"] = len(bank20k)


def test_insmix_batch_64(benchmark, bank20k, crops64):
    images, labels = crops64
    insmix_batch(images, labels, bank20k, seed=0)
    r = benchmark.pedantic(insmix_batch, args=(images, labels, bank20k), kwargs={"seed": 1}, rounds=10, iterations=1)
    benchmark.extra_info["pastes_per_crop"] = float(np.mean([len(p) for p in r.pastes]))


def test_reference_one_crop_256(benchmark, bank20k, crops64):
    """The plain reference of tests/reference.py on the same bank, for comparison."""
    import reference

    images, labels = crops64
    entries = reference.bank_entries(bank20k)
    reference.bank_entries = lambda bank: entries  # precomputed: time only the per-crop work
    cfg = InsMixConfig()
    state = {"i": 0}

    def one():
        i = state["i"] = (state["i"] + 1) % len(images)
        return reference.reference_insmix(images[i], labels[i], bank20k, cfg, 0, i)

    benchmark.pedantic(one, rounds=5, iterations=1)
