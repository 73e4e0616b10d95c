"""How the GPU path talks to the device: which GPU, which stream, launch geometry,
transfers and the reused work arrays — all through one :class:`Launcher` per call.

Streams (``stream=`` of ``insmix_batch(..., device="cuda")``): a numba stream, a
``torch.cuda.Stream`` (its ``cuda_stream`` handle), a CuPy stream (its ``ptr``)
or a raw ``cudaStream_t`` integer. Foreign handles are wrapped with
``numba.cuda.external_stream``; every launch, allocation and copy of the call goes
on that stream, and only a device→host read waits (for that stream alone).
``None`` keeps numba's default stream.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

import numpy as np

from ..errors import InputTypeError
from .runtime import simulator_enabled

__all__ = ["Launcher", "as_numba_stream", "on_device", "clear_workspace"]

_TLS = threading.local()
_SIM_STREAMS: dict[int, object] = {}


class on_device:
    """``with on_device(i):`` select GPU ``i`` (a no-op under the simulator for i = 0)."""

    def __init__(self, i: int):
        self.i = int(i)
        self.ctx = None

    def __enter__(self):
        from numba import cuda

        if simulator_enabled() and self.i == 0:
            return self
        self.ctx = cuda.gpus[self.i]
        self.ctx.__enter__()
        return self

    def __exit__(self, *exc):
        if self.ctx is not None:
            self.ctx.__exit__(*exc)
        return False


def as_numba_stream(stream):
    """The numba stream for ``stream`` (see the module doc); ``None`` and the handle 0 (the
    legacy default stream) give ``None``, numba's default."""
    if stream is None:
        return None
    from numba import cuda

    if type(stream).__module__.split(".")[0] == "numba":
        return stream
    handle = stream
    if hasattr(stream, "cuda_stream"):  # torch.cuda.Stream
        handle = stream.cuda_stream
    elif type(stream).__module__.split(".")[0] == "cupy" and hasattr(stream, "ptr"):
        handle = stream.ptr
    if isinstance(handle, (bool, np.bool_)) or not isinstance(handle, (int, np.integer)):
        raise InputTypeError("stream must be a numba stream, a torch.cuda.Stream, a CuPy stream or an int handle, "
                             f"got {type(stream).__name__}")
    if int(handle) == 0:  # the legacy default stream: what numba uses without a stream
        return None
    if not hasattr(cuda, "external_stream"):  # the CUDA simulator (runs everything in order anyway)
        return _SIM_STREAMS.setdefault(int(handle), cuda.stream())
    return cuda.external_stream(int(handle))


@dataclass
class Launcher:
    """One GPU call's device and stream: launches, allocations, transfers and work arrays.

    ``stream`` is a numba stream or ``None`` (numba's default stream; transfers then
    complete before they return, as numba does without a stream).
    """

    device_id: int = 0
    stream: object = None

    # ------------------------------------------------------------------ geometry
    @staticmethod
    def grid(n: int, threads: int = 256) -> tuple[int, int]:
        """A grid-stride launch over ``n`` items."""
        if simulator_enabled():
            return max(1, min(4, -(-n // 64))), 64
        return max(1, min(-(-n // threads), 1 << 16)), threads

    @staticmethod
    def per_thread(n: int) -> tuple[int, int]:
        """One thread per item (``n`` items)."""
        t = 32 if simulator_enabled() else 64
        return max(1, -(-n // t)), t

    @staticmethod
    def per_block(n_items: int) -> tuple[int, int]:
        """One block of ``BLOCK`` threads per item (grid-stride over blocks)."""
        from ..kernels.cuda_device import BLOCK

        return max(1, min(n_items, 8 if simulator_enabled() else 1 << 16)), BLOCK

    # ------------------------------------------------------------------ work
    def launch(self, kernel, config: tuple[int, int], *args) -> None:
        """Launch on this call's stream, refusing host arrays (numba would copy them in
        and out silently)."""
        for a in args:
            if isinstance(a, np.ndarray):
                raise RuntimeError("internal error: a host array reached a GPU kernel (implicit transfer)")
        if self.stream is None:
            kernel[config](*args)
        else:
            kernel[config[0], config[1], self.stream](*args)

    def array(self, shape, dtype):
        """A new device array (returned to the caller, so never reused)."""
        from numba import cuda

        if self.stream is None:
            return cuda.device_array(shape, dtype)
        return cuda.device_array(shape, dtype, stream=self.stream)

    def scratch(self, name: str, shape, dtype):
        """A device work array reused from this thread's previous call on the same device and
        stream when shape and dtype match (allocation is a large share of a batch's time).
        Never handed to callers. Calls on one stream run in order, so reuse is safe."""
        from numba import cuda

        shape = tuple(int(v) for v in shape) if isinstance(shape, tuple) else (int(shape),)
        cache = getattr(_TLS, "ws", None)
        if cache is None:
            cache = _TLS.ws = {}
        key = (name, self.device_id, _stream_key(self.stream))
        a = cache.get(key)
        if a is None or tuple(a.shape) != shape or a.dtype != np.dtype(dtype):
            a = cuda.device_array(shape, dtype) if self.stream is None else cuda.device_array(shape, dtype,
                                                                                              stream=self.stream)
            cache[key] = a
        return a

    def h2d(self, arr):
        """Copy a host array to the device (on the stream)."""
        from numba import cuda

        arr = np.ascontiguousarray(arr)
        if self.stream is None:
            return cuda.to_device(arr)
        return cuda.to_device(arr, stream=self.stream)

    def d2h(self, dev) -> np.ndarray:
        """Copy a device array to the host and wait for it (only this stream is waited for)."""
        if self.stream is None:
            return dev.copy_to_host()
        out = dev.copy_to_host(stream=self.stream)
        self.stream.synchronize()
        return out


def _stream_key(stream) -> int:
    """The stream's handle (the same for every wrapper of one CUDA stream)."""
    if stream is None:
        return 0
    try:
        return int(stream)
    except TypeError:  # the simulator's streams have no handle
        return id(stream)


def clear_workspace() -> None:
    """Free the cached device work arrays of this thread."""
    _TLS.ws = {}
