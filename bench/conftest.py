"""Shared fixtures of the benchmark suites (`pytest bench/ --benchmark-only`)."""

import os
import sys

import numpy as np
import pytest

sys.path.insert(0, os.path.join(os.path.dirname(__file__), os.pardir, "tests"))  # the slow reference


@pytest.fixture(scope="session")
def bank20k():
    """A realistic bank: ≥ 20k synthetic nuclei (40 tiles of 1024×1024)."""
    from insmix_fast import InstanceBank
    from insmix_fast.data import SyntheticNuclei

    bank = InstanceBank.from_samples(SyntheticNuclei(seed=1, size=1024, length=40), progress=False)
    assert len(bank) >= 20_000, len(bank)
    return bank


@pytest.fixture(scope="session")
def crops64():
    from insmix_fast.data import SyntheticNuclei

    return SyntheticNuclei(seed=2, size=256, length=64).as_arrays()
