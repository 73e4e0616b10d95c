"""``insmix_batch(..., device="cuda")``: the whole batch on the GPU.

Data flow (``B`` tiles, every array on the device, no transfer of tile data):

1. :func:`id_range` (``k_minmax``) — per-tile largest id (new ids are ``max_id + 1 + j``)
   and the batch minimum.
2. :func:`analyse` (``k_init_stats`` / ``k_stats`` / ``k_rank`` / ``k_desc``) — instance
   statistics, ranks, anchors, selection and descriptors from the label maps.
3. :func:`choose` (``k_choose`` / ``k_fallback``) — bank-wide template choice for every
   selected original.
4. :func:`_place` (``k_copy_labels`` / ``k_place``) — sequential placement per tile (one
   thread per tile, the CPU's ``place_pastes``), writing the new label map and the
   paste records; background plan.
5. :func:`_apply` (``k_src_clear`` / ``k_src_fill`` / ``k_apply``) — fused paste +
   background move per pixel.

Transfers: numpy input is copied to the device once and the results back once.
Device input (CuPy array, torch CUDA tensor, numba device array, any object with
``__cuda_array_interface__``; DLPack capsules through CuPy) stays there and the
outputs are of the same kind. The only device→host traffic of a device-input call
is one 8-byte read of (largest id, smallest id) of the batch, which validates the
ids and sizes the per-id work arrays (plus, for CuPy/torch label maps wider than
int32, one read of their maximum before the cast). Paste records stay on the device until
:attr:`~insmix_fast.gpu.results.GPUBatchResult.pastes` /
:meth:`~insmix_fast.gpu.results.GPUBatchResult.to_host` asks for them.

Streams: with ``stream=`` every launch, allocation and copy goes on that stream
(:mod:`.launch`); the 8-byte read waits for that stream only, and a device-input
call returns without waiting for the rest of its work.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..config import InsMixConfig
from ..devices import Device, parse_device
from ..errors import BankError, ConfigError, InputError, InputTypeError
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

__all__ = ["insmix_batch_cuda", "Originals", "analyse", "choose", "id_range", "read_id_range", "resolve_bank",
           "bank_args"]


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


def bank_args(dbank: DeviceBank | None, launcher: Launcher) -> tuple[tuple, object]:
    """``(kernel bank arrays, pixels)`` of a device bank, or empty ones when there is none."""
    if dbank is not None:
        return dbank.kernel_args(), dbank.pixels
    a = launcher.array
    return (a(0, np.int64), a((0, 2), np.int32), a((0, 2), np.int32), a(1, np.int64), a(1, np.uint8),
            a((0, 32), np.uint32), a(0, np.bool_)), a(3, np.uint8)


def choose(lab_d, o: Originals, bargs: tuple, config: InsMixConfig, seed: int, samples_d, nslots: int,
           launcher: Launcher):
    """Stage 3: template choice per (tile, rank) (a new device array); -1 where none."""
    from ..kernels import cuda_ssd as ks

    nb = lab_d.shape[0]
    choice = launcher.array((nb, nslots), np.int64)
    lo = launcher.scratch("lo", (nb, nslots), np.int64)
    hi = launcher.scratch("hi", (nb, nslots), np.int64)
    launcher.launch(ks.k_choose, launcher.grid(nb * nslots), lab_d, o.k, o.ids_ext, o.area, o.anchor, o.selected,
                    o.desc, o.fits, *bargs, np.float64(config.eps), np.float64(config.rho), bool(config.ssd),
                    np.int64(config.max_draws), np.uint64(seed), samples_d, choice, lo, hi)
    if config.ssd:
        launcher.launch(ks.k_fallback, launcher.per_block(nb * nslots), lab_d, o.ids_ext, o.area, o.anchor, o.desc,
                        o.fits, *bargs, np.float64(config.rho), np.uint64(seed), samples_d, choice, lo, hi)
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


def _ingest(images, labels, stream_kind: ArrayKind) -> _Inputs:
    """Validated inputs, the output kind and the device they live on."""
    kind_i, kind_l = kind_of(images), kind_of(labels)
    if (kind_i == "numpy") != (kind_l == "numpy"):
        raise InputError("images and labels must both be host arrays or both be device arrays")
    if kind_i == "numpy":
        if type(images).__module__.split(".")[0] == "torch":
            images, labels = images.numpy(), labels.numpy()
        images, labels = check_batch(images, labels)
        return _Inputs(ArrayKind("numpy", stream=stream_kind.stream), 0, images, labels, True,
                       max_id=int(labels.max()), min_id=int(labels.min()))
    check_device_batch(images, labels)
    dev_i, dev_l = device_index(images, kind_i), device_index(labels, kind_l)
    if dev_i != dev_l:
        raise InputError(f"images are on cuda:{dev_i} but labels on cuda:{dev_l}")
    img, img_v, kind = as_device(images, kind_i, "images", np.uint8, stream_kind)
    lab, lab_v, _ = as_device(labels, kind_l, "labels", np.int32, stream_kind)
    out_kind = ArrayKind(kind if kind in ("cupy", "torch") else "numba", img if kind == "torch" else images,
                         stream_kind.stream, stream_kind.library_stream)
    return _Inputs(out_kind, dev_i, img_v, lab_v, False, keep=(img, lab))


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
                      device: Device | str = "cuda", stream=None):
    """The GPU path of :func:`insmix_fast.core.insmix_batch` (``config`` an InsMixConfig and
    ``seed`` an int, checked there; ``indices`` as there, checked here).

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
    inp = _ingest(images, labels, ArrayKind("numpy", stream=as_numba_stream(stream), library_stream=library_stream))
    dev_id = inp.device_id
    if not inp.host and device.index is not None and device.index != dev_id:
        raise InputError(f"device={str(device)!r} but the batch lives on cuda:{dev_id}")
    if inp.host and device.index is not None:
        dev_id = device.index
    n = inp.labels.shape[0]
    indices = check_indices(indices, n)
    dbank, hbank = resolve_bank(bank, config.foreground, dev_id)
    launcher = Launcher(dev_id, inp.kind.stream)
    with on_device(dev_id):
        return _run(inp, dbank, hbank, config, seed, indices, launcher)


def _run(inp: _Inputs, dbank, hbank, config: InsMixConfig, seed: int, indices: np.ndarray, launcher: Launcher):
    """Stages 1–5 on the device of ``launcher``; the result for the input's kind."""
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
    bargs, b_pixels = bank_args(dbank if foreground else None, launcher)
    if foreground:
        choice = choose(lab_d, o, bargs, config, seed, samples_d, nslots, launcher)
    else:
        choice = launcher.scratch("choice", (n, nslots), np.int64)  # not read: k_place pastes only with foreground
    outputs = [inp.kind.empty(shape, dtype) for shape, dtype in
               (((n, hh, ww, 3), np.uint8), ((n, hh, ww), np.int32), ((n, hh, ww), np.bool_),
                ((n, hh, ww), np.bool_))]
    views = [v for _o, v in outputs]
    max_crop = hbank.max_crop if hbank is not None else 1
    records = _place(lab_d, views[1], max_ids, o, choice, bargs, config, foreground, max_crop, seed, samples_d,
                     cap, launcher)
    _apply(img_d, views, max_ids, records, config.patch, bargs, b_pixels, launcher)
    if not inp.host:
        return GPUBatchResult(*(a for a, _v in outputs), indices, records, seed=seed, patch=config.patch,
                              launcher=launcher)
    # numpy input: one copy back of the outputs and the records
    pastes, mv = host_records(*(launcher.d2h(records[k]) for k in ("rec_i", "rec_f", "moves", "counts")))
    return InsMixBatchResult(*(launcher.d2h(v) for v in views), pastes, mv, indices, seed, config.patch)


def _place(lab_d, out_lab, max_ids, o: Originals, choice, bargs: tuple, config: InsMixConfig, foreground: bool,
           max_crop: int, seed: int, samples_d, cap: int, launcher: Launcher) -> dict:
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
                    o.bbox, o.anchor, o.desc, o.fits, choice, *bargs, o.occupied,
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


def _apply(img_d, views: list, max_ids, records: dict, patch: int, bargs: tuple, b_pixels, launcher: Launcher):
    """Stage 5: the output image, paste and shuffle masks (``views[0, 2, 3]``) from the new labels (``views[1]``)."""
    from ..kernels import cuda_pipeline as kp

    out_img, out_lab, pm, sh = views
    n = out_lab.shape[0]
    src_of = launcher.scratch("src_of", (n, records["moves"].shape[1]), np.int64)
    launcher.launch(kp.k_src_clear, launcher.grid(src_of.size), src_of)
    launcher.launch(kp.k_src_fill, launcher.grid(src_of.size), records["moves"], records["counts"], src_of)
    launcher.launch(kp.k_apply, launcher.grid(out_lab.size), img_d, out_lab, max_ids, records["counts"],
                    records["rec_i"], src_of, np.int64(patch), bargs[2], bargs[3], b_pixels, out_img, pm, sh)
