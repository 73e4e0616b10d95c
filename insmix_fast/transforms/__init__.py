"""Drop-in InsMix for pipelines you already have.

* :class:`InsMix` — an albumentations (2.x) ``DualTransform`` on ``image`` + ``mask``
  (:mod:`insmix_fast.transforms.albumentations`);
* :class:`InsMixd` — a MONAI dictionary transform (:mod:`insmix_fast.transforms.monai`);
* :class:`InsMixBatch` — a ``torch.nn.Module`` on N×3×H×W batches on the CPU or a CUDA
  device, kornia/torchvision style (:mod:`insmix_fast.transforms.batch`).

Each adapter is imported on first use, so ``import insmix_fast.transforms`` imports
neither albumentations nor MONAI; a missing library raises ``ImportError`` saying
``pip install "insmix-fast[transforms]"``. Guide: ``docs/transforms.md``.
"""

from __future__ import annotations

__all__ = ["InsMix", "InsMixd", "InsMixBatch"]

_WHERE = {"InsMix": "albumentations", "InsMixd": "monai", "InsMixBatch": "batch"}


def __getattr__(name):  # lazy: each adapter imports its library only when asked for
    if name in _WHERE:
        import importlib

        module = importlib.import_module(f"{__name__}.{_WHERE[name]}")
        return getattr(module, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(list(globals()) + __all__)
