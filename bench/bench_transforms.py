"""Per-sample overhead of the drop-in adapters (issue 16) over the functional call.

Run: ``NUMBA_NUM_THREADS=1 python -m pytest bench/bench_transforms.py --benchmark-only``

Each round runs the functional call and the adapter on the same crop (256×256, bank of
≥ 20k nuclei) and the same draw, in orders that alternate, timing each with ``perf_counter``;
512 crops per case (32 batches of 16 for the batch op). ``extra_info`` holds each side's median
and minimum, the overhead ``adapter / functional − 1`` from medians and from minima, and the
paired overhead (target ≤ 10 %): the per-round difference ``adapter − functional`` over the
functional median, its median taken separately over the rounds where either side went first and
the two averaged (the second call of a round finds the crop and the drawn templates in cache);
for context, the median cost of a flip of the same library on the same data (``hflip`` /
``randflipd``):

* ``albumentations-transform`` — ``InsMix(...)(image=, mask=)`` vs ``insmix(image, labels)``;
* ``albumentations-compose`` — the same inside ``A.Compose([InsMix])`` (adds Compose's own
  per-call work — preprocess, shape checks, postprocess — which any albumentations transform pays);
* ``albumentations-compose-flip`` — InsMix added to an existing pipeline,
  ``A.Compose([HorizontalFlip, InsMix])``, vs that pipeline without it followed by ``insmix()``;
* ``monai-metatensor`` / ``monai-numpy`` — ``InsMixd`` on a channel-first dict (MetaTensor
  with metadata, or numpy) vs ``insmix`` on the channel-last arrays (the adapter writes InsMix
  in place into a channel-first copy, and re-wraps MetaTensors with their metadata); for
  context (keys ``…_vs_functional_same_dict``) also vs ``insmix()`` wrapped around the same dict
  with MONAI's own conversions (``convert_to_numpy``, a channel-last copy, ``convert_to_dst_type``);
* ``batch-uint8`` / ``batch-float`` — ``InsMixBatch`` on N×3×H×W tensors with int64 labels vs
  (the target's baseline, ``functional``) the least code a user writes to run ``insmix_batch`` on
  the same tensors — a channel-last uint8 copy (float: quantised), the int64 labels as they are,
  results seen as tensors without further copies — and (context, keys ``…_vs_functional_nhwc_int32``)
  ``insmix_batch`` on the N×H×W×3 numpy crops with int32 labels, which no tensor pipeline holds
  (uint8 also times the op given int32 labels against it: keys ``…_adapter_int32_vs_…``).
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


def _interleaved(benchmark, sides: dict, rounds: int, per_round: int = 1, reset=None, same=None,
                 pairs=(("adapter", "functional"),)):
    """Run every side of ``sides`` (name -> ``fn(round)``) once a round, ``rounds`` times, in
    orders that rotate (and reverse every other cycle) so each side runs before and after each
    other equally often; record per-sample times. ``reset()`` rewinds the adapters' generators
    after the warm-up, so round ``r`` of every side uses the same draw; ``same(outputs)`` checks
    round 0 (name -> output). For each ``(adapter, baseline)`` of ``pairs`` the record has the
    overhead from medians, from minima, and paired (below; the first pair under the plain names,
    the others with ``_vs_<baseline>`` added)."""
    names = list(sides)
    times = {name: [] for name in names}
    before = {name: [] for name in names}  # per round: the names that ran before this one
    state = {"r": 0}
    first = {}

    def order(r: int) -> list[str]:
        k = len(names)
        rot = names[r % k:] + names[:r % k]
        return rot if (r // k) % 2 == 0 else rot[::-1]

    def one_round():
        r = state["r"]
        state["r"] += 1
        seen = []
        for name in order(r):
            fn = sides[name]
            t = time.perf_counter()
            out = fn(r)
            if r == 0:
                first[name] = out
            del out  # freeing the outputs is this side's cost, not the next side's
            times[name].append((time.perf_counter() - t) / per_round)
            before[name].append(set(seen))
            seen.append(name)

    for fn in sides.values():  # compile / warm caches
        fn(0)
    if reset is not None:
        reset()
    benchmark.pedantic(one_round, rounds=rounds, iterations=1)
    if same is not None:
        same(first)
    t = {name: np.array(v) for name, v in times.items()}
    info = dict(samples=rounds * per_round, numba_threads=__import__("numba").get_num_threads(),
                torch_threads=torch.get_num_threads())
    for name in names:
        info[f"{name}_median_ms"] = round(1e3 * float(np.median(t[name])), 4)
        info[f"{name}_min_ms"] = round(1e3 * float(t[name].min()), 4)
    for k, (a, f) in enumerate(pairs):
        # Same round, same crop and draw: the second call of a round finds the crop and the drawn
        # templates in cache, so the per-round difference has two modes (adapter first / second);
        # their medians averaged cancel that and the load swings between rounds.
        d = t[a] - t[f]
        a_first = np.array([a in b for b in before[f]])
        paired = (np.median(d[~a_first]) + np.median(d[a_first])) / 2
        sfx = "" if k == 0 else f"_vs_{f}" if a == "adapter" else f"_{a}_vs_{f}"
        info.update({
            f"adapter_minus_functional_functional_first_us{sfx}": round(1e6 * float(np.median(d[~a_first])), 2),
            f"adapter_minus_functional_adapter_first_us{sfx}": round(1e6 * float(np.median(d[a_first])), 2),
            f"adapter_minus_functional_median_us{sfx}": round(1e6 * float(paired), 2),
            f"overhead_paired_pct{sfx}": round(100 * float(paired) / float(np.median(t[f])), 2),
            f"overhead_median_pct{sfx}": round(100 * (float(np.median(t[a])) / float(np.median(t[f])) - 1), 2),
            f"overhead_min_pct{sfx}": round(100 * (float(t[a].min()) / float(t[f].min()) - 1), 2)})
    benchmark.extra_info.update(info)


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    """torch single-threaded, as the kernels run (``NUMBA_NUM_THREADS=1``) and as torch runs in
    DataLoader workers: the user's torch copies in the baselines and MONAI's flip otherwise
    wait for torch's thread pool on a busy machine (8–16 ms a flip seen on the 2-core VM)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def crops(crops64):
    images, labels = crops64
    return images, labels.astype(np.int32)


@pytest.mark.parametrize("where", ["transform", "compose", "compose-flip"])
def test_albumentations_overhead(benchmark, bank20k, crops, where):
    A = pytest.importorskip("albumentations", minversion="2.0")
    from insmix_fast.transforms.albumentations import InsMix

    images, labels = crops
    t = InsMix(bank20k, CFG, p=1.0)
    twin = InsMix(bank20k, CFG, p=1.0)
    twin.set_random_seed(0)
    seeds = [twin.get_params()["insmix_seed"] for _ in range(CROPS)]
    if where == "compose-flip":  # an existing pipeline: InsMix added to it, or insmix() called after it
        call = A.Compose([A.HorizontalFlip(p=1.0), t], seed=0)
        before = A.Compose([A.HorizontalFlip(p=1.0)], seed=0)
    else:
        call = t if where == "transform" else A.Compose([t], seed=0)
        before = None

    def adapter(r):
        k = r % len(images)
        return call(image=images[k], mask=labels[k])

    def functional(r):
        k = r % len(images)
        if before is None:
            return insmix(images[k], labels[k], bank20k, CFG, seed=seeds[r])
        d = before(image=images[k], mask=labels[k])
        return insmix(d["image"], d["mask"], bank20k, CFG, seed=seeds[r])

    def same(out):
        f, a = out["functional"], out["adapter"]
        assert np.array_equal(f.image, a["image"]) and np.array_equal(f.labels, a["mask"])

    _interleaved(benchmark, {"functional": functional, "adapter": adapter}, CROPS,
                 reset=lambda: call.set_random_seed(0), same=same)
    flip = A.HorizontalFlip(p=1.0)
    flip = flip if where == "transform" else A.Compose([flip], seed=0)
    _reference(benchmark, "hflip", lambda r: flip(image=images[r % len(images)], mask=labels[r % len(images)]))
    benchmark.extra_info["case"] = f"albumentations-{where}"


@pytest.mark.parametrize("kind", ["metatensor", "numpy"])
def test_monai_overhead(benchmark, bank20k, crops, kind):
    pytest.importorskip("monai")
    from monai.data import MetaTensor
    from monai.utils import convert_to_dst_type, convert_to_numpy

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

    def functional_same_dict(r):
        """``insmix()`` on this dict, wrapped as MONAI's own transforms convert data: its arrays read
        with ``convert_to_numpy``, a channel-last copy, the results put back channel-first as the
        input's kind (metadata copied) with ``convert_to_dst_type``."""
        d = dict(samples[r % len(samples)])
        img, lab = d["image"], d["label"]
        res = insmix(np.ascontiguousarray(convert_to_numpy(img).transpose(1, 2, 0)), convert_to_numpy(lab)[0],
                     bank20k, CFG, seed=seeds[r])
        d["image"] = convert_to_dst_type(res.image.transpose(2, 0, 1), dst=img)[0]
        d["label"] = convert_to_dst_type(res.labels[None], dst=lab)[0]
        return d

    def same(out):
        f, a = out["functional"], out["adapter"]
        assert np.array_equal(f.image, np.asarray(a["image"]).transpose(1, 2, 0))
        assert np.array_equal(f.labels, np.asarray(a["label"])[0])
        for key in ("image", "label"):
            assert type(out["functional_same_dict"][key]) is type(a[key])
            assert np.array_equal(np.asarray(out["functional_same_dict"][key]), np.asarray(a[key]))

    _interleaved(benchmark, {"functional": functional, "adapter": adapter,
                             "functional_same_dict": functional_same_dict}, CROPS,
                 reset=lambda: t.set_random_state(seed=0), same=same,
                 pairs=(("adapter", "functional"), ("adapter", "functional_same_dict")))
    from monai.transforms import RandFlipd

    flip = RandFlipd(keys=("image", "label"), prob=1.0, spatial_axis=1)
    _reference(benchmark, "randflipd", lambda r: flip(samples[r % len(samples)]))
    benchmark.extra_info["case"] = f"monai-{kind}"


@pytest.mark.parametrize("dtype", ["uint8", "float"])
def test_batch_overhead(benchmark, bank20k, crops, dtype):
    """``InsMixBatch`` on N×3×H×W tensors with int64 labels (torch's default) against the
    functional call a user would write for the same tensors (the target's baseline) and, for
    context, ``insmix_batch`` on the N×H×W×3 numpy crops with int32 labels (the old baseline)."""
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
        """The least a user writes to run ``insmix_batch`` on these tensors: a channel-last uint8
        copy (float: quantised, ``round(x · 255)``), the int64 labels as they are; the results
        seen as tensors without further copies — channel-first views of the channel-last images
        (float: ``/ 255``, which the op does exactly only for pasted pixels) and int32 labels."""
        sl, idx = batch(r)
        xs = x[sl]
        if dtype == "float":
            xs = torch.round(xs * 255).to(torch.uint8)
        res = insmix_batch(xs.permute(0, 2, 3, 1).contiguous().numpy(), y[sl].numpy(), bank20k, CFG, seed=0,
                           indices=idx)
        out = torch.from_numpy(res.images).permute(0, 3, 1, 2)
        return (out if dtype == "uint8" else out.float() / 255), torch.from_numpy(res.labels)

    def functional_nhwc_int32(r):
        sl, idx = batch(r)
        return insmix_batch(images[sl], labels[sl], bank20k, CFG, seed=0, indices=idx)

    y32 = torch.from_numpy(labels)

    def adapter_int32(r):  # the op given int32 labels: the label bytes of the old baseline
        sl, idx = batch(r)
        return op32(x[sl], y32[sl], indices=idx)

    op32 = InsMixBatch(bank20k, CFG, p=1.0, seed=0)

    def same(out):
        a = out["adapter"]
        for f in (out["functional"][1], out["functional_nhwc_int32"].labels):
            assert np.array_equal(np.asarray(f), a[1].numpy())
        if dtype == "uint8":
            assert torch.equal(out["functional"][0], a[0]) and torch.equal(out["adapter_int32"][1], a[1].int())

    sides = {"functional": functional, "adapter": adapter, "functional_nhwc_int32": functional_nhwc_int32}
    pairs = [("adapter", "functional"), ("adapter", "functional_nhwc_int32")]
    if dtype == "uint8":
        sides["adapter_int32"] = adapter_int32
        pairs.append(("adapter_int32", "functional_nhwc_int32"))
    _interleaved(benchmark, sides, CROPS // BATCH, per_round=BATCH, same=same, pairs=pairs)
    benchmark.extra_info["case"] = f"batch-{dtype}"
