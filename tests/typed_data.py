"""Typed tiles for the tests and the class-balance benchmark: synthetic nuclei with classes
drawn from a skewed distribution (a few common classes, one rare one)."""

from __future__ import annotations

import functools

import numpy as np

from insmix_fast.bank import InstanceBank
from insmix_fast.data import SyntheticNuclei

#: Class frequencies of the skewed data set (class 1 common … class 4 rare) and their names.
SKEWED = (0.70, 0.20, 0.08, 0.02)
CLASS_NAMES = ("background", "common", "frequent", "uncommon", "rare")


def add_types(labels: np.ndarray, rng: np.random.Generator, probs=SKEWED, size_bias: float = 0.0) -> np.ndarray:
    """A type map for ``labels``: each instance gets a class 1..len(probs) drawn from ``probs``.

    ``size_bias`` > 0 ties class to size: class ``c``'s weight is multiplied by
    ``exp(size_bias · s_c · z)`` where ``z`` is the instance's standardised log area in its
    tile and ``s_c`` runs from −1 (class 1, small nuclei) to +1 (the rarest class, large).
    """
    ids, area = np.unique(labels, return_counts=True)
    area = area[ids > 0]
    ids = ids[ids > 0]
    lut = np.zeros(int(labels.max()) + 1, np.int32)
    p = np.asarray(probs, np.float64) / np.sum(probs)
    if size_bias == 0.0 or ids.size < 2:
        lut[ids] = rng.choice(len(p), size=ids.size, p=p) + 1
        return lut[labels]
    la = np.log(area)
    z = (la - la.mean()) / max(la.std(), 1e-9)
    s = np.linspace(-1.0, 1.0, len(p))
    w = p[None, :] * np.exp(size_bias * z[:, None] * s[None, :])
    w /= w.sum(axis=1, keepdims=True)
    pick = (rng.random(ids.size)[:, None] > np.cumsum(w, axis=1)).sum(axis=1)
    lut[ids] = np.minimum(pick, len(p) - 1) + 1
    return lut[labels]


class TypedTiles:
    """``n`` typed synthetic tiles ``(image, labels, types)`` with ``class_names`` (a typed data set)."""

    class_names = CLASS_NAMES

    def __init__(self, seed: int, size: int, n: int, probs=SKEWED, size_bias: float = 0.0):
        rng = np.random.default_rng(seed + 1000)
        ds = SyntheticNuclei(seed=seed, size=size, length=n)
        self.samples = []
        for k in range(n):
            image, labels = ds[k]
            self.samples.append((image, labels, add_types(labels, rng, probs, size_bias)))

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, k):
        return self.samples[k]

    def arrays(self):
        """``(images N×H×W×3, labels N×H×W, types N×H×W)``."""
        return tuple(np.stack([s[j] for s in self.samples]) for j in range(3))


@functools.lru_cache(maxsize=4)
def typed_bank(seed: int = 7, size: int = 96, n: int = 8) -> InstanceBank:
    """A typed bank (:data:`CLASS_NAMES`, four classes) of :class:`TypedTiles` ``(seed, size, n)``; the
    defaults give the tiles of the ``small_data`` fixture with skewed classes. Built once per process."""
    return InstanceBank.from_samples(TypedTiles(seed, size, n), progress=False)


def types_of(labels: np.ndarray, dtype=np.uint8) -> np.ndarray:
    """A type map for any instance map: instance ``i`` gets class ``i % 3 + 1`` (classes of :func:`typed_bank`)."""
    return np.where(labels > 0, labels % 3 + 1, 0).astype(dtype)
