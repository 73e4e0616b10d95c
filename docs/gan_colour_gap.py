"""Does the smooth-GAN close the colour gap of pasted nuclei? (issue 5, item 9)

Setup
    Synthetic H&E tiles of two stains (:func:`insmix_fast.gan.data.two_stain_tiles`:
    the reference H&E stain, and a second stain whose nuclei come out brown-purple).
    A generator is trained briefly on CPU on pasted tiles of both stains (insmix,
    bank = all training tiles, so about half the templates come from the other stain).
    Evaluation tiles are *new* tiles of stain A whose templates all come from a
    bank built from stain-B tiles only.

Measures (per tile with at least one paste, then averaged)
    colour gap   ΔE*ab (CIE76) between the mean CIELAB colour of the pasted nuclei
                 and the mean CIELAB colour of the tile's own nuclei;
    seam ratio   mean Sobel gradient magnitude (of CIELAB L*) on the paste outlines
                 (pixels of M touching a non-M pixel) divided by the same on the
                 outlines of the tile's own nuclei (pixels of an original nucleus
                 touching background). 1.0 = pasted outlines as sharp as real ones.
    contrast     ΔE*ab between the pasted nuclei and the background ring (3 px,
                 no nucleus) around them; the tile's own nuclei give the reference.
                 A blend that paints the pasted nuclei over with background (the
                 labels would then mark nuclei that are no longer there) drives it
                 towards 0.
    All before blending (u), after blending (S(u), strength 1 = paper) and with
    the official 0.7·G + 0.3·u. Outside the paste mask nothing changes.
    When the script trains, it also scores the discriminator before and after
    training on held-out two-stain tiles (``Trainer.evaluate``: ``auc`` = how well
    D tells blended from real tiles, ``auc_u`` = pasted tiles before blending).

Run (from the repository root)::

    python docs/gan_colour_gap.py --steps 2000 --json docs/gan_colour_gap.json   # trains (~15 min, one core)
    python docs/gan_colour_gap.py --ckpt runs/gan/       # evaluate an existing checkpoint

Writes docs/gan_colour_gap.png (examples, the three measures, the discriminator's scores and the
training curves; matplotlib: ``pip install 'insmix-fast[plots]'``) and prints a Markdown table.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import torch

from insmix_fast.bank import InstanceBank
from insmix_fast.config import InsMixConfig
from insmix_fast.core import insmix
from insmix_fast.gan.blender import Blender
from insmix_fast.gan.data import two_stain_tiles
from insmix_fast.gan.export import load_generator
from insmix_fast.gan.train import GanTrainConfig, Trainer, find_checkpoint, score_batches
from insmix_fast.plots import COLOURS, bar_chart, line_chart, require_matplotlib, save_figure
from insmix_fast.viz import draw_outline

HERE = Path(__file__).resolve().parent


def lab(image: np.ndarray) -> np.ndarray:
    """RGB uint8 → CIELAB float (L* 0..100, a*, b* ≈ −128..127)."""
    return cv2.cvtColor(image.astype(np.float32) / 255.0, cv2.COLOR_RGB2LAB)


def colour_gap(image: np.ndarray, pm: np.ndarray, om: np.ndarray) -> float:
    L = lab(image)
    return float(np.linalg.norm(L[pm].mean(0) - L[om].mean(0)))


def _edge(mask: np.ndarray, other: np.ndarray | None = None) -> np.ndarray:
    """Pixels of ``mask`` with a 4-neighbour outside it (and, if given, that neighbour in ``other``)."""
    m = mask.astype(np.uint8)
    outside = (1 - m) if other is None else other.astype(np.uint8)
    near = cv2.dilate(outside, np.array([[0, 1, 0], [1, 1, 1], [0, 1, 0]], np.uint8))
    return mask & (near > 0)


def seam_ratio(image: np.ndarray, pm: np.ndarray, om: np.ndarray, labels: np.ndarray) -> float:
    L = lab(image)[:, :, 0]
    g = np.hypot(cv2.Sobel(L, cv2.CV_32F, 1, 0, ksize=3), cv2.Sobel(L, cv2.CV_32F, 0, 1, ksize=3))
    paste_edge = _edge(pm)
    real_edge = _edge(om, labels == 0)  # own nuclei against background
    if not paste_edge.any() or not real_edge.any():
        return float("nan")
    return float(g[paste_edge].mean() / g[real_edge].mean())


def nucleus_contrast(image: np.ndarray, mask: np.ndarray, labels: np.ndarray, ring: int = 3) -> float:
    """ΔE*ab between the mean colour of ``mask`` and of the background ring (``ring`` px, no nucleus)
    around it: how visible those nuclei are. A blend that paints a pasted nucleus over
    with background drives it towards 0."""
    k = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * ring + 1, 2 * ring + 1))
    around = (cv2.dilate(mask.astype(np.uint8), k) > 0) & ~mask & (labels == 0)
    if not mask.any() or not around.any():
        return float("nan")
    L = lab(image)
    return float(np.linalg.norm(L[mask].mean(0) - L[around].mean(0)))


def evaluation_set(n: int, size: int, seed: int):
    """Tiles of stain A with templates from a stain-B bank: (u, labels, pm, om, original tile)."""
    tiles, ids = two_stain_tiles(2 * n, size, seed=seed)
    a = [t for t, s in zip(tiles, ids) if s == 0]
    b = [t for t, s in zip(tiles, ids) if s == 1]
    bank = InstanceBank.from_samples(b, on_invalid="skip", progress=False)
    cfg = InsMixConfig(background=False, p_paste=0.7)
    out = []
    for i, (img, labels) in enumerate(a):
        r = insmix(img, labels, bank, cfg, seed=seed, index=i)
        pm = np.asarray(r.paste_mask, bool)
        om = (np.asarray(r.labels) > 0) & ~pm
        if pm.sum() >= 20 and om.sum() >= 20:
            out.append((np.asarray(r.image), np.asarray(r.labels), pm, om, img))
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--width", type=int, default=16)
    ap.add_argument("--d-width", type=int, default=32)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--lr", type=float, default=2e-4)
    ap.add_argument("--d-lr", type=float, default=1e-3)
    ap.add_argument("--loss", choices=("triplet", "bce"), default="triplet")
    ap.add_argument("--rec-region", choices=("tile", "paste"), default="paste")
    ap.add_argument("--d-steps", type=int, default=2)
    ap.add_argument("--eval-batches", type=int, default=16, help="batches for the discriminator scores")
    ap.add_argument("--n-train", type=int, default=32)
    ap.add_argument("--n-eval", type=int, default=24)
    ap.add_argument("--ckpt", default=None, help="evaluate this checkpoint instead of training")
    ap.add_argument("--out-dir", default="/tmp/gan_colour_gap", help="training output directory")
    ap.add_argument("--png", default=str(HERE / "gan_colour_gap.png"))
    ap.add_argument("--json", default=None, help="also write the numbers here")
    args = ap.parse_args(argv)
    require_matplotlib("the figure")
    torch.manual_seed(0)

    t0 = time.time()
    history = None
    discriminator = None
    training = None
    if args.ckpt:
        G = load_generator(args.ckpt)
        ck = Path(args.ckpt)
        hist_file = (ck if ck.is_dir() else ck.parent) / "history.json"
        if hist_file.is_file():  # a run of this script (or gan train): plot its curves too
            history = json.loads(hist_file.read_text())
            args.steps = len(history.get("g_rec", [])) or None
        args.width = G.config.width
        eval_file = (ck if ck.is_dir() else ck.parent) / "eval.json"
        if eval_file.is_file():  # gan train's discriminator scores of that run
            discriminator = json.loads(eval_file.read_text())
        state = torch.load(str(find_checkpoint(ck)), map_location="cpu", weights_only=True)
        training = state.get("train_config")
    else:
        cfg = GanTrainConfig(data="synthetic-two-stain", n_synthetic=args.n_train, out=args.out_dir, size=args.size,
                          width=args.width, d_width=args.d_width, batch_size=args.batch_size, lr=args.lr,
                          d_lr=args.d_lr, loss=args.loss, rec_region=args.rec_region, d_steps=args.d_steps,
                          progress=True, plots=False)
        tr = Trainer(cfg)
        before = score_batches(tr, args.eval_batches)
        res = tr.run(args.steps)
        history = res.history
        discriminator = {"data": tr.eval_description, "before": before,
                         "after": score_batches(tr, args.eval_batches)}
        # beside the checkpoints, as `gan train` writes it: a later --ckpt run plots these scores too
        (Path(args.out_dir) / "eval.json").write_text(json.dumps(discriminator, indent=2))
        training = dataclasses.asdict(cfg)
        G = tr.G.eval()
    train_s = time.time() - t0

    data = evaluation_set(args.n_eval, args.size, seed=7)
    blend1 = Blender(G, strength=1.0, amp=False)
    blend7 = Blender(G, strength=0.7, amp=False)
    u = np.stack([d[0] for d in data])
    pm = np.stack([d[2] for d in data])
    om = np.stack([d[3] for d in data])
    s1 = blend1.blend(u, pm, om)
    s7 = blend7.blend(u, pm, om)
    assert np.array_equal(s1[~pm], u[~pm])

    rows = {}
    for name, imgs in (("pasted u", u), ("S(u), strength 1", s1), ("0.7 G + 0.3 u", s7)):
        gaps = [colour_gap(imgs[i], pm[i], om[i]) for i in range(len(data))]
        seams = [seam_ratio(imgs[i], pm[i], om[i], data[i][1]) for i in range(len(data))]
        contrast = [nucleus_contrast(imgs[i], pm[i], data[i][1]) for i in range(len(data))]
        rows[name] = {"colour_gap_dE": float(np.mean(gaps)), "colour_gap_sd": float(np.std(gaps)),
                      "seam_ratio": float(np.nanmean(seams)), "paste_contrast_dE": float(np.nanmean(contrast))}
    # reference: a tile's own nuclei split in two random halves (the noise floor of the measure)
    floor = []
    rng = np.random.default_rng(0)
    for u_i, labels, p, o, _ in data:
        ids = np.unique(labels[o])
        if len(ids) >= 2:
            half = rng.permutation(ids)[: len(ids) // 2]
            sel = np.isin(labels, half) & o
            floor.append(colour_gap(u_i, sel, o & ~sel))
    own = [nucleus_contrast(d[0], d[3], d[1]) for d in data]
    rows["reference"] = {"own nuclei, half vs half": float(np.mean(floor)),
                         "own nuclei contrast": float(np.nanmean(own))}

    result = {"tiles": len(data), "size": args.size, "steps": args.steps,
              "width": args.width, "train_seconds": round(train_s, 1), "rows": rows}
    if training is not None:
        keys = ("data", "n_synthetic", "size", "width", "d_width", "batch_size", "lr", "d_lr", "d_steps", "loss",
                "lam", "rec_region", "seed")
        result["training"] = {k: training.get(k) for k in keys if k in training}
    if discriminator is not None:
        result["discriminator"] = discriminator
    if history:  # the training curves, as means of ≤ 250 blocks of steps (enough to redraw them)
        result["history"] = {k: [float(np.mean(b)) for b in np.array_split(np.asarray(v, float), min(250, len(v)))]
                             for k, v in history.items() if len(v)}
    print(json.dumps(result, indent=2))
    print()
    print("| image | colour gap ΔE*ab (mean ± sd) | seam ratio (paste / real outline gradient) "
          "| pasted-nucleus contrast to its background ΔE*ab |")
    print("|---|---|---|---|")
    for name in ("pasted u", "S(u), strength 1", "0.7 G + 0.3 u"):
        r = rows[name]
        print(f"| {name} | {r['colour_gap_dE']:.2f} ± {r['colour_gap_sd']:.2f} | {r['seam_ratio']:.3f} "
              f"| {r['paste_contrast_dE']:.2f} |")
    ref = rows["reference"]
    print(f"| own nuclei (reference) | {ref['own nuclei, half vs half']:.2f} (half vs half: noise floor) "
          f"| 1 (by definition) | {ref['own nuclei contrast']:.2f} |")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))

    # ---- figure
    k = min(4, len(data))
    order = np.argsort([-p.sum() for p in pm])[:k]
    examples = [[draw_outline(u[i], pm[i], (0, 255, 0)), s1[i], s7[i], data[i][4]] for i in order]
    figure(args.png, examples, rows, history, discriminator)
    print(f"\nwrote {args.png}")
    return 0


NAMES = {"pasted u": "u", "S(u), strength 1": "S(u)", "0.7 G + 0.3 u": "0.7 G + 0.3 u"}
COLOUR = dict(zip(NAMES.values(), COLOURS))


def figure(path, examples, rows, history, discriminator) -> None:
    """Examples (left); the three measures, the discriminator's AUC and the training curves (right)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(12.5, 6.4 if history else 5.0), layout="constrained")
    FigureCanvasAgg(fig)
    left, right = fig.subfigures(1, 2, width_ratios=[1.0, 1.35])
    left.suptitle("pasted nuclei of another stain (outlined in u) and their blends", fontsize="medium")
    axes = left.subplots(len(examples), 4, squeeze=False)
    for r, row in enumerate(examples):
        for c, img in enumerate(row):
            ax = axes[r, c]
            ax.imshow(img, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(["u", "S(u)", "0.7 G + 0.3 u", "no paste"][c], fontsize="small")
    panels = right.subplots(3 if history else 2, 2, squeeze=False)
    ref = rows["reference"]
    bar_chart(panels[0, 0], {NAMES[n]: rows[n]["colour_gap_dE"] for n in NAMES},
              errors={NAMES[n]: rows[n]["colour_gap_sd"] for n in NAMES}, colours=COLOUR, fmt="{:.1f}",
              title="colour gap to the tile's own nuclei", ylabel="ΔE*ab (mean ± sd)",
              reference=(ref["own nuclei, half vs half"], "noise\nfloor"))
    bar_chart(panels[0, 1], {NAMES[n]: rows[n]["seam_ratio"] for n in NAMES}, colours=COLOUR, fmt="{:.2f}",
              title="seam: paste / own outline gradient", reference=(1.0, "own\nnuclei"))
    bar_chart(panels[1, 0], {NAMES[n]: rows[n]["paste_contrast_dE"] for n in NAMES}, colours=COLOUR,
              fmt="{:.1f}", title="pasted nucleus vs its background", ylabel="ΔE*ab",
              reference=(ref["own nuclei contrast"], "own\nnuclei"))
    if discriminator:
        auc = {when: {"S(u)": discriminator[when]["auc"], "u": discriminator[when]["auc_u"]}
               for when in ("before", "after") if discriminator.get(when)}
        bar_chart(panels[1, 1], auc, colours=COLOUR, fmt="{:.2f}", reference=(0.5, "chance"),
                  title="D tells blended / pasted from real (AUC)")
        panels[1, 1].set_ylim(0, 1.05)
    else:
        panels[1, 1].set_visible(False)
    if history:
        for ax, key, name, title in ((panels[2, 0], "g_rec", "|u − G(u)|", "training: reconstruction L1"),
                                     (panels[2, 1], "gap", "d(a,S(u)) − d(a,p)", "training: D separation")):
            line_chart(ax, {name: history[key]}, title=title)
    save_figure(fig, path)


if __name__ == "__main__":
    sys.exit(main())
