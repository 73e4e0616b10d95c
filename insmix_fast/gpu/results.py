"""The output of ``insmix_batch(..., device="cuda")`` for device input: it stays on the device."""

from __future__ import annotations

import numpy as np

from ..results import InsMixBatchResult, InsMixResult, paste_records
from .arrays import kind_of, to_numpy
from .launch import Launcher

__all__ = ["GPUBatchResult", "host_records"]


def host_records(rec_i: np.ndarray, rec_f: np.ndarray, moves: np.ndarray, counts: np.ndarray):
    """Per-tile ``PASTE_DTYPE`` records and moves from the batch's host copies of the record tables."""
    if (counts[:, 0] < 0).any():  # cannot happen (the device sizes them for every original), kept as a guard
        raise RuntimeError("internal error: paste record buffer too small on the device")
    pastes = [paste_records(rec_i[b], rec_f[b], int(counts[b, 0])) for b in range(len(counts))]
    mv = [moves[b, :counts[b, 1]].copy() for b in range(len(counts))]
    return pastes, mv


class GPUBatchResult:
    """Output of ``insmix_batch(..., device="cuda")`` for device input.

    ``images``, ``labels``, ``paste_masks``, ``shuffled_masks`` (and ``types`` of a
    typed call, else ``None``) are of the input's kind (CuPy / torch / numba device
    arrays) and stay on the device. The paste
    records and moves live on the device too (``records``: ``rec_i``, ``rec_f``,
    ``moves``, ``counts``); :attr:`pastes`, :attr:`moves` and :meth:`to_host` copy them
    to the host when asked (``PASTE_DTYPE`` records, as on the CPU), after waiting for
    the call's stream. ``seed`` and ``patch`` make ``result[b].plan`` the plan
    ``insmix(..., index=indices[b])`` would make.
    """

    def __init__(self, images, labels, paste_masks, shuffled_masks, indices: np.ndarray, records: dict, *,
                 seed: int, patch: int, launcher: Launcher | None = None, types=None):
        self.images = images
        self.labels = labels
        self.paste_masks = paste_masks
        self.shuffled_masks = shuffled_masks
        self.types = types
        self.indices = indices
        self.records = records
        self.seed = int(seed)
        self.patch = int(patch)
        self.launcher = launcher if launcher is not None else Launcher()
        self._host: tuple | None = None
        self._host_result: InsMixBatchResult | None = None

    def __len__(self) -> int:
        return int(self.indices.shape[0])

    def synchronize(self) -> None:
        """Wait until the work of the call that made this result is done."""
        if self.launcher.stream is not None:
            self.launcher.stream.synchronize()

    def _records_host(self):
        if self._host is None:
            d2h = self.launcher.d2h
            self._host = host_records(d2h(self.records["rec_i"]), d2h(self.records["rec_f"]),
                                      d2h(self.records["moves"]), d2h(self.records["counts"]))
        return self._host

    @property
    def pastes(self) -> list[np.ndarray]:
        return self._records_host()[0]

    @property
    def moves(self) -> list[np.ndarray]:
        return self._records_host()[1]

    def to_host(self) -> InsMixBatchResult:
        """An :class:`~insmix_fast.results.InsMixBatchResult` of numpy arrays (copies everything, once)."""
        if self._host_result is None:
            pastes, mv = self._records_host()  # waits for the stream
            self._host_result = InsMixBatchResult(*(self._host_copy(a) for a in (
                self.images, self.labels, self.paste_masks, self.shuffled_masks)), pastes, mv, self.indices,
                self.seed, self.patch, types=None if self.types is None else self._host_copy(self.types))
        return self._host_result

    def _host_copy(self, x) -> np.ndarray:
        """numba arrays are copied on the call's stream; torch/CuPy ones by their library
        (the stream has been waited for by then)."""
        return self.launcher.d2h(x) if kind_of(x) == "numba" else to_numpy(x)

    def __getitem__(self, b: int) -> InsMixResult:
        """Tile ``b`` as an :class:`~insmix_fast.results.InsMixResult` on the host (copies the batch once)."""
        return self.to_host()[b]
