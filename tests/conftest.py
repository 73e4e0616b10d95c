import os

# No background compile processes from the many throw-away imports of the suite (e.g. a wheel
# unpacked in a temp folder has an empty Numba cache); tests/test_first_use.py turns it back on.
os.environ.setdefault("INSMIX_FAST_PRECOMPILE", "0")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

from insmix_fast import InstanceBank  # noqa: E402
from insmix_fast.data import SyntheticNuclei  # noqa: E402


def pytest_report_header(config):
    return f"NUMBA_NUM_THREADS={os.environ.get('NUMBA_NUM_THREADS', 'default')}"


@pytest.fixture(scope="session")
def small_data():
    """Eight 96×96 synthetic tiles: big enough for pastes, small enough for the slow reference."""
    return SyntheticNuclei(seed=7, size=96, length=8)


@pytest.fixture(scope="session")
def small_bank(small_data):
    return InstanceBank.from_samples(small_data, progress=False)


@pytest.fixture(scope="session")
def tiles256():
    ds = SyntheticNuclei(seed=11, size=256, length=12)
    return [ds[i] for i in range(len(ds))]


@pytest.fixture(scope="session")
def bank256(tiles256):
    return InstanceBank.from_samples(tiles256, progress=False)
