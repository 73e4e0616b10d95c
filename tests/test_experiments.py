"""Experiment harness: model, targets/post-processing, training overfits, runner, CLI."""

import json

import cv2
import numpy as np
import pytest
import torch

from insmix_fast.data import SyntheticNuclei
from insmix_fast.data.labels import find_label_problems
from insmix_fast.errors import ConfigError
from insmix_fast.experiments import cli
from insmix_fast.experiments.model import ResNet34Encoder, ResUNet34
from insmix_fast.experiments.policies import ARMS, make_policy
from insmix_fast.experiments.runner import load_config, run_experiment
from insmix_fast.experiments.train import SegmenterTrainConfig, evaluate_model, make_targets, postprocess, train_model
from insmix_fast.metrics import evaluate


def test_resnet34_encoder_matches_torchvision_layout():
    enc = ResNet34Encoder(64)
    # torchvision resnet34 has 21,797,672 parameters, 513,000 of them in the fc head
    assert sum(p.numel() for p in enc.parameters()) == 21_797_672 - 513_000
    assert [len(s) for s in (enc.layer1, enc.layer2, enc.layer3, enc.layer4)] == [3, 4, 6, 3]
    m = ResUNet34(8)
    y = m(torch.zeros(2, 3, 64, 96))
    assert y.shape == (2, 3, 64, 96)


def test_targets_and_postprocess_oracle():
    img, lab = SyntheticNuclei(seed=1, size=128, length=1)[0]
    t = make_targets(lab, 1)
    assert set(np.unique(t)) <= {0, 1, 2}
    assert ((t > 0) == (lab > 0)).all()
    prob = np.eye(3, dtype=np.float32)[t].transpose(2, 0, 1)
    pred = postprocess(prob, min_size=4)
    assert find_label_problems(pred).ok
    assert evaluate(lab, pred)["aji"] > 0.95
    assert postprocess(np.stack([np.ones((8, 8)), np.zeros((8, 8)), np.zeros((8, 8))])).max() == 0


def test_training_overfits_tiny_set():
    ds = SyntheticNuclei(seed=0, size=128, length=2)
    train = [ds[0], ds[1]]
    items = [(str(i), "all", *train[i]) for i in range(2)]
    cfg = SegmenterTrainConfig(steps=150, batch_size=4, crop=64, lr=3e-3, restart_every=150, width=8, augment=False,
                      threads=1, min_size=8, log_every=25, device="cpu", amp=False)
    torch.manual_seed(0)
    before = np.mean([r["aji"] for r in evaluate_model(ResUNet34(8), items, 8)])
    model, hist = train_model(train, cfg, seed=0, progress=False)
    after = np.mean([r["aji"] for r in evaluate_model(model, items, 8)])
    loss = hist["loss"]
    assert loss[-1] < 0.6 * loss[0], loss
    assert after > before + 0.2 and after > 0.35, (before, after)


def test_training_is_seeded():
    ds = SyntheticNuclei(seed=0, size=64, length=2)
    cfg = SegmenterTrainConfig(steps=3, batch_size=2, crop=32, width=8, threads=1, device="cpu", amp=False, log_every=1)
    pol = make_policy("cutmix")
    _, h1 = train_model([ds[0], ds[1]], cfg, seed=5, policy=pol, progress=False)
    _, h2 = train_model([ds[0], ds[1]], cfg, seed=5, policy=pol, progress=False)
    assert h1["loss"] == h2["loss"]
    cfg.workers = 2  # batches prepared ahead in threads: same batches, same losses
    _, h3 = train_model([ds[0], ds[1]], cfg, seed=5, policy=pol, progress=False)
    assert h3["loss"] == h1["loss"]


def test_every_arm_gives_valid_batches():
    ds = SyntheticNuclei(seed=2, size=96, length=4)
    train = [ds[i] for i in range(4)]
    from insmix_fast.experiments.train import random_crops

    imgs, labs = random_crops(train, 4, 64, seed=0, step=0)
    for arm in ARMS:
        if arm.endswith("-gan"):
            continue  # needs a blender file: test_gan_arms
        pol = make_policy(arm, train)
        if pol is None:
            continue
        oi, ol = pol(imgs.copy(), labs.copy(), 3, np.arange(4) + 8)
        assert oi.shape == imgs.shape and oi.dtype == np.uint8
        assert ol.shape == labs.shape
        for lab in ol:
            assert find_label_problems(lab).split_ids.size == 0, arm


def test_gan_arms_blend_only_pasted_pixels(tmp_path):
    from insmix_fast.experiments.train import random_crops
    from insmix_fast.gan.model import Generator

    ds = SyntheticNuclei(seed=2, size=96, length=4)
    train = [ds[i] for i in range(4)]
    imgs, labs = random_crops(train, 4, 64, seed=0, step=0)
    torch.manual_seed(0)
    g = Generator(width=4)
    ck = tmp_path / "last.pt"
    torch.save({"generator": g.state_dict(), "generator_config": g.config.to_dict()}, ck)
    with pytest.raises(ConfigError, match="blender"):
        make_policy("insmix-full-gan", train)
    for base in ("insmix-ssd", "insmix-full"):
        plain = make_policy(base, train)
        pol = make_policy(base + "-gan", train, {"blender": str(tmp_path), "strength": 1.0})
        assert pol.config == plain.config
        r = plain.insmix(imgs.copy(), labs.copy(), 3, np.arange(4))
        oi, ol = pol(imgs.copy(), labs.copy(), 3, np.arange(4))
        assert np.array_equal(ol, r.labels)
        assert np.array_equal(oi[~r.paste_masks], r.images[~r.paste_masks])
        assert r.paste_masks.any() and not np.array_equal(oi[r.paste_masks], r.images[r.paste_masks])


def test_config_errors(tmp_path):
    with pytest.raises(ConfigError):
        load_config("smoke", {"experiment": {"arms": ["none", "nope"]}})
    with pytest.raises(ConfigError):
        load_config("smoke", {"train": {"crop": 50}})
    with pytest.raises(ConfigError):
        load_config("smoke", {"train": {"bogus": 1}})
    with pytest.raises(ConfigError):
        load_config(tmp_path / "missing.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("name = [")
    with pytest.raises(ConfigError):
        load_config(bad)
    k = load_config("kumar")
    assert len(k.data.train) == 16 and len(k.data.groups["seen"]) == 8 and len(k.data.groups["unseen"]) == 6
    assert k.train.crop == 256 and k.train.weight_decay == 1e-4


def test_arm_patch_key_and_its_deprecated_name(tmp_path):
    """``[arms.insmix-*] patch`` is the background patch side; ``tile`` (its old name) still works
    with a FutureWarning, and a run stored with ``tile`` resumes under a config with ``patch``."""
    from insmix_fast.experiments.runner import ExperimentConfig

    assert load_config("smoke").arm_params["insmix-full"] == {"patch": 8}
    assert make_policy("insmix-bgp-only", None, {"patch": 8}).config.patch == 8
    with pytest.warns(FutureWarning, match=r"\[arms.insmix-bgp-only\] tile = 6 is deprecated: write patch = 6"):
        cfg = load_config("smoke", {"arms": {"insmix-bgp-only": {"tile": 6}}})
    assert cfg.arm_params["insmix-bgp-only"] == {"patch": 6}
    with pytest.warns(FutureWarning), pytest.raises(ConfigError, match="tile = 6 and patch = 8"):
        load_config("smoke", {"arms": {"insmix-full": {"tile": 6}}})  # the file already says patch = 8
    over = {"data": {"n_train": 1, "n_test": 1, "size": 64}, "train": {"steps": 1, "crop": 32, "batch_size": 2},
            "experiment": {"arms": ["none"], "seeds": [0]}}
    cfg = load_config("smoke", over)
    out = tmp_path / "o"
    run_experiment(cfg, out, progress=False, plots=False)
    stored = json.loads((out / "config.json").read_text())
    stored["arm_params"]["insmix-full"] = {"tile": 8}  # what a run made before the rename stored
    (out / "config.json").write_text(json.dumps(stored))
    assert run_experiment(cfg, out, resume=True, progress=False, plots=False)["skipped"] == [("none", 0)]
    assert ExperimentConfig.from_dict(cfg.file_dict()).arm_params == cfg.arm_params


def test_builtin_configs_and_synthetic_unseen_group():
    from insmix_fast.experiments.runner import BUILTIN_CONFIGS, load_data

    for name in BUILTIN_CONFIGS:
        load_config(name)
    c = load_config("synthetic-cpu", {"data": {"size": 48, "n_train": 1, "n_test": 2, "n_unseen": 1}})
    train, test = load_data(c.data)
    assert len(train) == 1 and [t[1] for t in test] == ["seen", "seen", "unseen"]
    assert not np.array_equal(test[0][2], test[2][2])


def test_folder_data_with_groups(tmp_path):
    from insmix_fast.data.folder import write_folder

    ds = SyntheticNuclei(seed=3, size=64, length=5)
    names = ["a1", "a2", "b1", "c1", "c2"]
    write_folder(tmp_path / "data", [ds[i] for i in range(5)], names)
    over = {
        "data": {"source": "path", "path": str(tmp_path / "data"), "train": ["a1", "a2"],
                 "groups": {"seen": ["b1"], "unseen": ["c1", "c2"]}},
        "train": {"steps": 2, "crop": 32, "batch_size": 2},
        "experiment": {"arms": ["none"], "seeds": [0]},
    }
    res = run_experiment(load_config("smoke", over), tmp_path / "out", progress=False)
    assert res["ran"] == [("none", 0)]
    md = (tmp_path / "out" / "results.md").read_text()
    assert "AJI seen (%)" in md and "AJI unseen (%)" in md
    rows = (tmp_path / "out" / "results.csv").read_text().splitlines()
    assert len(rows) == 1 + 3  # all, seen, unseen
    over["data"]["groups"]["seen"] = ["zz"]
    with pytest.raises(ConfigError, match="zz"):
        run_experiment(load_config("smoke", over), tmp_path / "out2", progress=False)


def test_cli_main(tmp_path, capsys):
    out = tmp_path / "o"
    argv = ["experiment", "--config", "smoke", "--out", str(out), "--arms", "none,cowmix", "--seeds", "0",
            "--steps", "2", "--no-progress"]
    assert cli.main(argv) == 0
    assert (out / "results.png").exists()
    assert cli.main(argv) == 2  # finished runs and no --resume
    assert "--resume" in capsys.readouterr().err
    assert cli.main(argv + ["--resume"]) == 0
    assert "skipped 2" in capsys.readouterr().out
    assert cli.main(["experiment", "--config", "smoke", "--out", str(out), "--arms", "bogus"]) == 2


@pytest.mark.slow
def test_smoke_experiment_table_plot_resume(tmp_path):
    cfg = load_config("smoke")
    out = tmp_path / "smoke"
    res = run_experiment(cfg, out, progress=False)
    n = len(cfg.arms) * len(cfg.seeds)
    assert len(res["ran"]) == n and not res["skipped"]
    md = (out / "results.md").read_text()
    for arm in cfg.arms:
        assert f"| {arm} | {len(cfg.seeds)} |" in md
    assert "±" in md
    csv_rows = (out / "results.csv").read_text().splitlines()
    assert len(csv_rows) == 1 + n
    png = cv2.imread(str(out / "results.png"))
    assert png is not None and png.shape[0] > 100 and png.shape[1] > 100
    for arm, s in res["summary"].items():
        assert all(0.0 <= v <= 1.0 for v in s["aji"])
    # resume: only the removed run is done again
    victim = out / "runs" / f"cutmix__s{cfg.seeds[-1]}.json"
    keep = (out / "runs" / "none__s0.json").read_text()
    old = json.loads(victim.read_text())
    victim.unlink()
    res2 = run_experiment(cfg, out, resume=True, progress=False)
    assert res2["ran"] == [("cutmix", cfg.seeds[-1])]
    assert len(res2["skipped"]) == n - 1
    assert (out / "runs" / "none__s0.json").read_text() == keep
    new = json.loads(victim.read_text())
    assert new["loss"] == old["loss"]  # same seed, same run
    with pytest.raises(ConfigError):
        run_experiment(cfg, out, progress=False)
    with pytest.raises(ConfigError):
        run_experiment(load_config("smoke", {"train": {"lr": 1e-2}}), out, resume=True, progress=False)


_ORDER_RUN = """
import json, sys
from insmix_fast.experiments.runner import load_config, run_experiment
arms, workers, out = sys.argv[1].split(","), int(sys.argv[2]), sys.argv[3]
over = {"data": {"n_train": 2, "n_test": 1}, "train": {"steps": 3, "log_every": 1, "workers": workers},
        "experiment": {"arms": arms, "seeds": [0]}}
run_experiment(load_config("smoke", over), out, progress=False, plots=False)
"""


def test_arm_results_do_not_depend_on_run_order_or_workers(tmp_path):
    """Each arm gives the same run whatever ran before it in the process (a fresh one per order,
    as the process-wide state that once leaked between arms — Numba's pool start resetting torch's
    thread count — is set up once per process) and whatever the worker count."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(root), os.environ.get("PYTHONPATH", "")])}
    runs = {}
    for order, workers in (("none,insmix-full", 0), ("insmix-full,none", 1)):
        out = tmp_path / order.replace(",", "_")
        r = subprocess.run([sys.executable, "-c", _ORDER_RUN, order, str(workers), str(out)],
                           capture_output=True, text=True, env=env, timeout=600)
        assert r.returncode == 0, r.stderr[-3000:]
        for arm in order.split(","):
            rec = json.loads((out / "runs" / f"{arm}__s0.json").read_text())
            runs.setdefault(arm, []).append((rec["loss"], rec["images"]))
    for arm, (first, second) in runs.items():
        assert first == second, f"arm {arm}: the result depends on the run order / worker count"
