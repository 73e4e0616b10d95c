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

import gc
import multiprocessing
import os
import threading
import time

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from ..errors import ConfigError, LoaderTimeoutError
from ..threads import fork_safe, start_numba_threads, threading_layer
from .stages import SampleProgram

__all__ = ["TorchBackend", "worker_context", "check_fork"]


class _TaskSampler(Sampler):
    def __init__(self):
        self.tasks: list[np.ndarray] = []
        self.ring: _Ring | None = None

    def __iter__(self):
        if self.ring is None:
            return iter(list(self.tasks))
        return self._with_slots(list(self.tasks))

    def _with_slots(self, tasks):
        """Each task with a free ring slot, taken when the DataLoader sends the task (main process).
        The DataLoader asks for the first task of a pass only after the workers finished every task
        of the previous one, so nothing of that pass is in flight: every slot starts free."""
        self.ring.release_all()
        for keys in tasks:
            yield keys, self.ring.take()

    def __len__(self) -> int:
        return len(self.tasks)


class _TaskDataset(Dataset):
    """One batch per item: ``"read"`` (crops + parameters) or ``"full"`` (augmented, InsMix on the CPU)."""

    def __init__(self, program: SampleProgram, mode: str, masks: bool, ring: "_Ring | None" = None):
        self.program = program
        self.mode = mode
        self.masks = masks
        self.ring = ring

    def __len__(self) -> int:  # tasks are arrays, not integers; the sampler drives the loop
        return 0

    def __getitem__(self, task) -> dict:
        if isinstance(task, tuple):  # (keys, ring slot): the results go into the slot, only small arrays travel
            keys, slot = task
            out = self.program.cpu_batch(keys, insmix=True, masks=self.masks, out=self.ring.views(slot, len(keys)))
            out["slot"] = slot
            return out
        keys = task
        if self.mode == "read":
            out = self.program.prepare(keys)
            small = ()
        else:
            out = self.program.cpu_batch(keys, insmix=True, masks=self.masks)
            small = _SMALL
        # tensors travel through shared memory, each with its own file descriptor handed over a socket
        # (torch's default sharing strategy): the small host-side arrays go as plain numpy (pickled bytes)
        return {k: (torch.from_numpy(np.ascontiguousarray(v)) if isinstance(v, np.ndarray) and k not in small else v)
                for k, v in out.items()}


class _Ring:
    """Shared-memory slots the workers write finished CPU batches into (``augment_on="workers"``
    on the CPU). Without it every batch a worker returns becomes new shared-memory files — one
    per tensor, each filled, faulted in page by page and its descriptor handed to the main
    process over a socket (torch's default sharing strategy); py-spy showed that at about 15 %
    of a worker's CPU. A slot is taken by the main process when a task is sent (the sampler)
    and released when the batch is finished (normalised and widened into new tensors), so a
    worker only ever writes a slot nobody reads: ``prefetch × workers`` tasks in flight plus the
    batch being finished, plus one spare."""

    def __init__(self, n_slots: int, batch: int, crop: int, typed: bool, masks: bool):
        shape = (n_slots, batch, crop, crop)
        self.arrays = {"images": torch.empty(shape + (3,), dtype=torch.uint8).share_memory_(),
                       "labels": torch.empty(shape, dtype=torch.int32).share_memory_()}
        if typed:
            self.arrays["types"] = torch.empty(shape, dtype=torch.int32).share_memory_()
        if masks:
            self.arrays["paste"] = torch.empty(shape, dtype=torch.bool).share_memory_()
        self.n_slots = n_slots
        self._free: list[int] = []
        self.release_all()

    def __getstate__(self):  # workers get the shared tensors, not the main process's bookkeeping
        return {"arrays": self.arrays, "n_slots": self.n_slots, "_free": []}

    def release_all(self) -> None:
        self._free = list(range(self.n_slots))

    def take(self) -> int:
        if not self._free:  # cannot happen with the DataLoader's prefetch bound; never overwrite a batch
            raise RuntimeError(f"InsMixLoader: all {self.n_slots} shared batch slots are in use (internal error: "
                               "please report it)")
        return self._free.pop(0)

    def release(self, slot: int) -> None:
        self._free.append(slot)

    def views(self, slot: int, n: int) -> dict:
        """The slot's first ``n`` samples as numpy arrays (worker side)."""
        return {k: a[slot, :n].numpy() for k, a in self.arrays.items()}

    def tensors(self, slot: int, n: int) -> dict:
        """The slot's first ``n`` samples as tensors (main process)."""
        return {k: a[slot, :n] for k, a in self.arrays.items()}


#: Keys of a worker's finished batch that the main process reads on the host only.
_SMALL = ("keys", "coin")


def _host(x) -> np.ndarray:
    return x.numpy() if isinstance(x, torch.Tensor) else x


def _identity(x):
    return x


def _watch_parent(ppid: int) -> None:
    while True:
        time.sleep(0.5)
        if os.getppid() != ppid:  # the main process died (even by SIGKILL): do not outlive it
            os._exit(1)


def _worker_init(_worker_id: int) -> None:
    # a worker stuck in the source never reaches the DataLoader's own parent check: watch here
    threading.Thread(target=_watch_parent, args=(os.getppid(),), name="insmix-parent-watch", daemon=True).start()
    try:
        import numba

        start_numba_threads()  # keeps the worker's torch.set_num_threads(1) that the DataLoader made
        numba.set_num_threads(1)
    except Exception:  # noqa: BLE001 - a Numba without threading control still works
        pass


def worker_context(requested: str | None) -> str | None:
    """Multiprocessing start method of the workers: ``requested`` if given, else ``fork`` where
    the platform has it (Linux; the platform's default elsewhere). Forking is safe after InsMix
    ran in this process because :mod:`insmix_fast.threads` starts Numba's pool on a fork-safe
    threading layer; :func:`check_fork` refuses the one case where it is not."""
    if requested is not None:
        return requested
    return "fork" if "fork" in multiprocessing.get_all_start_methods() else None


def check_fork(context: str | None) -> None:
    """Raise :class:`ConfigError` (instead of workers that die or hang) when workers are about to
    be forked while Numba's pool runs on GNU OpenMP — which kills forked children that run a
    parallel kernel. That happens only when the user chose that layer (``NUMBA_THREADING_LAYER``)
    or started Numba's pool before importing insmix_fast."""
    if context != "fork" or fork_safe():
        return
    raise ConfigError(
        "InsMixLoader cannot fork its worker processes: Numba's thread pool already runs on the "
        f"'{threading_layer()}' threading layer in this process (GNU OpenMP kills a forked child that runs a "
        "parallel kernel). Use a fork-safe layer: leave NUMBA_THREADING_LAYER unset (insmix_fast then picks "
        "'tbb' or 'workqueue') or set it to 'workqueue' or 'tbb', and import insmix_fast before anything starts "
        "Numba's threads; or pass num_workers=0; or mp_context='spawn' (the source must be picklable and the "
        "script needs an `if __name__ == \"__main__\":` guard)")


class TorchBackend:
    """Runs :class:`SampleProgram` through a ``torch.utils.data.DataLoader``."""

    name = "torch"

    def __init__(self, program: SampleProgram, *, device: torch.device, blender, num_workers: int,
                 prefetch: int, mp_context: str | None = None, augment_on: str = "workers",
                 timeout: float | None = None, batch_size: int | None = None):
        self.program = program
        self.device = device
        self.blender = blender
        self.cuda = device.type == "cuda"
        self.on_device = augment_on == "device"
        self.num_workers = num_workers
        self.timeout = timeout
        self.context = worker_context(mp_context) if num_workers > 0 else None
        # without workers the main process reads: the source reads get the timeout there
        program.read_timeout = timeout if num_workers == 0 else None
        self.sampler = _TaskSampler()
        kw = {}
        if num_workers > 0:
            kw = dict(prefetch_factor=max(1, prefetch), persistent_workers=True, worker_init_fn=_worker_init,
                      multiprocessing_context=self.context, timeout=timeout or 0)
        self.ring = None
        if num_workers > 0 and not self.on_device and not self.cuda and batch_size:
            self.ring = _Ring(max(1, prefetch) * num_workers + 2, int(batch_size), program.crop,
                              typed=bool(program.typed), masks=blender is not None)
        self.sampler.ring = self.ring
        dataset = _TaskDataset(program, "read" if self.on_device else "full", masks=blender is not None,
                               ring=self.ring)
        self.dataloader = DataLoader(dataset, batch_size=None,
                                     sampler=self.sampler, num_workers=num_workers, collate_fn=_identity,
                                     pin_memory=self.cuda, **kw)
        self.stream = torch.cuda.Stream(device=device) if self.cuda else None
        self._it = None

    # ------------------------------------------------------------------ finishing
    def finish(self, batch: dict) -> tuple[torch.Tensor, ...]:
        """Device part of one batch, on the current stream (the side stream on CUDA):
        ``(images, labels)`` or, for a typed source, ``(images, labels, types)``."""
        dev, prog = self.device, self.program
        keys = _host(batch["keys"])
        slot = batch.get("slot")
        if self.on_device:
            dev_batch = dict(batch)
            dev_batch["images"] = batch["images"].to(dev, non_blocking=True)
            dev_batch["labels"] = batch["labels"].to(dev, non_blocking=True)
            images, labels = prog.augment_device(dev_batch, dev, stream=self.stream)
            types = prog.types_device(labels, batch["classes"], batch["maxid"]) if "classes" in batch else None
            if prog.bank is not None:
                images, labels, types, paste, original = prog.insmix_device(images, labels, keys, stream=self.stream,
                                                                            types=types)
            else:
                paste = original = None
        elif slot is not None:  # the worker wrote the batch into a ring slot (CPU)
            views = self.ring.tensors(slot, len(keys))
            images, labels, types, paste = views["images"], views["labels"], views.get("types"), views.get("paste")
            original = (labels > 0) & ~paste if paste is not None else None
        else:
            images = batch["images"].to(dev, non_blocking=True)
            labels = batch["labels"].to(dev, non_blocking=True)
            types = batch["types"].to(dev, non_blocking=True) if batch.get("types") is not None else None
            paste = batch["paste"].to(dev, non_blocking=True) if batch.get("paste") is not None else None
            original = (labels > 0) & ~paste if paste is not None else None
        try:
            coin = _host(batch["coin"])
            if self.blender is not None and paste is not None and coin.any():
                images = self._blend(images, paste, original, coin)
            out = (prog.normalise(images), prog.labels_out(labels))  # new tensors (a ring slot is free after)
            return out if types is None else out + (prog.labels_out(types),)
        finally:
            if slot is not None:
                self.ring.release(slot)

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
            out = self.finish(batch)
            done = torch.cuda.Event()
            done.record(self.stream)
        return out, done

    # ------------------------------------------------------------------ iteration
    def run(self, tasks: list[np.ndarray]):
        """Yield the finished batches of ``tasks`` in order."""
        self.sampler.tasks = list(tasks)
        if self.num_workers > 0 and getattr(self.dataloader, "_iterator", None) is None:
            check_fork(self.context)  # the workers start now
            self._it = _start_workers(self.dataloader, self.context)
        else:
            self._it = iter(self.dataloader)
        try:
            if self.stream is None:
                for k in range(len(tasks)):
                    yield self.finish(self._next(tasks, k))
                return
            pending = None
            for k in range(len(tasks)):
                nxt = self._finish_async(self._next(tasks, k))  # queued on the side stream while the step runs
                if pending is not None:
                    yield self._ready(pending)
                pending = nxt
            if pending is not None:
                yield self._ready(pending)
        finally:
            self._it = None

    def _next(self, tasks, k: int) -> dict:
        """The worker output of task ``k``; past ``timeout`` the workers are stopped and
        :class:`LoaderTimeoutError` names the batch's samples."""
        try:
            return next(self._it)
        except RuntimeError as e:
            if self.timeout is None or "timed out" not in str(e):
                raise
            self.close(kill=True)
            raise LoaderTimeoutError(
                f"batch {k} of this pass (source samples {tasks[k][:, 2].tolist()}, epoch {int(tasks[k][0, 0])}) "
                f"took more than {self.timeout:g} s (InsMixLoader timeout={self.timeout:g}); the source's "
                f"__getitem__ or a worker seems stuck. The {self.num_workers} worker processes were stopped; "
                "the next iteration starts new ones") from None

    def _ready(self, pending):
        out, done = pending
        current = torch.cuda.current_stream(self.device)
        current.wait_event(done)
        for t in out:
            t.record_stream(current)
        return out

    def close(self, kill: bool = False) -> None:
        """Stop the workers; ``kill``: terminate them first (they may be stuck in the source)."""
        it = getattr(self.dataloader, "_iterator", None)
        if it is not None and hasattr(it, "_shutdown_workers"):
            if kill:
                _kill_workers(it)
            it._shutdown_workers()
        self.dataloader._iterator = None
        self._it = None


def _start_workers(dataloader: DataLoader, context: str | None):
    """``iter(dataloader)``, which starts the workers, made safe for ``fork``: garbage that owns
    threads (an abandoned DALI pipeline in a reference cycle) is destroyed here first, and the
    rest is frozen while the workers fork, so a child's garbage collector never runs the
    destructor of a copy whose threads exist only in this process (it crashed or hung workers)."""
    if context != "fork":
        return iter(dataloader)
    gc.collect()
    gc.freeze()
    try:
        return iter(dataloader)
    finally:
        gc.unfreeze()


def _kill_workers(it) -> None:
    """Terminate the workers of a DataLoader iterator before its own shutdown (which would wait
    5 s for each one stuck in ``__getitem__``). Their pids leave torch's SIGCHLD watch first, so
    their end is not reported as a worker failure."""
    busy = [w for w in getattr(it, "_workers", []) if w.is_alive()]
    if not busy:
        return
    try:
        from torch.utils.data import _utils

        if getattr(it, "_worker_pids_set", False):
            _utils.signal_handling._remove_worker_pids(id(it))
            it._worker_pids_set = False
    except Exception:  # noqa: BLE001 - torch internals moved: the shutdown below still ends them
        return
    for w in busy:
        w.terminate()
    for w in busy:
        w.join(timeout=5)
