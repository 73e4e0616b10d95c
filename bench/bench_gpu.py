"""GPU benchmarks (issue 4), CPU in the same run for comparison.

* ``test_batch_crops_per_s[device-N]`` — InsMix (full: SSD paste + background shuffle)
  over N = 64 / 256 crops of 256×256 with the ≥ 20k-instance bank; the GPU case
  keeps images, labels and bank on the device (no transfer in the timed call) and
  synchronises before the clock stops. ``extra_info["crops_per_s"]``.
* ``test_typed_batch_crops_per_s[device-mode]`` — the same on typed crops (``types`` in,
  ``result.types`` out) with ``template_class`` "any" / "same" / "balanced", typed bank of
  ≈ 8k nuclei (``tests/typed_data.py``, skewed classes), 256 crops.
* ``test_scoring_vs_bank_size[device-kind-size]`` — bank-wide SSD scoring of the
  originals of 8 crops against banks of 1k … 100k instances (sub-sampled or
  replicated from the 20k bank, so the area distribution is the same):
  ``choice`` = the seeded template choice (rejection draws + exact fallback; what
  InsMix runs), ``exhaustive`` = admissible counts over the whole scale range (cost
  ∝ bank size). ``extra_info["ms_per_tile"]``.

GPU cases skip with the reason when no CUDA device is usable.
"""

import numpy as np
import pytest

from insmix_fast import InsMixConfig, InstanceBank, insmix_batch
from insmix_fast.gpu import cuda_available
from insmix_fast.kernels.instances import build_table, gather_segments, tile_stats
from insmix_fast.kernels.ssd import admissible_counts, score_originals
from insmix_fast.kernels.tables import Table

OK, REASON = cuda_available()
SCORING_TILES = 8
BANK_SIZES = [1_000, 5_000, 20_000, 100_000]


DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(not OK, reason=f"needs a CUDA GPU: {REASON}"))]


def _resized(bank: InstanceBank, n: int) -> InstanceBank:
    """A bank of ``n`` rows with the same area distribution: evenly sub-sampled, or each row repeated."""
    if n <= len(bank):
        idx = np.unique(np.linspace(0, len(bank) - 1, n).round().astype(np.int64))
    else:
        idx = np.sort(np.arange(n, dtype=np.int64) % len(bank))
    masks, off = gather_segments(bank.masks, bank.offset, idx, 1)
    pixels, _ = gather_segments(bank.pixels, bank.offset, idx, 3)
    return InstanceBank(area=bank.area[idx], anchor=bank.anchor[idx], hw=bank.hw[idx], offset=off, masks=masks,
                        pixels=pixels, desc=bank.desc[idx], fits=bank.fits[idx], source=bank.source[idx],
                        source_label=bank.source_label[idx], source_origin=bank.source_origin[idx],
                        n_samples=bank.n_samples, min_area=bank.min_area)


@pytest.fixture(scope="module")
def banks(bank20k):
    return {n: (bank20k if n == len(bank20k) else _resized(bank20k, n)) for n in BANK_SIZES}


def _sync():
    from numba import cuda

    cuda.synchronize()


@pytest.mark.parametrize("n", [64, 256])
@pytest.mark.parametrize("device", DEVICES)
def test_batch_crops_per_s(benchmark, bank20k, crops64, device, n):
    _crops_per_s(benchmark, bank20k, crops64, InsMixConfig(), device, n)


def _crops_per_s(benchmark, bank, crops, cfg, device, n):
    """InsMix of ``n`` crops (``crops`` repeated) per second; ``crops`` is ``(images, labels)`` or
    ``(images, labels, types)``."""
    reps = n // len(crops[0])
    arrays = [np.ascontiguousarray(np.concatenate([a] * reps)) for a in crops]
    images, labels = arrays[:2]
    types = arrays[2] if len(arrays) > 2 else None
    idx = np.arange(n, dtype=np.int64)
    if device == "cpu":
        insmix_batch(images[:8], labels[:8], bank, cfg, seed=0, types=None if types is None else types[:8])
        run = lambda: insmix_batch(images, labels, bank, cfg, seed=1, indices=idx, types=types)  # noqa: E731
        rounds = 3
    else:
        from numba import cuda

        di, dl, dbank = cuda.to_device(images), cuda.to_device(labels), bank.to("cuda")
        dt = None if types is None else cuda.to_device(types)
        insmix_batch(di, dl, dbank, cfg, seed=0, indices=idx, device="cuda", types=dt)  # compile + warm up
        _sync()

        def run():
            r = insmix_batch(di, dl, dbank, cfg, seed=1, indices=idx, device="cuda", types=dt)
            _sync()
            return r

        rounds = 20
    benchmark.pedantic(run, rounds=rounds, iterations=1, warmup_rounds=1)
    benchmark.extra_info.update(device=device, crops=n, bank=len(bank), template_class=cfg.template_class,
                                crops_per_s=n / benchmark.stats.stats.mean, gpu=REASON if device == "cuda" else "")


@pytest.fixture(scope="module")
def typed_data():
    from typed_data import TypedTiles

    bank = InstanceBank.from_samples(TypedTiles(seed=1, size=1024, n=12), progress=False)
    return bank, TypedTiles(seed=2, size=256, n=64).arrays()


@pytest.mark.parametrize("mode", ["any", "same", "balanced"])
@pytest.mark.parametrize("device", DEVICES)
def test_typed_batch_crops_per_s(benchmark, typed_data, device, mode):
    bank, crops = typed_data
    _crops_per_s(benchmark, bank, crops, InsMixConfig(template_class=mode), device, 256)


def _originals(labels):
    tables = []
    for lab in labels:
        ids, _l, area, sr, sc, bbox, _ = tile_stats(lab, 20, int(lab.max()), 0)
        tables.append(build_table(lab, ids, area, sr, sc, bbox))
    cat = [np.concatenate([t[j] for t in tables]) for j in range(8)]
    sizes = np.concatenate([np.diff(t[4]) for t in tables])
    offset = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
    samples = np.concatenate([np.full(len(t[0]), b, np.int64) for b, t in enumerate(tables)])
    keys = np.concatenate([np.arange(len(t[0]), dtype=np.int64) for t in tables])
    ot = Table(cat[0], cat[1], cat[2], offset, cat[5], np.zeros(0, np.uint8), cat[6], cat[7])
    return ot, samples, keys


@pytest.mark.parametrize("size", BANK_SIZES)
@pytest.mark.parametrize("kind", ["choice", "exhaustive"])
@pytest.mark.parametrize("device", DEVICES)
def test_scoring_vs_bank_size(benchmark, banks, crops64, device, kind, size):
    bank = banks[size]
    labels = np.ascontiguousarray(crops64[1][:SCORING_TILES])
    cfg = InsMixConfig()
    if device == "cpu":
        ot, samples, keys = _originals(labels)
        bt = bank.table
        if kind == "choice":
            fn = lambda: score_originals(ot, bt, cfg.eps, cfg.rho, True, cfg.max_draws, np.uint64(1),  # noqa: E731
                                         samples, keys)
        else:
            fn = lambda: admissible_counts(ot, bt, cfg.eps, cfg.rho)  # noqa: E731
        n_orig = len(ot.area)
        fn()
        rounds = 5 if kind == "choice" else 2
    else:
        from numba import cuda

        from insmix_fast.gpu.scoring import admissible_counts_cuda, choose_templates_cuda

        dl, dbank = cuda.to_device(labels), bank.to("cuda")
        call = choose_templates_cuda if kind == "choice" else admissible_counts_cuda

        def fn():
            r = call(dl, dbank, cfg)
            _sync()
            return r

        fn()
        n_orig = int(sum(len(np.unique(lab)) - 1 for lab in labels))
        rounds = 20
    benchmark.pedantic(fn, rounds=rounds, iterations=1)
    benchmark.extra_info.update(device=device, kind=kind, bank=len(bank), tiles=SCORING_TILES, originals=n_orig,
                                ms_per_tile=1e3 * benchmark.stats.stats.mean / SCORING_TILES)
