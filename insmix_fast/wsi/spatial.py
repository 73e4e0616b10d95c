"""Sparse uniform-grid index over polygon bounding boxes.

Cells are ``cell`` × ``cell`` level-0 px. A polygon is listed in every cell its bounding
box meets (cells at negative coordinates fold into row/column 0); only occupied cells
are stored, sorted by key ``row << 32 | column``, so memory follows the number of
polygons, not the slide's extent, and a stray far-away polygon costs nothing. Polygons
whose box spans more than :data:`BIG_CELLS` cells (region outlines, not nuclei) are kept
in a short list checked on every query instead of being copied into thousands of cells.

Arrays (all int64, memory-mappable): ``keys`` (K occupied cells, sorted), ``offsets``
(K+1), ``ids`` (polygon ids per cell, ascending within a cell), ``big`` (ids).
"""

from __future__ import annotations

import numpy as np

__all__ = ["CELL", "BIG_CELLS", "GridIndex"]

CELL = 256
BIG_CELLS = 64
_SHIFT = 32


class GridIndex:
    """Cells → polygon ids; :meth:`query` answers bounding-box overlap queries."""

    ARRAYS = ("keys", "offsets", "ids", "big")

    def __init__(self, keys, offsets, ids, big, cell: int = CELL) -> None:
        self.keys, self.offsets, self.ids, self.big = keys, offsets, ids, big
        self.cell = int(cell)
        if len(keys):
            self._rows = (int(keys[0]) >> _SHIFT, int(keys[-1]) >> _SHIFT)
        else:
            self._rows = (0, -1)

    @classmethod
    def build(cls, bbox: np.ndarray, cell: int = CELL) -> "GridIndex":
        """Index of ``bbox`` (N×4 ``x0, y0, x1, y1``), in ``O(N log N)`` time and ``O(N)`` memory."""
        n = len(bbox)
        if n == 0:
            z = np.zeros(0, np.int64)
            return cls(z, np.zeros(1, np.int64), z, z, cell)
        lo = np.maximum(np.floor(bbox[:, :2] / cell), 0).astype(np.int64)
        hi = np.maximum(np.floor(bbox[:, 2:] / cell).astype(np.int64), lo)
        nx = hi[:, 0] - lo[:, 0] + 1
        ny = hi[:, 1] - lo[:, 1] + 1
        cnt = nx * ny
        del hi
        is_big = cnt > BIG_CELLS
        big = np.flatnonzero(is_big).astype(np.int64)
        cnt[is_big] = 0
        del is_big
        total = int(cnt.sum())
        if total == n and not len(big):  # every box in one cell (the usual nuclei case): no expansion
            pid = np.arange(n, dtype=np.int64)
            key = (lo[:, 1] << _SHIFT) | lo[:, 0]
        else:
            pid = np.repeat(np.arange(n, dtype=np.int64), cnt)
            k = np.arange(total, dtype=np.int64) - np.repeat(np.cumsum(cnt) - cnt, cnt)
            nxp = nx[pid]
            key = ((lo[pid, 1] + k // nxp) << _SHIFT) | (lo[pid, 0] + k % nxp)
            del k, nxp
        del lo, nx, ny, cnt
        order = np.argsort(key, kind="stable")  # stable: ids ascending within a cell
        key = key[order]
        ids = pid[order]
        del order, pid
        starts = np.flatnonzero(np.concatenate(([True], key[1:] != key[:-1])))
        keys = key[starts]
        offsets = np.append(starts, len(key)).astype(np.int64)
        return cls(keys, offsets, ids, big, cell)

    @classmethod
    def from_dense(cls, cell_off: np.ndarray, cell_ids: np.ndarray, gshape, big=None, cell: int = CELL) -> "GridIndex":
        """From the dense row-major grid of older stores (``cell_off`` of length gy·gx+1)."""
        gy, gx = (int(v) for v in gshape)
        counts = np.diff(np.asarray(cell_off, np.int64))
        occ = np.flatnonzero(counts)
        keys = ((occ // max(gx, 1)) << _SHIFT) | (occ % max(gx, 1))
        offsets = np.zeros(len(occ) + 1, np.int64)
        np.cumsum(counts[occ], out=offsets[1:])
        return cls(keys.astype(np.int64), offsets, np.asarray(cell_ids, np.int64),
                   np.zeros(0, np.int64) if big is None else np.asarray(big, np.int64), cell)

    def arrays(self) -> dict:
        return {k: getattr(self, k) for k in self.ARRAYS}

    @property
    def nbytes(self) -> int:
        return int(sum(a.nbytes for a in self.arrays().values()))

    def candidates(self, x0: float, y0: float, x1: float, y1: float) -> np.ndarray:
        """Ids (sorted, unique) of polygons listed in the cells that ``[x0, x1) × [y0, y1)`` meets
        (a superset of the overlapping boxes; :meth:`query` filters it)."""
        c = self.cell
        cx0, cy0 = max(int(x0 // c), 0), max(int(y0 // c), self._rows[0])
        cx1, cy1 = int((x1 - 1e-9) // c), min(int((y1 - 1e-9) // c), self._rows[1])
        parts = [self.big]
        if cx1 >= cx0 and cy1 >= cy0:
            rows = np.arange(cy0, cy1 + 1, dtype=np.int64) << _SHIFT
            a = np.searchsorted(self.keys, rows | cx0, "left")
            b = np.searchsorted(self.keys, rows | min(cx1, (1 << _SHIFT) - 1), "right")
            parts += [self.ids[self.offsets[i]:self.offsets[j]] for i, j in zip(a.tolist(), b.tolist()) if j > i]
        if len(parts) == 1:
            return np.asarray(self.big, np.int64)
        return np.unique(np.concatenate(parts))

    def query(self, bbox: np.ndarray, x0: float, y0: float, x1: float, y1: float) -> np.ndarray:
        """Ids (ascending) of polygons whose box meets ``[x0, x1) × [y0, y1)``."""
        cand = self.candidates(x0, y0, x1, y1)
        if cand.size == 0:
            return cand
        b = bbox[cand]
        keep = (b[:, 0] < x1) & (b[:, 2] >= x0) & (b[:, 1] < y1) & (b[:, 3] >= y0)
        return cand[keep]

    def check(self, n: int) -> str | None:
        """A structural problem of the index over ``n`` polygons, or None."""
        k, o, i = self.keys, self.offsets, self.ids
        if len(o) != len(k) + 1 or (len(o) and (o[0] != 0 or o[-1] != len(i))):
            return "cell offsets do not match the cell lists"
        if len(k) > 1 and not (np.diff(k) > 0).all():
            return "cell keys are not strictly increasing"
        if len(o) > 1 and (np.diff(o) <= 0).any():
            return "an empty cell is listed"
        for arr in (i, self.big):
            if len(arr) and (arr.min() < 0 or arr.max() >= n):
                return "a polygon id is out of range"
        return None
