"""The base of every indexed data set: integer/negative/slice indexing in one place.

Subclasses implement ``__len__`` and :meth:`IndexedDataset.read` (``0 ≤ k < len``);
``ds[i]`` accepts Python/numpy integers (negative from the end) and slices (a list of
samples), and raises ``InputTypeError`` for anything else and ``IndexError`` out of range.

A sample is ``(image H×W×3 uint8, labels H×W int32)`` or, for a typed data set,
``(image, labels, types H×W int32)`` where ``types`` is 0 on background and the class id
(≥ 1) on every pixel of an instance. ``class_names[c]`` names class ``c``
(``class_names[0] == "background"``); untyped data sets have ``class_names = None``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ..errors import InputTypeError

__all__ = ["IndexedDataset", "resolve_index"]


def resolve_index(i, n: int, what: str = "data set") -> int:
    """``i`` (an integer, negative counts from the end) as an index in ``[0, n)``."""
    if isinstance(i, (bool, np.bool_)) or not isinstance(i, (int, np.integer)):
        raise InputTypeError(f"{what} indices must be integers or slices, not {type(i).__name__}")
    k = int(i) + n if i < 0 else int(i)
    if not 0 <= k < n:
        raise IndexError(f"{what} index {int(i)} out of range for length {n}")
    return k


class IndexedDataset(Sequence):
    """A ``Sequence`` of samples read on indexing (see the module docstring)."""

    #: ``class_names[c]`` is the name of class ``c`` (0 = "background"); ``None`` when untyped.
    class_names: tuple[str, ...] | None = None

    @property
    def typed(self) -> bool:
        """True when samples carry a type map (``(image, labels, types)``)."""
        return self.class_names is not None

    def __len__(self) -> int:  # pragma: no cover - abstract
        raise NotImplementedError

    def read(self, k: int):  # pragma: no cover - abstract
        """Sample ``k`` (``0 ≤ k < len(self)``, already checked)."""
        raise NotImplementedError

    def __getitem__(self, i):
        if isinstance(i, slice):
            return [self.read(k) for k in range(*i.indices(len(self)))]
        return self.read(resolve_index(i, len(self), type(self).__name__))
