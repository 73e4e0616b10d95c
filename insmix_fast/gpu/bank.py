"""The instance bank resident on the GPU: the same flat arrays, uploaded once."""

from __future__ import annotations

import numpy as np

from ..errors import InputError
from . import require_cuda


class DeviceBank:
    """Device copy of an :class:`~insmix_fast.bank.InstanceBank` (``bank.to("cuda")``).

    Holds ``area`` (int64), ``anchor``/``hw`` (int32 n×2), ``offset`` (int64 n+1),
    ``masks``/``pixels`` (uint8), ``desc`` (uint32 n×32: the packed 32×32 window,
    row r in word r — the host's 16 uint64 words viewed little-endian) and ``fits``
    as ``numba.cuda`` device arrays. ``host`` is the bank it came from;
    ``to("cpu")`` returns it. Upload once and reuse: every kernel reads these arrays.
    """

    def __init__(self, host, device_id: int = 0):
        require_cuda()
        from numba import cuda

        from ..bank import InstanceBank

        if not isinstance(host, InstanceBank):
            raise InputError(f"DeviceBank needs an InstanceBank, got {type(host).__name__}")
        self.host = host
        self.device_id = int(device_id)
        desc32 = np.ascontiguousarray(host.desc).view("<u4").reshape(len(host), 32)
        with _device(self.device_id):
            self.area = cuda.to_device(host.area)
            self.anchor = cuda.to_device(host.anchor)
            self.hw = cuda.to_device(host.hw)
            self.offset = cuda.to_device(host.offset)
            # empty buffers still need one element on the device
            self.masks = cuda.to_device(host.masks if host.masks.size else np.zeros(1, np.uint8))
            self.pixels = cuda.to_device(host.pixels if host.pixels.size else np.zeros(3, np.uint8))
            self.desc = cuda.to_device(desc32.astype(np.uint32) if len(host) else np.zeros((0, 32), np.uint32))
            self.fits = cuda.to_device(host.fits)
        self.max_crop = host.max_crop

    def __len__(self) -> int:
        return len(self.host)

    @property
    def nbytes(self) -> int:
        return int(sum(a.nbytes for a in (self.area, self.anchor, self.hw, self.offset, self.masks, self.pixels,
                                            self.desc, self.fits)))

    def to(self, device: str):
        """``"cpu"``: the host bank; ``"cuda"``/``"cuda:N"``: this bank (same device) or a copy."""
        kind, dev = parse_device(device)
        if kind == "cpu":
            return self.host
        if dev == self.device_id:
            return self
        return DeviceBank(self.host, dev)

    def __repr__(self) -> str:
        return f"DeviceBank({len(self)} instances on cuda:{self.device_id}, {self.nbytes / 2**20:.1f} MiB)"


def parse_device(device) -> tuple[str, int]:
    """``"cpu"`` → ("cpu", -1); ``"cuda"`` → ("cuda", 0); ``"cuda:N"`` → ("cuda", N)."""
    if not isinstance(device, str):
        device = str(device)  # torch.device
    d = device.strip().lower()
    if d == "cpu":
        return "cpu", -1
    if d == "cuda":
        return "cuda", 0
    if d.startswith("cuda:") and d[5:].isdigit():
        return "cuda", int(d[5:])
    raise InputError(f"device must be 'cpu', 'cuda' or 'cuda:N', got {device!r}")


class _device:
    """``with _device(i):`` select GPU ``i`` (a no-op under the simulator for i = 0)."""

    def __init__(self, i: int):
        self.i = i
        self.ctx = None

    def __enter__(self):
        from numba import cuda

        from . import simulator_enabled

        if simulator_enabled() and self.i == 0:
            return self
        self.ctx = cuda.gpus[self.i]
        self.ctx.__enter__()
        return self

    def __exit__(self, *exc):
        if self.ctx is not None:
            self.ctx.__exit__(*exc)
        return False
