"""One parser for device strings, used by every entry point (kernels, loader, GAN, experiments).

Accepted everywhere: ``"cpu"``, ``"cuda"`` (the current CUDA device), ``"cuda:N"`` and
``torch.device`` objects; ``"auto"`` where :func:`parse_device` is called with
``allow_auto=True`` (CUDA when a GPU is usable, else the CPU). Availability is checked
separately (:func:`require_cuda_torch` for torch code, ``insmix_fast.gpu.cuda_available``
for the Numba kernels) so that parsing never imports torch or numba.cuda.
"""

from __future__ import annotations

from typing import NamedTuple

from .errors import ConfigError

__all__ = ["Device", "parse_device", "torch_device"]


class Device(NamedTuple):
    """A parsed device: ``kind`` is ``"cpu"`` or ``"cuda"``; ``index`` is ``None`` for the
    CPU and for a bare ``"cuda"`` (the current device), else the CUDA ordinal."""

    kind: str
    index: int | None

    def __str__(self) -> str:
        return self.kind if self.index is None else f"{self.kind}:{self.index}"


def parse_device(device, *, name: str = "device", allow_auto: bool = False,
                 error: type[Exception] = ConfigError) -> Device:
    """Parse ``device`` (str or ``torch.device``) without importing torch or CUDA.

    ``"auto"`` (only with ``allow_auto``) becomes ``"cuda"`` when torch sees a GPU, else ``"cpu"``.
    Raises ``error`` (``ConfigError`` by default) naming ``name`` and the value.
    """
    kind = type(device).__name__
    if kind == "device" and type(device).__module__.startswith("torch"):
        return Device(device.type, device.index) if device.type in ("cpu", "cuda") else _bad(device, name, allow_auto, error)
    if not isinstance(device, str):
        _bad(device, name, allow_auto, error)
    d = device.strip().lower()
    if d == "auto" and allow_auto:
        import torch

        return Device("cuda", None) if torch.cuda.is_available() else Device("cpu", None)
    if d == "cpu":
        return Device("cpu", None)
    if d == "cuda":
        return Device("cuda", None)
    if d.startswith("cuda:") and d[5:].isdigit():
        return Device("cuda", int(d[5:]))
    _bad(device, name, allow_auto, error)


def _bad(device, name: str, allow_auto: bool, error):
    choices = "'cpu', 'cuda' or 'cuda:N'" + (" or 'auto'" if allow_auto else "")
    raise error(f"{name} must be {choices}, got {device!r}")


def torch_device(device, *, name: str = "device", allow_auto: bool = False, error: type[Exception] = ConfigError):
    """The ``torch.device`` for ``device``; a CUDA device must be usable by torch (else ``error``
    saying so). A bare ``"cuda"`` resolves to torch's current CUDA device."""
    import torch

    dev = parse_device(device, name=name, allow_auto=allow_auto, error=error)
    if dev.kind == "cpu":
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise error(f"{name}={str(device)!r} but no CUDA GPU is available to torch; use 'cpu'")
    index = torch.cuda.current_device() if dev.index is None else dev.index
    if index >= torch.cuda.device_count():
        raise error(f"{name}={str(device)!r} but torch sees {torch.cuda.device_count()} CUDA device(s)")
    return torch.device("cuda", index)
