"""``insmix-fast experiment``: run an augmentation comparison from a config.

Usage::

    insmix-fast experiment --config smoke --out runs/smoke
    insmix-fast experiment --config kumar --out runs/kumar --resume
    insmix-fast experiment --config pannuke --data /data/PanNuke --out runs/pannuke
    insmix-fast experiment --config my.toml --out OUT --arms none,cutmix,insmix-full --seeds 0,1,2

``register(subparsers)`` adds the sub-command to the ``insmix-fast`` CLI
(:mod:`insmix_fast.cli`); :func:`main` runs it standalone
(``python -m insmix_fast.experiments.cli ...``) through :func:`insmix_fast.cliutil.standalone`.
"""

from __future__ import annotations

import argparse
import sys

from .. import cliutil
from ..cliutil import integer
from ..errors import ConfigError

__all__ = ["register", "add_arguments", "run_from_args", "main"]


def add_arguments(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
    p.add_argument("--config", required=True, metavar="FILE|NAME",
                   help="experiment config: a TOML file or a built-in name (smoke, smoke-typed, kumar, "
                        "kumar-synthetic, synthetic-cpu, pannuke)")
    p.add_argument("--out", required=True, metavar="DIR", help="output directory (runs/, results.csv/.md/.png)")
    p.add_argument("--resume", action="store_true", help="skip arm×seed runs already finished in DIR")
    p.add_argument("--arms", metavar="A,B,...", help="override the config's arms (comma-separated)")
    p.add_argument("--seeds", metavar="S,T,...", help="override the config's seeds (comma-separated integers)")
    p.add_argument("--steps", type=integer(1), metavar="N", help="override train.steps")
    p.add_argument("--device", metavar="DEV", help="override train.device (auto, cpu, cuda)")
    p.add_argument("--data", metavar="PATH",
                   help="data folder (sets data.source = 'path' and data.path; e.g. the Kumar/MoNuSeg folder)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument("--no-plots", action="store_true",
                   help="no results.png (the bar chart needs matplotlib: pip install 'insmix-fast[plots]')")
    return p


def register(subparsers) -> None:
    """Add the ``experiment`` sub-command to an ``argparse`` sub-parser set (handler: ``args.func``)."""
    p = subparsers.add_parser(
        "experiment",
        help="compare augmentation policies by training a segmenter (arms × seeds)",
        description="Train a ResUNet-34 segmenter once per augmentation arm and seed, evaluate AJI/Dice/PQ, "
                    "and write results.csv, results.md and results.png to --out.",
    )
    add_arguments(p)
    p.set_defaults(func=run_from_args)


def _overrides(args) -> dict:
    ov: dict = {}
    if args.arms:
        ov.setdefault("experiment", {})["arms"] = [a.strip() for a in args.arms.split(",") if a.strip()]
    if args.seeds:
        try:
            ov.setdefault("experiment", {})["seeds"] = [int(s) for s in args.seeds.split(",") if s.strip()]
        except ValueError:
            raise ConfigError(f"--seeds must be comma-separated integers, got {args.seeds!r}") from None
    if args.steps is not None:
        ov.setdefault("train", {})["steps"] = args.steps
    if args.device:
        ov.setdefault("train", {})["device"] = args.device
    if args.data:
        ov["data"] = {"source": "path", "path": args.data}
    return ov


def run_from_args(args) -> int:
    from .runner import load_config, run_experiment

    cfg = load_config(args.config, _overrides(args))
    cliutil.output_dir(args.out)
    res = run_experiment(cfg, args.out, resume=args.resume, progress=False if args.no_progress else None,
                         plots=not args.no_plots)
    print(f"ran {len(res['ran'])} run(s), skipped {len(res['skipped'])} finished; reports in {args.out}/results.md")
    return 0


def main(argv=None) -> int:
    """Standalone entry point (a leading ``experiment`` may be omitted); same checks, errors
    and exit codes as ``insmix-fast experiment``."""
    return cliutil.standalone("experiment", register, argv)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
