"""InsMixLoader throughput (issue 13): crops/s, CPU cores busy, loader wait per training step.

Run the CPU comparison (interleaved rounds, prints the rows for bench/RESULTS.md)::

    python bench/bench_loader.py --rounds 3            # add --cuda on a GPU machine for the GPU rows
    python -m pytest bench/bench_loader.py --benchmark-only          # the same through pytest-benchmark
    python -m pytest bench/bench_loader.py --benchmark-only -k cuda  # the GPU rows only

Workload (the issue's): epochs of 512 random 256² crops, batch 16, from 64 in-memory 320²
synthetic tiles (the source cycles over them; the bank is built from them), 2 workers /
2 DALI threads. Every contender hands out the same thing — normalised float32 N×3×256×256
images and integer labels — and gets the same CPU budget: OpenCV, Numba and torch run one
thread in worker processes; in-process DALI uses 2 threads (and Numba 2 threads for the
InsMix batch kernel). Rounds are interleaved: each round runs one epoch of every contender,
in a rotated order; medians and ranges over the rounds. "cores busy" = CPU seconds of the
process tree (main + workers) / wall seconds during the epoch.

Contenders on the CPU:

* ``albumentations`` — a plain ``DataLoader``: random crop + albumentations 2.0.8 (Affine
  scale/shift/rotate with reflect-101, flips, ColorJitter, GaussianBlur) + Normalize, per
  sample in the workers; **no InsMix** (the anchor of the targets);
* ``albumentations+insmix`` — the same with :func:`insmix_fast.insmix` per sample;
* ``TraditionalAugment`` — a plain ``DataLoader`` with the package's own augmentation per sample;
* ``torch`` / ``torch+insmix`` — ``InsMixLoader(backend="torch")``;
* ``dali`` / ``dali+insmix`` — ``InsMixLoader(backend="dali")`` (DALI CPU pipeline, our kernels);
* ``dali-operators+insmix`` — the DALI graph with DALI's own CPU operators (what the GPU graph runs).

GPU rows (``-k cuda``, skipped without CUDA): ``device="cuda"``, batch 64 and 256, without and
with the width-48 blender (untrained: its cost does not depend on its weights), torch backend
(and DALI when installed); crops/s and cores busy. ``test_loader_wait_fraction``: time blocked in
``next(loader)`` as a share of a ResUNet-34 training step (width 64 on CUDA, 16 on the CPU).
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import numpy as np
import pytest
import torch

CROP = 256
BATCH = 16
TILES = 64
EPOCH = 512
WORKERS = 2
HAVE_CUDA = torch.cuda.is_available()

try:  # OpenCV's thread pool must not run in the parent of forked workers (a child that touches it can
    import cv2  # deadlock), and every contender gets one OpenCV thread per worker anyway

    cv2.setNumThreads(1)
except ImportError:  # pragma: no cover
    pass
CUDA = pytest.mark.skipif(not HAVE_CUDA, reason="no CUDA GPU")


# ---------------------------------------------------------------------- data
class Cycled:
    """``n`` samples cycling over ``tiles`` (picklable; what a folder data set in the page cache is)."""

    def __init__(self, tiles, n):
        self.tiles, self.n = tiles, n

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        return self.tiles[int(i) % len(self.tiles)]


def make_tiles():
    from insmix_fast.data import SyntheticNuclei

    ds = SyntheticNuclei(seed=2, size=320, length=TILES)
    return [ds[i] for i in range(TILES)]


def make_bank(tiles):
    from insmix_fast import InstanceBank

    return InstanceBank.from_samples(tiles, progress=False)


# ---------------------------------------------------------------------- CPU accounting
_TICK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def tree_cpu_seconds(root: int | None = None) -> float:
    """user + system CPU seconds of ``root`` (default: this process) and all its live descendants."""
    root = os.getpid() if root is None else root
    stats = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                with open(f"/proc/{d}/stat") as f:
                    s = f.read()
            except OSError:
                continue
            fields = s[s.rindex(")") + 2:].split()
            stats[int(d)] = (int(fields[1]), (int(fields[11]) + int(fields[12])) / _TICK)
    children: dict[int, list[int]] = {}
    for pid, (ppid, _) in stats.items():
        children.setdefault(ppid, []).append(pid)
    total, todo = 0.0, [root]
    while todo:
        p = todo.pop()
        if p in stats:
            total += stats[p][1]
        todo.extend(children.get(p, []))
    return total


# ---------------------------------------------------------------------- plain DataLoader contenders
def _worker_init(_):
    import cv2
    import numba

    cv2.setNumThreads(1)
    numba.set_num_threads(1)


class _PlainDataset(torch.utils.data.Dataset):
    """Random crop + an augmentation per sample (+ optional InsMix), normalised CHW float out."""

    def __init__(self, source, kind: str, bank=None):
        self.source, self.kind, self.bank = source, kind, bank
        self._aug = None

    def _build(self):
        import albumentations as A
        import cv2

        norm = A.Normalize()
        if self.kind.startswith("albumentations"):
            aug = A.Compose([
                A.RandomCrop(CROP, CROP),
                A.Affine(scale=(0.8, 1.2), translate_percent=(-0.1, 0.1), rotate=(-180, 180),
                         border_mode=cv2.BORDER_REFLECT_101, p=1.0),
                A.HorizontalFlip(), A.VerticalFlip(),
                A.ColorJitter(brightness=0.2, contrast=0.2, saturation=0.2, hue=0.04, p=1.0),
                A.GaussianBlur(sigma_limit=(0.1, 1.5), p=0.2),
            ])
        else:
            from insmix_fast.augment import TraditionalAugment

            aug = TraditionalAugment()
        self._aug, self._norm = aug, norm

    def __len__(self):
        return len(self.source)

    def __getitem__(self, i):
        if self._aug is None:
            self._build()
        image, labels = self.source[i]
        if self.kind.startswith("albumentations"):
            out = self._aug(image=image, mask=labels)
            image, labels = out["image"], out["mask"]
        else:
            rng = np.random.default_rng(i)
            y, x = (int(rng.integers(0, s - CROP + 1)) for s in labels.shape)
            image, labels = self._aug(image[y:y + CROP, x:x + CROP], labels[y:y + CROP, x:x + CROP], seed=0, index=i)
        if self.kind.endswith("+insmix"):
            from insmix_fast import insmix

            r = insmix(image, labels, self.bank, seed=1, index=int(i))
            image, labels = r.image, r.labels
        image = self._norm(image=image)["image"]
        return (torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1))),
                torch.from_numpy(np.ascontiguousarray(labels, np.int64)))


#: Start method of the DataLoader workers. Forked workers inherit torch's OpenMP state; the default
#: collate's ``torch.stack`` then runs a 2-thread OpenMP region in each worker whose spare thread
#: spins in ``gomp_barrier_wait_end`` beside it (measured: albumentations ~55 crops/s forked vs ~230
#: spawned on this machine). Every contender gets spawned workers; "albumentations (fork)" shows
#: what the DataLoader default gives.
MP_CONTEXT = "spawn"


class PlainContender:
    def __init__(self, name, source, bank=None, context=MP_CONTEXT):
        self.name = name
        kind = name.replace(" (fork)", "")
        self.loader = torch.utils.data.DataLoader(_PlainDataset(source, kind, bank), batch_size=BATCH, shuffle=True,
                                                  num_workers=WORKERS, persistent_workers=True, prefetch_factor=2,
                                                  worker_init_fn=_worker_init, multiprocessing_context=context)

    def epoch(self) -> int:
        return sum(images.shape[0] for images, _ in self.loader)

    def close(self):
        it = getattr(self.loader, "_iterator", None)
        if it is not None:
            it._shutdown_workers()


class LoaderContender:
    def __init__(self, name, source, bank, device="cpu", batch=BATCH, blender=None, **kw):
        from insmix_fast.loader import InsMixLoader

        self.name, self.device = name, device
        self.loader = InsMixLoader(source, bank=bank, batch_size=batch, crop=CROP, device=device,
                                   insmix=name.endswith("insmix") or "+insmix" in name, blender=blender,
                                   num_workers=WORKERS, prefetch=2, seed=0, **kw)

    def epoch(self) -> int:
        n = sum(images.shape[0] for images, _ in self.loader)
        if self.device == "cuda":
            torch.cuda.synchronize()
        return n

    def close(self):
        self.loader.close()


def cpu_contenders(tiles, bank, names=None):
    import importlib.util

    from insmix_fast.loader import dali_available

    src = Cycled(tiles, EPOCH)
    made = {}
    if importlib.util.find_spec("albumentations") is not None:  # pip install albumentations (bench only)
        made.update({
            "albumentations": lambda: PlainContender("albumentations", src),
            "albumentations (fork)": lambda: PlainContender("albumentations (fork)", src, context="fork"),
            "albumentations+insmix": lambda: PlainContender("albumentations+insmix", src, bank),
        })
    made.update({
        "TraditionalAugment": lambda: PlainContender("TraditionalAugment", src),
        "torch": lambda: LoaderContender("torch", src, bank, backend="torch", mp_context=MP_CONTEXT),
        "torch+insmix": lambda: LoaderContender("torch+insmix", src, bank, backend="torch", mp_context=MP_CONTEXT),
    })
    if dali_available():
        made.update({
            "dali": lambda: LoaderContender("dali", src, bank, backend="dali"),
            "dali+insmix": lambda: LoaderContender("dali+insmix", src, bank, backend="dali"),
            "dali-operators+insmix": lambda: LoaderContender("dali-operators+insmix", src, bank, backend="dali",
                                                             dali_ops="operators"),
        })
    return [make() for name, make in made.items() if names is None or name in names]


# ---------------------------------------------------------------------- interleaved rounds
def measure(contender) -> tuple[float, float]:
    """One epoch: (crops/s, cores busy)."""
    c0, t0 = tree_cpu_seconds(), time.perf_counter()
    n = contender.epoch()
    dt = time.perf_counter() - t0
    return n / dt, (tree_cpu_seconds() - c0) / dt


def tournament(contenders, rounds: int, results=None, warmup: bool = True, log=None):
    """``rounds`` interleaved rounds (one epoch of each contender per round, order rotated)."""
    results = {c.name: [] for c in contenders} if results is None else results
    if warmup:
        for c in contenders:
            c.epoch()  # worker start-up, JIT compilation, DALI build
            if log:
                log(f"warm: {c.name}")
    for r in range(rounds):
        order = contenders[r % len(contenders):] + contenders[:r % len(contenders)]
        for c in order:
            results.setdefault(c.name, []).append(measure(c))
            if log:
                log(f"round {r}: {c.name} {results[c.name][-1][0]:.0f} crops/s, {results[c.name][-1][1]:.2f} cores")
    return results


def summarise(results, anchors=("albumentations", "albumentations (fork)")) -> list[dict]:
    """Median and range of crops/s per contender, median cores busy, and the ratio of medians to
    each anchor (the plain DataLoader + albumentations without InsMix)."""
    base = {a: statistics.median(v[0] for v in results[a]) for a in anchors if results.get(a)}
    rows = []
    for name, vals in results.items():
        rates = [v[0] for v in vals]
        med = statistics.median(rates)
        rows.append(dict(name=name, median=med, lo=min(rates), hi=max(rates),
                         cores=statistics.median(v[1] for v in vals),
                         ratios={a: med / b for a, b in base.items()}))
    return rows


def markdown(rows) -> str:
    anchors = list(rows[0]["ratios"]) if rows else []
    head = "| loader | crops/s median (range) | " + " | ".join(f"× {a}" for a in anchors) + " | cores busy |"
    out = [head, "| --- " * (3 + len(anchors)) + "|"]
    for r in rows:
        ratios = " | ".join(f"{r['ratios'][a]:.2f}×" for a in anchors)
        out.append(f"| {r['name']} | {r['median']:.0f} ({r['lo']:.0f}–{r['hi']:.0f}) | {ratios} | {r['cores']:.2f} |")
    return "\n".join(out)


# ---------------------------------------------------------------------- pytest-benchmark
@pytest.fixture(scope="module")
def tiles():
    return make_tiles()


@pytest.fixture(scope="module")
def bank(tiles):
    return make_bank(tiles)


def test_cpu_loaders_interleaved(benchmark, tiles, bank):
    """All CPU contenders, interleaved; the benchmark's own time is one round of all of them."""
    contenders = cpu_contenders(tiles, bank)
    results = {c.name: [] for c in contenders}
    try:
        tournament(contenders, 0, results)  # warm-up only
        benchmark.pedantic(tournament, args=(contenders, 1, results, False), rounds=3, iterations=1)
    finally:
        for c in contenders:
            c.close()
    rows = summarise(results)
    benchmark.extra_info.update({r["name"]: {"crops_per_s": r["median"], "range": [r["lo"], r["hi"]],
                                             "ratios": r["ratios"], "cores_busy": r["cores"]}
                                 for r in rows})
    benchmark.extra_info["machine"] = f"{os.cpu_count()} CPUs, no GPU" if not HAVE_CUDA else torch.cuda.get_device_name()
    print("\n" + markdown(rows))
    assert all(r["median"] > 0 for r in rows)


def _blender(width):
    from insmix_fast.gan import Blender, Generator

    torch.manual_seed(0)
    return Blender(Generator(width=width), device="cuda")


def _cuda_backends():
    from insmix_fast.loader import dali_available

    return ["torch"] + (["dali"] if dali_available() else [])


@CUDA
@pytest.mark.parametrize("gan", [False, True], ids=["nogan", "gan48"])
@pytest.mark.parametrize("batch", [64, 256])
@pytest.mark.parametrize("backend", ["torch", "dali"])
def test_cuda_throughput(benchmark, tiles, bank, backend, batch, gan):
    if backend not in _cuda_backends():
        pytest.skip("NVIDIA DALI is not installed")
    n = max(EPOCH, 8 * batch)
    c = LoaderContender(f"cuda-{backend}-b{batch}{'-gan48' if gan else ''}+insmix", Cycled(tiles, n), bank,
                        device="cuda", batch=batch, blender=_blender(48) if gan else None, backend=backend)
    stats = []
    try:
        c.epoch()  # warm-up: workers, kernel compilation, cuDNN
        benchmark.pedantic(lambda: stats.append(measure(c)), rounds=3 if gan else 5, iterations=1)
    finally:
        c.close()
    rates = [s[0] for s in stats]
    benchmark.extra_info.update(device=torch.cuda.get_device_name(), backend=backend, batch=batch,
                                blender="width 48" if gan else None, crops=n,
                                crops_per_s=statistics.median(rates), range=[min(rates), max(rates)],
                                cores_busy=statistics.median(s[1] for s in stats))
    print(f"\n| cuda {backend} batch {batch}{' + GAN-48' if gan else ''} | {statistics.median(rates):.0f} crops/s "
          f"({min(rates):.0f}–{max(rates):.0f}) | {statistics.median(s[1] for s in stats):.2f} cores busy |")


DEVICES = ["cpu", pytest.param("cuda", marks=CUDA)]


@pytest.mark.parametrize("backend", ["torch", "dali"])
@pytest.mark.parametrize("device", DEVICES)
def test_loader_wait_fraction(benchmark, tiles, bank, device, backend):
    """Share of a ResUNet-34 training step spent blocked in ``next(loader)``."""
    from insmix_fast.experiments.model import ResUNet34
    from insmix_fast.loader import InsMixLoader, dali_available

    if backend == "dali" and not dali_available():
        pytest.skip("NVIDIA DALI is not installed")
    torch.manual_seed(0)
    width = 64 if device == "cuda" else 16
    batch = 64 if device == "cuda" else BATCH
    model = ResUNet34(width=width).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    n = 8 * batch if device == "cuda" else 4 * BATCH
    loader = InsMixLoader(Cycled(tiles, n), bank=bank, batch_size=batch, crop=CROP, device=device, backend=backend,
                          num_workers=WORKERS, prefetch=2, seed=0)
    totals = {"wait": 0.0, "step": 0.0}

    def train_epoch():
        t = time.perf_counter()
        it = iter(loader)
        while True:
            t0 = time.perf_counter()
            try:
                images, labels = next(it)
            except StopIteration:
                break
            if device == "cuda":
                torch.cuda.synchronize()
            totals["wait"] += time.perf_counter() - t0
            loss = torch.nn.functional.cross_entropy(model(images), (labels > 0).long())
            opt.zero_grad()
            loss.backward()
            opt.step()
            if device == "cuda":
                torch.cuda.synchronize()
        totals["step"] += time.perf_counter() - t

    with loader:
        train_epoch()  # warm-up: worker start-up, first compile
        totals.update(wait=0.0, step=0.0)
        benchmark.pedantic(train_epoch, rounds=2 if device == "cpu" else 5, iterations=1)
    frac = totals["wait"] / totals["step"]
    benchmark.extra_info.update(device=torch.cuda.get_device_name() if device == "cuda" else "cpu",
                                backend=backend, crop=CROP, batch=batch, workers=WORKERS, wait_fraction=frac,
                                model=f"ResUNet34(width={width})")
    print(f"\n| loader wait / ResUNet-34 (width {width}) step, {device} {backend}, batch {batch} | {100 * frac:.1f} % |")
    assert 0.0 <= frac < 1.0


# ---------------------------------------------------------------------- script
def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--only", default=None, help="comma-separated contender names")
    args = ap.parse_args(argv)
    tiles = make_tiles()
    bank = make_bank(tiles)
    names = None if args.only is None else set(args.only.split(","))
    contenders = cpu_contenders(tiles, bank, names)
    try:
        import sys

        results = tournament(contenders, args.rounds, log=lambda m: print(m, file=sys.stderr, flush=True))
    finally:
        for c in contenders:
            c.close()
    print(f"{os.cpu_count()} CPUs; {args.rounds} interleaved rounds; epochs of {EPOCH} crops of {CROP}², batch {BATCH}, "
          f"{WORKERS} workers / DALI threads; load average before: {os.getloadavg()}")
    print(markdown(summarise(results)))


if __name__ == "__main__":
    main()
