"""smooth-GAN blend throughput (issue 5): crops/s at 256×256, batch 64.

Run: ``python -m pytest bench/bench_gan.py --benchmark-only``
(the file is not matched by the test collection pattern; name it explicitly).

Parametrised over device (CUDA skipped when absent) and generator width (48 =
the official network; 16 = a light variant). The generator is untrained: the
cost of a blend does not depend on the weights. On CPU only a few rounds run
(a batch of 64 at width 48 takes tens of seconds on 2 cores).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from insmix_fast import InsMixConfig, InstanceBank, insmix_batch
from insmix_fast.data import SyntheticNuclei
from insmix_fast.gan import Blender, Generator

BATCH = 64
SIZE = 256
DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA"))]


@pytest.fixture(scope="module")
def pasted():
    data = SyntheticNuclei(seed=0, size=SIZE, length=BATCH)
    images, labels = data.as_arrays()
    bank = InstanceBank.from_samples(data, progress=False)
    res = insmix_batch(images, labels, bank, InsMixConfig(background=False), seed=0)
    pm = np.asarray(res.paste_masks, bool)  # InsMixBatchResult: stacked N×H×W arrays
    return np.asarray(res.images), pm, np.asarray(res.original_masks, bool)


@pytest.mark.parametrize("width", [48, 16])
@pytest.mark.parametrize("device", DEVICES)
def test_blend_batch64(benchmark, pasted, device, width):
    images, pm, om = pasted
    torch.manual_seed(0)
    blender = Blender(Generator(width=width), device=device)
    x = torch.from_numpy(images).to(device).permute(0, 3, 1, 2).float().div_(255)
    p = torch.from_numpy(pm).to(device)
    o = torch.from_numpy(om).to(device)

    def run():
        out = blender.blend(x, p, o)
        if device == "cuda":
            torch.cuda.synchronize()
        return out

    rounds = 2 if device == "cpu" else 20
    out = benchmark.pedantic(run, rounds=rounds, iterations=1, warmup_rounds=1)
    benchmark.extra_info.update(device=str(torch.cuda.get_device_name() if device == "cuda" else "cpu"),
                                batch=BATCH, size=SIZE, width=width, amp=str(blender.amp),
                                torch_threads=torch.get_num_threads(),
                                crops_per_s=BATCH / benchmark.stats.stats.mean)
    assert out.shape == x.shape
    m = p[:, None].expand_as(x)
    assert torch.equal(out[~m], x[~m])
