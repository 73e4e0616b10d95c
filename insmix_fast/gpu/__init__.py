"""InsMix on an NVIDIA GPU (``numba.cuda`` kernels in ``insmix_fast.kernels.cuda_*``).

Entry points: ``insmix_batch(..., device="cuda")`` (in :mod:`insmix_fast.core`),
``bank.to("cuda")`` → :class:`DeviceBank`, and here :func:`cuda_available`,
:func:`insmix_batch_cuda`, :func:`admissible_counts_cuda`, :func:`choose_templates_cuda`.

Modules (each imports only the ones above it, never :mod:`insmix_fast.core` or
:mod:`insmix_fast.bank`):

* :mod:`.runtime` — is a GPU (or the simulator) usable here;
* :mod:`.launch` — device selection, streams, launch geometry, the reused work arrays;
* :mod:`.arrays` — input/output array kinds (numpy, CuPy, torch, numba, CAI, DLPack);
* :mod:`.bank` — :class:`DeviceBank`, the instance bank on the GPU;
* :mod:`.results` — :class:`GPUBatchResult`, device-resident output;
* :mod:`.batch` — the InsMix pipeline (:func:`insmix_batch_cuda`);
* :mod:`.scoring` — bank-wide scoring alone (:func:`admissible_counts_cuda`, :func:`choose_templates_cuda`).

Nothing here imports ``numba.cuda`` (nor CuPy or torch's CUDA) before
:func:`cuda_available` is asked, so importing :mod:`insmix_fast` stays free of GPU
stacks. Tests run the same kernels on the CPU with the CUDA simulator
(``NUMBA_ENABLE_CUDASIM=1`` set before ``numba.cuda`` is first imported).
"""

from __future__ import annotations

from .runtime import cuda_available, require_cuda, simulator_enabled

__all__ = ["cuda_available", "require_cuda", "simulator_enabled", "DeviceBank", "GPUBatchResult", "insmix_batch_cuda",
           "admissible_counts_cuda", "choose_templates_cuda", "clear_workspace"]

_LAZY = {
    "DeviceBank": "bank",
    "GPUBatchResult": "results",
    "insmix_batch_cuda": "batch",
    "admissible_counts_cuda": "scoring",
    "choose_templates_cuda": "scoring",
    "clear_workspace": "launch",
}


def __getattr__(name):  # lazy: importing insmix_fast.gpu does not import numba.cuda
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f"{__name__}.{_LAZY[name]}"), name)
    raise AttributeError(f"module 'insmix_fast.gpu' has no attribute {name!r}")
