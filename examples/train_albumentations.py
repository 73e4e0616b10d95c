#!/usr/bin/env python
"""Train a small nuclei segmenter with an albumentations pipeline that includes InsMix.

The usual pathology recipe — a ``Dataset`` whose ``__getitem__`` runs an ``A.Compose`` —
with ``insmix_fast.transforms.albumentations.InsMix`` as one more transform: crop and
geometric transforms first, InsMix on the crop, colour and blur, then ``Normalize``
(InsMix works on uint8 RGB or [0, 1] floats, so it goes before normalisation).
Synthetic H&E tiles by default; ``--data`` takes a MoNuSeg folder or images/+labels/.

    pip install "insmix-fast[transforms]"
    python examples/train_albumentations.py                  # ~1 min on 2 CPU cores
    python examples/train_albumentations.py --data /data/MoNuSeg --crop 256 --steps 5000 \\
        --device cuda --workers 4 --width 32

Seeding: the ``Compose`` gets ``seed=--seed``; each DataLoader worker reseeds its copy from
``torch.initial_seed()`` (distinct per worker and per epoch, and reproducible from
``torch.manual_seed``) — without that every worker would repeat the same draws.
The model, targets and loss are those of ``examples/train_segmenter.py``.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from train_segmenter import loss_fn, targets  # noqa: E402  (same targets and loss as the InsMixLoader example)

from insmix_fast.bank import InstanceBank  # noqa: E402
from insmix_fast.config import InsMixConfig  # noqa: E402
from insmix_fast.data import open_dataset  # noqa: E402
from insmix_fast.data.synthetic import SyntheticNuclei  # noqa: E402
from insmix_fast.experiments.model import ResUNet34  # noqa: E402
from insmix_fast.transforms.albumentations import InsMix  # noqa: E402


def pipeline(bank: InstanceBank, crop: int, insmix_p: float, seed: int):
    import albumentations as A

    return A.Compose([
        A.RandomCrop(crop, crop),
        A.HorizontalFlip(p=0.5),
        A.VerticalFlip(p=0.5),
        A.RandomRotate90(p=0.5),
        InsMix(bank, InsMixConfig(), p=insmix_p),   # on the uint8 crop, after the geometric transforms
        A.ColorJitter(brightness=0.1, contrast=0.1, saturation=0.1, hue=0.02, p=0.5),
        A.GaussianBlur(blur_limit=(3, 5), p=0.2),
        A.Normalize(),                              # ImageNet mean/std → float32
    ], seed=seed)


class AugmentedTiles(torch.utils.data.Dataset):
    """``(image, labels)`` samples through an albumentations pipeline → CHW float32, HW int64."""

    def __init__(self, source, transform):
        self.source, self.transform = source, transform

    def __len__(self):
        return len(self.source)

    def __getitem__(self, i):
        image, labels = self.source[i]
        out = self.transform(image=image, mask=labels)
        return torch.from_numpy(out["image"]).permute(2, 0, 1), torch.from_numpy(out["mask"].astype(np.int64))


def reseed_worker(_worker_id: int) -> None:
    """Each worker's copy of the pipeline draws its own albumentations (hence InsMix) seeds."""
    info = torch.utils.data.get_worker_info()
    info.dataset.transform.set_random_seed(torch.initial_seed() % 2**32)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default="synthetic", help="'synthetic' (default), a MoNuSeg folder or images/+labels/")
    ap.add_argument("--steps", type=int, default=40, help="training steps (default 40)")
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--crop", type=int, default=96)
    ap.add_argument("--width", type=int, default=8, help="ResUNet-34 base width (64 = the paper's)")
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--insmix-p", type=float, default=0.5, help="probability that a crop gets InsMix")
    ap.add_argument("--workers", type=int, default=0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--synthetic-tiles", type=int, default=32, help="tiles of the synthetic data set")
    ap.add_argument("--log-every", type=int, default=5)
    args = ap.parse_args(argv)

    torch.manual_seed(args.seed)
    if args.data == "synthetic":
        source = SyntheticNuclei(seed=args.seed, size=max(args.crop, 128), length=args.synthetic_tiles)
    else:
        source = open_dataset(args.data)
    bank = InstanceBank.from_samples(source)   # every whole nucleus of the training tiles
    data = AugmentedTiles(source, pipeline(bank, args.crop, args.insmix_p, args.seed))
    loader = torch.utils.data.DataLoader(data, batch_size=args.batch_size, shuffle=True, drop_last=True,
                                         num_workers=args.workers, worker_init_fn=reseed_worker,
                                         persistent_workers=args.workers > 0)
    model = ResUNet34(width=args.width).to(args.device)
    opt = torch.optim.Adam(model.parameters(), lr=args.lr, weight_decay=1e-4)
    print(f"{len(source)} tiles, bank of {len(bank)} nuclei, {len(loader)} batches per epoch, {args.steps} steps")

    step, running, t0 = 0, None, time.perf_counter()
    while step < args.steps:
        for images, labels in loader:
            images, labels = images.to(args.device), labels.to(args.device)
            model.train()
            loss = loss_fn(model(images), targets(labels))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            step += 1
            running = loss.item() if running is None else 0.9 * running + 0.1 * loss.item()
            if step % args.log_every == 0 or step == args.steps:
                el = time.perf_counter() - t0
                print(f"step {step:5d}  loss {loss.item():.4f}  (avg {running:.4f})  "
                      f"{step * args.batch_size / el:.1f} crops/s", flush=True)
            if step >= args.steps:
                break
    return running


if __name__ == "__main__":
    main()
