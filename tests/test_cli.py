import subprocess
import sys

import cv2
import numpy as np
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
