"""Training loop of the smooth-GAN (paper §2.3, SPEC §5).

One iteration, on a batch from :class:`~insmix_fast.gan.data.TileSource`:

1. ``g = G(u, M, O)``, ``S(u) = G(u)·M + u·(1−M)``;
2. discriminator step on the triplet loss (Eq. 3) ``(x_a, x_p, S(u).detach())``
   (or BCE real/fake with ``loss="bce"``, the official code);
3. generator step on ``L_G = L_adv + λ·|u − G(u)|₁`` (Eq. 4–5, λ = 10; BCE + 100·L1
   with ``loss="bce"``).

Adam (β = 0.5, 0.999) for both; AMP (bf16 or fp16 + GradScaler) on CUDA.
Output directory: ``last.pt`` and ``ckpt_stepNNNNNNN.pt`` (every epoch — every
``k`` epochs when an epoch is shorter than ``save_every`` steps — and at the end; the
three newest kept), ``history.json``, ``loss_curves.png``, and
``samples_epochNNN.png`` (rows: pasted u with the paste outline, S(u), |S(u)−u|,
a real tile).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..atomic import atomic_path, write_text
from ..devices import parse_device, torch_device
from ..errors import ConfigError, InputError
from ..plots import require_matplotlib
from ..validation import check_bool, check_choice, check_int, check_number, check_pair, check_seed
from .data import SYNTHETIC_SPECS, PastedBatch, TileSource
from .losses import (LAMBDA, LAMBDA_BCE, MARGIN, bce_discriminator_loss, bce_generator_loss, generator_loss,
                     l1_distance, reconstruction_loss, triplet_loss)
from .model import Discriminator, Generator, composite
from .plots import loss_curves_png, sample_grid_png

__all__ = ["GanTrainConfig", "TrainResult", "Trainer", "train", "score_batches", "find_checkpoint", "roc_auc"]

HISTORY_KEYS = ("d_loss", "g_adv", "g_rec", "g_total", "gap")


@dataclass
class GanTrainConfig:
    """Everything ``gan train`` takes (the smooth-GAN's training; the segmenter of the
    experiment harness has :class:`insmix_fast.experiments.train.SegmenterTrainConfig`).
    ``steps`` wins over ``epochs`` when both are set. Checked on construction (``ConfigError``)."""

    data: str = "synthetic"
    out: str = "gan_ckpt"
    steps: int | None = None
    epochs: int | None = None
    batch_size: int = 8
    size: int = 256
    width: int = 48
    d_width: int = 64
    lr: float = 1e-4
    d_lr: float | None = None  # discriminator learning rate (default: lr)
    betas: tuple[float, float] = (0.5, 0.999)
    loss: str = "triplet"
    lam: float | None = None  # default: 10 (triplet) / 100 (bce)
    margin: float = MARGIN
    #: pixels the reconstruction L1 of Eq. 5 averages over: "paste" (the pasted pixels M, where
    #: S(u) takes G's output; default) or "tile" (every pixel: the pasted nuclei then weigh only
    #: their area share, and longer runs learn to paint them over with background)
    rec_region: str = "paste"
    key_stride: int = 2
    #: discriminator updates per generator update (the extra ones on batches of their own); with one,
    #: the generator kept the triplet discriminator near chance in our runs (docs/gan.md)
    d_steps: int = 2
    amp: bool = False
    device: str = "auto"
    seed: int = 0
    n_synthetic: int = 64
    #: where :func:`score_batches` draws its tiles: ``None`` = new synthetic tiles (other seed) for a
    #: synthetic ``data``, fresh crops of the training tiles for a directory; or a tile directory
    eval_data: str | None = None
    stain_jitter: float | None = None
    paste: str = "auto"
    resume: str | None = None  # None, "auto" (out/last.pt) or a path
    keep: int = 3
    #: checkpoints and plots at the end of every epoch, but at most once per ``save_every`` steps
    #: (a small tile set has epochs of a few steps); always at the last step
    save_every: int = 100
    progress: bool = True
    plots: bool = True

    def __post_init__(self):
        check_choice("rec_region", self.rec_region, ("tile", "paste"))
        check_choice("loss", self.loss, ("triplet", "bce"))
        check_choice("paste", self.paste, ("auto", "insmix", "simple"))
        for name in ("batch_size", "width", "d_width", "n_synthetic", "save_every", "keep", "d_steps", "key_stride"):
            setattr(self, name, check_int(name, getattr(self, name), 1))
        for name in ("steps", "epochs"):
            if getattr(self, name) is not None:
                setattr(self, name, check_int(name, getattr(self, name), 1))
        self.size = check_int("size", self.size, 32)
        if self.size % 4:
            raise ConfigError(f"size must be a multiple of 4 and ≥ 32, got {self.size}")
        self.lr = check_number("lr", self.lr, 0.0, lo_open=True)
        if self.d_lr is not None:
            self.d_lr = check_number("d_lr", self.d_lr, 0.0, lo_open=True)
        if self.lam is not None:
            self.lam = check_number("lam", self.lam, 0.0)
        if self.stain_jitter is not None:
            self.stain_jitter = check_number("stain_jitter", self.stain_jitter, 0.0, 0.5)
        self.margin = check_number("margin", self.margin, 0.0)
        self.betas = check_pair("betas", self.betas, 0.0, 1.0)
        self.seed = check_seed(self.seed)
        parse_device(self.device, allow_auto=True)
        for name in ("amp", "progress", "plots"):
            setattr(self, name, check_bool(name, getattr(self, name)))

    @property
    def lam_value(self) -> float:
        return float(self.lam) if self.lam is not None else (LAMBDA if self.loss == "triplet" else LAMBDA_BCE)


@dataclass
class TrainResult:
    checkpoint: Path
    step: int
    history: dict[str, list[float]] = field(default_factory=dict)
    #: scores of :meth:`Trainer.evaluate` on fresh batches after training (empty if not asked)
    evaluation: dict[str, float] = field(default_factory=dict)
    #: the same scores before the first step (only for a run that started from scratch)
    evaluation_start: dict[str, float] = field(default_factory=dict)


def find_checkpoint(path: str | os.PathLike) -> Path:
    """``path`` itself if a file, else ``path/last.pt`` or the newest ``ckpt_step*.pt``."""
    p = Path(path)
    if p.is_file():
        return p
    if p.is_dir():
        if (p / "last.pt").is_file():
            return p / "last.pt"
        ck = sorted(p.glob("ckpt_step*.pt"))
        if ck:
            return ck[-1]
    raise InputError(f"no smooth-GAN checkpoint at {p}")


def roc_auc(negative_scores, positive_scores) -> float:
    """P(positive score > negative score), ties counted half (Mann–Whitney form of the ROC AUC).

    Scores are tensors or array-likes of any shape (flattened); an empty side gives NaN,
    a NaN score raises :class:`ValueError` (it would compare false with everything).
    """
    a = torch.as_tensor(negative_scores, dtype=torch.float64).flatten()
    b = torch.as_tensor(positive_scores, dtype=torch.float64).flatten()
    if bool(a.isnan().any() or b.isnan().any()):
        raise ValueError("roc_auc: scores contain NaN")
    if a.numel() == 0 or b.numel() == 0:
        return float("nan")
    diff = b[:, None] - a[None, :]
    return float((diff > 0).double().mean() + 0.5 * (diff == 0).double().mean())


def _fingerprint(images: torch.Tensor) -> torch.Tensor:
    """One float64 per image; equal images give equal numbers (used to spot a tile drawn twice)."""
    x = images.double().flatten(1)
    w = torch.linspace(1.0, 2.0, x.shape[1], dtype=torch.float64, device=x.device)
    return x @ w


def _mean_distance_to(maps: torch.Tensor, anchors: torch.Tensor, exclude: torch.Tensor | None = None) -> torch.Tensor:
    """For each D map in ``maps``, the mean L1 distance (Eq. 3's d) to every map in ``anchors``.

    ``exclude[i, j]`` leaves anchor ``j`` out of sample ``i``'s mean.
    """
    x, y = maps.flatten(1).float(), anchors.flatten(1).float()
    dist = torch.cdist(x, y, p=1.0) / x.shape[1]
    if exclude is None:
        return dist.mean(1)
    keep = (~exclude).to(dist.dtype)
    return (dist * keep).sum(1) / keep.sum(1).clamp_min(1.0)


class Trainer:
    """Holds G, D, optimisers and the data source; ``step()`` runs one iteration."""

    def __init__(self, config: GanTrainConfig, source: TileSource | None = None):
        self.cfg = config
        self.device = torch_device(config.device, allow_auto=True)
        if config.plots:
            require_matplotlib("the loss curves of 'gan train' (or pass --no-plots / plots=False)")
        torch.manual_seed(config.seed)
        self.source = source if source is not None else TileSource.from_spec(
            config.data, config.size, seed=config.seed, n_synthetic=config.n_synthetic, paste=config.paste,
            stain_jitter=config.stain_jitter)
        self.G = Generator(width=config.width, key_stride=config.key_stride).to(self.device)
        self.D = Discriminator(width=config.d_width).to(self.device)
        self.opt_g = torch.optim.Adam(self.G.parameters(), lr=config.lr, betas=config.betas)
        self.opt_d = torch.optim.Adam(self.D.parameters(), lr=config.d_lr or config.lr, betas=config.betas)
        self.amp_dtype = None
        if config.amp and self.device.type == "cuda":
            self.amp_dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp_dtype == torch.float16)
        self.step_no = 0
        self.history: dict[str, list[float]] = {k: [] for k in HISTORY_KEYS}
        self.steps_per_epoch = max(1, math.ceil(len(self.source) / config.batch_size))
        self._eval_source: TileSource | None = None
        #: steps between checkpoints: a whole number of epochs, at least ``save_every`` steps
        self.save_interval = self.steps_per_epoch * max(1, math.ceil(config.save_every / self.steps_per_epoch))

    #: seed offset of the held-out synthetic evaluation tiles (never drawn for training)
    EVAL_SEED_OFFSET = 1_000_003

    def _eval_spec(self) -> tuple[str | None, int, str]:
        """``(data spec, seed, description)`` of the evaluation tiles; spec ``None`` = the training tiles."""
        cfg = self.cfg
        spec = cfg.eval_data if cfg.eval_data is not None else cfg.data
        if spec in SYNTHETIC_SPECS:  # new tiles: a seed no training run of this seed draws
            seed = cfg.seed + self.EVAL_SEED_OFFSET
            return spec, seed, f"held-out {spec} tiles (seed {seed})"
        if cfg.eval_data is not None:
            return spec, cfg.seed, f"held-out tiles from {spec}"
        return None, cfg.seed, "fresh crops and pastes of the training tiles (no --eval-data given)"

    @property
    def eval_source(self) -> TileSource:
        """Tiles that :func:`score_batches` draws from (see :attr:`GanTrainConfig.eval_data`)."""
        if self._eval_source is None:
            cfg = self.cfg
            spec, seed, _ = self._eval_spec()
            self._eval_source = self.source if spec is None else TileSource.from_spec(
                spec, cfg.size, seed=seed, n_synthetic=max(8, min(cfg.n_synthetic, 64)), paste=cfg.paste,
                stain_jitter=cfg.stain_jitter)
        return self._eval_source

    @property
    def eval_description(self) -> str:
        return self._eval_spec()[2]

    def _rec_mask(self, b: PastedBatch) -> torch.Tensor | None:
        """The pixels Eq. 5's L1 averages over (:attr:`GanTrainConfig.rec_region`); ``None`` = every pixel."""
        return b.paste_mask if self.cfg.rec_region == "paste" else None

    # ------------------------------------------------------------ checkpoints
    def state_dict(self) -> dict:
        cfg = dataclasses.asdict(self.cfg)
        cfg["betas"] = list(cfg["betas"])
        return {
            "format": "insmix_fast.gan/1",
            "generator": self.G.state_dict(),
            "generator_config": self.G.config.to_dict(),
            "discriminator": self.D.state_dict(),
            "d_width": self.D.width,
            "opt_g": self.opt_g.state_dict(),
            "opt_d": self.opt_d.state_dict(),
            "scaler": self.scaler.state_dict(),
            "step": self.step_no,
            "history": self.history,
            "train_config": cfg,
        }

    def save(self, out: Path) -> Path:
        out.mkdir(parents=True, exist_ok=True)
        state = self.state_dict()
        path = out / f"ckpt_step{self.step_no:07d}.pt"
        for p in (out / "last.pt", path):
            with atomic_path(p) as tmp:
                torch.save(state, tmp)
        for old in sorted(out.glob("ckpt_step*.pt"))[: -self.cfg.keep]:
            old.unlink()
        write_text(out / "history.json", json.dumps(self.history))
        return path

    def load(self, path: str | os.PathLike) -> None:
        path = find_checkpoint(path)
        state = torch.load(str(path), map_location=self.device, weights_only=True)
        if state.get("generator_config") != self.G.config.to_dict():
            raise ConfigError(f"checkpoint {path} has generator {state.get('generator_config')}, "
                              f"this run asks for {self.G.config.to_dict()}")
        self.G.load_state_dict(state["generator"])
        self.D.load_state_dict(state["discriminator"])
        self.opt_g.load_state_dict(state["opt_g"])
        self.opt_d.load_state_dict(state["opt_d"])
        self.scaler.load_state_dict(state["scaler"])
        self.step_no = int(state["step"])
        self.history = {k: list(state["history"].get(k, [])) for k in HISTORY_KEYS}

    # ------------------------------------------------------------ training
    def _autocast(self):
        if self.amp_dtype is None:
            return torch.autocast(device_type=self.device.type, enabled=False)
        return torch.autocast(device_type=self.device.type, dtype=self.amp_dtype)

    def _d_update(self, b: PastedBatch, s: torch.Tensor):
        """One discriminator step on real tiles ``b.anchor``/``b.positive`` and blended ``s`` (detached);
        returns the loss and D's outputs (before the step) ``d_a, d_p, d_n``."""
        cfg = self.cfg
        with self._autocast():
            d_a, d_p, d_n = self.D(b.anchor), self.D(b.positive), self.D(s.detach())
            if cfg.loss == "triplet":
                loss_d = triplet_loss(d_a, d_p, d_n, cfg.margin)
            else:
                loss_d = bce_discriminator_loss(torch.cat([d_a, d_p]), d_n)
        self.opt_d.zero_grad(set_to_none=True)
        self.scaler.scale(loss_d).backward()
        self.scaler.step(self.opt_d)
        return loss_d, d_a, d_p, d_n

    def step(self, batch: PastedBatch | None = None) -> dict[str, float]:
        cfg = self.cfg
        if batch is None:
            batch = self.source.batch(self.step_no, cfg.batch_size)
        b = batch.to(self.device)
        self.G.train()
        self.D.train()
        # ---- discriminator: d_steps − 1 extra updates on batches of their own, then one on this batch
        for j in range(cfg.d_steps - 1):
            xb = self.source.batch(D_STEP0 + self.step_no * (cfg.d_steps - 1) + j, cfg.batch_size).to(self.device)
            with torch.no_grad(), self._autocast():
                xs = composite(xb.u, self.G(xb.u, xb.paste_mask, xb.original_mask), xb.paste_mask)
            self._d_update(xb, xs)
            self.scaler.update()
        with self._autocast():
            g = self.G(b.u, b.paste_mask, b.original_mask)
            s = composite(b.u, g, b.paste_mask)
        loss_d, d_a, d_p, d_n = self._d_update(b, s)
        # ---- generator
        for p in self.D.parameters():
            p.requires_grad_(False)
        with self._autocast():
            d_n_g = self.D(s)
            rm = self._rec_mask(b)
            if cfg.loss == "triplet":
                lg = generator_loss(d_a.detach(), d_p.detach(), d_n_g, b.u, g, cfg.lam_value, rec_mask=rm)
            else:
                lg = bce_generator_loss(d_n_g, b.u, g, cfg.lam_value, rec_mask=rm)
        self.opt_g.zero_grad(set_to_none=True)
        self.scaler.scale(lg.total).backward()
        self.scaler.step(self.opt_g)
        self.scaler.update()
        for p in self.D.parameters():
            p.requires_grad_(True)
        with torch.no_grad():
            if cfg.loss == "triplet":
                gap = (l1_distance(d_a, d_n) - l1_distance(d_a, d_p)).mean()
            else:  # accuracy of D on real vs S(u) patches
                gap = 0.5 * ((d_a > 0).float().mean() + (d_n < 0).float().mean())
        rec = {"d_loss": loss_d.item(), "g_adv": lg.adv.item(), "g_rec": lg.rec.item(),
               "g_total": lg.total.item(), "gap": gap.item()}
        for k, v in rec.items():
            self.history[k].append(v)
        self.step_no += 1
        return rec

    @torch.no_grad()
    def evaluate(self, batch: PastedBatch) -> dict[str, float]:
        """On an evaluation batch: reconstruction L1 and how well D tells real from blended tiles.

        ``rec`` is Eq. 5's L1 over the pixels of :attr:`GanTrainConfig.rec_region`.

        All discriminator scores use only samples with at least one paste (the others are
        real tiles). With ``d`` the L1 distance of two PatchGAN maps (Eq. 3):

        * ``gap`` — mean of d(x_a, S(u)) − d(x_a, x_p) (the triplet margin D is trained to open);
        * ``separated`` — share of triplets with d(x_a, S(u)) > d(x_a, x_p) (one random anchor each);
        * ``auc`` — D as a real/blended classifier: each tile is scored by its mean distance to all
          the batch's anchors (real tiles), and ``auc`` is the probability that a blended tile
          S(u) scores farther than a real tile x_p (ROC AUC; 0.5 = chance, 1 = perfect);
        * ``separated_u`` / ``auc_u`` — the same for the pasted tile u *before* blending: how much
          the pasting alone gives away to this D (the reference for the two above);
        * ``acc`` — share of patch logits on the right side of 0 (real > 0, S(u) < 0; for BCE).
        """
        self.G.eval()
        self.D.eval()
        b = batch.to(self.device)
        with self._autocast():
            g = self.G(b.u, b.paste_mask, b.original_mask)
            s = composite(b.u, g, b.paste_mask)
            d_a, d_p, d_n, d_u = self.D(b.anchor), self.D(b.positive), self.D(s), self.D(b.u)
        d_a, d_p, d_n, d_u = d_a.float(), d_p.float(), d_n.float(), d_u.float()
        rec = float(reconstruction_loss(b.u, g, self._rec_mask(b)))
        has = b.paste_mask.flatten(1).amax(1) > 0.5  # samples without pastes cannot be told apart
        nan = float("nan")
        if not bool(has.any()):
            return {"rec": rec, "gap": nan, "separated": nan, "auc": nan, "separated_u": nan, "auc_u": nan,
                    "acc": nan}
        dn, dp, du = l1_distance(d_a, d_n), l1_distance(d_a, d_p), l1_distance(d_a, d_u)
        # distance of every tile to the set of anchors; a positive identical to an anchor tile
        # (same tile drawn twice) is compared with the other anchors only
        same = _fingerprint(b.positive)[:, None] == _fingerprint(b.anchor)[None, :]
        score_p = _mean_distance_to(d_p, d_a, exclude=same)
        score_n, score_u = _mean_distance_to(d_n[has], d_a), _mean_distance_to(d_u[has], d_a)
        return {"rec": rec, "gap": float((dn - dp)[has].mean()),
                "separated": float((dn > dp)[has].float().mean()),
                "auc": roc_auc(score_p, score_n),
                "separated_u": float((du > dp)[has].float().mean()),
                "auc_u": roc_auc(score_p, score_u),
                "acc": float(0.5 * ((d_a > 0).float().mean() + (d_n[has] < 0).float().mean()))}

    @torch.no_grad()
    def sample_grid(self, batch: PastedBatch, path: Path, n: int = 4) -> None:
        """PNG of the first ``n`` samples: pasted u (paste outlined), S(u), |S(u) − u|·4, a real tile."""
        self.G.eval()
        b = batch.to(self.device)
        k = min(n, b.u.shape[0])
        with self._autocast():
            g = self.G(b.u[:k], b.paste_mask[:k], b.original_mask[:k])
        s = composite(b.u[:k], g.float(), b.paste_mask[:k])

        def u8(t):
            return ((t.float().clamp(-1, 1) + 1) * 127.5).round().byte().permute(0, 2, 3, 1).cpu().numpy()

        sample_grid_png(path, u8(b.u[:k]), u8(s), u8(b.anchor[:k]), b.paste_mask[:k, 0].cpu().numpy() > 0.5)

    def run(self, total_steps: int) -> TrainResult:
        cfg = self.cfg
        out = Path(cfg.out)
        out.mkdir(parents=True, exist_ok=True)
        fixed = self.source.batch(10**12, min(cfg.batch_size, 4))  # fixed preview batch (never a training step)
        bar = None
        if cfg.progress:
            from tqdm.auto import tqdm
            bar = tqdm(total=total_steps, initial=min(self.step_no, total_steps), desc="smooth-GAN", unit="step")
        path = find_checkpoint(out) if (out / "last.pt").is_file() else None
        while self.step_no < total_steps:
            rec = self.step()
            if bar is not None:
                bar.update(1)
                bar.set_postfix(D=f"{rec['d_loss']:.3f}", adv=f"{rec['g_adv']:.3f}", rec=f"{rec['g_rec']:.3f}",
                                gap=f"{rec['gap']:.3f}")
            end_epoch = self.step_no % self.save_interval == 0 or self.step_no == total_steps
            if end_epoch:
                epoch = math.ceil(self.step_no / self.steps_per_epoch)
                path = self.save(out)
                if cfg.plots:
                    self.sample_grid(fixed, out / f"samples_epoch{epoch:03d}.png")
                    loss_curves_png(self.history, out / "loss_curves.png")
        if bar is not None:
            bar.close()
        if path is None:
            path = self.save(out)
        return TrainResult(checkpoint=path, step=self.step_no, history=self.history)


EVAL_STEP0 = 10**12 + 1  # batch indices of the evaluation batches: never training steps
D_STEP0 = 2 * 10**12  # batch indices of the extra discriminator updates (d_steps > 1)


def score_batches(trainer: Trainer, n: int) -> dict[str, float]:
    """:meth:`Trainer.evaluate` on ``n`` fixed batches (scored together) of :attr:`Trainer.eval_source`.

    For synthetic data those are new tiles that training never sees; for a tile
    directory without ``eval_data`` they are fresh crops and pastes of the training
    tiles at batch indices no training step draws.
    """
    src = trainer.eval_source
    batches = [src.batch(EVAL_STEP0 + i, trainer.cfg.batch_size) for i in range(n)]
    fields = ("anchor", "positive", "u", "paste_mask", "original_mask")
    merged = PastedBatch(*(torch.cat([getattr(b, f) for b in batches]) for f in fields))
    return trainer.evaluate(merged)


def train(config: GanTrainConfig, source: TileSource | None = None, evaluate_batches: int = 0) -> TrainResult:
    """Train (or resume) according to ``config``; returns the last checkpoint and the loss history.

    ``evaluate_batches > 0`` scores the model (reconstruction L1, discriminator
    separation of real vs blended tiles, :meth:`Trainer.evaluate`) on that many fixed
    batches of :attr:`Trainer.eval_source` before (fresh runs) and after training, and
    writes ``eval.json`` to the output folder.
    """
    n_eval = int(evaluate_batches)
    tr = Trainer(config, source)
    if config.resume:
        ck = Path(config.out) if config.resume == "auto" else Path(config.resume)
        tr.load(ck)
    if config.steps is not None:
        total = config.steps
    elif config.epochs is not None:
        total = config.epochs * tr.steps_per_epoch
    else:
        total = tr.steps_per_epoch
    if n_eval:
        tr.eval_source  # noqa: B018 — read the evaluation tiles now: a bad --eval-data fails before training
    before = score_batches(tr, n_eval) if n_eval and tr.step_no == 0 else {}
    res = tr.run(total)
    if n_eval:
        res.evaluation_start = before
        res.evaluation = score_batches(tr, n_eval)
        out = Path(config.out) / "eval.json"
        prev = json.loads(out.read_text()) if out.is_file() else {}
        rec = {"step": res.step, "batches": n_eval, "batch_size": config.batch_size, "data": tr.eval_description,
               "after": res.evaluation}
        rec["before"] = before or prev.get("before", {})
        write_text(out, json.dumps(rec, indent=2))
    return res
