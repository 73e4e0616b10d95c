"""Export the trained blender and load it back without project code.

The exported artefact is a :class:`BlendModule`: the generator plus the input
normalisation and the composite, with the signature (all float32, same device)::

    blended = module(images, paste_mask, original_mask)
      images         N×3×H×W in [0, 1]
      paste_mask     N×1×H×W, 1.0 on pasted-template pixels (M)
      original_mask  N×1×H×W, 1.0 on the tile's own nuclei (labels > 0 and not M)
      blended        N×3×H×W in [0, 1]; equal to ``images`` bit for bit where M = 0

Two formats:

* ``torchscript`` (``.pt``): ``torch.jit.trace``; what C++ / DALI consumers load
  with ``torch::jit::load``. TorchScript is deprecated in current torch; the
  deprecation warnings raised while tracing/loading are swallowed here.
* ``export`` (``.pt2``): a ``torch.export`` program (``torch.export.save``),
  with dynamic batch size and tile sides (multiples of 4).

:func:`load_blender` accepts both and prefers a ``.pt2`` sitting next to a
requested ``.pt`` file.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import torch
from torch import nn

from ..devices import torch_device
from ..errors import ConfigError, InputError
from .model import STRIDE, Generator

__all__ = ["BlendModule", "export_torchscript", "export_program", "export_blender", "load_blender",
           "load_generator", "quiet_torchscript"]


class BlendModule(nn.Module):
    """Generator + [0,1]→[−1,1] normalisation + composite S(u) = G(u)·M + u·(1−M)."""

    def __init__(self, generator: Generator):
        super().__init__()
        self.generator = generator

    def forward(self, images: torch.Tensor, paste_mask: torch.Tensor, original_mask: torch.Tensor) -> torch.Tensor:
        x = images * 2.0 - 1.0
        g = self.generator(x, paste_mask, original_mask)
        out = ((g.float() + 1.0) * 0.5).clamp(0.0, 1.0).to(images.dtype)
        return torch.where(paste_mask > 0.5, out, images)


class quiet_torchscript(warnings.catch_warnings):
    """Context manager that hides TorchScript's deprecation / tracer warnings."""

    def __enter__(self):
        r = super().__enter__()
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", FutureWarning)
        warnings.simplefilter("ignore", UserWarning)
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        return r


def _example(batch: int = 2, size: int = 64, device="cpu"):
    g = torch.Generator().manual_seed(0)
    images = torch.rand(batch, 3, size, size, generator=g)
    pm = torch.zeros(batch, 1, size, size)
    om = torch.zeros(batch, 1, size, size)
    pm[:, :, size // 8: size // 4, size // 8: size // 4] = 1
    om[:, :, size // 2: size // 2 + size // 8, size // 2: size // 2 + size // 8] = 1
    return images.to(device), pm.to(device), om.to(device)


def _as_blend_module(generator: nn.Module) -> BlendModule:
    if isinstance(generator, BlendModule):
        return generator
    if not isinstance(generator, Generator):
        raise InputError(f"expected a Generator or BlendModule, got {type(generator).__name__}")
    return BlendModule(generator)


def export_torchscript(generator: nn.Module, path: str | os.PathLike) -> Path:
    """Trace the blend module to TorchScript and save it to ``path`` (``.pt``)."""
    mod = _as_blend_module(generator).cpu().eval().float()
    path = Path(path)
    with torch.no_grad(), quiet_torchscript():
        traced = torch.jit.trace(mod, _example(), check_trace=False)
        traced.save(str(path))
    return path


def export_program(generator: nn.Module, path: str | os.PathLike, dynamic: bool = True) -> Path:
    """Export the blend module with ``torch.export`` and save it (``.pt2``).

    ``dynamic=True`` makes batch size and tile sides (multiples of 4) symbolic.
    """
    mod = _as_blend_module(generator).cpu().eval().float()
    path = Path(path)
    args = _example()
    dyn = None
    if dynamic:
        batch = torch.export.Dim("batch", min=1, max=4096)
        h4 = torch.export.Dim("h4", min=8, max=4096)
        w4 = torch.export.Dim("w4", min=8, max=4096)
        spec = {0: batch, 2: STRIDE * h4, 3: STRIDE * w4}
        dyn = (spec, spec, spec)
    with torch.no_grad():
        ep = torch.export.export(mod, args, dynamic_shapes=dyn)
    torch.export.save(ep, str(path))
    return path


def export_blender(generator: nn.Module, path: str | os.PathLike, format: str = "torchscript") -> Path:
    """Export to ``path`` in ``format`` (``"torchscript"`` or ``"export"``)."""
    if format == "torchscript":
        return export_torchscript(generator, path)
    if format == "export":
        return export_program(generator, path)
    raise ConfigError(f"unknown export format {format!r}; use 'torchscript' or 'export'")


def load_blender(path: str | os.PathLike, device: str | torch.device = "cpu") -> nn.Module:
    """Load an exported blend module (``.pt2`` program or TorchScript ``.pt``).

    A ``.pt2`` file with the same stem next to a requested ``.pt`` is preferred.
    A training checkpoint (``.ckpt``/``last.pt`` written by ``gan train``) is
    accepted too (needs this package). TorchScript deprecation warnings are
    never shown. Returns a callable module ``(images, paste_mask, original_mask)``.
    """
    device = torch_device(device)
    path = Path(path)
    if path.is_dir():
        from .train import find_checkpoint
        path = find_checkpoint(path)
    if path.suffix != ".pt2" and path.with_suffix(".pt2").is_file():
        path = path.with_suffix(".pt2")
    if not path.is_file():
        raise InputError(f"blender file not found: {path}")
    if path.suffix == ".pt2":
        ep = torch.export.load(str(path))
        if device.type != "cpu":
            from torch.export.passes import move_to_device_pass

            ep = move_to_device_pass(ep, device)
        return ep.module()
    with quiet_torchscript():
        try:
            return torch.jit.load(str(path), map_location=device)
        except RuntimeError:
            pass
    # not TorchScript: a training checkpoint
    return BlendModule(load_generator(path, device)).eval()


def load_generator(path: str | os.PathLike, device: str | torch.device = "cpu") -> Generator:
    """Build the generator from a training checkpoint (``gan train`` output)."""
    device = torch_device(device)
    path = Path(path)
    if path.is_dir():
        from .train import find_checkpoint
        path = find_checkpoint(path)
    try:
        state = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any unpickling failure means "not a checkpoint"
        raise InputError(f"{path} is not a smooth-GAN checkpoint: {e}") from None
    if not isinstance(state, dict) or "generator" not in state or "generator_config" not in state:
        raise InputError(f"{path} is not a smooth-GAN checkpoint (no 'generator' entry)")
    g = Generator.from_config(state["generator_config"])
    g.load_state_dict(state["generator"])
    return g.to(device).eval()
