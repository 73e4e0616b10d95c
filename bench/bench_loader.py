"""InsMixLoader throughput (issue 6): crops/s end to end, and loader wait per training step.

Run: ``python -m pytest bench/bench_loader.py --benchmark-only``

* ``test_loader_throughput`` — one epoch of 256×256 crops (batch 16) through
  :class:`~insmix_fast.InsMixLoader`, per backend (``torch`` with 2 workers, ``dali``),
  device (CUDA skipped when absent) and stage mix: traditional augmentation only,
  + InsMix, + InsMix + smooth-GAN blend. ``extra_info.crops_per_s`` is the figure.
* ``test_plain_dataloader_baseline`` — a plain ``torch.utils.data.DataLoader`` with 2
  workers doing the same CPU work as the first mix (random crop + the same
  :class:`~insmix_fast.augment.TraditionalAugment` + normalisation), in the same run.
* ``test_loader_wait_fraction`` — a ResUNet-34 training step fed by the loader:
  ``extra_info.wait_fraction`` = time blocked in ``next(loader)`` / step time.

The generator is untrained (the cost of a blend does not depend on its weights); on
the CPU it is the light width-16 variant and the segmenter a width-16 ResUNet-34
(the full-size networks take tens of seconds per batch on 2 cores); on CUDA both are
full size (48 and 64). Worker start-up is excluded (one warm-up epoch).
"""

from __future__ import annotations

import time

import numpy as np
import pytest
import torch

from insmix_fast import InstanceBank
from insmix_fast.augment import TraditionalAugment
from insmix_fast.data import SyntheticNuclei
from insmix_fast.loader import InsMixLoader, dali_available
from insmix_fast.loader.stages import IMAGENET_MEAN, IMAGENET_STD

CROP = 256
BATCH = 16
TILES = 32  # one epoch = 2 batches of 16 at 256 from 320×320 tiles
CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU")
DALI = pytest.mark.skipif(not dali_available(), reason="NVIDIA DALI is not installed")
DEVICES = ["cpu", pytest.param("cuda", marks=CUDA)]
BACKENDS = ["torch", pytest.param("dali", marks=DALI)]


@pytest.fixture(scope="module")
def source():
    # Materialised once: the loader is measured, not the synthetic H&E generator (≈ 30 ms a tile
    # on these CPUs), as with a user's folder data set already in the page cache.
    ds = SyntheticNuclei(seed=2, size=320, length=TILES)
    return [ds[i] for i in range(len(ds))]


@pytest.fixture(scope="module")
def bank(source):
    return InstanceBank.from_samples(source, progress=False)


def _blender(device):
    from insmix_fast.gan import Blender, Generator

    torch.manual_seed(0)
    return Blender(Generator(width=48 if device == "cuda" else 16), device=device)


def _epoch(loader, device):
    n = 0
    for images, labels in loader:
        n += images.shape[0]
    if device == "cuda":
        torch.cuda.synchronize()
    return n


@pytest.mark.parametrize("mix", ["augment", "insmix", "insmix+gan"])
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("device", DEVICES)
def test_loader_throughput(benchmark, source, bank, device, backend, mix):
    loader = InsMixLoader(source, bank=bank, batch_size=BATCH, crop=CROP, device=device, backend=backend,
                          insmix=mix != "augment", blender=_blender(device) if mix.endswith("gan") else None,
                          num_workers=2, prefetch=2, seed=0)
    with loader:
        rounds = 10 if device == "cuda" else 1 if mix.endswith("gan") else 3  # a CPU blend epoch takes ~20 s
        n = benchmark.pedantic(_epoch, args=(loader, device), rounds=rounds, iterations=1, warmup_rounds=1)
    benchmark.extra_info.update(device=torch.cuda.get_device_name() if device == "cuda" else "cpu",
                                backend=backend, mix=mix, crop=CROP, batch=BATCH, workers=2,
                                crops_per_s=n / benchmark.stats.stats.mean)
    assert n == TILES


class _PlainAug(torch.utils.data.Dataset):
    """Random crop + TraditionalAugment per sample: what a user would write without the loader."""

    def __init__(self, source):
        self.source, self.aug = source, TraditionalAugment()

    def __len__(self):
        return len(self.source)

    def __getitem__(self, i):
        image, labels = self.source[i]
        rng = np.random.default_rng(i)
        y, x = (int(rng.integers(0, s - CROP + 1)) for s in labels.shape)
        image, labels = self.aug(image[y:y + CROP, x:x + CROP], labels[y:y + CROP, x:x + CROP], seed=0, index=i)
        return torch.from_numpy(image), torch.from_numpy(labels.astype(np.int64))


def test_plain_dataloader_baseline(benchmark, source):
    dl = torch.utils.data.DataLoader(_PlainAug(source), batch_size=BATCH, shuffle=True, num_workers=2,
                                     persistent_workers=True, prefetch_factor=2)
    mean = torch.tensor([255 * m for m in IMAGENET_MEAN]).view(1, 3, 1, 1)
    inv = torch.tensor([1 / (255 * s) for s in IMAGENET_STD]).view(1, 3, 1, 1)

    def epoch():
        n = 0
        for images, labels in dl:
            x = (images.permute(0, 3, 1, 2).float() - mean) * inv
            n += x.shape[0]
        return n

    n = benchmark.pedantic(epoch, rounds=3, iterations=1, warmup_rounds=1)
    benchmark.extra_info.update(device="cpu", backend="plain DataLoader", mix="augment", crop=CROP, batch=BATCH,
                                workers=2, crops_per_s=n / benchmark.stats.stats.mean)
    assert n == TILES


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("device", DEVICES)
def test_loader_wait_fraction(benchmark, source, bank, device, backend):
    from insmix_fast.experiments.model import ResUNet34

    torch.manual_seed(0)
    model = ResUNet34(width=64 if device == "cuda" else 16).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    loader = InsMixLoader(source, bank=bank, batch_size=BATCH, crop=CROP, device=device, backend=backend,
                          num_workers=2, prefetch=2, seed=0)
    totals = {"wait": 0.0, "step": 0.0}

    def train_epoch():
        t = time.perf_counter()
        it = iter(loader)
        while True:
            t0 = time.perf_counter()
            try:
                images, labels = next(it)
            except StopIteration:
                break
            if device == "cuda":
                torch.cuda.synchronize()
            totals["wait"] += time.perf_counter() - t0
            loss = torch.nn.functional.cross_entropy(model(images), (labels > 0).long())
            opt.zero_grad()
            loss.backward()
            opt.step()
            if device == "cuda":
                torch.cuda.synchronize()
        totals["step"] += time.perf_counter() - t

    with loader:
        train_epoch()  # warm-up: worker start-up, first compile
        totals.update(wait=0.0, step=0.0)
        benchmark.pedantic(train_epoch, rounds=2 if device == "cpu" else 5, iterations=1)
    frac = totals["wait"] / totals["step"]
    benchmark.extra_info.update(device=torch.cuda.get_device_name() if device == "cuda" else "cpu",
                                backend=backend, crop=CROP, batch=BATCH, workers=2, wait_fraction=frac,
                                model=f"ResUNet34(width={64 if device == 'cuda' else 16})")
    assert 0.0 <= frac < 1.0
