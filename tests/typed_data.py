"""Typed tiles for the tests and the class-balance benchmark: synthetic nuclei with classes
drawn from a skewed distribution (a few common classes, one rare one)."""

from __future__ import annotations

import numpy as np

from insmix_fast.data import SyntheticNuclei

#: Class frequencies of the skewed data set (class 1 common … class 4 rare) and their names.
SKEWED = (0.70, 0.20, 0.08, 0.02)
CLASS_NAMES = ("background", "common", "frequent", "uncommon", "rare")


def add_types(labels: np.ndarray, rng: np.random.Generator, probs=SKEWED) -> np.ndarray:
    """A type map for ``labels``: each instance gets a class 1..len(probs) drawn from ``probs``."""
    ids = np.unique(labels)
    ids = ids[ids > 0]
    lut = np.zeros(int(labels.max()) + 1, np.int32)
    lut[ids] = rng.choice(len(probs), size=ids.size, p=np.asarray(probs) / np.sum(probs)) + 1
    return lut[labels]


class TypedTiles:
    """``n`` typed synthetic tiles ``(image, labels, types)`` with ``class_names`` (a typed data set)."""

    class_names = CLASS_NAMES

    def __init__(self, seed: int, size: int, n: int, probs=SKEWED):
        rng = np.random.default_rng(seed + 1000)
        ds = SyntheticNuclei(seed=seed, size=size, length=n)
        self.samples = []
        for k in range(n):
            image, labels = ds[k]
            self.samples.append((image, labels, add_types(labels, rng, probs)))

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, k):
        return self.samples[k]

    def arrays(self):
        """``(images N×H×W×3, labels N×H×W, types N×H×W)``."""
        return tuple(np.stack([s[j] for s in self.samples]) for j in range(3))
