"""PyTorch backend: a ``DataLoader`` over *batch tasks* plus a finishing step on the device.

* A task is the key array of one batch (``(epoch, position, source index)`` rows, see
  :mod:`.stages`); a :class:`_TaskSampler` hands the epoch's tasks to a ``DataLoader``
  (``batch_size=None``) whose map-style :class:`_TaskDataset` runs the host part of one
  batch per call. The DataLoader returns tasks in order, so the samples do not depend on
  ``num_workers``. Workers are persistent (started once per loader) and run Numba
  single-threaded (parallelism comes from the workers; DataLoader already gives torch one
  thread there). They do not call OpenCV: a forked child that touches OpenCV's thread pool
  after the parent used it can deadlock.
* ``augment_on="workers"`` (the CPU default): a worker reads, crops, augments (the Numba
  kernels) and runs InsMix on its batch; the main process normalises.
* ``augment_on="device"`` (the CUDA default): a worker only reads and crops (uint8 crops,
  int16 labels when the ids fit, the augmentation's parameter rows) into pinned memory; the
  main process copies the batch to the device and runs the augmentation (the same kernels
  built for CUDA), InsMix, the smooth-GAN blend and the normalisation there — all on one
  side stream, without a host synchronisation, while the previous batch is being consumed
  on the current stream (one batch in flight). With ``device="cpu"`` the same path runs the
  CPU kernels in the main process (how CI tests it).
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
    """One batch per item: ``"read"`` (crops + parameters) or ``"full"`` (augmented, InsMix on the CPU)."""

    def __init__(self, program: SampleProgram, mode: str, masks: bool):
        self.program = program
        self.mode = mode
        self.masks = masks

    def __len__(self) -> int:  # tasks are arrays, not integers; the sampler drives the loop
        return 0

    def __getitem__(self, keys: np.ndarray) -> dict:
        if self.mode == "read":
            out = self.program.prepare(keys)
        else:
            out = self.program.cpu_batch(keys, insmix=True, masks=self.masks)
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
                 prefetch: int, mp_context: str | None = None, augment_on: str = "workers"):
        self.program = program
        self.device = device
        self.blender = blender
        self.cuda = device.type == "cuda"
        self.on_device = augment_on == "device"
        self.sampler = _TaskSampler()
        kw = {}
        if num_workers > 0:
            kw = dict(prefetch_factor=max(1, prefetch), persistent_workers=True, worker_init_fn=_worker_init,
                      multiprocessing_context=worker_context(mp_context))
        dataset = _TaskDataset(program, "read" if self.on_device else "full", masks=blender is not None)
        self.dataloader = DataLoader(dataset, batch_size=None,
                                     sampler=self.sampler, num_workers=num_workers, collate_fn=_identity,
                                     pin_memory=self.cuda, **kw)
        self.stream = torch.cuda.Stream(device=device) if self.cuda else None
        self._it = None

    # ------------------------------------------------------------------ finishing
    def finish(self, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
        """Device part of one batch, on the current stream (the side stream on CUDA)."""
        dev, prog = self.device, self.program
        keys = batch["keys"].numpy()
        if self.on_device:
            dev_batch = dict(batch)
            dev_batch["images"] = batch["images"].to(dev, non_blocking=True)
            dev_batch["labels"] = batch["labels"].to(dev, non_blocking=True)
            images, labels = prog.augment_device(dev_batch, dev, stream=self.stream)
            if prog.bank is not None:
                images, labels, paste, original = prog.insmix_device(images, labels, keys, stream=self.stream)
            else:
                paste = original = None
        else:
            images = batch["images"].to(dev, non_blocking=True)
            labels = batch["labels"].to(dev, non_blocking=True)
            paste = batch["paste"].to(dev, non_blocking=True) if batch.get("paste") is not None else None
            original = (labels > 0) & ~paste if paste is not None else None
        coin = batch["coin"].numpy()
        if self.blender is not None and paste is not None and coin.any():
            images = self._blend(images, paste, original, coin)
        return prog.normalise(images), prog.labels_out(labels)

    def _blend(self, images, paste, original, coin: np.ndarray):
        """The blender on the samples that got InsMix (chosen on the host: no device sync)."""
        if coin.all():
            return self.blender.blend(images, paste, original)
        idx = torch.from_numpy(np.flatnonzero(coin)).to(images.device)
        out = images.clone()
        out[idx] = self.blender.blend(images.index_select(0, idx), paste.index_select(0, idx),
                                      original.index_select(0, idx))
        return out

    def _finish_async(self, batch: dict):
        with torch.cuda.stream(self.stream):
            images, labels = self.finish(batch)
            done = torch.cuda.Event()
            done.record(self.stream)
        return images, labels, done

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
                nxt = self._finish_async(batch)  # queued on the side stream while the step runs
                if pending is not None:
                    yield self._ready(pending)
                pending = nxt
            if pending is not None:
                yield self._ready(pending)
        finally:
            self._it = None

    def _ready(self, pending):
        images, labels, done = pending
        current = torch.cuda.current_stream(self.device)
        current.wait_event(done)
        images.record_stream(current)
        labels.record_stream(current)
        return images, labels

    def close(self) -> None:
        it = getattr(self.dataloader, "_iterator", None)
        if it is not None and hasattr(it, "_shutdown_workers"):
            it._shutdown_workers()
        self.dataloader._iterator = None
        self._it = None
