"""The per-sample program every backend runs, stage by stage.

``read/crop → traditional augmentation → InsMix → smooth-GAN blend → normalise``

Each stage is a plain function of arrays and *keys*. A key row is
``(epoch, position, source index)`` (int64): the position is the sample's global
slot in the epoch (see :mod:`.state`). Random draws use counter-based Philox:

* per epoch, one 64-bit seed per stage — ``stage_seed(seed, epoch, stage)`` is
  Philox4x32-10 (:func:`insmix_fast.kernels.rng.philox4x32_impl`) keyed by ``seed``
  with the counter ``(epoch, stage)``;
* per sample, that seed with ``index = position`` — the crop offset and the InsMix
  coin by ``make_rng(seed_stage, position)``, the traditional augmentation by
  :class:`~insmix_fast.augment.TraditionalAugment` and InsMix itself by
  :func:`insmix_fast.insmix_batch` with ``indices = positions``.

Nothing here reads a clock or DALI's internal RNG, so the DALI and the PyTorch
backends, any worker count and any rank produce the same samples.
"""

from __future__ import annotations

import numpy as np
import torch

from ..augment import TraditionalAugment
from ..baselines import make_rng
from ..core import insmix_batch
from ..errors import InputError
from ..kernels.rng import philox4x32_impl
from ..validation import check_sample

__all__ = ["SampleProgram", "stage_seed", "IMAGENET_MEAN", "IMAGENET_STD",
           "STAGE_CROP", "STAGE_AUGMENT", "STAGE_INSMIX"]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

STAGE_CROP = 0x43524F50     # "CROP"
STAGE_AUGMENT = 0x41554745  # "AUGE"
STAGE_INSMIX = 0x494E534D   # "INSM"
_COIN_STREAM = 7            # the per-sample "apply InsMix?" coin inside the InsMix stage seed


def stage_seed(seed: int, epoch: int, stage: int) -> int:
    """64-bit seed of one stage in one epoch: Philox4x32-10(key=seed, ctr=(epoch, stage))."""
    s, e = int(seed), int(epoch)
    r0, r1, _, _ = philox4x32_impl(e & 0xFFFFFFFF, e >> 32, 0, stage, s & 0xFFFFFFFF, s >> 32)
    return int(r0) | (int(r1) << 32)


class SampleProgram:
    """The stages, bound to a source and the loader's settings (picklable: it travels
    to DataLoader worker processes)."""

    def __init__(self, source, *, crop: int, seed: int, augment: TraditionalAugment | None, bank, config,
                 insmix_p: float, mean=IMAGENET_MEAN, std=IMAGENET_STD):
        self.source = source
        self.crop = int(crop)
        self.seed = int(seed)
        self.augment = augment
        self.bank = bank
        self.config = config
        self.insmix_p = float(insmix_p)
        self.mean = tuple(float(m) for m in mean)
        self.std = tuple(float(s) for s in std)
        self._source_epoch = None
        self._seeds: dict[int, tuple[int, int, int]] = {}

    # ------------------------------------------------------------------ keys
    def seeds(self, epoch: int) -> tuple[int, int, int]:
        """(crop, augment, insmix) seeds of ``epoch``."""
        if epoch not in self._seeds:
            self._seeds[epoch] = tuple(stage_seed(self.seed, epoch, s) for s in (STAGE_CROP, STAGE_AUGMENT, STAGE_INSMIX))
        return self._seeds[epoch]

    @staticmethod
    def make_keys(epoch: int, positions: np.ndarray, indices: np.ndarray) -> np.ndarray:
        keys = np.empty((len(positions), 3), np.int64)
        keys[:, 0], keys[:, 1], keys[:, 2] = epoch, positions, indices
        return keys

    @staticmethod
    def _epoch_of(keys: np.ndarray) -> int:
        epochs = np.unique(keys[:, 0])
        if len(epochs) != 1:
            raise InputError(f"a batch must hold samples of one epoch, got epochs {epochs.tolist()}")
        return int(epochs[0])

    def set_source_epoch(self, epoch: int) -> None:
        """Call ``source.set_epoch(epoch)`` once per epoch (in whichever process reads)."""
        if self._source_epoch != epoch and hasattr(self.source, "set_epoch"):
            self.source.set_epoch(epoch)
        self._source_epoch = epoch

    # ------------------------------------------------------------------ stages
    def read(self, epoch: int, position: int, index: int) -> tuple[np.ndarray, np.ndarray]:
        """Source sample ``index``, cut to a ``crop``×``crop`` window at a keyed offset."""
        try:
            sample = self.source[int(index)]
        except (IndexError, KeyError) as e:
            raise InputError(f"source[{index}] failed ({type(e).__name__}: {e}); len(source) = {len(self.source)}") from e
        if not isinstance(sample, (tuple, list)) or len(sample) < 2:
            raise InputError(f"source[{index}] must return (image H×W×3 uint8, labels H×W int), "
                             f"got {type(sample).__name__}")
        image, labels = check_sample(sample[0], sample[1], name=f"source[{index}]")
        h, w = labels.shape
        c = self.crop
        if h < c or w < c:
            raise InputError(f"source[{index}] is {h}×{w}, smaller than crop={c}; use a smaller crop")
        rng = make_rng(self.seeds(epoch)[0], int(position))
        y0 = int(rng.integers(0, h - c + 1))
        x0 = int(rng.integers(0, w - c + 1))
        return image[y0:y0 + c, x0:x0 + c], labels[y0:y0 + c, x0:x0 + c]

    def read_batch(self, keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        epoch = self._epoch_of(keys)
        self.set_source_epoch(epoch)
        n, c = len(keys), self.crop
        images = np.empty((n, c, c, 3), np.uint8)
        labels = np.empty((n, c, c), np.int32)
        for k, (_, p, i) in enumerate(keys):
            images[k], labels[k] = self.read(epoch, int(p), int(i))
        return images, labels

    def augment_batch(self, images: np.ndarray, labels: np.ndarray, keys: np.ndarray):
        if self.augment is None:
            return images, labels
        return self.augment.batch(images, labels, seed=self.seeds(self._epoch_of(keys))[1], indices=keys[:, 1])

    def insmix_mask(self, keys: np.ndarray) -> np.ndarray:
        """Which samples of the batch get InsMix (a keyed coin with probability ``insmix_p``)."""
        if self.bank is None or self.insmix_p <= 0.0:
            return np.zeros(len(keys), bool)
        if self.insmix_p >= 1.0:
            return np.ones(len(keys), bool)
        s = self.seeds(self._epoch_of(keys))[2]
        return np.array([make_rng(s, int(p), _COIN_STREAM).random() < self.insmix_p for p in keys[:, 1]], bool)

    def insmix_batch(self, images: np.ndarray, labels: np.ndarray, keys: np.ndarray, device: str = "cpu"):
        """InsMix on the selected samples; returns images, labels, paste_mask, original_mask
        (numpy on the CPU; whatever ``insmix_batch(device=...)`` returns otherwise)."""
        sel = self.insmix_mask(keys)
        paste = np.zeros(labels.shape, bool)
        if sel.any():
            s = self.seeds(self._epoch_of(keys))[2]
            r = insmix_batch(images[sel], labels[sel], self.bank, self.config, seed=s, indices=keys[sel, 1],
                             device=device)
            images, labels = images.copy(), labels.copy()
            images[sel] = _to_numpy(r.images)
            labels[sel] = _to_numpy(r.labels)
            paste[sel] = _to_numpy(r.paste_masks)
        original = (labels > 0) & ~paste
        return images, labels, paste, original

    def insmix_device(self, images: torch.Tensor, labels: torch.Tensor, keys: np.ndarray):
        """InsMix on a batch that lives on a CUDA device (torch tensors, N×H×W×3 uint8 and
        N×H×W int32); ``insmix_batch(device=...)`` keeps it there. Returns torch tensors
        images, labels, paste_mask, original_mask on the same device."""
        dev = images.device
        sel = self.insmix_mask(keys)
        paste = torch.zeros(labels.shape, dtype=torch.bool, device=dev)
        labels = labels.to(torch.int32)
        if sel.any():
            s = self.seeds(self._epoch_of(keys))[2]
            idx = torch.from_numpy(np.flatnonzero(sel)).to(dev)
            r = insmix_batch(images.index_select(0, idx).contiguous(), labels.index_select(0, idx).contiguous(),
                             self.bank, self.config, seed=s, indices=keys[sel, 1], device=str(dev))
            images, labels = images.clone(), labels.clone()
            images[idx] = torch.as_tensor(r.images, device=dev)
            labels[idx] = torch.as_tensor(r.labels, device=dev).to(torch.int32)
            paste[idx] = torch.as_tensor(r.paste_masks, device=dev).bool()
        original = (labels > 0) & ~paste
        return images, labels, paste, original

    def cpu_batch(self, keys: np.ndarray, insmix: bool = True) -> dict:
        """Read, crop, augment and (if ``insmix``) InsMix one batch on the CPU."""
        images, labels = self.read_batch(keys)
        images, labels = self.augment_batch(images, labels, keys)
        if insmix:
            images, labels, paste, original = self.insmix_batch(images, labels, keys)
        else:
            paste = original = None
        return {"images": images, "labels": labels, "paste": paste, "original": original, "keys": keys}

    # ------------------------------------------------------------------ tensors
    def normalise(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 N×H×W×3 → float32 N×3×H×W, ``(x − 255·mean) · 1/(255·std)`` per channel
        (the arithmetic of DALI's ``crop_mirror_normalize``)."""
        dev = images.device
        mean = torch.tensor([255.0 * m for m in self.mean], dtype=torch.float32, device=dev).view(1, 3, 1, 1)
        inv = torch.tensor([1.0 / (255.0 * s) for s in self.std], dtype=torch.float32, device=dev).view(1, 3, 1, 1)
        return (images.permute(0, 3, 1, 2).float() - mean).mul_(inv).contiguous()


def _to_numpy(x) -> np.ndarray:
    if isinstance(x, np.ndarray):
        return x
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().numpy()
    if hasattr(x, "get"):  # CuPy
        return x.get()
    return np.asarray(x)
