"""Training-time data loading with InsMix (``InsMixLoader``).

* :mod:`.loader` — :class:`InsMixLoader`, the user-facing object;
* :mod:`.pipeline` — the NVIDIA DALI graph (CPU and GPU, one function, built once per loader);
* :mod:`.torch_backend` — the PyTorch ``DataLoader`` path (workers read; CPU or GPU finishes);
* :mod:`.stages` — the per-sample program (host part, augmentation, InsMix) and its keyed randomness;
* :mod:`.cuda_augment` — the augmentation kernels of :mod:`insmix_fast.augment` built for CUDA
  (imported only on the CUDA path);
* :mod:`.state` — epoch plan, sharding across ranks, resumable position.

See ``docs/loader.md``.
"""

from .loader import InsMixLoader, open_source
from .pipeline import dali_available
from .stages import SampleProgram, stage_seed
from .state import EpochPlan, LoaderState, epoch_plan

__all__ = ["InsMixLoader", "open_source", "dali_available", "SampleProgram", "stage_seed", "EpochPlan",
           "LoaderState", "epoch_plan"]
