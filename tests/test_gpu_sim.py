"""GPU kernels under the CUDA simulator: bit-for-bit parity with the CPU path.

``NUMBA_ENABLE_CUDASIM=1`` must be set before numba is first imported, so the GPU
side runs in a subprocess (this file run as a script, see ``_worker``) that
writes its results to an ``.npz``; the tests compare them here with the CPU path
run in this process. The simulator is slow: small inputs (two 96×96 tiles, a
bank of a few dozen instances).
"""

import json
import os
import sys

import numpy as np
import pytest
from simulator import assert_same_batch as _assert_same
from simulator import run_simulator_worker

HERE = os.path.dirname(os.path.abspath(__file__))
SEEDS = (0, 12345)
INDICES = np.array([3, 8], np.int64)
#: (name, seed) of the cases whose device-side choice / counts are compared (max_draws=1: fallback path)
CHOICE_CFG = dict(eps=1.0, rho=0.3, max_draws=1)


def _configs():
    from insmix_fast import InsMixConfig

    sys.path.insert(0, HERE)
    from test_insmix import CONFIGS

    cases = dict(CONFIGS)
    cases["bg-tile8"] = InsMixConfig(p_paste=1.0, alpha=0.6, patch=8)
    return cases


def _data():
    from insmix_fast import InstanceBank
    from insmix_fast.data import SyntheticNuclei

    bank = InstanceBank.from_samples(SyntheticNuclei(seed=7, size=96, length=8), progress=False)
    images, labels = SyntheticNuclei(seed=5, size=96, length=2).as_arrays()
    return bank, images, labels


def _ellipses(rng, size, n, big):
    """A label map of ``n`` non-overlapping axis-aligned ellipses; ``big`` ones exceed the 32×32 window."""
    yy, xx = np.mgrid[:size, :size]
    lab = np.zeros((size, size), np.int32)
    v = 0
    for _ in range(200):
        if v == n:
            break
        a, b = (rng.integers(17, 23), rng.integers(5, 9)) if v < big else (rng.integers(4, 9), rng.integers(4, 9))
        if rng.random() < 0.5:
            a, b = b, a
        cy, cx = rng.integers(a + 2, size - a - 2), rng.integers(b + 2, size - b - 2)
        m = ((yy - cy) / a) ** 2 + ((xx - cx) / b) ** 2 <= 1.0
        grown = ((yy - cy) / (a + 2)) ** 2 + ((xx - cx) / (b + 2)) ** 2 <= 1.0
        if (lab[grown] > 0).any():
            continue
        v += 1
        lab[m] = v
    return lab


def _big_data():
    """Instances larger than the 32×32 descriptor window in the bank *and* the tiles:
    the shape test's direct-count path (neither mask fits) runs on both devices."""
    from insmix_fast import InstanceBank

    rng = np.random.default_rng(3)
    samples = [(rng.integers(0, 255, (128, 128, 3), dtype=np.uint8), _ellipses(rng, 128, 8, 4)) for _ in range(4)]
    bank = InstanceBank.from_samples(samples, progress=False)
    images = rng.integers(0, 255, (2, 96, 96, 3), dtype=np.uint8)
    labels = np.stack([_ellipses(rng, 96, 6, 3) for _ in range(2)])
    return bank, images, labels


# ---------------------------------------------------------------------- the simulator side
def _worker(out_path: str) -> None:
    assert os.environ.get("NUMBA_ENABLE_CUDASIM") == "1"
    from numba import cuda

    from insmix_fast import ConfigError, InsMixConfig, insmix_batch
    from insmix_fast.gpu import cuda_available
    from insmix_fast.gpu import scoring as gb

    ok, reason = cuda_available()
    assert ok, reason
    bank, images, labels = _data()
    out = {}

    def put(prefix, r):
        for f in ("images", "labels", "paste_masks", "shuffled_masks"):
            out[f"{prefix}/{f}"] = np.asarray(getattr(r, f))
        for b in range(len(r.pastes)):
            out[f"{prefix}/pastes{b}"] = r.pastes[b]
            out[f"{prefix}/moves{b}"] = r.moves[b]

    for name, cfg in _configs().items():
        for seed in SEEDS:
            put(f"{name}/{seed}", insmix_batch(images, labels, bank, cfg, seed=seed, indices=INDICES, device="cuda"))

    # Device input: no transfer inside the GPU path except the one 8-byte (max id, min id) read.
    di, dl = cuda.to_device(images), cuda.to_device(labels)
    dbank = bank.to("cuda")
    from numba.cuda.simulator.cudadrv import devicearray as fake
    from transfer_log import transfer_log

    with transfer_log(cuda, fake.FakeCUDAArray) as log:
        r = insmix_batch(di, dl, dbank, InsMixConfig(p_paste=1.0), seed=4, indices=INDICES, device="cuda")
        kinds = [type(getattr(r, f)).__name__ for f in ("images", "labels", "paste_masks", "shuffled_masks")]
    out["transfers"] = np.array(json.dumps(log))
    out["device_kinds"] = np.array(json.dumps(kinds))
    put("device_input", r.to_host())
    out["getitem_labels"] = r[1].labels
    out["plan_meta"] = np.array(json.dumps([[p.seed, p.index, p.patch, list(p.shape)] for p in (r[0].plan, r[1].plan)]))
    host_r = insmix_batch(images, labels, bank, InsMixConfig(p_paste=1.0), seed=4, indices=INDICES, device="cuda")
    out["plan_meta_host"] = np.array(json.dumps([[p.seed, p.index, p.patch, list(p.shape)]
                                                 for p in (host_r[0].plan, host_r[1].plan)]))
    _stream_cases(out, put, images, labels, bank, dbank)

    cfg = InsMixConfig(**CHOICE_CFG)
    out["choice"] = gb.choose_templates_cuda(labels, bank, cfg, seed=21, indices=INDICES)
    out["counts"] = gb.admissible_counts_cuda(labels, bank, cfg)
    # device-resident labels and bank: device results of the same values
    out["choice_dev"] = gb.choose_templates_cuda(dl, dbank, cfg, seed=21, indices=INDICES).copy_to_host()
    out["counts_dev"] = gb.admissible_counts_cuda(dl, dbank, cfg).copy_to_host()
    big_bank, big_images, big_labels = _big_data()
    big_cfg = InsMixConfig(p_paste=1.0, max_draws=1, max_occlusion=0.6)
    out["big_choice"] = gb.choose_templates_cuda(big_labels, big_bank, big_cfg, seed=5, indices=INDICES)
    out["big_counts"] = gb.admissible_counts_cuda(big_labels, big_bank, big_cfg)
    put("big/5", insmix_batch(big_images, big_labels, big_bank, big_cfg, seed=5, indices=INDICES, device="cuda"))
    put("bgp-nobank/2", insmix_batch(images, labels, None, InsMixConfig.ablation("bgp-only", patch=8), seed=2,
                                     indices=INDICES, device="cuda"))
    errors = {}
    bad = [("negative", cuda.to_device(images), cuda.to_device(labels - 1)),
           ("huge-ids", images, np.where(labels > 0, labels + 70_000, 0).astype(np.int32)),
           ("mixed-kinds", cuda.to_device(images), labels),
           ("float-labels", cuda.to_device(images), cuda.to_device(labels.astype(np.float32)))]
    for what, im, lab in bad:
        try:
            insmix_batch(im, lab, bank, InsMixConfig(), device="cuda")
            errors[what] = "no error"
        except Exception as e:
            errors[what] = f"{type(e).__name__}: {e}"
    out["errors"] = np.array(json.dumps(errors))
    try:
        insmix_batch(images, labels, bank, InsMixConfig(template_source="self"), device="cuda")
        out["self_error"] = np.array("")
    except ConfigError as e:
        out["self_error"] = np.array(str(e))
    np.savez(out_path, **out)


def _stream_cases(out, put, images, labels, bank, dbank) -> None:
    """``stream=``: every launch and copy on the caller's stream, no wait after the 8-byte id read."""
    from numba import cuda
    from numba.cuda.simulator.cudadrv import devicearray as fake
    from numba.cuda.simulator.kernel import FakeCUDAKernel

    from insmix_fast import InsMixConfig, insmix_batch

    di, dl = cuda.to_device(images), cuda.to_device(labels)
    s = cuda.stream()
    waits, launches, copies = [], [], []
    s.synchronize = lambda: waits.append("stream")
    orig = (cuda.synchronize, FakeCUDAKernel.__getitem__, fake.FakeCUDAArray.copy_to_host)

    def getitem(self, cfg):
        launches.append(len(cfg) > 2 and cfg[2] is s)
        return orig[1](self, cfg)

    def copy_to_host(self, ary=None, stream=0):
        copies.append(stream is s)
        return orig[2](self, ary, stream)

    cuda.synchronize = lambda: waits.append("device")
    FakeCUDAKernel.__getitem__, fake.FakeCUDAArray.copy_to_host = getitem, copy_to_host
    try:
        r = insmix_batch(di, dl, dbank, InsMixConfig(p_paste=1.0), seed=4, indices=INDICES, device="cuda", stream=s)
        during = list(waits)
        n_launches, n_copies = len(launches), len(copies)
        put("stream", r.to_host())
    finally:
        cuda.synchronize, FakeCUDAKernel.__getitem__, fake.FakeCUDAArray.copy_to_host = orig
    out["stream_log"] = np.array(json.dumps(dict(during=during, launches=launches[:n_launches],
                                                 copies=copies[:n_copies], all_copies=copies, after=waits)))
    for name, handle in (("stream_int", 12345), ("stream_zero", 0)):  # raw cudaStream_t handles
        put(name, insmix_batch(images, labels, bank, InsMixConfig(p_paste=1.0), seed=4, indices=INDICES,
                               device="cuda", stream=handle))


# ---------------------------------------------------------------------- the tests
@pytest.fixture(scope="module")
def sim(tmp_path_factory):
    return run_simulator_worker(__file__, tmp_path_factory.mktemp("gpu_sim") / "sim.npz", timeout=600)


@pytest.fixture(scope="module")
def data():
    return _data()


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("name", sorted(_configs()))
def test_simulator_matches_cpu(sim, data, name, seed):
    from insmix_fast import insmix_batch

    bank, images, labels = data
    cpu = insmix_batch(images, labels, bank, _configs()[name], seed=seed, indices=INDICES)
    _assert_same(sim, f"{name}/{seed}", cpu)


def test_simulator_cases_do_something(sim):
    """Guard against vacuous parity: pastes, occlusions and background moves all happen."""
    pastes = sum(len(sim[f"always-paste/{s}/pastes{b}"]) for s in SEEDS for b in range(2))
    moves = sum(len(sim[f"bg-tile8/{s}/moves{b}"]) for s in SEEDS for b in range(2))
    nossd = sum(len(sim[f"no-ssd/{s}/pastes{b}"]) for s in SEEDS for b in range(2))
    assert pastes >= 8 and moves >= 8 and nossd >= 8
    assert sim["bg-tile8/0/shuffled_masks"].any() and sim["always-paste/0/paste_masks"].any()
    # the occlusion case pastes over existing nuclei: some original pixels changed id
    lab_in = _data()[2]
    lab_out = sim["occlusion/0/labels"]
    assert ((lab_in > 0) & (lab_out != lab_in)).any()


def test_device_input_stays_on_device(sim, data):
    from insmix_fast import InsMixConfig, insmix_batch

    bank, images, labels = data
    log = json.loads(str(sim["transfers"]))
    d2h = [n for d, n in log if d == "d2h"]
    h2d = [n for d, n in log if d == "h2d"]
    assert d2h == [8], log  # only (largest id, smallest id) of the batch
    tile_bytes = images[0].nbytes // 3
    assert all(n < min(1024, tile_bytes) for n in h2d), log  # indices and the α table only
    assert json.loads(str(sim["device_kinds"])) == ["FakeCUDAArray"] * 4  # same kind as the input
    cpu = insmix_batch(images, labels, bank, InsMixConfig(p_paste=1.0), seed=4, indices=INDICES)
    _assert_same(sim, "device_input", cpu)
    np.testing.assert_array_equal(sim["getitem_labels"], cpu.labels[1])


def test_caller_stream_is_used_and_not_waited_for(sim, data):
    """``stream=``: all kernels and copies go on the caller's stream; during the call the
    host waits only for the 8-byte id read; results equal the default-stream ones."""
    from insmix_fast import InsMixConfig, insmix_batch

    bank, images, labels = data
    log = json.loads(str(sim["stream_log"]))
    assert len(log["launches"]) >= 15 and all(log["launches"]), log["launches"]
    assert log["copies"] == [True], log  # the id range, on the stream
    assert log["during"] == ["stream"], log  # and nothing else waited for (no device-wide sync)
    assert all(log["all_copies"]) and "device" not in log["after"], log
    cpu = insmix_batch(images, labels, bank, InsMixConfig(p_paste=1.0), seed=4, indices=INDICES)
    for name in ("stream", "stream_int", "stream_zero"):
        _assert_same(sim, name, cpu)


def test_gpu_batch_plans_are_lossless(sim, data):
    """``insmix_batch(..., device="cuda")[b].plan`` keeps seed, index and patch: it equals the
    CPU ``insmix(..., index=indices[b]).plan`` and ``apply_plan`` replays it exactly."""
    from insmix_fast import InsMixConfig, InsMixPlan, apply_plan, insmix

    bank, images, labels = data
    cfg = InsMixConfig(p_paste=1.0)
    for key in ("plan_meta", "plan_meta_host"):
        meta = json.loads(str(sim[key]))
        for b in range(2):
            seed, index, patch, shape = meta[b]
            assert (seed, index, patch, tuple(shape)) == (4, int(INDICES[b]), cfg.patch, labels.shape[1:])
            plan = InsMixPlan(sim[f"device_input/pastes{b}"], sim[f"device_input/moves{b}"].reshape(-1, 2), patch,
                              tuple(shape), seed, index)
            single = insmix(images[b], labels[b], bank, cfg, seed=4, index=int(INDICES[b]))
            assert plan == single.plan
            np.testing.assert_array_equal(apply_plan(images[b], labels[b], plan, bank).image, single.image)


def _cpu_originals(labels_b):
    from insmix_fast.kernels.instances import build_table, tile_stats
    from insmix_fast.kernels.tables import Table

    ids, _lut, area, sr, sc, bbox, _ = tile_stats(labels_b, 20, int(labels_b.max()), 0)
    t_area, anchor, hw, _o, offset, masks, desc, fits = build_table(labels_b, ids, area, sr, sc, bbox)
    return Table(t_area, anchor, hw, offset, masks, np.zeros(0, np.uint8), desc, fits)


def test_bankwide_choice_and_counts_match_cpu(sim, data):
    """Device scoring (rejection draws + block-wide exact fallback) = ``kernels.ssd`` on the CPU."""
    from insmix_fast.kernels.rng import STREAM_TEMPLATE, counter2, uniform_int
    from insmix_fast.kernels.ssd import admissible, admissible_counts, scale_range, score_originals

    bank, _images, labels = data
    bt = bank.table
    eps, rho = CHOICE_CFG["eps"], CHOICE_CFG["rho"]
    fallbacks = 0
    for b in range(labels.shape[0]):
        ot = _cpu_originals(labels[b])
        k = len(ot.area)
        keys = np.arange(k, dtype=np.int64)
        choice = score_originals(ot, bt, eps, rho, True, 1, np.uint64(21), np.full(k, INDICES[b]), keys)
        np.testing.assert_array_equal(sim["choice"][b, 1:k + 1], choice)
        assert (sim["choice"][b, k + 1:] == -1).all()
        np.testing.assert_array_equal(sim["counts"][b, 1:k + 1], admissible_counts(ot, bt, eps, rho))
        for i in range(k):  # how many originals went through the exact fallback (first draw inadmissible)?
            lo, hi = scale_range(bt.area, ot.area[i], eps)
            if hi > lo:
                t = lo + uniform_int(np.uint64(21), INDICES[b], STREAM_TEMPLATE, counter2(i, 0), hi - lo)
                fallbacks += not admissible(ot, i, bt, t, eps, rho)
    assert fallbacks >= 8
    np.testing.assert_array_equal(sim["choice_dev"], sim["choice"])
    np.testing.assert_array_equal(sim["counts_dev"], sim["counts"])
    assert (sim["choice"][:, 1:] >= 0).sum() >= 5 and sim["counts"].max() > 0


def test_large_instances_direct_count_path(sim):
    """Masks that do not fit the 32×32 window (direct intersection count) give the same
    counts, choices and InsMix output on the device as on the CPU."""
    from insmix_fast import InsMixConfig, insmix_batch
    from insmix_fast.kernels.ssd import admissible_counts, score_originals

    bank, images, labels = _big_data()
    bt = bank.table
    assert (~bank.fits).sum() >= 4
    n_nofit = 0
    for b in range(2):
        ot = _cpu_originals(labels[b])
        k = len(ot.area)
        n_nofit += int((~ot.fits).sum())
        choice = score_originals(ot, bt, 1.0, 0.8, True, 1, np.uint64(5), np.full(k, INDICES[b]),
                                 np.arange(k, dtype=np.int64))
        np.testing.assert_array_equal(sim["big_choice"][b, 1:k + 1], choice)
        np.testing.assert_array_equal(sim["big_counts"][b, 1:k + 1], admissible_counts(ot, bt, 1.0, 0.8))
    assert n_nofit >= 4 and sim["big_counts"].max() > 0
    cfg = InsMixConfig(p_paste=1.0, max_draws=1, max_occlusion=0.6)
    cpu = insmix_batch(images, labels, bank, cfg, seed=5, indices=INDICES)
    assert sum(len(p) for p in cpu.pastes) >= 2
    _assert_same(sim, "big/5", cpu)


def test_background_only_without_bank(sim, data):
    from insmix_fast import InsMixConfig, insmix_batch

    _bank, images, labels = data
    cpu = insmix_batch(images, labels, None, InsMixConfig.ablation("bgp-only", patch=8), seed=2, indices=INDICES)
    assert sum(len(m) for m in cpu.moves) > 0
    _assert_same(sim, "bgp-nobank/2", cpu)


def test_bad_input_on_device_is_refused(sim):
    errors = json.loads(str(sim["errors"]))
    assert errors["negative"].startswith("InputError") and "negative" in errors["negative"]
    assert errors["huge-ids"].startswith("InputError") and "relabel" in errors["huge-ids"]
    assert errors["mixed-kinds"].startswith("InputError") and "both" in errors["mixed-kinds"]
    assert errors["float-labels"].startswith("InputError") and "integer" in errors["float-labels"]


def test_template_source_self_is_refused_on_device(sim):
    assert "template_source='self'" in str(sim["self_error"])


if __name__ == "__main__":
    _worker(sys.argv[1])
