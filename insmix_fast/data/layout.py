"""Finding files in the folder layouts of public nuclei data sets.

Small helpers shared by the readers: case-insensitive sub-folder lookup,
indexing a folder's files by stem, and pairing images with label files so that
an image without labels *or* labels without an image raise
:class:`~insmix_fast.errors.ReaderError` naming the files.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from ..errors import ReaderError

__all__ = ["child_dir", "index_files", "pair_by_stem", "list_names", "as_path", "subdirs", "visible_files", "open_npy",
           "select_parts"]


def as_path(root) -> Path:
    """``root`` (str or PathLike) as a Path."""
    return Path(os.fspath(root))


def subdirs(root: Path) -> list[Path]:
    """The visible sub-folders of ``root``, sorted by name (``[]`` when it is not a folder)."""
    try:
        return sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    except OSError:
        return []


def visible_files(folder: Path) -> list[Path]:
    """The visible files of ``folder``, sorted by name (``[]`` when it cannot be listed)."""
    try:
        return sorted(f for f in folder.iterdir() if f.is_file() and not f.name.startswith("."))
    except OSError:
        return []


def child_dir(root: Path, *names: str) -> Path | None:
    """The sub-folder of ``root`` called any of ``names`` (case-insensitive, first match wins), or None."""
    if not root.is_dir():
        return None
    for n in names:
        p = root / n
        if p.is_dir():
            return p
    wanted = [n.lower() for n in names]
    by_name = {p.name.lower(): p for p in subdirs(root)}
    for n in wanted:
        if n in by_name:
            return by_name[n]
    return None


def list_names(paths: Iterable, limit: int = 10) -> str:
    """``"a.png, b.png (+3 more)"`` for messages."""
    items = [p.name if isinstance(p, Path) else str(p) for p in paths]
    more = f" (+{len(items) - limit} more)" if len(items) > limit else ""
    return ", ".join(items[:limit]) + more


def index_files(d: Path, suffixes: tuple[str, ...], what: str, recursive: bool = False) -> dict[str, Path]:
    """The files of ``d`` with one of ``suffixes`` (case-insensitive), keyed by stem.

    Hidden files are skipped. With ``recursive`` sub-folders are searched too.

    Raises:
        ReaderError: two files share a stem.
    """
    files: dict[str, Path] = {}
    it = d.rglob("*") if recursive else d.iterdir()
    for f in sorted(it):
        if f.is_file() and f.suffix.lower() in suffixes and not f.name.startswith("."):
            if f.stem in files:
                raise ReaderError(f"{d}: two {what} files share the stem {f.stem!r}: {files[f.stem]} and {f}")
            files[f.stem] = f
    return files


def pair_by_stem(
    images: dict[str, Path], labels: dict[str, Path], image_dir: Path, label_dir: Path, label_what: str
) -> list[str]:
    """Sorted stems present in both; raise when either side has a file the other lacks.

    Raises:
        ReaderError: no images; an image without a label file; a label file without an
            image (the counts and the first unmatched names are given).
    """
    if not images:
        raise ReaderError(f"{image_dir}: no image files")
    no_label = sorted(s for s in images if s not in labels)
    no_image = sorted(s for s in labels if s not in images)
    if no_label or no_image:
        parts = []
        if no_label:
            parts.append(f"no {label_what} in {label_dir} for image(s) {list_names([images[s] for s in no_label])}")
        if no_image:
            parts.append(f"no image in {image_dir} for {label_what}(s) {list_names([labels[s] for s in no_image])}")
        raise ReaderError(
            f"image/label count mismatch ({len(images)} images, {len(labels)} {label_what}s): " + "; ".join(parts)
        )
    return sorted(images)


def open_npy(path: Path, what: str, ndim: int, last: tuple[int, ...] | None = None):
    """Memory-map a ``.npy`` array (never read whole) and check its rank and last axis.

    Args:
        path: the file.
        what: what it holds, for messages (e.g. ``"PanNuke images"``).
        ndim: the required number of axes.
        last: allowed sizes of the last axis, or None.

    Raises:
        ReaderError: missing/unreadable file (an object array too: pickles are never
            loaded), wrong rank or last-axis size.
    """
    if not path.is_file():
        raise ReaderError(f"{what}: file not found: {path}")
    try:
        arr = np.load(str(path), mmap_mode="r", allow_pickle=False)
    except Exception as exc:
        raise ReaderError(f"{path}: cannot load {what} ({type(exc).__name__}: {exc})") from exc
    if not isinstance(arr, np.ndarray) or arr.dtype == object:
        raise ReaderError(f"{path}: {what} must be a plain numeric .npy array")
    if arr.ndim != ndim or (last is not None and arr.shape[-1] not in last):
        want = f"{ndim} axes" + (f" with the last of size {' or '.join(map(str, last))}" if last else "")
        raise ReaderError(f"{path}: {what} must have {want}, got shape {arr.shape}")
    return arr


def select_parts(layout: list[tuple], wanted, what: str, root: Path) -> list[tuple]:
    """The entries of ``layout`` (tuples whose first item is a part's name) named in ``wanted``.

    ``wanted``: None (all, as they are), one name, or several (kept in that order).
    Strings compare case-insensitively.

    Raises:
        ReaderError: a name that is not in ``layout`` (the message lists those found).
    """
    if wanted is None:
        return layout
    names = [wanted] if isinstance(wanted, (str, int, np.integer)) else list(wanted)

    def key(v):
        return v.lower() if isinstance(v, str) else v

    have = {key(entry[0]): entry for entry in layout}
    missing = [w for w in names if key(w) not in have]
    if missing or not names:
        found = ", ".join(str(entry[0]) for entry in layout)
        raise ReaderError(f"{root}: {what}(s) {missing or names} not found; found {what}(s) {found}")
    return [have[key(w)] for w in names]
