"""``insmix_batch(..., device="cuda")``: the whole batch on the GPU.

Data flow (``B`` tiles, every array on the device, no transfer of tile data):

1. ``k_minmax`` — per-tile largest id (new ids are ``max_id + 1 + j``) and the batch minimum.
2. ``k_init_stats`` / ``k_stats`` / ``k_rank`` / ``k_desc`` — instance statistics,
   ranks, anchors, selection and descriptors from the label maps.
3. ``k_choose`` / ``k_fallback`` — bank-wide template choice for every selected original.
4. ``k_copy_labels`` / ``k_place`` — sequential placement per tile (one thread per
   tile), writing the new label map and the paste records; background plan.
5. ``k_src_clear`` / ``k_src_fill`` / ``k_apply`` — fused paste + background move per pixel.

Transfers: numpy input is copied to the device once and the results back once.
Device input (CuPy array, torch CUDA tensor, numba device array, any object with
``__cuda_array_interface__``; DLPack capsules through CuPy) stays there and the
outputs are of the same kind. The only device→host traffic of a device-input call
is one 8-byte read of (largest id, smallest id) of the batch, which validates the
ids and sizes the per-id work arrays (plus, for CuPy/torch label maps wider than
int32, one read of their maximum before the cast). Paste records stay on the device until
:attr:`GPUBatchResult.pastes` / :meth:`GPUBatchResult.to_host` asks for them.
"""

from __future__ import annotations

import threading

import numpy as np

from ..bank import InstanceBank
from ..config import InsMixConfig
from ..errors import BankError, ConfigError, InputError, InputTypeError
from ..kernels import paste as _rec
from ..kernels.instances import DENSE_ID_LIMIT
from ..kernels.shuffle import background_count_table
from . import require_cuda
from .bank import DeviceBank, _device, parse_device

_INT32_MAX = np.iinfo(np.int32).max


# ------------------------------------------------------------------ transfers (all of them go through here)
def _h2d(arr):
    from numba import cuda

    return cuda.to_device(np.ascontiguousarray(arr))


def _d2h(dev):
    return dev.copy_to_host()


# ------------------------------------------------------------------ array kinds
class _Kind:
    """How to allocate outputs like the input and view them for numba."""

    def __init__(self, name: str, ref=None):
        self.name = name  # "numpy", "cupy", "torch", "numba", "cai"
        self.ref = ref

    def empty(self, shape, dtype):
        from numba import cuda

        if self.name == "cupy":
            import cupy

            a = cupy.empty(shape, dtype=dtype)
            return a, cuda.as_cuda_array(a)
        if self.name == "torch":
            import torch

            tdt = {np.uint8: torch.uint8, np.int32: torch.int32, np.bool_: torch.bool}[np.dtype(dtype).type]
            a = torch.empty(shape, dtype=tdt, device=self.ref.device)
            return a, cuda.as_cuda_array(a)
        a = cuda.device_array(shape, dtype=dtype)
        return a, a


def _kind_of(x) -> str:
    if isinstance(x, np.ndarray):
        return "numpy"
    mod = type(x).__module__.split(".")[0]
    if mod == "torch":
        if not x.is_cuda:
            return "numpy"  # a CPU tensor: behaves like numpy input
        return "torch"
    if mod == "cupy":
        return "cupy"
    if mod == "numba":  # numba device array (or the simulator's stand-in)
        return "numba"
    if hasattr(x, "__cuda_array_interface__"):
        return "cai"
    if hasattr(x, "__dlpack__"):
        return "dlpack"
    return "numpy"


def _device_index(x, kind: str) -> int:
    if kind == "torch":
        return int(x.device.index or 0)
    if kind == "cupy":
        return int(x.device.id)
    return 0


def _prepare_device(x, kind: str, name: str, dtype):
    """A C-contiguous device array of ``dtype`` (converted on the device when needed) and its numba view."""
    from numba import cuda

    if kind == "dlpack":
        try:
            import cupy
        except ImportError as e:
            raise InputTypeError(f"{name}: a DLPack array needs CuPy to be read without a copy ({e})") from None
        x = cupy.from_dlpack(x)
        kind = "cupy"
    if kind == "torch":
        import torch

        tdt = {np.uint8: torch.uint8, np.int32: torch.int32}[np.dtype(dtype).type]
        if x.dtype != tdt:
            if tdt == torch.int32 and x.numel() and int(x.max()) > _INT32_MAX:  # a read, only for wide ids
                raise InputError(f"{name} hold ids above int32 range (max {int(x.max())})")
            x = x.to(tdt)
        x = x.contiguous()
    elif kind == "cupy":
        import cupy

        if x.dtype != np.dtype(dtype) and np.dtype(dtype) == np.int32 and x.size and int(x.max()) > _INT32_MAX:
            raise InputError(f"{name} hold ids above int32 range (max {int(x.max())})")
        x = cupy.ascontiguousarray(x, dtype=dtype)
    view = x if kind == "numba" else cuda.as_cuda_array(x)
    if view.dtype != np.dtype(dtype):
        raise InputError(f"{name} on the device must have dtype {np.dtype(dtype)}, got {view.dtype}")
    if not view.is_c_contiguous():
        raise InputError(f"{name} on the device must be C-contiguous")
    return x, view, kind


def _check_dtype_shape(images, labels):
    ish = tuple(images.shape)
    lsh = tuple(labels.shape)
    idt = np.dtype(str(images.dtype).replace("torch.", "")) if not hasattr(images.dtype, "kind") else images.dtype
    ldt = np.dtype(str(labels.dtype).replace("torch.", "")) if not hasattr(labels.dtype, "kind") else labels.dtype
    if idt != np.uint8:
        raise InputError(f"images must have dtype uint8, got {idt}")
    if len(ish) != 4 or ish[3] != 3:
        raise InputError(f"images must be N×H×W×3, got shape {ish}")
    if len(lsh) != 3:
        raise InputError(f"labels must be N×H×W, got shape {lsh}")
    if lsh != ish[:3]:
        raise InputError(f"labels shape {lsh} does not match images N×H×W {ish[:3]}")
    if ish[0] == 0:
        raise InputError("the batch is empty (N = 0)")
    if ish[1] == 0 or ish[2] == 0:
        raise InputError(f"images are empty (shape {ish})")
    if ldt == np.bool_ or ldt.kind not in "iu":
        raise InputError(f"labels must be an integer instance map (0 = background), got dtype {ldt}")


def _indices(indices, n: int) -> np.ndarray:
    """Per-sample global indices, validated as in :func:`insmix_fast.core.insmix_batch`."""
    if indices is None:
        return np.arange(n, dtype=np.int64)
    indices = np.asarray(indices)
    if indices.shape != (n,) or not np.issubdtype(indices.dtype, np.integer):
        raise InputError(f"indices must be {n} integers (one per sample), got shape {indices.shape}")
    if n and (indices.min() < 0 or indices.max() > 2**32 - 1):
        raise InputError("indices must lie in [0, 2**32)")
    return indices.astype(np.int64)


# ------------------------------------------------------------------ work arrays
_TLS = threading.local()


def _scratch(name: str, shape, dtype, device_id: int = 0):
    """A device work array reused from the previous call of this thread when the shape and
    dtype match (allocation is a large share of a batch's time). Never returned to callers."""
    from numba import cuda

    shape = tuple(int(v) for v in shape) if isinstance(shape, tuple) else (int(shape),)
    cache = getattr(_TLS, "ws", None)
    if cache is None:
        cache = _TLS.ws = {}
    key = (name, device_id)
    a = cache.get(key)
    if a is None or tuple(a.shape) != shape or a.dtype != np.dtype(dtype):
        a = cuda.device_array(shape, dtype)
        cache[key] = a
    return a


def clear_workspace() -> None:
    """Free the cached device work arrays of this thread."""
    _TLS.ws = {}


# ------------------------------------------------------------------ launches
def _grid(n: int, threads: int = 256):
    from ..kernels.cuda_device import SIMULATOR

    if SIMULATOR:
        return max(1, min(4, -(-n // 64))), 64
    return max(1, min(-(-n // threads), 1 << 16)), threads


def _per_thread(n: int):
    from ..kernels.cuda_device import SIMULATOR

    t = 32 if SIMULATOR else 64
    return max(1, -(-n // t)), t


def _per_block(n_items: int):
    from ..kernels.cuda_device import BLOCK, SIMULATOR

    return max(1, min(n_items, 8 if SIMULATOR else 1 << 16)), BLOCK


def _launch(kernel, config, *args):
    """Launch, refusing host arrays (numba would copy them in and out silently)."""
    for a in args:
        if isinstance(a, np.ndarray):
            raise RuntimeError("internal error: a host array reached a GPU kernel (implicit transfer)")
    kernel[config](*args)


# ------------------------------------------------------------------ result
class GPUBatchResult:
    """Output of ``insmix_batch(..., device="cuda")`` for device input.

    ``images``, ``labels``, ``paste_masks``, ``shuffled_masks`` are of the input's
    kind (CuPy / torch / numba device arrays) and stay on the device. The paste
    records and moves live on the device too (``records``: ``rec_i``, ``rec_f``,
    ``moves``, ``counts``); :attr:`pastes`, :attr:`moves` and :meth:`to_host` copy them
    to the host when asked (``PASTE_DTYPE`` records, as on the CPU).
    """

    def __init__(self, images, labels, paste_masks, shuffled_masks, indices, records):
        self.images = images
        self.labels = labels
        self.paste_masks = paste_masks
        self.shuffled_masks = shuffled_masks
        self.indices = indices
        self.records = records
        self._host = None

    def __len__(self) -> int:
        return int(self.indices.shape[0])

    def _records_host(self):
        if self._host is None:
            from ..core import _to_struct

            rec_i = _d2h(self.records["rec_i"])
            rec_f = _d2h(self.records["rec_f"])
            moves = _d2h(self.records["moves"])
            counts = _d2h(self.records["counts"])
            pastes = [_to_struct(rec_i[b], rec_f[b], int(counts[b, 0])) for b in range(len(self))]
            mv = [moves[b, :counts[b, 1]].copy() for b in range(len(self))]
            self._host = (pastes, mv)
        return self._host

    @property
    def pastes(self) -> list[np.ndarray]:
        return self._records_host()[0]

    @property
    def moves(self) -> list[np.ndarray]:
        return self._records_host()[1]

    def to_host(self):
        """An :class:`~insmix_fast.core.InsMixBatchResult` of numpy arrays (copies everything, once)."""
        from ..core import InsMixBatchResult

        if getattr(self, "_host_result", None) is None:
            pastes, mv = self._records_host()
            self._host_result = InsMixBatchResult(_to_numpy(self.images), _to_numpy(self.labels),
                                                  _to_numpy(self.paste_masks), _to_numpy(self.shuffled_masks),
                                                  pastes, mv, self.indices)
        return self._host_result

    def __getitem__(self, b: int):
        """Tile ``b`` as an :class:`~insmix_fast.core.InsMixResult` on the host (copies the batch once)."""
        return self.to_host()[b]


def _to_numpy(x):
    if isinstance(x, np.ndarray):
        return x
    mod = type(x).__module__.split(".")[0]
    if mod == "torch":
        return x.cpu().numpy()
    if mod == "cupy":
        return x.get()
    return x.copy_to_host()


# ------------------------------------------------------------------ the pipeline
def _device_bank(bank, config: InsMixConfig, device_id: int):
    """(DeviceBank or None, host InstanceBank or None) for this call."""
    if isinstance(bank, DeviceBank):
        host = bank.host
        dev = bank if bank.device_id == device_id else bank.to(f"cuda:{device_id}")
    elif isinstance(bank, InstanceBank):
        host = bank
        dev = bank.to(f"cuda:{device_id}") if len(bank) else None
    elif bank is None:
        host, dev = None, None
    else:
        raise InputTypeError(f"bank must be an InstanceBank or DeviceBank, got {type(bank).__name__}")
    if config.foreground:
        if host is None:
            raise InputTypeError("bank must be an InstanceBank (or DeviceBank) when config.foreground is True")
        if len(host) == 0:
            raise BankError("the instance bank is empty: build it from samples that contain whole nuclei")
    return dev, host


class _Stage:
    """Device work arrays of one call (allocated on the device, never transferred)."""


def _analyse(lab_d, nslots: int, samples_d, seed: int, p_paste: float, select_mode: int, tile: int,
             extra: int, dev: int = 0):
    """Stages 1–2: stats, ranks, anchors, selection and descriptors of every original."""
    from numba import cuda

    from ..kernels import cuda_instances as ki

    nb, hh, ww = lab_d.shape
    s = _Stage()
    gh, gw = hh // tile, ww // tile
    s.r_area = _scratch("r_area", (nb, nslots), np.int64, dev)
    s.r_sr = _scratch("r_sr", (nb, nslots), np.int64, dev)
    s.r_sc = _scratch("r_sc", (nb, nslots), np.int64, dev)
    s.r_box = _scratch("r_box", (nb, nslots, 4), np.int64, dev)
    s.occupied = _scratch("occupied", (nb, gh, gw), np.bool_, dev)
    npx = nb * hh * ww
    _launch(ki.k_init_stats, _grid(nb * max(nslots, gh * gw)), s.r_area, s.r_sr, s.r_sc, s.r_box, s.occupied)
    _launch(ki.k_stats, _grid(npx), lab_d, np.int64(tile), s.r_area, s.r_sr, s.r_sc, s.r_box, s.occupied)
    ncap = nslots + extra
    s.lut = _scratch("lut", (nb, ncap), np.int32, dev)
    s.ids_ext = _scratch("ids_ext", (nb, ncap), np.int64, dev)
    s.area = _scratch("area", (nb, nslots), np.int64, dev)
    s.bbox = _scratch("bbox", (nb, nslots, 4), np.int64, dev)
    s.anchor = _scratch("anchor", (nb, nslots, 2), np.int64, dev)
    s.fits = _scratch("fits", (nb, nslots), np.bool_, dev)
    s.selected = _scratch("selected", (nb, nslots), np.bool_, dev)
    s.k = _scratch("k", nb, np.int64, dev)
    _launch(ki.k_rank, _per_thread(nb), s.r_area, s.r_sr, s.r_sc, s.r_box, np.int64(nslots), samples_d,
            np.uint64(seed), np.float64(p_paste), np.int64(select_mode), s.lut, s.ids_ext, s.area, s.bbox, s.anchor,
            s.fits, s.selected, s.k)
    s.desc = _scratch("desc", (nb, nslots, 32), np.uint32, dev)
    _launch(ki.k_zero_desc, _grid(nb * nslots * 32), s.desc)
    _launch(ki.k_desc, _grid(npx), lab_d, s.lut, s.anchor, s.selected, s.desc)
    return s


def _bank_args(dev):
    return (dev.area, dev.anchor, dev.hw, dev.offset, dev.masks, dev.desc, dev.fits)


def _empty_bank_args():
    from numba import cuda

    return (cuda.device_array(0, np.int64), cuda.device_array((0, 2), np.int32), cuda.device_array((0, 2), np.int32),
            cuda.device_array(1, np.int64), cuda.device_array(1, np.uint8), cuda.device_array((0, 32), np.uint32),
            cuda.device_array(0, np.bool_)), cuda.device_array(3, np.uint8)


def _choose(lab_d, s, bargs, eps, rho, ssd, max_draws, seed, samples_d, nslots, dev: int = 0):
    """Stage 3: template choice per (tile, rank); -1 where none."""
    from numba import cuda

    from ..kernels import cuda_ssd as ks

    nb = lab_d.shape[0]
    s.choice = cuda.device_array((nb, nslots), np.int64)
    s.lo = _scratch("lo", (nb, nslots), np.int64, dev)
    s.hi = _scratch("hi", (nb, nslots), np.int64, dev)
    _launch(ks.k_choose, _grid(nb * nslots), lab_d, s.k, s.ids_ext, s.area, s.anchor, s.selected, s.desc, s.fits,
            *bargs, np.float64(eps), np.float64(rho), bool(ssd), np.int64(max_draws), np.uint64(seed), samples_d,
            s.choice, s.lo, s.hi)
    if ssd:
        _launch(ks.k_fallback, _per_block(nb * nslots), lab_d, s.ids_ext, s.area, s.anchor, s.desc, s.fits, *bargs,
                np.float64(rho), np.uint64(seed), samples_d, s.choice, s.lo, s.hi)
    return s.choice


def _ingest(images, labels):
    """Validated device views of the inputs, the output kind, the device id and (if known) the batch max id."""
    kind_i, kind_l = _kind_of(images), _kind_of(labels)
    if (kind_i == "numpy") != (kind_l == "numpy"):
        raise InputError("images and labels must both be host arrays or both be device arrays")
    if kind_i == "numpy":
        from ..validation import check_batch

        if type(images).__module__.split(".")[0] == "torch":
            images, labels = images.numpy(), labels.numpy()
        images, labels = check_batch(images, labels)
        return dict(kind=_Kind("numpy"), device=0, images=images, labels=labels, host=True,
                    max_id=int(labels.max()), min_id=int(labels.min()))
    _check_dtype_shape(images, labels)
    dev_i, dev_l = _device_index(images, kind_i), _device_index(labels, kind_l)
    if dev_i != dev_l:
        raise InputError(f"images are on cuda:{dev_i} but labels on cuda:{dev_l}")
    ref = images
    img, img_v, kind = _prepare_device(images, kind_i, "images", np.uint8)
    lab, lab_v, _ = _prepare_device(labels, kind_l, "labels", np.int32)
    if kind == "torch":
        ref = img
    return dict(kind=_Kind(kind if kind in ("cupy", "torch") else "numba", ref), device=dev_i, images=img_v,
                labels=lab_v, host=False, keep=(img, lab), max_id=None, min_id=None)


def insmix_batch_cuda(images, labels, bank, config: InsMixConfig, *, seed: int, indices: np.ndarray,
                      device: str = "cuda"):
    """The GPU path of :func:`insmix_fast.core.insmix_batch` (arguments already type-checked there:
    ``config`` an InsMixConfig, ``seed`` an int, ``indices`` int64 (N,) or None)."""
    require_cuda()
    from numba import cuda

    from ..core import InsMixBatchResult, _params, _to_struct

    _kind, dev_id = parse_device(device)
    if config.template_source == "self":
        raise ConfigError("template_source='self' (templates from each tile) runs on the CPU only: use device='cpu'")
    inp = _ingest(images, labels)
    if not inp["host"] and dev_id != inp["device"]:
        if device.strip().lower() != "cuda":
            raise InputError(f"device={device!r} but the batch lives on cuda:{inp['device']}")
        dev_id = inp["device"]
    n, hh, ww = inp["labels"].shape[:3]
    indices = _indices(indices, n)
    dbank, hbank = _device_bank(bank if config.foreground or bank is not None else None, config, dev_id)
    P = _params(config, hbank if hbank is not None else _empty_table_host())
    tile = int(config.tile)
    gh, gw = hh // tile, ww // tile
    g = max(gh * gw, 1)
    with _device(dev_id):
        if inp["host"]:
            img_d = _h2d(inp["images"])
            lab_d = _h2d(inp["labels"])
        else:
            img_d, lab_d = inp["images"], inp["labels"]
        from ..kernels import cuda_instances as ki
        from ..kernels import cuda_pipeline as kp

        max_ids = _scratch("max_ids", n, np.int32, dev_id)
        mn = _scratch("mn", 1, np.int32, dev_id)
        _launch(ki.k_fill1, _grid(n), max_ids, np.int32(0))
        _launch(ki.k_fill1, _grid(1), mn, np.int32(_INT32_MAX))
        _launch(ki.k_minmax, _grid(n * hh * ww), lab_d, max_ids, mn)
        if inp["max_id"] is None:  # the one scalar read of a device-input call
            mx = _scratch("mx", 1, np.int32, dev_id)
            _launch(ki.k_fill1, _grid(1), mx, np.int32(0))
            _launch(ki.k_max1, _grid(n), max_ids, mx)
            both = _scratch("both", 2, np.int32, dev_id)
            _launch(ki.k_pack2, _grid(1), mx, mn, both)
            mxmn = _d2h(both)
            max_id, min_id = int(mxmn[0]), int(mxmn[1])
        else:
            max_id, min_id = inp["max_id"], inp["min_id"]
        if min_id < 0:
            raise InputError(f"labels hold negative ids (min {min_id}); ids must be ≥ 0, 0 = background")
        if max_id > DENSE_ID_LIMIT:
            raise InputError(f"labels hold ids up to {max_id}; device='cuda' takes ids ≤ {DENSE_ID_LIMIT}: relabel "
                             "the maps first (insmix_fast.data.relabel_sequential) or use device='cpu'")
        if max_id + hh * ww >= _INT32_MAX:
            raise InputError("labels ids are too close to the int32 limit to add pasted instances; relabel first")
        nslots = max_id + 1
        cap = max(max_id, 1)  # pastes ≤ selected originals ≤ K ≤ max_id
        samples_d = _h2d(np.asarray(indices, np.int64))
        foreground = bool(config.foreground) and dbank is not None
        select_mode = 1 if foreground else 0
        s = _analyse(lab_d, nslots, samples_d, seed, config.p_paste, select_mode, tile, cap, dev_id)
        if foreground:
            bargs = _bank_args(dbank)
            b_pixels = dbank.pixels
        else:
            bargs, b_pixels = _empty_bank_args()
        if foreground:
            _choose(lab_d, s, bargs, config.eps, config.rho, config.ssd, config.max_draws, seed, samples_d, nslots,
                    dev_id)
        else:
            s.choice = _scratch("choice", (n, nslots), np.int64, dev_id)  # not read: k_place pastes only with foreground
        kind = inp["kind"]
        out_img_o, out_img = kind.empty((n, hh, ww, 3), np.uint8)
        out_lab_o, out_lab = kind.empty((n, hh, ww), np.int32)
        pm_o, pm = kind.empty((n, hh, ww), np.bool_)
        sh_o, sh = kind.empty((n, hh, ww), np.bool_)
        _launch(kp.k_copy_labels, _grid(n * hh * ww), lab_d, out_lab)
        ncap = nslots + cap
        cur_area = _scratch("cur_area", (n, ncap), np.int64, dev_id)
        ibbox = _scratch("ibbox", (n, ncap, 4), np.int64, dev_id)
        pieces = _scratch("pieces", (n, ncap), np.int64, dev_id)
        occ = _scratch("occ", (n, ncap), np.int64, dev_id)
        touched = _scratch("touched", (n, ncap), np.int64, dev_id)
        big = max(int(P.max_crop), hh * ww)
        nscr = big // 2 + 2
        rx0 = _scratch("rx0", (n, nscr), np.int32, dev_id)
        rx1 = _scratch("rx1", (n, nscr), np.int32, dev_id)
        parent = _scratch("parent", (n, nscr), np.int32, dev_id)
        free = _scratch("free", (n, g), np.int64, dev_id)
        k_table = _h2d(background_count_table(np.float64(config.alpha), gh * gw))
        rec_i = cuda.device_array((n, cap, _rec.N_REC_I), np.int64)
        rec_f = cuda.device_array((n, cap, _rec.N_REC_F), np.float64)
        moves = cuda.device_array((n, g, 2), np.int64)
        counts = cuda.device_array((n, 2), np.int64)
        _launch(kp.k_place, _per_thread(n), lab_d, out_lab, max_ids, s.k, s.lut, s.ids_ext, s.area, s.bbox,
                s.anchor, s.selected, s.desc, s.fits, s.choice, *bargs, s.occupied, cur_area, ibbox, pieces, occ,
                touched, rx0, rx1, parent, free, k_table, np.float64(config.delta), np.float64(config.gamma),
                np.float64(config.max_occlusion), np.int64(config.n_tries), np.int64(tile), foreground,
                bool(config.background), bool(config.ssd), config.offset_mode == "diagonal", np.uint64(seed),
                samples_d, rec_i, rec_f, moves, counts)
        src_of = _scratch("src_of", (n, g), np.int64, dev_id)
        _launch(kp.k_src_clear, _grid(n * g), src_of)
        _launch(kp.k_src_fill, _grid(n * g), moves, counts, src_of)
        _launch(kp.k_apply, _grid(n * hh * ww), img_d, out_lab, max_ids, counts, rec_i, src_of, np.int64(tile),
                bargs[2], bargs[3], b_pixels, out_img, pm, sh)
        records = dict(rec_i=rec_i, rec_f=rec_f, moves=moves, counts=counts)
        if not inp["host"]:
            return GPUBatchResult(out_img_o, out_lab_o, pm_o, sh_o, np.asarray(indices, np.int64), records)
        # numpy input: one copy back of the outputs and the records
        ri, rf, mv, ct = _d2h(rec_i), _d2h(rec_f), _d2h(moves), _d2h(counts)
        if (ct[:, 0] < 0).any():  # cannot happen (cap ≥ instances), kept as a guard
            raise RuntimeError("internal error: paste record buffer too small on the device")
        pastes = [_to_struct(ri[b], rf[b], int(ct[b, 0])) for b in range(n)]
        mvl = [mv[b, :ct[b, 1]].copy() for b in range(n)]
        return InsMixBatchResult(_d2h(out_img), _d2h(out_lab), _d2h(pm), _d2h(sh), pastes, mvl,
                                 np.asarray(indices, np.int64))


def _empty_table_host():
    from ..core import _empty_table

    return _empty_table()


# ------------------------------------------------------------------ scoring alone (tests, benchmarks)
def _labels_on_device(labels):
    """(numba view, batch max id, kind) of a host or device N×H×W label batch."""
    kind = _kind_of(labels)
    if kind == "numpy":
        from ..validation import check_labels

        labels = np.asarray(labels)
        if labels.ndim != 3:
            raise InputError(f"labels must be N×H×W, got shape {labels.shape}")
        flat = check_labels(labels.reshape(-1, labels.shape[2]), name="labels").reshape(labels.shape)
        return _h2d(flat), int(flat.max()), True
    _x, view, _k = _prepare_device(labels, kind, "labels", np.int32)
    if view.ndim != 3:
        raise InputError(f"labels must be N×H×W, got shape {view.shape}")
    from numba import cuda

    from ..kernels import cuda_instances as ki

    n = view.shape[0]
    max_ids = _scratch("max_ids", n, np.int32, 0)
    mn = _scratch("mn", 1, np.int32, 0)
    _launch(ki.k_fill1, _grid(n), max_ids, np.int32(0))
    _launch(ki.k_fill1, _grid(1), mn, np.int32(_INT32_MAX))
    _launch(ki.k_minmax, _grid(view.size), view, max_ids, mn)
    m = int(_d2h(max_ids).max())
    if int(_d2h(mn)[0]) < 0:
        raise InputError("labels hold negative ids")
    return view, m, False


def _score_setup(labels, bank, config, seed, indices, select_mode):
    require_cuda()
    config = InsMixConfig() if config is None else config
    if not isinstance(config, InsMixConfig):
        raise InputTypeError(f"config must be an InsMixConfig, got {type(config).__name__}")
    lab_d, max_id, host = _labels_on_device(labels)
    if max_id > DENSE_ID_LIMIT:
        raise InputError(f"labels hold ids up to {max_id}; relabel to ≤ {DENSE_ID_LIMIT} first")
    dbank, hbank = _device_bank(bank, config.replace(foreground=True), 0)
    n = lab_d.shape[0]
    indices = _indices(indices, n)
    samples_d = _h2d(np.asarray(indices, np.int64))
    nslots = max_id + 1
    s = _analyse(lab_d, nslots, samples_d, seed, config.p_paste, select_mode, config.tile, 0)
    return config, lab_d, dbank, s, samples_d, nslots, host


def admissible_counts_cuda(labels, bank, config: InsMixConfig | None = None):
    """Exhaustive bank-wide scoring on the device: for every original of an N×H×W label
    batch, the number of bank templates with ``f_scale ≤ eps`` and ``f_shape ≤ rho``.

    Returns an (N, max_id + 1) int64 array indexed by (tile, rank): rank ``c`` is the
    c-th smallest id of the tile, -1 for unused ranks (a device array for device input).
    """
    from numba import cuda

    from ..kernels import cuda_ssd as ks

    config, lab_d, dbank, s, _samples, nslots, host = _score_setup(labels, bank, config, 0, None, 2)
    counts = cuda.device_array((lab_d.shape[0], nslots), np.int64)
    _launch(ks.k_counts, _per_block(lab_d.shape[0] * nslots), lab_d, s.k, s.ids_ext, s.area, s.anchor, s.desc,
            s.fits, *_bank_args(dbank), np.float64(config.eps), np.float64(config.rho), counts)
    return _d2h(counts) if host else counts


def choose_templates_cuda(labels, bank, config: InsMixConfig | None = None, *, seed: int = 0, indices=None,
                          select_all: bool = True):
    """The seeded template choice of every original (``kernels.ssd.choose_template`` on the
    device): (N, max_id + 1) int64 indexed by (tile, rank), -1 where none is admissible
    or the original is not selected (``select_all=False`` applies the ``p_paste`` draw)."""
    config, lab_d, dbank, s, samples_d, nslots, host = _score_setup(labels, bank, config, seed, indices,
                                                                    2 if select_all else 1)
    choice = _choose(lab_d, s, _bank_args(dbank), config.eps, config.rho, config.ssd, config.max_draws, seed,
                     samples_d, nslots)
    return _d2h(choice) if host else choice
