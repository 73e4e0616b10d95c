"""The kernels install as ``insmix_fast.kernels`` in editable and wheel installs."""

import os
import re
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

import insmix_fast
import insmix_fast.kernels
import insmix_fast.kernels.pipeline

ROOT = Path(__file__).resolve().parents[1]


def test_kernels_import_from_the_installed_package():
    assert insmix_fast.kernels.pipeline.insmix_tile is not None
    path = Path(insmix_fast.kernels.__file__).resolve()
    # editable install: the top-level kernels/ folder; wheel install: site-packages/insmix_fast/kernels
    assert path.parent == (ROOT / "kernels").resolve() or path.parent.parent == Path(insmix_fast.__file__).parent


def test_pyproject_lists_every_subpackage():
    text = (ROOT / "pyproject.toml").read_text()
    listed = set(re.findall(r'"(insmix_fast(?:\.\w+)*)"', text))
    on_disk = {"insmix_fast." + ".".join(p.relative_to(ROOT / "insmix_fast").parts[:-1])
               for p in (ROOT / "insmix_fast").rglob("__init__.py") if p.parent != ROOT / "insmix_fast"}
    on_disk |= {"insmix_fast", "insmix_fast.kernels"}
    assert on_disk <= listed, f"add to [tool.setuptools] packages: {sorted(on_disk - listed)}"


def test_wheel_contains_kernels_and_runs_from_it(tmp_path):
    r = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                        "-w", str(tmp_path / "dist"), str(ROOT)], capture_output=True, text=True)
    if r.returncode != 0 and "No module named" in r.stderr:
        pytest.skip(f"building a wheel needs setuptools and wheel (the dev extra): {r.stderr[-200:]}")
    assert r.returncode == 0, r.stderr
    wheel = next((tmp_path / "dist").glob("insmix_fast-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    assert "insmix_fast/kernels/pipeline.py" in names and "insmix_fast/kernels/rng.py" in names
    assert not any(n.startswith("kernels/") for n in names)
    site = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(site)
    code = ("import numpy as np, insmix_fast, insmix_fast.kernels as k;"
            "from insmix_fast.data import SyntheticNuclei;"
            "d = SyntheticNuclei(seed=0, size=96, length=3);"
            "b = insmix_fast.InstanceBank.from_samples(d, progress=False);"
            "r = insmix_fast.insmix(*d[0], b, seed=0);"
            "print(k.__file__, len(r.pastes))")
    env = dict(os.environ, PYTHONPATH=str(site))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, env=env)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith(str(site / "insmix_fast" / "kernels"))
