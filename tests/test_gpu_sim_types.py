"""Typed GPU path under the CUDA simulator: bit-for-bit parity with the CPU for every
template-class mode, the output types, the paste classes and ignore masks; device
type maps read once; bad type maps refused with the tile named.

Like ``test_gpu_sim.py``, the simulator runs in a subprocess (this file as a script)
that writes an ``.npz`` the tests compare with the CPU path run here.
"""

import json
import os
import sys

import numpy as np
import pytest
from simulator import assert_same_batch as _assert_same
from simulator import run_simulator_worker

HERE = os.path.dirname(os.path.abspath(__file__))
INDICES = np.array([3, 8], np.int64)
SEEDS = (0, 7)


def _configs():
    from insmix_fast import InsMixConfig

    return {
        "any": InsMixConfig(p_paste=1.0),
        "same": InsMixConfig(p_paste=1.0, template_class="same"),
        "same-fallback": InsMixConfig(p_paste=1.0, template_class="same", max_draws=1, rho=0.5),
        "balanced": InsMixConfig(p_paste=1.0, template_class="balanced", alpha=0.5, patch=8),
        "balanced-rare": InsMixConfig(p_paste=1.0, template_class="balanced", balance_power=2.0, max_draws=1),
        "balanced-nossd": InsMixConfig.ablation("copy-paste", p_paste=1.0, template_class="balanced"),
    }


def _data():
    sys.path.insert(0, HERE)
    from typed_data import TypedTiles

    from insmix_fast import InstanceBank

    bank = InstanceBank.from_samples(TypedTiles(seed=7, size=96, n=8), progress=False)
    images, labels, types = TypedTiles(seed=5, size=96, n=2).arrays()
    ignore = np.zeros(labels.shape, bool)
    ignore[0, :, 40:60] = True
    ignore[1, 10:30, :] = True
    return bank, images, labels, types, ignore


# ---------------------------------------------------------------------- the simulator side
def _worker(out_path: str) -> None:
    assert os.environ.get("NUMBA_ENABLE_CUDASIM") == "1"
    from numba import cuda
    from numba.cuda.simulator.cudadrv import devicearray as fake

    from insmix_fast import InsMixConfig, insmix_batch
    from insmix_fast.gpu.scoring import choose_templates_cuda
    from transfer_log import transfer_log

    bank, images, labels, types, ignore = _data()
    out = {}

    def put(prefix, r):
        for f in ("images", "labels", "paste_masks", "shuffled_masks"):
            out[f"{prefix}/{f}"] = np.asarray(getattr(r, f))
        out[f"{prefix}/types"] = np.array(0) if r.types is None else np.asarray(r.types)  # () marks None
        for b in range(len(r.pastes)):
            out[f"{prefix}/pastes{b}"] = r.pastes[b]
            out[f"{prefix}/moves{b}"] = r.moves[b]

    for name, cfg in _configs().items():
        for seed in SEEDS:
            put(f"{name}/{seed}", insmix_batch(images, labels, bank, cfg, seed=seed, indices=INDICES, types=types,
                                               device="cuda"))
    cfg = _configs()["balanced"]
    put("ignore", insmix_batch(images, labels, bank, cfg, seed=3, indices=INDICES, types=types, ignore=ignore,
                               device="cuda"))
    put("untyped-call", insmix_batch(images, labels, bank, cfg, seed=3, indices=INDICES, device="cuda"))
    # device input: outputs stay there; the type check costs one 4-byte read besides the id range
    dbank = bank.to("cuda")
    dbank.class_args("balanced", 1.0)  # the class tables are uploaded once, before the log
    di, dl, dt, dg = (cuda.to_device(a) for a in (images, labels, types, ignore))
    with transfer_log(cuda, fake.FakeCUDAArray) as log:
        r = insmix_batch(di, dl, dbank, cfg, seed=3, indices=INDICES, types=dt, ignore=dg, device="cuda")
        kind = type(r.types).__name__
    out["transfers"] = np.array(json.dumps(log))
    out["types_kind"] = np.array(kind)
    put("device", r.to_host())
    out["choice_same"] = choose_templates_cuda(labels, bank, InsMixConfig(template_class="same", max_draws=1),
                                               seed=21, indices=INDICES, types=types)
    errors = {}
    bad = types.copy()
    v = int(labels[1].max())
    ys, xs = np.nonzero(labels[1] == v)
    bad[1, ys[-1], xs[-1]] = types[1, ys[0], xs[0]] % 4 + 1
    cases = [("mixed-host", images, labels, bad, bank), ("mixed-device", di, dl, cuda.to_device(bad), dbank),
             ("beyond", images, labels, np.where(labels == v, 9, types).astype(np.int32), bank),
             ("mixed-kinds", di, dl, types, dbank)]
    for what, im, lab, ty, bk in cases:
        try:
            insmix_batch(im, lab, bk, cfg, types=ty, device="cuda")
            errors[what] = "no error"
        except Exception as e:
            errors[what] = f"{type(e).__name__}: {e}"
    out["errors"] = np.array(json.dumps(errors))
    np.savez(out_path, **out)


# ---------------------------------------------------------------------- the tests
@pytest.fixture(scope="module")
def sim(tmp_path_factory):
    return run_simulator_worker(__file__, tmp_path_factory.mktemp("gpu_sim_types") / "sim.npz", timeout=900)


@pytest.fixture(scope="module")
def data():
    return _data()


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("name", sorted(_configs()))
def test_typed_simulator_matches_cpu(sim, data, name, seed):
    from insmix_fast import insmix_batch

    bank, images, labels, types, _ignore = data
    cpu = insmix_batch(images, labels, bank, _configs()[name], seed=seed, indices=INDICES, types=types)
    assert cpu.types is not None
    _assert_same(sim, f"{name}/{seed}", cpu)


def test_typed_cases_do_something(sim, data):
    bank = data[0]
    for name in _configs():
        n = sum(len(sim[f"{name}/{s}/pastes{b}"]) for s in SEEDS for b in range(2))
        assert n >= 4, name
    classes = np.concatenate([sim[f"balanced-rare/{s}/pastes{b}"]["class"] for s in SEEDS for b in range(2)])
    present = set(np.flatnonzero(bank.class_counts()).tolist())
    assert len(set(classes.tolist())) >= 3 and set(classes.tolist()) <= present  # absent classes are never drawn


def test_ignore_and_device_input(sim, data):
    from insmix_fast import insmix_batch

    bank, images, labels, types, ignore = data
    cfg = _configs()["balanced"]
    cpu = insmix_batch(images, labels, bank, cfg, seed=3, indices=INDICES, types=types, ignore=ignore)
    assert not (cpu.paste_masks & ignore).any() and sum(len(p) for p in cpu.pastes) > 0
    _assert_same(sim, "ignore", cpu)
    _assert_same(sim, "device", cpu)
    _assert_same(sim, "untyped-call", insmix_batch(images, labels, bank, cfg, seed=3, indices=INDICES))
    log = json.loads(str(sim["transfers"]))
    assert [n for d, n in log if d == "d2h"] == [8, 4], log  # id range, type-check verdict
    g = (96 // cfg.patch) ** 2
    assert [n for d, n in log if d == "h2d"] == [INDICES.nbytes, 8 * (g + 1)], log  # indices and the α table only
    assert str(sim["types_kind"]) == "FakeCUDAArray"


def test_same_class_choice_matches_cpu(sim, data):
    from insmix_fast.kernels.classes import TEMPLATE_SAME
    from insmix_fast.kernels.instances import build_table, tile_stats
    from insmix_fast.kernels.ssd import score_originals_class
    from insmix_fast.kernels.tables import Table

    bank, _images, labels, types, _ignore = data
    ct = bank.class_table("same")
    chosen = 0
    for b in range(2):
        ids, _lut, area, sr, sc, bbox, _ = tile_stats(labels[b], 20, int(labels[b].max()), 0)
        t = build_table(labels[b], ids, area, sr, sc, bbox)
        ot = Table(t[0], t[1], t[2], t[4], t[5], np.zeros(0, np.uint8), t[6], t[7])
        k = len(ids)
        o_classes = np.array([types[b][labels[b] == v][0] for v in ids], np.int32)
        cpu = score_originals_class(ot, bank.table, ct, TEMPLATE_SAME, o_classes, 1.0, 0.8, True, 1, np.uint64(21),
                                    np.full(k, INDICES[b]), np.arange(k, dtype=np.int64))
        np.testing.assert_array_equal(sim["choice_same"][b, 1:k + 1], cpu)
        ok = cpu >= 0
        assert np.array_equal(bank.classes[cpu[ok]], o_classes[ok])
        chosen += int(ok.sum())
    assert chosen >= 5


def test_bad_types_on_the_device_are_named(sim):
    errors = json.loads(str(sim["errors"]))
    for what in ("mixed-host", "mixed-device"):
        assert errors[what].startswith("LabelMapError: types[1]: instance id"), errors[what]
        assert "several classes" in errors[what]
    assert errors["beyond"].startswith("LabelMapError") and "class id 9" in errors["beyond"], errors["beyond"]
    assert errors["mixed-kinds"].startswith("InputError") and "types" in errors["mixed-kinds"]


if __name__ == "__main__":
    sys.path.insert(0, HERE)
    _worker(sys.argv[1])
