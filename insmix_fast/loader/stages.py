"""The per-sample program every backend runs, stage by stage.

``read + crop → traditional augmentation → InsMix → smooth-GAN blend → normalise``

A *key row* is ``(epoch, position, source index)`` (int64): the position is the
sample's global slot in the epoch (see :mod:`.state`). Random draws use counter-based
Philox:

* per epoch, one 64-bit seed per stage — ``stage_seed(seed, epoch, stage)`` is
  Philox4x32-10 (:func:`insmix_fast.kernels.rng.philox4x32_impl`) keyed by ``seed``
  with the counter ``(epoch, stage)``;
* per sample, that seed with ``index = position`` — the crop offset and the InsMix
  coin by ``make_rng(seed_stage, position)`` (drawn through :func:`keyed_rng`: the same
  draws, cheaper), the traditional augmentation by
  :meth:`~insmix_fast.augment.TraditionalAugment.draw` and InsMix itself by
  :func:`insmix_fast.insmix_batch` with ``indices = positions``.

The host side of a batch (:meth:`SampleProgram.prepare`) is what a reader does: read,
crop, two statistics per crop (luminance sum, largest id) and the augmentation's
parameter rows. The augmentation itself then runs wherever the backend wants it: the
Numba kernels on the CPU (:meth:`SampleProgram.augment_host`), the same kernels built
for CUDA (:mod:`.cuda_augment`), or DALI's operators (:mod:`.pipeline`).

Nothing here reads a clock or DALI's internal RNG, so any backend, worker count and
rank draws the same samples.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

import numpy as np
import torch
from numba import njit

from ..augment import N_PARAMS, P_BLUR_R, P_MAXID, TraditionalAugment, augment_batch_kernel, crop_stats
from ..baselines import keyed_rng
from ..core import insmix_batch, insmix_batch_into
from ..classes import as_types_map, check_types
from ..errors import InputError, LoaderTimeoutError
from ..kernels.rng import philox4x32_impl
from ..validation import check_image, check_labels

__all__ = ["SampleProgram", "CropBatch", "types_of", "types_torch", "run_with_timeout", "stage_seed", "IMAGENET_MEAN", "IMAGENET_STD",
           "STAGE_CROP", "STAGE_AUGMENT", "STAGE_INSMIX", "ID_LIMIT"]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

STAGE_CROP = 0x43524F50     # "CROP"
STAGE_AUGMENT = 0x41554745  # "AUGE"
STAGE_INSMIX = 0x494E534D   # "INSM"
_COIN_STREAM = 7            # the per-sample "apply InsMix?" coin inside the InsMix stage seed

#: Ids of a crop (augmented or not) stay below this (the InsMix kernels' dense id tables, on the
#: GPU and in the CPU DALI operator); a crop whose ids would not is renumbered 1..k first (in
#: increasing id order).
ID_LIMIT = 1 << 16
_PASTE_HEADROOM = 1024


def stage_seed(seed: int, epoch: int, stage: int) -> int:
    """64-bit seed of one stage in one epoch: Philox4x32-10(key=seed, ctr=(epoch, stage))."""
    s, e = int(seed), int(epoch)
    r0, r1, _, _ = philox4x32_impl(e & 0xFFFFFFFF, e >> 32, 0, stage, s & 0xFFFFFFFF, s >> 32)
    return int(r0) | (int(r1) << 32)


class SampleProgram:
    """The stages, bound to a source and the loader's settings (picklable: it travels
    to DataLoader worker processes)."""

    def __init__(self, source, *, crop: int, seed: int, augment: TraditionalAugment | None, bank, config,
                 insmix_p: float, mean=IMAGENET_MEAN, std=IMAGENET_STD):
        self.source = source
        self.crop = int(crop)
        self.seed = int(seed)
        self.augment = augment
        self.bank = bank
        self.config = config
        self.insmix_p = float(insmix_p)
        self.mean = tuple(float(m) for m in mean)
        self.std = tuple(float(s) for s in std)
        self._source_epoch = None
        #: True / False once the first sample was read: does the source yield (image, labels, types)?
        self.typed: bool | None = None
        #: seconds a batch's source reads may take in this process (None: no limit); set by the backend
        self.read_timeout: float | None = None
        self._seeds: dict[int, tuple[int, int, int]] = {}
        self._norm: dict = {}
        self.id_factor = augment.id_factor((self.crop, self.crop)) if augment is not None else 1

    def __getstate__(self):  # device tensors stay in the process that made them
        state = dict(self.__dict__)
        state["_norm"] = {}
        return state

    # ------------------------------------------------------------------ keys
    def seeds(self, epoch: int) -> tuple[int, int, int]:
        """(crop, augment, insmix) seeds of ``epoch``."""
        if epoch not in self._seeds:
            self._seeds[epoch] = tuple(stage_seed(self.seed, epoch, s) for s in (STAGE_CROP, STAGE_AUGMENT, STAGE_INSMIX))
        return self._seeds[epoch]

    @staticmethod
    def make_keys(epoch: int, positions: np.ndarray, indices: np.ndarray) -> np.ndarray:
        keys = np.empty((len(positions), 3), np.int64)
        keys[:, 0], keys[:, 1], keys[:, 2] = epoch, positions, indices
        return keys

    @staticmethod
    def _epoch_of(keys: np.ndarray) -> int:
        epochs = np.unique(keys[:, 0])
        if len(epochs) != 1:
            raise InputError(f"a batch must hold samples of one epoch, got epochs {epochs.tolist()}")
        return int(epochs[0])

    def set_source_epoch(self, epoch: int) -> None:
        """Call ``source.set_epoch(epoch)`` once per epoch (in whichever process reads)."""
        if self._source_epoch != epoch and hasattr(self.source, "set_epoch"):
            self.source.set_epoch(epoch)
        self._source_epoch = epoch

    # ------------------------------------------------------------------ read + crop (the host's part)
    def read(self, epoch: int, position: int, index: int) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """Source sample ``index``, cut to a ``crop``×``crop`` window at a keyed offset:
        ``(image, labels, types)`` views (``types`` None for an untyped source). The first
        sample read decides whether the source is typed; every later one must agree."""
        try:
            sample = self.source[int(index)]
        except (IndexError, KeyError) as e:
            raise InputError(f"source[{index}] failed ({type(e).__name__}: {e}); len(source) = {len(self.source)}") from e
        if not isinstance(sample, (tuple, list)) or len(sample) < 2:
            raise InputError(f"source[{index}] must return (image H×W×3 uint8, labels H×W int[, types H×W int]), "
                             f"got {type(sample).__name__}")
        image = check_image(sample[0], f"source[{index}] image")
        labels = check_labels(sample[1], image.shape[:2], f"source[{index}] labels", scan=False, convert=False)
        types = sample[2] if len(sample) > 2 else None
        if self.typed is None:
            self.typed = types is not None
        elif self.typed != (types is not None):
            raise InputError(f"source[{index}] returned {'a type map' if types is not None else 'no type map'} but "
                             f"the source's first sample {'did not' if types is not None else 'did'}: a source is "
                             "typed (image, labels, types) or not for every sample")
        h, w = labels.shape
        c = self.crop
        if h < c or w < c:
            raise InputError(f"source[{index}] is {h}×{w}, smaller than crop={c}; use a smaller crop")
        if types is not None:
            types = as_types_map(types, (h, w), name=f"source[{index}] types")
        rng = keyed_rng(self.seeds(epoch)[0], int(position))
        y0 = int(rng.integers(0, h - c + 1))
        x0 = int(rng.integers(0, w - c + 1))
        win = (slice(y0, y0 + c), slice(x0, x0 + c))
        # only the window's ids are checked (a pass over the whole map would cost more than the crop)
        labels = check_labels(labels[win], name=f"source[{index}] labels (crop at y={y0}, x={x0})", convert=False)
        return image[win], labels.astype(np.int32, copy=False), (None if types is None else types[win])

    def read_batch(self, keys: np.ndarray, stats: bool = False) -> CropBatch:
        """The batch's crops (:class:`CropBatch`; with ``stats``, each crop's luminance sum and
        largest id, :func:`~insmix_fast.augment.crop_stats`). With ``read_timeout`` set, the
        source is read in a helper thread and a read that takes longer raises
        :class:`~insmix_fast.errors.LoaderTimeoutError` naming the batch's samples."""
        epoch = self._epoch_of(keys)
        self.set_source_epoch(epoch)
        if self.typed is None:  # the first sample decides (the loader reads it when it is built)
            self.read(epoch, int(keys[0, 1]), int(keys[0, 2]))
        n, c = len(keys), self.crop
        out = CropBatch(np.empty((n, c, c, 3), np.uint8), np.empty((n, c, c), np.int32),
                        np.empty((n, c, c), np.int32) if self.typed else None,
                        np.empty(n, np.int64) if stats else None, np.empty(n, np.int64) if stats else None)
        if self.read_timeout is None:
            self._read_into(out, keys, epoch)
        else:
            run_with_timeout(lambda: self._read_into(out, keys, epoch), self.read_timeout,
                             lambda: f"reading source samples {keys[:, 2].tolist()} (epoch {epoch})")
        return out

    def _read_into(self, out: CropBatch, keys: np.ndarray, epoch: int) -> None:
        for k, (_, p, i) in enumerate(keys):
            image, labels, types = self.read(epoch, int(p), int(i))
            out.images[k], out.labels[k] = image, labels  # strided copies at memcpy speed
            if out.types is not None:
                out.types[k] = types
            if out.luma is not None:
                out.luma[k], out.top[k] = crop_stats(out.images[k], out.labels[k])  # contiguous: one vectorised pass

    def prepare(self, keys: np.ndarray, narrow: bool = True) -> dict:
        """Everything the device needs for one batch, as numpy arrays: ``images`` (N×c×c×3 uint8),
        ``labels`` (int32; with ``narrow``, int16 when every id fits: less to copy between
        processes or to a device), ``keys``, ``coin`` (who gets InsMix) and,
        with augmentation, ``params`` (N×N_PARAMS int64) and ``taps`` (N×T int64). A typed source
        adds ``classes`` (N×L int32: the class of each id of the crop) and ``maxid`` (N int64):
        the type map of the augmented labels is :func:`types_of` of them."""
        crops = self.read_batch(keys, stats=True)
        labels = crops.labels
        out = {"images": crops.images, "keys": np.ascontiguousarray(keys, np.int64), "coin": self.insmix_mask(keys)}
        if self.augment is not None:
            out["params"], out["taps"] = self._params(labels, crops.luma, crops.top, keys)
            maxid = out["params"][:, P_MAXID].copy()
        else:  # the InsMix kernels' dense id tables hold ID_LIMIT ids: renumber a crop beyond them
            maxid = crops.top
            for k in np.flatnonzero(maxid + _PASTE_HEADROOM > ID_LIMIT):
                maxid[k] = _renumber(labels[k])
        top = int(maxid.max()) if len(keys) else 0
        if crops.types is not None:
            out["classes"] = self._classes(labels, crops.types, maxid, keys)
            out["maxid"] = maxid
        out["labels"] = labels.astype(np.int16) if narrow and top <= np.iinfo(np.int16).max else labels
        return out

    def _params(self, labels: np.ndarray, lumas: np.ndarray, tops: np.ndarray, keys: np.ndarray):
        aug = self.augment
        seed = self.seeds(self._epoch_of(keys))[1]
        n, c = len(keys), self.crop
        rows = np.empty((n, N_PARAMS), np.int64)
        taps = np.zeros((n, 2 * aug.max_blur_radius() + 1), np.int64)
        for k in range(n):
            luma, top = int(lumas[k]), int(tops[k])
            if top * self.id_factor + _PASTE_HEADROOM > ID_LIMIT:
                top = _renumber(labels[k])
            rows[k], taps[k] = aug.params(aug.draw((c, c), seed, int(keys[k, 1])), luma, top, (c, c))
        return rows, taps

    @staticmethod
    def _classes(labels: np.ndarray, types: np.ndarray, maxid: np.ndarray, keys: np.ndarray) -> np.ndarray:
        """Per crop, the class of each id (``N × (max id + 1)`` int32, row ``k`` checked against
        crop ``k``'s labels: one class per instance, 0 exactly on background)."""
        n = len(keys)
        classes = np.zeros((n, max(int(maxid.max()) if n else 0, 1) + 1), np.int32)
        for k in range(n):
            _, lut = check_types(types[k], labels[k], max_id=int(maxid[k]), name=f"source[{int(keys[k, 2])}] types")
            classes[k, :lut.shape[0]] = lut
        return classes

    # ------------------------------------------------------------------ augmentation
    def augment_host(self, batch: dict, out: tuple[np.ndarray, np.ndarray] | None = None
                     ) -> tuple[np.ndarray, np.ndarray]:
        """The traditional augmentation on the CPU (Numba kernels): uint8 images, int32 labels
        (written into ``out`` = (images, labels), C-contiguous, when given)."""
        images, labels = batch["images"], batch["labels"]
        if self.augment is None:
            if out is None:
                return images, labels.astype(np.int32, copy=False)
            np.copyto(out[0], images)
            np.copyto(out[1], labels)
            return out
        out_i, out_l = out if out is not None else (np.empty_like(images), np.empty(labels.shape, np.int32))
        augment_batch_kernel(images, labels, batch["params"], batch["taps"], out_i, out_l)
        return out_i, out_l

    def augment_device(self, batch: dict, device: torch.device, stream=None) -> tuple[torch.Tensor, torch.Tensor]:
        """The traditional augmentation where the tensors of ``batch`` live: the CUDA build of the
        kernels on ``stream`` (no synchronisation), or the CPU kernels for CPU tensors."""
        images, labels = batch["images"], batch["labels"]
        if self.augment is None:
            return images, labels.to(torch.int32)
        if device.type != "cuda":
            out = self.augment_host({k: (v.numpy() if isinstance(v, torch.Tensor) else v) for k, v in batch.items()})
            return torch.from_numpy(out[0]), torch.from_numpy(out[1])
        from . import cuda_augment as ca

        params, taps = batch["params"], batch["taps"]  # host (small): read without a device sync
        n, c = labels.shape[0], self.crop
        width = int(params[:, P_MAXID].max().item()) * self.id_factor + 1 if n else 1
        blur = bool((params[:, P_BLUR_R] > 0).any())
        out_i = torch.empty_like(images)
        out_l = torch.empty(labels.shape, dtype=torch.int32, device=device)
        counts = torch.zeros((n, width), dtype=torch.int32, device=device)
        tmp = torch.empty((n, c, c, 3) if blur else (1, 1, 1, 3), dtype=torch.int32, device=device)
        dev_params = params.to(device, non_blocking=True)
        dev_taps = taps.to(device, non_blocking=True)
        ns = ca.numba_stream(stream if stream is not None else torch.cuda.current_stream(device))
        arrays = [ca.as_device(t) for t in (images, labels, dev_params, dev_taps, out_i, out_l, counts, tmp)]
        ca.launch_augment(*arrays, blur=blur, clean=True, stream=ns)
        return out_i, out_l

    # ------------------------------------------------------------------ types
    @staticmethod
    def types_host(labels: np.ndarray, classes: np.ndarray, maxid: np.ndarray) -> np.ndarray:
        """The type map of (augmented) ``labels`` (N×H×W int32) from :meth:`prepare`'s ``classes``
        and ``maxid`` (numpy, one Numba pass; see :func:`types_of`)."""
        out = np.empty(labels.shape, np.int32)
        _types_kernel(labels, classes, np.ascontiguousarray(maxid, np.int64), out)
        return out

    @staticmethod
    def types_device(labels: torch.Tensor, classes: torch.Tensor, maxid: torch.Tensor) -> torch.Tensor:
        """:meth:`types_host` for tensors where ``labels`` lives (no synchronisation on CUDA)."""
        if labels.device.type == "cpu":
            return torch.from_numpy(SampleProgram.types_host(labels.numpy(), classes.numpy(), maxid.numpy()))
        return types_torch(labels, classes, maxid)

    # ------------------------------------------------------------------ InsMix
    def insmix_mask(self, keys: np.ndarray) -> np.ndarray:
        """Which samples of the batch get InsMix (a keyed coin with probability ``insmix_p``)."""
        if self.bank is None or self.insmix_p <= 0.0:
            return np.zeros(len(keys), bool)
        if self.insmix_p >= 1.0:
            return np.ones(len(keys), bool)
        s = self.seeds(self._epoch_of(keys))[2]
        return np.array([keyed_rng(s, int(p), _COIN_STREAM).random() < self.insmix_p for p in keys[:, 1]], bool)

    def insmix_batch(self, images: np.ndarray, labels: np.ndarray, keys: np.ndarray, device: str = "cpu",
                     types: np.ndarray | None = None, masks: bool = True, in_place: bool = False,
                     long_labels: bool = False):
        """InsMix on the selected samples; returns images, labels, types (None when untyped),
        paste_mask, original_mask (numpy; both None unless ``masks``). ``in_place`` (CPU): the
        caller hands over ``images`` (C-contiguous), which then hold the output when every sample
        is selected (no copy of the batch). ``long_labels``: the labels come back int64 (what the
        loader hands out; the kernel writes them so while each tile is in cache)."""
        sel = self.insmix_mask(keys)
        paste = np.zeros(labels.shape, bool) if masks else None
        wide = None
        if sel.any():
            s = self.seeds(self._epoch_of(keys))[2]
            whole = bool(sel.all())  # the usual case: no gather / scatter copies
            pick = (lambda a: a) if whole else (lambda a: a[sel])
            kw = dict(seed=s, indices=keys[sel, 1], types=None if types is None else pick(types))
            cfg = self.config
            if whole and in_place and device == "cpu" and (cfg is None or cfg.template_source != "self"):
                wide = np.empty(labels.shape, np.int64) if long_labels else None
                r = insmix_batch_into(images, labels, self.bank, self.config, out_labels=wide, **kw)
            else:
                r = insmix_batch(pick(images), pick(labels), self.bank, self.config, device=device, **kw)
            if whole:
                images, labels, paste = _to_numpy(r.images), _to_numpy(r.labels), _to_numpy(r.paste_masks)
                types = None if types is None else _to_numpy(r.types)
            else:
                images, labels = images.copy(), labels.copy()
                images[sel], labels[sel] = _to_numpy(r.images), _to_numpy(r.labels)
                if masks:
                    paste[sel] = _to_numpy(r.paste_masks)
                if types is not None:
                    types = types.copy()
                    types[sel] = _to_numpy(r.types)
        if long_labels and labels.dtype != np.int64:
            labels = labels.astype(np.int64)
        if not masks:
            return images, labels, types, None, None
        original = (labels > 0) & ~paste
        return images, labels, types, paste, original

    def insmix_device(self, images: torch.Tensor, labels: torch.Tensor, keys: np.ndarray, stream=None,
                      types: torch.Tensor | None = None):
        """InsMix on a batch of torch tensors (N×H×W×3 uint8, N×H×W int) where they live; on CUDA
        ``insmix_batch(device="cuda", stream=stream)`` keeps it there and does not synchronise.
        Returns images, labels (int32), types (int32; None when untyped), paste_mask, original_mask
        on the same device."""
        dev = images.device
        sel = self.insmix_mask(keys)
        paste = torch.zeros(labels.shape, dtype=torch.bool, device=dev)
        labels = labels.to(torch.int32)
        if sel.any():
            s = self.seeds(self._epoch_of(keys))[2]
            whole = bool(sel.all())
            idx = None if whole else torch.from_numpy(np.flatnonzero(sel)).to(dev)
            pick = (lambda t: t) if whole else (lambda t: t.index_select(0, idx).contiguous())
            kw = {"device": str(dev)}
            if dev.type == "cuda":
                kw["stream"] = stream if stream is not None else torch.cuda.current_stream(dev)
            if types is not None:
                kw["types"] = pick(types)
            r = insmix_batch(pick(images), pick(labels), self.bank, self.config, seed=s, indices=keys[sel, 1], **kw)
            r_im = torch.as_tensor(r.images, device=dev)
            r_lb = torch.as_tensor(r.labels, device=dev).to(torch.int32)
            r_pm = torch.as_tensor(r.paste_masks, device=dev).bool()
            r_ty = None if types is None else torch.as_tensor(r.types, device=dev).to(torch.int32)
            if whole:
                images, labels, paste, types = r_im, r_lb, r_pm, r_ty
            else:
                images, labels = images.clone(), labels.clone()
                images[idx], labels[idx], paste[idx] = r_im, r_lb, r_pm
                if types is not None:
                    types = types.clone()
                    types[idx] = r_ty
        original = (labels > 0) & ~paste
        return images, labels, types, paste, original

    # ------------------------------------------------------------------ worker entry
    def cpu_batch(self, keys: np.ndarray, insmix: bool = True, masks: bool = True, out: dict | None = None) -> dict:
        """Read, crop, augment and (if ``insmix``) InsMix one batch on the CPU. ``masks``: also
        return the paste mask (the blender needs it). Labels (and types) come back as int16 when
        every id fits (less to copy between processes). ``out``: C-contiguous arrays of the
        batch's shape (``images`` uint8, ``labels`` and ``types`` int32, ``paste`` bool — the
        ones this batch has) the results are written into instead; then only ``keys`` and
        ``coin`` are returned."""
        batch = self.prepare(keys, narrow=False)  # the labels stay in this process until the end
        images, labels = self.augment_host(batch, None if out is None else (out["images"], out["labels"]))
        types = self.types_host(labels, batch["classes"], batch["maxid"]) if "classes" in batch else None
        paste = None
        if insmix:
            images, labels, types, paste, _ = self.insmix_batch(images, labels, keys, types=types, masks=masks,
                                                                in_place=True)  # the batch is this call's own copy
        if out is not None:
            for name, a in (("images", images), ("labels", labels), ("types", types), ("paste", paste)):
                if a is not None and a is not out[name]:
                    np.copyto(out[name], a)
            return {"keys": keys, "coin": batch["coin"]}
        return {"images": images, "labels": _narrow(labels), "types": None if types is None else _narrow(types),
                "paste": paste if masks else None, "keys": keys, "coin": batch["coin"]}

    # ------------------------------------------------------------------ tensors
    def normalisation(self) -> tuple[list[float], list[float]]:
        """``(255·mean, 1/(255·std))`` per channel: what :meth:`normalise` subtracts and multiplies by."""
        return [255.0 * m for m in self.mean], [1.0 / (255.0 * s) for s in self.std]

    def normalise(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 N×H×W×3 → float32 N×3×H×W, ``(x − 255·mean) · 1/(255·std)`` per channel
        (the arithmetic of DALI's ``crop_mirror_normalize``). One Numba pass on the CPU."""
        dev = images.device
        mean, inv = self.normalisation()
        if dev.type == "cpu":  # numpy's allocation: large arrays get transparent huge pages (torch's do not)
            out = np.empty((images.shape[0], 3, images.shape[1], images.shape[2]), np.float32)
            _normalise_kernel(np.ascontiguousarray(images.numpy()), np.array(mean, np.float32), np.array(inv, np.float32),
                              out)
            return torch.from_numpy(out)
        if dev not in self._norm:  # made once per device: no host→device copy per batch
            self._norm[dev] = (torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1).to(dev),
                               torch.tensor(inv, dtype=torch.float32).view(1, 3, 1, 1).to(dev))
        m, k = self._norm[dev]
        return (images.permute(0, 3, 1, 2).float() - m).mul_(k).contiguous()

    @staticmethod
    def labels_out(labels: torch.Tensor) -> torch.Tensor:
        """Labels (or types) as the loader hands them out: int64 (one Numba pass on the CPU)."""
        if labels.device.type == "cpu" and labels.dtype in (torch.int16, torch.int32):
            out = np.empty(tuple(labels.shape), np.int64)
            _widen_kernel(labels.numpy().reshape(-1), out.reshape(-1))
            return torch.from_numpy(out)
        return labels.long()


@njit(cache=True, nogil=True)
def _normalise_kernel(images, mean, inv, out):
    """:func:`normalise_into` over a batch."""
    mk = np.empty(6, np.float32)
    mk[:3] = mean
    mk[3:] = inv
    for b in range(images.shape[0]):
        normalise_into(images[b], mk, out[b])


@njit(cache=True, nogil=True)
def normalise_into(image, mk, out):
    """One H×W×3 uint8 image (C-contiguous) → ``out`` 3×H×W float32,
    ``(x − mk[c]) · mk[3 + c]`` per channel ``c`` (float32 arithmetic). Pixel by pixel: one read
    of the image, three planes written (twice as fast as a plane at a time)."""
    h, w = image.shape[0], image.shape[1]
    m0, m1, m2 = mk[0], mk[1], mk[2]
    k0, k1, k2 = mk[3], mk[4], mk[5]
    src = image.reshape(h * w * 3)
    o0 = out[0].reshape(h * w)
    o1 = out[1].reshape(h * w)
    o2 = out[2].reshape(h * w)
    for i in range(h * w):
        o0[i] = (np.float32(src[3 * i]) - m0) * k0
        o1[i] = (np.float32(src[3 * i + 1]) - m1) * k1
        o2[i] = (np.float32(src[3 * i + 2]) - m2) * k2


@njit(cache=True, nogil=True)
def _widen_kernel(src, dst):
    for i in range(src.shape[0]):
        dst[i] = src[i]


@njit(cache=True, nogil=True, inline="always")
def crop_class(classes, v, maxid):
    """The class of id ``v > 0`` of an augmented crop: ``classes[(v − 1) mod maxid + 1]`` (the
    augmentation codes a mirrored copy of ``u`` as ``u + maxid·code``; see :func:`types_of`)."""
    return classes[(v - 1) % max(maxid, 1) + 1]


@njit(cache=True, nogil=True)
def _types_kernel(labels, classes, maxid, out):
    n, h, w = labels.shape
    for b in range(n):
        for y in range(h):
            for x in range(w):
                v = labels[b, y, x]
                out[b, y, x] = crop_class(classes[b], v, maxid[b]) if v > 0 else 0


def types_of(labels: np.ndarray, classes: np.ndarray, maxid: np.ndarray) -> np.ndarray:
    """The type map of augmented labels: id ``v > 0`` is instance ``(v − 1) mod M + 1`` of the
    crop (``M = maxid``; the augmentation codes a mirrored copy of ``u`` as ``u + M·code``, so
    copies keep their class) and has that instance's class ``classes[(v − 1) mod M + 1]``; an id
    the area filter removed is background, class 0. Exact for labels warped by any of the
    implementations (CPU, CUDA, DALI) and for unwarped crops."""
    return SampleProgram.types_host(labels, classes, maxid)


def types_torch(labels: torch.Tensor, classes: torch.Tensor, maxid: torch.Tensor) -> torch.Tensor:
    """:func:`types_of` in torch operations on ``labels``' device (the CUDA path; no host
    synchronisation): int64 N×H×W."""
    n = labels.shape[0]
    m = maxid.to(labels.device, non_blocking=True).clamp(min=1).view(n, 1, 1)
    lab = labels.long()
    idx = torch.where(lab > 0, torch.remainder(lab - 1, m) + 1, torch.zeros_like(lab))
    lut = classes.to(labels.device, non_blocking=True).long()
    return torch.gather(lut, 1, idx.view(n, -1)).view(labels.shape)


def _renumber(labels: np.ndarray) -> int:
    """Renumber a crop's ids 1..k in increasing id order, in place (the reader's own copy);
    returns k."""
    ids, inv = np.unique(labels, return_inverse=True)
    labels[...] = inv.reshape(labels.shape) + (0 if ids[0] == 0 else 1)
    return int(labels.max()) if labels.size else 0


def _narrow(a: np.ndarray) -> np.ndarray:
    """int16 when every value fits (less to copy between processes), else as it is."""
    return a.astype(np.int16) if a.size and int(a.max()) <= np.iinfo(np.int16).max else a


def run_with_timeout(fn, timeout: float, what):
    """``fn()`` in a daemon thread, waited for at most ``timeout`` seconds: its exception is
    re-raised; past the timeout :class:`LoaderTimeoutError` says ``what()`` was running (the
    thread, stuck in user code, cannot be stopped; it ends with the process)."""
    box = {}

    def target():
        try:
            fn()
        except BaseException as e:  # noqa: BLE001 - handed to the caller
            box["error"] = e

    t = threading.Thread(target=target, name="insmix-loader-read", daemon=True)
    t.start()
    t.join(timeout)
    if t.is_alive():
        raise LoaderTimeoutError(f"{what()} took more than {timeout:g} s (InsMixLoader timeout={timeout:g}); "
                                 "the source's __getitem__ seems to block")
    if "error" in box:
        raise box["error"]


@dataclass
class CropBatch:
    """One batch of crops as read from the source: ``images`` N×c×c×3 uint8, ``labels`` N×c×c
    int32, ``types`` N×c×c int32 (None for an untyped source); ``luma`` and ``top`` (each crop's
    luminance sum and largest id) when asked for."""

    images: np.ndarray
    labels: np.ndarray
    types: np.ndarray | None
    luma: np.ndarray | None
    top: np.ndarray | None


def _to_numpy(x) -> np.ndarray:
    if isinstance(x, np.ndarray):
        return x
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().numpy()
    if hasattr(x, "get"):  # CuPy
        return x.get()
    return np.asarray(x)
