"""PyTorch backend: a ``DataLoader`` over *batch tasks* plus an on-device finishing step.

* A task is the key array of one batch (``(epoch, position, source index)`` rows, see
  :mod:`.stages`); a :class:`_TaskSampler` hands the epoch's tasks to a ``DataLoader``
  (``batch_size=None``) whose map-style :class:`_TaskDataset` runs the CPU stages of one
  batch per call — read, crop, traditional augmentation and, on the CPU path, the Numba
  InsMix kernels. The DataLoader returns tasks in order, so the samples do not depend
  on ``num_workers``. Workers are persistent (started once per loader) and run Numba
  single-threaded (parallelism comes from the workers).
* Finishing runs in the main process on the target device: host→device copy from
  pinned buffers, InsMix on the GPU (``device="cuda"``: ``insmix_batch(device="cuda")``),
  the smooth-GAN blend, normalisation. On CUDA the next batch is finished on a side
  stream while the current one is being consumed (one batch in flight).
"""

from __future__ import annotations

import multiprocessing

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from ..threads import start_numba_threads
from .stages import SampleProgram

__all__ = ["TorchBackend", "worker_context"]


class _TaskSampler(Sampler):
    def __init__(self):
        self.tasks: list[np.ndarray] = []

    def __iter__(self):
        return iter(list(self.tasks))

    def __len__(self) -> int:
        return len(self.tasks)


class _TaskDataset(Dataset):
    def __init__(self, program: SampleProgram, insmix_on_cpu: bool):
        self.program = program
        self.insmix_on_cpu = insmix_on_cpu

    def __len__(self) -> int:  # tasks are arrays, not integers; the sampler drives the loop
        return 0

    def __getitem__(self, keys: np.ndarray) -> dict:
        out = self.program.cpu_batch(keys, insmix=self.insmix_on_cpu)
        return {k: (torch.from_numpy(np.ascontiguousarray(v)) if isinstance(v, np.ndarray) else v)
                for k, v in out.items()}


def _identity(x):
    return x


def _worker_init(_worker_id: int) -> None:
    try:
        import numba

        start_numba_threads()  # keeps the worker's torch.set_num_threads(1) that the DataLoader made
        numba.set_num_threads(1)
    except Exception:  # noqa: BLE001 - a Numba without threading control still works
        pass


def worker_context(requested: str | None) -> str | None:
    """Multiprocessing start method of the workers: ``requested`` if given; ``fork``
    unless Numba's OpenMP pool is already running in this process (GNU OpenMP aborts
    the forked child), then ``spawn``."""
    if requested is not None:
        return requested
    if "fork" not in multiprocessing.get_all_start_methods():
        return None
    try:
        import numba
        from numba.np.ufunc import parallel as _par

        if getattr(_par, "_is_initialized", False) and numba.threading_layer() == "omp":
            return "spawn"
    except Exception:  # noqa: BLE001
        return "spawn"
    return "fork"


class TorchBackend:
    """Runs :class:`SampleProgram` through a ``torch.utils.data.DataLoader``."""

    name = "torch"

    def __init__(self, program: SampleProgram, *, device: torch.device, blender, num_workers: int,
                 prefetch: int, mp_context: str | None = None):
        self.program = program
        self.device = device
        self.blender = blender
        self.cuda = device.type == "cuda"
        self.sampler = _TaskSampler()
        kw = {}
        if num_workers > 0:
            kw = dict(prefetch_factor=max(1, prefetch), persistent_workers=True, worker_init_fn=_worker_init,
                      multiprocessing_context=worker_context(mp_context))
        self.dataloader = DataLoader(_TaskDataset(program, insmix_on_cpu=not self.cuda), batch_size=None,
                                     sampler=self.sampler, num_workers=num_workers, collate_fn=_identity,
                                     pin_memory=self.cuda, **kw)
        self.stream = torch.cuda.Stream(device=device) if self.cuda else None
        self._it = None

    # ------------------------------------------------------------------ finishing
    def finish(self, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
        dev = self.device
        images = batch["images"].to(dev, non_blocking=True)
        labels = batch["labels"].to(dev, non_blocking=True)
        if self.cuda and self.program.bank is not None:
            # the InsMix kernels (numba.cuda) do not run on torch's stream: order them explicitly
            torch.cuda.current_stream(dev).synchronize()
            images, labels, paste, original = self.program.insmix_device(images, labels, batch["keys"].numpy())
            torch.cuda.synchronize(dev)
        else:
            paste = batch["paste"].to(dev, non_blocking=True) if batch.get("paste") is not None else None
            original = batch["original"].to(dev, non_blocking=True) if batch.get("original") is not None else None
        if self.blender is not None and paste is not None and bool(paste.any()):
            images = self.blender.blend(images, paste, original)
        return self.program.normalise(images), labels.long()

    def _finish_async(self, batch: dict):
        if self.stream is None:
            return self.finish(batch)
        with torch.cuda.stream(self.stream):
            out = self.finish(batch)
        return out, torch.cuda.current_stream(self.device).wait_stream, self.stream

    # ------------------------------------------------------------------ iteration
    def run(self, tasks: list[np.ndarray]):
        """Yield the finished batches of ``tasks`` in order."""
        self.sampler.tasks = list(tasks)
        self._it = iter(self.dataloader)
        try:
            if self.stream is None:
                for batch in self._it:
                    yield self.finish(batch)
                return
            pending = None
            for batch in self._it:
                nxt = self._finish_async(batch)
                if pending is not None:
                    yield self._ready(pending)
                pending = nxt
            if pending is not None:
                yield self._ready(pending)
        finally:
            self._it = None

    def _ready(self, pending):
        (images, labels), wait, stream = pending
        wait(stream)
        images.record_stream(torch.cuda.current_stream(self.device))
        labels.record_stream(torch.cuda.current_stream(self.device))
        return images, labels

    def close(self) -> None:
        it = getattr(self.dataloader, "_iterator", None)
        if it is not None and hasattr(it, "_shutdown_workers"):
            it._shutdown_workers()
        self.dataloader._iterator = None
        self._it = None
