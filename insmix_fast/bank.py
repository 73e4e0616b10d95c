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

import os
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
    def save(self, path: str | os.PathLike) -> Path:
        """Write the bank to one ``.npz`` file (uncompressed, loads fast); returns the path."""
        path = Path(path)
        if path.suffix != ".npz":
            path = path.with_name(path.name + ".npz")
        path.parent.mkdir(parents=True, exist_ok=True)
        arrays = {k: getattr(self, k) for k in (*_FIELDS, "offset", "masks", "pixels", "classes")}
        if self.class_names is not None:
            arrays["class_names"] = np.array(self.class_names, dtype=str)
        meta = np.array([FORMAT_VERSION, self.n_samples, self.min_area], np.int64)
        tmp = path.with_name(path.name + ".tmp.npz")
        np.savez(tmp, __meta__=meta, **arrays)
        os.replace(tmp, path)
        return path

    @classmethod
    def load(cls, path: str | os.PathLike) -> "InstanceBank":
        """Read a bank written by :meth:`save`; a bad or foreign file raises :class:`BankError`."""
        path = Path(path)
        if not path.is_file():
            raise BankError(f"instance bank file not found: {path}")
        try:
            with np.load(path, allow_pickle=False) as z:
                data = {k: z[k] for k in z.files}
        except Exception as e:  # zipfile/ValueError/OSError: not a readable npz
            raise BankError(f"cannot read instance bank {path}: {e}") from e
        meta = data.pop("__meta__", None)
        if meta is None or meta.shape != (3,):
            raise BankError(f"{path} is not an insmix_fast instance bank (no metadata)")
        if int(meta[0]) != FORMAT_VERSION:
            raise BankError(f"{path}: bank format version {int(meta[0])}, this insmix_fast reads {FORMAT_VERSION}")
        missing = sorted((set(_FIELDS) | {"offset", "masks", "pixels"}) - set(data))
        if missing:
            raise BankError(f"{path}: bank file lacks fields {missing}")
        names = data.pop("class_names", None)  # absent in untyped banks (and in files written before classes)
        try:
            return cls(n_samples=int(meta[1]), min_area=int(meta[2]),
                       class_names=None if names is None else [str(v) for v in names.tolist()], **data)
        except BankError as e:
            raise BankError(f"{path}: {e}") from None
