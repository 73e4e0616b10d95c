"""How much does pasting alone give away? Train only the discriminator (triplet loss, Eq. 3)
against pasted tiles *without* blending (S(u) = u) and score it on held-out tiles.

Used in docs/gan.md to compare data sets: on ``synthetic`` (one stain, per-tile jitter)
pasted nuclei resemble the tile's own, on ``synthetic-two-stain`` half of them come
from another stain. The score is ``auc`` of :meth:`insmix_fast.gan.train.Trainer.evaluate`
(mean distance to the real anchors, blended = here unblended pasted tiles).

Run (from the repository root, ≈ 2 min per data set on one core)::

    python docs/gan_d_probe.py --data synthetic --steps 1000
    python docs/gan_d_probe.py --data synthetic-two-stain --steps 1000
"""

from __future__ import annotations

import argparse
import sys

import torch

from insmix_fast.gan.losses import triplet_loss
from insmix_fast.gan.train import GanTrainConfig, Trainer, score_batches


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", default="synthetic-two-stain")
    ap.add_argument("--steps", type=int, default=1000)
    ap.add_argument("--n-synthetic", type=int, default=32)
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--d-width", type=int, default=32)
    ap.add_argument("--d-lr", type=float, default=1e-3)
    ap.add_argument("--eval-batches", type=int, default=16)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    cfg = GanTrainConfig(data=args.data, n_synthetic=args.n_synthetic, size=args.size, width=4, d_width=args.d_width,
                      d_lr=args.d_lr, seed=args.seed, progress=False, plots=False, out="/tmp/gan_d_probe")
    tr = Trainer(cfg)
    # no generator: S(u) = u, i.e. G(u) = u everywhere
    tr.G.forward = lambda u, paste_mask, original_mask: u
    every = max(1, args.steps // 5)
    print(f"step 0: {_fmt(score_batches(tr, args.eval_batches))}", flush=True)
    for i in range(args.steps):
        b = tr.source.batch(i, cfg.batch_size)
        loss = triplet_loss(tr.D(b.anchor), tr.D(b.positive), tr.D(b.u))
        tr.opt_d.zero_grad(set_to_none=True)
        loss.backward()
        tr.opt_d.step()
        if (i + 1) % every == 0:
            with torch.no_grad():
                print(f"step {i + 1}: D loss {loss.item():.3f}; {_fmt(score_batches(tr, args.eval_batches))}",
                      flush=True)
    return 0


def _fmt(r: dict) -> str:
    return f"auc {r['auc_u']:.3f}, separated {r['separated_u']:.3f} (on {r.get('data', 'held-out tiles')})"


if __name__ == "__main__":
    sys.exit(main())
