"""Per-sample overhead of the drop-in adapters (issue 16) over the functional call.

Run: ``NUMBA_NUM_THREADS=1 python -m pytest bench/bench_transforms.py --benchmark-only``

Each round runs the functional call and the adapter on the same crop (256×256, bank of
≥ 20k nuclei), in alternating order, timing each with ``perf_counter``; 512 crops per
case (32 batches of 16 for the batch op). ``extra_info`` holds the medians and minima of
both and the overhead ``adapter / functional − 1`` from each (target ≤ 10 %), and the
per-round difference ``adapter − functional`` (same crop and draw; ``overhead_paired_pct`` is it
over the functional median; the medians of the rounds where either side went first, averaged, as
the second call of a round finds the crop and the drawn templates in cache); for context,
the median cost of a flip of the same library on the same data (``hflip`` / ``randflipd``):

* ``albumentations-transform`` — ``InsMix(...)(image=, mask=)`` vs ``insmix(image, labels)``;
* ``albumentations-compose`` — the same inside ``A.Compose([InsMix])`` (adds Compose's own
  per-call checks, which any albumentations transform pays);
* ``monai-metatensor`` / ``monai-numpy`` — ``InsMixd`` on a channel-first dict (MetaTensor
  with metadata, or numpy) vs ``insmix`` on the channel-last arrays (the adapter writes InsMix
  in place into a channel-first copy, and re-wraps MetaTensors with their metadata);
* ``batch-uint8`` / ``batch-float`` — ``InsMixBatch`` on N×3×H×W (int64 labels) vs
  ``insmix_batch`` on N×H×W×3 numpy (float: the exact float path, range check included);
  uint8 also times (not interleaved) ``insmix_batch`` on int64 labels cast back to int64, what
  the functional call costs a caller whose labels are int64.
"""

from __future__ import annotations

import time

import numpy as np
import pytest
import torch

from insmix_fast.config import InsMixConfig
from insmix_fast.core import insmix, insmix_batch

CFG = InsMixConfig()
CROPS = 512
BATCH = 16


def _reference(benchmark, name: str, fn, rounds: int = CROPS):
    """Median per-call time of a cheap transform of the same library, for context."""
    fn(0)
    t = []
    for r in range(rounds):
        a = time.perf_counter()
        fn(r)
        t.append(time.perf_counter() - a)
    benchmark.extra_info[f"{name}_median_ms"] = round(1e3 * float(np.median(t)), 4)


def _interleaved(benchmark, functional, adapter, rounds: int, per_round: int = 1, reset=None, same=None):
    """Run both ``rounds`` times, alternating which goes first; record per-sample times.
    ``reset()`` rewinds the adapter's generator after the warm-up, so round ``r`` of both
    sides uses the same draw; ``same(functional_out, adapter_out)`` checks round 0."""
    times = {"functional": [], "adapter": []}
    state = {"r": 0}
    first = {}

    def one_round():
        r = state["r"]
        state["r"] += 1
        pair = (("functional", functional), ("adapter", adapter))
        for name, fn in (pair if r % 2 == 0 else pair[::-1]):
            t = time.perf_counter()
            out = fn(r)
            times[name].append((time.perf_counter() - t) / per_round)
            if r == 0:
                first[name] = out

    functional(0), adapter(0)  # compile / warm caches
    if reset is not None:
        reset()
    benchmark.pedantic(one_round, rounds=rounds, iterations=1)
    if same is not None:
        same(first["functional"], first["adapter"])
    f, a = np.array(times["functional"]), np.array(times["adapter"])
    # Same round, same crop and draw: the second call of a round finds the crop and the drawn
    # templates in cache, so the per-round difference has two modes (adapter first / second);
    # their medians averaged cancel that and the load swings between rounds.
    d = a - f
    paired = (np.median(d[0::2]) + np.median(d[1::2])) / 2  # even rounds: functional first
    benchmark.extra_info.update(
        adapter_minus_functional_functional_first_us=round(1e6 * float(np.median(d[0::2])), 2),
        adapter_minus_functional_adapter_first_us=round(1e6 * float(np.median(d[1::2])), 2),
        adapter_minus_functional_median_us=round(1e6 * float(paired), 2),
        overhead_paired_pct=round(100 * float(paired) / float(np.median(f)), 2),
        samples=rounds * per_round, numba_threads=__import__("numba").get_num_threads(),
        functional_median_ms=round(1e3 * float(np.median(f)), 4), adapter_median_ms=round(1e3 * float(np.median(a)), 4),
        functional_min_ms=round(1e3 * float(f.min()), 4), adapter_min_ms=round(1e3 * float(a.min()), 4),
        overhead_median_pct=round(100 * (float(np.median(a)) / float(np.median(f)) - 1), 2),
        overhead_min_pct=round(100 * (float(a.min()) / float(f.min()) - 1), 2))


@pytest.fixture(scope="module")
def crops(crops64):
    images, labels = crops64
    return images, labels.astype(np.int32)


@pytest.mark.parametrize("where", ["transform", "compose"])
def test_albumentations_overhead(benchmark, bank20k, crops, where):
    A = pytest.importorskip("albumentations", minversion="2.0")
    from insmix_fast.transforms.albumentations import InsMix

    images, labels = crops
    t = InsMix(bank20k, CFG, p=1.0)
    call = t if where == "transform" else A.Compose([t], seed=0)
    twin = InsMix(bank20k, CFG, p=1.0)
    twin.set_random_seed(0)
    seeds = [twin.get_params()["insmix_seed"] for _ in range(CROPS)]

    def adapter(r):
        k = r % len(images)
        return call(image=images[k], mask=labels[k])

    def functional(r):
        k = r % len(images)
        return insmix(images[k], labels[k], bank20k, CFG, seed=seeds[r])

    def same(f, a):
        assert np.array_equal(f.image, a["image"]) and np.array_equal(f.labels, a["mask"])

    _interleaved(benchmark, functional, adapter, CROPS, reset=lambda: call.set_random_seed(0), same=same)
    flip = A.HorizontalFlip(p=1.0)
    flip = flip if where == "transform" else A.Compose([flip], seed=0)
    _reference(benchmark, "hflip", lambda r: flip(image=images[r % len(images)], mask=labels[r % len(images)]))
    benchmark.extra_info["case"] = f"albumentations-{where}"


@pytest.mark.parametrize("kind", ["metatensor", "numpy"])
def test_monai_overhead(benchmark, bank20k, crops, kind):
    pytest.importorskip("monai")
    from monai.data import MetaTensor

    from insmix_fast.transforms.monai import InsMixd

    images, labels = crops
    if kind == "metatensor":
        samples = [{"image": MetaTensor(torch.from_numpy(im).permute(2, 0, 1).contiguous(),
                                        meta={"filename_or_obj": f"{k}.png"}),
                    "label": MetaTensor(torch.from_numpy(lab)[None], meta={"filename_or_obj": f"{k}.png"})}
                   for k, (im, lab) in enumerate(zip(images, labels))]
    else:
        samples = [{"image": np.ascontiguousarray(im.transpose(2, 0, 1)), "label": lab[None]}
                   for im, lab in zip(images, labels)]
    t = InsMixd(bank=bank20k, config=CFG, prob=1.0).set_random_state(seed=0)
    twin = InsMixd(bank=bank20k, config=CFG, prob=1.0).set_random_state(seed=0)
    seeds = []
    for _ in range(CROPS):
        twin.randomize()
        seeds.append(twin.insmix_seed)

    def adapter(r):
        return t(samples[r % len(samples)])

    def functional(r):
        k = r % len(images)
        return insmix(images[k], labels[k], bank20k, CFG, seed=seeds[r])

    def same(f, a):
        assert np.array_equal(f.image, np.asarray(a["image"]).transpose(1, 2, 0))
        assert np.array_equal(f.labels, np.asarray(a["label"])[0])

    _interleaved(benchmark, functional, adapter, CROPS, reset=lambda: t.set_random_state(seed=0), same=same)
    from monai.transforms import RandFlipd

    flip = RandFlipd(keys=("image", "label"), prob=1.0, spatial_axis=1)
    _reference(benchmark, "randflipd", lambda r: flip(samples[r % len(samples)]))
    benchmark.extra_info["case"] = f"monai-{kind}"


@pytest.mark.parametrize("dtype", ["uint8", "float"])
def test_batch_overhead(benchmark, bank20k, crops, dtype):
    from insmix_fast.transforms.batch import InsMixBatch

    images, labels = crops
    n_batches = len(images) // BATCH
    x = torch.from_numpy(images).permute(0, 3, 1, 2).contiguous()
    if dtype == "float":
        x = x.float() / 255
    y = torch.from_numpy(labels).long()
    op = InsMixBatch(bank20k, CFG, p=1.0, seed=0)

    def batch(r):
        b = r % n_batches
        return slice(b * BATCH, (b + 1) * BATCH), np.arange(r * BATCH, (r + 1) * BATCH)

    def adapter(r):
        sl, idx = batch(r)
        return op(x[sl], y[sl], indices=idx)

    def functional(r):
        sl, idx = batch(r)
        return insmix_batch(images[sl], labels[sl], bank20k, CFG, seed=0, indices=idx)

    def same(f, a):
        if dtype == "uint8":
            assert np.array_equal(f.images, a[0].permute(0, 2, 3, 1).numpy())
        assert np.array_equal(f.labels, a[1].numpy())

    _interleaved(benchmark, functional, adapter, CROPS // BATCH, per_round=BATCH, same=same)
    if dtype == "uint8":  # what the functional call costs a caller whose labels are int64 both ways
        wide = labels.astype(np.int64)

        def functional_int64(r):
            sl, idx = batch(r)
            return insmix_batch(images[sl], wide[sl], bank20k, CFG, seed=0, indices=idx).labels.astype(np.int64)

        _reference(benchmark, "functional_int64_labels_per_crop", functional_int64, CROPS // BATCH)
        benchmark.extra_info["functional_int64_labels_per_crop_median_ms"] /= BATCH
    benchmark.extra_info["case"] = f"batch-{dtype}"
