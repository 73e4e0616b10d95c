"""The NVIDIA DALI graph of the loader — one function for the CPU and the GPU pipeline.

::

    CPU, dali_ops="kernels" (the CPU default), no blender:
    keys ─ external_source: read + crop, the augmentation's parameter rows, per-sample rows (host)
         ─ numba_function, per sample on DALI's threads without the GIL (:mod:`.dali_sample`):
           augmentation kernels → type map → InsMix kernels → normalisation → float NCHW images,
           int64 labels[, types], a status row the loader checks

    otherwise (the GPU graph, dali_ops="operators", a smooth-GAN blender, template_source="self"):
    keys ─ external_source: read + crop, the augmentation's parameter rows (host)
         ─ [GPU] .gpu()
         ─ traditional augmentation, one of
             "kernels":   numba_function — the Numba kernels of insmix_fast.augment, per sample
                          on DALI's thread pool (they release the GIL)            [CPU]
             "operators": reflect-padded canvas (our kernel) → fn.warp_affine (bilinear image,
                          nearest int32 labels) → fn.coord_transform (colour) →
                          fn.gaussian_blur (only the samples that draw a blur)  [CPU or GPU]
         ─ python_function: area filter (operators) + InsMix kernels (Numba on the CPU, which
           release the GIL; numba.cuda on DALI's stream on the GPU)
         ─ python_function: smooth-GAN blend (if any)
         ─ [GPU] crop_mirror_normalize → float NCHW; cast labels → int64
           [CPU] the loader normalises DALI's output buffer in one Numba pass

Why one operator per sample on the CPU: DALI runs CPU operators one at a time and a
``python_function`` holds the GIL, so the augmentation operator followed by the Python InsMix
stage kept about 1.5 of 2 cores busy; the fused operator keeps DALI's threads on whole samples
while the main thread reads (bench/RESULTS.md).

The pipeline is built once per loader; each pass over the data resets it (a pass that is
abandoned midway is drained first: at most ``prefetch`` batches). Every random choice comes
from the keys ``(epoch, position, index)`` (:mod:`.stages`); DALI's own RNG is not used (its
seed is still set explicitly).

Why two augmentation variants: DALI's CPU operators are reference-quality C++ (measured on the
development machine, one thread, 256² RGB: ``warp_affine`` 3.1 ms, ``coord_transform`` 2.9 ms,
``gaussian_blur`` 3.3 ms a crop, against 1.3 ms for warp + colour + label clean-up in our
kernel), so on the CPU the graph runs our kernels; on the GPU it runs DALI's CUDA operators.
Both give the same labels; the images agree within a few grey levels (``docs/loader.md``).
"""

from __future__ import annotations

import collections

import numpy as np

from ..augment import (COLOUR_BITS, P_A00, P_A01, P_A10, P_A11, P_BLUR_R, P_C, P_FRAC, P_MAXID, P_MIN_AREA, P_R,
                       P_SIGMA, P_T0, P_T1, P_TC, TAP_BITS, area_filter, augment_sample, reflect_canvas)
from ..classes import types_problem
from ..core import kernel_templates
from ..errors import ConfigError, InsMixError, LabelMapError
from .dali_sample import DESC_LENGTH, STATUS_ID_LIMIT, bank_descriptor, sample_operator, sample_rows
from .stages import SampleProgram

__all__ = ["dali_available", "dali_version", "insmix_graph", "DaliBackend", "DALI_OPS"]

#: Values of ``dali_ops``: how the DALI graph runs the traditional augmentation.
DALI_OPS = ("auto", "kernels", "operators")


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


def _dali_augment(out_img, out_lab, out_prm, out_taps, img, lab, prm, taps):
    """``numba_function`` body (compiled by DALI, run per sample on its threads)."""
    augment_sample(img, lab, prm, taps, out_img, out_lab, True, True)
    out_prm[:] = prm
    out_taps[:] = taps


_AUGMENT_OP = None


def _augment_op():
    """DALI's ``numba_function`` operator running :func:`_dali_augment`, made once per process
    (compiling its C callback takes seconds; the operator object can serve every pipeline)."""
    global _AUGMENT_OP
    if _AUGMENT_OP is None:
        from nvidia.dali import types
        from nvidia.dali.plugin.numba import NumbaFunction

        _AUGMENT_OP = NumbaFunction(run_fn=_dali_augment,
                                    out_types=[types.UINT8, types.INT32, types.INT64, types.INT64],
                                    in_types=[types.UINT8, types.INT32, types.INT64, types.INT64],
                                    outs_ndim=[3, 2, 1, 1], ins_ndim=[3, 2, 1, 1])
    return _AUGMENT_OP


class _Feed:
    """External source: iterates over the current pass's key batches; yields dense batches.

    ``host`` (GPU graph): the host-side values of each fed batch (keys, InsMix coin, parameter
    rows) are queued here for the GPU stages, which pop them in order — DALI runs iterations in
    order — instead of reading them back from the device."""

    def __init__(self, program: SampleProgram, ops: str, margin: int, gpu: bool, fused: bool = False):
        self.program, self.ops, self.margin, self.gpu, self.fused = program, ops, margin, gpu, fused
        self.tasks: list[np.ndarray] = []
        self.stop = False
        self._i = 0
        self.host = collections.deque()
        self._insmix = None  # the fused operator's InsMix context, made on the first batch that needs it

    def __iter__(self):
        self._i = 0
        self.stop = False
        return self

    def __next__(self):
        if self.stop or self._i >= len(self.tasks):
            raise StopIteration
        keys = self.tasks[self._i]
        self._i += 1
        # dense N×… arrays (DALI copies each batch in one piece); int32 labels, as the graph takes them
        b = self.program.prepare(keys, narrow=False)
        if self.fused:
            return self._fused_inputs(b)
        images = b["images"]
        labels = b["labels"]
        typed = ("classes" in b) and not self.gpu
        host = () if self.gpu else (b["keys"], b["coin"]) + ((b["classes"], b["maxid"]) if typed else ())
        if self.gpu:
            self.host.append((b["keys"], b.get("params"), b.get("classes"), b.get("maxid")))
        if self.program.augment is None:
            return (images, labels[..., None]) + host
        if self.ops == "kernels":
            return (images, labels, b["params"], b["taps"]) + host
        return (images, labels[..., None], b["params"]) + host + _operator_args(b["params"], self.margin)


    def _fused_inputs(self, b: dict):
        """Inputs of :func:`~.dali_sample.sample_operator`: images, labels, parameter rows and taps
        (stand-ins without augmentation), the rows, the bank descriptor."""
        prog = self.program
        keys, coin = b["keys"], b["coin"]
        n = len(keys)
        params, n_classes, desc = None, 0, _NO_BANK
        if coin.any():
            ctx = self.insmix_context()
            params, n_classes, desc = ctx.params, ctx.n_classes, ctx.desc
        mean, inv = prog.normalisation()
        rows = sample_rows(n, seed=prog.seeds(int(keys[0, 0]))[2], positions=keys[:, 1], sources=keys[:, 2],
                           coin=coin, augment=prog.augment is not None, params=params, n_classes=n_classes,
                           mean=mean, inv=inv, classes=b.get("classes"), maxid=b.get("maxid"))
        if prog.augment is None:
            prm = taps = np.zeros((n, 1), np.int64)
        else:
            prm, taps = b["params"], b["taps"]
        return b["images"], b["labels"], prm, taps, rows, [desc] * n

    def insmix_context(self) -> "_InsMixContext":
        """The bank and configuration as the fused operator reads them, made once (with the checks
        ``insmix_batch`` makes); the descriptor's arrays stay alive with the feed."""
        if self._insmix is None:
            prog = self.program
            table, classes, params, n_classes, names = kernel_templates(prog.bank, prog.config, bool(prog.typed))
            desc, keep = bank_descriptor(table, classes)
            self._insmix = _InsMixContext(params, n_classes, names, desc, keep)
        return self._insmix


#: The fused operator's InsMix inputs: the kernels' ``Params``, the largest class a type may be and
#: the bank's class names (for messages), the bank descriptor and the arrays it points to.
_InsMixContext = collections.namedtuple("_InsMixContext", ["params", "n_classes", "class_names", "desc", "keep"])

_NO_BANK = np.zeros(DESC_LENGTH, np.int64)  # the descriptor of samples without InsMix (never read)


def _operator_args(params: np.ndarray, margin: int):
    """Per-sample arguments of DALI's operators, from the parameter rows: the warp matrix on the
    padded canvas, the colour matrix and offset, the blur's sigma / window / flag."""
    f = params[:, P_FRAC].astype(np.float64)
    a = params[:, [P_A00, P_A01, P_A10, P_A11]] / 2.0 ** (f[:, None] - 1)
    t = params[:, [P_T0, P_T1]] / 2.0 ** f[:, None] + margin
    mats = np.ascontiguousarray(np.concatenate([a[:, :2], t[:, :1], a[:, 2:], t[:, 1:]], axis=1).reshape(-1, 2, 3),
                                np.float32)
    cols = np.ascontiguousarray((params[:, P_C:P_C + 9] / float(1 << COLOUR_BITS)).reshape(-1, 3, 3), np.float32)
    offs = np.ascontiguousarray(np.repeat(params[:, P_TC:P_TC + 1] / float(1 << COLOUR_BITS), 3, axis=1),
                                np.float32)
    r = params[:, P_BLUR_R]
    sigma = np.where(r > 0, params[:, P_SIGMA] / float(1 << TAP_BITS), 1.0).astype(np.float32)
    window = (2 * np.maximum(r, 1) + 1).astype(np.int32)
    return mats, cols, offs, sigma, window, r > 0


class _Stages:
    """Batch callbacks of the graph (lists of per-sample arrays in, lists out)."""

    def __init__(self, program: SampleProgram, blender, device: str, ops: str, margin: int, feed: "_Feed"):
        self.program, self.blender, self.device, self.ops, self.margin = program, blender, device, ops, margin
        self.feed = feed

    # --- reflect-padded canvas ("operators")
    def canvas(self, images, labels, params):
        if self.device == "gpu":
            return self._canvas_gpu(images, labels, params)  # params: the rows, moved to the GPU by DALI
        m = self.margin
        out_i, out_l = [], []
        for img, lab, prm in zip(images, labels, params):
            h, w = lab.shape[:2]
            ci = np.empty((h + 2 * m, w + 2 * m, 3), np.uint8)
            cl = np.empty((h + 2 * m, w + 2 * m), np.int32)
            reflect_canvas(img, lab[..., 0], prm[P_MAXID], prm[P_R], m, ci, cl)
            out_i.append(ci)
            out_l.append(cl[..., None])
        return out_i, out_l

    def _canvas_gpu(self, images, labels, params):  # pragma: no cover - needs a GPU and DALI's CUDA build
        import torch

        from . import cuda_augment as ca

        im, lb, pr = _stack_torch(images), _stack_torch(labels)[..., 0], _stack_torch(params)
        n, h, w = lb.shape
        m = self.margin
        ci = torch.empty((n, h + 2 * m, w + 2 * m, 3), dtype=torch.uint8, device=im.device)
        cl = torch.empty((n, h + 2 * m, w + 2 * m), dtype=torch.int32, device=im.device)
        ns = ca.numba_stream(_dali_stream())
        ca.launch_canvas(ca.as_device(im), ca.as_device(lb), ca.as_device(pr), m, ca.as_device(ci), ca.as_device(cl),
                         stream=ns)
        return _to_cupy(list(ci)), _to_cupy(list(cl.unsqueeze(-1)))

    # --- InsMix (and, after DALI's warp, the label clean-up)
    def insmix(self, images, labels, *host):
        """Images, labels, types (typed sources) and — when a blender follows — paste and original
        masks. The CPU graph passes ``keys, coin[, params][, classes, maxid]`` after images and
        labels; the GPU graph only images and labels (the rest comes from the feed's host queue)."""
        if self.device == "gpu":
            keys, host_params, classes, maxid = self.feed.host.popleft()
            out = self._insmix_gpu(images, labels, keys, host_params, classes, maxid)
        else:
            keys = np.stack([np.asarray(k) for k in host[0]])
            rest = list(host[2:])
            params = rest.pop(0) if self.ops == "operators" and self.program.augment is not None else None
            im = _dense(images)  # DALI's buffer of the augmentation's output: InsMix writes into it
            lb = _dense(labels)
            if lb.ndim == 4:
                lb = lb[..., 0]
            lb = np.ascontiguousarray(lb, dtype=np.int32)
            if params is not None:
                for k, prm in enumerate(params):
                    area_filter(lb[k], prm[P_MAXID], prm[P_R], prm[P_MIN_AREA])
            types = None
            if self.program.typed:
                types = self.program.types_host(lb, np.stack(rest[0]), np.concatenate([np.ravel(m) for m in rest[1]]))
            out = self.program.insmix_batch(im, lb, keys, types=types, masks=self.blender is not None, in_place=True,
                                            long_labels=True)  # handed out as they are (see DaliBackend._outputs)
            out = tuple(list(a) for a in out if a is not None)  # DALI takes per-sample lists
        n = 3 if self.program.typed else 2
        return out if self.blender is not None else out[:n]

    def _insmix_gpu(self, images, labels, keys, params, classes, maxid):  # pragma: no cover - needs a GPU and DALI
        import torch

        from . import cuda_augment as ca

        stream = _dali_stream()
        ts = torch.cuda.ExternalStream(stream)
        with torch.cuda.stream(ts):
            im = _stack_torch(images)
            lb = _stack_torch(labels)
            if lb.dim() == 4:
                lb = lb[..., 0]
            lb = lb.to(torch.int32).contiguous()
            if params is not None and self.ops == "operators":  # DALI warped the labels: clear the slivers
                width = int(params[:, P_MAXID].max()) * self.program.id_factor + 1
                counts = torch.zeros((lb.shape[0], width), dtype=torch.int32, device=lb.device)
                pr = torch.from_numpy(params).pin_memory().to(lb.device, non_blocking=True)
                ca.launch_area_filter(ca.as_device(lb), ca.as_device(pr), ca.as_device(counts),
                                      stream=ca.numba_stream(stream))
            ty = None
            if classes is not None:
                ty = self.program.types_device(lb, torch.from_numpy(classes).pin_memory(),
                                               torch.from_numpy(maxid).pin_memory())
            im, lb, ty, paste, orig = self.program.insmix_device(im, lb, keys, stream=stream, types=ty)
        return tuple(_to_cupy(list(t)) for t in (im, lb, ty, paste, orig) if t is not None)


    # --- smooth-GAN blend
    def blend(self, images, paste, original):
        import torch

        if self.device == "gpu":  # pragma: no cover - needs a GPU
            ts = torch.cuda.ExternalStream(_dali_stream())
            with torch.cuda.stream(ts):
                out = self.blender.blend(_stack_torch(images), _stack_torch(paste), _stack_torch(original))
            return _to_cupy(list(out))
        im = torch.from_numpy(np.stack(images))
        pm = torch.from_numpy(np.stack(paste))
        om = torch.from_numpy(np.stack(original))
        if bool(pm.any()):
            im = self.blender.blend(im, pm, om)
        return list(im.numpy())


def _dense(arrays) -> np.ndarray:
    """The N samples DALI hands a batch-processing ``python_function`` as one N×… array: a view
    when they lie one after another in one buffer (as DALI's dense batches do), else a copy.
    The view is writeable: the function's input buffer, which no other operator reads."""
    first = arrays[0]
    if first.flags.c_contiguous and first.flags.writeable:
        step, p0 = first.nbytes, first.ctypes.data
        if all(a.shape == first.shape and a.dtype == first.dtype and a.flags.c_contiguous
               and a.ctypes.data == p0 + k * step for k, a in enumerate(arrays)):
            return np.lib.stride_tricks.as_strided(first, (len(arrays),) + first.shape,
                                                   (step,) + first.strides)
    return np.stack(arrays)


def _dali_stream() -> int:  # pragma: no cover - GPU only
    from nvidia.dali.ops._operators.python_function import PythonFunction

    return int(PythonFunction.current_stream().ptr)


def _stack_torch(arrays):  # pragma: no cover - GPU only
    import torch

    return torch.stack([torch.from_dlpack(a) for a in arrays])


def _to_cupy(tensors):  # pragma: no cover - GPU only
    import cupy

    return [cupy.from_dlpack(t) for t in tensors]


def insmix_graph(feed: _Feed, stages: _Stages, *, device: str, ops: str, crop: int, mean, std, blend: bool,
                 augment: bool, typed: bool = False, fused: bool = False, operator=None):
    """The DALI graph (called inside ``pipeline_def``); ``device`` is ``"cpu"`` or ``"gpu"``,
    ``ops`` ``"kernels"`` (CPU only) or ``"operators"``; ``fused`` (CPU ``"kernels"`` without
    blender): one operator per sample does everything (:mod:`.dali_sample`) and the graph's
    outputs are images, labels[, types] and the status rows. ``operator``: the ``numba_function``
    operator of the ``"kernels"`` graph (:func:`.dali_sample.sample_operator` when ``fused``,
    else :func:`_augment_op`), made by the caller: functions called while DALI traces this one
    go through its AutoGraph conversion, which once mixed up two of them in a long test run."""
    from nvidia.dali import fn, types

    gpu = device == "gpu"

    def source(names):
        outs = fn.external_source(source=feed, num_outputs=len(names), batch=True, cycle="raise",
                                  layout=[{"img": "HWC", "lab": "HWC", "lab2": "HW"}.get(n) for n in names])
        return dict(zip(names, outs))

    if fused:
        d = source(["img", "lab2", "params", "taps", "rows", "desc"])
        return tuple(operator(d["img"], d["lab2"], d["params"], d["taps"], d["rows"], d["desc"]))

    params = None
    host = [] if gpu else ["keys", "coin"] + (["classes", "maxid"] if typed else [])
    if not augment:
        d = source(["img", "lab"] + host)
        images, labels = d["img"], d["lab"]
        if gpu:
            images, labels = images.gpu(), labels.gpu()
    elif ops == "kernels":
        d = source(["img", "lab2", "params", "taps"] + host)
        images, labels, _, _ = operator(d["img"], d["lab2"], d["params"], d["taps"])
    else:
        d = source(["img", "lab", "params"] + host + ["mats", "cols", "offs", "sigma", "window", "blur"])
        images, labels, params = d["img"], d["lab"], d["params"]
        if gpu:
            images, labels, params = images.gpu(), labels.gpu(), params.gpu()
        canvas_i, canvas_l = fn.python_function(images, labels, params, function=stages.canvas, num_outputs=2,
                                                batch_processing=True, device=device, output_layouts=["HWC", "HWC"])
        warped = fn.warp_affine(canvas_i, matrix=d["mats"], size=[crop, crop], interp_type=types.INTERP_LINEAR,
                                dtype=types.FLOAT)
        labels = fn.warp_affine(canvas_l, matrix=d["mats"], size=[crop, crop], interp_type=types.INTERP_NN)
        images = fn.cast(fn.coord_transform(warped, M=d["cols"], T=d["offs"]), dtype=types.UINT8)  # rounds
        if d["blur"]:
            images = fn.gaussian_blur(images, sigma=d["sigma"], window_size=d["window"])
    if device == "gpu":  # host values reach the GPU stages through the feed's queue, not the device
        inputs = [images, labels]
    else:  # keys, coin[, params][, classes, maxid]
        inputs = [images, labels, d["keys"], d["coin"]] + ([params] if params is not None else [])
        inputs += [d["classes"], d["maxid"]] if typed else []
    n_out = 3 if typed else 2
    outs = fn.python_function(*inputs, function=stages.insmix, num_outputs=n_out + (2 if blend else 0),
                              batch_processing=True, device=device)
    images, labels = outs[0], outs[1]
    type_map = outs[2] if typed else None  # ("types" is DALI's module here)
    if blend:
        images = fn.python_function(images, outs[n_out], outs[n_out + 1], function=stages.blend, num_outputs=1,
                                    batch_processing=True, device=device)
    if device == "gpu":  # on the CPU the loader normalises DALI's buffers itself, in one pass
        images = fn.crop_mirror_normalize(images, dtype=types.FLOAT, output_layout="CHW",
                                          mean=[255.0 * m for m in mean], std=[255.0 * s for s in std],
                                          device=device)
        labels = fn.cast(labels, dtype=types.INT64, device=device)
        if typed:
            type_map = fn.cast(type_map, dtype=types.INT64, device=device)
    return (images, labels) if not typed else (images, labels, type_map)


class DaliBackend:
    """One DALI pipeline per loader, reset for every pass over the data."""

    name = "dali"

    def __init__(self, program: SampleProgram, *, device, blender, num_workers: int, prefetch: int,
                 batch_size: int, rank: int, ops: str = "auto", timeout: float | None = None):
        self.program = program
        self.device = device
        self.dali_device = "gpu" if device.type == "cuda" else "cpu"
        if ops == "auto":
            ops = "operators" if self.dali_device == "gpu" else "kernels"
        if ops == "kernels" and self.dali_device == "gpu":
            raise ConfigError("dali_ops='kernels' runs on the CPU only; on CUDA the DALI graph uses DALI's "
                              "operators (dali_ops='auto' or 'operators'), or use backend='torch'")
        self.ops = ops
        self.blender = blender
        self.num_threads = max(1, int(num_workers))
        self.prefetch = max(1, int(prefetch))
        self.batch_size = int(batch_size)
        self.rank = int(rank)
        aug = program.augment
        self.margin = aug.margin((program.crop, program.crop)) if aug is not None else 0
        if ops == "operators" and aug is not None and self.margin > 4 * program.crop:
            raise ConfigError(f"the augmentation's smallest scale ({aug.scale[0]}) needs a reflect canvas of "
                              f"{program.crop + 2 * self.margin}² pixels per crop for DALI's warp; raise "
                              f"scale[0] or use dali_ops='kernels' / backend='torch'")
        cfg = program.config
        # one operator per sample on the CPU, unless a blender or templates cut from the tile itself
        # (Python stages) follow the augmentation
        self.fused = (ops == "kernels" and blender is None
                      and not (cfg is not None and cfg.foreground and cfg.template_source == "self"))
        self.feed = _Feed(program, ops, self.margin, gpu=self.dali_device == "gpu", fused=self.fused)
        program.read_timeout = timeout  # the feed reads the source in this process
        self._pipe = None
        self._needs_reset = False

    def _build(self):
        from nvidia.dali import pipeline_def

        from .stages import stage_seed

        stages = _Stages(self.program, self.blender, self.dali_device, self.ops, self.margin, self.feed)
        build = pipeline_def(insmix_graph, enable_conditionals=True)
        operator = None
        if self.fused:
            operator = sample_operator(bool(self.program.typed))
        elif self.ops == "kernels" and self.program.augment is not None:
            operator = _augment_op()
        device_id = (self.device.index or 0) if self.dali_device == "gpu" else None
        dali_seed = stage_seed(self.program.seed, 0, 0x44414C49 + self.rank) & 0x7FFFFFFF  # explicit, unused
        pipe = build(self.feed, stages, device=self.dali_device, ops=self.ops, crop=self.program.crop,
                     mean=self.program.mean, std=self.program.std, blend=self.blender is not None,
                     augment=self.program.augment is not None, typed=bool(self.program.typed),
                     fused=self.fused, operator=operator, batch_size=self.batch_size,
                     num_threads=self.num_threads, device_id=device_id, seed=dali_seed,
                     prefetch_queue_depth=self.prefetch, exec_dynamic=True)  # outputs outlive the next run
        pipe.build()
        return pipe

    def run(self, tasks: list[np.ndarray]):
        if not tasks:
            return
        self.program.set_source_epoch(int(tasks[0][0, 0]))
        self.feed.tasks = list(tasks)
        self.feed.host.clear()
        if self._pipe is None:
            self._pipe = self._build()
        elif self._needs_reset:
            self._pipe.reset()
        self._needs_reset = True
        finished = False
        try:
            while True:
                try:
                    out = self._pipe.run()
                except StopIteration:
                    finished = True
                    return
                except Exception as e:  # a failed read (or a timeout): the pipeline is not reused
                    finished = True
                    self._pipe = None
                    cause = _feed_error(e)
                    if cause is not None:
                        raise cause from None
                    raise
                yield self._outputs(out)
        finally:
            if not finished:  # abandoned midway: stop feeding, drain what DALI already prefetched
                self.feed.stop = True
                try:
                    while True:
                        self._pipe.run()
                except StopIteration:
                    pass

    def _to_torch(self, tl):
        import torch

        if self.dali_device == "gpu":  # pragma: no cover - needs a GPU and DALI's CUDA build
            from nvidia.dali.plugin.pytorch import feed_ndarray, to_torch_type

            t = tl.as_tensor()
            out = torch.empty(t.shape(), dtype=to_torch_type[t.dtype], device=self.device)
            feed_ndarray(t, out, cuda_stream=torch.cuda.current_stream(self.device))
            return out
        return torch.from_numpy(np.array(tl.as_tensor()))

    def _outputs(self, out):
        """Torch tensors of one pipeline run. CPU: images normalised (one Numba pass) from DALI's
        buffer; int64 maps handed out as DALI's buffers themselves (no copy: the dynamic executor
        allocates every run's outputs anew and frees them with their last reference, as DALI's own
        PyTorch iterator relies on), narrower ones widened."""
        import torch

        if self.dali_device == "gpu":  # pragma: no cover - needs a GPU and DALI's CUDA build
            return tuple(self._to_torch(o) for o in out)
        if self.fused:  # normalised images, int64 maps: DALI's buffers as they are; then the status rows
            self._check_status(np.asarray(out[-1].as_tensor()))
            return tuple(torch.from_dlpack(o.as_tensor()) for o in out[:-1])
        images = torch.from_numpy(np.asarray(out[0].as_tensor()))  # read at once
        maps = []
        for o in out[1:]:  # labels[, types]
            t = torch.from_dlpack(o.as_tensor())
            t = t[..., 0] if t.dim() == 4 else t
            maps.append(t if t.dtype == torch.int64 and t.is_contiguous() else self.program.labels_out(t.contiguous()))
        return (self.program.normalise(images), *maps)

    def _check_status(self, status: np.ndarray) -> None:
        """Raise what the functional call would for the first sample the operator refused."""
        bad = np.flatnonzero(status[:, 0] != 0)
        if not bad.size:
            return
        row = status[bad[0]]
        source = int(row[-1])
        if int(row[0]) == STATUS_ID_LIMIT:
            raise LabelMapError(f"source[{source}]: the augmented crop holds id {int(row[3])}, beyond the InsMix "
                                "kernels' dense id tables (the loader renumbers crops so that this cannot happen: "
                                "please report it)")
        ctx = self.feed.insmix_context()  # made already: only samples with InsMix are checked
        raise types_problem(tuple(row[:6]), f"source[{source}] types (after the augmentation)", ctx.n_classes,
                            class_names=ctx.class_names)

    def close(self) -> None:
        self._pipe = None


def _feed_error(e: BaseException):
    """The package's own error (e.g. a read timeout) raised in the feed, which DALI may wrap."""
    seen = set()
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        if isinstance(e, InsMixError):
            return e
        e = e.__cause__ or e.__context__
    return None
