"""``WSIPatchSource``: annotated whole-slide patches as ``(image, labels)`` samples.

The source protocol shared with :class:`insmix_fast.loader.InsMixLoader` and plain
``torch.utils.data.DataLoader``: ``len(source)``, ``source[i] -> (image H×W×3 uint8,
labels H×W int32)``, and ``source.set_epoch(epoch)`` at each epoch start.

Patch coordinates (level-0 top-left ``(x, y)`` per slide, a patch covering
``patch · mpp / slide.mpp`` level-0 px) are a pure function of ``(seed, epoch)``:

* ``mode="random"``: ``patches_per_epoch`` patches per epoch; each picks a slide with
  probability proportional to its tissue area, a tissue pixel of its low-resolution
  mask uniformly, and a uniform position inside that pixel for the patch centre (the
  corner is snapped to the output pixel grid when ``mpp / slide.mpp`` is an integer);
  patches with less than ``min_tissue`` tissue are redrawn. Draws come from a Philox
  generator keyed by ``(seed, epoch)``.
* ``mode="grid"``: a sliding grid with stride ``patch - overlap`` (target-mpp px) over
  every slide, keeping patches with at least ``min_tissue`` tissue; the same grid every
  epoch, visited in an order drawn from ``(seed, epoch)``.

Rank sharding (``shard=True``): the epoch's patch list is split across
``torch.distributed`` ranks with :func:`insmix_fast.sharding.shard_indices` (rank/world
size from :func:`dist_info`: explicit, ``torch.distributed``, or ``RANK``/``WORLD_SIZE``
of ``torchrun``); ``len`` is this rank's share — what a plain ``DataLoader`` under
``torchrun`` needs. :class:`~insmix_fast.loader.InsMixLoader` shards its source's
indices itself (same functions), so give it an unsharded source (the default,
``shard=None``: sharded only when ``rank``/``world_size`` are passed explicitly);
``source.sharded`` says which. Readers are opened lazily in each process (the source pickles as paths and
coordinates) and each keeps a size-bounded tile cache, so memory does not grow with
slide size.

Classes: when the slides' annotations carry classes (QuPath ``classification.name``,
HoVer-Net ``type``), samples are ``(image, labels, types)`` and ``source.class_names`` is
**one class table for all slides** (:func:`shared_class_table`): every file numbers its
classes its own way, so they are mapped by name — to ``class_names=`` when given (a name
not in it raises :class:`~insmix_fast.errors.LabelMapError` naming the slide and the file), else to the
names of all slides in order of first appearance. ``with_types=False`` gives untyped
``(image, labels)`` samples whatever the files hold.
"""

from __future__ import annotations

import math
import os
import warnings
from pathlib import Path

import numpy as np

from ..data.base import IndexedDataset
from ..errors import ConfigError, InputError, LabelMapError
from ..sharding import dist_info, epoch_order, shard_indices
from ..validation import check_bool, check_choice, check_int, check_number, check_seed
from .annotations import Annotations, load_annotations
from .slide import DEFAULT_CACHE_BYTES, Slide, SlideError, open_slide
from .tissue import TissueMask, detect_tissue

__all__ = ["WSIPatchSource", "build_bank_from_slides", "find_annotations", "list_slides", "grid_coords", "random_coords",
           "shared_class_table"]

_COORD_STREAM = 0x57534950  # "WSIP"


def find_annotations(slide_path) -> Path | None:
    """The annotation file next to a slide: same stem + ``.geojson``/``.json``/``.npz``."""
    p = Path(slide_path)
    stem = p.name
    for suf in (".ome.tiff", ".ome.tif"):
        if stem.lower().endswith(suf):
            stem = stem[: -len(suf)]
            break
    else:
        stem = p.stem
    for ext in (".npz", ".geojson", ".json"):
        q = p.with_name(stem + ext)
        if q.exists():
            return q
    return None


SLIDE_SUFFIXES = (".tif", ".tiff", ".svs", ".ndpi", ".mrxs", ".scn", ".btf", ".bif", ".vms", ".vmu", ".svslide")


def _warn_unannotated(slides, annotations) -> None:
    """One warning for all slides that have no annotation file beside them (their labels are all zero)."""
    missing = [str(s.path if isinstance(s, Slide) else s) for s, a in zip(slides, annotations) if a is None]
    if missing:
        more = f" (+{len(missing) - 5} more)" if len(missing) > 5 else ""
        warnings.warn(f"{len(missing)} of {len(slides)} slide(s) have no annotation file beside them "
                      f"(<stem>.geojson / .json / .npz) and give all-zero labels: {', '.join(missing[:5])}{more}",
                      UserWarning, stacklevel=3)


def list_slides(slides) -> list:
    """A list of slides from a list, one path, or a folder (its slide files, sorted)."""
    if isinstance(slides, (str, os.PathLike)):
        p = Path(slides)
        if p.is_dir():
            found = sorted(q for q in p.iterdir() if q.is_file() and q.suffix.lower() in SLIDE_SUFFIXES)
            if not found:
                raise InputError(f"no slide files ({', '.join(SLIDE_SUFFIXES)}) in {p}")
            return found
        return [p]
    if isinstance(slides, Slide):
        return [slides]
    return list(slides)


def shared_class_table(annotations, class_names=None, with_types: bool | None = None, slides=None
                       ) -> tuple[tuple[str, ...] | None, list[np.ndarray | None]]:
    """One class table for the annotations of several slides: ``(class_names, luts)``.

    ``luts[k][c]`` is the shared class id of class ``c`` of slide ``k``'s file (``None`` for a
    slide without annotations). Classes are matched by name. ``class_names``: the table to
    use (``[0] == "background"``); default: ``"background"`` then every slide's names in order
    of first appearance. ``with_types``: ``None`` (typed when any file carries classes),
    ``True`` (they must) or ``False`` (untyped: ``(None, [None, ...])``).

    Raises:
        ConfigError: ``with_types=True`` but no file carries classes; files with and without
            classes mixed (naming an untyped one).
        LabelMapError: a class name not in the given ``class_names`` (naming the slide and file).
    """
    from ..data.typed import check_class_names

    anns = list(annotations)
    names_of = [slides[k] if slides is not None else f"slide {k}" for k in range(len(anns))]
    typed = [a is not None and a.typed for a in anns]
    if with_types is None:
        with_types = any(typed)
    if not with_types:
        return None, [None] * len(anns)
    if not any(typed):
        raise ConfigError("with_types=True but no slide's annotations carry classes")
    plain = [k for k, a in enumerate(anns) if a is not None and not a.typed]
    if plain:
        k = plain[0]
        raise ConfigError(f"the annotations of {names_of[k]} ({anns[k].source}) carry no classes while those of "
                          "other slides do; give every slide classified nuclei, or pass with_types=False")
    fixed = class_names is not None
    table = list(check_class_names(class_names)) if fixed else ["background"]
    index = {n: c for c, n in enumerate(table) if c}
    luts: list[np.ndarray | None] = []
    for k, a in enumerate(anns):
        if a is None:
            luts.append(None)
            continue
        lut = np.zeros(len(a.class_names), np.int32)
        for c, n in enumerate(a.class_names[1:], 1):
            if n not in index:
                if fixed:
                    raise LabelMapError(f"{names_of[k]}: class {n!r} of its annotations ({a.source}) is not in "
                                        f"class_names ({', '.join(table[1:])})")
                index[n] = len(table)
                table.append(n)
            lut[c] = index[n]
        luts.append(lut)
    return tuple(table), luts


def grid_coords(slide: Slide, tissue: TissueMask | None, patch: int, mpp: float, overlap: int = 0,
                min_tissue: float = 0.5) -> np.ndarray:
    """Level-0 top-left corners (K×2 int64 ``x, y``) of the sliding grid inside tissue."""
    if not 0 <= overlap < patch:
        raise ConfigError(f"overlap must be in [0, patch={patch}), got {overlap}")
    s0 = mpp / slide.mpp
    size0 = patch * s0
    step0 = (patch - overlap) * s0
    W0, H0 = slide.dimensions
    nx = max(1, int(math.floor((W0 - size0) / step0)) + 1) if W0 >= size0 else 1
    ny = max(1, int(math.floor((H0 - size0) / step0)) + 1) if H0 >= size0 else 1
    xs = np.round(np.arange(nx) * step0).astype(np.int64)
    ys = np.round(np.arange(ny) * step0).astype(np.int64)
    yy, xx = np.meshgrid(ys, xs, indexing="ij")
    xy = np.stack([xx.ravel(), yy.ravel()], 1)
    if tissue is not None and min_tissue > 0:
        f = tissue.fraction_in(xy[:, 0], xy[:, 1], size0)
        xy = xy[f >= min_tissue]
    return xy


def random_coords(rng: np.random.Generator, slide: Slide, tissue: TissueMask, n: int, patch: int, mpp: float,
                  min_tissue: float = 0.5, ii=None, max_rounds: int = 50) -> np.ndarray:
    """``n`` random level-0 top-left corners (n×2 int64) of patches centred in tissue."""
    s0 = mpp / slide.mpp
    size0 = patch * s0
    W0, H0 = slide.dimensions
    ty, tx = np.nonzero(tissue.mask)
    if ty.size == 0:
        raise ConfigError(f"no tissue found in {slide.path}")
    ii = tissue.integral() if ii is None else ii
    # corners on the output pixel grid when a patch pixel is a whole number of level-0 px:
    # reads are then exact area averages / exact crops of a pyramid level
    q = float(round(s0)) if s0 >= 1 and abs(s0 - round(s0)) < 1e-6 else 1.0
    out = np.zeros((0, 2), np.int64)
    need = n
    for _ in range(max_rounds):
        m = max(2 * need, 16)
        k = rng.integers(0, ty.size, m)
        cx = (tx[k] + rng.random(m)) * tissue.scale
        cy = (ty[k] + rng.random(m)) * tissue.scale
        x = np.clip(np.floor((cx - size0 / 2) / q) * q, 0, max(W0 - size0, 0) // q * q).astype(np.int64)
        y = np.clip(np.floor((cy - size0 / 2) / q) * q, 0, max(H0 - size0, 0) // q * q).astype(np.int64)
        ok = tissue.fraction_in(x, y, size0, ii) >= min_tissue if min_tissue > 0 else np.ones(m, bool)
        out = np.concatenate([out, np.stack([x[ok], y[ok]], 1)])
        if len(out) >= n:
            return out[:n]
        need = n - len(out)
    raise ConfigError(f"{slide.path}: could not place {n} patches of {patch} px at {mpp} µm/px with ≥ "
                      f"{min_tissue:.0%} tissue (found {len(out)}); lower min_tissue")


class WSIPatchSource(IndexedDataset):
    """Patches of whole-slide images with their nuclei instance maps.

    Args:
        slides: slide paths (or :class:`Slide` objects), or one path / folder.
        annotations: per-slide annotation paths (GeoJSON, HoVer-Net JSON, ``.npz``) or
            :class:`Annotations`, ``None`` entries for unannotated slides; ``"auto"``
            (default) looks for ``<stem>.npz/.geojson/.json`` beside each slide; ``None``:
            no labels (all-zero maps).
        patch: patch side at the target resolution (px). mpp: target µm/px.
        mode: ``"random"`` (``patches_per_epoch`` random patches in tissue) or ``"grid"``.
        overlap: grid overlap in target px. min_tissue: minimum tissue fraction of a patch.
        patches_per_epoch: random mode, all ranks together (default: 1000 per slide).
        seed: seeds coordinates and order (with the epoch).
        backend: slide backend (:func:`open_slide`). slide_mpp: level-0 mpp override.
        cache_bytes: tile cache per slide per process.
        on_error: ``"raise"`` (default) a :class:`SlideError` naming the file, or
            ``"skip"``: leave unreadable slides out (listed in ``self.skipped``, one
            warning); a read failure at ``__getitem__`` then falls back to the next patch.
        shard: split the epoch's patches across ranks (``True``: rank/world size from
            ``rank``/``world_size`` or ``torch.distributed``/``torchrun``; ``False``: every
            rank sees all patches — right for InsMixLoader, which shards itself; ``None``
            (default): ``True`` when ``rank`` or ``world_size`` is given, else ``False``).
        rank, world_size: explicit sharding.
        shuffle: grid mode visits the grid in an order drawn from ``(seed, epoch)``;
            ``False``: slide by slide in row-major order (sliding-window inference, best
            tile-cache reuse with overlap).
        prefetch: read the next ``prefetch`` patches in background threads of the calling
            process (sequential access: sliding-window inference, a single-process loop);
            0 (default) when a loader's worker processes already read ahead.
        tissue_mpp: resolution of tissue detection.
        progress: progress bar while opening slides and detecting tissue.
        with_types: ``None`` (default): ``(image, labels, types)`` samples when the annotations
            carry classes; ``False``: ``(image, labels)`` always; ``True``: typed (they must).
        class_names: the shared class table (``[0] == "background"``; default: every slide's
            class names, in order of first appearance; see :func:`shared_class_table`).

    Attributes:
        class_names: the shared class table of typed samples (None: untyped).
    """

    sharded = False

    def __init__(self, slides, annotations="auto", *, patch: int = 256, mpp: float = 0.5, mode: str = "random",
                 overlap: int = 0, min_tissue: float = 0.5, patches_per_epoch: int | None = None, seed: int = 0,
                 backend: str = "auto", slide_mpp: float | None = None, cache_bytes: int = DEFAULT_CACHE_BYTES,
                 on_error: str = "raise", rank: int | None = None, world_size: int | None = None,
                 shard: bool | None = None, shuffle: bool = True, prefetch: int = 0, tissue_mpp: float = 8.0,
                 progress: bool | None = None, with_types: bool | None = None, class_names=None) -> None:
        check_choice("mode", mode, ("random", "grid"))
        check_choice("on_error", on_error, ("raise", "skip"))
        patch = check_int("patch", patch, 8)
        mpp = check_number("mpp", mpp, 0.0, lo_open=True)
        min_tissue = check_number("min_tissue", min_tissue, 0.0, 1.0)
        if mode == "grid":
            overlap = check_int("overlap", overlap, 0, patch - 1)
        prefetch = check_int("prefetch", prefetch, 0)
        seed = check_seed(seed)
        shuffle = check_bool("shuffle", shuffle)
        if patches_per_epoch is not None:
            if mode == "grid":
                raise ConfigError("patches_per_epoch applies to mode='random' (grid mode visits the whole grid)")
            patches_per_epoch = check_int("patches_per_epoch", patches_per_epoch, 1)
        if shard is not None:
            shard = check_bool("shard", shard)
        if with_types is not None:
            with_types = check_bool("with_types", with_types)
        slides = list_slides(slides)
        if annotations == "auto":
            annotations = [find_annotations(s.path if isinstance(s, Slide) else s) for s in slides]
            _warn_unannotated(slides, annotations)
        elif annotations is None or isinstance(annotations, (str, os.PathLike, Annotations)):
            annotations = [annotations] * len(slides) if annotations is None or len(slides) == 1 else None
            if annotations is None:
                raise InputError("give one annotation entry per slide")
        annotations = list(annotations)
        if len(annotations) != len(slides):
            raise InputError(f"{len(slides)} slides but {len(annotations)} annotation entries")
        self.patch, self.mpp, self.mode = int(patch), float(mpp), mode
        self.overlap, self.min_tissue, self.seed = int(overlap), float(min_tissue), int(seed)
        self.on_error = on_error
        self.shuffle = shuffle
        self.prefetch = prefetch
        self.skipped: list[tuple[str, str]] = []
        self.read_errors: list[tuple[str, str]] = []
        self.slides: list[Slide] = []
        self.annotations: list[Annotations | None] = []
        self.tissue: list[TissueMask] = []
        from tqdm import tqdm

        bar = tqdm(list(zip(slides, annotations)), desc="slides", unit="slide",
                   disable=None if progress is None else not progress)
        for s, a in bar:
            try:
                sl = open_slide(s, backend, mpp=slide_mpp, cache_bytes=cache_bytes)
                ts = detect_tissue(sl, mpp=tissue_mpp)
                ann = None if a is None else load_annotations(a)
            except Exception as e:  # noqa: BLE001
                if on_error == "raise":
                    if isinstance(e, SlideError) or type(e).__name__.endswith("Error") and str(s) in str(e):
                        raise
                    raise SlideError(f"cannot use slide {s}: {type(e).__name__}: {e}") from e
                self.skipped.append((str(s), f"{type(e).__name__}: {e}"))
                continue
            sl.close()  # reopened lazily where it is read (worker processes)
            self.slides.append(sl)
            self.annotations.append(ann)
            self.tissue.append(ts)
        if self.skipped:
            warnings.warn(f"WSIPatchSource skipped {len(self.skipped)} unreadable slide(s): "
                          + "; ".join(f"{p} ({r})" for p, r in self.skipped), stacklevel=2)
        if not self.slides:
            raise SlideError("no readable slides" + (f" (skipped: {self.skipped})" if self.skipped else ""))
        self.class_names, self._class_luts = shared_class_table(
            self.annotations, class_names, with_types, [str(sl.path) for sl in self.slides])
        self.tissue_area = np.array([t.mask.sum() * t.scale ** 2 for t in self.tissue], np.float64)
        if mode == "random":
            if self.tissue_area.sum() <= 0:
                raise ConfigError("no tissue found in any slide")
            self.patches_per_epoch = patches_per_epoch if patches_per_epoch is not None else 1000 * len(self.slides)
            self._grid = None
        else:
            parts = []
            for k, (sl, ts) in enumerate(zip(self.slides, self.tissue)):
                xy = grid_coords(sl, ts, self.patch, self.mpp, self.overlap, self.min_tissue)
                parts.append(np.concatenate([np.full((len(xy), 1), k, np.int64), xy], 1))
            self._grid = np.concatenate(parts) if parts else np.zeros((0, 3), np.int64)
            self.patches_per_epoch = len(self._grid)
            if self.patches_per_epoch == 0:
                raise ConfigError(f"no grid patch has ≥ {self.min_tissue:.0%} tissue; lower min_tissue")
        if shard is None:
            shard = rank is not None or world_size is not None
        self.shard = shard
        self.sharded = self.shard
        info = dist_info(rank, world_size) if shard else dist_info(0, 1)
        self.rank, self.world_size = info.rank, info.world_size
        self._epoch = None
        self.set_epoch(0)

    # -- coordinates -------------------------------------------------------------------
    def epoch_coords(self, epoch: int) -> np.ndarray:
        """All ranks' patches of ``epoch`` in epoch order: K×3 int64 ``(slide, x, y)``."""
        if self.mode == "grid":
            return self._grid[epoch_order(len(self._grid), seed=self.seed, epoch=epoch, shuffle=self.shuffle)]
        ss = np.random.SeedSequence([self.seed & (2**64 - 1), int(epoch), _COORD_STREAM])
        rng = np.random.Generator(np.random.Philox(ss))
        n = self.patches_per_epoch
        which = rng.choice(len(self.slides), size=n, p=self.tissue_area / self.tissue_area.sum())
        out = np.zeros((n, 3), np.int64)
        out[:, 0] = which
        for k in range(len(self.slides)):
            sel = np.flatnonzero(which == k)
            if sel.size:
                out[sel, 1:] = random_coords(rng, self.slides[k], self.tissue[k], sel.size, self.patch, self.mpp,
                                             self.min_tissue)
        return out

    def set_epoch(self, epoch: int) -> None:
        epoch = int(epoch)
        if epoch == self._epoch:
            return
        coords = self.epoch_coords(epoch)
        idx = shard_indices(len(coords), rank=self.rank, world_size=self.world_size, seed=self.seed,
                            epoch=epoch, shuffle=False)
        self.indices = idx               # positions in the epoch's list, this rank
        self.coords = coords[idx]
        self._epoch = epoch

    @property
    def epoch(self) -> int:
        return self._epoch

    def __len__(self) -> int:
        return len(self.coords)

    def __repr__(self) -> str:
        return (f"WSIPatchSource({len(self.slides)} slides, patch={self.patch}, mpp={self.mpp}, mode={self.mode!r}, "
                f"len={len(self)}, rank={self.rank}/{self.world_size}, epoch={self._epoch})")

    # -- samples -----------------------------------------------------------------------
    def read_patch(self, slide: int, x: int, y: int):
        """The patch at level-0 ``(x, y)`` of slide ``slide`` and its instance map (and its type
        map, in the shared class ids, when the source is typed)."""
        sl = self.slides[slide]
        img = sl.read(x, y, self.patch, self.patch, self.mpp)
        ann = self.annotations[slide]
        if ann is None:
            lab = np.zeros((self.patch, self.patch), np.int32)
            return (img, lab, lab.copy()) if self.typed else (img, lab)
        if not self.typed:
            return img, ann.rasterize(x, y, (self.patch, self.patch), self.mpp / sl.mpp)
        lab, typ = ann.rasterize(x, y, (self.patch, self.patch), self.mpp / sl.mpp, with_types=True)
        return img, lab, self._class_luts[slide][typ]

    def read(self, k: int):
        """Patch ``k`` of this rank's epoch list (``0 ≤ k < len``): ``(image, labels)`` or, typed,
        ``(image, labels, types)``; with ``prefetch``, the next patches are read ahead in
        background threads."""
        if self.prefetch:
            return self._prefetched(k)
        return self._get(k)

    def _get(self, i: int):
        n = len(self)
        for k in range(16):
            s, x, y = (int(v) for v in self.coords[(i + k) % n])
            try:
                return self.read_patch(s, x, y)
            except SlideError as e:
                if self.on_error == "raise":
                    raise
                self.read_errors.append((str(self.slides[s].path), str(e)))
                warnings.warn(f"skipping unreadable patch: {e}", stacklevel=2)
        raise SlideError(f"16 consecutive unreadable patches from index {i}; last: {self.read_errors[-1][1]}")

    def _prefetched(self, i: int):
        """Read-ahead: patches ``i+1 … i+prefetch`` are read by background threads while the
        caller works on patch ``i`` (decoders, resizing and rasterization release the GIL)."""
        from concurrent.futures import ThreadPoolExecutor

        pid = os.getpid()
        if getattr(self, "_pool_pid", None) != pid or self._pool_epoch != self._epoch:
            if getattr(self, "_pool_pid", None) == pid:
                self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = ThreadPoolExecutor(max_workers=min(self.prefetch, 4), thread_name_prefix="wsi-prefetch")
            self._pool_pid, self._pool_epoch, self._futures = pid, self._epoch, {}
        fut = self._futures.pop(i, None)
        n = len(self)
        for j in range(i + 1, min(i + 1 + self.prefetch, n)):
            if j not in self._futures:
                self._futures[j] = self._pool.submit(self._get, j)
        if len(self._futures) > 4 * self.prefetch:  # random access: drop stale read-aheads
            for j in [j for j in self._futures if not i < j <= i + self.prefetch]:
                self._futures.pop(j).cancel()
        return fut.result() if fut is not None else self._get(i)

    def __getstate__(self):
        d = self.__dict__.copy()
        for k in ("_pool", "_pool_pid", "_pool_epoch", "_futures"):
            d.pop(k, None)
        return d

    def close(self) -> None:
        if getattr(self, "_pool_pid", None) == os.getpid():
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool_pid = None
        for s in self.slides:
            s.close()


def build_bank_from_slides(slides, annotations="auto", *, mpp: float | None = None, patch: int = 512,
                           margin: int = 64, backend: str = "auto", slide_mpp: float | None = None,
                           max_patches: int | None = None, seed: int = 0, progress: bool | None = True,
                           cache_bytes: int = DEFAULT_CACHE_BYTES, with_types: bool | None = None, class_names=None,
                           **bank_kwargs):
    """An :class:`~insmix_fast.InstanceBank` of every annotated nucleus, streamed patch by patch.

    The annotated area is covered by a grid of ``patch`` px windows (at ``mpp``, default
    each slide's level-0 mpp) with stride ``patch - margin``; each nucleus is drawn in
    exactly one window — the one whose core (``stride`` box) holds its bounding box's
    top-left — so no nucleus enters twice, and any nucleus smaller than ``margin`` px
    is whole there. Only windows with nuclei are read. ``max_patches``: a random subset
    (seeded) of the windows. Memory: one window plus the tile cache.

    Classified annotations give a typed bank whose ``class_names`` is the slides' shared class
    table (``with_types``, ``class_names``: as for :class:`WSIPatchSource`, so a bank and a
    source built with the same arguments number the classes alike).
    """
    from ..bank import InstanceBank

    patch = check_int("patch", patch, 8)
    margin = check_int("margin", margin, 0, patch - 1)
    if max_patches is not None:
        max_patches = check_int("max_patches", max_patches, 1)
    if with_types is not None:
        with_types = check_bool("with_types", with_types)
    slides = list_slides(slides)
    if annotations == "auto":
        annotations = [find_annotations(s.path if isinstance(s, Slide) else s) for s in slides]
    annotations = list(annotations)
    if len(annotations) != len(slides):
        raise InputError(f"{len(slides)} slides but {len(annotations)} annotation entries")
    jobs = []  # (slide index, x0, y0, polygon ids)
    opened = []
    for k, (s, a) in enumerate(zip(slides, annotations)):
        if a is None:
            raise InputError(f"slide {s} has no annotations (looked for <stem>.npz/.geojson/.json)")
        sl = open_slide(s, backend, mpp=slide_mpp, cache_bytes=cache_bytes)
        ann = load_annotations(a)
        opened.append((sl, ann))
        m = sl.mpp if mpp is None else float(mpp)
        s0 = m / sl.mpp
        step0 = (patch - margin) * s0
        if len(ann) == 0:
            continue
        gx = np.floor(ann.bbox[:, 0] / step0).astype(np.int64)
        gy = np.floor(ann.bbox[:, 1] / step0).astype(np.int64)
        cell = gy * (int(gx.max()) + 1) + gx
        order = np.argsort(cell, kind="stable")
        cells, starts = np.unique(cell[order], return_index=True)
        bounds = np.append(starts, len(order))
        for c, a0, a1 in zip(cells, bounds[:-1], bounds[1:]):
            ids = order[a0:a1]
            jobs.append((k, float(gx[ids[0]] * step0), float(gy[ids[0]] * step0), np.sort(ids), m))
    try:
        names, luts = shared_class_table([ann for _, ann in opened], class_names, with_types,
                                         [str(sl.path) for sl, _ in opened])
    except Exception:
        for sl, _ in opened:
            sl.close()
        raise
    if max_patches is not None and len(jobs) > max_patches:
        rng = np.random.Generator(np.random.Philox(np.random.SeedSequence([seed, 0x42414E4B])))
        keep = np.sort(rng.choice(len(jobs), size=int(max_patches), replace=False))
        jobs = [jobs[i] for i in keep]

    def samples():
        for k, x0, y0, ids, m in jobs:
            sl, ann = opened[k]
            img = sl.read(x0, y0, patch, patch, m)
            if names is None:
                yield img, ann.rasterize(x0, y0, (patch, patch), m / sl.mpp, ids=ids)
            else:
                lab, typ = ann.rasterize(x0, y0, (patch, patch), m / sl.mpp, ids=ids, with_types=True)
                yield img, lab, luts[k][typ]

    if names is not None:
        bank_kwargs.setdefault("class_names", names)
    try:
        return InstanceBank.from_samples(samples(), total=len(jobs), progress=progress, **bank_kwargs)
    finally:
        for sl, _ in opened:
            sl.close()
