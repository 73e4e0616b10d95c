#!/usr/bin/env python
"""Train a small nuclei segmenter with InsMixLoader.

Synthetic H&E tiles by default; give a MoNuSeg folder (or an images/+labels/ folder)
with --data. The model predicts background / interior / boundary (the usual
3-class target for instance segmentation); loss = weighted cross-entropy + Dice.

    python examples/train_segmenter.py                      # ~1 min on 2 CPU cores
    python examples/train_segmenter.py --data /data/MoNuSeg --crop 256 --steps 5000 --device cuda \\
        --blender blender.pt --batch-size 16 --workers 4
    torchrun --nproc-per-node 2 examples/train_segmenter.py --device cuda   # DDP: each rank its shard

--checkpoint FILE saves model, optimiser and loader state every --save-every steps and
resumes from FILE if it exists (mid-epoch: the loader continues with the next batch).
"""

from __future__ import annotations

import argparse
import logging
import os
import time

import torch
import torch.nn.functional as F

from insmix_fast import InsMixLoader
from insmix_fast.experiments.model import ResUNet34


def targets(labels: torch.Tensor, boundary_width: int = 2) -> torch.Tensor:
    """N×H×W instance ids → N×H×W classes 0 bg, 1 interior, 2 boundary (on the labels' device)."""
    p = F.pad(labels[:, None].float(), (1, 1, 1, 1), mode="replicate")[:, 0]
    c = p[:, 1:-1, 1:-1]
    edge = (c != p[:, :-2, 1:-1]) | (c != p[:, 2:, 1:-1]) | (c != p[:, 1:-1, :-2]) | (c != p[:, 1:-1, 2:])
    fg = labels > 0
    bnd = edge & fg
    if boundary_width > 1:
        k = 2 * (boundary_width - 1) + 1
        bnd = (F.max_pool2d(bnd[:, None].float(), k, stride=1, padding=k // 2)[:, 0] > 0) & fg
    out = fg.long()
    out[bnd] = 2
    return out


def loss_fn(logits, target, boundary_weight=2.0):
    w = torch.tensor([1.0, 1.0, boundary_weight], device=logits.device)
    ce = F.cross_entropy(logits, target, weight=w)
    fg_p = 1 - logits.softmax(1)[:, 0]
    fg_t = (target > 0).float()
    dice = 1 - (2 * (fg_p * fg_t).sum() + 1) / (fg_p.sum() + fg_t.sum() + 1)
    return ce + dice


def save_checkpoint(path: str, state: dict) -> None:
    """Write atomically: a temporary file in the same folder, then os.replace."""
    tmp = f"{path}.tmp{os.getpid()}"
    torch.save(state, tmp)
    os.replace(tmp, path)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default="synthetic", help="'synthetic' (default), a MoNuSeg folder or images/+labels/")
    ap.add_argument("--steps", type=int, default=40, help="training steps (default 40)")
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--crop", type=int, default=96)
    ap.add_argument("--width", type=int, default=8, help="ResUNet-34 base width (64 = the paper's)")
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--backend", default="auto", choices=["auto", "dali", "torch"])
    ap.add_argument("--augment-on", default="auto", choices=["auto", "workers", "device"],
                    help="torch backend: augment in the workers or on --device (default: device on CUDA)")
    ap.add_argument("--dali-ops", default="auto", choices=["auto", "kernels", "operators"],
                    help="DALI backend: the package's kernels or DALI's operators (default: kernels on CPU)")
    ap.add_argument("--blender", default=None, help="exported smooth-GAN blender (.pt/.pt2)")
    ap.add_argument("--no-insmix", action="store_true", help="traditional augmentation only")
    ap.add_argument("--insmix-p", type=float, default=1.0, help="probability that a sample gets InsMix")
    ap.add_argument("--workers", type=int, default=0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--synthetic-tiles", type=int, default=32, help="tiles of the synthetic data set")
    ap.add_argument("--log-every", type=int, default=5)
    ap.add_argument("--checkpoint", default=None)
    ap.add_argument("--save-every", type=int, default=20)
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    distributed = "RANK" in os.environ and "WORLD_SIZE" in os.environ and int(os.environ["WORLD_SIZE"]) > 1
    if distributed:
        torch.distributed.init_process_group("nccl" if args.device.startswith("cuda") else "gloo")
        if args.device == "cuda":
            args.device = f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}"
    rank = torch.distributed.get_rank() if distributed else 0

    source = args.data
    if args.data == "synthetic":
        from insmix_fast.data import SyntheticNuclei

        source = SyntheticNuclei(seed=args.seed, size=max(args.crop, 128), length=args.synthetic_tiles)
    torch.manual_seed(args.seed)
    loader = InsMixLoader(source, batch_size=args.batch_size, crop=args.crop, device=args.device,
                          backend=args.backend, blender=args.blender,
                          insmix=False if args.no_insmix else args.insmix_p, seed=args.seed,
                          num_workers=args.workers, drop_last=True, augment_on=args.augment_on,
                          dali_ops=args.dali_ops)
    model = ResUNet34(width=args.width).to(args.device)
    if distributed:
        model = torch.nn.parallel.DistributedDataParallel(model)
    opt = torch.optim.Adam(model.parameters(), lr=args.lr, weight_decay=1e-4)
    step = 0
    if args.checkpoint and os.path.exists(args.checkpoint):
        ck = torch.load(args.checkpoint, map_location=args.device, weights_only=False)
        model.load_state_dict(ck["model"])
        opt.load_state_dict(ck["optimizer"])
        loader.load_state_dict(ck["loader"])
        step = ck["step"]
        print(f"resumed from {args.checkpoint}: step {step}, epoch {loader.epoch}")
    if rank == 0:
        print(f"{loader!r}: {len(loader)} batches per epoch, {args.steps} steps")

    t0, wait, t_step = time.perf_counter(), 0.0, time.perf_counter()
    running = None
    sync = torch.cuda.synchronize if str(args.device).startswith("cuda") else (lambda: None)
    with loader:
        while step < args.steps:
            for images, labels in loader:
                sync()  # so that "loader wait" is the time the step really waited for its batch
                wait += time.perf_counter() - t_step
                model.train()
                loss = loss_fn(model(images), targets(labels))
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                step += 1
                if rank == 0 and (step % args.log_every == 0 or step == args.steps):
                    value = loss.item()  # the only host sync of a step, and only when logging
                    running = value if running is None else 0.8 * running + 0.2 * value
                    el = time.perf_counter() - t0
                    print(f"step {step:5d}  epoch {loader.epoch}  loss {value:.4f}  (avg {running:.4f})  "
                          f"{step * args.batch_size / el:.1f} crops/s  loader wait {100 * wait / el:.0f}%", flush=True)
                if args.checkpoint and rank == 0 and step % args.save_every == 0:
                    save_checkpoint(args.checkpoint, {"model": model.state_dict(), "optimizer": opt.state_dict(),
                                                      "loader": loader.state_dict(), "step": step})
                sync()
                t_step = time.perf_counter()
                if step >= args.steps:
                    break
    if distributed:
        torch.distributed.destroy_process_group()
    return running


if __name__ == "__main__":
    main()
