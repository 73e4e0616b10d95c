"""What the three adapters share (:mod:`.albumentations`, :mod:`.monai`, :mod:`.batch`).

* :func:`run_insmix_arrays`, :func:`run_insmix`, :func:`run_insmix_batch_into` and
  :func:`run_insmix_batch` — the only places that call the core
  (:func:`~insmix_fast.core.insmix_arrays`: the per-sample adapters' arrays without the plan
  and records they would drop; :func:`~insmix_fast.core.insmix` where those are needed; the
  batch calls). They pass ``types=`` (nucleus class maps, SPEC §3b) only when given and the
  core accepts it (:data:`TYPED_INSMIX`, :data:`TYPED_INSMIX_BATCH`, read from the
  signatures), so typed adapters need nothing but a typed core.
* :func:`insmix_nchw` — InsMix on torch tensors laid out N×3×H×W (uint8, or float with
  full intensity ``max_value``) on the CPU or one CUDA device (the batch op, MONAI on CUDA);
  :func:`insmix_hwc` — one H×W×3 numpy sample of any strides (albumentations; MONAI on the
  CPU passes its 3×H×W array seen through ``.transpose(1, 2, 0)``).
* Layouts and dtypes the kernels do not work in cost no conversion: when templates come
  from a bank (:func:`plans_without_pixels`) InsMix's plan never reads the image, so the
  kernels write InsMix in place into a copy of the caller's image, in the caller's layout
  and dtype (:func:`copy_checked`: one pass, with the float range check;
  ``insmix_arrays(..., in_place=True)``, as :func:`~insmix_fast.core.insmix_into` /
  :func:`~insmix_fast.core.insmix_batch_into`).
  uint8 results are bit for bit the core's; float ones keep every pixel InsMix did not
  touch, move background patches exactly, and give pasted nuclei ``template / 255 ·
  max_value``. Templates cut from the tile itself (``template_source='self'``) need the real
  pixels: that path converts layouts (:func:`channels_last` …) and composes floats with
  :func:`float_result`.

The names here are public so the adapter modules can import them; they are not part of
the user-facing API (that is :mod:`insmix_fast.transforms`).
"""

from __future__ import annotations

import inspect
import threading

import cv2
import numpy as np
import torch
from numba import njit

from ..bank import InstanceBank
from ..config import InsMixConfig
from ..core import insmix, insmix_arrays, insmix_batch, insmix_batch_into
from ..errors import ConfigError, InputError, InputTypeError, InsMixError
from ..kernels.pipeline import narrow_into
from ..validation import channel_first_planes, check_number

__all__ = ["INSTALL_HINT", "TYPED_INSMIX", "TYPED_INSMIX_BATCH", "missing_library", "check_bank", "check_config",
           "check_probability", "check_max_value", "patch_size", "label_dtype", "is_integer_dtype", "check_integer_map", "require_types",
           "error_context", "in_context", "run_insmix", "run_insmix_arrays", "run_insmix_batch", "run_insmix_batch_into", "check_float_range", "to_uint8", "float_result",
           "moves_of", "staging", "channels_last", "channels_first", "contiguous_nchw", "check_nchw", "insmix_nchw",
           "batch_output", "insmix_hwc", "plans_without_pixels", "copy_checked", "narrow_labels",
           "IN_PLACE_DTYPES"]

INSTALL_HINT = 'pip install "insmix-fast[transforms]"'


def _accepts_types(fn) -> bool:
    try:
        return "types" in inspect.signature(fn).parameters
    except (TypeError, ValueError):  # pragma: no cover - builtins without a signature
        return False


#: Whether the core ``insmix`` / ``insmix_batch`` take a nucleus type map (``types=``) and
#: return ``result.types``. The adapters' type plumbing switches on these.
TYPED_INSMIX = _accepts_types(insmix)
TYPED_INSMIX_BATCH = _accepts_types(insmix_batch)


def missing_library(library: str, error: ImportError, minimum: str = "") -> ImportError:
    """The ImportError an adapter module raises when its library is absent (or too old)."""
    need = f"{library}{minimum}"
    return ImportError(f"insmix_fast.transforms needs {need} for this adapter ({error}); install it with "
                       f"{INSTALL_HINT} or pip install '{need}'")


# ------------------------------------------------------------------ argument checks
def check_bank(bank, config: InsMixConfig, *, allow_device: bool = False):
    """``bank`` must be an :class:`~insmix_fast.bank.InstanceBank` (with ``allow_device`` also a
    GPU ``DeviceBank``), or ``None`` when ``config`` needs no bank (``foreground=False`` or
    ``template_source='self'``)."""
    if bank is None:
        if config.foreground and config.template_source == "bank":
            raise ConfigError("bank is None but the config pastes templates from a bank: pass bank="
                              "InstanceBank.from_samples(...) (or InstanceBank.load(path)), or use "
                              "InsMixConfig(foreground=False) for the background shuffle alone")
        return None
    if isinstance(bank, InstanceBank):
        return bank
    if allow_device:
        from ..gpu.bank import DeviceBank

        if isinstance(bank, DeviceBank):
            return bank
    raise InputTypeError(f"bank must be an InstanceBank{', a DeviceBank' if allow_device else ''} or None, "
                         f"got {type(bank).__name__}")


def check_config(config) -> InsMixConfig:
    if config is None:
        return InsMixConfig()
    if not isinstance(config, InsMixConfig):
        raise InputTypeError(f"config must be an InsMixConfig, got {type(config).__name__}")
    return config


def check_probability(name: str, p) -> float:
    return check_number(name, p, 0.0, 1.0)


def check_max_value(max_value) -> float:
    return check_number("max_value", max_value, 0.0, lo_open=True)


def patch_size(config: InsMixConfig) -> int:
    """Side of the background-shuffle patches (``InsMixConfig.patch``; ``tile`` before the rename)."""
    size = getattr(config, "patch", None)
    return int(config.tile if size is None else size)


def label_dtype(dtype):
    """Output dtype of a label map: its own when it has ≥ 32 bits, else int32 — pasted
    nuclei get ids above the input's maximum, which a uint8/int16 map may not hold.
    Works for numpy and torch dtypes."""
    if not isinstance(dtype, np.dtype):  # (an array's dtype first: every per-sample call passes here)
        if isinstance(dtype, torch.dtype):
            return dtype if dtype.itemsize >= 4 else torch.int32
        dtype = np.dtype(dtype)
    return dtype if dtype.itemsize >= 4 else _INT32


def is_integer_dtype(dtype) -> bool:
    """Whether a numpy or torch dtype is an integer type (bool is not)."""
    if isinstance(dtype, np.dtype):  # (an array's dtype first: every per-sample call passes here)
        return dtype.kind in "ium"
    if isinstance(dtype, torch.dtype):
        return not (dtype.is_floating_point or dtype.is_complex or dtype == torch.bool)
    # kinds i/u/m (timedelta64 subclasses np.signedinteger) are exactly np.issubdtype(dtype, np.integer),
    # bool being 'b', at a fifth of its cost: every adapter call checks its maps right after a kernel
    # has evicted the interpreter's caches (~4 µs there for issubdtype, under 1 µs for this)
    return np.dtype(dtype).kind in "ium"


def check_integer_map(x, name: str, what: str = "instance map") -> None:
    """A label/type map must hold integers (not floats or bools); ``name`` says where it came from."""
    if not is_integer_dtype(x.dtype):
        raise InputError(f"{name} must be an integer {what} (0 = background), got dtype {x.dtype}")


def require_types(what: str) -> None:
    """Raise when a type map is given but the core cannot take one."""
    if not (TYPED_INSMIX and TYPED_INSMIX_BATCH):
        raise InputError(f"{what}: nucleus type maps need an insmix_fast whose insmix() accepts types=; "
                         "this version does not (leave the type map out)")


class error_context:
    """``with error_context(context):`` re-raises an :class:`~insmix_fast.errors.InsMixError`
    from the core with ``context`` (which transform, which keys) in front of its message; the
    type stays the same. A plain class (entering and leaving cost less than a generator's)."""

    __slots__ = ("context",)

    def __init__(self, context: str):
        self.context = context

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind, e, tb) -> None:
        if isinstance(e, InsMixError):
            raise in_context(e, self.context) from e


def in_context(e: InsMixError, context: str) -> InsMixError:
    """``e`` again, of its type, with ``context`` (which transform, which keys) in front of its
    message — for ``except InsMixError as e: raise in_context(e, ...) from e``, which costs
    nothing when no error is raised (a ``with`` block pays its two calls on every sample)."""
    return type(e)(f"{context}: {e}")


# ------------------------------------------------------------------ the calls into the core
def run_insmix(image, labels, bank, config: InsMixConfig, *, seed: int, index: int = 0, types=None):
    """The one per-sample call of :func:`~insmix_fast.core.insmix` (``types`` only when given)."""
    if types is None:
        return insmix(image, labels, bank, config, seed=seed, index=index)
    require_types("types")
    return insmix(image, labels, bank, config, seed=seed, index=index, types=types)


def run_insmix_arrays(image, labels, bank, config: InsMixConfig, *, seed: int, index: int = 0, types=None,
                      in_place: bool = False, max_value: float = 1.0, labels_dtype=None, on_outputs=None):
    """The one per-sample call of :func:`~insmix_fast.core.insmix_arrays`: ``(image, labels,
    types or None)`` of :func:`~insmix_fast.core.insmix` (``in_place``: of
    :func:`~insmix_fast.core.insmix_into`, InsMix written into ``image``, a copy of the caller's
    image in its own layout and dtype), without the plan and records the adapters would drop;
    ``labels_dtype`` and ``on_outputs`` as ``insmix_arrays`` takes them."""
    if types is not None:
        require_types("types")
    return insmix_arrays(image, labels, bank, config, seed=seed, index=index, types=types, in_place=in_place,
                         max_value=max_value, labels_dtype=labels_dtype, on_outputs=on_outputs)


def run_insmix_batch_into(out, labels, bank, config: InsMixConfig, *, seed: int, indices, types=None,
                          max_value: float = 1.0, out_labels=None):
    """The one call of :func:`~insmix_fast.core.insmix_batch_into` (InsMix written into ``out``,
    a copy of the caller's N×H×W×3-seen batch in its own layout and dtype; labels into
    ``out_labels`` when given), without the paste and shuffle masks the adapters drop."""
    if types is not None:
        require_types("types")
    return insmix_batch_into(out, labels, bank, config, seed=seed, indices=indices, types=types, max_value=max_value,
                             out_labels=out_labels, masks=False)


def run_insmix_batch(images, labels, bank, config: InsMixConfig, *, seed: int, indices, device: str = "cpu",
                     types=None):
    """The one call of :func:`~insmix_fast.core.insmix_batch` (``types`` only when given)."""
    if types is None:
        return insmix_batch(images, labels, bank, config, seed=seed, indices=indices, device=device)
    require_types("types")
    return insmix_batch(images, labels, bank, config, seed=seed, indices=indices, device=device, types=types)


# ------------------------------------------------------------------ float images
def check_float_range(x: torch.Tensor, max_value: float, name: str) -> None:
    """A float image must hold intensities in ``[0, max_value]`` (one pass; one scalar read on a GPU)."""
    lo, hi = torch.aminmax(x) if x.dtype in (torch.float32, torch.float64) else torch.aminmax(x.float())
    _check_range(float(lo), float(hi), max_value, name)


def _check_range(lo: float, hi: float, max_value: float, name: str) -> None:
    if not (lo >= 0.0 and hi <= max_value):  # False for NaN too
        raise InputError(f"{name} is a float image with values in [{lo:g}, {hi:g}], outside [0, max_value={max_value:g}]"
                         "; float images must hold intensities in [0, max_value] (pass max_value=255.0 for 0..255 "
                         "floats, and apply InsMix before normalising)")


def to_uint8(x: torch.Tensor, max_value: float, config: InsMixConfig) -> torch.Tensor:
    """The uint8 N×3×H×W image InsMix plans on, for a float batch ``x`` (checked already).

    InsMix reads image pixels only to cut templates from the tile itself
    (``template_source='self'``); then it is ``round(x · 255 / max_value)``. Otherwise the plan
    and the pasted pixels do not depend on the tile's pixels, and a zero image is enough
    (:func:`float_result` takes every other pixel from ``x``). Either way the result is a
    channel-last buffer seen channel-first."""
    n, c, h, w = x.shape
    if config.template_source != "self":
        return torch.zeros((n, h, w, c), dtype=torch.uint8, device=x.device).permute(0, 3, 1, 2)
    work = x if x.dtype in (torch.float32, torch.float64) else x.to(torch.float32)
    q = torch.round(work.permute(0, 2, 3, 1) * (255.0 / max_value)).to(torch.uint8)
    return q.contiguous().permute(0, 3, 1, 2)


@njit(cache=True, nogil=True)
def _float_compose(x, out, u8, paste, moves, counts, patch, scale):
    """CPU body of :func:`float_result`: copy the moved patches of ``x`` (N×C×H×W) into ``out``,
    then write ``u8 / scale`` (N×H×W×C) where ``paste`` (N×H×W) is set."""
    n, c, h, w = x.shape
    gw = w // patch
    for b in range(n):
        for i in range(counts[b]):
            sy, sx = (moves[b, i, 0] // gw) * patch, (moves[b, i, 0] % gw) * patch
            dy, dx = (moves[b, i, 1] // gw) * patch, (moves[b, i, 1] % gw) * patch
            for ch in range(c):
                for yy in range(patch):
                    for xx in range(patch):
                        out[b, ch, dy + yy, dx + xx] = x[b, ch, sy + yy, sx + xx]
        for yy in range(h):
            for xx in range(w):
                if paste[b, yy, xx]:
                    for ch in range(c):
                        out[b, ch, yy, xx] = u8[b, yy, xx, ch] / scale


def float_result(x: torch.Tensor, out_u8: torch.Tensor, paste_mask: torch.Tensor, moves: torch.Tensor,
                 counts: torch.Tensor, patch: int, max_value: float, *, vectorised: bool | None = None) -> torch.Tensor:
    """The float image InsMix produced, exactly.

    ``x`` N×C×H×W float input, ``out_u8`` N×C×H×W uint8 InsMix output (any strides),
    ``paste_mask`` N×H×W bool, ``moves`` N×K×2 int64 ``(src, dst)`` row-major patch indices of
    which the first ``counts[b]`` are valid. Moved patches are copied from ``x`` (background
    patches hold no pasted pixel, so the float input is their true source); pasted pixels
    are ``out_u8 / (255 / max_value)``; every other pixel is ``x``'s. All on ``x``'s device:
    on a GPU (``vectorised``, the default there) as whole-batch gathers with no host read, on
    the CPU (float32/float64) as one Numba pass over the moves and the paste mask.
    """
    n, c, h, w = x.shape
    gh, gw = h // patch, w // patch
    g = gh * gw
    out = x.clone()
    k = moves.shape[1] if moves.ndim == 3 else 0
    scale = 255.0 / max_value
    if vectorised is None:  # the Numba loop takes float32/float64 host arrays
        vectorised = x.is_cuda or x.dtype not in (torch.float32, torch.float64)
    if not vectorised:
        mv = moves.numpy() if moves.ndim == 3 else np.zeros((n, 0, 2), np.int64)
        _float_compose(x.numpy(), out.numpy(), out_u8.permute(0, 2, 3, 1).numpy(), paste_mask.numpy(), mv,
                       counts.numpy(), patch, scale)
        return out
    if g and k:
        dev = x.device
        valid = torch.arange(k, device=dev)[None, :] < counts[:, None]
        dst = torch.where(valid, moves[..., 1], g)  # invalid moves write the spare column g
        src = torch.where(valid, moves[..., 0], g)
        src_of = torch.arange(g + 1, device=dev).repeat(n, 1)
        src_of.scatter_(1, dst, src)
        src_of = src_of[:, :g]
        region = x[:, :, :gh * patch, :gw * patch].reshape(n, c, gh, patch, gw, patch)
        region = region.permute(0, 2, 4, 1, 3, 5).reshape(n, g, c, patch, patch)
        moved = region.gather(1, src_of[:, :, None, None, None].expand(n, g, c, patch, patch))
        out[:, :, :gh * patch, :gw * patch] = (moved.reshape(n, gh, gw, c, patch, patch)
                                               .permute(0, 3, 1, 4, 2, 5).reshape(n, c, gh * patch, gw * patch))
    pasted = out_u8.to(x.dtype) / scale
    return torch.where(paste_mask[:, None], pasted, out)


def moves_of(result, device) -> tuple[torch.Tensor, torch.Tensor]:
    """``(moves N×K×2, counts N)`` int64 tensors on ``device`` from a batch result: the device
    records of a GPU result (viewed in place, no copy to the host), the per-sample lists of a
    CPU one."""
    records = getattr(result, "records", None)
    if records is not None:  # GPUBatchResult: numba device arrays, seen by torch through __cuda_array_interface__
        moves = torch.as_tensor(records["moves"], device=device)
        counts = torch.as_tensor(records["counts"], device=device)[:, 1]
        return moves, counts
    mv = [np.asarray(m, np.int64).reshape(-1, 2) for m in result.moves]
    k = max((len(m) for m in mv), default=0)
    moves = np.zeros((len(mv), k, 2), np.int64)
    for b, m in enumerate(mv):
        moves[b, :len(m)] = m
    return torch.from_numpy(moves).to(device), torch.tensor([len(m) for m in mv], dtype=torch.int64, device=device)


class _One:
    """An :class:`~insmix_fast.core.InsMixResult` seen as a batch of one (the CPU fast path)."""

    def __init__(self, r):
        self.images = r.image[None]
        self.labels = r.labels[None]
        self.paste_masks = r.paste_mask[None]
        self.moves = [r.plan.moves]
        self.types = getattr(r, "types", None)
        if self.types is not None:
            self.types = self.types[None]


# ------------------------------------------------------------------ layout changes
#: dtypes cv2.merge/split take; for uint8 RGB they are ~20× faster than numpy's transposing copy.
_CV2_DTYPES = frozenset(np.dtype(t) for t in (np.uint8, np.uint16, np.int16, np.float32, np.float64))


_TLS = threading.local()


def staging(name: str, shape: tuple[int, ...], dtype) -> np.ndarray:
    """Scratch array ``name`` of this thread, reused while shape and dtype stay the same: the
    channel-last copy of an input that InsMix reads during one call and never returns
    (a fresh buffer per call costs its page faults, about as much as the copy itself).
    Each caller uses its own ``name``, so two live uses never share a buffer."""
    buffers = getattr(_TLS, "buffers", None)
    if buffers is None:
        buffers = _TLS.buffers = {}
    buf = buffers.get(name)
    if buf is None or buf.shape != tuple(shape) or buf.dtype != np.dtype(dtype):
        buf = buffers[name] = np.empty(shape, dtype)
    return buf


def _into(result: np.ndarray, out: np.ndarray) -> np.ndarray:
    if result.__array_interface__["data"][0] != out.__array_interface__["data"][0]:  # cv2 chose its own buffer
        out[...] = result.reshape(out.shape)
    return out


def channels_last(x: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """3×H×W (any strides) → C-contiguous H×W×3, written into ``out`` when given."""
    if out is None:
        out = np.empty(x.shape[1:] + x.shape[:1], x.dtype)
    if x.shape[0] == 3 and x.dtype in _CV2_DTYPES:
        return _into(cv2.merge([x[0], x[1], x[2]], out), out)
    out[...] = x.transpose(1, 2, 0)
    return out


def channels_first(x: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """H×W×3 → C-contiguous 3×H×W, written into ``out`` when given."""
    if out is None:
        out = np.empty(x.shape[2:] + x.shape[:2], x.dtype)
    if x.shape[2] == 3 and x.dtype in _CV2_DTYPES and x.flags.c_contiguous:
        planes = cv2.split(x, [out[0], out[1], out[2]])
        for k in range(3):
            _into(planes[k], out[k])
        return out
    out[...] = x.transpose(2, 0, 1)
    return out


def _nhwc(u8: torch.Tensor) -> torch.Tensor:
    """N×3×H×W → a contiguous N×H×W×3 tensor (free when it already is one, seen channel-first)."""
    nhwc = u8.permute(0, 2, 3, 1)
    if nhwc.is_contiguous():
        return nhwc
    if u8.is_cuda:
        return nhwc.contiguous()
    src = u8.numpy()
    out = staging("nhwc", tuple(nhwc.shape), src.dtype)  # read by the core during this call only
    for b in range(src.shape[0]):
        channels_last(src[b], out[b])
    return torch.from_numpy(out)


def contiguous_nchw(x: torch.Tensor) -> torch.Tensor:
    """``x.contiguous()`` for an N×3×H×W tensor, via cv2 on the CPU when ``x`` is a channel-last buffer."""
    if x.is_contiguous() or x.is_cuda or not x.permute(0, 2, 3, 1).is_contiguous():
        return x.contiguous()
    src = x.permute(0, 2, 3, 1).numpy()
    out = np.empty(tuple(x.shape), src.dtype)
    for b in range(src.shape[0]):
        channels_first(src[b], out[b])
    return torch.from_numpy(out)


# ------------------------------------------------------------------ stand-in images, one-pass copies
#: Image dtypes :func:`~insmix_fast.core.insmix_into` writes (others take the converting path).
IN_PLACE_DTYPES = frozenset(np.dtype(t) for t in (np.uint8, np.float32, np.float64))
_IN_PLACE_TORCH = frozenset((torch.uint8, torch.float32, torch.float64))


def plans_without_pixels(config: InsMixConfig) -> bool:
    """Whether InsMix's plan ignores the image's pixels: templates come from a bank, or
    nothing is pasted. Then InsMix can be written in place into a copy of the caller's image
    (:func:`~insmix_fast.core.insmix_into`, :func:`~insmix_fast.core.insmix_batch_into`)."""
    return not config.foreground or config.template_source != "self"


@njit(cache=True, nogil=True)
def _copy_in_range(src, dst, hi):
    """``dst[...] = src`` (C-contiguous, one shape) and whether every value lies in ``[0, hi]``
    (not NaN), in one pass."""
    s = src.reshape(-1)
    d = dst.reshape(-1)
    ok = True
    for i in range(s.shape[0]):
        v = s[i]
        d[i] = v
        ok &= (v >= 0.0) & (v <= hi)
    return ok


def _memory_order(x: np.ndarray) -> tuple[int, ...] | None:
    """Axes that make ``x`` C-contiguous (``x.transpose(order)``), or ``None`` when no order does."""
    order = tuple(sorted(range(x.ndim), key=lambda a: -x.strides[a]))
    return order if x.transpose(order).flags.c_contiguous else None


def copy_checked(x: np.ndarray, max_value: float, name: str) -> np.ndarray:
    """A copy of ``x`` in its memory layout (``np.empty_like``: a 3×H×W array seen as H×W×3
    stays channel-first in memory), and for a float ``x`` the check that its values lie in
    ``[0, max_value]`` — one pass when ``x`` is contiguous in some axis order."""
    out = np.empty_like(x)
    if x.dtype == np.uint8 or not x.size:
        np.copyto(out, x)
        return out
    order = _memory_order(x)
    if order is None:
        np.copyto(out, x)
        ok = bool(np.all((x >= 0.0) & (x <= max_value)))
    else:
        ok = _copy_in_range(x.transpose(order), out.transpose(order), max_value)
    if not ok:
        _check_range(float(x.min()), float(x.max()), max_value, name)
    return out


def narrow_labels(labels: np.ndarray) -> np.ndarray:
    """An int64 label map (torch's label dtype) as the int32 map the core works on, in one pass
    that also checks its ids (the batch kernel's :func:`~insmix_fast.kernels.pipeline.narrow_into`),
    written to this thread's :func:`staging` buffer (the core reads it during the call and copies
    it); the map itself when it is not int64, not contiguous, or holds ids int32 cannot (the
    core then casts it, or says what is wrong)."""
    if labels.dtype != np.int64 or not labels.size or not labels.flags.c_contiguous:
        return labels
    out = staging("labels-int32", labels.shape, np.int32)
    return out if narrow_into(out, labels) >= 0 else labels


# ------------------------------------------------------------------ the shared tensor path
def check_nchw(images, labels, types, names: tuple[str, str, str]) -> None:
    """Layout checks that name the caller's keys: images N×3×H×W, labels/types N×H×W integer, one device."""
    for x, nm in ((images, names[0]), (labels, names[1]), (types, names[2])):
        if x is not None and not isinstance(x, torch.Tensor):
            raise InputTypeError(f"{nm} must be a torch.Tensor, got {type(x).__name__}")
    ish = tuple(images.shape)
    if len(ish) != 4 or ish[-3] != 3:
        hint = ""
        if len(ish) == 4 and ish[-1] == 3:
            hint = " — it looks channel-last (…×H×W×3): permute it to channel-first"
        raise InputError(f"{names[0]} must be a channel-first N×3×H×W RGB image, got shape {ish}{hint}")
    if images.dtype != torch.uint8 and not images.dtype.is_floating_point:
        raise InputError(f"{names[0]} must be uint8 (0..255) or float (0..max_value), got {images.dtype}")
    want = ish[:-3] + ish[-2:]
    for x, nm, what in ((labels, names[1], "instance map"), (types, names[2], "type map")):
        if x is None:
            continue
        check_integer_map(x, nm, what)
        if tuple(x.shape) != want:
            raise InputError(f"{nm} must be N×H×W = {want} to match {names[0]} {ish}, got shape {tuple(x.shape)}")
        if x.device != images.device:
            raise InputError(f"{nm} is on {x.device} but {names[0]} on {images.device}: put them on one device")


def insmix_nchw(images: torch.Tensor, labels: torch.Tensor, bank, config: InsMixConfig, *, seed: int, indices,
                types: torch.Tensor | None = None, max_value: float = 1.0,
                names: tuple[str, str, str] = ("images", "labels", "types")):
    """InsMix on N×3×H×W tensors on the CPU or one CUDA device (``insmix_batch(device=...)``,
    no host copy of the data on CUDA); ``indices`` are the samples' InsMix indices.

    Returns ``(images, labels, types or None)`` on the input's device: images N×3×H×W in the
    input dtype (float: see :func:`float_result`; CPU results keep the input's memory layout,
    others may be a channel-last buffer seen channel-first: call ``.contiguous()`` where it
    matters), labels in :func:`label_dtype` of theirs, types in theirs. Sample ``b`` equals
    ``insmix(image_b, labels_b, bank, config, seed=seed, index=indices[b])`` (channel-last, uint8).
    """
    check_nchw(images, labels, types, names)
    images = images.detach()
    if not images.is_cuda and images.dtype in _IN_PLACE_TORCH and plans_without_pixels(config):
        return _in_place_nchw(images, labels, bank, config, seed, indices, types, max_value, names)
    if images.dtype == torch.uint8:
        u8 = images
    else:
        check_float_range(images, max_value, names[0])
        u8 = to_uint8(images, max_value, config)
    nhwc = _nhwc(u8)
    if images.is_cuda:
        res = run_insmix_batch(nhwc, labels.detach().contiguous(), bank, config, seed=seed, indices=indices,
                               device=str(images.device), types=None if types is None else types.detach().contiguous())
    else:
        host_bank = getattr(bank, "host", bank)  # a DeviceBank's host copy
        lab = labels.detach().numpy()
        typ = None if types is None else types.detach().numpy()
        if nhwc.shape[0] == 1:  # one tile: the per-sample call, no batch bookkeeping
            res = _One(run_insmix(nhwc.numpy()[0], lab[0], host_bank, config, seed=seed, index=int(indices[0]),
                                  types=None if typ is None else typ[0]))
        else:
            res = run_insmix_batch(nhwc.numpy(), lab, host_bank, config, seed=seed, indices=indices, types=typ)
    return batch_output(images, labels, types, res, config, max_value)


def _in_place_nchw(images: torch.Tensor, labels: torch.Tensor, bank, config: InsMixConfig, seed: int, indices,
                   types, max_value: float, names: tuple[str, str, str]):
    """:func:`insmix_nchw` on the CPU when the plan reads no pixels: InsMix written in place
    into a copy of ``images`` (layout kept)."""
    x = images.numpy()
    out = copy_checked(x, max_value, names[0])
    in_labels = labels.detach().numpy()
    typ = None if types is None else types.detach().numpy()
    host_bank = getattr(bank, "host", bank)  # a DeviceBank's host copy
    if x.shape[0] == 1:  # one tile: the per-sample call, no batch bookkeeping
        _, lab, res_types = run_insmix_arrays(out[0].transpose(1, 2, 0), narrow_labels(in_labels[0]), host_bank,
                                              config, seed=seed, index=int(indices[0]),
                                              types=None if typ is None else typ[0], in_place=True,
                                              max_value=max_value)
        out_labels, out_types = lab[None], None if typ is None else res_types[None]
    else:  # (int64 labels are narrowed by the batch kernel as it copies them)
        wide = np.empty(in_labels.shape, np.int64) if label_dtype(in_labels.dtype) == np.int64 else None
        res = run_insmix_batch_into(out.transpose(0, 2, 3, 1), in_labels, host_bank, config, seed=seed,
                                    indices=indices, types=typ, max_value=max_value, out_labels=wide)
        out_labels, out_types = res.labels, res.types
    # numpy casts: single-threaded, where torch's would wait for its thread pool (busy cores stall it)
    out_labels = torch.from_numpy(out_labels.astype(label_dtype(in_labels.dtype), copy=False))
    return (torch.from_numpy(out), out_labels,
            None if types is None else torch.from_numpy(np.asarray(out_types).astype(typ.dtype, copy=False)))


def batch_output(images: torch.Tensor, labels: torch.Tensor, types: torch.Tensor | None, res, config: InsMixConfig,
                 max_value: float = 1.0):
    """The tensors :func:`insmix_nchw` returns, from the inputs and InsMix's batch result
    ``res`` (CPU ``InsMixBatchResult``, or a ``GPUBatchResult`` whose arrays live on
    ``images``' CUDA device): images in the input dtype, labels in :func:`label_dtype`, types
    in theirs, all on ``images.device``."""
    dev = images.device
    out_u8 = torch.as_tensor(res.images, device=dev).permute(0, 3, 1, 2)
    if images.dtype == torch.uint8:
        out_images = out_u8
    else:
        moves, counts = moves_of(res, dev)
        paste = torch.as_tensor(res.paste_masks, device=dev).bool()
        out_images = float_result(images.detach(), out_u8, paste, moves, counts, patch_size(config), max_value)
    out_labels = torch.as_tensor(res.labels, device=dev).to(label_dtype(labels.dtype))
    out_types = None
    if types is not None:
        out_types = torch.as_tensor(res.types, device=dev).to(types.dtype)
    return out_images, out_labels, out_types


def insmix_hwc(image: np.ndarray, labels: np.ndarray, bank, config: InsMixConfig, *, seed: int, index: int = 0,
               types: np.ndarray | None = None, max_value: float = 1.0,
               names: tuple[str, str, str] = ("image", "labels", "types"), on_outputs=None):
    """InsMix on one numpy sample: image H×W×3 of any strides (a 3×H×W array seen through
    ``.transpose(1, 2, 0)``), uint8 or float in ``[0, max_value]``; labels and types H×W. The
    per-sample adapters' path. Returns ``(image, labels, types or None)`` as numpy: image in
    its dtype and memory layout (float: exact, see the module docstring), labels in
    :func:`label_dtype` of theirs, types in theirs. ``on_outputs(image, labels)`` (optional) is
    called with the output image and label map before InsMix writes them when the core makes
    them (``insmix_arrays``' hook: the int32 and int64 label dtypes), else once they are written.

    A uint8 image, C-contiguous or channel-first in memory (with bank templates), is one plain
    :func:`run_insmix_arrays` call, which copies it into a new image of its layout; other images
    are copied first (:func:`copy_checked`) and InsMix is written into the copy in place."""
    # (dtypes compared with dtype instances: every sample passes here right after a kernel has
    # evicted the interpreter's caches, where a comparison with a type object costs µs)
    check_integer_map(labels, names[1])
    if types is not None:
        check_integer_map(types, names[2], "type map")
    lab = narrow_labels(labels)
    want = label_dtype(labels.dtype)
    core = _INT64 if want == _INT64 else None  # the core writes int32 labels, or widens them to int64
    hook = on_outputs if want == _INT32 or core is not None else None
    if image.dtype == _UINT8 and (image.flags.c_contiguous or (
            plans_without_pixels(config) and channel_first_planes(image) is not None)):
        out, out_labels, out_types = run_insmix_arrays(image, lab, bank, config, seed=seed, index=index, types=types,
                                                       labels_dtype=core, on_outputs=hook)
    elif image.dtype in IN_PLACE_DTYPES and plans_without_pixels(config):
        out, out_labels, out_types = run_insmix_arrays(copy_checked(image, max_value, names[0]), lab, bank, config,
                                                       seed=seed, index=index, types=types, in_place=True,
                                                       max_value=max_value, labels_dtype=core, on_outputs=hook)
    else:  # the plan reads the pixels (templates cut from the tile), or a dtype insmix_into does not write
        x = torch.from_numpy(image if min(image.strides, default=0) >= 0 else image.copy()).permute(2, 0, 1)
        typ = None if types is None else torch.from_numpy(np.ascontiguousarray(types))[None]
        img, lab_t, typ = insmix_nchw(x[None], torch.from_numpy(np.ascontiguousarray(labels))[None], bank, config,
                                      seed=seed, indices=(index,), types=typ, max_value=max_value, names=names)
        out, out_labels = _in_layout_of(image, img[0].permute(1, 2, 0).numpy()), lab_t[0].numpy()
        out_types, hook = None if typ is None else typ[0].numpy(), None
    if out_labels.dtype != want:
        out_labels = out_labels.astype(want)
    if on_outputs is not None and hook is None:
        on_outputs(out, out_labels)
    if types is not None:
        out_types = out_types.astype(types.dtype, copy=False)
    return out, out_labels, out_types


_UINT8, _INT32, _INT64 = np.dtype(np.uint8), np.dtype(np.int32), np.dtype(np.int64)


def _in_layout_of(like: np.ndarray, hwc: np.ndarray) -> np.ndarray:
    """``hwc`` (H×W×3) copied into a new array laid out in memory as ``like`` is (channel-first via cv2)."""
    out = np.empty_like(like)
    if not out.flags.c_contiguous and out.transpose(2, 0, 1).flags.c_contiguous:
        channels_first(np.ascontiguousarray(hwc), out.transpose(2, 0, 1))
    else:
        out[...] = hwc
    return out
