"""Whole-slide patch throughput and memory (insmix_fast.wsi).

Run: ``pytest bench/bench_wsi.py --benchmark-only -s`` (``-s`` shows the summary lines).

* a synthetic 50k×50k pyramidal TIFF (JPEG tiles, levels 1/4/16/64, mpp 0.25, ~0.7M nuclei
  in a ``.npz`` annotation store) is written once into the cache directory
  ``$INSMIX_WSI_CACHE`` (default ``<tmp>/insmix_fast_wsi_cache``) and reused;
* ``test_wsi_patches``: image + rasterized instance map of 256×256 patches at 0.5 µm/px —
  random access in tissue, and a sliding grid (row-major, overlap 32) — each with and
  without InsMix (``insmix_batch`` on the batch); ``extra_info.patches_per_s``;
* ``test_wsi_vs_naive_full_level``: the same random patches at 1.0 µm/px (pyramid level 1),
  ours versus the naive way — read the whole level with ``tifffile.imread`` then crop
  (``extra_info``: load seconds, level bytes, patches/s including the load for 256 patches);
* ``test_wsi_stream_100k_peak_rss``: a 100k×100k slide (same writer, repeating 64 distinct
  tissue tiles) streamed by a fresh process — 1500 random + 1500 grid patches with their
  instance maps — whose peak RSS (``VmHWM``) must stay under 2 GiB.

Slides are skipped with a message when the cache directory lacks disk space.
"""

import json
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("tifffile")
pytest.importorskip("imagecodecs")

from insmix_fast import insmix_batch  # noqa: E402
from insmix_fast.wsi import WSIPatchSource, build_bank_from_slides, open_slide, write_synthetic_slide  # noqa: E402

CACHE = Path(os.environ.get("INSMIX_WSI_CACHE", Path(tempfile.gettempdir()) / "insmix_fast_wsi_cache"))
BATCH = 32


def _slide(name: str, size: int, need_gb: float, **kw):
    CACHE.mkdir(parents=True, exist_ok=True)
    path = CACHE / f"{name}.tif"
    done = CACHE / f"{name}.done"
    if done.exists() and path.exists():
        return path
    free = shutil.disk_usage(CACHE).free / 2**30
    if free < need_gb:
        pytest.skip(f"{name}: needs ~{need_gb:.1f} GiB free in {CACHE}, {free:.1f} GiB available "
                    "(set INSMIX_WSI_CACHE to a roomier place)")
    print(f"\nwriting synthetic {size}×{size} slide {path} (once) ...", flush=True)
    t = time.perf_counter()
    info = write_synthetic_slide(path, size, mpp=0.25, seed=0, downsamples=(1, 4, 16, 64), progress=True, **kw)
    done.write_text(json.dumps({"seconds": time.perf_counter() - t, "nuclei": info.n_nuclei,
                                "bytes": path.stat().st_size}))
    return path


@pytest.fixture(scope="module")
def slide50k():
    return _slide("synthetic50k", 50_000, 3.0, annotations="npz", unique_tiles=256)


@pytest.fixture(scope="module")
def bank_wsi(slide50k):
    return build_bank_from_slides([slide50k], patch=256, max_patches=24, progress=False)


def _source(slide, mode):
    kw = dict(patches_per_epoch=100_000) if mode == "random" else dict(overlap=32, shuffle=False)
    return WSIPatchSource(slide, patch=256, mpp=0.5, mode=mode, seed=0, progress=False, **kw)


@pytest.mark.parametrize("insmix", [False, True], ids=["plain", "insmix"])
@pytest.mark.parametrize("mode", ["random", "grid"])
def test_wsi_patches(benchmark, slide50k, bank_wsi, mode, insmix):
    src = _source(slide50k, mode)
    state = {"i": 0}

    def one_batch():
        i0 = state["i"]
        state["i"] += BATCH
        pairs = [src[(i0 + k) % len(src)] for k in range(BATCH)]
        images = np.stack([p[0] for p in pairs])
        labels = np.stack([p[1] for p in pairs])
        if insmix:
            r = insmix_batch(images, labels, bank_wsi, seed=0, indices=np.arange(i0, i0 + BATCH))
            return r.images
        return images

    one_batch()  # warm-up (Numba compile, first tiles)
    benchmark.pedantic(one_batch, rounds=6, iterations=1)
    pps = BATCH / benchmark.stats.stats.mean
    nuclei = float(np.mean([src[k][1].max() for k in range(8)]))
    benchmark.extra_info.update(patches_per_s=round(pps, 1), patch=256, mpp=0.5, mode=mode, insmix=insmix,
                                batch=BATCH, slide="50k×50k", bank=len(bank_wsi), nuclei_per_patch=nuclei)
    print(f"\n[wsi] {mode:6s} insmix={insmix!s:5s}: {pps:7.1f} patches/s (256² at 0.5 µm/px, ~{nuclei:.0f} nuclei each)")


def test_wsi_vs_naive_full_level(benchmark, slide50k):
    import tifffile

    src = WSIPatchSource(slide50k, None, patch=256, mpp=1.0, patches_per_epoch=256, seed=1, progress=False)
    sl = open_slide(slide50k)
    L = sl.best_level(1.0)
    coords = src.coords
    t = time.perf_counter()
    level = tifffile.imread(slide50k, level=L) if hasattr(tifffile, "imread") else None
    load_s = time.perf_counter() - t
    s = sl.level_downsamples[L]
    t = time.perf_counter()
    naive = [level[int(y / s):int(y / s) + 256, int(x / s):int(x / s) + 256] for _, x, y in coords]
    crop_s = time.perf_counter() - t
    ours = src[0][0]
    assert np.array_equal(ours, naive[0])  # same pixels, level crop
    level_bytes = level.nbytes
    del level, naive

    def read_all():
        for k in range(len(src)):
            src[k]

    benchmark.pedantic(read_all, rounds=3, iterations=1)
    ours_pps = len(src) / benchmark.stats.stats.mean
    naive_pps = len(coords) / (load_s + crop_s)
    benchmark.extra_info.update(patches_per_s=round(ours_pps, 1), naive_patches_per_s_256=round(naive_pps, 1),
                                naive_level_load_s=round(load_s, 2), naive_level_bytes=int(level_bytes), mpp=1.0)
    print(f"\n[wsi] level-1 patches: ours {ours_pps:.1f}/s; naive full-level read {load_s:.1f} s + "
          f"{level_bytes / 2**20:.0f} MiB in memory → {naive_pps:.1f} patches/s for the first 256")


_STREAM = textwrap.dedent("""
    import json, resource, sys, time
    import numpy as np
    from insmix_fast.wsi import WSIPatchSource
    path = sys.argv[1]
    def rss():
        # VmHWM: this process's peak RSS (ru_maxrss would inherit the forking parent's peak)
        for line in open("/proc/self/status"):
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    t = time.perf_counter()
    before = rss()
    n = 0
    nuc = 0
    ann = "auto"
    for mode, kw in (("random", dict(patches_per_epoch=1500)), ("grid", dict(overlap=0, shuffle=False))):
        src = WSIPatchSource(path, ann, patch=256, mpp=0.5, mode=mode, seed=0, progress=False, **kw)
        if mode == "random":
            after_open = rss()
        ann = src.annotations  # the second source shares the loaded annotations
        m = min(len(src), 1500)
        for i in range(m):
            img, lab = src[i]
            nuc += int(lab.max())
        n += m
    a = src.annotations[0]
    status = dict(line.split(":", 1) for line in open("/proc/self/status").read().splitlines() if ":" in line)
    kb = lambda k: int(status.get(k, "0 kB").split()[0]) * 1024 if k in status else None  # noqa: E731
    print(json.dumps({"rss_anon_end": kb("RssAnon"), "rss_file_end": kb("RssFile"),"patches": n, "nuclei": nuc, "seconds": time.perf_counter() - t,
                      "rss_after_imports": before, "rss_after_open": after_open, "peak_rss": rss(),
                      "annotation_bytes": int(a.points.nbytes + a.bbox.nbytes + a.ring_offsets.nbytes
                                              + a.poly_offsets.nbytes + a._cell_ids.nbytes + a._cell_off.nbytes)}))
""")


def test_wsi_stream_100k_peak_rss(benchmark, tmp_path):
    slide = _slide("synthetic100k", 100_000, 6.0, annotations="npz", unique_tiles=64)
    script = tmp_path / "stream.py"
    script.write_text(_STREAM)
    out = {}

    def run():
        r = subprocess.run([sys.executable, str(script), str(slide)], capture_output=True, text=True, timeout=1200,
                           env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])})
        if r.returncode:
            raise RuntimeError(r.stderr[-3000:])
        out.update(json.loads(r.stdout.strip().splitlines()[-1]))

    benchmark.pedantic(run, rounds=1, iterations=1)
    peak = out["peak_rss"] / 2**30
    ann = json.loads((CACHE / "synthetic100k.done").read_text())
    benchmark.extra_info.update(peak_rss_gib=round(peak, 3), rss_after_imports_gib=round(out["rss_after_imports"] / 2**30, 3),
                                rss_after_open_gib=round(out["rss_after_open"] / 2**30, 3),
                                rss_anon_end_gib=out["rss_anon_end"] and round(out["rss_anon_end"] / 2**30, 3),
                                rss_file_end_gib=out["rss_file_end"] and round(out["rss_file_end"] / 2**30, 3),
                                annotation_store_gib=round(out["annotation_bytes"] / 2**30, 3),
                                patches=out["patches"], patches_per_s=round(out["patches"] / out["seconds"], 1),
                                slide="100k×100k", annotated_nuclei=ann["nuclei"], slide_bytes=ann["bytes"])
    print(f"\n[wsi] 100k×100k slide ({ann['bytes'] / 2**30:.2f} GiB file, {ann['nuclei']} annotated nuclei): "
          f"streamed {out['patches']} patches + instance maps, peak RSS {peak:.2f} GiB "
          f"(after imports {out['rss_after_imports'] / 2**30:.2f} GiB, after opening slide + annotations "
          f"{out['rss_after_open'] / 2**30:.2f} GiB; annotation store {out['annotation_bytes'] / 2**30:.2f} GiB, "
          f"memory-mapped; at the end anonymous {(out['rss_anon_end'] or 0) / 2**30:.2f} GiB + "
          f"file-backed {(out['rss_file_end'] or 0) / 2**30:.2f} GiB), "
          f"{out['patches'] / out['seconds']:.1f} patches/s")
    assert peak < 2.0, f"peak RSS {peak:.2f} GiB ≥ 2 GiB"
