"""The ``insmix-fast`` command line: demo, bank, gan, experiment.

Run ``insmix-fast --help`` or ``insmix-fast COMMAND --help``.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

from .errors import InsMixError

__all__ = ["main", "build_parser"]


def _add_config_args(p: argparse.ArgumentParser) -> None:
    from .config import InsMixConfig

    d = InsMixConfig()
    g = p.add_argument_group("InsMix parameters (defaults: SPEC §2)")
    g.add_argument("--eps", type=float, default=d.eps, help="scale gap bound ε (default %(default)s)")
    g.add_argument("--rho", type=float, default=d.rho, help="shape gap bound ρ (default %(default)s)")
    g.add_argument("--delta", type=float, default=d.delta, help="min paste distance δ in px (default %(default)s)")
    g.add_argument("--gamma", type=float, default=d.gamma, help="max paste distance γ in px (default %(default)s)")
    g.add_argument("--p-paste", type=float, default=d.p_paste, help="paste probability per nucleus")
    g.add_argument("--alpha", type=float, default=d.alpha, help="fraction of background patches shuffled")
    g.add_argument("--tile", type=int, default=d.tile, help="background patch size in px")
    g.add_argument("--ablation", choices=("copy-paste", "ssd", "bgp", "bgp-only", "full"),
                   help="a row of the paper's Table 3 (overrides the switches)")
    g.add_argument("--official", action="store_true",
                   help="the official code's behaviour: templates from the same tile, α=0.5, diagonal offset")


def _config_from_args(args):
    from .config import OFFICIAL, InsMixConfig

    kw = dict(eps=args.eps, rho=args.rho, delta=args.delta, gamma=args.gamma, p_paste=args.p_paste,
              alpha=args.alpha, tile=args.tile)
    if args.official:
        return OFFICIAL.replace(**{k: v for k, v in kw.items() if k != "alpha"})
    if args.ablation:
        return InsMixConfig.ablation(args.ablation, **kw)
    return InsMixConfig(**kw)


def _open(spec: str, size: int, n: int, seed: int):
    """Dataset for ``--data``: 'synthetic' (sized by --size/--tiles) or a folder."""
    from .data import SyntheticNuclei, open_dataset

    if spec == "synthetic" or spec.startswith("synthetic:"):
        s = int(spec.split(":", 1)[1]) if ":" in spec else seed
        return SyntheticNuclei(seed=s, size=size, length=n)
    return open_dataset(spec)


def _crop(image, labels, size: int, rng: np.random.Generator):
    h, w = labels.shape
    if h <= size and w <= size:
        return image, labels
    y = int(rng.integers(0, max(h - size, 0) + 1))
    x = int(rng.integers(0, max(w - size, 0) + 1))
    return image[y:y + size, x:x + size], labels[y:y + size, x:x + size]


# ---------------------------------------------------------------------- demo
def _cmd_demo(args) -> int:
    import cv2

    from . import InstanceBank, insmix
    from .viz import grid, insmix_panel

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    config = _config_from_args(args)
    data = _open(args.data, args.size, args.bank_tiles, args.seed)
    print(f"data: {data!r} ({len(data)} samples)")
    t0 = time.perf_counter()
    bank = InstanceBank.from_samples(data, progress=not args.no_progress)
    print(f"bank: {bank!r} built in {time.perf_counter() - t0:.1f} s")
    rng = np.random.default_rng(args.seed)
    rows = []
    lines = ["tile,template,original,label,y,x,dy,dx,f_scale,f_shape,f_dis"]
    demo_data = _open(args.data, args.size, args.tiles, args.seed + 1) if args.data.startswith("synthetic") else data
    for k in range(min(args.tiles, len(demo_data))):
        image, labels = _crop(*demo_data[k], args.size, rng)
        t0 = time.perf_counter()
        r = insmix(image, labels, bank, config, seed=args.seed, index=k)
        ms = (time.perf_counter() - t0) * 1e3
        p = r.pastes
        n_orig = len(np.unique(labels)) - 1
        moved = int(sum(s != d for s, d in r.plan.moves))
        msg = f"tile {k}: {n_orig} nuclei, {len(p)} pasted, {moved} background patches moved, {ms:.2f} ms"
        if len(p):
            msg += (f"; f_scale {p['f_scale'].mean():.2f}, f_shape {p['f_shape'].mean():.2f}, "
                    f"f_dis {p['f_dis'].mean():.1f} px (means)")
        print(msg)
        for rec in p:
            lines.append(f"{k}," + ",".join(str(rec[f]) for f in p.dtype.names))
        rows.append(insmix_panel(image, labels, r, bank))
    picture = grid(rows, ["original", "InsMix (yellow: pasted, cyan: shuffled)", "labels", "new labels + pastes"])
    png = out / "insmix_demo.png"
    cv2.imwrite(str(png), cv2.cvtColor(picture, cv2.COLOR_RGB2BGR))
    (out / "pastes.csv").write_text("\n".join(lines) + "\n")
    print(f"wrote {png} and {out / 'pastes.csv'}")
    return 0


def _add_demo(sub) -> None:
    p = sub.add_parser("demo", help="run InsMix on a few tiles and write a PNG grid",
                       description="Build an instance bank, run InsMix on a few tiles and write "
                                   "OUT/insmix_demo.png (original, result, label overlays, paste outlines, "
                                   "shuffled patches) and OUT/pastes.csv.")
    p.add_argument("--data", default="synthetic",
                   help="'synthetic' (default, no download), 'synthetic:SEED', an images/+labels/ folder or a "
                        "MoNuSeg folder (images + Aperio XML)")
    p.add_argument("--out", default="insmix_demo", help="output folder (default %(default)s)")
    p.add_argument("--tiles", type=int, default=3, help="tiles shown (default %(default)s)")
    p.add_argument("--bank-tiles", type=int, default=64, help="synthetic tiles in the bank (default %(default)s)")
    p.add_argument("--size", type=int, default=256, help="tile size in px; larger images are cropped")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    _add_config_args(p)
    p.set_defaults(func=_cmd_demo)


# ---------------------------------------------------------------------- bank
def _cmd_bank_build(args) -> int:
    from . import InstanceBank

    data = _open(args.data, args.size, args.tiles, args.seed)
    t0 = time.perf_counter()
    bank = InstanceBank.from_samples(data, min_area=args.min_area, on_invalid=args.on_invalid,
                                     progress=not args.no_progress)
    path = bank.save(args.output)
    print(f"{bank!r} built in {time.perf_counter() - t0:.1f} s -> {path}")
    return 0


def _cmd_bank_info(args) -> int:
    from . import InstanceBank

    bank = InstanceBank.load(args.bank)
    print(repr(bank))
    for k, v in bank.summary().items():
        print(f"  {k}: {v:.3f}" if isinstance(v, float) else f"  {k}: {v}")
    return 0


def _add_bank(sub) -> None:
    p = sub.add_parser("bank", help="build or inspect an instance bank",
                       description="Build an instance bank from a data set, or print a saved bank's statistics.")
    bsub = p.add_subparsers(dest="bank_command", metavar="{build,info}")
    bsub.required = True
    b = bsub.add_parser("build", help="build a bank from DATA and save it",
                        description="Build an instance bank from DATA ('synthetic', an images/+labels/ folder or "
                                    "a MoNuSeg folder) and save it as one .npz file.")
    b.add_argument("data", help="'synthetic', 'synthetic:SEED' or a data folder")
    b.add_argument("-o", "--output", required=True, help="output .npz path")
    b.add_argument("--min-area", type=int, default=10, help="smallest instance kept, px (default %(default)s)")
    b.add_argument("--on-invalid", choices=("raise", "skip"), default="raise",
                   help="instances split in pieces or with holes: stop with an error (default) or leave them out")
    b.add_argument("--tiles", type=int, default=256, help="synthetic tiles (default %(default)s)")
    b.add_argument("--size", type=int, default=256, help="synthetic tile size (default %(default)s)")
    b.add_argument("--seed", type=int, default=0)
    b.add_argument("--no-progress", action="store_true")
    b.set_defaults(func=_cmd_bank_build)
    i = bsub.add_parser("info", help="print a saved bank's statistics", description="Print a saved bank's statistics.")
    i.add_argument("bank", help="a .npz written by 'bank build'")
    i.set_defaults(func=_cmd_bank_info)


# ---------------------------------------------------------------------- main
def build_parser() -> argparse.ArgumentParser:
    from . import __version__

    parser = argparse.ArgumentParser(
        prog="insmix-fast",
        description="InsMix augmentation for nuclei instance segmentation: demo, instance banks, smooth-GAN, "
                    "augmentation experiments.")
    parser.add_argument("--version", action="version", version=f"insmix-fast {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    _add_demo(sub)
    _add_bank(sub)
    from .experiments.cli import register as register_experiment
    from .gan.cli import register as register_gan

    register_gan(sub)
    register_experiment(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except InsMixError as e:
        print(f"insmix-fast: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("insmix-fast: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
