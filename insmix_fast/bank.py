"""The instance bank (SPEC §1): every nucleus of a training set in flat arrays.

Rows are sorted by area so that the scale-admissible templates of an original
form one contiguous range (found by binary search in the kernels). Memory is
proportional to the instances' bounding-box pixels (mask + RGB = 4 bytes per
bbox pixel) plus 128 bytes of shape descriptor and ~64 bytes of metadata per
instance — never to the size of the source tiles.

A bank built from typed samples ``(image, labels, types)`` keeps each instance's
class (SPEC §3b): ``classes`` (0 = untyped) and ``class_names``; the template-class
modes of InsMix read them through per-class index tables (:meth:`InstanceBank.class_table`).
"""

from __future__ import annotations

import hashlib
import os
import secrets
import warnings
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Literal

import numpy as np
from tqdm.auto import tqdm

from .classes import UNBOUNDED_CLASSES, check_class_names, check_ignore, check_types
from .devices import parse_device
from .errors import BankError, InputError, LabelMapError
from .kernels.classes import ClassTable, any_class_table, class_table, touches_ignore
from .kernels.descriptor import DESC_WORDS
from .kernels.instances import bank_entries, gather_segments
from .kernels.tables import Table, largest_crop
from .validation import check_sample

__all__ = ["InstanceBank"]

FORMAT_VERSION = 1

_FIELDS = {
    # name: (dtype, trailing shape)
    "area": (np.int64, ()),
    "anchor": (np.int32, (2,)),
    "hw": (np.int32, (2,)),
    "desc": (np.uint64, (DESC_WORDS,)),
    "fits": (np.bool_, ()),
    "source": (np.int64, ()),
    "source_label": (np.int32, ()),
    "source_origin": (np.int32, (2,)),
}


class InstanceBank:
    """All instances of a training set, stored once in flat contiguous arrays.

    Per instance ``i`` (rows sorted by ``area``, ties by source and label):

    * ``area[i]``: pixel count; ``hw[i]``: bbox height, width;
    * ``anchor[i]``: rounded centroid (row, col) inside the bbox crop;
    * ``masks[offset[i]:offset[i+1]]``: the 0/1 bbox crop, row-major;
    * ``pixels[3·offset[i]:3·offset[i+1]]``: its RGB values (0 outside the mask);
    * ``desc[i]``: packed 32×32 descriptor, ``fits[i]``: whole mask inside it
      (see :mod:`insmix_fast.kernels.descriptor`);
    * ``source[i]``, ``source_label[i]``, ``source_origin[i]``: where it came from
      (sample index, id in that label map, bbox top-left);
    * ``classes[i]``: its class (int32; 0 = untyped), ``class_names[c]`` the name of class
      ``c`` (``class_names[0] == "background"``; ``None`` for an untyped bank, whose
      ``classes`` are all 0). :meth:`class_counts` counts the instances per class.

    Build with :meth:`from_samples`; persist with :meth:`save` / :meth:`load`.
    """

    def __init__(self, *, area, anchor, hw, offset, masks, pixels, desc, fits,
                 source, source_label, source_origin, n_samples: int = 0, min_area: int = 1,
                 classes=None, class_names: Sequence[str] | None = None):
        arrays = dict(area=area, anchor=anchor, hw=hw, desc=desc, fits=fits, source=source,
                      source_label=source_label, source_origin=source_origin)
        n = None
        for name, arr in arrays.items():
            dtype, trail = _FIELDS[name]
            arr = np.ascontiguousarray(arr, dtype=dtype)
            if arr.shape[1:] != trail or (n is not None and arr.shape[0] != n):
                raise BankError(f"bank field {name!r} has shape {arr.shape}, expected ({n or 'n'},{trail})")
            n = arr.shape[0]
            setattr(self, name, arr)
        self.offset = np.ascontiguousarray(offset, dtype=np.int64)
        self.masks = np.ascontiguousarray(masks, dtype=np.uint8)
        self.pixels = np.ascontiguousarray(pixels, dtype=np.uint8)
        self.n_samples = int(n_samples)
        self.min_area = int(min_area)
        self.class_names = None if class_names is None else check_class_names(class_names)
        if classes is None:
            classes = np.zeros(n, np.int32)
        self.classes = np.ascontiguousarray(classes, dtype=np.int32)
        if self.classes.shape != (n,):
            raise BankError(f"bank field 'classes' has shape {self.classes.shape}, expected ({n},)")
        self._check_consistency()
        self._check_classes()
        self._class_tables: dict = {}
        self.table_cached = Table(self.area, self.anchor, self.hw, self.offset, self.masks, self.pixels, self.desc,
                                  self.fits)
        #: largest crop (h·w) in the bank: sizes the kernels' scratch buffers
        self.max_crop = largest_crop(self.table_cached)

    # ------------------------------------------------------------------ build
    @classmethod
    def from_samples(
        cls,
        samples: Iterable,
        *,
        min_area: int = 10,
        on_invalid: Literal["raise", "skip"] = "raise",
        progress: bool | None = None,
        total: int | None = None,
        class_names: Sequence[str] | None = None,
        ignore: Callable[[int], np.ndarray] | None = None,
    ) -> "InstanceBank":
        """Build a bank from an iterable of ``(image, labels)`` or ``(image, labels, types)`` samples.

        Instances touching the sample border are left out (they may be cut, SPEC §1),
        as are instances smaller than ``min_area`` pixels and instances that enclose
        another instance (pasted elsewhere they would leave a hole). An instance split into
        several pieces or enclosing a hole is bad input: ``on_invalid="raise"``
        (default) raises :class:`LabelMapError` naming the sample and ids,
        ``"skip"`` leaves them out with one warning. ``progress``: show a tqdm bar
        (``None``: only on a terminal).

        Typed samples (a third element ``types``, H×W class ids, 0 on background) give a
        typed bank: each instance keeps its class in :attr:`classes`. ``class_names``
        (index = class id, ``class_names[0] == "background"``) defaults to the data set's
        ``samples.class_names``, else ``("background", "class 1", …)`` up to the largest
        class seen. A type map that does not fit its labels (a class on background, an
        instance with several classes or with class 0, a class id beyond ``class_names``)
        raises :class:`LabelMapError` naming the sample and the id; typed and untyped
        samples cannot be mixed.

        Ignore regions: ``ignore(k)`` (default: the data set's ``samples.ignore_mask(k)``
        when it has one, e.g. :class:`~insmix_fast.data.NuInsSegDataset`) returns sample
        ``k``'s H×W bool mask; instances with a pixel on or 8-adjacent to it are left out.
        """
        if isinstance(min_area, bool) or not isinstance(min_area, (int, np.integer)) or min_area < 1:
            raise BankError(f"min_area must be an integer ≥ 1, got {min_area!r}")
        if on_invalid not in ("raise", "skip"):
            raise BankError(f"on_invalid must be 'raise' or 'skip', got {on_invalid!r}")
        if total is None and hasattr(samples, "__len__"):
            total = len(samples)
        names = class_names if class_names is not None else getattr(samples, "class_names", None)
        names = None if names is None else check_class_names(names)
        n_classes = UNBOUNDED_CLASSES if names is None else len(names) - 1
        if ignore is None:
            ignore = getattr(samples, "ignore_mask", None)
        if ignore is not None and not callable(ignore):
            raise BankError(f"ignore must be a function of the sample index returning its ignore mask, got "
                            f"{type(ignore).__name__}")
        parts = []
        skipped = 0
        n_samples = 0
        typed = None
        bar = tqdm(samples, total=total, desc="instance bank", unit="tile",
                   disable=None if progress is None else not progress)
        for s, sample in enumerate(bar):
            if isinstance(sample, np.ndarray) or not isinstance(sample, (tuple, list)) or len(sample) < 2:
                raise BankError(f"sample {s} is not an (image, labels) pair: {type(sample).__name__}")
            image, labels = sample[0], sample[1]
            image, labels = check_sample(image, labels, name=f"sample {s}")
            types = sample[2] if len(sample) > 2 else None
            if typed is None:
                typed = types is not None
            elif typed != (types is not None):
                raise BankError(f"sample {s} is {'typed' if types is not None else 'untyped'} but the samples before "
                                f"it are {'typed' if typed else 'untyped'}: a bank is built from typed "
                                "(image, labels, types) or untyped (image, labels) samples, not both")
            (area, anchor, hw, offset, masks, pixels, desc, fits,
             origin, ids, pieces, hole, encloses, border) = bank_entries(image, labels)
            if typed:
                _types, lut = check_types(types, labels, n_classes, name=f"sample {s} types", class_names=names)
                inst_classes = lut[ids]
            else:
                inst_classes = np.zeros(ids.size, np.int32)
            if ignore is not None:
                ign = check_ignore(ignore(s), labels.shape, name=f"sample {s} ignore mask")
                border = border | touches_ignore(labels, ign)[ids]
            bad = (pieces != 1) | hole
            if bad.any():
                if on_invalid == "raise":
                    split = ids[pieces > 1][:10].tolist()
                    holes = ids[hole][:10].tolist()
                    what = []
                    if split:
                        what.append(f"split into several pieces: ids {split}")
                    if holes:
                        what.append(f"with holes: ids {holes}")
                    raise LabelMapError(
                        f"sample {s}: instances {'; '.join(what)}. Each instance must be one 8-connected "
                        "piece without holes; fix the map with insmix_fast.data.clean_labels or pass "
                        "on_invalid='skip'.")
                skipped += int(bad.sum())
            # Left out silently: cut by the border, too small, or ring-shaped around another
            # instance (pasting a ring elsewhere would leave a hole in the new map).
            keep = np.flatnonzero(~bad & ~border & ~encloses & (area >= min_area))
            n_samples += 1
            if keep.size == 0:
                continue
            m, new_off = gather_segments(masks, offset, keep, 1)
            px, _ = gather_segments(pixels, offset, keep, 3)
            parts.append(dict(area=area[keep], anchor=anchor[keep], hw=hw[keep], desc=desc[keep], fits=fits[keep],
                              source=np.full(keep.size, s, np.int64), source_label=ids[keep],
                              source_origin=origin[keep], classes=inst_classes[keep], sizes=np.diff(new_off),
                              masks=m, pixels=px))
            if hasattr(bar, "set_postfix") and not bar.disable:
                bar.set_postfix(instances=sum(p["area"].size for p in parts), refresh=False)
        if skipped:
            warnings.warn(f"instance bank: left out {skipped} instances split into pieces or with holes",
                          stacklevel=2)
        if n_samples == 0:
            raise BankError("no samples were given to build the instance bank from")
        if not typed and class_names is not None:
            raise BankError("class_names was given but the samples are untyped (image, labels) pairs")
        if typed and names is None:
            top = max((int(p["classes"].max()) for p in parts), default=1)
            names = ("background", *(f"class {c}" for c in range(1, top + 1)))
        return cls._concat(parts, n_samples=n_samples, min_area=int(min_area), class_names=names if typed else None)

    @classmethod
    def _concat(cls, parts, *, n_samples: int, min_area: int, class_names=None) -> "InstanceBank":
        if not parts:
            raise BankError(
                f"the instance bank is empty: none of the {n_samples} samples holds an instance of at least "
                f"{min_area} pixels that does not touch the tile border")
        cat = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
        offset = np.zeros(cat["area"].size + 1, np.int64)
        np.cumsum(cat.pop("sizes"), out=offset[1:])
        # Sort by area (then source, label) so scale ranges are contiguous and the order is reproducible.
        order = np.lexsort((cat["source_label"], cat["source"], cat["area"]))
        masks, new_off = gather_segments(cat.pop("masks"), offset, order, 1)
        pixels, _ = gather_segments(cat.pop("pixels"), offset, order, 3)
        fields = {k: v[order] for k, v in cat.items()}
        return cls(offset=new_off, masks=masks, pixels=pixels, n_samples=n_samples, min_area=min_area,
                   class_names=class_names, **fields)

    # ------------------------------------------------------------------ checks
    def _check_consistency(self) -> None:
        n = self.area.shape[0]
        if self.offset.shape != (n + 1,) or self.offset[0] != 0:
            raise BankError(f"bank offsets have shape {self.offset.shape}, expected ({n + 1},) starting at 0")
        if n and np.any(np.diff(self.offset) != self.hw[:, 0].astype(np.int64) * self.hw[:, 1]):
            raise BankError("bank offsets do not match the bbox sizes (corrupt bank)")
        if self.masks.shape != (int(self.offset[-1]),) or self.pixels.shape != (3 * int(self.offset[-1]),):
            raise BankError("bank mask/pixel buffers do not match the offsets (corrupt bank)")
        if n and (self.area.min() < 1 or np.any(np.diff(self.area) < 0)):
            raise BankError("bank areas must be ≥ 1 and sorted ascending (corrupt bank)")
        if n and (np.any(self.anchor < 0) or np.any(self.anchor >= self.hw)):
            raise BankError("bank anchors lie outside their crops (corrupt bank)")

    def _check_classes(self) -> None:
        if not len(self):
            return
        lo, hi = int(self.classes.min()), int(self.classes.max())
        if self.class_names is None:
            if hi != 0 or lo != 0:
                raise BankError(f"an untyped bank (class_names=None) has instance classes {lo}..{hi}; they must be 0")
        elif lo < 1 or hi >= len(self.class_names):
            raise BankError(f"bank classes {lo}..{hi} are outside the classes 1..{len(self.class_names) - 1} of "
                            f"class_names {self.class_names}")

    # ------------------------------------------------------------------ access
    def __len__(self) -> int:
        return int(self.area.shape[0])

    @property
    def table(self) -> Table:
        """The flat arrays in the layout the kernels take."""
        return self.table_cached

    def to(self, device: str = "cpu"):
        """This bank on ``device``: ``"cpu"`` returns the bank itself; ``"cuda"`` / ``"cuda:N"``
        a :class:`insmix_fast.gpu.DeviceBank` holding the same flat arrays on that GPU
        (uploaded on the first call, then reused). Raises
        :class:`~insmix_fast.errors.InputError` naming the reason when no GPU can be used
        (and for a device string it does not understand)."""
        dev = parse_device(device, error=InputError)
        if dev.kind == "cpu":
            return self
        index = dev.index or 0
        cache = self.__dict__.setdefault("_device_banks", {})
        if index not in cache:
            from .gpu.bank import DeviceBank  # the bank's one way to the GPU (numba.cuda loads only then)

            cache[index] = DeviceBank(self, index)
        return cache[index]

    def __getstate__(self):
        # device copies made by to("cuda") stay with this process (never pickled to workers)
        return {k: v for k, v in self.__dict__.items() if k != "_device_banks"}

    @property
    def typed(self) -> bool:
        """True when the bank holds classes (built from typed samples)."""
        return self.class_names is not None

    def class_counts(self) -> np.ndarray:
        """Instances per class: int64 array indexed by class id (length ``len(class_names)``;
        entry 0 counts untyped instances, so it is 0 in a typed bank). An untyped bank gives
        ``[len(bank)]``. ``dict(zip(bank.class_names, bank.class_counts()))`` names them."""
        width = 1 if self.class_names is None else len(self.class_names)
        return np.bincount(self.classes, minlength=width).astype(np.int64)

    def class_table(self, template_class: str = "any", balance_power: float = 1.0) -> ClassTable:
        """The per-class index tables the kernels read for ``InsMixConfig.template_class``
        (:class:`~insmix_fast.kernels.classes.ClassTable`; made once per ``balance_power`` and kept)."""
        key = "any" if template_class == "any" else float(balance_power)
        table = self._class_tables.get(key)
        if table is None:
            if key == "any":
                table = any_class_table(self.classes, self.area)
            else:
                n_classes = 0 if self.class_names is None else len(self.class_names) - 1
                table = class_table(self.classes, self.area, n_classes, key)
            self._class_tables[key] = table
        return table

    @property
    def nbytes(self) -> int:
        return int(sum(getattr(self, k).nbytes for k in (*_FIELDS, "offset", "masks", "pixels", "classes")))

    def crop(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        """``(rgb h×w×3, mask h×w bool)`` of bank instance ``i``."""
        if not -len(self) <= i < len(self):
            raise IndexError(f"bank index {i} out of range for a bank of {len(self)} instances")
        i %= len(self)
        h, w = (int(v) for v in self.hw[i])
        a, b = self.offset[i], self.offset[i + 1]
        return self.pixels[3 * a:3 * b].reshape(h, w, 3), self.masks[a:b].reshape(h, w).astype(bool)

    def summary(self) -> dict:
        """Counts and size statistics (areas in pixels, memory in bytes)."""
        n = len(self)
        out = {"instances": n, "samples": self.n_samples, "min_area": self.min_area, "nbytes": self.nbytes}
        if n:
            out.update(
                area_min=int(self.area[0]), area_median=float(np.median(self.area)), area_max=int(self.area[-1]),
                bbox_h_mean=float(self.hw[:, 0].mean()), bbox_w_mean=float(self.hw[:, 1].mean()),
                descriptor_fits=float(self.fits.mean()),
                instances_per_sample=n / max(self.n_samples, 1),
            )
        if self.class_names is not None:
            out["class_counts"] = {name: int(c) for name, c in zip(self.class_names[1:], self.class_counts()[1:])}
        return out

    def __repr__(self) -> str:
        s = self.summary()
        if not len(self):
            return "InstanceBank(empty)"
        classes = "" if self.class_names is None else f", {len(self.class_names) - 1} classes"
        return (f"InstanceBank({s['instances']} instances from {s['samples']} samples, area "
                f"{s['area_min']}–{s['area_max']} px (median {s['area_median']:.0f}){classes}, "
                f"{s['nbytes'] / 2**20:.1f} MiB)")

    # ------------------------------------------------------------------ persistence
    def _persisted(self) -> dict[str, np.ndarray]:
        """The arrays :meth:`save` writes (and :attr:`content_hash` covers), by file field name."""
        arrays = {k: getattr(self, k) for k in (*_FIELDS, "offset", "masks", "pixels")}
        classes = getattr(self, "classes", None)
        if classes is not None:
            arrays["classes"] = classes
        names = getattr(self, "class_names", None)
        if names is not None:
            arrays["class_names"] = np.array(names, dtype=str)
        return arrays

    @property
    def content_hash(self) -> int:
        """64-bit hash of everything the bank holds (computed once, then cached: ~1 ms per MB).

        Plans record it (with the bank's size) so that :func:`~insmix_fast.core.apply_plan`
        can refuse a bank other than the one a plan was made with. A bank is not meant to be
        modified after it is built; one whose arrays were changed in place keeps the old hash.
        """
        cached = self.__dict__.get("_content_hash")
        if cached is None:
            h = hashlib.blake2b(digest_size=8)
            h.update(np.array([FORMAT_VERSION, self.n_samples, self.min_area], np.int64).tobytes())
            for name, arr in self._persisted().items():
                arr = np.ascontiguousarray(arr)
                h.update(f"{name}:{arr.dtype.str}:{arr.shape};".encode())
                h.update(memoryview(arr).cast("B"))
            cached = self.__dict__["_content_hash"] = int.from_bytes(h.digest(), "little")
        return cached

    def save(self, path: str | os.PathLike) -> Path:
        """Write the bank to one ``.npz`` file (uncompressed, loads fast); returns the path.

        ``.npz`` is appended when ``path`` has another suffix. The file is written to a
        temporary file of a unique name in the same folder, flushed to disk, then renamed
        over ``path`` in one step: readers (and other processes saving the same bank, e.g.
        several DDP ranks) see the old file or the new one, never a partial one, and no
        temporary file is left behind, whatever fails. A target that is a directory, or a
        folder that cannot be created or written, raises :class:`BankError`.
        """
        path = Path(path)
        if path.suffix != ".npz":
            path = path.with_name(path.name + ".npz")
        if path.is_dir():
            raise BankError(f"cannot save the instance bank to {path}: it is a directory")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise BankError(f"cannot save the instance bank to {path}: cannot create its folder ({e})") from e
        meta = np.array([FORMAT_VERSION, self.n_samples, self.min_area], np.int64)
        _write_atomically(path, lambda f: np.savez(f, __meta__=meta, **self._persisted()))
        return path

    @classmethod
    def load(cls, path: str | os.PathLike) -> "InstanceBank":
        """Read a bank written by :meth:`save`.

        Every field's dtype and shape are checked exactly (nothing is cast), and so are the
        invariants between fields (offsets match the bbox sizes, each mask holds ``area``
        pixels of 0/1, colours are 0 outside the masks, anchors lie in their crops, areas
        are sorted, classes lie in ``class_names``). A missing, foreign, corrupt or
        inconsistent file raises :class:`BankError` naming the file and the field.
        """
        path = Path(path)
        if not path.is_file():
            raise BankError(f"instance bank file not found: {path}")
        data = _read_npz(path)
        meta = data.pop("__meta__", None)
        if meta is None or meta.dtype != np.int64 or meta.shape != (3,):
            raise BankError(f"{path} is not an insmix_fast instance bank (no metadata)")
        if int(meta[0]) != FORMAT_VERSION:
            raise BankError(f"{path}: bank format version {int(meta[0])}, this insmix_fast reads {FORMAT_VERSION}")
        missing = sorted((set(_FIELDS) | {"offset", "masks", "pixels"}) - set(data))
        if missing:
            raise BankError(f"{path}: bank file lacks fields {missing}")
        unknown = sorted(set(data) - set(_FIELDS) - {"offset", "masks", "pixels", "classes", "class_names"})
        if unknown:
            raise BankError(f"{path}: unknown fields {unknown} (not a bank written by this insmix_fast version)")
        n_samples, min_area = int(meta[1]), int(meta[2])
        try:
            names = _check_file_fields(data, n_samples, min_area)
        except BankError as e:
            raise BankError(f"{path}: {e}") from None
        data.pop("class_names", None)
        if names is not None:
            data["class_names"] = names
        try:
            return cls(n_samples=n_samples, min_area=min_area, **data)
        except BankError as e:
            raise BankError(f"{path}: {e}") from None


# ---------------------------------------------------------------------- file helpers
_NPZ_MAGIC = (b"PK\x03\x04", b"PK\x05\x06")  # a zip member, or an empty zip archive


def _write_atomically(path: Path, write) -> None:
    """Run ``write(file)`` on a fresh temporary file beside ``path``, then rename it over ``path``.

    The temporary name is unique per call (process id + random token), so concurrent
    writers never share one; it is removed on any failure. OS errors become :class:`BankError`.
    """
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(6)}.tmp")
    try:
        with open(tmp, "xb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        try:
            tmp.unlink()
        except FileNotFoundError:
            pass
        except OSError:  # noqa: S110 - the original error is the one to report
            pass
        if isinstance(e, OSError):
            raise BankError(f"cannot save the instance bank to {path}: {e.strerror or e}") from e
        raise


def _read_npz(path: Path) -> dict[str, np.ndarray]:
    """All arrays of the ``.npz`` at ``path``; anything else raises :class:`BankError` (never
    numpy's advice about pickles: a bank holds plain numeric arrays only)."""
    try:
        with open(path, "rb") as f:
            head = f.read(6)
    except OSError as e:
        raise BankError(f"cannot read instance bank {path}: {e.strerror or e}") from e
    if head[:4] not in _NPZ_MAGIC:
        kind = "a single .npy array" if head == b"\x93NUMPY" else "not a .npz archive"
        raise BankError(f"cannot read instance bank {path}: it is {kind} (an instance bank is the .npz file "
                        "InstanceBank.save writes)")
    data = {}
    try:
        with np.load(path, allow_pickle=False) as z:
            for k in z.files:
                try:
                    data[k] = z[k]
                except ValueError as e:
                    if "pickle" in str(e) or "Object arrays" in str(e):
                        raise BankError(f"{path}: field {k!r} holds Python objects; an instance bank holds "
                                        "numeric arrays only (not a bank written by InstanceBank.save)") from None
                    raise
    except BankError:
        raise
    except Exception as e:  # zipfile.BadZipFile, bad CRC, truncated member, bad .npy header
        raise BankError(f"cannot read instance bank {path}: corrupt or truncated file ({e})") from e
    return data


def _check_file_fields(data: dict[str, np.ndarray], n_samples: int, min_area: int) -> tuple[str, ...] | None:
    """Exact dtype/shape of every field read from a bank file and the invariants between
    them; raises :class:`BankError` naming the field. Returns the class names (or None)."""
    if n_samples < 1 or min_area < 1:
        raise BankError(f"metadata has n_samples={n_samples}, min_area={min_area}; both must be ≥ 1")

    def exact(name, dtype, shape):
        arr = data[name]
        if arr.dtype != np.dtype(dtype):
            raise BankError(f"field {name!r} has dtype {arr.dtype}, expected {np.dtype(dtype)}")
        if arr.shape != shape:
            raise BankError(f"field {name!r} has shape {arr.shape}, expected {shape}")
        return arr

    n = data["area"].shape[0] if data["area"].ndim == 1 else -1
    if n < 0:
        raise BankError(f"field 'area' has shape {data['area'].shape}, expected (n,)")
    for name, (dtype, trail) in _FIELDS.items():
        exact(name, dtype, (n, *trail))
    offset = exact("offset", np.int64, (n + 1,))
    if offset[0] != 0 or np.any(np.diff(offset) < 1):
        raise BankError("field 'offset' must start at 0 and grow by at least 1 per instance")
    total = int(offset[-1])
    masks = exact("masks", np.uint8, (total,))
    pixels = exact("pixels", np.uint8, (3 * total,))
    area, hw, anchor = data["area"], data["hw"], data["anchor"]
    if n == 0:
        raise BankError("the bank file holds no instances")
    if np.any(hw < 1):
        raise BankError("field 'hw' holds a bbox side < 1")
    if np.any(np.diff(offset) != hw[:, 0].astype(np.int64) * hw[:, 1]):
        raise BankError("field 'offset' does not match the bbox sizes in 'hw'")
    if area[0] < min_area or np.any(np.diff(area) < 0):
        raise BankError(f"field 'area' must be ≥ min_area ({min_area}) and sorted ascending")
    if np.any(anchor < 0) or np.any(anchor >= hw):
        raise BankError("field 'anchor' holds anchors outside their crops")
    if masks.size and masks.max() > 1:
        raise BankError(f"field 'masks' holds the value {int(masks.max())}; masks are 0/1")
    counts = np.add.reduceat(masks, offset[:-1], dtype=np.int64)
    bad = np.flatnonzero(counts != area)
    if bad.size:
        i = int(bad[0])
        raise BankError(f"field 'masks' does not match 'area' for {bad.size} instance(s), e.g. instance {i}: "
                        f"{int(counts[i])} mask pixels, area {int(area[i])}")
    rgb = pixels.reshape(-1, 3)
    if np.any(np.greater((rgb[:, 0] | rgb[:, 1] | rgb[:, 2]) != 0, masks.view(np.bool_))):  # masks are 0/1 here
        raise BankError("field 'pixels' holds colour outside the masks (must be 0 there)")
    if np.any(data["source"] < 0) or np.any(data["source"] >= n_samples):
        raise BankError(f"field 'source' holds sample indices outside 0..{n_samples - 1}")
    if np.any(data["source_label"] < 1) or np.any(data["source_origin"] < 0):
        raise BankError("field 'source_label' must be ≥ 1 and 'source_origin' ≥ 0")
    names = None
    if "class_names" in data:
        raw = data["class_names"]
        if raw.dtype.kind != "U" or raw.ndim != 1 or raw.size < 2 or raw[0] != "background":
            raise BankError(f"field 'class_names' must be ≥ 2 strings starting with 'background', got "
                            f"{raw.dtype} of shape {raw.shape}")
        names = tuple(str(v) for v in raw.tolist())
    if "classes" in data:
        classes = exact("classes", np.int32, (n,))
        lo, hi = int(classes.min()), int(classes.max())
        if names is None and (lo, hi) != (0, 0):
            raise BankError(f"field 'classes' holds classes {lo}..{hi} but the file has no 'class_names' "
                            "(an untyped bank's classes are all 0)")
        if names is not None and (lo < 1 or hi >= len(names)):
            raise BankError(f"field 'classes' holds classes {lo}..{hi}, outside 1..{len(names) - 1} of 'class_names'")
    elif names is not None:
        raise BankError("the file has 'class_names' but no field 'classes'")
    return names
