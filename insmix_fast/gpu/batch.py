"""``insmix_batch(..., device="cuda")``: the whole batch on the GPU.

Data flow (``B`` tiles, every array on the device, no transfer of tile data):

1. :func:`id_range` (``k_minmax``) — per-tile largest id (new ids are ``max_id + 1 + j``)
   and the batch minimum.
2. :func:`analyse` (``k_init_stats`` / ``k_stats`` / ``k_rank`` / ``k_desc``) — instance
   statistics, ranks, anchors, selection and descriptors from the label maps.
   With ``types``, :func:`analyse_types` (``k_types_init`` / ``k_types`` / ``k_types_check``)
   checks the type maps and makes the per-id class table; with ``ignore``,
   ``k_ignore_occupied`` pins the background patches holding ignore pixels.
3. :func:`choose` (``k_choose`` / ``k_fallback``) — bank-wide template choice for every
   selected original (within a class segment for ``template_class="same"``/``"balanced"``).
4. :func:`_place` (``k_copy_labels`` / ``k_place``) — sequential placement per tile (one
   thread per tile, the CPU's ``place_pastes``), writing the new label map and the
   paste records; background plan.
5. :func:`_apply` (``k_src_clear`` / ``k_src_fill`` / ``k_apply``) — fused paste +
   background move per pixel (and the output type map of a typed call).

Transfers: numpy input is copied to the device once and the results back once.
Device input (CuPy array, torch CUDA tensor, numba device array, any object with
``__cuda_array_interface__``; DLPack capsules through CuPy) stays there and the
outputs are of the same kind. The only device→host traffic of a device-input call
is one 8-byte read of (largest id, smallest id) of the batch, which validates the
ids and sizes the per-id work arrays (plus, for CuPy/torch label maps wider than
int32, one read of their maximum before the cast; and, for a typed call, one 4-byte read
of the type check's verdict — on a bad tile that tile alone is copied back to name the
problem). Paste records stay on the device until
:attr:`~insmix_fast.gpu.results.GPUBatchResult.pastes` /
:meth:`~insmix_fast.gpu.results.GPUBatchResult.to_host` asks for them.

Streams: with ``stream=`` every launch, allocation and copy goes on that stream
(:mod:`.launch`); the 8-byte read waits for that stream only, and a device-input
call returns without waiting for the rest of its work.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..classes import UNBOUNDED_CLASSES, as_types_map, check_class_mode, check_ignore, check_types
from ..config import InsMixConfig
from ..devices import Device, parse_device
from ..errors import BankError, ConfigError, InputError, InputTypeError
from ..kernels.classes import TEMPLATE_MODES
from ..kernels.instances import DENSE_ID_LIMIT
from ..kernels.records import N_REC_F, N_REC_I
from ..kernels.shuffle import background_count_table
from ..results import InsMixBatchResult
from ..validation import check_batch, check_indices
from .arrays import INT32_MAX, ArrayKind, as_device, check_device_batch, device_index, kind_of
from .bank import DeviceBank, is_host_bank
from .launch import Launcher, as_numba_stream, on_device
from .results import GPUBatchResult, host_records
from .runtime import require_cuda

__all__ = ["insmix_batch_cuda", "Originals", "analyse", "analyse_types", "choose", "id_range", "read_id_range",
           "read_bad_tile", "resolve_bank", "bank_args", "class_bound"]


# ------------------------------------------------------------------ the stages
@dataclass
class Originals:
    """Device arrays of a batch's original instances, indexed (tile, rank ``c``); rank 0
    unused, ranks ``1..k[b]`` the ids of tile ``b`` ascending. The rank tables
    (``lut``, ``ids_ext``) have room after the originals for the pasted instances."""

    k: object          #: (B,) int64 instances per tile
    lut: object        #: (B, nslots + extra) int32 raw id → rank
    ids_ext: object    #: (B, nslots + extra) int64 rank → raw id
    area: object       #: (B, nslots) int64
    bbox: object       #: (B, nslots, 4) int64 (y0, x0, y1, x1), exclusive ends
    anchor: object     #: (B, nslots, 2) int64 absolute anchor
    fits: object       #: (B, nslots) bool: mask inside the 32×32 window
    selected: object   #: (B, nslots) bool: drawn to receive a paste
    desc: object       #: (B, nslots, 32) uint32 packed descriptors of the selected originals
    occupied: object   #: (B, H // patch, W // patch) bool: background patches holding instance pixels


def id_range(lab_d, launcher: Launcher):
    """``(max_ids, mn)`` device arrays: the largest id of each tile (int32 (B,)) and the
    smallest value of the batch (int32 (1,))."""
    from ..kernels import cuda_instances as ki

    n = lab_d.shape[0]
    max_ids = launcher.scratch("max_ids", n, np.int32)
    mn = launcher.scratch("mn", 1, np.int32)
    launcher.launch(ki.k_fill1, launcher.grid(n), max_ids, np.int32(0))
    launcher.launch(ki.k_fill1, launcher.grid(1), mn, np.int32(INT32_MAX))
    launcher.launch(ki.k_minmax, launcher.grid(lab_d.size), lab_d, max_ids, mn)
    return max_ids, mn


def read_id_range(max_ids, mn, launcher: Launcher) -> tuple[int, int]:
    """(largest id, smallest id) of the batch on the host: one 8-byte read."""
    from ..kernels import cuda_instances as ki

    mx = launcher.scratch("mx", 1, np.int32)
    launcher.launch(ki.k_fill1, launcher.grid(1), mx, np.int32(0))
    launcher.launch(ki.k_max1, launcher.grid(max_ids.shape[0]), max_ids, mx)
    both = launcher.scratch("both", 2, np.int32)
    launcher.launch(ki.k_pack2, launcher.grid(1), mx, mn, both)
    mxmn = launcher.d2h(both)
    return int(mxmn[0]), int(mxmn[1])


def analyse(lab_d, nslots: int, samples_d, seed: int, p_paste: float, select_mode: int, patch: int, extra: int,
            launcher: Launcher) -> Originals:
    """Stages 1–2: stats, ranks, anchors, selection (``select_mode`` 0 none, 1 the
    ``p_paste`` draw, 2 all) and descriptors of every original."""
    from ..kernels import cuda_instances as ki

    nb, hh, ww = lab_d.shape
    sc = launcher.scratch
    gh, gw = hh // patch, ww // patch
    r_area = sc("r_area", (nb, nslots), np.int64)
    r_sr = sc("r_sr", (nb, nslots), np.int64)
    r_sc = sc("r_sc", (nb, nslots), np.int64)
    r_box = sc("r_box", (nb, nslots, 4), np.int64)
    occupied = sc("occupied", (nb, gh, gw), np.bool_)
    npx = nb * hh * ww
    launcher.launch(ki.k_init_stats, launcher.grid(nb * max(nslots, gh * gw)), r_area, r_sr, r_sc, r_box, occupied)
    launcher.launch(ki.k_stats, launcher.grid(npx), lab_d, np.int64(patch), r_area, r_sr, r_sc, r_box, occupied)
    ncap = nslots + extra
    o = Originals(k=sc("k", nb, np.int64), lut=sc("lut", (nb, ncap), np.int32),
                  ids_ext=sc("ids_ext", (nb, ncap), np.int64), area=sc("area", (nb, nslots), np.int64),
                  bbox=sc("bbox", (nb, nslots, 4), np.int64), anchor=sc("anchor", (nb, nslots, 2), np.int64),
                  fits=sc("fits", (nb, nslots), np.bool_), selected=sc("selected", (nb, nslots), np.bool_),
                  desc=sc("desc", (nb, nslots, 32), np.uint32), occupied=occupied)
    launcher.launch(ki.k_rank, launcher.per_thread(nb), r_area, r_sr, r_sc, r_box, np.int64(nslots), samples_d,
                    np.uint64(seed), np.float64(p_paste), np.int64(select_mode), o.lut, o.ids_ext, o.area, o.bbox,
                    o.anchor, o.fits, o.selected, o.k)
    launcher.launch(ki.k_zero_desc, launcher.grid(nb * nslots * 32), o.desc)
    launcher.launch(ki.k_desc, launcher.grid(npx), lab_d, o.lut, o.anchor, o.selected, o.desc)
    return o


def bank_args(dbank: DeviceBank | None, launcher: Launcher) -> tuple[tuple, object, object]:
    """``(kernel bank arrays, pixels, classes)`` of a device bank, or empty ones when there is none."""
    if dbank is not None:
        return dbank.kernel_args(), dbank.pixels, dbank.classes
    a = launcher.array
    return (a(0, np.int64), a((0, 2), np.int32), a((0, 2), np.int32), a(1, np.int64), a(1, np.uint8),
            a((0, 32), np.uint32), a(0, np.bool_)), a(3, np.uint8), a(1, np.int32)


def class_bound(hbank) -> tuple[int, tuple[str, ...] | None]:
    """``(largest class id, class names)`` an input type map may hold (unbounded without a typed bank)."""
    if hbank is not None and hbank.typed:
        return len(hbank.class_names) - 1, hbank.class_names
    return UNBOUNDED_CLASSES, None


def analyse_types(lab_d, types_d, nslots: int, hbank, launcher: Launcher):
    """Check a batch's type maps on the device and return ``id_class`` (B, nslots) int32 (the
    class of each raw id). One 4-byte read of the verdict; a bad tile is copied back and
    checked on the host, which raises the :class:`~insmix_fast.errors.LabelMapError` naming it."""
    from ..kernels import cuda_instances as ki

    nb = lab_d.shape[0]
    n_classes, names = class_bound(hbank)
    id_class = launcher.scratch("id_class", (nb, nslots), np.int32)
    bad = launcher.scratch("types_bad", 1, np.int32)
    launcher.launch(ki.k_types_init, launcher.grid(nb * nslots), id_class, bad)
    launcher.launch(ki.k_types, launcher.grid(lab_d.size), lab_d, types_d, np.int64(n_classes), id_class, bad)
    launcher.launch(ki.k_types_check, launcher.grid(lab_d.size), lab_d, types_d, id_class, bad)
    b = read_bad_tile(bad, launcher)
    if b is not None:
        check_types(launcher.d2h(types_d[b]), launcher.d2h(lab_d[b]), n_classes, name=f"types[{b}]",
                    class_names=names)
        raise RuntimeError(f"internal error: the device type check refused types[{b}], the host check did not")
    return id_class


def read_bad_tile(bad, launcher: Launcher) -> int | None:
    """The first tile the device type check refused (one 4-byte read), or None."""
    b = int(launcher.d2h(bad)[0])
    return None if b == INT32_MAX else b


def choose(lab_d, o: Originals, bargs: tuple, config: InsMixConfig, seed: int, samples_d, nslots: int,
           launcher: Launcher, dbank: DeviceBank | None = None, id_class=None):
    """Stage 3: template choice per (tile, rank) (a new device array); -1 where none.
    ``template_class`` other than ``"any"`` reads ``dbank``'s class tables and, for ``"same"``,
    ``id_class`` (:func:`analyse_types`)."""
    from ..kernels import cuda_ssd as ks

    nb = lab_d.shape[0]
    mode = TEMPLATE_MODES[config.template_class]
    if dbank is None or mode == TEMPLATE_MODES["any"]:
        cargs = (bargs[0], bargs[3], bargs[0], launcher.scratch("no_cum", 1, np.float64))
    else:
        cargs = dbank.class_args(config.template_class, config.balance_power)
    if id_class is None:
        id_class = o.lut  # not read (only "same" reads the classes)
    choice = launcher.array((nb, nslots), np.int64)
    lo = launcher.scratch("lo", (nb, nslots), np.int64)
    hi = launcher.scratch("hi", (nb, nslots), np.int64)
    launcher.launch(ks.k_choose, launcher.grid(nb * nslots), lab_d, o.k, o.ids_ext, o.area, o.anchor, o.selected,
                    o.desc, o.fits, *bargs, *cargs, np.int64(mode), id_class, np.float64(config.eps),
                    np.float64(config.rho), bool(config.ssd), np.int64(config.max_draws), np.uint64(seed), samples_d,
                    choice, lo, hi)
    if config.ssd:
        launcher.launch(ks.k_fallback, launcher.per_block(nb * nslots), lab_d, o.ids_ext, o.area, o.anchor, o.desc,
                        o.fits, *bargs, cargs[0], mode != TEMPLATE_MODES["any"], np.float64(config.rho),
                        np.uint64(seed), samples_d, choice, lo, hi)
    return choice


def resolve_bank(bank, foreground: bool, device_id: int):
    """``(DeviceBank or None, host bank or None)`` for this call (uploads an InstanceBank once)."""
    if isinstance(bank, DeviceBank):
        host = bank.host
        dev = bank if bank.device_id == device_id else bank.to(f"cuda:{device_id}")
    elif is_host_bank(bank):
        host = bank
        dev = bank.to(f"cuda:{device_id}") if len(bank) else None
    elif bank is None:
        host, dev = None, None
    else:
        raise InputTypeError(f"bank must be an InstanceBank or DeviceBank, got {type(bank).__name__}")
    if foreground:
        if host is None:
            raise InputTypeError("bank must be an InstanceBank (or DeviceBank) when config.foreground is True")
        if len(host) == 0:
            raise BankError("the instance bank is empty: build it from samples that contain whole nuclei")
    return dev, host


# ------------------------------------------------------------------ inputs
@dataclass
class _Inputs:
    """The batch as the kernels see it (numba views, or numpy for host input)."""

    kind: ArrayKind
    device_id: int
    images: object
    labels: object
    host: bool
    keep: tuple = ()               #: converted device arrays the views point into
    max_id: int | None = None      #: known for host input
    min_id: int | None = None
    types: object = None           #: N×H×W int32 class maps (typed call)
    ignore: object = None          #: N×H×W bool ignore masks


def _host_array(x):
    return x.numpy() if type(x).__module__.split(".")[0] == "torch" else x


def _ingest(images, labels, stream_kind: ArrayKind, types=None, ignore=None) -> _Inputs:
    """Validated inputs, the output kind and the device they live on."""
    kind_i, kind_l = kind_of(images), kind_of(labels)
    if (kind_i == "numpy") != (kind_l == "numpy"):
        raise InputError("images and labels must both be host arrays or both be device arrays")
    for name, x in (("types", types), ("ignore", ignore)):
        if x is not None and (kind_of(x) == "numpy") != (kind_i == "numpy"):
            raise InputError(f"images and {name} must both be host arrays or both be device arrays")
    if kind_i == "numpy":
        images, labels = check_batch(_host_array(images), _host_array(labels))
        if types is not None:
            types = as_types_map(_host_array(types), labels.shape)
        if ignore is not None:
            ignore = check_ignore(_host_array(ignore), labels.shape)
        return _Inputs(ArrayKind("numpy", stream=stream_kind.stream), 0, images, labels, True,
                       max_id=int(labels.max()), min_id=int(labels.min()), types=types, ignore=ignore)
    check_device_batch(images, labels)
    dev_i, dev_l = device_index(images, kind_i), device_index(labels, kind_l)
    if dev_i != dev_l:
        raise InputError(f"images are on cuda:{dev_i} but labels on cuda:{dev_l}")
    img, img_v, kind = as_device(images, kind_i, "images", np.uint8, stream_kind)
    lab, lab_v, _ = as_device(labels, kind_l, "labels", np.int32, stream_kind)
    keep = [img, lab]
    extra = {}
    for name, x, dtype in (("types", types, np.int32), ("ignore", ignore, np.bool_)):
        if x is None:
            continue
        if tuple(x.shape) != tuple(labels.shape):
            raise InputError(f"{name} shape {tuple(x.shape)} does not match the labels' shape {tuple(labels.shape)}")
        k = kind_of(x)
        if device_index(x, k) != dev_i:
            raise InputError(f"images are on cuda:{dev_i} but {name} on cuda:{device_index(x, k)}")
        arr, view, _ = as_device(x, k, name, dtype, stream_kind)
        keep.append(arr)
        extra[name] = view
    out_kind = ArrayKind(kind if kind in ("cupy", "torch") else "numba", img if kind == "torch" else images,
                         stream_kind.stream, stream_kind.library_stream)
    return _Inputs(out_kind, dev_i, img_v, lab_v, False, keep=tuple(keep), **extra)


def _check_ids(max_id: int, min_id: int, hh: int, ww: int) -> None:
    if min_id < 0:
        raise InputError(f"labels hold negative ids (min {min_id}); ids must be ≥ 0, 0 = background")
    if max_id > DENSE_ID_LIMIT:
        raise InputError(f"labels hold ids up to {max_id}; device='cuda' takes ids ≤ {DENSE_ID_LIMIT}: relabel "
                         "the maps first (insmix_fast.data.relabel_sequential) or use device='cpu'")
    if max_id + hh * ww >= INT32_MAX:
        raise InputError("labels ids are too close to the int32 limit to add pasted instances; relabel first")


# ------------------------------------------------------------------ the pipeline
def insmix_batch_cuda(images, labels, bank, config: InsMixConfig, *, seed: int, indices=None,
                      device: Device | str = "cuda", stream=None, types=None, ignore=None):
    """The GPU path of :func:`insmix_fast.core.insmix_batch` (``config`` an InsMixConfig and
    ``seed`` an int, checked there; ``indices``, ``types`` and ``ignore`` as there, checked here;
    ``types``/``ignore`` on the same side — host or device — as the images).

    Returns an :class:`~insmix_fast.results.InsMixBatchResult` for host input and a
    :class:`~insmix_fast.gpu.results.GPUBatchResult` (outputs of the input's kind, left
    on the device) for device input. ``stream``: see :mod:`insmix_fast.gpu.launch`.
    """
    require_cuda()
    if config.template_source == "self":
        raise ConfigError("template_source='self' (templates from each tile) runs on the CPU only: use device='cpu'")
    if not isinstance(device, Device):
        device = parse_device(device, error=InputError)
    library_stream = stream if type(stream).__module__.split(".")[0] in ("torch", "cupy") else None
    inp = _ingest(images, labels, ArrayKind("numpy", stream=as_numba_stream(stream), library_stream=library_stream),
                  types, ignore)
    dev_id = inp.device_id
    if not inp.host and device.index is not None and device.index != dev_id:
        raise InputError(f"device={str(device)!r} but the batch lives on cuda:{dev_id}")
    if inp.host and device.index is not None:
        dev_id = device.index
    n = inp.labels.shape[0]
    indices = check_indices(indices, n)
    dbank, hbank = resolve_bank(bank, config.foreground, dev_id)
    check_class_mode(config, hbank is not None and hbank.typed, inp.types is not None)
    launcher = Launcher(dev_id, inp.kind.stream)
    with on_device(dev_id):
        return _run(inp, dbank, hbank, config, seed, indices, launcher)


def _run(inp: _Inputs, dbank, hbank, config: InsMixConfig, seed: int, indices: np.ndarray, launcher: Launcher):
    """Stages 1–5 on the device of ``launcher``; the result for the input's kind."""
    from ..kernels import cuda_instances as ki

    n, hh, ww = inp.labels.shape[:3]
    img_d, lab_d = (launcher.h2d(inp.images), launcher.h2d(inp.labels)) if inp.host else (inp.images, inp.labels)
    max_ids, mn = id_range(lab_d, launcher)
    if inp.max_id is None:  # the one scalar read of a device-input call
        inp.max_id, inp.min_id = read_id_range(max_ids, mn, launcher)
    _check_ids(inp.max_id, inp.min_id, hh, ww)
    nslots = inp.max_id + 1
    cap = max(inp.max_id, 1)  # pastes ≤ selected originals ≤ K ≤ max_id
    samples_d = launcher.h2d(indices)
    foreground = bool(config.foreground) and dbank is not None
    o = analyse(lab_d, nslots, samples_d, seed, config.p_paste, 1 if foreground else 0, config.patch, cap, launcher)
    typed = inp.types is not None
    one_pixel = (n, 1, 1)
    types_d = id_class = None
    if typed:
        types_d = launcher.h2d(inp.types) if inp.host else inp.types
        id_class = analyse_types(lab_d, types_d, nslots, hbank, launcher)
    if inp.ignore is not None:
        ignore_d = launcher.h2d(inp.ignore) if inp.host else inp.ignore
        launcher.launch(ki.k_ignore_occupied, launcher.grid(lab_d.size), ignore_d, np.int64(config.patch), o.occupied)
    else:
        ignore_d = launcher.scratch("no_ignore", one_pixel, np.bool_)
    bargs, b_pixels, b_classes = bank_args(dbank if foreground else None, launcher)
    if foreground:
        choice = choose(lab_d, o, bargs, config, seed, samples_d, nslots, launcher, dbank, id_class)
    else:
        choice = launcher.scratch("choice", (n, nslots), np.int64)  # not read: k_place pastes only with foreground
    shapes = [((n, hh, ww, 3), np.uint8), ((n, hh, ww), np.int32), ((n, hh, ww), np.bool_), ((n, hh, ww), np.bool_)]
    if typed:
        shapes.append(((n, hh, ww), np.int32))
    outputs = [inp.kind.empty(shape, dtype) for shape, dtype in shapes]
    views = [v for _o, v in outputs]
    if not typed:  # stand-ins k_apply does not touch
        types_d = launcher.scratch("no_types", one_pixel, np.int32)
        views.append(types_d)
    max_crop = hbank.max_crop if hbank is not None else 1
    records = _place(lab_d, views[1], max_ids, o, choice, bargs, b_classes, ignore_d, inp.ignore is not None, config,
                     foreground, max_crop, seed, samples_d, cap, launcher)
    _apply(img_d, views, max_ids, records, config.patch, bargs, b_pixels, typed, types_d, launcher)
    out_types = outputs[4][0] if typed else None
    if not inp.host:
        return GPUBatchResult(*(a for a, _v in outputs[:4]), indices, records, seed=seed, patch=config.patch,
                              launcher=launcher, types=out_types)
    # numpy input: one copy back of the outputs and the records
    pastes, mv = host_records(*(launcher.d2h(records[k]) for k in ("rec_i", "rec_f", "moves", "counts")))
    return InsMixBatchResult(*(launcher.d2h(v) for v in views[:4]), pastes, mv, indices, seed, config.patch,
                             types=launcher.d2h(views[4]) if typed else None)


def _place(lab_d, out_lab, max_ids, o: Originals, choice, bargs: tuple, b_classes, ignore_d, use_ignore: bool,
           config: InsMixConfig, foreground: bool, max_crop: int, seed: int, samples_d, cap: int,
           launcher: Launcher) -> dict:
    """Stage 4: the new label maps (written into ``out_lab``), paste records and background moves."""
    from ..kernels import cuda_pipeline as kp

    n, hh, ww = lab_d.shape
    sc = launcher.scratch
    gh, gw = hh // config.patch, ww // config.patch
    g = max(gh * gw, 1)
    launcher.launch(kp.k_copy_labels, launcher.grid(n * hh * ww), lab_d, out_lab)
    ncap = o.lut.shape[1]
    nscr = max(max_crop, hh * ww) // 2 + 2  # count_components' run buffers, as kernels.instances.new_scratch
    records = dict(rec_i=launcher.array((n, cap, N_REC_I), np.int64), rec_f=launcher.array((n, cap, N_REC_F),
                                                                                             np.float64),
                   moves=launcher.array((n, g, 2), np.int64), counts=launcher.array((n, 2), np.int64))
    launcher.launch(kp.k_place, launcher.per_thread(n), lab_d, out_lab, max_ids, o.k, o.lut, o.ids_ext, o.area,
                    o.bbox, o.anchor, o.desc, o.fits, choice, *bargs, b_classes, ignore_d, use_ignore, o.occupied,
                    sc("cur_area", (n, ncap), np.int64), sc("ibbox", (n, ncap, 4), np.int64),
                    sc("pieces", (n, ncap), np.int64), sc("occ", (n, ncap), np.int64),
                    sc("touched", (n, ncap), np.int64), sc("rx0", (n, nscr), np.int32),
                    sc("rx1", (n, nscr), np.int32), sc("parent", (n, nscr), np.int32), sc("free", (n, g), np.int64),
                    launcher.h2d(background_count_table(np.float64(config.alpha), gh * gw)),
                    np.float64(config.delta), np.float64(config.gamma), np.float64(config.max_occlusion),
                    np.int64(config.n_tries), np.int64(config.patch), foreground, bool(config.background),
                    bool(config.ssd), config.offset_mode == "diagonal", np.uint64(seed), samples_d,
                    records["rec_i"], records["rec_f"], records["moves"], records["counts"])
    return records


def _apply(img_d, views: list, max_ids, records: dict, patch: int, bargs: tuple, b_pixels, typed: bool, types_d,
           launcher: Launcher):
    """Stage 5: the output image, paste and shuffle masks (``views[0, 2, 3]``) and, with ``typed``, the
    output type map (``views[4]``) from the new labels (``views[1]``)."""
    from ..kernels import cuda_pipeline as kp

    out_img, out_lab, pm, sh, out_types = views
    n = out_lab.shape[0]
    src_of = launcher.scratch("src_of", (n, records["moves"].shape[1]), np.int64)
    launcher.launch(kp.k_src_clear, launcher.grid(src_of.size), src_of)
    launcher.launch(kp.k_src_fill, launcher.grid(src_of.size), records["moves"], records["counts"], src_of)
    launcher.launch(kp.k_apply, launcher.grid(out_lab.size), img_d, out_lab, max_ids, records["counts"],
                    records["rec_i"], src_of, np.int64(patch), bargs[2], bargs[3], b_pixels, out_img, pm, sh, typed,
                    types_d, out_types)
