"""The instance bank resident on the GPU: the same flat arrays, uploaded once."""

from __future__ import annotations

import numpy as np

from ..devices import parse_device
from ..errors import InputError
from ..kernels.tables import Table
from .launch import on_device
from .runtime import require_cuda

__all__ = ["DeviceBank", "is_host_bank"]


def is_host_bank(bank) -> bool:
    """Is ``bank`` an :class:`~insmix_fast.bank.InstanceBank` (anything with the kernels'
    ``table``, ``max_crop`` and ``to(device)``)? Duck-typed: this package does not import
    :mod:`insmix_fast.bank`, which imports it."""
    return isinstance(getattr(bank, "table", None), Table) and hasattr(bank, "max_crop") and hasattr(bank, "to")


class DeviceBank:
    """Device copy of an :class:`~insmix_fast.bank.InstanceBank` (``bank.to("cuda")``).

    Holds ``area`` (int64), ``anchor``/``hw`` (int32 n×2), ``offset`` (int64 n+1),
    ``masks``/``pixels`` (uint8), ``desc`` (uint32 n×32: the packed 32×32 window,
    row r in word r — the host's 16 uint64 words viewed little-endian), ``fits`` and
    ``classes`` (int32) as ``numba.cuda`` device arrays. ``host`` is the bank it came from;
    ``to("cpu")`` returns it. Upload once and reuse: every kernel reads these arrays.
    The per-class index tables of ``template_class="same"``/``"balanced"``
    (:meth:`class_args`) are uploaded on first use and kept.
    """

    def __init__(self, host, device_id: int = 0):
        require_cuda()
        from numba import cuda

        if not is_host_bank(host):
            raise InputError(f"DeviceBank needs an InstanceBank, got {type(host).__name__}")
        self.host = host
        self.device_id = int(device_id)
        t = host.table
        desc32 = np.ascontiguousarray(t.desc).view("<u4").reshape(len(t.area), 32)
        with on_device(self.device_id):
            self.area = cuda.to_device(t.area)
            self.anchor = cuda.to_device(t.anchor)
            self.hw = cuda.to_device(t.hw)
            self.offset = cuda.to_device(t.offset)
            # empty buffers still need one element on the device
            self.masks = cuda.to_device(t.masks if t.masks.size else np.zeros(1, np.uint8))
            self.pixels = cuda.to_device(t.pixels if t.pixels.size else np.zeros(3, np.uint8))
            self.desc = cuda.to_device(desc32.astype(np.uint32) if len(t.area) else np.zeros((0, 32), np.uint32))
            self.fits = cuda.to_device(t.fits)
            self.classes = cuda.to_device(host.classes if len(t.area) else np.zeros(1, np.int32))
            self._no_cum = cuda.to_device(np.zeros(1, np.float64))
        self.max_crop = host.max_crop
        self._class_args: dict = {}

    def __len__(self) -> int:
        return len(self.host)

    @property
    def nbytes(self) -> int:
        return int(sum(a.nbytes for a in (self.area, self.anchor, self.hw, self.offset, self.masks, self.pixels,
                                            self.desc, self.fits, self.classes)))

    def kernel_args(self) -> tuple:
        """``(area, anchor, hw, offset, masks, desc, fits)``: the bank as the kernels take it."""
        return (self.area, self.anchor, self.hw, self.offset, self.masks, self.desc, self.fits)

    def class_args(self, template_class: str = "any", balance_power: float = 1.0) -> tuple:
        """``(order, start, area, cum)``: the host bank's :meth:`class_table` on the device. For
        ``"any"`` (no per-class search) the bank's own areas stand in and nothing is uploaded."""
        from numba import cuda

        if template_class == "any":
            return self.area, self.offset, self.area, self._no_cum
        key = float(balance_power)
        if key not in self._class_args:
            ct = self.host.class_table(template_class, balance_power)
            shared = next(iter(self._class_args.values()), None)  # order/start/area do not depend on the power
            with on_device(self.device_id):
                if shared is None:
                    shared = tuple(cuda.to_device(a) for a in (ct.order, ct.start, ct.area))
                self._class_args[key] = (*shared[:3], cuda.to_device(ct.cum))
        return self._class_args[key]

    def to(self, device: str):
        """``"cpu"``: the host bank; ``"cuda"``/``"cuda:N"``: this bank (same device) or a copy."""
        dev = parse_device(device, error=InputError)
        if dev.kind == "cpu":
            return self.host
        index = dev.index or 0
        if index == self.device_id:
            return self
        return self.host.to(f"cuda:{index}")

    def __repr__(self) -> str:
        return f"DeviceBank({len(self)} instances on cuda:{self.device_id}, {self.nbytes / 2**20:.1f} MiB)"
