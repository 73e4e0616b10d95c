"""The NVIDIA DALI graph of the loader — one function for the CPU and the GPU pipeline.

::

    keys ─ external_source (read + random crop, CPU) ─ images, labels
         ─ python_function: traditional augmentation (scale, shift, rotation, flip,
           colour jitter, blur; labels nearest)           [CPU]
         ─ .gpu() when device == "gpu"
         ─ python_function: InsMix kernels                  [device]
         ─ python_function: smooth-GAN blend (if any)      [device]
         ─ crop_mirror_normalize → float NCHW; cast labels → int64
         ─ DALIGenericIterator → torch tensors on the device

Every random choice comes from keys ``(epoch, position, index)`` that the external
source feeds with each sample (:mod:`.stages`); the pipeline's own seed is set
explicitly from ``(seed, epoch, rank)`` and nothing in the graph draws from it.
"""

from __future__ import annotations

import numpy as np

from .stages import SampleProgram

__all__ = ["dali_available", "dali_version", "insmix_graph", "DaliBackend"]


def dali_available() -> bool:
    try:
        import nvidia.dali  # noqa: F401
        import nvidia.dali.plugin.pytorch  # noqa: F401
    except Exception:  # noqa: BLE001 - any import failure means "not usable"
        return False
    return True


def dali_version() -> str:
    import nvidia.dali

    return nvidia.dali.__version__


class _Feed:
    """External source: an iterable over the epoch's key batches; yields the cropped samples."""

    def __init__(self, program: SampleProgram, tasks: list[np.ndarray]):
        self.program, self.tasks = program, tasks

    def __iter__(self):
        self._i = 0
        return self

    def __next__(self):
        if self._i >= len(self.tasks):
            raise StopIteration
        keys = self.tasks[self._i]
        self._i += 1
        images, labels = self.program.read_batch(keys)
        return list(images), list(labels), list(keys)


class _Stages:
    """Batch-processing callbacks of the graph (lists of per-sample arrays in, lists out)."""

    def __init__(self, program: SampleProgram, blender, device: str):
        self.program, self.blender, self.device = program, blender, device

    def augment(self, images, labels, keys):
        im, lb = self.program.augment_batch(np.stack(images), np.stack(labels), np.stack(keys))
        return list(im), list(lb)

    def insmix(self, images, labels, keys):
        keys = np.stack([_host(k) for k in keys])
        if self.device == "gpu":  # CuPy in, CuPy out; the batch stays on the device
            import torch

            dev = torch.device("cuda", torch.cuda.current_device())
            im, lb, paste, orig = self.program.insmix_device(torch.stack([torch.as_tensor(x, device=dev) for x in images]),
                                                             torch.stack([torch.as_tensor(x, device=dev) for x in labels]),
                                                             keys)
            return _out(im, "gpu"), _out(lb, "gpu"), _out(paste, "gpu"), _out(orig, "gpu")
        im, lb, paste, orig = self.program.insmix_batch(np.stack(images), np.stack(labels), keys)
        return _out(im, "cpu"), _out(lb, "cpu"), _out(paste, "cpu"), _out(orig, "cpu")

    def blend(self, images, paste, original):
        import torch

        dev = torch.device("cuda") if self.device == "gpu" else torch.device("cpu")
        im = torch.stack([torch.as_tensor(x, device=dev) for x in images])
        pm = torch.stack([torch.as_tensor(x, device=dev) for x in paste])
        om = torch.stack([torch.as_tensor(x, device=dev) for x in original])
        if bool(pm.any()):
            im = self.blender.blend(im, pm, om)
        if self.device == "gpu":
            import cupy

            return [cupy.asarray(x) for x in im]
        return list(im.numpy())


def _host(x) -> np.ndarray:
    return x.get() if hasattr(x, "get") else np.asarray(x)


def _out(x, device: str):
    if device == "gpu":
        import cupy

        return [cupy.asarray(a) for a in x]
    return list(np.ascontiguousarray(x))


def insmix_graph(feed, stages: _Stages, *, device: str, mean, std, blend: bool):
    """The DALI graph (called inside ``pipeline_def``); ``device`` is ``"cpu"`` or ``"gpu"``."""
    from nvidia.dali import fn, types

    images, labels, keys = fn.external_source(source=feed, num_outputs=3, batch=True,
                                              layout=["HWC", "HW", None], cycle=False)
    images, labels = fn.python_function(images, labels, keys, function=stages.augment, num_outputs=2,
                                        batch_processing=True)
    if device == "gpu":
        images, labels, keys = images.gpu(), labels.gpu(), keys.gpu()
    images, labels, paste, original = fn.python_function(images, labels, keys, function=stages.insmix,
                                                         num_outputs=4, batch_processing=True, device=device)
    if blend:
        images = fn.python_function(images, paste, original, function=stages.blend, num_outputs=1,
                                    batch_processing=True, device=device)
    images = fn.crop_mirror_normalize(images, dtype=types.FLOAT, output_layout="CHW",
                                      mean=[255.0 * m for m in mean], std=[255.0 * s for s in std], device=device)
    labels = fn.cast(labels, dtype=types.INT64, device=device)
    return images, labels


class DaliBackend:
    """Builds one DALI pipeline per pass over the data (cheap) and iterates it with
    ``DALIGenericIterator``."""

    name = "dali"

    def __init__(self, program: SampleProgram, *, device, blender, num_workers: int, prefetch: int,
                 batch_size: int, rank: int):
        self.program = program
        self.device = device
        self.dali_device = "gpu" if device.type == "cuda" else "cpu"
        self.blender = blender
        self.num_threads = max(1, int(num_workers))
        self.prefetch = max(1, int(prefetch))
        self.batch_size = int(batch_size)
        self.rank = int(rank)
        self._iter = None

    def _pipeline(self, tasks, epoch: int):
        from nvidia.dali import pipeline_def

        from .stages import stage_seed

        stages = _Stages(self.program, self.blender, self.dali_device)
        build = pipeline_def(insmix_graph)
        device_id = (self.device.index or 0) if self.dali_device == "gpu" else None
        dali_seed = stage_seed(self.program.seed, epoch, 0x44414C49 + self.rank) & 0x7FFFFFFF  # explicit, unused
        return build(_Feed(self.program, tasks), stages, device=self.dali_device, mean=self.program.mean,
                     std=self.program.std, blend=self.blender is not None,
                     batch_size=self.batch_size, num_threads=self.num_threads, device_id=device_id,
                     seed=dali_seed, prefetch_queue_depth=self.prefetch)

    def run(self, tasks: list[np.ndarray]):
        if not tasks:
            return
        from nvidia.dali.plugin.pytorch import DALIGenericIterator

        epoch = int(tasks[0][0, 0])
        pipe = self._pipeline(tasks, epoch)
        pipe.build()
        self._iter = DALIGenericIterator(pipe, ["images", "labels"], auto_reset=False)
        try:
            for out in self._iter:
                d = out[0]
                yield d["images"].to(self.device), d["labels"].to(self.device)
        finally:
            self._iter = None
            del pipe

    def close(self) -> None:
        self._iter = None
