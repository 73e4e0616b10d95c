"""``insmix-fast gan …`` sub-commands: ``train`` and ``export``.

The main CLI (:mod:`insmix_fast.cli`) calls :func:`register` on its argparse sub-parsers;
:func:`main` runs the same commands standalone (``python -m insmix_fast.gan.cli train …``)
through :func:`insmix_fast.cliutil.standalone` (same checks, errors and exit codes).

Examples::

    insmix-fast gan train --data synthetic --out ckpt/ --steps 2000 --batch-size 8 --amp
    insmix-fast gan train --data my_tiles/ --out ckpt/ --epochs 50 --resume
    insmix-fast gan export ckpt/ -o blender.pt                   # TorchScript
    insmix-fast gan export ckpt/ -o blender.pt2 --format export  # torch.export program
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .. import cliutil
from ..cliutil import integer, number

__all__ = ["register", "main", "build_parser"]


def _add_train(sub) -> None:
    p = sub.add_parser("train", help="train the smooth-GAN blender",
                       description="Train the smooth-GAN (generator with FSE + PatchGAN, triplet loss) "
                                   "on pasted tiles made by insmix from DATA.")
    p.add_argument("--data", required=True, metavar="DIR|synthetic|synthetic-two-stain",
                   help="tile directory (*.npz with image/labels, images/+labels/, or NAME.png + NAME_label.npy), "
                        "'synthetic' for the built-in synthetic H&E tiles, or 'synthetic-two-stain' for synthetic "
                        "tiles of two stains (templates often come from the other stain)")
    p.add_argument("--out", required=True, metavar="CKPT_DIR", help="output directory for checkpoints and plots")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--steps", type=integer(1), default=None, help="total training steps")
    g.add_argument("--epochs", type=integer(1), default=None,
                   help="total epochs (one epoch = one pass over the tiles)")
    p.add_argument("--batch-size", type=integer(1), default=8)
    p.add_argument("--size", type=integer(32), default=256,
                   help="tile side (multiple of 4; random crops of larger tiles)")
    p.add_argument("--width", type=integer(1), default=48, help="generator base width (official: 48)")
    p.add_argument("--d-width", type=integer(1), default=64, help="discriminator base width (64-128-256-512)")
    p.add_argument("--lr", type=number(0, lo_open=True), default=1e-4,
                   help="generator learning rate (Adam β = 0.5, 0.999)")
    p.add_argument("--d-lr", type=number(0, lo_open=True), default=None,
                   help="discriminator learning rate (default: --lr)")
    p.add_argument("--d-steps", type=integer(1), default=2, metavar="K",
                   help="discriminator updates per generator update (default 2; the extra ones on batches of "
                        "their own)")
    p.add_argument("--loss", choices=("triplet", "bce"), default="triplet",
                   help="triplet + λ=10 L1 (paper, default) or BCE + λ=100 L1 (official code)")
    p.add_argument("--lam", type=number(0), default=None, help="reconstruction weight λ (default 10, or 100 for bce)")
    p.add_argument("--rec-region", choices=("paste", "tile"), default="paste",
                   help="pixels the reconstruction L1 averages over: the pasted pixels, where the blend uses "
                        "G's output (default), or every pixel of the tile (pasted nuclei then weigh only their "
                        "area share and tend to be painted over)")
    p.add_argument("--amp", action="store_true", help="mixed precision (bf16/fp16) on CUDA; ignored on CPU")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1, ...")
    p.add_argument("--seed", type=integer(0), default=0)
    p.add_argument("--n-synthetic", type=integer(3), default=64, help="number of synthetic tiles (--data synthetic)")
    p.add_argument("--stain-jitter", type=number(0, 0.5), default=None,
                   help="per-tile stain variation of the synthetic tiles (default: the data set's)")
    p.add_argument("--paste", choices=("auto", "insmix", "simple"), default="auto",
                   help="how pasted tiles are made: insmix (default when available) or a simple copy-paste")
    p.add_argument("--resume", nargs="?", const="auto", default=None, metavar="CKPT",
                   help="resume from CKPT (default: CKPT_DIR/last.pt)")
    p.add_argument("--save-every", type=integer(1), default=100, metavar="STEPS",
                   help="checkpoint and plot every epoch, but at most once per STEPS steps (default 100)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--no-plots", action="store_true", help="no loss-curve / sample-grid PNGs")
    p.add_argument("--eval-batches", type=integer(0), default=2,
                   help="evaluation batches scored before and after training (reconstruction L1, D separation "
                        "of real vs blended tiles); 0 = none")
    p.add_argument("--eval-data", default=None, metavar="DIR",
                   help="held-out tiles for the evaluation (default: new synthetic tiles for synthetic data, "
                        "fresh crops of the training tiles for a directory)")
    p.set_defaults(func=_cmd_train)


def _add_export(sub) -> None:
    p = sub.add_parser("export", help="export a trained blender to TorchScript or torch.export",
                       description="Export the generator of a smooth-GAN checkpoint as a blend module "
                                   "(images N×3×H×W [0,1], paste_mask, original_mask → blended images).")
    p.add_argument("checkpoint", help="checkpoint file or the training output directory")
    p.add_argument("-o", "--output", required=True, help="output file (.pt for torchscript, .pt2 for export)")
    p.add_argument("--format", choices=("torchscript", "export"), default=None,
                   help="default: 'export' if the output ends in .pt2, else 'torchscript'")
    p.set_defaults(func=_cmd_export)


def register(subparsers) -> None:
    """Add the ``gan`` command (with ``train`` and ``export``) to an argparse sub-parsers object;
    each sets its handler as ``args.func`` (returns an exit code)."""
    gan = subparsers.add_parser("gan", help="smooth-GAN blender: train / export",
                                description="smooth-GAN blender (paper §2.3): train and export.")
    sub = gan.add_subparsers(dest="gan_command", metavar="{train,export}")
    sub.required = True
    _add_train(sub)
    _add_export(sub)


def _cmd_train(args) -> int:
    from .train import GanTrainConfig, train

    # checked before any work: the configuration, the output folder, the checkpoint to resume
    cfg = GanTrainConfig(data=args.data, out=args.out, steps=args.steps, epochs=args.epochs,
                         batch_size=args.batch_size, size=args.size, width=args.width, d_width=args.d_width,
                         lr=args.lr, d_lr=args.d_lr, d_steps=args.d_steps, loss=args.loss, lam=args.lam,
                         rec_region=args.rec_region, amp=args.amp, device=args.device, seed=args.seed,
                         n_synthetic=args.n_synthetic, eval_data=args.eval_data, stain_jitter=args.stain_jitter,
                         paste=args.paste, resume=args.resume, save_every=args.save_every,
                         progress=not args.no_progress, plots=not args.no_plots)
    cliutil.output_dir(args.out)
    res = train(cfg, evaluate_batches=args.eval_batches)
    h = res.history
    last = {k: v[-1] for k, v in h.items() if v}
    print(f"step {res.step}: checkpoint {res.checkpoint}; last losses "
          + ", ".join(f"{k}={v:.4f}" for k, v in last.items()))
    if res.evaluation:
        print("evaluation: " + ", ".join(f"{k}={v:.4f}" for k, v in res.evaluation.items())
              + f"  (also in {Path(args.out) / 'eval.json'})")
    return 0


def _cmd_export(args) -> int:
    from .export import export_blender, load_generator

    fmt = args.format or ("export" if str(args.output).endswith(".pt2") else "torchscript")
    cliutil.output_file(args.output, "-o/--output")
    g = load_generator(args.checkpoint)
    path = export_blender(g, args.output, fmt)
    print(f"wrote {path} ({fmt})")
    return 0


def build_parser() -> argparse.ArgumentParser:
    """A parser with only the ``gan`` command (what :func:`main` runs)."""
    parser = argparse.ArgumentParser(prog=cliutil.PROG)
    sub = parser.add_subparsers(dest="command", metavar="{gan}")
    sub.required = True
    register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Standalone entry point: ``main(["gan", "train", ...])`` (a leading ``gan`` may be omitted)."""
    return cliutil.standalone("gan", register, argv)


if __name__ == "__main__":
    sys.exit(main())
