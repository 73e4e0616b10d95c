"""InsMix as a MONAI dictionary transform: :class:`InsMixd`.

``InsMixd(keys=("image", "label"), bank=bank, prob=0.5)`` in a ``monai.transforms.Compose``;
channel-first data as MONAI keeps it — the image 3×H×W (uint8, or float in
``[0, max_value]``), the instance map 1×H×W integer, an optional type map 1×H×W under
``type_key`` — as ``MetaTensor``, ``torch.Tensor`` (CPU or CUDA) or numpy. Outputs are of
the input's kind, and a ``MetaTensor`` keeps its metadata (``meta``, ``affine``,
``applied_operations``). Randomness is MONAI's: ``set_random_state(seed)`` (or
``Compose.set_random_state``, or ``monai.data.DataLoader``'s worker seeding) decides the
``prob`` coin and the InsMix seed, drawn in :meth:`InsMixd.randomize`. With MONAI's metadata
tracking off (``monai.data.set_track_meta(False)``) outputs are plain tensors, as MONAI's own
transforms return them.
Importing this module needs MONAI (``pip install "insmix-fast[transforms]"``).
"""

from __future__ import annotations

import contextlib
from collections.abc import Hashable, Mapping

import numpy as np
import torch

from ..errors import ConfigError, InputError, InputTypeError, InsMixError
from .common import (check_bank, check_config, check_max_value, check_probability, in_context, insmix_hwc,
                     insmix_nchw, is_integer_dtype, missing_library, require_types)

try:
    from monai.config import KeysCollection
    from monai.data import MetaTensor, get_track_meta
    from monai.data.meta_obj import MetaObj
    from monai.transforms import MapTransform, RandomizableTransform
    from monai.utils import TransformBackends
except ImportError as _e:  # pragma: no cover - exercised by a test that hides the library
    raise missing_library("monai", _e, ">=1.3") from _e

__all__ = ["InsMixd"]

#: ``with _plain_tensors():`` turns off ``__torch_function__`` of tensor subclasses (MetaTensor):
#: torch's context manager for it, a no-op on a torch without it.
_plain_tensors = getattr(torch._C, "DisableTorchFunctionSubclass", contextlib.nullcontext)

#: The InsMix seed is ``floor(u · 2**53)`` for a ``u = R.rand()`` (53 random bits, exactly).
_SEED_SCALE = float(2**53)


class InsMixd(RandomizableTransform, MapTransform):
    """InsMix on a MONAI data dictionary.

    Args:
        keys: ``(image_key, label_key)`` — the RGB image and its instance map.
        bank: :class:`~insmix_fast.bank.InstanceBank` templates come from (``None`` only
            when ``config`` needs no bank).
        config: :class:`~insmix_fast.config.InsMixConfig` (SPEC defaults when ``None``).
        type_key: key of a 1×H×W nucleus type map (0 = background) updated with the
            instance map (pasted nuclei carry their template's class). Needs a typed core.
        prob: probability of applying InsMix to a sample.
        max_value: full intensity of a float image: 1.0 for [0, 1] (e.g. after
            ``ScaleIntensityd``), 255.0 for ``LoadImaged``'s default 0..255 float32.
        allow_missing_keys: skip the sample (unchanged) when a key is missing instead of raising.

    Images keep their dtype (float: untouched pixels unchanged, moved background patches
    copied exactly, pasted nuclei ``template / 255 · max_value``); instance maps keep
    theirs when it has ≥ 32 bits, else become int32; type maps keep theirs. Label maps
    must be integer: ``LoadImaged`` reads labels as float32 unless told otherwise, so load
    them with ``dtype=None`` or add ``CastToTyped(keys="label", dtype=np.int32)``.
    A CUDA tensor is processed on its device (``insmix_batch(device=...)``).
    """

    backend = [TransformBackends.TORCH, TransformBackends.NUMPY]

    def __init__(self, keys: KeysCollection = ("image", "label"), bank=None, config=None, type_key: Hashable = None,
                 prob: float = 0.5, max_value: float = 1.0, allow_missing_keys: bool = False) -> None:
        MapTransform.__init__(self, keys, allow_missing_keys)
        RandomizableTransform.__init__(self, check_probability("prob", prob))
        if len(self.keys) != 2:
            raise ConfigError(f"InsMixd keys must be (image_key, label_key), got {self.keys!r}")
        self.config = check_config(config)
        self.bank = check_bank(bank, self.config)
        if type_key is not None:
            if type_key in self.keys:
                raise ConfigError(f"type_key {type_key!r} must differ from keys {self.keys!r}")
            require_types(f"InsMixd(type_key={type_key!r})")
        self.type_key = type_key
        self.max_value = check_max_value(max_value)
        self._seed = 0
        self._context = f"InsMixd(keys={self.keys!r})"
        self._wanted = (*self.keys, *(() if type_key is None else (type_key,)))
        self._wanted_set = frozenset(self._wanted)
        self._names = (repr(self.keys[0]), repr(self.keys[1]), repr(type_key))

    @property
    def insmix_seed(self) -> int:
        """The InsMix seed drawn for the last sample InsMix was applied to: that sample's result
        is ``insmix(image, labels, bank, config, seed=insmix_seed)`` on its channel-last arrays."""
        return self._seed

    def set_random_state(self, seed: int | None = None, state: np.random.RandomState | None = None) -> InsMixd:
        super().set_random_state(seed, state)
        return self

    def randomize(self, data=None) -> None:
        """The ``prob`` coin (``RandomizableTransform.randomize``'s draw: ``R.rand() < prob``),
        then, when applied, the InsMix seed ``floor(R.rand() · 2**53)`` — both from ``self.R``.
        (Earlier development versions drew a 64-bit ``R.randint`` seed, three times the cost;
        seeded pipelines give other results than they did.)"""
        R = self.R
        self._do_transform = R.random_sample() < self.prob  # random_sample() is rand(): the same draws
        if self._do_transform:
            self._seed = int(R.random_sample() * _SEED_SCALE)

    def _refuse(self, image, labels, types) -> None:
        """Raise for the map of this sample that is not what InsMixd takes, saying how to fix it."""
        image_key, label_key = self.keys
        if image.ndim != 3 or image.shape[0] != 3:
            hint = ""
            if image.ndim == 3 and image.shape[-1] == 3:
                hint = f" — it looks channel-last (H×W×3): add EnsureChannelFirstd(keys={image_key!r}) before InsMixd"
            raise InputError(f"InsMixd: {image_key!r} must be a channel-first 3×H×W RGB image, got shape "
                             f"{tuple(image.shape)}{hint}")
        _check_plane(labels, label_key, image)
        if types is not None:
            _check_plane(types, self.type_key, image)

    def __call__(self, data: Mapping[Hashable, object]) -> dict[Hashable, object]:
        d = dict(data)
        if not d.keys() >= self._wanted_set:
            if self.allow_missing_keys:
                return d
            missing = next(k for k in self._wanted if k not in d)
            raise InputError(f"InsMixd: key {missing!r} is missing from the data (keys: {sorted(map(str, d))}); "
                             f"pass allow_missing_keys=True to skip such samples")
        self.randomize(None)
        if not self._do_transform:
            return d
        image_key, label_key = self.keys
        src, label_src = d[image_key], d[label_key]
        # a MetaTensor routes every attribute read and method call through its __torch_function__;
        # with it off (one context for all the maps), the reads below are torch's own
        with _plain_tensors():
            image = _data(src, image_key)
            cuda = isinstance(image, torch.Tensor)
            labels = _data(label_src, label_key, cuda)
            types = None if self.type_key is None else _data(d[self.type_key], self.type_key, cuda)
            # the layouts and dtypes in one test on the way of every sample; which map is wrong, and
            # how, only when it fails
            if not (image.ndim == 3 and image.shape[0] == 3 and _is_plane(labels, image)
                    and (types is None or _is_plane(types, image))):
                self._refuse(image, labels, types)
        try:
            if cuda:  # on its device: insmix_batch(device=...) on a batch of one
                img, lab, typ = insmix_nchw(image.unsqueeze(0), labels, self.bank, self.config, seed=self._seed,
                                            indices=(0,), types=types, max_value=self.max_value, names=self._names)
                d[image_key] = _like(img[0].contiguous(), src)
                d[label_key] = _like(lab, label_src)
            else:  # the channel-first array seen channel-last: the result keeps its memory layout
                hook = None
                if isinstance(src, torch.Tensor) or isinstance(label_src, torch.Tensor):
                    def wrap(img, lab):
                        # the output tensors, made before InsMix runs, next to the reads above (made after its
                        # kernel, which evicts the CPU's caches, a MetaTensor costs ≈ 10 µs more)
                        d[image_key] = _like(img.transpose(2, 0, 1), src)
                        d[label_key] = _like(lab[None], label_src)
                    hook = wrap

                img, lab, typ = insmix_hwc(image.transpose(1, 2, 0), labels[0], self.bank, self.config,
                                           seed=self._seed, types=None if types is None else types[0],
                                           max_value=self.max_value, names=self._names, on_outputs=hook)
                if hook is None:  # numpy in, numpy out
                    d[image_key], d[label_key] = img.transpose(2, 0, 1), lab[None]
                typ = None if typ is None else typ[None]
        except InsMixError as e:
            raise in_context(e, self._context) from e
        if types is not None:
            d[self.type_key] = _like(typ, d[self.type_key])
        return d


def _like(x, dst):
    """The output ``x`` (numpy, or a tensor on ``dst``'s device) as the kind ``dst`` is: numpy,
    ``torch.Tensor``, or a ``MetaTensor`` carrying a copy of ``dst``'s metadata (what MONAI's own
    transforms give their outputs — ``copy_meta_from``, see :func:`_meta_copy` — so a later
    transform appending to ``applied_operations`` leaves the input's alone) — a plain tensor when
    MONAI's metadata tracking is off. Dtypes are already the output's."""
    if isinstance(x, np.ndarray):
        if isinstance(dst, np.ndarray):
            return x
        x = torch.from_numpy(x)
        if isinstance(dst, MetaTensor) and get_track_meta():
            if _RECLASS:  # the tensor was made here, so no one else sees its class change
                x.__class__ = MetaTensor
                x.__dict__ = _meta_copy(dst)
                return x
            return _with_meta(x, dst)
        return x
    if isinstance(dst, MetaTensor) and get_track_meta():
        return _with_meta(x, dst)
    return x


def _with_meta(x: torch.Tensor, dst: MetaTensor) -> MetaTensor:
    out = x.as_subclass(MetaTensor)
    out.__dict__.update(_meta_copy(dst))
    return out


#: Attribute values MONAI's ``MetaObj.copy_items`` returns as they are (``is_immutable``'s common
#: types), and those it copies with ``.copy()`` (a shallow copy, as MONAI does).
_AS_THEY_ARE = frozenset((type(None), bool, int, float, str))
_SHALLOW = frozenset((dict, list))


def _meta_copy(src: MetaTensor) -> dict:
    """The attributes ``out.copy_meta_from(src)`` (``copy_attr=True``, every attribute) gives a
    new ``out``: each attribute of ``src`` — the meta dict (``affine`` in it),
    ``applied_operations``, ``pending_operations``, ``is_batch``… — copied as MONAI's
    ``MetaObj.copy_items`` copies it, the common types here and any other value by
    ``copy_items`` itself. One dict in one loop: MONAI's method makes two calls a value, which
    costs ≈ 5 µs a map right after a kernel has evicted the interpreter's caches."""
    attrs = src.__dict__.copy()
    for name, value in attrs.items():
        kind = type(value)
        if kind in _SHALLOW:
            attrs[name] = value.copy()
        elif kind not in _AS_THEY_ARE:
            attrs[name] = MetaObj.copy_items(value)
    return attrs


def _can_reclass() -> bool:
    """Whether a plain tensor's class can be set to ``MetaTensor`` (CPython allows it when the
    two classes lay their objects out alike, which torch's Python tensor subclasses do). That
    gives a new CPU output the MetaTensor type without ``as_subclass``'s second tensor object
    (an alias of the first, freed with it): ≈ 1 µs less a map, ≈ 4 µs right after a kernel.
    MetaTensor defines no ``__torch_dispatch__``, so nothing torch set up for the object depends
    on the class. Checked once, on a probe; ``as_subclass`` otherwise."""
    try:
        t = torch.zeros(1)
        t.__class__ = MetaTensor
        t.__dict__ = _meta_copy(MetaTensor(torch.zeros(1)))
        return type(t + 1) is MetaTensor and isinstance(t.meta, dict)
    except (TypeError, AttributeError, RuntimeError):  # pragma: no cover - a torch or MONAI that refuses it
        return False


_RECLASS = (not any("__torch_dispatch__" in vars(c) for c in MetaTensor.__mro__[:MetaTensor.__mro__.index(torch.Tensor)])
            and _can_reclass())


def _data(x, key, cuda: bool = False):
    """The array behind a MetaTensor / tensor / numpy value, without a copy: numpy for data on
    the CPU, the plain tensor on a GPU (``cuda``: the image is there, so a CPU map stays a
    tensor and is refused by the device check). Called with ``__torch_function__`` of tensor
    subclasses off (``with _plain_tensors():``), so ``.numpy()`` is torch's own (no plain-tensor
    copy of a MetaTensor object needed for the CPU path)."""
    if isinstance(x, torch.Tensor):
        if not cuda:
            try:  # a CPU tensor without grad, the common case: no attribute read before it
                return x.numpy()
            except (RuntimeError, TypeError):  # it needs grad (RuntimeError) or is on a GPU (TypeError)
                pass
            if not x.is_cuda:
                return x.detach().numpy()
        return x.as_subclass(torch.Tensor) if isinstance(x, MetaTensor) else x
    if isinstance(x, np.ndarray):
        return torch.from_numpy(np.ascontiguousarray(x)) if cuda else x
    raise InputTypeError(f"InsMixd: {key!r} must be a MetaTensor, torch.Tensor or numpy array, got {type(x).__name__}")


def _is_plane(x, image) -> bool:
    """Whether ``x`` is a 1×H×W integer map for the 3×H×W ``image`` (numpy or torch)."""
    return x.shape == (1, *image.shape[1:]) and is_integer_dtype(x.dtype)  # (a torch.Size is a tuple)


def _check_plane(t, key, image) -> None:
    """Raise for a label/type map that is not a 1×H×W integer map for ``image``."""
    if tuple(t.shape) != (1, *image.shape[1:]):
        _refuse_shape(t, key, image)
    if not is_integer_dtype(t.dtype):
        raise InputError(f"InsMixd: {key!r} must hold integer ids (0 = background), got {t.dtype}. LoadImaged reads "
                         f"labels as float32 unless told otherwise: LoadImaged(..., dtype=None) or "
                         f"CastToTyped(keys={key!r}, dtype=np.int32) before InsMixd")


def _refuse_shape(t, key, image) -> None:
    """Raise for a map that is not 1×H×W like the image, saying what it looks like."""
    h, w = image.shape[1:]
    if t.ndim != 3 or t.shape[0] != 1:
        if t.ndim == 2:
            hint = f" — add a channel: EnsureChannelFirstd(keys={key!r}, channel_dim='no_channel')"
        elif t.ndim == 3 and t.shape[-1] == 1:
            hint = f" — it looks channel-last (H×W×1): add EnsureChannelFirstd(keys={key!r}) before InsMixd"
        else:
            hint = ""
        raise InputError(f"InsMixd: {key!r} must be channel-first 1×H×W = 1×{h}×{w}, got shape {tuple(t.shape)}{hint}")
    raise InputError(f"InsMixd: {key!r} is 1×{t.shape[1]}×{t.shape[2]} but the image is 3×{h}×{w}")
