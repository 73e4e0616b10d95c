"""smooth-GAN training: CLI train/resume/export on a tiny CPU config, and a short run whose losses move."""

import json

import numpy as np
import pytest
import torch

from insmix_fast.errors import ConfigError, InputError
from insmix_fast.gan.cli import build_parser, main
from insmix_fast.gan.data import TileSource, load_tiles_dir, simple_paste, two_stain_tiles
from insmix_fast.gan.export import load_blender, load_generator
from insmix_fast.gan.train import GanTrainConfig, Trainer, _mean_distance_to, roc_auc

TINY = ["--size", "32", "--width", "4", "--d-width", "8", "--batch-size", "2", "--n-synthetic", "4", "--no-progress"]


def test_cli_train_resume_export(tmp_path, capsys):
    out = tmp_path / "ck"
    assert main(["gan", "train", "--data", "synthetic", "--out", str(out), "--steps", "2", *TINY]) == 0
    assert (out / "last.pt").is_file() and (out / "loss_curves.png").is_file()
    assert sorted(p.name for p in out.glob("samples_epoch*.png")) == ["samples_epoch001.png"]
    h = json.loads((out / "history.json").read_text())
    assert len(h["g_rec"]) == 2
    # resume: continues at step 2 up to 4, keeping the history
    assert main(["train", "--data", "synthetic", "--out", str(out), "--steps", "4", "--resume", *TINY]) == 0
    state = torch.load(out / "last.pt", weights_only=True)
    assert state["step"] == 4 and len(state["history"]["g_rec"]) == 4
    assert h["g_rec"] == state["history"]["g_rec"][:2]
    assert sorted(p.name for p in out.glob("samples_epoch*.png")) == ["samples_epoch001.png", "samples_epoch002.png"]
    # export both formats from the directory
    assert main(["gan", "export", str(out), "-o", str(tmp_path / "b.pt")]) == 0
    assert main(["gan", "export", str(out / "last.pt"), "-o", str(tmp_path / "b.pt2")]) == 0
    assert "wrote" in capsys.readouterr().out
    x = torch.rand(1, 3, 32, 32)
    m = torch.zeros(1, 1, 32, 32)
    m[..., 8:16, 8:16] = 1
    g = load_generator(out)
    from insmix_fast.gan.export import BlendModule
    with torch.no_grad():
        ref = BlendModule(g)(x, m, 1 - m)
        torch.testing.assert_close(load_blender(tmp_path / "b.pt2")(x, m, 1 - m), ref)


def test_resume_is_deterministic(tmp_path):
    common = dict(data="synthetic", size=32, width=4, d_width=8, batch_size=2, n_synthetic=4, progress=False,
                  plots=False)
    a = Trainer(GanTrainConfig(out=str(tmp_path / "a"), **common)).run(3).history
    Trainer(GanTrainConfig(out=str(tmp_path / "b"), **common)).run(2)
    tr = Trainer(GanTrainConfig(out=str(tmp_path / "b"), **common))
    tr.load(tmp_path / "b")
    b = tr.run(3).history
    np.testing.assert_allclose(a["g_rec"], b["g_rec"], rtol=1e-5)


def test_cli_errors(tmp_path, capsys):
    with pytest.raises(SystemExit):
        build_parser().parse_args(["gan", "train", "--out", "x"])  # --data missing
    with pytest.raises(SystemExit):
        build_parser().parse_args(["gan", "train", "--data", "synthetic", "--out", "x", "--steps", "1", "--epochs", "1"])
    assert main(["gan", "train", "--data", str(tmp_path / "nope"), "--out", str(tmp_path / "o"), *TINY]) == 2
    assert "not a directory" in capsys.readouterr().err
    assert main(["gan", "export", str(tmp_path), "-o", str(tmp_path / "b.pt")]) == 2
    with pytest.raises(ConfigError):
        GanTrainConfig(size=30)
    with pytest.raises(ConfigError):
        GanTrainConfig(loss="wgan")
    with pytest.raises(ConfigError, match="rec_region"):
        GanTrainConfig(rec_region="everywhere")
    with pytest.raises(ConfigError, match="d_steps"):
        GanTrainConfig(d_steps=0)
    with pytest.raises(ConfigError, match="save_every"):
        GanTrainConfig(save_every=0)


def test_d_steps_and_rec_region(tmp_path):
    """Extra discriminator updates draw batches of their own; the masked L1 is what is logged."""
    kw = dict(data="synthetic", out=str(tmp_path), size=32, width=4, d_width=8, batch_size=2, n_synthetic=4,
              progress=False, plots=False, paste="simple")
    one = Trainer(GanTrainConfig(**kw, d_steps=1))
    three = Trainer(GanTrainConfig(**kw, d_steps=3))
    drawn = []
    orig = three.source.batch
    three.source.batch = lambda step, n: drawn.append(step) or orig(step, n)
    one.step()
    three.step()
    three.step()
    from insmix_fast.gan.train import D_STEP0
    assert drawn == [0, D_STEP0, D_STEP0 + 1, 1, D_STEP0 + 2, D_STEP0 + 3]
    assert one.history["d_loss"][0] != three.history["d_loss"][0]  # D was updated twice before the main step
    paste = Trainer(GanTrainConfig(**kw, rec_region="paste"))
    b = paste.source.batch(0, 2)
    paste.step(b)
    with torch.no_grad():  # the logged reconstruction is the masked one (G before its update)
        g0 = Trainer(GanTrainConfig(**kw, rec_region="paste")).G(b.u, b.paste_mask, b.original_mask)
    from insmix_fast.gan.losses import reconstruction_loss
    assert paste.history["g_rec"][0] == pytest.approx(reconstruction_loss(b.u, g0, b.paste_mask).item(), rel=1e-5)


def test_register_into_main_parser():
    import argparse

    from insmix_fast.gan.cli import register
    p = argparse.ArgumentParser(prog="insmix-fast")
    sub = p.add_subparsers(dest="command")
    register(sub)
    args = p.parse_args(["gan", "export", "ck", "-o", "b.pt2"])
    assert args.command == "gan" and args.gan_command == "export" and callable(args.func)


def test_data_dir_and_simple_paste(tmp_path):
    tiles, _ = two_stain_tiles(3, 64)
    for i, (img, lab) in enumerate(tiles):
        np.savez(tmp_path / f"t{i}.npz", image=img, labels=lab)
    got = load_tiles_dir(tmp_path)
    assert len(got) == 3 and np.array_equal(got[1][1], tiles[1][1])
    with pytest.raises(InputError):
        load_tiles_dir(tmp_path / "missing")
    rng = np.random.default_rng(0)
    u, lab, pm = simple_paste(tiles[0][0], tiles[0][1], tiles[1][0], tiles[1][1], rng)
    assert pm.any() and np.array_equal(u[~pm], tiles[0][0][~pm]) and (lab[pm] > tiles[0][1].max()).all()
    src = TileSource(got, 32, paste="simple")
    b = src.batch(0, 2)
    assert b.u.shape == (2, 3, 32, 32) and b.paste_mask.shape == (2, 1, 32, 32)
    assert float(b.u.min()) >= -1 and float(b.u.max()) <= 1
    assert not ((b.paste_mask > 0) & (b.original_mask > 0)).any()


def test_short_run_losses_move(tmp_path):
    """A tiny CPU run: the reconstruction L1 falls, the discriminator's losses move.

    (Whether D separates real from blended tiles needs hundreds of steps; that is
    measured by ``gan train`` runs, see bench/RESULTS.md, not asserted here.)
    """
    from insmix_fast.gan.train import train

    cfg = GanTrainConfig(data="synthetic", out=str(tmp_path), steps=30, size=64, width=8, d_width=16, batch_size=4,
                      n_synthetic=16, lr=1e-3, d_lr=2e-3, progress=False, plots=False, seed=0)
    d0 = Trainer(cfg).D.state_dict()
    res = train(cfg, evaluate_batches=2)
    rec = np.array(res.history["g_rec"])
    rec = rec[rec > 0]  # the L1 is over the pasted pixels: a batch without pastes logs 0
    assert len(rec) >= 20 and rec[-10:].mean() < 0.8 * rec[:5].mean(), rec
    assert np.std(res.history["d_loss"]) > 1e-3 and np.std(res.history["gap"]) > 1e-3
    d1 = torch.load(tmp_path / "last.pt", weights_only=True)["discriminator"]
    assert any(not torch.equal(d0[k], d1[k]) for k in d0)
    assert res.evaluation["rec"] < res.evaluation_start["rec"]
    assert set(res.evaluation) == {"rec", "gap", "separated", "auc", "separated_u", "auc_u", "acc"}
    saved = json.loads((tmp_path / "eval.json").read_text())
    assert saved["data"].startswith("held-out synthetic tiles")
    assert saved["step"] == 30 and saved["after"] == pytest.approx(res.evaluation, nan_ok=True)
    assert saved["before"] == pytest.approx(res.evaluation_start, nan_ok=True)


def test_roc_auc_by_hand():
    neg = torch.tensor([0.1, 0.4, 0.35, 0.8])
    pos = torch.tensor([0.9, 0.4, 0.7])
    # pairs (pos > neg): 0.9 beats 4, 0.4 beats 2 and ties 1, 0.7 beats 3 -> (4 + 2.5 + 3) / 12
    assert roc_auc(neg, pos) == pytest.approx(9.5 / 12)
    assert roc_auc(pos, pos) == pytest.approx(0.5)
    assert roc_auc(torch.zeros(3), torch.ones(2)) == 1.0 and roc_auc(torch.ones(3), torch.zeros(2)) == 0.0
    assert np.isnan(roc_auc(torch.zeros(0), pos))
    assert roc_auc([0.1, 0.4, 0.35, 0.8], np.array([0.9, 0.4, 0.7])) == pytest.approx(9.5 / 12)  # array-likes
    with pytest.raises(ValueError, match="NaN"):
        roc_auc(torch.tensor([0.1, float("nan")]), pos)


def test_mean_distance_to_anchor_set_and_exclusion():
    anchors = torch.tensor([[[[0.0, 0.0]]], [[[2.0, 2.0]]]])  # two 1×1×2 maps
    maps = torch.tensor([[[[1.0, 3.0]]]])
    # d to anchor 0 = mean(|1|, |3|) = 2, to anchor 1 = mean(1, 1) = 1
    assert _mean_distance_to(maps, anchors).tolist() == pytest.approx([1.5])
    assert _mean_distance_to(maps, anchors, exclude=torch.tensor([[True, False]])).tolist() == pytest.approx([1.0])


def test_two_stain_spec_and_held_out_evaluation_tiles(tmp_path):
    src = TileSource.from_spec("synthetic-two-stain", 32, seed=3, n_synthetic=6, paste="simple")
    tiles, ids = two_stain_tiles(6, 32, seed=3)
    assert len(src) == 6 and ids.tolist() == [0, 1] * 3
    assert all(np.array_equal(a[0], b[0]) for a, b in zip(src.tiles, tiles))
    cfg = GanTrainConfig(data="synthetic-two-stain", out=str(tmp_path), size=32, width=4, d_width=8, n_synthetic=6,
                      paste="simple", seed=3)
    tr = Trainer(cfg)
    ev = tr.eval_source
    assert len(ev) == 8 and "held-out synthetic-two-stain" in tr.eval_description
    train_imgs = {t[0].tobytes() for t in tr.source.tiles}
    assert not any(t[0].tobytes() in train_imgs for t in ev.tiles)  # evaluation never sees a training tile
    # a directory gets its own tiles unless --eval-data names others
    for i, (img, lab) in enumerate(tiles[:3]):
        np.savez(tmp_path / f"t{i}.npz", image=img, labels=lab)
    tr = Trainer(GanTrainConfig(data=str(tmp_path), out=str(tmp_path / "o"), size=32, width=4, d_width=8, paste="simple"))
    assert tr.eval_source is tr.source and "training tiles" in tr.eval_description
    tr = Trainer(GanTrainConfig(data=str(tmp_path), out=str(tmp_path / "o"), size=32, width=4, d_width=8, paste="simple",
                             eval_data="synthetic-two-stain"))
    assert len(tr.eval_source) == 64 and "held-out synthetic-two-stain" in tr.eval_description
    assert not any(t[0].tobytes() in train_imgs for t in tr.eval_source.tiles)


def test_cli_eval_data_dir(tmp_path, capsys):
    tiles, _ = two_stain_tiles(4, 64, seed=9)
    (tmp_path / "ev").mkdir()
    for i, (img, lab) in enumerate(tiles):
        np.savez(tmp_path / "ev" / f"t{i}.npz", image=img, labels=lab)
    out = tmp_path / "ck"
    assert main(["gan", "train", "--data", "synthetic", "--out", str(out), "--steps", "1", "--eval-data",
                 str(tmp_path / "ev"), "--eval-batches", "1", "--no-plots", *TINY]) == 0
    saved = json.loads((out / "eval.json").read_text())
    assert saved["data"] == f"held-out tiles from {tmp_path / 'ev'}"
    assert set(saved["after"]) >= {"rec", "auc", "auc_u", "separated"}
    assert "evaluation:" in capsys.readouterr().out
    # a bad --eval-data fails before any training, also when resuming
    assert main(["gan", "train", "--data", "synthetic", "--out", str(out), "--steps", "3", "--resume", "--eval-data",
                 str(tmp_path / "missing"), *TINY]) == 2
    assert "not a directory" in capsys.readouterr().err
    assert torch.load(out / "last.pt", weights_only=True)["step"] == 1
