"""Optional dependencies of the WSI extra, imported on first use with a clear message."""

from __future__ import annotations

import importlib

_EXTRA = "pip install insmix-fast[wsi]"


def require(module: str, what: str):
    """Import ``module`` or raise ImportError naming the ``wsi`` extra."""
    try:
        return importlib.import_module(module)
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ImportError(f"{what} needs the '{module}' package: {_EXTRA} ({e})") from e


def available(module: str) -> bool:
    try:
        importlib.import_module(module)
        return True
    except Exception:  # ImportError, or a broken native library (OSError)
        return False
