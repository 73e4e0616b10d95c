"""Doctest collection over the package (``--doctest-modules``, see pyproject.toml).

Collecting doctests imports every module of ``insmix_fast``. A module that cannot be
imported because an *optional* package is missing (the ``wsi``, ``dali``, ``gpu`` or ``plots``
extras) is left out with its reason; any other import error still fails. Doctests of a
module that import fine but *run* an optional package are skipped when it is missing
(:data:`DOCTEST_NEEDS`).
"""

from __future__ import annotations

import importlib
import importlib.util
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent
PACKAGE = ROOT / "insmix_fast"

#: top-level names of the packages of the optional extras
OPTIONAL = {"tifffile", "imagecodecs", "openslide", "shapely", "cucim", "nvidia", "cupy", "matplotlib", "numba_cuda"}
#: module → packages its doctests run (the module itself imports without them)
DOCTEST_NEEDS = {
    "insmix_fast.plots": ("matplotlib",),
    "insmix_fast.wsi.synthetic_slide": ("tifffile",),
}

# the kernels are installed as insmix_fast.kernels from the top-level kernels/ folder; a dev
# checkout links them into the package. They hold no doctests (tests/test_structure.py reads them).
collect_ignore = ["insmix_fast/kernels"]

_skipped: dict[str, str] = {}


def _module_name(path: Path) -> str | None:
    try:
        rel = path.resolve().relative_to(PACKAGE.resolve())
    except ValueError:
        return None
    parts = ["insmix_fast", *rel.with_suffix("").parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def pytest_ignore_collect(collection_path: Path, config):
    if collection_path.suffix != ".py" or not config.getoption("doctestmodules", False):
        return None
    name = _module_name(collection_path)
    if name is None:
        return None
    try:
        importlib.import_module(name)
    except ImportError as e:
        missing = (e.name or "").split(".")[0]
        if missing in OPTIONAL:
            _skipped[name] = f"optional package {missing!r} is not installed"
            return True
        raise
    return None


def pytest_collection_modifyitems(config, items):
    for item in items:
        if type(item).__name__ != "DoctestItem":
            continue
        for mod, needs in DOCTEST_NEEDS.items():
            if item.name == mod or item.name.startswith(mod + "."):
                gone = [n for n in needs if importlib.util.find_spec(n) is None]
                if gone:
                    item.add_marker(pytest.mark.skip(reason=f"needs {', '.join(gone)} ({item.name})"))


def pytest_terminal_summary(terminalreporter):
    for name, why in sorted(_skipped.items()):
        terminalreporter.write_line(f"doctests of {name} not collected: {why}")
