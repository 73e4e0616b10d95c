"""The annotation store: a slide's nuclei converted once into one memory-mappable file.

**Format** (``<annotation file name>.insmix-store``, version :data:`FORMAT_VERSION`): the
8-byte magic ``IMXSTORE``, then raw little-endian arrays at 64-byte aligned offsets —
``points`` (P×2 float32), ``ring_offsets`` (R+1 int64), ``poly_offsets`` (N+1 int64),
``types`` (N int16 class ids, 0 = none), ``bbox`` (N×4 float64) and the grid index
(``index_keys``, ``index_offsets``, ``index_ids``, ``index_big``;
:class:`~insmix_fast.wsi.spatial.GridIndex`) —, then a JSON header (array dtypes,
shapes, offsets and CRC-32s; the source key; class names; counts) and a 24-byte trailer
(header offset, header length, ``IMXSTEND``). Opening reads the header and maps the
file once: page-cache pages are shared by every process that maps it (ranks, loader
workers), and nothing is parsed.

**Cache** (:func:`open_store`): the store of ``case1.geojson`` is
``case1.geojson.insmix-store`` beside it when that folder is writable, else
``<cache dir>/case1-<hash of the absolute path>.geojson.insmix-store`` (cache dir:
``$INSMIX_FAST_CACHE_DIR``, else ``$XDG_CACHE_HOME/insmix_fast/annotations``, else
``~/.cache/insmix_fast/annotations``). A store is used when its header matches the source's
name, size and modification time (and, in the cache dir, absolute path) and the format
version; otherwise it is rebuilt. The store beside a file does not record the folder, so a
folder of slides moved or mounted elsewhere keeps its stores.

**Concurrency**: conversion runs under an exclusive ``flock`` on ``.<store name>.lock``
beside the store; a process that finds the lock taken waits, then maps the store the
first one wrote. The store is written to a temporary file in the same folder, fsynced,
and renamed into place, so a crash mid-conversion leaves no partial store (its temporary
file is removed by the next conversion), and a failed parse never writes one. On file
systems without ``flock`` (some network mounts) conversion still works, unlocked: two
processes may then both convert, and the last rename wins.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import socket
import struct
import sys
import time
import warnings
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import ReaderError
from .jsonscan import class_table, scan_annotations
from .spatial import CELL, GridIndex

__all__ = ["STORE_SUFFIX", "FORMAT_VERSION", "OpenedStore", "StoreWriter", "read_store", "open_store",
           "convert_to_store", "store_locations", "default_cache_dir", "check_store", "find_store"]

STORE_SUFFIX = ".insmix-store"
FORMAT_VERSION = 1
_MAGIC = b"IMXSTORE"
_END = b"IMXSTEND"
_TRAILER = struct.Struct("<QQ8s")
_ALIGN = 64
_FORMAT_NAME = "insmix-fast annotation store"
ARRAYS = ("points", "ring_offsets", "poly_offsets", "types", "bbox",
          "index_keys", "index_offsets", "index_ids", "index_big")


# ----------------------------------------------------------------------------- writing
class StoreWriter:
    """Writes a store to a temporary file beside ``path``; :meth:`commit` renames it into place.

    Arrays are appended in pieces (:meth:`begin` / :meth:`write` / :meth:`end`) or whole
    (:meth:`add`); nothing is kept in memory. Use as a context manager: an exception
    removes the temporary file.
    """

    def __init__(self, path) -> None:
        self.path = Path(path)
        self.tmp = self.path.with_name(f".{self.path.name}.tmp-{os.getpid()}-{os.urandom(4).hex()}")
        self.f = open(self.tmp, "wb")
        self.f.write(_MAGIC)
        self.arrays: dict = {}
        self._cur = None

    def _pad(self) -> int:
        pos = self.f.tell()
        pad = -pos % _ALIGN
        if pad:
            self.f.write(b"\0" * pad)
        return pos + pad

    def begin(self, name: str, dtype, inner: tuple = ()) -> None:
        self._cur = {"name": name, "dtype": np.dtype(dtype).newbyteorder("<"), "inner": tuple(inner),
                     "offset": self._pad(), "rows": 0, "crc": 0}

    def write(self, chunk) -> None:
        c = self._cur
        a = np.ascontiguousarray(chunk, c["dtype"])
        if a.shape[1:] != c["inner"]:
            raise ValueError(f"{c['name']}: rows of shape {a.shape[1:]}, expected {c['inner']}")
        mv = memoryview(a).cast("B")
        c["crc"] = zlib.crc32(mv, c["crc"])
        self.f.write(mv)
        c["rows"] += len(a)

    def end(self) -> None:
        c, self._cur = self._cur, None
        self.arrays[c["name"]] = {"dtype": c["dtype"].str, "shape": [c["rows"], *c["inner"]],
                                  "offset": c["offset"], "crc32": c["crc"]}

    def add(self, name: str, arr) -> None:
        arr = np.asarray(arr)
        self.begin(name, arr.dtype, arr.shape[1:])
        step = max(1, (16 << 20) // max(arr[:1].nbytes, 1))
        for i in range(0, len(arr), step):
            self.write(arr[i:i + step])
        self.end()

    def commit(self, meta: dict) -> Path:
        header = dict(meta, arrays=self.arrays)
        blob = json.dumps(header, separators=(",", ":")).encode()
        off = self._pad()
        self.f.write(blob)
        self.f.write(_TRAILER.pack(off, len(blob), _END))
        self.f.flush()
        os.fsync(self.f.fileno())
        self.f.close()
        os.replace(self.tmp, self.path)
        _fsync_dir(self.path.parent)
        return self.path

    def abort(self) -> None:
        with contextlib.suppress(OSError):
            self.f.close()
        with contextlib.suppress(OSError):
            self.tmp.unlink()

    def __enter__(self):
        return self

    def __exit__(self, et, ev, tb):
        if et is not None:
            self.abort()
        return False


def _fsync_dir(d: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(d, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


# ----------------------------------------------------------------------------- reading
def _read_header(path: Path) -> tuple[dict, int]:
    """(header, file size); ReaderError when the file is not a complete store."""
    try:
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            if size < len(_MAGIC) + _TRAILER.size or f.read(len(_MAGIC)) != _MAGIC:
                raise ReaderError(f"{path} is not an insmix-fast annotation store")
            f.seek(size - _TRAILER.size)
            off, n, end = _TRAILER.unpack(f.read(_TRAILER.size))
            if end != _END or off + n + _TRAILER.size != size:
                raise ReaderError(f"{path}: incomplete annotation store (no trailer)")
            f.seek(off)
            header = json.loads(f.read(n))
    except OSError as e:
        raise ReaderError(f"cannot read annotation store {path}: {e}") from e
    except ValueError as e:
        if isinstance(e, ReaderError):
            raise
        raise ReaderError(f"{path}: corrupt annotation store header ({e})") from e
    if header.get("format") != _FORMAT_NAME:
        raise ReaderError(f"{path} is not an insmix-fast annotation store")
    if header.get("version") != FORMAT_VERSION:
        raise ReaderError(f"{path}: annotation store version {header.get('version')}, this insmix-fast reads "
                          f"version {FORMAT_VERSION} (delete it; it is rebuilt from its source)")
    for name in ARRAYS:
        a = header.get("arrays", {}).get(name)
        if a is None:
            raise ReaderError(f"{path}: annotation store lacks the array {name!r}")
        nbytes = int(np.prod(a["shape"])) * np.dtype(a["dtype"]).itemsize
        if a["offset"] % _ALIGN or a["offset"] + nbytes > off:
            raise ReaderError(f"{path}: annotation store array {name!r} lies outside the file")
    return header, size


def read_store(path, mmap: bool = True) -> tuple[dict, dict]:
    """``(arrays, header)`` of a store; arrays are read-only views of one memory map
    (``mmap=True``) or read into memory."""
    path = Path(path)
    header, size = _read_header(path)
    arrays = {}
    mm = np.memmap(path, np.uint8, mode="r") if mmap else None
    with contextlib.ExitStack() as stack:
        f = None if mmap else stack.enter_context(open(path, "rb"))
        for name, a in header["arrays"].items():
            dt, shape, off = np.dtype(a["dtype"]), tuple(a["shape"]), int(a["offset"])
            count = int(np.prod(shape))
            if mm is not None:
                arrays[name] = mm[off:off + count * dt.itemsize].view(dt).reshape(shape)
            else:
                f.seek(off)
                arrays[name] = np.fromfile(f, dt, count).reshape(shape)
    n = len(arrays["poly_offsets"]) - 1
    if (n < 0 or arrays["ring_offsets"][-1] != len(arrays["points"])
            or arrays["poly_offsets"][-1] != len(arrays["ring_offsets"]) - 1
            or len(arrays["bbox"]) != n or len(arrays["types"]) != n):
        raise ReaderError(f"{path}: inconsistent annotation store arrays")
    return arrays, header


def check_store(path) -> list[str]:
    """Full verification of a store: CRC-32 of every array, offsets, boxes, class ids and the
    index. Returns the problems found (empty: the store is sound)."""
    path = Path(path)
    try:
        arrays, header = read_store(path)
    except ReaderError as e:
        return [str(e)]
    problems = []
    for name, a in header["arrays"].items():
        v = arrays[name]
        crc = 0
        flat = v.reshape(-1).view(np.uint8) if v.size else np.zeros(0, np.uint8)
        for i in range(0, flat.size, 16 << 20):
            crc = zlib.crc32(memoryview(np.ascontiguousarray(flat[i:i + (16 << 20)])), crc)
        if crc != a["crc32"]:
            problems.append(f"array {name!r}: CRC-32 mismatch (file corrupted)")
    if problems:
        return problems
    ro, po = arrays["ring_offsets"], arrays["poly_offsets"]
    if ro[0] != 0 or (np.diff(ro) < 3).any():
        problems.append("ring offsets: a ring with fewer than 3 vertices")
    if po[0] != 0 or (np.diff(po) < 1).any():
        problems.append("polygon offsets: a polygon without rings")
    pts, bbox = arrays["points"], arrays["bbox"]
    if not np.isfinite(pts).all():
        problems.append("points: non-finite coordinates")
    n = len(po) - 1
    if n and not problems:
        starts = ro[po[:-1]]
        x, y = pts[:, 0], pts[:, 1]
        ref = np.stack([np.minimum.reduceat(x, starts), np.minimum.reduceat(y, starts),
                        np.maximum.reduceat(x, starts), np.maximum.reduceat(y, starts)], 1)
        if not np.array_equal(ref.astype(np.float64), bbox):
            problems.append("bbox: does not match the polygons")
    names = header.get("class_names")
    t = arrays["types"]
    if n and (t.min() < 0 or t.max() >= (len(names) if names else 1)):
        problems.append("types: a class id without a class name")
    index = GridIndex(arrays["index_keys"], arrays["index_offsets"], arrays["index_ids"], arrays["index_big"],
                      header.get("cell", CELL))
    why = index.check(n)
    if why:
        problems.append(f"index: {why}")
    elif n and not problems:
        ref = GridIndex.build(bbox, index.cell)
        if not all(np.array_equal(getattr(ref, k), getattr(index, k)) for k in GridIndex.ARRAYS):
            problems.append("index: does not match the boxes")
    return problems


# ----------------------------------------------------------------------------- conversion
def _source_key(src: Path) -> dict:
    try:
        st = src.stat()
    except OSError as e:
        raise ReaderError(f"cannot read annotations {src}: {e}") from e
    return {"name": src.name, "path": os.path.abspath(src), "size": st.st_size, "mtime_ns": st.st_mtime_ns}


def convert_to_store(source, store_path, *, fmt: str = "auto", on_error: str = "raise", progress=None,
                     chunk: int = 8 << 20) -> dict:
    """Stream ``source`` (GeoJSON / HoVer-Net JSON) into a new store at ``store_path``
    (atomically); returns its header. ``progress``: show a byte progress bar (None: when a
    terminal). Raises :class:`ReaderError` (then nothing is written)."""
    src = Path(source)
    key = _source_key(src)
    t0 = time.perf_counter()
    bar = None
    if progress or (progress is None and sys.stderr.isatty()):
        from tqdm import tqdm

        bar = tqdm(total=key["size"], unit="B", unit_scale=True, unit_divisor=1024, desc=f"index {src.name}",
                   mininterval=1.0, leave=False)
    ring_parts, nring_parts, label_parts, bbox_parts = [], [], [], []

    def sink(pts, ring_len, poly_nrings, poly_label, bbox):
        w.write(pts)
        ring_parts.append(ring_len.copy())
        nring_parts.append(poly_nrings.copy())
        label_parts.append(poly_label.copy())
        bbox_parts.append(bbox.copy())

    try:
        with StoreWriter(store_path) as w:
            w.begin("points", np.float32, (2,))
            info = scan_annotations(src, sink, expect=fmt, on_error=on_error, chunk=chunk, progress=bar)
            w.end()
            if _source_key(src) != key:
                raise ReaderError(f"{src} changed while it was being converted; open it again")
            for name, parts in (("ring_offsets", ring_parts), ("poly_offsets", nring_parts)):
                lens = np.concatenate(parts) if parts else np.zeros(0, np.int64)
                parts.clear()
                off = np.zeros(len(lens) + 1, np.int64)
                np.cumsum(lens, out=off[1:])
                del lens
                w.add(name, off)
                del off
            labels = np.concatenate(label_parts) if label_parts else np.zeros(0, np.int32)
            label_parts.clear()
            types, class_names, source_types = class_table(info.format, labels, info.raw_names)
            del labels
            w.add("types", types)
            bbox = np.concatenate(bbox_parts) if bbox_parts else np.zeros((0, 4), np.float64)
            bbox_parts.clear()
            w.add("bbox", bbox)
            index = GridIndex.build(bbox, CELL)
            del bbox
            for k, a in index.arrays().items():
                w.add("index_" + k, a)
            del index
            meta = {
                "format": _FORMAT_NAME, "version": FORMAT_VERSION, "source": key, "source_format": info.format,
                "on_error": on_error, "cell": CELL, "closed": info.format == "hovernet",
                "class_names": list(class_names) if class_names else None, "source_types": source_types,
                "counts": {"items": info.items, "polygons": info.polygons, "rings": info.rings, "points": info.points,
                           "skipped": info.skipped, "ignored": info.ignored},
                "skipped_examples": info.skipped_examples,
                "build": {"pid": os.getpid(), "host": socket.gethostname(), "seconds": round(time.perf_counter() - t0, 3),
                          "created": time.strftime("%Y-%m-%dT%H:%M:%S%z")},
            }
            w.commit(meta)
    finally:
        if bar is not None:
            bar.close()
    return meta


# ----------------------------------------------------------------------------- cache
def default_cache_dir() -> Path:
    """``$INSMIX_FAST_CACHE_DIR``, else ``$XDG_CACHE_HOME/insmix_fast/annotations``, else ``~/.cache/…``."""
    env = os.environ.get("INSMIX_FAST_CACHE_DIR")
    if env:
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "insmix_fast" / "annotations"


def store_locations(source, cache_dir=None) -> tuple[Path, Path]:
    """``(beside, in_cache)``: where the store of ``source`` lives, by preference."""
    src = Path(source)
    absolute = os.path.abspath(src)
    digest = hashlib.sha1(absolute.encode("utf-8", "surrogatepass")).hexdigest()[:16]
    cache = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    stem, dot, suf = src.name.rpartition(".")
    name = f"{stem}-{digest}.{suf}" if dot else f"{src.name}-{digest}"
    return src.with_name(src.name + STORE_SUFFIX), cache / (name + STORE_SUFFIX)


def _fresh(header: dict, key: dict, in_cache: bool) -> bool:
    s = header.get("source") or {}
    same = all(s.get(k) == key[k] for k in ("name", "size", "mtime_ns"))
    return same and (not in_cache or s.get("path") == key["path"])


def find_store(source, cache_dir=None) -> tuple[Path | None, str]:
    """``(store path or None, state)`` of ``source``'s existing store; state is ``"fresh"``,
    ``"stale"`` (its source changed), ``"corrupt: …"`` or ``"missing"``."""
    key = _source_key(Path(source))
    state = "missing"
    for k, cand in enumerate(store_locations(source, cache_dir)):
        if not cand.exists():
            continue
        try:
            header, _ = _read_header(cand)
        except ReaderError as e:
            state = f"corrupt: {e}"
            continue
        if _fresh(header, key, in_cache=k == 1):
            return cand, "fresh"
        state = "stale"
    return None, state


@contextlib.contextmanager
def _locked(lock_path: Path, timeout: float | None, what: str):
    """Exclusive ``flock`` on ``lock_path`` (waits; None timeout = forever)."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not POSIX
        yield False
        return
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o666)
    locked = False
    try:
        t0 = time.monotonic()
        told = False
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                locked = True
                break
            except BlockingIOError:
                pass
            except OSError as e:
                if e.errno in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL):
                    warnings.warn(f"{lock_path.parent}: file locking unsupported ({e.strerror}); converting "
                                  f"{what} without a lock (concurrent processes may each convert it)", stacklevel=4)
                    break
                raise
            if not told and time.monotonic() - t0 > 2.0:
                print(f"insmix-fast: waiting for another process converting {what} ...", file=sys.stderr, flush=True)
                told = True
            if timeout is not None and time.monotonic() - t0 > timeout:
                raise ReaderError(f"timed out after {timeout:.0f} s waiting for the conversion lock {lock_path}")
            time.sleep(0.05)
        yield locked
    finally:
        if locked:
            with contextlib.suppress(OSError):
                fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


def _writable_lock(store: Path) -> Path | None:
    """The lock file beside ``store`` when that folder is writable (created), else None."""
    lock = store.with_name(f".{store.name}.lock")
    try:
        store.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o666)
        os.close(fd)
        return lock
    except OSError:
        return None


def _remove_temps(store: Path) -> None:
    """Temporary files of conversions that died (we hold the lock: none is running)."""
    for t in store.parent.glob(f".{store.name}.tmp-*"):
        with contextlib.suppress(OSError):
            t.unlink()


@dataclass
class OpenedStore:
    """A mapped store: ``arrays`` (read-only views), ``header``, and whether this call ``built`` it."""

    path: Path
    arrays: dict
    header: dict
    built: bool


def open_store(source, *, cache_dir=None, fmt: str = "auto", on_error: str = "raise", rebuild: bool = False,
               progress=None, lock_timeout: float | None = None, mmap: bool = True) -> OpenedStore:
    """Map the store of ``source``, converting it first when it is missing, stale or corrupt
    (``rebuild=True``: always). Safe to call from many processes at once: one converts, the
    others wait for it and map its result. See the module docstring."""
    src = Path(os.fspath(source))
    key = _source_key(src)
    beside, cached = store_locations(src, cache_dir)
    if not rebuild:
        for k, cand in enumerate((beside, cached)):
            opened = _try_open(cand, key, in_cache=k == 1, mmap=mmap)
            if opened is not None:
                return _checked(opened, src, on_error)
    for target in (beside, cached):
        lock = _writable_lock(target)
        if lock is not None:
            break
    else:
        raise ReaderError(f"cannot write the annotation store of {src}: neither {beside.parent} nor the cache "
                          f"folder {cached.parent} is writable (set INSMIX_FAST_CACHE_DIR or pass cache_dir)")
    in_cache = target is cached
    with _locked(lock, lock_timeout, src.name):
        if not rebuild:  # another process may have finished it while we waited
            opened = _try_open(target, _source_key(src), in_cache, mmap)
            if opened is not None:
                return _checked(opened, src, on_error)
        _remove_temps(target)
        header = convert_to_store(src, target, fmt=fmt, on_error=on_error, progress=progress)
    arrays, header = read_store(target, mmap=mmap)
    return _checked(OpenedStore(target, arrays, header, built=True), src, on_error)


def _try_open(cand: Path, key: dict, in_cache: bool, mmap: bool) -> OpenedStore | None:
    if not cand.exists():
        return None
    try:
        header, _ = _read_header(cand)
        if not _fresh(header, key, in_cache):
            return None
        arrays, header = read_store(cand, mmap=mmap)
    except ReaderError:
        return None  # corrupt / old version: rebuilt
    return OpenedStore(cand, arrays, header, built=False)


_WARNED: set = set()


def _checked(opened: OpenedStore, src: Path, on_error: str) -> OpenedStore:
    """A store built with on_error='skip' that left features out: an error under 'raise'."""
    counts = opened.header.get("counts", {})
    n = counts.get("skipped", 0)
    if n:
        ex = "; ".join(f"feature {i} {why}" for i, why in opened.header.get("skipped_examples", [])[:3])
        if on_error == "raise":
            raise ReaderError(f"{src}: {n} bad feature(s) ({ex}); pass on_error='skip' to use the others")
        if str(opened.path) not in _WARNED:
            _WARNED.add(str(opened.path))
            warnings.warn(f"{src}: {n} bad feature(s) left out ({ex})", stacklevel=4)
    return opened
