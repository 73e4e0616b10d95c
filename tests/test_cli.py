import subprocess
import sys
from pathlib import Path

import cv2
import pytest

from insmix_fast import InstanceBank
from insmix_fast.cli import main


@pytest.mark.parametrize("argv", [["--help"], ["demo", "--help"], ["bank", "--help"], ["bank", "build", "--help"],
                                  ["bank", "info", "--help"], ["gan", "--help"], ["experiment", "--help"]])
def test_help_everywhere(argv, capsys):
    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code == 0
    assert "usage: insmix-fast" in capsys.readouterr().out


def test_demo_writes_grid_and_records(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), "--tiles", "2", "--bank-tiles", "8", "--size", "128",
                 "--no-progress", "--p-paste", "1.0"]) == 0
    text = capsys.readouterr().out
    assert "bank: InstanceBank(" in text and "tile 1:" in text and "pasted" in text
    png = cv2.imread(str(out / "insmix_demo.png"))
    assert png is not None and png.shape[0] > 2 * 128 and png.shape[1] > 4 * 128
    rows = (out / "pastes.csv").read_text().strip().splitlines()
    assert rows[0].startswith("tile,template") and len(rows) > 2


def test_demo_on_a_folder_and_official_mode(tmp_path, small_data, capsys):
    from insmix_fast.data import write_folder

    root = write_folder(tmp_path / "ds", [small_data[i] for i in range(4)])
    assert main(["demo", "--data", str(root), "--out", str(tmp_path / "o"), "--tiles", "2", "--official",
                 "--no-progress"]) == 0
    assert (tmp_path / "o" / "insmix_demo.png").is_file()


def test_bank_build_and_info(tmp_path, capsys):
    path = tmp_path / "bank.npz"
    assert main(["bank", "build", "synthetic", "-o", str(path), "--tiles", "4", "--size", "128",
                 "--no-progress"]) == 0
    bank = InstanceBank.load(path)
    assert len(bank) > 0
    assert main(["bank", "info", str(path)]) == 0
    assert f"instances: {len(bank)}" in capsys.readouterr().out


def test_errors_are_reported_not_raised(tmp_path, capsys):
    assert main(["bank", "info", str(tmp_path / "missing.npz")]) == 2
    assert "not found" in capsys.readouterr().err
    assert main(["demo", "--data", str(tmp_path), "--out", str(tmp_path / "o")]) == 2
    assert "error" in capsys.readouterr().err
    assert main(["demo", "--out", str(tmp_path / "o"), "--eps", "-1", "--no-progress"]) == 2
    assert "eps" in capsys.readouterr().err


def test_console_script_is_installed():
    r = subprocess.run([sys.executable, "-m", "insmix_fast.cli", "--version"], capture_output=True, text=True)
    assert r.returncode == 0 and "insmix-fast" in r.stdout


# ----------------------------------------------------------------- argument checks and one-line errors
def _one_line(err: str) -> str:
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("insmix-fast: error: "), err
    assert "Traceback" not in err
    return lines[0]


@pytest.mark.parametrize("argv, what", [
    (["demo", "--tiles", "-2"], "argument --tiles: must be an integer ≥ 1, got -2"),
    (["demo", "--size", "abc"], "argument --size: must be an integer, got 'abc'"),
    (["bank", "build", "synthetic", "-o", "b.npz", "--tiles", "0"], "argument --tiles: must be an integer ≥ 1"),
    (["gan", "train", "--data", "synthetic", "--out", "o", "--lr", "0"], "argument --lr: must be > 0, got 0"),
    (["gan", "train", "--data", "synthetic", "--out", "o", "--batch-size", "1.5"], "argument --batch-size"),
    (["experiment", "--config", "smoke", "--out", "o", "--steps", "0"], "argument --steps: must be an integer ≥ 1"),
])
def test_bad_numbers_are_usage_errors(argv, what, capsys):
    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code == 2
    assert what in capsys.readouterr().err


def test_demo_checks_its_output_before_building_a_bank(tmp_path, capsys):
    f = tmp_path / "a_file"
    f.write_text("x")
    assert main(["demo", "--out", str(f), "--no-progress"]) == 2
    captured = capsys.readouterr()
    assert "exists and is not a folder" in _one_line(captured.err) and "bank:" not in captured.out
    assert main(["demo", "--out", str(f / "sub"), "--no-progress"]) == 2  # below a file
    assert "is a file, not a folder" in _one_line(capsys.readouterr().err)
    assert main(["demo", "--data", "synthetic:x", "--out", str(tmp_path / "o")]) == 2
    assert "seed after 'synthetic:'" in _one_line(capsys.readouterr().err)


def test_bank_build_checks_its_output_before_building(tmp_path, capsys):
    f = tmp_path / "a_file"
    f.write_text("x")
    cases = [(f / "b.npz", "is a file, not a folder"), (tmp_path, "is a folder")]
    if Path("/proc/self").is_dir():  # Linux: unwritable even for root
        cases.append((Path("/proc/no_such_dir/b.npz"), "cannot write in /proc/no_such_dir"))
    for out, why in cases:
        assert main(["bank", "build", "synthetic", "-o", str(out), "--tiles", "2", "--no-progress"]) == 2
        captured = capsys.readouterr()
        assert why in _one_line(captured.err) and "built" not in captured.out


def test_gan_config_errors_are_one_line_before_training(tmp_path, capsys):
    assert main(["gan", "train", "--data", "synthetic", "--out", str(tmp_path / "o"), "--size", "34"]) == 2
    assert "size must be a multiple of 4" in _one_line(capsys.readouterr().err)
    assert not (tmp_path / "o").exists()


def test_missing_matplotlib_says_how_to_install(tmp_path, capsys, monkeypatch):
    import insmix_fast.plots

    monkeypatch.setattr(insmix_fast.plots, "matplotlib_available", lambda: False)
    argv = ["gan", "train", "--data", "synthetic", "--out", str(tmp_path / "o"), "--steps", "1", "--size", "32",
            "--width", "4", "--d-width", "8", "--batch-size", "2", "--n-synthetic", "4", "--no-progress"]
    assert main(argv) == 2
    assert "pip install 'insmix-fast[plots]'" in _one_line(capsys.readouterr().err)


def test_os_errors_are_one_line(capsys):
    import argparse

    from insmix_fast.cliutil import error_line, run

    def boom(args):
        raise PermissionError(13, "Permission denied", "/root/x.npz")

    p = argparse.ArgumentParser(prog="insmix-fast")
    p.set_defaults(func=boom)
    assert run(p, []) == 2
    assert _one_line(capsys.readouterr().err) == "insmix-fast: error: Permission denied: /root/x.npz"
    assert error_line(ValueError("two\nlines")) == "two lines"


def test_errors_in_a_subprocess_are_one_line(tmp_path):
    r = subprocess.run([sys.executable, "-m", "insmix_fast.cli", "bank", "info", str(tmp_path / "missing.npz")],
                       capture_output=True, text=True)
    assert r.returncode == 2 and r.stdout == ""
    _one_line(r.stderr)
    r = subprocess.run([sys.executable, "-m", "insmix_fast.gan.cli", "export", str(tmp_path), "-o",
                        str(tmp_path / "b.pt")], capture_output=True, text=True)
    assert r.returncode == 2 and "no smooth-GAN checkpoint" in _one_line(r.stderr)


def test_bank_info_prints_the_counts_per_class(tmp_path, capsys):
    from typed_data import TypedTiles

    data = TypedTiles(seed=0, size=128, n=4)
    bank = InstanceBank.from_samples(data, progress=False)
    assert bank.typed
    path = bank.save(tmp_path / "typed.npz")
    assert main(["bank", "info", str(path)]) == 0
    out = capsys.readouterr().out
    assert "instances per class:" in out and "class_counts" not in out
    counts = bank.class_counts()
    for c, name in enumerate(bank.class_names[1:], start=1):
        line = next(ln for ln in out.splitlines() if ln.split()[:2] == [str(c), name.split()[0]])
        assert f" {int(counts[c])} (" in line


# ---------------------------------------------------------------------- typed demo
def test_demo_on_typed_synthetic_tiles(tmp_path, capsys):
    out = tmp_path / "typed"
    assert main(["demo", "--out", str(out), "--tiles", "2", "--bank-tiles", "8", "--size", "128", "--classes", "3",
                 "--class-mix", "0.6,0.3,0.1", "--template-class", "balanced", "--p-paste", "1.0",
                 "--no-progress"]) == 0
    text = capsys.readouterr().out
    assert "classes: lymphocyte-like, tumour-like, spindle-like" in text and "bank class mix: lymphocyte-like" in text
    assert "pasted by class:" in text and "class mix of the pastes ('balanced'):" in text
    rows = [r.split(",") for r in (out / "pastes.csv").read_text().strip().splitlines()]
    assert rows[0][-1] == "class" and all(len(r) == len(rows[0]) for r in rows) and len(rows) > 2
    assert {int(r[-1]) for r in rows[1:]} <= {1, 2, 3}
    png = cv2.imread(str(out / "insmix_demo.png"))
    assert png is not None and png.shape[0] > 2 * 128 + 22 + 20  # two rows, titles and the class legend


def test_demo_on_a_typed_folder(tmp_path, capsys):
    from dataset_fixtures import make_truth, write_puma
    from insmix_fast.data import PUMA_CLASSES

    truths = [make_truth(20 + k, 64, 10, n_max=16) for k in range(4)]
    root = write_puma(tmp_path / "puma", truths, [f"roi_{k}" for k in range(4)], PUMA_CLASSES)
    assert main(["demo", "--data", str(root), "--out", str(tmp_path / "o"), "--tiles", "2", "--size", "64",
                 "--p-paste", "1.0", "--no-progress"]) == 0
    text = capsys.readouterr().out
    assert "PumaDataset" in text and "classes: nuclei_tumor" in text and "class mix of the pastes ('any')" in text


@pytest.mark.parametrize("argv, message", [
    (["--class-mix", "1,2"], "--class-mix needs --classes"),
    (["--classes", "3", "--class-mix", "1,2"], "--class-mix has 2 values but --classes is 3"),
    (["--template-class", "same"], "--template-class same needs typed data"),
])
def test_typed_demo_arguments_are_checked(tmp_path, capsys, argv, message):
    assert main(["demo", "--out", str(tmp_path / "o"), "--no-progress", "--bank-tiles", "2", *argv]) == 2
    assert message in _one_line(capsys.readouterr().err)
    with pytest.raises(SystemExit) as e:  # argparse usage errors
        main(["demo", "--class-mix", "1,-2", "--classes", "2"])
    assert e.value.code == 2 and "argument --class-mix: must be non-negative" in capsys.readouterr().err
