"""Can the GPU path run here? (Asked before anything imports ``numba.cuda``.)"""

from __future__ import annotations

import os

from ..errors import InputError

__all__ = ["cuda_available", "require_cuda", "simulator_enabled"]

_STATE: tuple[bool, str] | None = None


def simulator_enabled() -> bool:
    """True when ``NUMBA_ENABLE_CUDASIM`` asks for the CUDA simulator."""
    return os.environ.get("NUMBA_ENABLE_CUDASIM", "0") not in ("", "0")


def cuda_available() -> tuple[bool, str]:
    """``(ok, reason)``: can the GPU path run here? ``reason`` says why not (or what runs).

    True with a real CUDA device visible to ``numba.cuda`` as provided by the
    ``numba-cuda`` package (the ``cuda12``/``cuda13`` extras), or under the CUDA
    simulator (``NUMBA_ENABLE_CUDASIM=1``, a CPU emulation for tests: slow).
    The answer is computed once per process.
    """
    global _STATE
    if _STATE is not None:
        return _STATE
    if simulator_enabled():
        _STATE = (True, "CUDA simulator (NUMBA_ENABLE_CUDASIM=1): kernels run on the CPU, slowly")
        return _STATE
    import importlib.util

    if importlib.util.find_spec("numba_cuda") is None:
        _STATE = (False, "the numba-cuda package is not installed (numba's built-in CUDA target is deprecated and "
                         "does not compile these kernels): pip install -e '.[cuda12]' or '.[cuda13]'")
        return _STATE
    try:
        from numba import cuda
    except Exception as e:  # pragma: no cover - numba without its CUDA target
        _STATE = (False, f"numba.cuda cannot be imported: {_one_line(e)}")
        return _STATE
    try:
        if not cuda.is_available():
            try:
                cuda.current_context()
            except Exception as e:
                _STATE = (False, f"no usable CUDA GPU: {_one_line(e)}")
                return _STATE
            _STATE = (False, "no usable CUDA GPU: numba.cuda.is_available() is False")
            return _STATE
        dev = cuda.get_current_device()
        name = dev.name.decode() if isinstance(dev.name, bytes) else str(dev.name)
        _STATE = (True, f"CUDA device {dev.id}: {name} (compute capability {dev.compute_capability})")
    except Exception as e:
        _STATE = (False, f"no usable CUDA GPU: {_one_line(e)}")
    return _STATE


def _one_line(e: BaseException, limit: int = 160) -> str:
    text = " ".join(str(e).replace(":", ": ").split()).replace(" :", ":") or type(e).__name__
    return text if len(text) <= limit else text[:limit - 1] + "…"


def require_cuda() -> None:
    """Raise :class:`~insmix_fast.errors.InputError` naming the reason when no GPU path is available."""
    ok, reason = cuda_available()
    if not ok:
        raise InputError(f"device='cuda' was asked for but cannot be used: {reason}. Use device='cpu', or "
                         "run on a machine with an NVIDIA driver and numba-cuda (pip install -e '.[cuda12]').")
