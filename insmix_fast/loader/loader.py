"""``InsMixLoader``: batches of augmented crops as torch tensors, on DALI or PyTorch."""

from __future__ import annotations

import logging
import os
import threading

import numpy as np
import torch

from ..augment import TraditionalAugment
from ..bank import InstanceBank
from ..config import InsMixConfig
from ..devices import torch_device
from ..errors import BankError, ConfigError, InputError, InputTypeError
from ..sharding import dist_info
from ..validation import check_bool, check_choice, check_int, check_number, check_seed
from .pipeline import DALI_OPS, DaliBackend, dali_available, dali_version
from .stages import IMAGENET_MEAN, IMAGENET_STD, SampleProgram
from .state import EpochPlan, LoaderState, epoch_plan, n_batches
from .torch_backend import TorchBackend

__all__ = ["InsMixLoader", "open_source"]

log = logging.getLogger("insmix_fast.loader")


def open_source(source):
    """A sample source: any object with ``__len__`` and ``__getitem__(i) -> (image, labels)``,
    or a string — ``"synthetic"``, ``"synthetic:SEED"``, a folder or a MoNuSeg folder."""
    if isinstance(source, (str, os.PathLike)):
        from ..data import open_dataset

        source = open_dataset(source)
    if not (hasattr(source, "__len__") and hasattr(source, "__getitem__")):
        raise InputTypeError(f"source must have __len__ and __getitem__(i) -> (image, labels), or be a path / "
                             f"'synthetic'; got {type(source).__name__}")
    n = len(source)
    if not isinstance(n, (int, np.integer)) or n < 1:
        raise InputError(f"source {type(source).__name__} is empty (len = {n!r})")
    if n > 2**32:
        raise InputError(f"source has {n} samples; at most 2**32 are supported (sample keys are 32-bit)")
    return source


def _augment(augment):
    if augment is True:
        return TraditionalAugment()
    if augment is False or augment is None:
        return None
    if isinstance(augment, TraditionalAugment):
        return augment
    if isinstance(augment, dict):
        return TraditionalAugment(**augment)
    raise ConfigError(f"augment must be True/False, a TraditionalAugment or a dict of its parameters, got {augment!r}")


def _blender(blender, device: torch.device):
    if blender is None:
        return None
    from ..gan import Blender

    if isinstance(blender, Blender):
        return blender
    if isinstance(blender, (str, os.PathLike)):
        return Blender.from_file(blender, device=device)
    raise ConfigError(f"blender must be None, a path to an exported blender or a Blender, got {type(blender).__name__}")


class InsMixLoader:
    """Training batches with InsMix: ``(images N×3×H×W float32 normalised, labels N×H×W int64)``
    torch tensors on ``device``.

    Per sample: read ``source[i]``, a random ``crop``×``crop`` window, the traditional
    augmentations (``augment``), InsMix from ``bank`` (with probability ``insmix``), the
    smooth-GAN ``blender`` on the pasted nuclei, normalisation with ``mean``/``std``.

    Args:
        source: object with ``__len__`` and ``__getitem__(i) -> (H×W×3 uint8, H×W int)``
            (``set_epoch(e)`` is called at each epoch start if it exists), or a string:
            ``"synthetic"``, a folder with ``images/``+``labels/``, a MoNuSeg folder.
        bank: :class:`~insmix_fast.InstanceBank`; ``None`` builds it from the source
            (progress bar on a terminal). Not needed when ``insmix=False``.
        batch_size, crop: batch size and crop side (pixels).
        device: ``"cpu"`` or ``"cuda"`` (``"cuda:1"``…), where the batches are made and land.
        backend: ``"auto"`` (DALI if installed, else PyTorch), ``"dali"`` or ``"torch"``.
        blender: ``None``, a path to an exported smooth-GAN, or a :class:`~insmix_fast.gan.Blender`.
        config: :class:`~insmix_fast.InsMixConfig` (SPEC defaults if ``None``).
        insmix: ``True``/``False`` or the probability in [0, 1] that a sample gets InsMix.
        augment: ``True`` (paper's traditional augmentation, defaults), ``False``, a
            :class:`~insmix_fast.augment.TraditionalAugment`, or a dict of its parameters.
        seed: every random choice derives from ``(seed, epoch, global position)``.
        shuffle, drop_last: as in ``DataLoader`` + ``DistributedSampler``.
        prefetch: batches prepared ahead (DataLoader ``prefetch_factor`` per worker /
            DALI ``prefetch_queue_depth``).
        num_workers: DataLoader worker processes (torch) / DALI CPU threads. Samples do
            not depend on it.
        rank, world_size: default from ``torch.distributed`` (or ``RANK``/``WORLD_SIZE``).
        mean, std: normalisation per RGB channel, for pixels in [0, 1] (ImageNet's).
        mp_context: start method of the torch workers (default: ``fork`` unless Numba's
            OpenMP pool already runs in this process, then ``spawn``).
        augment_on: torch backend: ``"workers"`` (read, crop, augment and InsMix in the
            worker processes), ``"device"`` (workers only read and crop; augmentation, InsMix,
            blend and normalisation run on ``device``) or ``"auto"`` (``"device"`` on CUDA,
            ``"workers"`` on the CPU).
        dali_ops: DALI backend: how the graph augments — ``"kernels"`` (the package's Numba
            kernels on DALI's threads; CPU only: one operator per sample runs augmentation,
            InsMix and normalisation, unless a blender or ``template_source="self"`` needs the
            Python stages), ``"operators"`` (DALI's ``warp_affine``,
            ``coord_transform``, ``gaussian_blur``) or ``"auto"`` (kernels on the CPU,
            operators on the GPU).

    After construction ``loader.backend`` is ``"torch"`` or ``"dali"`` and ``loader.augment_on``
    one of ``"workers"``, ``"device"``, ``"dali:kernels"``, ``"dali:operators"``.

    Epochs: iterating yields the rest of the current epoch; when an epoch is exhausted the
    loader moves on to the next one (so ``set_epoch`` is optional). ``set_epoch(e)``
    jumps to the start of epoch ``e``. ``state_dict()`` / ``load_state_dict()`` save
    and restore the position (epoch, batches handed out) to resume mid-epoch.
    """

    def __init__(self, source, bank: InstanceBank | None = None, batch_size: int = 16, crop: int = 256, *,
                 device: str | torch.device = "cpu", backend: str = "auto", blender=None,
                 config: InsMixConfig | None = None, insmix=True, augment=True, seed: int = 0,
                 shuffle: bool = True, drop_last: bool = False, prefetch: int = 2, num_workers: int = 0,
                 rank: int | None = None, world_size: int | None = None,
                 mean=IMAGENET_MEAN, std=IMAGENET_STD, mp_context: str | None = None, progress: bool | None = None,
                 augment_on: str = "auto", dali_ops: str = "auto", timeout: float | None = None):
        self.batch_size = check_int("batch_size", batch_size, 1)
        self.crop = check_int("crop", crop, 8)
        self.prefetch = check_int("prefetch", prefetch, 0)
        self.num_workers = check_int("num_workers", num_workers, 0)
        self.timeout = None if timeout is None else check_number("timeout", timeout, 0.0, lo_open=True)
        self.seed = check_seed(seed)
        self.shuffle = check_bool("shuffle", shuffle)
        self.drop_last = check_bool("drop_last", drop_last)
        info = dist_info(rank, world_size)
        self.rank, self.world_size = info.rank, info.world_size
        self.device = torch_device(device)
        check_choice("backend", backend, ("auto", "dali", "torch"))
        check_choice("augment_on", augment_on, ("auto", "workers", "device"))
        check_choice("dali_ops", dali_ops, DALI_OPS)
        if config is not None and not isinstance(config, InsMixConfig):
            raise ConfigError(f"config must be an InsMixConfig or None, got {type(config).__name__}")
        if isinstance(insmix, bool):
            p = 1.0 if insmix else 0.0
        elif isinstance(insmix, (int, float, np.floating)) and 0.0 <= float(insmix) <= 1.0:
            p = float(insmix)
        else:
            raise ConfigError(f"insmix must be True/False or a probability in [0, 1], got {insmix!r}")
        for name, v in (("mean", mean), ("std", std)):
            if len(tuple(v)) != 3 or not all(np.isfinite(float(x)) for x in v):
                raise ConfigError(f"{name} must be three finite numbers (R, G, B), got {v!r}")
        if any(float(s) <= 0 for s in std):
            raise ConfigError(f"std must be positive, got {std!r}")
        if mp_context not in (None, "fork", "spawn", "forkserver"):
            raise ConfigError(f"mp_context must be None, 'fork', 'spawn' or 'forkserver', got {mp_context!r}")

        self.source = open_source(source)
        self.n = len(self.source)
        if self.n < self.world_size and self.drop_last:
            raise ConfigError(f"the source has {self.n} samples, fewer than world_size={self.world_size} with drop_last=True")
        if p > 0 and bank is None:
            log.info("InsMixLoader: building the instance bank from %d source samples", self.n)
            bank = InstanceBank.from_samples(self.source, progress=progress)
        if bank is not None and not isinstance(bank, InstanceBank):
            raise InputTypeError(f"bank must be an InstanceBank or None, got {type(bank).__name__}")
        if p > 0 and len(bank) == 0:
            raise InputError("the instance bank is empty: the source has no whole nuclei to paste")
        self.bank = bank if p > 0 else None
        self.blender = _blender(blender, self.device)
        if self.blender is not None and self.crop % 4:
            raise ConfigError(f"the smooth-GAN blender needs crop to be a multiple of 4, got {self.crop}")

        self.program = SampleProgram(self.source, crop=self.crop, seed=self.seed, augment=_augment(augment),
                                     bank=self.bank, config=config, insmix_p=p, mean=mean, std=std)
        # fail early on a bad source (shape, dtype, too small for the crop); the first sample also
        # tells whether the source is typed — (image, labels, types) — for every later one
        self.program.read(0, 0, 0)
        self.typed = bool(self.program.typed)
        if self.typed and self.bank is not None:
            _check_typed_bank(self.bank, self.source)

        self.backend = self._pick_backend(backend)
        if self.backend == "dali":
            self._impl = DaliBackend(self.program, device=self.device, blender=self.blender,
                                     num_workers=self.num_workers, prefetch=self.prefetch,
                                     batch_size=self.batch_size, rank=self.rank, ops=dali_ops, timeout=self.timeout)
            self.augment_on = f"dali:{self._impl.ops}"
        else:
            if augment_on == "auto":
                augment_on = "device" if self.device.type == "cuda" else "workers"
            self.augment_on = augment_on
            self._impl = TorchBackend(self.program, device=self.device, blender=self.blender,
                                      num_workers=self.num_workers, prefetch=self.prefetch, mp_context=mp_context,
                                      augment_on=augment_on, timeout=self.timeout, batch_size=self.batch_size)
        self._state = LoaderState(seed=self.seed, n=self.n, batch_size=self.batch_size, world_size=self.world_size,
                                  rank=self.rank, shuffle=self.shuffle, drop_last=self.drop_last)
        self._closed = False
        self._pass: _Pass | None = None
        self._lock = threading.Lock()  # held while a batch is made: one thread at a time

    # ------------------------------------------------------------------ setup
    def _pick_backend(self, backend: str) -> str:
        have = dali_available()
        if backend == "dali" and not have:
            raise ConfigError("backend='dali' but NVIDIA DALI is not installed: pip install nvidia-dali-cuda120 "
                              "(or insmix-fast[dali]); or use backend='torch'")
        picked = "dali" if backend == "dali" or (backend == "auto" and have) else "torch"
        why = {"dali": f"NVIDIA DALI {dali_version()}" if have else "",
               "torch": "requested" if backend == "torch" else "NVIDIA DALI is not installed"}[picked]
        log.info("InsMixLoader: backend=%s (%s), device=%s, rank %d/%d", picked, why, self.device, self.rank,
                 self.world_size)
        return picked

    # ------------------------------------------------------------------ epochs
    @property
    def epoch(self) -> int:
        return self._state.epoch

    def __len__(self) -> int:
        """Batches per epoch on this rank."""
        return n_batches(self.n, self.batch_size, self.world_size, self.drop_last)

    def set_epoch(self, epoch: int) -> None:
        """Go to the start of ``epoch`` (its shuffle and its augmentation keys); an iteration in
        progress ends (its iterator raises if used again)."""
        epoch = check_int("epoch", epoch, 0)
        with self._exclusive("set_epoch"):
            self._end_pass("set_epoch() was called")
            self._state.epoch = epoch
            self._state.batch = 0

    def plan(self, epoch: int | None = None) -> EpochPlan:
        """This rank's batches (positions, source indices) of ``epoch`` (default: current)."""
        e = self.epoch if epoch is None else check_int("epoch", epoch, 0)
        return epoch_plan(self.n, batch_size=self.batch_size, seed=self.seed, epoch=e, rank=self.rank,
                          world_size=self.world_size, shuffle=self.shuffle, drop_last=self.drop_last)

    def state_dict(self) -> dict:
        """The position: epoch and batches of it already yielded, with the settings it refers to."""
        return self._state.to_dict()

    def load_state_dict(self, state: dict) -> None:
        """Resume at a saved position; the next batch is the one after the last one saved.
        Every field is checked (type and range; ``ConfigError`` names it), and the settings it
        was taken under must be this loader's."""
        other = LoaderState.from_dict(state)
        self._state.check_compatible(other)
        if not 0 <= other.batch <= len(self):
            raise ConfigError(f"saved batch {other.batch} is outside the epoch (0..{len(self)})")
        with self._exclusive("load_state_dict"):
            self._end_pass("load_state_dict() was called")
            self._state.epoch, self._state.batch = int(other.epoch), int(other.batch)

    # ------------------------------------------------------------------ iteration
    def __iter__(self) -> "_Pass":
        """Iterate over the rest of the current epoch (a new ``for`` loop after a ``break``
        continues where it stopped). One thread at a time: a second thread that iterates the
        loader while another one is inside ``next()`` gets ``RuntimeError``, and an iterator
        that a newer iteration replaced raises ``RuntimeError`` instead of ending early."""
        with self._exclusive("iterate"):
            if self._closed:
                raise RuntimeError("this InsMixLoader is closed")
            self._end_pass(f"the loader was iterated again (in thread {threading.current_thread().name!r})")
            if self._state.batch >= len(self):
                self._state.epoch += 1
                self._state.batch = 0
            self._pass = _Pass(self, self._epoch_iter())
            return self._pass

    def _epoch_iter(self):
        st = self._state
        plan = self.plan(st.epoch)
        start = st.batch
        tasks = [self.program.make_keys(st.epoch, p, i) for p, i in zip(plan.positions[start:], plan.indices[start:])]
        self.program.set_source_epoch(st.epoch)
        for batch in self._impl.run(tasks):
            st.batch += 1
            yield batch
        st.epoch += 1
        st.batch = 0

    def _exclusive(self, what: str) -> "_Held":
        """The loader's lock, or ``RuntimeError`` when another thread is making a batch."""
        if not self._lock.acquire(blocking=False):
            owner = self._pass.thread.name if self._pass is not None else "another thread"
            raise RuntimeError(f"cannot {what}: InsMixLoader is being iterated by thread {owner!r} right now. A "
                               "loader serves one thread at a time (iterate it from one thread, or make one "
                               "loader per thread)")
        return _Held(self._lock)

    def _end_pass(self, why: str) -> None:
        if self._pass is not None:
            self._pass.end(why)
            self._pass = None

    # ------------------------------------------------------------------ shutdown
    def close(self) -> None:
        """Stop workers / pipelines; the loader cannot be iterated afterwards. Waits for a
        batch that another thread is making."""
        with self._lock:
            if not self._closed:
                self._end_pass(_CLOSED)
                self._impl.close()
                self._closed = True

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False

    def __del__(self):
        try:
            if not getattr(self, "_closed", True):
                self._end_pass(_CLOSED)
                self._impl.close()
                self._closed = True
        except Exception:  # noqa: BLE001
            pass

    def __repr__(self) -> str:
        return (f"InsMixLoader(n={self.n}, batch_size={self.batch_size}, crop={self.crop}, device={self.device}, "
                f"backend={self.backend!r}, augment_on={self.augment_on!r}, epoch={self.epoch}, "
                f"rank={self.rank}/{self.world_size})")


_CLOSED = "the loader was closed"


class _Held:
    """Context manager releasing an already acquired lock."""

    def __init__(self, lock):
        self._lock = lock

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self._lock.release()
        return False


class _Pass:
    """An iterator over the rest of an epoch (what ``iter(loader)`` returns): each ``next()``
    makes one batch holding the loader's lock, so two threads never run the backend at once."""

    def __init__(self, loader: InsMixLoader, gen):
        self._loader = loader
        self._gen = gen
        self.thread = threading.current_thread()
        self._ended: str | None = None

    def __iter__(self):
        return self

    def __next__(self):
        loader = self._loader
        with loader._exclusive("get the next batch"):
            if self._ended == _CLOSED:
                raise StopIteration  # as a DataLoader iterator after shutdown
            if self._ended is not None:
                raise RuntimeError(f"this iterator over the InsMixLoader has ended: {self._ended}. A loader serves "
                                   "one iteration at a time; iterate it from one thread (or make one loader per "
                                   "thread)")
            self.thread = threading.current_thread()
            return next(self._gen)

    def end(self, why: str) -> None:
        """Stop this iteration (the loader's position stays where it is)."""
        self._ended = why
        self._gen.close()


def _check_typed_bank(bank: InstanceBank, source) -> None:
    """A typed source needs a typed bank, with the same class names when both have them."""
    if bank.class_names is None:
        raise BankError("the source is typed (it yields (image, labels, types)) but the instance bank is untyped, so "
                        "pasted nuclei would have no class: build the bank from the typed source "
                        "(InstanceBank.from_samples(source)) or pass bank=None")
    names = getattr(source, "class_names", None)
    if names is not None and tuple(names) != tuple(bank.class_names):
        raise BankError(f"the source's class_names {tuple(names)} differ from the bank's {tuple(bank.class_names)}: "
                        "class ids would mean different classes")
