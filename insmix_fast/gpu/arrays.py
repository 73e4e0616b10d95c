"""Array kinds the GPU path accepts and returns: numpy (copied to the device once),
CuPy arrays, torch CUDA tensors, numba device arrays, anything with
``__cuda_array_interface__`` (CAI) and DLPack capsules (read through CuPy).
Device input is viewed without a copy; outputs are allocated of the same kind."""

from __future__ import annotations

import contextlib

import numpy as np

from ..errors import InputError, InputTypeError

__all__ = ["ArrayKind", "kind_of", "device_index", "as_device", "check_device_batch", "to_numpy", "INT32_MAX"]

INT32_MAX = int(np.iinfo(np.int32).max)


class ArrayKind:
    """How to allocate outputs like the input (``name``: "numpy", "cupy", "torch" or
    "numba"; ``ref`` an input of that kind, for its device) and view them for numba.
    ``stream``: the numba stream of the call (allocations of torch/CuPy outputs are
    made on the matching library stream when it is one)."""

    def __init__(self, name: str, ref=None, stream=None, library_stream=None):
        self.name = name
        self.ref = ref
        self.stream = stream
        self.library_stream = library_stream

    def on_stream(self):
        """A context in which torch/CuPy allocate and copy on the call's stream."""
        s = self.library_stream
        if s is None:
            return contextlib.nullcontext()
        mod = type(s).__module__.split(".")[0]
        if mod == "torch":
            import torch

            return torch.cuda.stream(s)
        if mod == "cupy":
            return s
        return contextlib.nullcontext()

    def empty(self, shape, dtype):
        """``(array of this kind, its numba view)``, uninitialised."""
        from numba import cuda

        if self.name == "cupy":
            import cupy

            with self.on_stream():
                a = cupy.empty(shape, dtype=dtype)
            return a, cuda.as_cuda_array(a)
        if self.name == "torch":
            import torch

            tdt = {np.uint8: torch.uint8, np.int32: torch.int32, np.bool_: torch.bool}[np.dtype(dtype).type]
            with self.on_stream():
                a = torch.empty(shape, dtype=tdt, device=self.ref.device)
            return a, cuda.as_cuda_array(a)
        a = cuda.device_array(shape, dtype) if self.stream is None else cuda.device_array(shape, dtype,
                                                                                          stream=self.stream)
        return a, a


def kind_of(x) -> str:
    """"numpy" (also CPU tensors), "torch", "cupy", "numba", "cai" or "dlpack"."""
    if isinstance(x, np.ndarray):
        return "numpy"
    mod = type(x).__module__.split(".")[0]
    if mod == "torch":
        return "torch" if x.is_cuda else "numpy"
    if mod == "cupy":
        return "cupy"
    if mod == "numba":  # numba device array (or the simulator's stand-in)
        return "numba"
    if hasattr(x, "__cuda_array_interface__"):
        return "cai"
    if hasattr(x, "__dlpack__"):
        return "dlpack"
    return "numpy"


def device_index(x, kind: str) -> int:
    """The CUDA ordinal ``x`` lives on (0 where the kind does not say)."""
    if kind == "torch":
        return int(x.device.index or 0)
    if kind == "cupy":
        return int(x.device.id)
    return 0


def as_device(x, kind: str, name: str, dtype, kind_obj: ArrayKind | None = None):
    """``(x, numba view, kind)``: ``x`` as a C-contiguous device array of ``dtype``
    (converted on the device when needed, on the call's stream)."""
    from numba import cuda

    ctx = kind_obj.on_stream() if kind_obj is not None else contextlib.nullcontext()
    if kind == "dlpack":
        try:
            import cupy
        except ImportError as e:
            raise InputTypeError(f"{name}: a DLPack array needs CuPy to be read without a copy ({e})") from None
        x = cupy.from_dlpack(x)
        kind = "cupy"
    with ctx:
        if kind == "torch":
            import torch

            tdt = {np.uint8: torch.uint8, np.int32: torch.int32, np.bool_: torch.bool}[np.dtype(dtype).type]
            if x.dtype != tdt:
                if tdt == torch.int32 and x.numel() and int(x.max()) > INT32_MAX:  # a read, only for wide ids
                    raise InputError(f"{name} hold ids above int32 range (max {int(x.max())})")
                x = x.to(tdt)
            x = x.contiguous()
        elif kind == "cupy":
            import cupy

            if x.dtype != np.dtype(dtype) and np.dtype(dtype) == np.int32 and x.size and int(x.max()) > INT32_MAX:
                raise InputError(f"{name} hold ids above int32 range (max {int(x.max())})")
            x = cupy.ascontiguousarray(x, dtype=dtype)
    view = x if kind == "numba" else cuda.as_cuda_array(x)
    if view.dtype != np.dtype(dtype):
        raise InputError(f"{name} on the device must have dtype {np.dtype(dtype)}, got {view.dtype}")
    if not view.is_c_contiguous():
        raise InputError(f"{name} on the device must be C-contiguous")
    return x, view, kind


def _dtype_of(a) -> np.dtype:
    return a.dtype if hasattr(a.dtype, "kind") else np.dtype(str(a.dtype).replace("torch.", ""))


def check_device_batch(images, labels) -> None:
    """The checks of :func:`insmix_fast.validation.check_batch` that need no read of the data."""
    ish = tuple(images.shape)
    lsh = tuple(labels.shape)
    idt, ldt = _dtype_of(images), _dtype_of(labels)
    if idt != np.uint8:
        raise InputError(f"images must have dtype uint8, got {idt}")
    if len(ish) != 4 or ish[3] != 3:
        raise InputError(f"images must be N×H×W×3, got shape {ish}")
    if len(lsh) != 3:
        raise InputError(f"labels must be N×H×W, got shape {lsh}")
    if lsh != ish[:3]:
        raise InputError(f"labels shape {lsh} does not match images N×H×W {ish[:3]}")
    if ish[0] == 0:
        raise InputError("the batch is empty (N = 0)")
    if ish[1] == 0 or ish[2] == 0:
        raise InputError(f"images are empty (shape {ish})")
    if ldt == np.bool_ or ldt.kind not in "iu":
        raise InputError(f"labels must be an integer instance map (0 = background), got dtype {ldt}")


def to_numpy(x) -> np.ndarray:
    """A host copy of a device array of any supported kind (numpy passes through)."""
    if isinstance(x, np.ndarray):
        return x
    mod = type(x).__module__.split(".")[0]
    if mod == "torch":
        return x.cpu().numpy()
    if mod == "cupy":
        return x.get()
    return x.copy_to_host()
