"""On-device smooth-GAN blending of pasted templates (SPEC §5).

``Blender.blend(images, paste_mask, original_mask)`` smooths the pasted
templates of a batch on the batch's own device::

    S(u) = G(u)·M + u·(1−M)                      (paper, strength = 1)
    out  = u + strength · (S(u) − u)             (official code: strength 0.7)

Pixels outside the paste mask ``M`` are returned untouched, bit for bit.

Accepted inputs (the output has the input's type, layout and dtype):

* **primary** — ``torch.Tensor`` float (32/16/bf16) N×3×H×W in [0, 1];
* ``torch.Tensor`` uint8 N×H×W×3 (RGB, the layout of :func:`insmix_fast.insmix_batch`);
* ``numpy.ndarray`` uint8 N×H×W×3 (run on ``Blender.device``, returned as numpy).

Masks: N×H×W or N×1×H×W, bool or {0, 1} numbers, on the images' device.
``original_mask`` is the tile's own nuclei, ``(labels > 0) & ~paste_mask``.
H and W must be multiples of 4. A batch without pastes comes back unchanged.
"""

from __future__ import annotations

import os

import numpy as np
import torch
from torch import nn

from ..devices import torch_device
from ..errors import ConfigError, InputError, InputTypeError
from ..validation import check_number
from .export import BlendModule, load_blender
from .model import STRIDE, Generator

__all__ = ["Blender"]


def _autocast_dtype(device: torch.device, amp) -> torch.dtype | None:
    if amp is False or amp is None:
        return None
    if isinstance(amp, torch.dtype):
        return amp
    if amp in ("fp16", "float16"):
        return torch.float16
    if amp in ("bf16", "bfloat16"):
        return torch.bfloat16
    if amp != "auto" and amp is not True:
        raise ConfigError(f"amp must be 'auto', True/False, 'fp16', 'bf16' or a torch dtype, got {amp!r}")
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return None  # CPU: fp32 (bf16 autocast on CPUs without AMX/AVX512-bf16 is slower)


class Blender:
    """Apply a trained smooth-GAN generator to pasted templates.

    Parameters
    ----------
    model:
        a :class:`~insmix_fast.gan.model.Generator`, a
        :class:`~insmix_fast.gan.export.BlendModule`, or a loaded exported module
        (TorchScript / ``torch.export``) with the blend-module signature.
    device:
        where the model lives first; it follows the batch's device on each call.
    strength:
        weight of the blended pixels inside the mask (1.0 = paper, 0.7 = official code).
    amp:
        ``"auto"`` (bf16, else fp16, on CUDA; fp32 on CPU), ``False``, ``"fp16"``,
        ``"bf16"`` or a torch dtype.
    """

    def __init__(self, model: nn.Module, *, device: str | torch.device | None = None,
                 strength: float = 1.0, amp="auto"):
        if isinstance(model, Generator):
            model = BlendModule(model)
        if not callable(model):
            raise InputTypeError(f"model must be a Generator or an exported blend module, got {type(model).__name__}")
        self.strength = check_number("strength", strength, 0.0, 1.0)
        self.amp = amp
        _autocast_dtype(torch.device("cpu"), amp)  # validate early
        self.model = model
        if hasattr(model, "eval"):
            try:
                model.eval()
            except NotImplementedError:  # a torch.export module: no train/eval switch (it is traced in eval mode)
                pass
        self.device = torch_device(device) if device is not None else self._model_device()
        self._move(self.device)

    @classmethod
    def from_file(cls, path: str | os.PathLike, *, device: str | torch.device = "cpu", **kwargs) -> "Blender":
        """Load an exported blender (``.pt2`` preferred, TorchScript ``.pt``) or a training checkpoint."""
        return cls(load_blender(path, device=device), device=device, **kwargs)

    def _model_device(self) -> torch.device:
        try:
            return next(iter(self.model.parameters())).device
        except (StopIteration, AttributeError, RuntimeError):
            return torch.device("cpu")

    def _move(self, device: torch.device):
        if device != getattr(self, "_on", None):
            if hasattr(self.model, "to"):
                self.model = self.model.to(device)
            self._on = device

    # ------------------------------------------------------------------ inputs
    @staticmethod
    def _mask(mask, name: str, n: int, h: int, w: int, device: torch.device) -> torch.Tensor:
        if isinstance(mask, np.ndarray):
            mask = torch.from_numpy(np.ascontiguousarray(mask))
        if not isinstance(mask, torch.Tensor):
            raise InputTypeError(f"{name} must be a torch tensor or numpy array, got {type(mask).__name__}")
        if mask.device != device:
            raise InputError(f"{name} is on {mask.device} but the images are on {device}; put them on one device")
        if mask.dim() == 4 and mask.shape[1] == 1:
            mask = mask[:, 0]
        if tuple(mask.shape) != (n, h, w):
            raise InputError(f"{name} must be N×H×W (or N×1×H×W) = {(n, h, w)}, got {tuple(mask.shape)}")
        if mask.dtype.is_complex:
            raise InputError(f"{name} must be bool or real, got {mask.dtype}")
        return (mask != 0).unsqueeze(1)

    def blend(self, images, paste_mask, original_mask):
        """Blend the pasted templates of one batch; see the module docstring for formats."""
        as_numpy = isinstance(images, np.ndarray)
        if as_numpy:
            if images.dtype != np.uint8:
                raise InputError(f"numpy images must be uint8 N×H×W×3, got dtype {images.dtype}")
            images = torch.from_numpy(np.ascontiguousarray(images)).to(self.device)
            if isinstance(paste_mask, np.ndarray):
                paste_mask = torch.from_numpy(np.ascontiguousarray(paste_mask)).to(self.device)
            if isinstance(original_mask, np.ndarray):
                original_mask = torch.from_numpy(np.ascontiguousarray(original_mask)).to(self.device)
        if not isinstance(images, torch.Tensor):
            raise InputTypeError(f"images must be a torch tensor or numpy array, got {type(images).__name__}")
        if images.dim() != 4:
            raise InputError(f"images must be a 4-D batch (N×3×H×W float or N×H×W×3 uint8), got shape {tuple(images.shape)}")
        if images.dtype == torch.uint8:
            if images.shape[3] != 3:
                raise InputError(f"uint8 images must be N×H×W×3 (RGB), got shape {tuple(images.shape)}")
            n, h, w = images.shape[:3]
            nchw = False
        elif images.dtype in (torch.float32, torch.float16, torch.bfloat16, torch.float64):
            if images.shape[1] != 3:
                raise InputError(f"float images must be N×3×H×W in [0, 1], got shape {tuple(images.shape)}")
            n, h, w = images.shape[0], images.shape[2], images.shape[3]
            nchw = True
        else:
            raise InputError(f"images must be float N×3×H×W in [0, 1] or uint8 N×H×W×3, got dtype {images.dtype}")
        if n == 0:
            raise InputError("the batch is empty (N = 0)")
        if h % STRIDE or w % STRIDE:
            raise InputError(f"tile sides must be multiples of {STRIDE}, got {h}×{w}")
        device = images.device
        m = self._mask(paste_mask, "paste_mask", n, h, w, device)
        o = self._mask(original_mask, "original_mask", n, h, w, device) & ~m
        if not bool(m.any()):
            return images.cpu().numpy() if as_numpy else images.clone()

        self._move(device)
        if nchw:
            x = images.float()
        else:
            x = images.permute(0, 3, 1, 2).float() / 255.0
        ac = _autocast_dtype(device, self.amp)
        with torch.inference_mode():
            mf, of = m.float(), o.float()
            if ac is not None:
                with torch.autocast(device_type=device.type, dtype=ac):
                    s = self.model(x, mf, of)
            else:
                s = self.model(x, mf, of)
            s = s.float()
            if self.strength != 1.0:
                s = x + self.strength * (s - x)
            if nchw:
                out = torch.where(m, s.to(images.dtype), images)
            else:
                s8 = (s * 255.0).round_().clamp_(0, 255).to(torch.uint8).permute(0, 2, 3, 1)
                out = torch.where(m.permute(0, 2, 3, 1), s8, images)
        out = out.clone()  # a normal tensor, usable outside inference mode
        return out.cpu().numpy() if as_numpy else out

    __call__ = blend
