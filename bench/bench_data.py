"""Data-side speed: synthetic tile generation, label topology checks and repair."""

import cv2
import numpy as np
import pytest

from insmix_fast.data import SyntheticNuclei, clean_labels, find_label_problems


@pytest.fixture(scope="module")
def cut_circles_1000():
    rng = np.random.default_rng(0)
    lab = np.zeros((1000, 1000), np.int32)
    for k in range(1, 1001):
        y, x = (int(v) for v in rng.integers(0, 1000, 2))
        cv2.circle(lab, (x, y), int(rng.integers(4, 14)), k, -1)
    return lab


@pytest.mark.parametrize("size", [256, 1024])
def test_synthetic_tile(benchmark, size):
    d = SyntheticNuclei(seed=0, size=size, length=1000)
    d[0]
    state = {"i": 0}

    def one():
        state["i"] += 1
        return d[state["i"]]

    benchmark.pedantic(one, rounds=20 if size == 256 else 5, iterations=1)


def test_find_label_problems_1000px(benchmark, cut_circles_1000):
    find_label_problems(cut_circles_1000)
    benchmark(find_label_problems, cut_circles_1000)


def test_clean_labels_1000px(benchmark, cut_circles_1000):
    clean_labels(cut_circles_1000)
    benchmark(clean_labels, cut_circles_1000)
