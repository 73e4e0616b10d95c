"""InsMix as a batch op on tensors (kornia / torchvision style): :class:`InsMixBatch`.

``InsMixBatch(bank, config, p=0.5)(images, labels)`` with ``images`` N×3×H×W (uint8, or
float in ``[0, max_value]``) and ``labels`` N×H×W integer instance maps, on the CPU or a
CUDA device; returns the same kinds on the same device. On CUDA the batch goes through
``insmix_batch(device=...)`` and stays there (no host copy of images or labels). Use it
in a ``collate_fn`` or on the batch right before the training step.

Randomness follows the rest of insmix_fast: every sample has an InsMix *index* — by
default a running count of the samples this module has seen (kept in ``state_dict()``),
or the ``indices=`` you pass (e.g. dataset indices) — and both the ``p`` coin and the
InsMix draws are keyed by ``(seed, index)``. The result therefore does not depend on
batch size or device: sample ``b`` equals ``insmix(image_b, labels_b, bank, config,
seed=module.seed, index=indices[b])``. In a ``collate_fn`` running in DataLoader workers
(without ``indices=``) each worker keys its samples by a seed mixed from the module's and
the worker's ``torch.initial_seed()``, so workers and epochs do not repeat each other.
"""

from __future__ import annotations

import numpy as np
import torch

from ..baselines import make_rng
from ..validation import check_indices, check_seed
from .common import (check_bank, check_config, check_max_value, check_nchw, check_probability, contiguous_nchw,
                     insmix_nchw, label_dtype, require_types)

__all__ = ["InsMixBatch"]

#: Counter block of the per-sample "apply InsMix?" coin (separate from every InsMix stream).
_COIN_STREAM = 0x434F494E  # "COIN"


class InsMixBatch(torch.nn.Module):
    """InsMix on a batch of tensors, on any device.

    Args:
        bank: :class:`~insmix_fast.bank.InstanceBank` (or its ``bank.to("cuda")`` DeviceBank);
            ``None`` only when ``config`` needs no bank.
        config: :class:`~insmix_fast.config.InsMixConfig` (SPEC defaults when ``None``).
        p: probability that a sample gets InsMix (a keyed coin per sample).
        seed: InsMix seed; ``None`` draws one from torch's default generator (so
            ``torch.manual_seed`` before construction makes runs repeatable).
        max_value: full intensity of float images (1.0 for [0, 1]).

    ``forward(images, labels, types=None, indices=None)`` returns ``(images, labels)``, or
    ``(images, labels, types)`` when a type map is given (needs a typed InsMix core).
    Images keep their dtype; labels keep theirs when it has ≥ 32 bits, else become int32
    (pasted nuclei get new ids); types keep theirs. Float images: pixels InsMix did not
    touch are returned unchanged, moved background patches are copied exactly, pasted
    nuclei are ``template / 255 · max_value``. Float input costs one scalar read (the range
    check) on a GPU. Applied in train and eval mode alike; not differentiable (inputs are
    detached).
    """

    def __init__(self, bank, config=None, *, p: float = 0.5, seed: int | None = None, max_value: float = 1.0):
        super().__init__()
        self.config = check_config(config)
        self.bank = check_bank(bank, self.config, allow_device=True)
        self.p = check_probability("p", p)
        if seed is None:
            hi, lo = torch.randint(0, 2**32, (2,), dtype=torch.int64).tolist()
            seed = (hi << 32) | lo
        self.seed = check_seed(seed)
        self.max_value = check_max_value(max_value)
        #: Samples seen so far: the default InsMix index of the next sample.
        self.samples_seen = 0
        self._worker = None  # [worker's torch.initial_seed(), mixed seed, count] inside a DataLoader worker

    def extra_repr(self) -> str:
        return f"bank={self.bank!r}, p={self.p}, seed={self.seed}, max_value={self.max_value}"

    def get_extra_state(self) -> dict:
        return {"seed": self.seed, "samples_seen": self.samples_seen}

    def set_extra_state(self, state: dict) -> None:
        self.seed = check_seed(state["seed"])
        self.samples_seen = int(state["samples_seen"])

    def coins(self, indices, seed: int | None = None) -> np.ndarray:
        """Which of the samples with these InsMix indices get InsMix (bool per sample)."""
        idx = np.asarray(indices, np.int64)
        seed = self.seed if seed is None else seed
        if self.p >= 1.0:
            return np.ones(len(idx), bool)
        if self.p <= 0.0:
            return np.zeros(len(idx), bool)
        return np.array([make_rng(seed, int(i), _COIN_STREAM).random() < self.p for i in idx], bool)

    def _default_keys(self, n: int) -> tuple[int, int]:
        """``(seed, first index)`` for ``n`` samples without ``indices=``: the module's seed and
        running count — or, inside a DataLoader worker, a seed mixed from the module's and the
        worker's ``torch.initial_seed()`` (distinct per worker and epoch, reproducible under
        ``torch.manual_seed``, as torch's own RNG is there) and that worker's own count."""
        if torch.utils.data.get_worker_info() is None:
            start = self.samples_seen
            self.samples_seen += n
            return self.seed, start
        key = torch.initial_seed()
        if self._worker is None or self._worker[0] != key:
            mixed = int(np.random.SeedSequence([self.seed, key]).generate_state(1, np.uint64)[0])
            self._worker = [key, mixed, 0]
        start = self._worker[2]
        self._worker[2] += n
        return self._worker[1], start

    def forward(self, images: torch.Tensor, labels: torch.Tensor, types: torch.Tensor | None = None, indices=None):
        names = ("images", "labels", "types")
        check_nchw(images, labels, types, names)
        if types is not None:
            require_types("InsMixBatch(types=...)")
        n = int(images.shape[0])
        seed = self.seed
        if indices is None:
            seed, start = self._default_keys(n)
            idx = np.arange(start, start + n, dtype=np.int64)
        else:
            if isinstance(indices, torch.Tensor):
                indices = indices.detach().cpu().numpy()
            idx = check_indices(indices, n)
            self.samples_seen += n
        sel = self.coins(idx, seed)
        if sel.all():
            out = insmix_nchw(images, labels, self.bank, self.config, seed=seed, indices=idx, types=types,
                              max_value=self.max_value, names=names)
            return _pack(contiguous_nchw(out[0]), out[1], out[2], types is not None)
        out_images = images.detach()
        out_labels = labels.detach().to(label_dtype(labels.dtype))
        out_types = None if types is None else types.detach()
        if sel.any():
            pick = torch.from_numpy(np.flatnonzero(sel)).to(images.device)
            sub = insmix_nchw(images.index_select(0, pick), labels.index_select(0, pick), self.bank, self.config,
                              seed=seed, indices=idx[sel], max_value=self.max_value, names=names,
                              types=None if types is None else types.index_select(0, pick))
            out_images = out_images.clone()
            out_images[pick] = sub[0]
            out_labels = out_labels.clone() if out_labels.data_ptr() == labels.data_ptr() else out_labels
            out_labels[pick] = sub[1]
            if out_types is not None:
                out_types = out_types.clone()
                out_types[pick] = sub[2]
        return _pack(out_images, out_labels, out_types, types is not None)


def _pack(images, labels, types, typed: bool):
    return (images, labels, types) if typed else (images, labels)
