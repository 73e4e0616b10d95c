"""Typed experiment harness: type head, classes through every arm and the warp, mPQ/bPQ/mPQ+
reports, and the PanNuke 3-fold protocol on a tiny fixture of the official layout."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from dataset_fixtures import make_truth, write_pannuke_fold
from insmix_fast.augment import TraditionalAugment
from insmix_fast.data import PANNUKE_CLASSES, SyntheticNuclei
from insmix_fast.errors import ConfigError
from insmix_fast.experiments.policies import ARMS, make_policy
from insmix_fast.experiments.runner import load_config, load_data, run_experiment
from insmix_fast.experiments.train import (SegmenterTrainConfig, majority_types, predict_typed, random_crops,
                                           train_model, typed_augment)

NAMES = ("background", "lymphocyte-like", "tumour-like", "spindle-like")


@pytest.fixture(scope="module")
def typed_train():
    ds = SyntheticNuclei(seed=2, size=96, length=4, n_classes=3)
    return [ds[i] for i in range(4)]


def _one_class_per_instance(labels, types):
    assert ((types > 0) == (labels > 0)).all()
    for i in np.unique(labels)[1:]:
        assert np.unique(types[labels == i]).size == 1, i


def test_majority_types():
    lab = np.array([[1, 1, 1, 0], [2, 2, 0, 3]])
    votes = np.array([[2, 2, 1, 1], [0, 0, 0, 3]])
    np.testing.assert_array_equal(majority_types(lab, votes), [[2, 2, 2, 0], [0, 0, 0, 3]])
    assert majority_types(np.zeros((2, 2), np.int32), votes[:, :2]).max() == 0


def test_random_crops_carry_types(typed_train):
    imgs, labs, typs = random_crops(typed_train, 6, 64, seed=1, step=2)
    untyped = random_crops([s[:2] for s in typed_train], 6, 64, seed=1, step=2)
    np.testing.assert_array_equal(untyped[1], labs)  # the same draws
    for lab, typ in zip(labs, typs):
        _one_class_per_instance(lab, typ)


def test_typed_augment_moves_the_types(typed_train):
    imgs, labs, typs = random_crops(typed_train, 4, 64, seed=0, step=0)
    flip = TraditionalAugment(scale=(1.0, 1.0), shift=0.0, rotate=0.0, flip=True, p_geometric=1.0)
    oi, ol, ot = typed_augment(flip, imgs, labs, typs, seed=3, indices=np.arange(4))
    ref_i, ref_l = flip.batch(imgs, labs, seed=3, indices=np.arange(4))
    np.testing.assert_array_equal(oi, ref_i)
    np.testing.assert_array_equal(ol, ref_l)
    for b in range(4):  # a pure flip moves every pixel exactly: the types are the flipped types
        m = flip.affine_matrix((64, 64), 3, b)
        t = typs[b][:, ::-1] if m[0, 0] < 0 else typs[b]
        t = t[::-1] if m[1, 1] < 0 else t
        np.testing.assert_array_equal(ot[b], np.where(ol[b] > 0, t, 0))
    full = TraditionalAugment()
    oi, ol, ot = typed_augment(full, imgs, labs, typs, seed=5, indices=np.arange(4) + 10)
    for lab, typ in zip(ol, ot):
        _one_class_per_instance(lab, typ)
        assert set(np.unique(typ)) <= {0, 1, 2, 3}


def test_every_arm_carries_the_classes(typed_train):
    imgs, labs, typs = random_crops(typed_train, 4, 64, seed=0, step=0)
    for arm in ARMS:
        if arm.endswith("-gan"):
            continue  # needs a blender file; its types are the InsMix arm's (policies.run_gan)
        pol = make_policy(arm, typed_train, {"p_paste": 1.0} if arm.startswith("insmix") else None,
                          class_names=NAMES)
        if pol is None:
            continue
        assert pol.typed
        oi, ol, ot = pol(imgs.copy(), labs.copy(), 3, np.arange(4) + 8, types=typs.copy())
        assert ot.shape == labs.shape
        for lab, typ in zip(ol, ot):
            _one_class_per_instance(lab, typ)
        if arm.startswith("insmix") and pol.bank is not None:
            r = pol.insmix(imgs.copy(), labs.copy(), 3, np.arange(4) + 8, types=typs.copy())
            assert pol.bank.class_names == NAMES and sum(len(r[i].pastes) for i in range(4))
            for i in range(4):
                for rec in r[i].pastes:  # a pasted nucleus has its template's class
                    assert (ot[i][ol[i] == rec["label"]] == pol.bank.classes[rec["template"]]).all()
        elif not arm.startswith("insmix") and arm not in ("cutout", "cowout"):
            res = pol.policy.batch(imgs, labs, seed=3, indices=np.arange(4) + 8)
            inside = res.mask & (ol > 0)
            np.testing.assert_array_equal(ot[inside], typs[res.partners][inside])
    jitter = make_policy("copy-paste", typed_train, {"scale_range": [0.5, 1.5]}, class_names=NAMES)
    with pytest.raises(ConfigError, match="scale_range"):
        jitter(imgs, labs, 0, np.arange(4), types=typs)


def test_type_head_trains_and_predicts(typed_train):
    cfg = SegmenterTrainConfig(steps=4, batch_size=2, crop=64, width=8, threads=1, device="cpu", amp=False,
                               log_every=2, augment={"rotate": 90.0})
    model, hist = train_model(typed_train, cfg, seed=0, policy=make_policy("insmix-full", typed_train,
                                                                           class_names=NAMES),
                              progress=False, class_names=NAMES)
    assert model.class_names == NAMES and all(np.isfinite(hist["loss"]))
    assert model(torch.zeros(1, 3, 64, 64)).shape == (1, 3 + 4, 64, 64)
    labels, types = predict_typed(model, typed_train[0][0], min_size=4)
    _one_class_per_instance(labels, types)
    assert types.max() <= 3
    with pytest.raises(ConfigError, match="untyped"):
        train_model([s[:2] for s in typed_train], cfg, class_names=NAMES, progress=False)
    plain = lambda images, labels, seed, idx: (images, labels)  # noqa: E731 - a policy without types
    with pytest.raises(ConfigError, match="cannot carry"):
        train_model(typed_train, cfg, policy=plain, class_names=NAMES, progress=False)


def test_typed_smoke_config_reports_mpq(tmp_path):
    over = {"train": {"steps": 2}, "experiment": {"arms": ["none", "cowmix", "insmix-full"], "seeds": [0]}}
    cfg = load_config("smoke-typed", over)
    res = run_experiment(cfg, tmp_path / "o", progress=False, plots=False)
    assert res["ran"] == [("none", 0), ("cowmix", 0), ("insmix-full", 0)]
    rec = json.loads((tmp_path / "o" / "runs" / "insmix-full__s0.json").read_text())
    assert rec["class_names"] == list(NAMES) and set(rec["typed"]["all"]) >= {"mpq", "bpq", "mpq_plus", "per_class"}
    md = (tmp_path / "o" / "results.md").read_text()
    assert "| mPQ (%) | bPQ (%) | mPQ+ (%) |" in md and "Typed: classes lymphocyte-like" in md
    header = (tmp_path / "o" / "results.csv").read_text().splitlines()[0].split(",")
    assert header[-5:-2] == ["mpq", "bpq", "mpq_plus"]
    assert "mpq" in (tmp_path / "o" / "per_image.csv").read_text().splitlines()[0]
    for arm, s in res["summary"].items():
        assert all(0.0 <= v <= 1.0 for v in s["mpq"] + s["bpq"] + s["mpq_plus"]), arm


@pytest.fixture
def pannuke(tmp_path):
    root = tmp_path / "PanNuke"
    tissues = ["Breast", "Colon", "Skin"]
    for f in (1, 2, 3):
        truths = [make_truth(10 * f + k, 40, 5) for k in range(f + 1)]  # folds of 2, 3, 4 images
        write_pannuke_fold(root, f, truths, tissues[: len(truths)] + ["Lung"] * max(0, len(truths) - 3), seed=f)
    return root


def test_pannuke_config_and_three_fold_protocol(pannuke, tmp_path):
    cfg = load_config("pannuke", {"data": {"path": str(pannuke)}})
    assert [sp["name"] for sp in cfg.data.splits] == ["fold1", "fold2", "fold3"]
    assert cfg.train.crop == 256 and cfg.train.width == 64 and "insmix-full" in cfg.arms
    for sp, n_train, n_test in zip(cfg.data.splits, (7, 6, 5), (2, 3, 4)):
        train, test = load_data(cfg.data, sp)
        assert sorted(set(sp["train"])) == train.folds and len(train) == n_train
        assert train.class_names == PANNUKE_CLASSES and len(test) == n_test
        items = list(test)
        assert all(it[1] == sp["name"] and len(it) == 6 for it in items)  # name, group, image, labels, types, tissue
        assert items[0][5] == "Breast" and items[0][0] == test.names[0]
    over = {"data": {"path": str(pannuke)},
            "train": {"steps": 2, "crop": 32, "batch_size": 2, "width": 8, "device": "cpu", "amp": False,
                      "workers": 0, "threads": 1, "min_size": 4},
            "experiment": {"arms": ["none", "insmix-ssd"], "seeds": [0]}}
    out = tmp_path / "runs"
    res = run_experiment(load_config("pannuke", over), out, progress=False, plots=False)
    assert res["ran"] == [(a, 0, f"fold{k}") for a in ("none", "insmix-ssd") for k in (1, 2, 3)]
    assert sorted(p.name for p in (out / "runs").glob("*.json"))[:3] == [
        "insmix-ssd__s0__fold1.json", "insmix-ssd__s0__fold2.json", "insmix-ssd__s0__fold3.json"]
    rows = (out / "results.csv").read_text().splitlines()
    assert rows[0].startswith("arm,seed,split,group") and len(rows) == 1 + 6 * 2  # each run: all + its fold
    rec = json.loads((out / "runs" / "none__s0__fold2.json").read_text())
    assert rec["split"] == "fold2" and {x["group"] for x in rec["images"]} == {"fold2"} and len(rec["images"]) == 3
    assert set(rec["typed"]) == {"all", "fold2"}
    md = (out / "results.md").read_text()
    assert "Cross-validation (folds): fold1: train [2, 3], test [1]" in md and "| none | 3 |" in md
    assert "mPQ fold3 (%)" in md
    res2 = run_experiment(load_config("pannuke", over), out, resume=True, progress=False, plots=False)
    assert not res2["ran"] and len(res2["skipped"]) == 6


@pytest.mark.parametrize("splits, match", [
    ([{"name": "a", "train": [1], "test": [1]}], "both in train and test"),
    ([{"name": "a", "train": [1]}], "keys name, train, test"),
    ([{"name": "a", "train": [1], "test": [2]}, {"name": "a", "train": [2], "test": [1]}], "unique"),
    ([{"name": "a", "train": [], "test": [2]}], "non-empty list"),
])
def test_bad_splits(splits, match):
    with pytest.raises(ConfigError, match=match):
        load_config("pannuke", {"data": {"splits": splits}})
    with pytest.raises(ConfigError, match="source = 'path'"):
        load_config("smoke", {"data": {"splits": [{"name": "a", "train": [1], "test": [2]}]}})


@pytest.mark.slow
def test_typed_smoke_experiment_runs_every_arm(tmp_path):
    cfg = load_config("smoke-typed")
    res = run_experiment(cfg, tmp_path / "smoke", progress=False)
    assert len(res["ran"]) == len(cfg.arms) * len(cfg.seeds)
    assert (tmp_path / "smoke" / "results_mpq.png").is_file()
