"""Class balance of the pastes (issue 14): how often the rarest class is pasted under
``template_class="any"`` (the paper) and ``"balanced"`` on a skewed typed data set, and
what each mode costs per crop.

Data: synthetic nuclei typed with a skewed distribution (≈ 70 / 20 / 8 / 2 %, the rare
class last; ``tests/typed_data.py``), in two variants — classes independent of shape
(``random``) and tied to size (``size``: the rare class mostly large nuclei, the common one
small, so the SSD scale constraint rules out more rare templates for small originals). Bank:
12 tiles of 1024×1024 (≈ 8.3k nuclei); crops: 64 tiles of 256×256, ``p_paste = 1``.

``extra_info``: ``rare_share`` (share of the rarest class among the pastes),
``bank_rare_share`` (its share of the bank), ``pastes_per_crop``. Run
``python bench/bench_class_balance.py`` for the table recorded in bench/RESULTS.md.
"""

from __future__ import annotations

import os
import sys

import numpy as np
import pytest

sys.path.insert(0, os.path.join(os.path.dirname(__file__), os.pardir, "tests"))

from typed_data import TypedTiles  # noqa: E402

from insmix_fast import InsMixConfig, InstanceBank, insmix, insmix_batch  # noqa: E402

MODES = {
    "any": InsMixConfig(p_paste=1.0),
    "balanced": InsMixConfig(p_paste=1.0, template_class="balanced"),
    "balanced-b0": InsMixConfig(p_paste=1.0, template_class="balanced", balance_power=0.0),
    "same": InsMixConfig(p_paste=1.0, template_class="same"),
}
#: variant: (class probabilities, size bias); both give a bank of ≈ 69 / 20 / 8.5 / 2 %
VARIANTS = {"random": ((0.70, 0.20, 0.08, 0.02), 0.0), "size": ((0.76, 0.20, 0.037, 0.003), 1.5)}


def make_data(variant: str):
    probs, bias = VARIANTS[variant]
    bank = InstanceBank.from_samples(TypedTiles(seed=1, size=1024, n=12, probs=probs, size_bias=bias),
                                     progress=False)
    crops = TypedTiles(seed=2, size=256, n=64, probs=probs, size_bias=bias).arrays()
    return bank, crops


def class_stats(bank, crops, cfg, seed: int = 0) -> dict:
    images, labels, types = crops
    r = insmix_batch(images, labels, bank, cfg, seed=seed, types=types)
    cls = np.concatenate([p["class"] for p in r.pastes])
    rare = len(bank.class_names) - 1
    counts = bank.class_counts()
    return dict(rare_share=float(np.mean(cls == rare)) if cls.size else 0.0,
                bank_rare_share=float(counts[rare] / counts.sum()),
                pastes_per_crop=float(cls.size / len(images)),
                class_shares=[round(float(np.mean(cls == c)), 3) for c in range(1, rare + 1)])


@pytest.fixture(scope="module", params=sorted(VARIANTS))
def typed_data(request):
    return request.param, make_data(request.param)


@pytest.mark.parametrize("mode", sorted(MODES))
def test_class_share_and_time_per_crop(benchmark, typed_data, mode):
    variant, (bank, crops) = typed_data
    cfg = MODES[mode]
    images, labels, types = crops
    insmix(images[0], labels[0], bank, cfg, seed=0, types=types[0])
    state = {"i": 0}

    def one():
        i = state["i"] = (state["i"] + 1) % len(images)
        return insmix(images[i], labels[i], bank, cfg, seed=0, index=i, types=types[i])

    benchmark.pedantic(one, rounds=256, iterations=1, warmup_rounds=8)
    benchmark.extra_info.update(variant=variant, bank=len(bank), **class_stats(bank, crops, cfg))


if __name__ == "__main__":
    import time

    for variant in sorted(VARIANTS):
        bank, crops = make_data(variant)
        images, labels, types = crops
        print(f"variant {variant}: bank {len(bank)} instances, class counts {bank.class_counts()[1:].tolist()}")
        times = {mode: [] for mode in MODES}
        for rnd in range(7):  # modes interleaved round by round (a shared machine drifts)
            for mode, cfg in MODES.items():
                t0 = time.perf_counter()
                for i in range(len(images)):
                    insmix(images[i], labels[i], bank, cfg, seed=rnd, index=i, types=types[i])
                if rnd:  # round 0 compiles
                    times[mode].append((time.perf_counter() - t0) / len(images) * 1e3)
        for mode, cfg in MODES.items():
            shares = [class_stats(bank, crops, cfg, seed) for seed in range(3)]
            per_seed = ", ".join(f"{s['rare_share']:.3f}" for s in shares)
            t = times[mode]
            print(f"  {mode:12s} rare share {np.mean([s['rare_share'] for s in shares]):.3f} "
                  f"(seeds {per_seed}), bank {shares[0]['bank_rare_share']:.3f}, "
                  f"pastes/crop {np.mean([s['pastes_per_crop'] for s in shares]):.2f}, "
                  f"classes {shares[0]['class_shares']}, ms/crop median {np.median(t):.3f} "
                  f"[{min(t):.3f}–{max(t):.3f}]")
