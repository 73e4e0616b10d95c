"""The ``insmix-fast`` command line: demo, bank, gan, experiment.

Run ``insmix-fast --help`` or ``insmix-fast COMMAND --help``.

The parser is built from :data:`COMMANDS`: each entry is a ``register(subparsers)``
function that adds one command (see :mod:`insmix_fast.cliutil` for the convention).
``demo`` and ``bank`` live here; the others in their packages' ``cli`` modules, which
never import this module. Arguments are checked as they are parsed and output paths
before any work; errors are one line on stderr and exit code 2.
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np

from . import cliutil
from ._version import __version__
from .cliutil import integer, number
from .experiments import cli as experiment_cli
from .gan import cli as gan_cli
from .wsi import cli as wsi_cli

__all__ = ["main", "build_parser", "COMMANDS"]


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
    g.add_argument("--patch", type=int, default=d.patch,
                   help="side of the background-shuffle patches in px (default %(default)s)")
    g.add_argument("--tile", type=int, dest="patch", help=argparse.SUPPRESS)  # deprecated spelling of --patch
    g.add_argument("--template-class", choices=("any", "same", "balanced"), default=d.template_class,
                   help="typed data: templates of any class (the paper), only the original's class, or a class "
                        "drawn first (balanced) (default %(default)s)")
    g.add_argument("--balance-power", type=number(0.0, 16.0), default=d.balance_power,
                   help="β of --template-class balanced: 1 = classes uniformly, 0 = as frequent as in the bank "
                        "(default %(default)s)")
    g.add_argument("--ablation", choices=("copy-paste", "ssd", "bgp", "bgp-only", "full"),
                   help="a row of the paper's Table 3 (overrides the switches)")
    g.add_argument("--official", action="store_true",
                   help="the official code's behaviour: templates from the same tile, α=0.5, diagonal offset")


def _config_from_args(args):
    """The InsMixConfig of the parsed arguments (its own checks raise ConfigError)."""
    from .config import OFFICIAL, InsMixConfig

    kw = dict(eps=args.eps, rho=args.rho, delta=args.delta, gamma=args.gamma, p_paste=args.p_paste,
              alpha=args.alpha, patch=args.patch)
    if args.template_class != "any" or args.balance_power != 1.0:  # typed options (OFFICIAL keeps its own)
        kw.update(template_class=args.template_class, balance_power=args.balance_power)
    if args.official:
        return OFFICIAL.replace(**{k: v for k, v in kw.items() if k != "alpha"})
    if args.ablation:
        return InsMixConfig.ablation(args.ablation, **kw)
    return InsMixConfig(**kw)


def _open(spec: str, size: int, n: int, seed: int, classes: int = 0, class_mix=None):
    """Dataset for ``--data``: 'synthetic' / 'synthetic:SEED' (sized by --size and the tile
    count; typed with ``classes`` ≥ 1) or a folder (:func:`insmix_fast.data.open_dataset`)."""
    from .data import open_dataset

    typed = dict(n_classes=classes, class_mix=class_mix) if classes else {}
    if spec.strip().lower() == "synthetic":
        return open_dataset("synthetic", seed=seed, size=size, length=n, **typed)
    if spec.strip().lower().startswith("synthetic:"):
        return open_dataset(spec, size=size, length=n, **typed)
    return open_dataset(spec)


def _class_mix(text: str) -> tuple[float, ...]:
    """``--class-mix 0.7,0.2,0.1``: relative class frequencies."""
    try:
        mix = tuple(float(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be comma-separated numbers, got {text!r}") from None
    if not mix or any(not (v >= 0) for v in mix) or sum(mix) <= 0:
        raise argparse.ArgumentTypeError(f"must be non-negative numbers with a positive sum, got {text!r}")
    return mix


def _crop(sample, size: int, rng: np.random.Generator):
    """A random ``size``×``size`` window of a sample (image, labels[, types]); smaller samples whole."""
    h, w = sample[1].shape
    if h <= size and w <= size:
        return tuple(sample)
    y = int(rng.integers(0, max(h - size, 0) + 1))
    x = int(rng.integers(0, max(w - size, 0) + 1))
    return tuple(a[y:y + size, x:x + size] for a in sample)


def _class_mix_line(counts: np.ndarray, names) -> str:
    """``"A 12 (40 %), B 18 (60 %)"`` over classes 1.. (classes without any left out)."""
    total = max(int(counts[1:].sum()), 1)
    return ", ".join(f"{names[c]} {int(counts[c])} ({100.0 * counts[c] / total:.0f} %)"
                     for c in range(1, len(names)) if counts[c])


def _add_progress(p: argparse.ArgumentParser) -> None:
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


# ---------------------------------------------------------------------- demo
def _cmd_demo(args) -> int:
    from .atomic import write_text
    from .bank import InstanceBank
    from .core import insmix
    from .errors import ConfigError
    from .results import PASTE_DTYPE
    from .viz import class_colors, grid, insmix_panel, legend, save_png

    # everything that can be wrong with the arguments fails here, before the bank is built
    config = _config_from_args(args)
    out = cliutil.output_dir(args.out)
    synthetic = args.data.strip().lower().startswith("synthetic")
    if not synthetic and (args.classes or args.class_mix):
        raise ConfigError("--classes / --class-mix make typed synthetic tiles; a data folder brings its own classes")
    if args.class_mix and not args.classes:
        raise ConfigError("--class-mix needs --classes N (the number of classes of the synthetic tiles)")
    if args.class_mix and len(args.class_mix) != args.classes:
        raise ConfigError(f"--class-mix has {len(args.class_mix)} values but --classes is {args.classes}")
    data = _open(args.data, args.size, args.bank_tiles, args.seed, args.classes, args.class_mix)
    names = getattr(data, "class_names", None)
    if config.template_class != "any" and names is None:
        raise ConfigError(f"--template-class {config.template_class} needs typed data (nucleus classes): "
                          "--classes N for synthetic tiles, or a typed data set (PanNuke, CoNSeP, MoNuSAC, PUMA, ...)")
    demo_data = _open(args.data, args.size, args.tiles, args.seed + 1, args.classes, args.class_mix) \
        if synthetic else data
    print(f"data: {data!r} ({len(data)} samples)" + (f", classes: {', '.join(names[1:])}" if names else ""))
    t0 = time.perf_counter()
    bank = InstanceBank.from_samples(data, progress=not args.no_progress)
    print(f"bank: {bank!r} built in {time.perf_counter() - t0:.1f} s")
    colors = None
    if names is not None:
        colors = class_colors(len(names) - 1)
        print(f"bank class mix: {_class_mix_line(bank.class_counts(), names)}")
    rng = np.random.default_rng(args.seed)
    rows = []
    lines = ["tile," + ",".join(PASTE_DTYPE.names)]
    pasted = np.zeros(len(names) if names else 1, np.int64)
    for k in range(min(args.tiles, len(demo_data))):
        sample = _crop(demo_data[k], args.size, rng)
        image, labels = sample[0], sample[1]
        types = sample[2] if names is not None else None
        t0 = time.perf_counter()
        r = insmix(image, labels, bank, config, seed=args.seed, index=k, types=types)
        ms = (time.perf_counter() - t0) * 1e3
        p = r.pastes
        n_orig = len(np.unique(labels)) - 1
        moved = int(sum(s != d for s, d in r.plan.moves))
        msg = f"tile {k}: {n_orig} nuclei, {len(p)} pasted, {moved} background patches moved, {ms:.2f} ms"
        if len(p):
            msg += (f"; f_scale {p['f_scale'].mean():.2f}, f_shape {p['f_shape'].mean():.2f}, "
                    f"f_dis {p['f_dis'].mean():.1f} px (means)")
        if names is not None and len(p):
            counts = np.bincount(p["class"], minlength=len(names))
            pasted += counts
            msg += f"; pasted by class: {_class_mix_line(counts, names)}"
        print(msg)
        for rec in p:
            lines.append(f"{k}," + ",".join(str(rec[f]) for f in p.dtype.names))
        rows.append(insmix_panel(image, labels, r, bank, types=types, colors=colors))
    label_title = "labels (colour: class)" if names is not None else "labels"
    picture = grid(rows, ["original", "InsMix (yellow: pasted, cyan: shuffled)", label_title,
                          "new labels + pastes"])
    if names is not None:
        print(f"class mix of the pastes ({config.template_class!r}): {_class_mix_line(pasted, names) or 'none'}")
        picture = np.concatenate([picture, legend(names, colors, picture.shape[1], counts=None)], axis=0)
    out.mkdir(parents=True, exist_ok=True)
    png = save_png(out / "insmix_demo.png", picture)
    csv = write_text(out / "pastes.csv", "\n".join(lines) + "\n")
    print(f"wrote {png} and {csv}")
    return 0


def _register_demo(sub) -> None:
    p = sub.add_parser("demo", help="run InsMix on a few tiles and write a PNG grid",
                       description="Build an instance bank, run InsMix on a few tiles and write "
                                   "OUT/insmix_demo.png (original, result, label overlays, paste outlines, "
                                   "shuffled patches) and OUT/pastes.csv.")
    p.add_argument("--data", default="synthetic",
                   help="'synthetic' (default, no download), 'synthetic:SEED', or a data folder in any layout "
                        "open_dataset knows (images/+labels/, MoNuSeg, PanNuke, CoNSeP, CoNIC, MoNuSAC, PUMA, ...); "
                        "typed data colours nuclei by class and reports the class mix of the pastes")
    p.add_argument("--classes", type=integer(0, 255), default=0, metavar="N",
                   help="synthetic tiles with N nucleus classes (default 0: untyped)")
    p.add_argument("--class-mix", type=_class_mix, metavar="P1,P2,...",
                   help="relative class frequencies of the synthetic tiles (N values; default equal)")
    p.add_argument("--out", default="insmix_demo", help="output folder (default %(default)s)")
    p.add_argument("--tiles", type=integer(1), default=3, help="tiles shown (default %(default)s)")
    p.add_argument("--bank-tiles", type=integer(1), default=64,
                   help="synthetic tiles in the bank (default %(default)s)")
    p.add_argument("--size", type=integer(16), default=256, help="tile size in px; larger images are cropped")
    p.add_argument("--seed", type=integer(0), default=0)
    _add_progress(p)
    _add_config_args(p)
    p.set_defaults(func=_cmd_demo)


# ---------------------------------------------------------------------- bank
def _cmd_bank_build(args) -> int:
    from .bank import InstanceBank

    output = cliutil.output_file(args.output, "-o/--output")
    data = _open(args.data, args.size, args.tiles, args.seed)
    t0 = time.perf_counter()
    bank = InstanceBank.from_samples(data, min_area=args.min_area, on_invalid=args.on_invalid,
                                     progress=not args.no_progress)
    output.parent.mkdir(parents=True, exist_ok=True)
    path = bank.save(output)
    print(f"{bank!r} built in {time.perf_counter() - t0:.1f} s -> {path}")
    return 0


def _cmd_bank_info(args) -> int:
    from .bank import InstanceBank

    bank = InstanceBank.load(args.bank)
    print(repr(bank))
    for k, v in bank.summary().items():
        if k == "class_counts":
            continue
        print(f"  {k}: {v:.3f}" if isinstance(v, float) else f"  {k}: {v}")
    if bank.typed:
        counts = bank.class_counts()
        total = max(int(counts[1:].sum()), 1)
        width = max(len(name) for name in bank.class_names[1:])
        print("  instances per class:")
        for c, name in enumerate(bank.class_names[1:], start=1):
            print(f"    {c:>3} {name:<{width}} {int(counts[c]):>9} ({100.0 * counts[c] / total:5.1f} %)")
    return 0


def _register_bank(sub) -> None:
    p = sub.add_parser("bank", help="build or inspect an instance bank",
                       description="Build an instance bank from a data set, or print a saved bank's statistics.")
    bsub = p.add_subparsers(dest="bank_command", metavar="{build,info}")
    bsub.required = True
    b = bsub.add_parser("build", help="build a bank from DATA and save it",
                        description="Build an instance bank from DATA ('synthetic', an images/+labels/ folder or "
                                    "a MoNuSeg folder) and save it as one .npz file.")
    b.add_argument("data", help="'synthetic', 'synthetic:SEED' or a data folder")
    b.add_argument("-o", "--output", required=True, help="output .npz path")
    b.add_argument("--min-area", type=integer(1), default=10, help="smallest instance kept, px (default %(default)s)")
    b.add_argument("--on-invalid", choices=("raise", "skip"), default="raise",
                   help="instances split in pieces or with holes: stop with an error (default) or leave them out")
    b.add_argument("--tiles", type=integer(1), default=256, help="synthetic tiles (default %(default)s)")
    b.add_argument("--size", type=integer(16), default=256, help="synthetic tile size (default %(default)s)")
    b.add_argument("--seed", type=integer(0), default=0)
    _add_progress(b)
    b.set_defaults(func=_cmd_bank_build)
    i = bsub.add_parser("info", help="print a saved bank's statistics", description="Print a saved bank's statistics.")
    i.add_argument("bank", help="a .npz written by 'bank build'")
    i.set_defaults(func=_cmd_bank_info)


# ---------------------------------------------------------------------- main
#: The commands, in ``--help`` order: each is a ``register(subparsers)`` that adds one
#: command and sets its handler as ``args.func``. A new sub-CLI module is imported above
#: and its ``register`` listed here.
COMMANDS = (
    _register_demo,
    _register_bank,
    gan_cli.register,
    experiment_cli.register,
    wsi_cli.register,
)


def build_parser() -> argparse.ArgumentParser:
    """The ``insmix-fast`` parser with every command of :data:`COMMANDS`."""
    parser = argparse.ArgumentParser(
        prog=cliutil.PROG,
        description="InsMix augmentation for nuclei instance segmentation: demo, instance banks, smooth-GAN, "
                    "augmentation experiments.")
    parser.add_argument("--version", action="version", version=f"{cliutil.PROG} {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for register in COMMANDS:
        register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run ``insmix-fast`` with ``argv`` (default ``sys.argv[1:]``); returns the exit code."""
    return cliutil.run(build_parser(), argv)


if __name__ == "__main__":
    sys.exit(main())
