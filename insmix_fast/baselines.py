"""Mix-based augmentation baselines for *instance* label maps (paper Table 2).

Each policy is a small class with explicit parameters (defaults from the
policy's own paper, in the style of timm's ``mixup.py``) whose ``__call__``
mixes one sample with one partner:

>>> from insmix_fast.data.synthetic import SyntheticNuclei
>>> (image, labels), (partner_image, partner_labels) = SyntheticNuclei(seed=0, size=64, length=2)[:]
>>> res = CutMix()(image, labels, partner_image, partner_labels, seed=0, index=3)
>>> res.image.shape, res.labels.dtype, res.mask.shape, 0.0 <= res.lam <= 1.0
((64, 64, 3), dtype('int32'), (64, 64), True)

and a functional helper of the same name in lower case (``mixup``, ``cutout``,
``cutmix``, ``cowout``, ``cowmix``, ``copy_paste``).  ``policy.batch(images,
labels, seed, indices=None)`` mixes an N×H×W×3 / N×H×W batch; the partner of
sample ``i`` is ``partners[i]`` from a seeded random derangement of the batch
(N ≥ 2; for N = 1 the sample is its own partner), keyed by ``(seed,
indices[0])``.  Sample ``i`` of a batch is
exactly what the single call gives with ``index = indices[i]`` (default ``i``)
and that partner.

Label-map rules (all policies)
------------------------------
* The partner's ids are offset by the first sample's maximum id, so every id of
  the result names one instance of one source.
* ``mask`` (H×W bool) marks where the partner (or the cut) applies.
* After mixing, the map is cleaned with
  :func:`insmix_fast.data.labels.relabel_pieces` (8-connectivity, no hole filling): a piece
  of an instance that a mask cut off from the rest gets a new unique id (the
  largest piece keeps the old id); any piece smaller than ``min_area`` pixels
  (default 8) becomes background.  So every id of the output is one connected
  piece and no tiny orphan fragments remain.  The image is not changed by this
  step: a dropped fragment's pixels keep their appearance but are labelled 0.
* **MixUp** blends the *images* ``lam·a + (1−lam)·b`` (rounded), and the label
  map is that of the **dominant source per pixel**: the weight is uniform over
  the tile, so all pixels take the labels of ``a`` when ``lam ≥ 0.5`` and those
  of ``b`` (offset ids) otherwise; ``mask`` is all True in the second case.
  Instances of the non-dominant source remain visible, unlabelled, in the image
  — that is the known weakness of MixUp for segmentation that the paper notes.
* **CutOut/CowOut** fill the cut pixels with ``fill`` (default 0, as DeVries &
  Taylor) and set their labels to 0.
* **CutMix/CowMix** take image and labels from the partner inside the mask.
* **Copy-Paste** pastes a random subset of the partner's instances at their own
  positions (optionally after a random rescale of the partner, Ghiasi et al.'s
  scale jitter); a pasted instance takes over the pixels it occludes.

Randomness: ``numpy.random.Generator(Philox(key=(seed, index)))`` with one
counter block per stream, so the output is a pure function of
(inputs, parameters, seed, index).
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass, field

import cv2
import numpy as np

from .data.labels import relabel_pieces
from .errors import ConfigError, InputError
from .validation import check_batch, check_indices, check_int, check_number, check_pair, check_sample, check_seed

__all__ = [
    "keyed_rng",
    "MixResult",
    "MixPolicy",
    "MixUp",
    "CutOut",
    "CutMix",
    "CowOut",
    "CowMix",
    "CopyPaste",
    "mixup",
    "cutout",
    "cutmix",
    "cowout",
    "cowmix",
    "copy_paste",
    "cow_mask",
    "partner_permutation",
    "make_rng",
    "POLICIES",
]

_U64 = (1 << 64) - 1
_INT32_MAX = int(np.iinfo(np.int32).max)

# streams (counter word 3) — one per kind of decision
_S_PARAM = 1  # lam / proportion / box
_S_MASK = 2  # cow-mask noise, instance subset
_S_PERM = 3  # batch partner permutation


def make_rng(seed: int, index: int = 0, stream: int = 0) -> np.random.Generator:
    """Counter-based generator keyed by ``(seed, index)``; ``stream`` picks a counter block.

    >>> a, b = make_rng(7, index=3).random(2), make_rng(7, index=3).random(2)
    >>> bool((a == b).all()), bool((make_rng(7, index=4).random(2) == a).any())
    (True, False)
    """
    seed = check_seed(seed)
    index = check_int("index", index, 0, _U64, error=InputError)
    key = np.array([seed, index], dtype=np.uint64)
    counter = np.array([0, 0, 0, int(stream)], dtype=np.uint64)
    return np.random.Generator(np.random.Philox(key=key, counter=counter))


_KEYED = threading.local()


def keyed_rng(seed: int, index: int, stream: int = 0) -> np.random.Generator:
    """The generator of :func:`~insmix_fast.baselines.make_rng` ``(seed, index, stream)`` — the same
    draws — made by re-keying one Philox per thread instead of building a new one (which also
    reads OS entropy first): ~4 µs instead of ~10 µs, paid per sample. Valid until the next call
    in the same thread (a loop that needs one generator per sample at a time, not two at once).
    ``seed``, ``index`` and ``stream`` are Python or numpy integers in ``[0, 2**64)`` (one range
    test: the full checks of :func:`make_rng` would cost what this saves).

    >>> a = make_rng(7, index=3, stream=1).random(2)
    >>> bool((keyed_rng(7, 3, 1).random(2) == a).all())
    True
    """
    if not (0 <= seed <= _U64 and 0 <= index <= _U64 and 0 <= stream <= _U64):
        bad = next(f"{k}={v!r}" for k, v in (("seed", seed), ("index", index), ("stream", stream))
                   if not 0 <= v <= _U64)
        raise InputError(f"keyed_rng: {bad} is outside [0, 2**64)")
    g = getattr(_KEYED, "g", None)
    if g is None:
        g = _KEYED.g = np.random.Generator(np.random.Philox(0))
    g.bit_generator.state = {"bit_generator": "Philox",
                             "state": {"counter": np.array([0, 0, 0, stream], np.uint64),
                                       "key": np.array([seed, index], np.uint64)},
                             "buffer": np.zeros(4, np.uint64), "buffer_pos": 4, "has_uint32": 0, "uinteger": 0}
    return g


@dataclass
class MixResult:
    """Output of one mix (or a batch of them: arrays stacked on a leading N axis).

    Attributes:
        image: H×W×3 uint8 (N×H×W×3 for a batch).
        labels: H×W int32 instance map (N×H×W).
        mask: H×W bool, where the partner / the cut applies (N×H×W).
        lam: fraction of the result that comes from the first sample — for MixUp
            the blending weight, otherwise ``1 − mask.mean()`` (float, or (N,) array).
        partners: for a batch, the partner index of each sample; ``None`` otherwise.
    """

    image: np.ndarray
    labels: np.ndarray
    mask: np.ndarray
    lam: float | np.ndarray
    partners: np.ndarray | None = field(default=None)


# --------------------------------------------------------------------------- helpers


def _fill_value(fill) -> np.ndarray:
    arr = np.asarray(fill)
    if arr.ndim == 0:
        arr = np.repeat(arr, 3)
    if arr.shape != (3,) or not np.issubdtype(arr.dtype, np.number) or arr.min() < 0 or arr.max() > 255:
        raise ConfigError(f"fill must be a value or an RGB triple in [0, 255], got {fill!r}")
    return arr.astype(np.uint8)


def _offset_partner(labels: np.ndarray, partner_labels: np.ndarray) -> np.ndarray:
    """Partner ids shifted above the first map's ids (0 stays 0)."""
    off = int(labels.max()) if labels.size else 0
    top = int(partner_labels.max()) if partner_labels.size else 0
    if off + top > _INT32_MAX:
        raise InputError(f"ids too large to combine: max {off} + partner max {top} exceeds int32; relabel first")
    out = partner_labels.astype(np.int32, copy=True)
    out[out > 0] += off
    return out


def _check_pair(image, labels, partner_image, partner_labels, need_partner: bool = True):
    image, labels = check_sample(image, labels, "sample")
    if not need_partner and partner_image is None:
        return image, labels, None, None
    pimage, plabels = check_sample(partner_image, partner_labels, "partner")
    if pimage.shape != image.shape:
        raise InputError(f"partner image shape {pimage.shape} differs from image shape {image.shape}")
    return image, labels, pimage, plabels


def partner_permutation(n: int, seed: int, index: int = 0) -> np.ndarray:
    """Partner index for each of ``n`` samples, seeded by ``(seed, index)``: a random
    derangement (a random cyclic order, each sample paired with the next) when
    n ≥ 2, ``[0]`` when n = 1. :meth:`MixPolicy.batch` keys it by the batch's
    first sample index, so consecutive batches get different pairings."""
    if n < 1:
        raise InputError(f"batch size must be ≥ 1, got {n}")
    if n == 1:
        return np.zeros(1, np.int64)
    order = make_rng(seed, index, _S_PERM).permutation(n)
    partners = np.empty(n, np.int64)
    partners[order] = np.roll(order, -1)
    return partners


def _rand_box(rng: np.random.Generator, H: int, W: int, cut_h: int, cut_w: int) -> tuple[int, int, int, int]:
    """Box of size cut_h×cut_w centred uniformly in the tile, clipped (DeVries / Yun et al.)."""
    cy = int(rng.integers(0, H))
    cx = int(rng.integers(0, W))
    y0 = max(cy - cut_h // 2, 0)
    y1 = min(cy + cut_h - cut_h // 2, H)
    x0 = max(cx - cut_w // 2, 0)
    x1 = min(cx + cut_w - cut_w // 2, W)
    return y0, y1, x0, x1


def cow_mask(shape: tuple[int, int], prop: float, sigma: float, rng: np.random.Generator) -> np.ndarray:
    """A cow mask (French et al. 2020): Gaussian-smoothed white noise thresholded so
    that a fraction ``prop`` of the pixels is True (exact up to ties: the threshold
    is the empirical quantile of the smoothed noise rather than the Gaussian
    ``erfinv`` approximation of the original code, so the promised proportion holds
    on small tiles too)."""
    H, W = int(shape[0]), int(shape[1])
    noise = rng.standard_normal((H, W)).astype(np.float32)
    k = int(2 * math.ceil(3 * sigma) + 1)
    smooth = cv2.GaussianBlur(noise, (k, k), sigmaX=sigma, sigmaY=sigma, borderType=cv2.BORDER_REFLECT_101)
    n_true = int(round(prop * H * W))
    if n_true <= 0:
        return np.zeros((H, W), bool)
    if n_true >= H * W:
        return np.ones((H, W), bool)
    flat = smooth.ravel()
    order = np.argpartition(flat, n_true - 1)[:n_true]
    mask = np.zeros(H * W, bool)
    mask[order] = True
    return mask.reshape(H, W)


def _cut_out(image, labels, mask, fill):
    """``mask`` pixels filled with ``fill`` and labelled 0 → (image, labels, mask, kept fraction)."""
    out = image.copy()
    out[mask] = np.asarray(fill, np.uint8)
    lab = labels.copy()
    lab[mask] = 0
    return out, lab, mask, 1.0 - float(mask.mean())


def _mix_in(image, labels, pimage, plabels, mask):
    """``mask`` pixels taken from the partner (its ids offset past ours) → (image, labels, mask, kept fraction)."""
    out = image.copy()
    out[mask] = pimage[mask]
    lab = labels.copy()
    lab[mask] = _offset_partner(labels, plabels)[mask]
    return out, lab, mask, 1.0 - float(mask.mean())


def _log_uniform(rng: np.random.Generator, lo: float, hi: float) -> float:
    return float(math.exp(rng.uniform(math.log(lo), math.log(hi)))) if hi > lo else float(lo)


# --------------------------------------------------------------------------- base class


class MixPolicy:
    """Base class: ``__call__`` mixes one pair, :meth:`batch` a whole batch."""

    name = "policy"
    needs_partner = True

    def __init__(self, min_area: int = 8):
        self.min_area = check_int("min_area", min_area, 1)

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in vars(self).items())
        return f"{type(self).__name__}({args})"

    def _mix(self, image, labels, pimage, plabels, rng_param, rng_mask) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
        raise NotImplementedError

    def __call__(self, image, labels, partner_image=None, partner_labels=None, seed: int = 0, index: int = 0) -> MixResult:
        image, labels, pimage, plabels = _check_pair(image, labels, partner_image, partner_labels, self.needs_partner)
        seed = check_seed(seed)
        rp = make_rng(seed, index, _S_PARAM)
        rm = make_rng(seed, index, _S_MASK)
        out_img, out_lab, mask, lam = self._mix(image, labels, pimage, plabels, rp, rm)
        return MixResult(out_img, relabel_pieces(out_lab, self.min_area), mask, float(lam))

    def batch(self, images, labels, seed: int = 0, indices=None) -> MixResult:
        """Mix every sample of an N×H×W×3 batch with a seeded partner from the batch."""
        images, labels = check_batch(images, labels)
        seed = check_seed(seed)
        n = images.shape[0]
        indices = check_indices(indices, n)
        partners = partner_permutation(n, seed, int(indices[0]))
        out_i = np.empty_like(images)
        out_l = np.empty_like(labels)
        out_m = np.empty(labels.shape, bool)
        lams = np.empty(n, np.float64)
        for i in range(n):
            j = int(partners[i])
            r = self(images[i], labels[i], images[j], labels[j], seed=seed, index=int(indices[i]))
            out_i[i], out_l[i], out_m[i], lams[i] = r.image, r.labels, r.mask, r.lam
        return MixResult(out_i, out_l, out_m, lams, partners)


# --------------------------------------------------------------------------- policies


class MixUp(MixPolicy):
    """MixUp (Zhang et al., ICLR 2018): ``lam ~ Beta(alpha, alpha)``; image
    ``round(lam·a + (1−lam)·b)``; labels of the dominant source (see module doc).

    Args:
        alpha: Beta parameter (0.2, the paper's ImageNet setting).
        min_area: fragments smaller than this become background.
    """

    name = "mixup"

    def __init__(self, alpha: float = 0.2, min_area: int = 8):
        super().__init__(min_area)
        self.alpha = check_number("alpha", alpha, 0.0, lo_open=True)

    def _mix(self, image, labels, pimage, plabels, rp, rm):
        lam = float(rp.beta(self.alpha, self.alpha))
        blend = lam * image.astype(np.float32) + (1.0 - lam) * pimage.astype(np.float32)
        out = np.clip(np.rint(blend), 0, 255).astype(np.uint8)
        if lam >= 0.5:
            return out, labels.copy(), np.zeros(labels.shape, bool), lam
        return out, _offset_partner(labels, plabels), np.ones(labels.shape, bool), lam


class CutOut(MixPolicy):
    """CutOut (DeVries & Taylor 2017): ``n_holes`` squares of side ``size``·min(H, W)
    centred uniformly in the tile (clipped at the border) are filled with ``fill``;
    labels there become 0.  No partner is needed.

    Args:
        size: side of the square as a fraction of min(H, W) (0.5: their CIFAR-10 16/32).
        n_holes: number of squares.
        fill: fill value (scalar or RGB triple).
    """

    name = "cutout"
    needs_partner = False

    def __init__(self, size: float = 0.5, n_holes: int = 1, fill=0, min_area: int = 8):
        super().__init__(min_area)
        self.size = check_number("size", size, 0.0, 1.0, lo_open=True)
        self.n_holes = check_int("n_holes", n_holes, 1)
        self.fill = tuple(int(v) for v in _fill_value(fill))

    def _mix(self, image, labels, pimage, plabels, rp, rm):
        H, W = labels.shape
        side = max(1, int(round(self.size * min(H, W))))
        mask = np.zeros((H, W), bool)
        for _ in range(self.n_holes):
            y0, y1, x0, x1 = _rand_box(rp, H, W, side, side)
            mask[y0:y1, x0:x1] = True
        return _cut_out(image, labels, mask, self.fill)


class CutMix(MixPolicy):
    """CutMix (Yun et al., ICCV 2019): ``lam ~ Beta(alpha, alpha)``, a box of area
    ``(1−lam)·H·W`` (sides ``sqrt(1−lam)``·H, ·W) centred uniformly, clipped;
    image and labels come from the partner inside the box.  ``lam`` returned is
    the corrected value ``1 − box area / (H·W)``.

    Args:
        alpha: Beta parameter (1.0 as in the paper).
    """

    name = "cutmix"

    def __init__(self, alpha: float = 1.0, min_area: int = 8):
        super().__init__(min_area)
        self.alpha = check_number("alpha", alpha, 0.0, lo_open=True)

    def _mix(self, image, labels, pimage, plabels, rp, rm):
        H, W = labels.shape
        lam = float(rp.beta(self.alpha, self.alpha))
        r = math.sqrt(1.0 - lam)
        y0, y1, x0, x1 = _rand_box(rp, H, W, int(round(H * r)), int(round(W * r)))
        mask = np.zeros((H, W), bool)
        mask[y0:y1, x0:x1] = True
        return _mix_in(image, labels, pimage, plabels, mask)


class CowOut(MixPolicy):
    """CowOut (French et al. 2020, "Milking CowMask"): a cow mask keeps a fraction
    ``p ~ U(prop_range)`` of the pixels; the rest are filled with ``fill`` and
    labelled 0.  ``sigma`` is log-uniform in ``sigma_range`` (pixels).  ``mask``
    (the cut) covers ``1 − p`` of the tile; ``lam = p``.

    Args:
        prop_range: kept proportion range ((0.25, 1.0), their CowOut setting).
        sigma_range: smoothing sigma range in pixels ((4, 16), theirs).
        fill: fill value.
    """

    name = "cowout"
    needs_partner = False

    def __init__(self, prop_range=(0.25, 1.0), sigma_range=(4.0, 16.0), fill=0, min_area: int = 8):
        super().__init__(min_area)
        self.prop_range = check_pair("prop_range", prop_range, 0.0, 1.0)
        self.sigma_range = check_pair("sigma_range", sigma_range, 1e-3, 1e4)
        self.fill = tuple(int(v) for v in _fill_value(fill))

    def _mix(self, image, labels, pimage, plabels, rp, rm):
        p = float(rp.uniform(*self.prop_range))
        sigma = _log_uniform(rp, *self.sigma_range)
        keep = cow_mask(labels.shape, p, sigma, rm)
        mask = ~keep
        return _cut_out(image, labels, mask, self.fill)


class CowMix(MixPolicy):
    """CowMix (French et al. 2020): a cow mask with proportion ``p ~ U(prop_range)``
    keeps the first sample; the partner fills the rest (``mask``, fraction ``1 − p``).

    Args:
        prop_range: (0.2, 0.8), their mixing setting.
        sigma_range: (4, 16) pixels, log-uniform.
    """

    name = "cowmix"

    def __init__(self, prop_range=(0.2, 0.8), sigma_range=(4.0, 16.0), min_area: int = 8):
        super().__init__(min_area)
        self.prop_range = check_pair("prop_range", prop_range, 0.0, 1.0)
        self.sigma_range = check_pair("sigma_range", sigma_range, 1e-3, 1e4)

    def _mix(self, image, labels, pimage, plabels, rp, rm):
        p = float(rp.uniform(*self.prop_range))
        sigma = _log_uniform(rp, *self.sigma_range)
        mask = ~cow_mask(labels.shape, p, sigma, rm)
        return _mix_in(image, labels, pimage, plabels, mask)


class CopyPaste(MixPolicy):
    """Simple Copy-Paste (Ghiasi et al., CVPR 2021): each partner instance is
    pasted with probability ``p_instance`` at its own position (no SSD
    constraints); pasted pixels replace image and labels (occluded pixels of
    existing instances are taken over).  With ``scale_range`` (Ghiasi's
    large-scale jitter uses (0.1, 2.0)), the partner is first rescaled by
    ``s ~ U(scale_range)`` (image bilinear, labels nearest) and placed at a
    uniformly random offset (cropped to the tile, or padded with background).

    Args:
        p_instance: probability that a partner instance is pasted (0.5).
        scale_range: ``None`` (default: no jitter) or (low, high).
    """

    name = "copy-paste"

    def __init__(self, p_instance: float = 0.5, scale_range=None, min_area: int = 8):
        super().__init__(min_area)
        self.p_instance = check_number("p_instance", p_instance, 0.0, 1.0)
        self.scale_range = None if scale_range is None else check_pair("scale_range", scale_range, 1e-3, 100.0)

    def _jitter(self, pimage, plabels, rp):
        H, W = plabels.shape
        s = float(rp.uniform(*self.scale_range))
        h2, w2 = max(1, int(round(H * s))), max(1, int(round(W * s)))
        img = cv2.resize(pimage, (w2, h2), interpolation=cv2.INTER_LINEAR)
        lab = cv2.resize(plabels, (w2, h2), interpolation=cv2.INTER_NEAREST)
        out_i = np.zeros_like(pimage)
        out_l = np.zeros_like(plabels)
        # offset of the rescaled partner's top-left corner in the tile
        oy = int(rp.integers(min(0, H - h2), max(0, H - h2) + 1))
        ox = int(rp.integers(min(0, W - w2), max(0, W - w2) + 1))
        ty0, tx0 = max(oy, 0), max(ox, 0)
        ty1, tx1 = min(oy + h2, H), min(ox + w2, W)
        out_i[ty0:ty1, tx0:tx1] = img[ty0 - oy : ty1 - oy, tx0 - ox : tx1 - ox]
        out_l[ty0:ty1, tx0:tx1] = lab[ty0 - oy : ty1 - oy, tx0 - ox : tx1 - ox]
        return out_i, relabel_pieces(out_l)  # rescale/crop can split an instance

    def _mix(self, image, labels, pimage, plabels, rp, rm):
        if self.scale_range is not None:
            pimage, plabels = self._jitter(pimage, plabels, rp)
        ids = np.unique(plabels)
        ids = ids[ids > 0]
        chosen = ids[rm.random(ids.size) < self.p_instance]
        mask = np.isin(plabels, chosen) if chosen.size else np.zeros(labels.shape, bool)
        return _mix_in(image, labels, pimage, plabels, mask)


#: name → class, the arms of the experiment harness use these names.
POLICIES: dict[str, type[MixPolicy]] = {
    cls.name: cls for cls in (MixUp, CutOut, CutMix, CowOut, CowMix, CopyPaste)
}


# --------------------------------------------------------------------------- functional helpers


def mixup(image, labels, partner_image, partner_labels, seed: int = 0, index: int = 0, **params) -> MixResult:
    """Functional :class:`MixUp`; ``params`` go to the constructor."""
    return MixUp(**params)(image, labels, partner_image, partner_labels, seed=seed, index=index)


def cutout(image, labels, partner_image=None, partner_labels=None, seed: int = 0, index: int = 0, **params) -> MixResult:
    """Functional :class:`CutOut` (the partner is accepted and ignored)."""
    return CutOut(**params)(image, labels, partner_image, partner_labels, seed=seed, index=index)


def cutmix(image, labels, partner_image, partner_labels, seed: int = 0, index: int = 0, **params) -> MixResult:
    """Functional :class:`CutMix`."""
    return CutMix(**params)(image, labels, partner_image, partner_labels, seed=seed, index=index)


def cowout(image, labels, partner_image=None, partner_labels=None, seed: int = 0, index: int = 0, **params) -> MixResult:
    """Functional :class:`CowOut` (the partner is accepted and ignored)."""
    return CowOut(**params)(image, labels, partner_image, partner_labels, seed=seed, index=index)


def cowmix(image, labels, partner_image, partner_labels, seed: int = 0, index: int = 0, **params) -> MixResult:
    """Functional :class:`CowMix`."""
    return CowMix(**params)(image, labels, partner_image, partner_labels, seed=seed, index=index)


def copy_paste(image, labels, partner_image, partner_labels, seed: int = 0, index: int = 0, **params) -> MixResult:
    """Functional :class:`CopyPaste`."""
    return CopyPaste(**params)(image, labels, partner_image, partner_labels, seed=seed, index=index)

