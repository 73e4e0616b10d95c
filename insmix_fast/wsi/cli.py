"""``insmix-fast wsi``: whole-slide utilities on the command line.

``insmix-fast wsi index SLIDES...`` converts each slide's GeoJSON / HoVer-Net JSON into its
annotation store ahead of training (:mod:`insmix_fast.wsi.store`) and prints polygons,
classes and bytes per slide; ``--check`` verifies the existing stores instead (fresh,
checksums, offsets, boxes, index) without converting anything.

The main CLI adds the subcommand with :func:`register`.
"""

from __future__ import annotations

import time
from pathlib import Path

from ..errors import ReaderError

__all__ = ["register"]

_ANNOTATION_SUFFIXES = (".geojson", ".json")


def register(subparsers) -> None:
    """Add ``wsi`` (with ``index``) to the ``insmix-fast`` sub-command parsers."""
    p = subparsers.add_parser("wsi", help="whole-slide utilities (annotation stores)",
                              description="Whole-slide image utilities.")
    sub = p.add_subparsers(dest="wsi_command", metavar="{index}")
    sub.required = True
    i = sub.add_parser(
        "index", help="convert slides' GeoJSON / HoVer-Net annotations into memory-mapped stores",
        description="Convert each slide's annotation file (<stem>.geojson / .json beside it, QuPath GeoJSON or "
                    "HoVer-Net JSON) into its annotation store once, ahead of training: later opens in any process "
                    "memory-map it. Prints polygons, classes and bytes per slide. Stores already fresh are reused.")
    i.add_argument("slides", nargs="+", metavar="SLIDE",
                   help="slide files, folders of slides, or annotation files (.geojson/.json) themselves")
    i.add_argument("--check", action="store_true",
                   help="verify the existing stores (fresh, CRC-32 checksums, offsets, boxes, index); convert nothing")
    i.add_argument("--rebuild", action="store_true", help="convert again even when the store is fresh")
    i.add_argument("--on-error", choices=("raise", "skip"), default="raise",
                   help="bad features (no geometry, malformed or degenerate coordinates): fail that slide (default) "
                        "or leave them out and count them")
    i.add_argument("--cache-dir", default=None,
                   help="store folder used when a slide's folder is not writable (default $INSMIX_FAST_CACHE_DIR or "
                        "~/.cache/insmix_fast/annotations)")
    i.add_argument("--no-progress", action="store_true", help="no progress bar")
    i.set_defaults(func=_cmd_index)


def _targets(specs) -> list[tuple[Path, Path | None]]:
    """(slide or annotation file, its annotation file or None) for every argument."""
    from .source import SLIDE_SUFFIXES, find_annotations, list_slides

    out = []
    for spec in specs:
        p = Path(spec)
        if p.suffix.lower() in _ANNOTATION_SUFFIXES:
            if not p.is_file():
                raise ReaderError(f"no such annotation file: {p}")
            out.append((p, p))
            continue
        if not p.exists():
            raise ReaderError(f"no such slide or folder: {p}")
        if p.is_file() and p.suffix.lower() not in SLIDE_SUFFIXES:
            raise ReaderError(f"{p}: not a slide ({', '.join(SLIDE_SUFFIXES)}) nor an annotation file "
                              f"({', '.join(_ANNOTATION_SUFFIXES)})")
        for s in list_slides(p):
            out.append((Path(s), find_annotations(s)))
    return out


def _size(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GiB"  # pragma: no cover


def _classes(ann) -> str:
    if not ann.class_names:
        return "untyped"
    names = ann.class_names[1:]
    shown = ", ".join(names[:6]) + (", …" if len(names) > 6 else "")
    return f"{len(names)} class{'es' if len(names) != 1 else ''} ({shown})"


def _cmd_index(args) -> int:
    from .annotations import Annotations, load_annotations
    from .store import check_store, find_store

    targets = _targets(args.slides)
    failed = []
    total_polys = total_bytes = 0
    for slide, ann_path in targets:
        head = slide.name if ann_path is None or ann_path == slide else f"{slide.name} ({ann_path.name})"
        if ann_path is None:
            print(f"{head}: no annotation file (looked for <stem>.npz/.geojson/.json beside it)")
            continue
        if ann_path.suffix.lower() == ".npz":
            ann = Annotations.load(ann_path)
            print(f"{head}: {len(ann):,} polygons, {_classes(ann)}, {_size(ann.nbytes)} (.npz store, used as is)")
            total_polys += len(ann)
            total_bytes += ann_path.stat().st_size
            continue
        if args.check:
            store, state = find_store(ann_path, args.cache_dir)
            if store is None:
                failed.append(slide)
                print(f"{head}: FAILED — no fresh store ({state}); run 'insmix-fast wsi index' without --check")
                continue
            problems = check_store(store)
            if problems:
                failed.append(slide)
                print(f"{head}: FAILED — {store}: " + "; ".join(problems))
                continue
            ann = Annotations.from_store(store)
            print(f"{head}: OK, {len(ann):,} polygons, {_classes(ann)}, {_size(store.stat().st_size)} — {store}")
            total_polys += len(ann)
            total_bytes += store.stat().st_size
            continue
        t0 = time.perf_counter()
        try:
            ann = load_annotations(ann_path, cache_dir=args.cache_dir, on_error=args.on_error,
                                   progress=not args.no_progress, rebuild=args.rebuild)
        except ReaderError as e:
            failed.append(slide)
            print(f"{head}: FAILED — {e}")
            continue
        info = ann.info
        store = Path(info["store"])
        c = info["counts"]
        what = f"converted in {time.perf_counter() - t0:.1f} s" if info.get("built") else "store up to date"
        extra = "".join(f", {c[k]:,} {k}" for k in ("skipped", "ignored") if c.get(k))
        print(f"{head}: {len(ann):,} polygons, {_classes(ann)}, {_size(store.stat().st_size)}{extra} "
              f"({what}) — {store}")
        total_polys += len(ann)
        total_bytes += store.stat().st_size
    done = len(targets) - len(failed)
    print(f"{done} of {len(targets)} slide(s) {'verified' if args.check else 'indexed'}: {total_polys:,} polygons, "
          f"{_size(total_bytes)} of stores")
    if failed:
        raise ReaderError(f"{len(failed)} of {len(targets)} slide(s) failed "
                          f"{'the check' if args.check else 'to convert'}: " + ", ".join(str(s) for s in failed[:5]))
    return 0

