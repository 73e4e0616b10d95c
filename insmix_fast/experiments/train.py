"""Training, inference, post-processing and evaluation of the segmenter.

* :func:`make_targets`: instance map → per-pixel class (0 background, 1 interior,
  2 boundary = instance pixels with a 4-neighbour of another value, thickened by
  ``boundary_width − 1`` dilations inside the instance).
* :func:`postprocess`: class probabilities → instance map. Markers are the
  8-connected components of ``p_interior > 0.5`` (those under ``min_size`` px
  dropped); every foreground pixel (``p_background < 0.5``) goes to the nearest
  marker (Euclidean, ``cv2.distanceTransformWithLabels``); foreground
  components without any marker become instances of their own; pieces below
  ``min_size`` are removed and split pieces relabelled
  (:func:`insmix_fast.data.clean_labels`).
* :func:`train_model`: the paper's recipe scaled by :class:`SegmenterTrainConfig` — random
  ``crop``×``crop`` crops, the augmentation arm (mix policy / InsMix) applied to a
  sample with probability ``p_mix``, then :class:`~insmix_fast.augment.TraditionalAugment`,
  Adam (weight decay 1e-4), cosine learning rate with warm restarts every
  ``restart_every`` steps; loss = cross-entropy (boundary class weighted) + soft
  Dice on the foreground.
* :func:`evaluate_model`: whole-image inference (reflect-padded to a multiple of
  32), post-processing and per-image metrics (:func:`insmix_fast.metrics.evaluate`).

**Typed data** (``class_names`` given: samples ``(image, labels, types)``): the model has
a *type head* — ``len(class_names)`` more output channels (background and each class) of the
same decoder — trained with cross-entropy on the type map (weight ``type_weight``) next to
the segmentation loss. Augmentation carries the types along: InsMix pastes keep their
template's class, the mix baselines take the partner's classes where they take its pixels,
and the traditional warp moves the type map with the instance map
(:func:`typed_augment`). At inference every predicted instance takes the class that most of
its pixels vote for (per-pixel argmax over the classes, background excluded; HoVer-Net's
rule), and :func:`evaluate_typed` adds PanNuke's mPQ and bPQ (tissue-averaged when the test
items carry a tissue) and CoNIC's mPQ⁺ (:mod:`insmix_fast.metrics`) per test group.

Every random choice is seeded by ``(seed, step)`` so a run is reproducible on one
device (GPU kernels may still differ in the last bits).
"""

from __future__ import annotations

import time
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from typing import Callable, Sequence

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from ..augment import TraditionalAugment
from ..baselines import make_rng
from ..devices import parse_device, torch_device
from ..errors import ConfigError
from ..validation import check_bool, check_int, check_number
from .model import N_CLASSES, ResUNet34, pad_to_multiple

__all__ = [
    "SegmenterTrainConfig",
    "make_targets",
    "postprocess",
    "random_crops",
    "train_model",
    "predict",
    "predict_typed",
    "evaluate_model",
    "evaluate_typed",
    "typed_augment",
    "majority_types",
    "TYPED_METRICS",
]

#: Data-set level metrics of typed evaluation (per test group), in report order.
TYPED_METRICS = ("mpq", "bpq", "mpq_plus")

_S_CROP = 21
_S_SELECT = 22


@dataclass
class SegmenterTrainConfig:
    """Training recipe of the segmenter (defaults: the paper's, scaled to a GPU run of one arm);
    the ``[train]`` table of an experiment config. (The smooth-GAN's training has
    :class:`insmix_fast.gan.train.GanTrainConfig`.)

    steps: optimiser steps in total.  batch_size, crop: crops per step and side.
    lr, weight_decay: Adam.  restart_every: steps per cosine cycle
    (``CosineAnnealingWarmRestarts(T_0=restart_every)``; the paper: 300 epochs,
    restart every 50).  lr_min: cosine floor.  p_mix: probability that a sample of
    the batch gets the arm's augmentation (the official InsMix code: 1/8).
    augment: parameters of :class:`TraditionalAugment` (``False``: none).
    width: encoder base width (64 = ResNet-34).  boundary_width: target boundary
    thickness in px.  boundary_weight: CE weight of the boundary class.
    min_size: smallest predicted instance kept (px).  type_weight: weight of the type
    head's cross-entropy (typed data only).  device: "auto", "cpu",
    "cuda".  threads: torch CPU threads (0 = torch's default).  amp: bf16
    autocast on CUDA.  log_every: loss history stride.  workers: threads that
    prepare batches ahead of the optimiser (0: in the main thread); a batch is
    a pure function of (seed, step), so the result does not depend on it.
    """

    steps: int = 9600
    batch_size: int = 8
    crop: int = 256
    lr: float = 1e-3
    lr_min: float = 1e-6
    weight_decay: float = 1e-4
    restart_every: int = 1600
    p_mix: float = 0.5
    augment: dict | bool = field(default_factory=dict)
    width: int = 64
    boundary_width: int = 1
    boundary_weight: float = 2.0
    min_size: int = 10
    type_weight: float = 1.0
    device: str = "auto"
    threads: int = 0
    amp: bool = True
    log_every: int = 10
    workers: int = 0

    def __post_init__(self):
        for name in ("steps", "batch_size", "crop", "restart_every", "width", "boundary_width", "min_size", "log_every"):
            check_int(f"train.{name}", getattr(self, name), 1)
        if self.crop % 32:
            raise ConfigError(f"train.crop must be a multiple of 32, got {self.crop}")
        for name, lo, hi in (("lr", 0, 10), ("lr_min", 0, 10), ("weight_decay", 0, 1), ("p_mix", 0, 1), ("boundary_weight", 0, 100),
                             ("type_weight", 0, 100)):
            check_number(f"train.{name}", getattr(self, name), lo, hi)
        parse_device(self.device, name="train.device", allow_auto=True)
        check_int("train.workers", self.workers, 0)
        check_int("train.threads", self.threads, 0)
        check_bool("train.amp", self.amp)
        if not isinstance(self.augment, (dict, bool)):
            raise ConfigError("train.augment must be a table of TraditionalAugment parameters or a bool")
        if isinstance(self.augment, dict):
            try:
                TraditionalAugment(**self.augment)
            except TypeError as e:
                raise ConfigError(f"train.augment: {e}") from e

    def make_augment(self) -> TraditionalAugment | None:
        if self.augment is False:
            return None
        return TraditionalAugment(**(self.augment if isinstance(self.augment, dict) else {}))

    def to_dict(self) -> dict:
        return asdict(self)


# --------------------------------------------------------------------------- targets / post-processing


def make_targets(labels: np.ndarray, boundary_width: int = 2) -> np.ndarray:
    """H×W (or N×H×W) instance map(s) → uint8 class map(s): 0 bg, 1 interior, 2 boundary."""
    lab = np.asarray(labels)
    if lab.ndim == 3:
        return np.stack([make_targets(x, boundary_width) for x in lab])
    p = np.pad(lab, 1, mode="edge")
    c = p[1:-1, 1:-1]
    edge = (c != p[:-2, 1:-1]) | (c != p[2:, 1:-1]) | (c != p[1:-1, :-2]) | (c != p[1:-1, 2:])
    fg = lab > 0
    bnd = edge & fg
    if boundary_width > 1:
        bnd = cv2.dilate(bnd.astype(np.uint8), np.ones((3, 3), np.uint8), iterations=boundary_width - 1).astype(bool) & fg
    out = fg.astype(np.uint8)
    out[bnd] = 2
    return out


def postprocess(prob: np.ndarray, min_size: int = 10) -> np.ndarray:
    """3×H×W class probabilities (bg, interior, boundary) → H×W int32 instance map."""
    from ..data.labels import clean_labels

    prob = np.asarray(prob, np.float32)
    interior = (prob[1] > 0.5).astype(np.uint8)
    fg = prob[0] < 0.5
    n, markers = cv2.connectedComponents(interior, connectivity=8, ltype=cv2.CV_32S)
    if n > 1:
        area = np.bincount(markers.ravel(), minlength=n)
        small = area < min_size
        small[0] = False
        if small.any():
            markers[small[markers]] = 0
    out = np.zeros(fg.shape, np.int32)
    if markers.any():
        src = (markers == 0).astype(np.uint8)
        _, near = cv2.distanceTransformWithLabels(src, cv2.DIST_L2, 5, labelType=cv2.DIST_LABEL_PIXEL)
        # DIST_LABEL_PIXEL: every zero pixel of src (a marker pixel) has its own label
        lut = np.zeros(int(near.max()) + 1, np.int32)
        lut[near[markers > 0]] = markers[markers > 0]
        out = np.where(fg | (markers > 0), lut[near], 0).astype(np.int32)
    # foreground blobs that hold no marker become instances of their own
    rest = (fg & (out == 0)).astype(np.uint8)
    if rest.any():
        k, comp = cv2.connectedComponents(rest, connectivity=8, ltype=cv2.CV_32S)
        top = int(out.max())
        out[comp > 0] = comp[comp > 0] + top
    return clean_labels(out, min_size=max(1, int(min_size)), fill_holes=True, split="relabel")


# --------------------------------------------------------------------------- data


def random_crops(samples: Sequence, n: int, crop: int, seed: int, step: int) -> tuple[np.ndarray, ...]:
    """``n`` crops (uniform image, uniform position; reflect-padded when an image is
    smaller than ``crop``) seeded by (seed, step): ``(images, labels)``, and ``types`` when the
    samples are typed ``(image, labels, types)``."""
    from ..data.labels import clean_labels

    rng = make_rng(seed, step, _S_CROP)
    imgs = np.empty((n, crop, crop, 3), np.uint8)
    labs = np.empty((n, crop, crop), np.int32)
    typs = None
    for k in range(n):
        sample = samples[int(rng.integers(len(samples)))]
        img, lab = sample[0], sample[1]
        typ = sample[2] if len(sample) > 2 else None
        if k == 0 and typ is not None:
            typs = np.empty((n, crop, crop), np.int32)
        H, W = lab.shape
        if H < crop or W < crop:
            ph, pw = max(0, crop - H), max(0, crop - W)
            img = np.pad(img, ((0, ph), (0, pw), (0, 0)), mode="constant", constant_values=0)
            lab = np.pad(lab, ((0, ph), (0, pw)), mode="constant")
            typ = None if typ is None else np.pad(typ, ((0, ph), (0, pw)), mode="constant")
            H, W = lab.shape
        y = int(rng.integers(H - crop + 1))
        x = int(rng.integers(W - crop + 1))
        imgs[k] = img[y : y + crop, x : x + crop]
        labs[k] = clean_labels(lab[y : y + crop, x : x + crop], fill_holes=False)  # a crop can cut an instance in two
        if typs is not None:
            # pieces keep their pixels (relabelled or dropped, never filled): the crop's classes where labels remain
            typs[k] = np.where(labs[k] > 0, typ[y : y + crop, x : x + crop], 0)
    return (imgs, labs) if typs is None else (imgs, labs, typs)


def majority_types(labels: np.ndarray, votes: np.ndarray) -> np.ndarray:
    """The type map giving every instance of ``labels`` the class (≥ 1) most of its pixels have in
    ``votes`` (ties: the smaller class; an instance with no classed pixel gets 0). H×W int32."""
    lab = np.asarray(labels, np.int64)
    v = np.asarray(votes, np.int64)
    k = int(lab.max()) if lab.size else 0
    if k == 0:
        return np.zeros(lab.shape, np.int32)
    c = int(v.max()) + 1 if v.size else 1
    fg = (lab > 0) & (v > 0)
    counts = np.bincount(lab[fg] * c + v[fg], minlength=(k + 1) * c).reshape(k + 1, c)
    counts[:, 0] = 0
    cls = np.where(counts.max(axis=1) > 0, counts.argmax(axis=1), 0).astype(np.int32)
    cls[0] = 0
    return cls[lab]


def typed_augment(aug, images: np.ndarray, labels: np.ndarray, types: np.ndarray, seed: int, indices
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """:meth:`TraditionalAugment.batch` for typed crops: the images and instance maps exactly as
    the untyped call gives them, and the type maps warped by each sample's affine matrix
    (``aug.affine_matrix``, nearest neighbour, reflected border) with every output instance
    then given its pixels' majority class (:func:`majority_types`), so each has one class
    even where the warp rounds a boundary pixel differently."""
    out_i, out_l = aug.batch(images, labels, seed=seed, indices=indices)
    out_t = np.empty_like(out_l)
    for b in range(len(images)):
        h, w = labels.shape[1:]
        m = aug.affine_matrix((h, w), seed, int(indices[b]))
        if np.allclose(m, [[1, 0, 0], [0, 1, 0]]):
            moved = types[b]
        else:
            moved = cv2.warpAffine(np.ascontiguousarray(types[b], np.int32), m, (w, h), flags=cv2.INTER_NEAREST,
                                   borderMode=cv2.BORDER_REFLECT_101)
        out_t[b] = majority_types(out_l[b], moved)
    return out_i, out_l, out_t


def _to_tensor(images: np.ndarray, device) -> torch.Tensor:
    x = torch.from_numpy(np.ascontiguousarray(images)).to(device)
    x = x.permute(0, 3, 1, 2).contiguous().float().div_(127.5).sub_(1.0)
    return x


# --------------------------------------------------------------------------- training


def _loss(logits, target, boundary_weight):
    w = torch.tensor([1.0, 1.0, boundary_weight], device=logits.device, dtype=logits.dtype)
    ce = F.cross_entropy(logits, target, weight=w)
    p = logits.float().softmax(1)
    fg_p = 1 - p[:, 0]
    fg_t = (target > 0).float()
    inter = (fg_p * fg_t).sum()
    dice = 1 - (2 * inter + 1) / (fg_p.sum() + fg_t.sum() + 1)
    return ce + dice


def _type_targets(labels: np.ndarray, types: np.ndarray) -> np.ndarray:
    """Per-pixel type target: the class (0 on background); -1 (ignored) on instance pixels without one."""
    t = np.asarray(types, np.int64).copy()
    t[(labels > 0) & (t <= 0)] = -1
    return t


def train_model(
    train_samples: Sequence,
    cfg: SegmenterTrainConfig,
    seed: int = 0,
    policy: Callable | None = None,
    progress: bool | None = None,
    desc: str = "train",
    callback: Callable | None = None,
    class_names: Sequence[str] | None = None,
) -> tuple[ResUNet34, dict]:
    """Train a fresh :class:`ResUNet34` on ``train_samples`` (a sequence of
    ``(image, labels)``); ``policy(images, labels, seed, indices) -> (images, labels)``
    is the augmentation arm (``None``: traditional augmentation only).

    Typed data: ``class_names`` (``[0] == "background"``) and samples ``(image, labels,
    types)``; the model gets a type head (``model.class_names`` is set) and the policy is
    called with ``types=`` and returns ``(images, labels, types)`` (it must have
    ``policy.typed``; see the module docstring).

    Returns ``(model, history)``; history has ``loss`` (mean per ``log_every``
    steps), ``steps``, ``seconds``, ``device``.
    """
    if len(train_samples) == 0:
        raise ConfigError("no training samples")
    typed = class_names is not None
    if typed:
        class_names = tuple(class_names)
        if len(class_names) < 2 or class_names[0] != "background":
            raise ConfigError(f"class_names must be 'background' then the classes, got {class_names!r}")
        if len(train_samples[0]) < 3:
            raise ConfigError("class_names given but the training samples are untyped (image, labels) pairs")
        if policy is not None and not getattr(policy, "typed", False):
            raise ConfigError(f"the augmentation policy {getattr(policy, '__name__', policy)!r} cannot carry "
                              "nucleus types")
    n_types = len(class_names) if typed else 0
    device = torch_device(cfg.device, name="train.device", allow_auto=True)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    torch.manual_seed(seed)
    model = ResUNet34(cfg.width, N_CLASSES + n_types).to(device)
    model.class_names = class_names
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.CosineAnnealingWarmRestarts(opt, T_0=cfg.restart_every, eta_min=cfg.lr_min)
    aug = cfg.make_augment()
    amp = cfg.amp and device.type == "cuda"
    hist = {"loss": [], "steps": cfg.steps, "device": str(device)}
    t0 = time.perf_counter()
    acc, nacc = 0.0, 0
    model.train()
    bar = tqdm(range(cfg.steps), desc=desc, leave=False, disable=None if progress is None else not progress)
    def prepare(step):
        crops = random_crops(train_samples, cfg.batch_size, cfg.crop, seed, step)
        imgs, labs = crops[0], crops[1]
        typs = crops[2] if typed else None
        idx = np.arange(cfg.batch_size) + step * cfg.batch_size
        if policy is not None and cfg.p_mix > 0:
            sel = make_rng(seed, step, _S_SELECT).random(cfg.batch_size) < cfg.p_mix
            if sel.any():
                kw = {} if typs is None else {"types": typs}
                if getattr(policy, "thread_safe", False):
                    mixed = policy(imgs, labs, seed, idx, **kw)
                else:  # e.g. Numba parallel kernels: one call at a time
                    with lock:
                        mixed = policy(imgs, labs, seed, idx, **kw)
                imgs[sel], labs[sel] = mixed[0][sel], mixed[1][sel]
                if typs is not None:
                    typs[sel] = mixed[2][sel]
        if aug is not None:
            if typs is None:
                imgs, labs = aug.batch(imgs, labs, seed=seed, indices=idx)
            else:
                imgs, labs, typs = typed_augment(aug, imgs, labs, typs, seed, idx)
        targets = make_targets(labs, cfg.boundary_width)
        return imgs, targets, (None if typs is None else _type_targets(labs, typs))

    lock = threading.Lock()
    pool = ThreadPoolExecutor(cfg.workers) if cfg.workers else None
    ahead = 2 * cfg.workers
    futures = {}
    for step in bar:
        if pool is not None:
            for s in range(step, min(step + ahead + 1, cfg.steps)):
                if s not in futures:
                    futures[s] = pool.submit(prepare, s)
            imgs, tgt_np, type_np = futures.pop(step).result()
        else:
            imgs, tgt_np, type_np = prepare(step)
        tgt = torch.from_numpy(tgt_np.astype(np.int64)).to(device, non_blocking=True)
        x = _to_tensor(imgs, device)
        with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=amp):
            logits = model(x)
        logits = logits.float()
        loss = _loss(logits[:, :N_CLASSES], tgt, cfg.boundary_weight)
        if typed:
            type_tgt = torch.from_numpy(type_np).to(device, non_blocking=True)
            loss = loss + cfg.type_weight * F.cross_entropy(logits[:, N_CLASSES:], type_tgt, ignore_index=-1)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        acc = acc + loss.detach()  # stays on the device: no sync per step
        nacc += 1
        if nacc == cfg.log_every or step == cfg.steps - 1:
            hist["loss"].append(float(acc) / nacc)
            bar.set_postfix(loss=f"{hist['loss'][-1]:.3f}")
            acc, nacc = 0.0, 0
        if callback is not None:
            callback(step, model)
    if pool is not None:
        pool.shutdown(wait=True, cancel_futures=True)
    hist["seconds"] = time.perf_counter() - t0
    return model, hist


# --------------------------------------------------------------------------- inference / evaluation


@torch.no_grad()
def _probabilities(model: ResUNet34, image: np.ndarray, tile: int = 1024) -> np.ndarray:
    """Per-pixel probabilities of one H×W×3 uint8 image, C×H×W: the 3 segmentation classes
    (softmax), then — with a type head — the type classes (their own softmax). The whole image
    at once when it fits in ``tile``×``tile``, otherwise overlapping tiles averaged."""
    device = next(model.parameters()).device
    was = model.training
    model.eval()

    def run(x):
        out = model(x).float()
        parts = [out[:, :N_CLASSES].softmax(1)]
        if out.shape[1] > N_CLASSES:
            parts.append(out[:, N_CLASSES:].softmax(1))
        return torch.cat(parts, 1)

    H, W = image.shape[:2]
    if H <= tile and W <= tile:
        x, _ = pad_to_multiple(_to_tensor(image[None], device))
        prob = run(x)[0, :, :H, :W].cpu().numpy()
    else:
        step = tile - 128
        acc = None
        cnt = np.zeros((H, W), np.float32)
        for y in list(range(0, max(H - tile, 0), step)) + [max(H - tile, 0)]:
            for x0 in list(range(0, max(W - tile, 0), step)) + [max(W - tile, 0)]:
                t = image[y : y + tile, x0 : x0 + tile]
                xt, _ = pad_to_multiple(_to_tensor(t[None], device))
                p = run(xt)[0, :, : t.shape[0], : t.shape[1]].cpu().numpy()
                if acc is None:
                    acc = np.zeros((p.shape[0], H, W), np.float32)
                acc[:, y : y + t.shape[0], x0 : x0 + t.shape[1]] += p
                cnt[y : y + t.shape[0], x0 : x0 + t.shape[1]] += 1
        prob = acc / cnt
    model.train(was)
    return prob


def predict(model: ResUNet34, image: np.ndarray, min_size: int = 10, tile: int = 1024) -> np.ndarray:
    """Instance map of one H×W×3 uint8 image (whole image at once when it fits in
    ``tile``×``tile``, otherwise overlapping tiles averaged)."""
    return postprocess(_probabilities(model, image, tile)[:N_CLASSES], min_size)


def predict_typed(model: ResUNet34, image: np.ndarray, min_size: int = 10, tile: int = 1024
                  ) -> tuple[np.ndarray, np.ndarray]:
    """``(labels, types)`` of one image from a model with a type head: the instance map as
    :func:`predict`, each instance of the class most of its pixels vote for (per-pixel argmax
    over the classes, background excluded)."""
    prob = _probabilities(model, image, tile)
    if prob.shape[0] <= N_CLASSES + 1:
        raise ConfigError("predict_typed needs a model with a type head (trained with class_names)")
    labels = postprocess(prob[:N_CLASSES], min_size)
    votes = prob[N_CLASSES + 1:].argmax(0).astype(np.int32) + 1
    return labels, majority_types(labels, np.where(labels > 0, votes, 0))


def _count(labels: np.ndarray) -> int:
    return int(len(np.unique(labels)) - (labels == 0).any())


def evaluate_model(model: ResUNet34, test_items: Sequence, min_size: int = 10) -> list[dict]:
    """Per-image metrics. ``test_items``: sequence of ``(name, group, image, labels)``.
    Returns one dict per image: name, group, dice, aji, aji_plus, pq, dq, sq, n_true, n_pred."""
    from ..metrics import evaluate

    rows = []
    for name, group, image, labels, *_ in test_items:
        pred = predict(model, image, min_size)
        m = evaluate(labels, pred)
        rows.append({
            "image": name,
            "group": group,
            **{k: float(m[k]) for k in ("dice", "aji", "aji_plus", "pq", "dq", "sq")},
            "n_true": _count(labels),
            "n_pred": _count(pred),
        })
    return rows


def evaluate_typed(model: ResUNet34, test_items: Sequence, class_names: Sequence[str], min_size: int = 10
                   ) -> tuple[list[dict], dict]:
    """Typed evaluation. ``test_items``: ``(name, group, image, labels, types[, tissue])``.

    Returns ``(rows, summary)``: ``rows`` as :func:`evaluate_model`'s plus each image's PanNuke
    ``mpq`` and ``bpq`` (``nan`` when its ground truth has no nucleus); ``summary[group]`` and
    ``summary["all"]``: ``{"mpq", "bpq", "mpq_plus", "per_class": {name: PQ}, "n_images"}`` —
    PanNuke's mPQ/bPQ (:class:`~insmix_fast.metrics.PanNukeScores`: averaged over tissues when
    the items give one) and CoNIC's mPQ⁺ (:class:`~insmix_fast.metrics.MPQPlus`, pooled)."""
    from ..metrics import MPQPlus, PanNukeScores, evaluate

    names = tuple(class_names)
    n = len(names) - 1
    acc: dict = {}
    rows = []
    for item in test_items:
        name, group, image, labels, types = item[:5]
        tissue = item[5] if len(item) > 5 else None
        pred, pred_types = predict_typed(model, image, min_size)
        m = evaluate(labels, pred)
        per_image = None
        for g in dict.fromkeys(("all", group)):
            if g not in acc:
                acc[g] = (PanNukeScores(n, class_names=names), MPQPlus(n, class_names=names))
            pan, plus = acc[g]
            got = pan.update(labels, types, pred, pred_types, tissue=tissue)
            plus.update(labels, types, pred, pred_types)
            per_image = per_image or got
        rows.append({
            "image": name,
            "group": group,
            **{k: float(m[k]) for k in ("dice", "aji", "aji_plus", "pq", "dq", "sq")},
            "mpq": float(per_image["mpq"]),
            "bpq": float(per_image["bpq"]),
            "n_true": _count(labels),
            "n_pred": _count(pred),
        })
    summary = {}
    for g, (pan, plus) in acc.items():
        a, b = pan.compute(), plus.compute()
        summary[g] = {"mpq": float(a["mpq"]), "bpq": float(a["bpq"]), "mpq_plus": float(b["mpq_plus"]),
                      "per_class": {str(k): float(v) for k, v in a["per_class"].items()},
                      "n_images": int(a["n_images"])}
    return rows, summary
