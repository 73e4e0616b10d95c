"""The traditional augmentation kernel per crop, one thread: what the loader runs per sample.

Workload: the loader's own batches — 64 random 256² crops of 64 synthetic 320² tiles with their
parameter rows from ``InsMixLoader(...).program.prepare`` (default :class:`TraditionalAugment`:
scale 0.8–1.2, shift 0.1, rotation ±180°, flips, colour jitter, blur on ~20 % of the crops),
int16 labels as the loader hands them over. Contenders, all in this process on one thread
(``NUMBA_NUM_THREADS=1``, ``cv2.setNumThreads(1)``):

* ``kernel (batch)`` — ``augment_batch_kernel`` on the 64 crops (the torch backend's call);
* ``kernel (per sample)`` — ``augment_sample`` crop by crop (the DALI backend's call);
* ``kernel, no blur`` / ``kernel, blur on all`` — the batch kernel with every blur off / on;
* ``albumentations`` — what a plain pipeline runs instead, crop by crop: ``Affine`` (same
  ranges, reflect-101) + flips + ``ColorJitter`` + ``GaussianBlur(p=0.2)`` on image and mask.

Rounds are interleaved (each round runs every contender once, in a rotated order); medians and
ranges over the rounds, in ms per crop. Run::

    python bench/bench_augment.py --rounds 9
    python -m pytest bench/bench_augment.py --benchmark-only
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

os.environ.setdefault("NUMBA_NUM_THREADS", "1")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

from bench_loader import Cycled, make_bank, make_tiles  # noqa: E402

N = 64
CROP = 256


def workload():
    """``(images, labels, params, taps)`` of 64 crops as the loader prepares them."""
    from insmix_fast.loader.loader import InsMixLoader

    tiles = make_tiles()
    loader = InsMixLoader(Cycled(tiles, 512), bank=make_bank(tiles), batch_size=16, crop=CROP, backend="torch",
                          num_workers=0)
    prog = loader.program
    keys = prog.make_keys(0, np.arange(N), np.arange(N))
    b = prog.prepare(keys)
    return b["images"], b["labels"], b["params"], b["taps"]


def contenders(images, labels, params, taps):
    """name → a callable that augments the 64 crops once."""
    import albumentations as A
    import cv2

    from insmix_fast.augment import P_BLUR_R, augment_batch_kernel, augment_sample, gaussian_taps

    cv2.setNumThreads(1)
    out_i = np.empty_like(images)
    out_l = np.empty(labels.shape, np.int32)
    no_blur = params.copy()
    no_blur[:, P_BLUR_R] = 0
    all_blur, all_taps = params.copy(), taps.copy()
    for k in np.nonzero(params[:, P_BLUR_R] == 0)[0]:
        q = gaussian_taps(0.8)
        all_blur[k, P_BLUR_R] = len(q) // 2
        all_taps[k] = 0
        all_taps[k, :len(q)] = q
    alb = A.Compose([
        A.Affine(scale=(0.8, 1.2), translate_percent=(-0.1, 0.1), rotate=(-180, 180),
                 border_mode=cv2.BORDER_REFLECT_101, p=1.0),
        A.HorizontalFlip(), A.VerticalFlip(),
        A.ColorJitter(brightness=0.2, contrast=0.2, saturation=0.2, hue=0.04, p=1.0),
        A.GaussianBlur(sigma_limit=(0.1, 1.5), p=0.2),
    ], seed=0)
    masks = [np.ascontiguousarray(lab, np.int32) for lab in labels]

    def per_sample():
        for k in range(N):
            augment_sample(images[k], labels[k], params[k], taps[k], out_i[k], out_l[k], True, True)

    def albumentations():
        for k in range(N):
            alb(image=images[k], mask=masks[k])

    return {
        "kernel (batch)": lambda: augment_batch_kernel(images, labels, params, taps, out_i, out_l),
        "kernel (per sample)": per_sample,
        "kernel, no blur": lambda: augment_batch_kernel(images, labels, no_blur, taps, out_i, out_l),
        "kernel, blur on all": lambda: augment_batch_kernel(images, labels, all_blur, all_taps, out_i, out_l),
        "albumentations": albumentations,
    }


def measure(rounds: int) -> dict[str, list[float]]:
    runs = contenders(*workload())
    for fn in runs.values():  # compile / warm up
        fn()
    names = list(runs)
    times: dict[str, list[float]] = {n: [] for n in names}
    for r in range(rounds):
        for name in names[r % len(names):] + names[:r % len(names)]:
            t = time.perf_counter()
            runs[name]()
            times[name].append((time.perf_counter() - t) * 1e3 / N)
    return times


# ---------------------------------------------------------------------- pytest-benchmark
@pytest.fixture(scope="module")
def runs():
    fns = contenders(*workload())
    for fn in fns.values():
        fn()
    return fns


@pytest.mark.parametrize("name", ["kernel (batch)", "kernel (per sample)", "kernel, no blur", "kernel, blur on all",
                                  "albumentations"])
def test_augment_64_crops(benchmark, runs, name):
    benchmark.pedantic(runs[name], rounds=7, iterations=1, warmup_rounds=1)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=9)
    args = ap.parse_args()
    times = measure(args.rounds)
    base = statistics.median(times["albumentations"])
    print(f"| contender | ms per crop, median (range) | vs albumentations |\n| --- | --- | --- |")
    for name, ts in times.items():
        med = statistics.median(ts)
        print(f"| {name} | {med:.3f} ({min(ts):.3f}–{max(ts):.3f}) | {base / med:.2f}× |")


if __name__ == "__main__":
    main()
