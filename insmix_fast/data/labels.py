"""Topology tools for instance label maps.

A valid instance map (see SPEC "Data model") has, for every positive id, pixels
that form **one** connected piece (8-connectivity by default) and that enclose no
background: a background region that does not touch the tile border and whose
every neighbour is the same id is a *hole* of that id.

Everything here works on *runs* (maximal horizontal stretches of one value in a
row), which a 1000×1000 map with ~1000 nuclei holds only ~10⁵ of, so a full
analysis costs a few milliseconds:

1. ``_analyze`` (Numba) splits the map into runs, unions runs of equal value in
   consecutive rows (foreground: ``connectivity``; background: the dual
   connectivity, 4 when foreground is 8, so that a diagonally closed ring does
   enclose a hole) and gives every connected component its area, whether it
   touches the border and, for background components, the single id that
   surrounds it (or "several").
2. :func:`find_label_problems` reads split ids and hole ids off that table;
   :func:`clean_labels` decides a new value per component and repaints.

Public API: :class:`LabelProblems`, :func:`find_label_problems`,
:func:`check_label_topology`, :func:`clean_labels`, :func:`relabel_pieces`,
:func:`relabel_sequential`, :func:`relabel_raster_order`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..errors import InputError, LabelMapError
from ..kernels.alloc import empty, zeros
from ..kernels.jit import njit
from ..validation import check_choice, check_int, check_labels

__all__ = [
    "LabelProblems",
    "find_label_problems",
    "check_label_topology",
    "clean_labels",
    "relabel_pieces",
    "relabel_sequential",
    "relabel_raster_order",
]

_INT32_MAX = int(np.iinfo(np.int32).max)


# --------------------------------------------------------------------------- kernels


@njit(cache=True, nogil=True)
def _find(parent, k):
    root = k
    while parent[root] != root:
        root = parent[root]
    while parent[k] != root:  # path compression
        nxt = parent[k]
        parent[k] = root
        k = nxt
    return root


@njit(cache=True, nogil=True)
def _note(nbr, k, v):
    """Record that background run ``k`` neighbours id ``v`` (-1 none, -2 several)."""
    cur = nbr[k]
    if cur == -1:
        nbr[k] = v
    elif cur != v:
        nbr[k] = -2


@njit(cache=True, nogil=True)
def _analyze(lab, fg_diag):
    """Run-based connected-component analysis of an int32 label map.

    Returns ``(row_start, start, end, comp, comp_val, comp_area, comp_border,
    comp_nbr)``: runs of row ``r`` are ``row_start[r]:row_start[r+1]``, run ``k``
    covers columns ``start[k]:end[k]`` and belongs to component ``comp[k]``
    (components numbered in raster order of their first pixel). ``comp_nbr`` is,
    for background components, the id of every neighbouring pixel when they all
    agree, -2 when they disagree, -1 when there is none (foreground: -1).
    """
    H, W = lab.shape
    cap = H  # count runs first: H*W scratch would be huge for whole-slide maps
    for r in range(H):
        for c in range(1, W):
            if lab[r, c] != lab[r, c - 1]:
                cap += 1
    start = empty(cap, np.int32)  # kernels.alloc: no compilation per allocation (first use, issue 15)
    end = empty(cap, np.int32)
    val = empty(cap, np.int32)
    row_start = empty(H + 1, np.int64)
    n = 0
    for r in range(H):
        row_start[r] = n
        s = 0
        prev = lab[r, 0]
        for c in range(1, W):
            v = lab[r, c]
            if v != prev:
                start[n] = s
                end[n] = c
                val[n] = prev
                n += 1
                s = c
                prev = v
        start[n] = s
        end[n] = W
        val[n] = prev
        n += 1
    row_start[H] = n

    parent = empty(n, np.int64)
    nbr = empty(n, np.int32)
    for k in range(n):
        parent[k] = k
        nbr[k] = -1
    # horizontal neighbours of background runs (always 4-adjacent)
    for r in range(H):
        a = row_start[r]
        b = row_start[r + 1]
        for k in range(a, b):
            if val[k] == 0:
                if k > a:
                    _note(nbr, k, val[k - 1])
                if k + 1 < b:
                    _note(nbr, k, val[k + 1])
    # vertical / diagonal adjacency between consecutive rows
    for r in range(1, H):
        pa = row_start[r - 1]
        pb = row_start[r]
        i0 = pa
        for j in range(row_start[r], row_start[r + 1]):
            c = start[j]
            d = end[j]
            vj = val[j]
            while i0 < pb and end[i0] < c:
                i0 += 1
            i = i0
            while i < pb and start[i] <= d:
                vi = val[i]
                # strictly overlapping columns -> 4-adjacent; touching ends -> diagonal only
                four = start[i] < d and end[i] > c
                if vi == vj:
                    diag_ok = fg_diag if vi != 0 else not fg_diag
                    if four or diag_ok:
                        ri = _find(parent, i)
                        rj = _find(parent, j)
                        if ri < rj:
                            parent[rj] = ri
                        elif rj < ri:
                            parent[ri] = rj
                elif vi == 0 or vj == 0:
                    # background touches an id; adjacency follows background connectivity
                    if four or not fg_diag:
                        if vi == 0:
                            _note(nbr, i, vj)
                        else:
                            _note(nbr, j, vi)
                i += 1

    # flatten (parents always point to smaller indices) and number components
    comp = empty(n, np.int32)
    n_comp = 0
    for k in range(n):
        p = parent[k]
        if p == k:
            comp[k] = n_comp
            n_comp += 1
        else:
            p = parent[p]
            parent[k] = p
            comp[k] = comp[p]
    comp_val = zeros(n_comp, np.int32)
    comp_area = zeros(n_comp, np.int64)
    comp_border = zeros(n_comp, np.bool_)
    comp_nbr = empty(n_comp, np.int32)
    for q in range(n_comp):
        comp_nbr[q] = -1
    for r in range(H):
        edge_row = r == 0 or r == H - 1
        for k in range(row_start[r], row_start[r + 1]):
            q = comp[k]
            comp_val[q] = val[k]
            comp_area[q] += end[k] - start[k]
            if edge_row or start[k] == 0 or end[k] == W:
                comp_border[q] = True
            if val[k] == 0 and nbr[k] != -1:
                _note(comp_nbr, q, nbr[k])
    return row_start, start, end, comp, comp_val, comp_area, comp_border, comp_nbr


@njit(cache=True, nogil=True)
def _paint(H, W, row_start, start, end, comp, new_val):
    out = empty((H, W), np.int32)
    for r in range(H):
        for k in range(row_start[r], row_start[r + 1]):
            v = new_val[comp[k]]
            for c in range(start[k], end[k]):
                out[r, c] = v
    return out


# --------------------------------------------------------------------------- API


@dataclass(frozen=True, eq=False)
class LabelProblems:
    """Topology problems of one label map (see :func:`find_label_problems`).

    Attributes:
        split_ids: sorted ids whose pixels form more than one connected piece.
        split_pieces: number of pieces of each id in ``split_ids`` (same order).
        hole_ids: sorted ids that fully enclose at least one background region.
        n_holes: number of enclosed background regions of each id in ``hole_ids``.
    """

    split_ids: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int32))
    split_pieces: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    hole_ids: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int32))
    n_holes: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))

    @property
    def ok(self) -> bool:
        """True when no id is split and no id has a hole."""
        return self.split_ids.size == 0 and self.hole_ids.size == 0

    def describe(self, limit: int = 10) -> str:
        """Human-readable list of (up to ``limit``) problems per kind."""
        parts = []
        if self.split_ids.size:
            items = [f"{int(i)} ({int(p)} pieces)" for i, p in zip(self.split_ids[:limit], self.split_pieces[:limit])]
            more = f" and {self.split_ids.size - limit} more" if self.split_ids.size > limit else ""
            parts.append(f"{self.split_ids.size} id(s) split into several pieces: " + ", ".join(items) + more)
        if self.hole_ids.size:
            items = [str(int(i)) for i in self.hole_ids[:limit]]
            more = f" and {self.hole_ids.size - limit} more" if self.hole_ids.size > limit else ""
            parts.append(f"{self.hole_ids.size} id(s) have holes: " + ", ".join(items) + more)
        return "; ".join(parts) if parts else "no topology problems"


def _check_connectivity(connectivity: int) -> bool:
    check_choice("connectivity", connectivity, (4, 8), error=InputError)
    return connectivity == 8


def _group_counts(ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    if ids.size == 0:
        return np.zeros(0, np.int32), np.zeros(0, np.int64)
    u, cnt = np.unique(ids, return_counts=True)
    return u.astype(np.int32), cnt.astype(np.int64)


def find_label_problems(labels: np.ndarray, connectivity: int = 8) -> LabelProblems:
    """Find split instances and instances with holes.

    Args:
        labels: H×W integer instance map (0 = background).
        connectivity: 8 (default) or 4 — connectivity of an instance's pixels.
            Background uses the dual connectivity (4 when instances use 8).

    Returns:
        :class:`LabelProblems`; ``.ok`` is True for a valid map.

    Raises:
        InputError: ``labels`` is not a non-negative integer 2-D array.
    """
    fg_diag = _check_connectivity(connectivity)
    lab = check_labels(labels)
    if lab.size == 0:
        return LabelProblems()
    _, _, _, _, cval, _, cborder, cnbr = _analyze(lab, fg_diag)
    fg = cval > 0
    split_u, split_n = _group_counts(cval[fg])
    keep = split_n > 1
    holes = (~fg) & (~cborder) & (cnbr > 0)
    hole_u, hole_n = _group_counts(cnbr[holes])
    return LabelProblems(split_u[keep], split_n[keep], hole_u, hole_n)


def check_label_topology(labels: np.ndarray, name: str = "labels", connectivity: int = 8) -> np.ndarray:
    """Raise :class:`LabelMapError` unless every instance is one piece without holes.

    Args:
        labels: H×W integer instance map.
        name: what to call the map in the message (e.g. its file name).
        connectivity: see :func:`find_label_problems`.

    Returns:
        ``labels`` as a C-contiguous int32 array (unchanged).
    """
    lab = check_labels(labels, name=name)
    problems = find_label_problems(lab, connectivity)
    if not problems.ok:
        msgs = []
        if problems.split_ids.size:
            items = ", ".join(
                f"id {int(i)} split into {int(p)} pieces" for i, p in zip(problems.split_ids[:10], problems.split_pieces[:10])
            )
            more = f" (+{problems.split_ids.size - 10} more)" if problems.split_ids.size > 10 else ""
            msgs.append(items + more)
        if problems.hole_ids.size:
            items = ", ".join(f"id {int(i)} has holes" for i in problems.hole_ids[:10])
            more = f" (+{problems.hole_ids.size - 10} more)" if problems.hole_ids.size > 10 else ""
            msgs.append(items + more)
        raise LabelMapError(
            f"{name}: invalid instance map ({connectivity}-connectivity): " + "; ".join(msgs)
            + ". Each nucleus must be one connected piece without holes; "
            "fix it with insmix_fast.data.clean_labels(labels) (or fix_labels=True when reading a folder)."
        )
    return lab


def clean_labels(
    labels: np.ndarray,
    min_size: int = 1,
    fill_holes: bool = True,
    split: str = "relabel",
    connectivity: int = 8,
) -> np.ndarray:
    """Repair an instance map so that every id is one connected piece without holes.

    Steps, in this order:

    1. Every connected piece smaller than ``min_size`` pixels becomes background.
    2. Ids in several pieces: the largest piece keeps the id (ties: the piece
       met first in raster order); every other piece gets a new unique id
       (``split="relabel"``, new ids ``max(labels)+1, ...`` in raster order) or
       becomes background (``split="largest"``).
    3. ``fill_holes``: every background region enclosed by a single id takes
       that id (this also fills holes left by step 1 or 2).

    With ``fill_holes=True`` the result always passes :func:`find_label_problems`
    (same ``connectivity``). Ids that needed no change keep their value.

    Args:
        labels: H×W integer instance map (0 = background).
        min_size: smallest piece, in pixels, that is kept (≥ 1).
        fill_holes: fill enclosed background with the enclosing id.
        split: ``"relabel"`` or ``"largest"`` (see above).
        connectivity: 8 (default) or 4.

    Returns:
        A new H×W int32 map.

    Raises:
        InputError: bad ``labels``/arguments, or relabelling would exceed int32 ids.
    """
    fg_diag = _check_connectivity(connectivity)
    check_choice("split", split, ("relabel", "largest"), error=InputError)
    check_int("min_size", min_size, 1, error=InputError)
    lab = check_labels(labels)
    if lab.size == 0:
        return lab.copy()
    H, W = lab.shape
    rs, st, en, comp, cval, carea, cborder, cnbr = _analyze(lab, fg_diag)
    new_val = cval.copy()
    fg = cval > 0
    new_val[fg & (carea < min_size)] = 0
    cand = np.flatnonzero(new_val > 0)
    changed = bool(np.any(new_val != cval))
    if cand.size:
        # order pieces by (id, -area, raster index); the first of each id keeps it
        order = cand[np.lexsort((cand, -carea[cand], cval[cand]))]
        v = cval[order]
        first = np.ones(order.size, bool)
        first[1:] = v[1:] != v[:-1]
        extra = np.sort(order[~first])  # raster order
        if extra.size:
            changed = True
            if split == "largest":
                new_val[extra] = 0
            else:
                top = int(lab.max())
                if top + extra.size > _INT32_MAX:
                    raise InputError(
                        f"clean_labels: relabelling {extra.size} extra pieces would exceed the int32 id range "
                        f"(max id {top}); use relabel_sequential first or split='largest'"
                    )
                new_val[extra] = np.arange(top + 1, top + 1 + extra.size, dtype=np.int32)
    out = _paint(H, W, rs, st, en, comp, new_val) if changed else lab.copy()
    if fill_holes:
        rs, st, en, comp, cval, carea, cborder, cnbr = _analyze(out, fg_diag)
        holes = (cval == 0) & (~cborder) & (cnbr > 0)
        if holes.any():
            new_val = cval.copy()
            new_val[holes] = cnbr[holes]
            out = _paint(H, W, rs, st, en, comp, new_val)
    return out


def relabel_pieces(labels: np.ndarray, min_area: int = 1) -> np.ndarray:
    """Give every connected piece of an instance its own id, after a cut, mix or warp.

    The largest piece of an id keeps it; every other piece gets a new id above the
    map's maximum; pieces smaller than ``min_area`` pixels (values below 1 count as 1)
    become background. Holes are left alone (8-connectivity). The same as
    ``clean_labels(labels, min_size=max(1, min_area), fill_holes=False, split="relabel")``.

    >>> import numpy as np
    >>> cut = np.array([[1, 1, 0, 1], [0, 0, 0, 1], [2, 0, 0, 1]])
    >>> relabel_pieces(cut)
    array([[3, 3, 0, 1],
           [0, 0, 0, 1],
           [2, 0, 0, 1]], dtype=int32)
    >>> relabel_pieces(cut, min_area=2)
    array([[3, 3, 0, 1],
           [0, 0, 0, 1],
           [0, 0, 0, 1]], dtype=int32)
    """
    return clean_labels(labels, min_size=max(1, int(min_area)), fill_holes=False, split="relabel")


def relabel_raster_order(labels: np.ndarray) -> np.ndarray:
    """Renumber ``labels`` to ids 1..K in raster order of each instance's first pixel.

    The result depends only on which pixels belong together, not on the ids given
    (e.g. not on the order in which instances were drawn). Every id must be one
    8-connected piece (as :func:`clean_labels` leaves them); an id in several pieces
    is numbered by its last piece.

    >>> import numpy as np
    >>> relabel_raster_order(np.array([[0, 7, 7], [5, 0, 9]]))
    array([[0, 1, 1],
           [2, 0, 3]], dtype=int32)
    """
    lab = check_labels(labels)
    if lab.size == 0:
        return lab.copy()
    cval = _analyze(lab, True)[4]  # components are numbered in raster order of their first pixel
    order = cval[cval > 0]
    lut = np.zeros(int(lab.max()) + 1, np.int32)
    lut[order] = np.arange(1, order.size + 1, dtype=np.int32)
    return lut[lab]


def relabel_sequential(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Renumber the ids of ``labels`` to 1..K, keeping their order.

    Returns:
        ``(new_labels, old_ids)``: int32 H×W map with ids 1..K (0 stays 0) and an
        int32 array of length K with ``old_ids[k - 1]`` = the old id of new id ``k``.
    """
    lab = check_labels(labels)
    if lab.size == 0:
        return lab.copy(), np.zeros(0, np.int32)
    top = int(lab.max())
    if top <= 4 * lab.size + 1024:
        present = np.zeros(top + 1, bool)
        present[lab.ravel()] = True
        present[0] = False
        old_ids = np.flatnonzero(present).astype(np.int32)
        lut = np.zeros(top + 1, np.int32)
        lut[old_ids] = np.arange(1, old_ids.size + 1, dtype=np.int32)
        return lut[lab], old_ids
    u, inv = np.unique(lab, return_inverse=True)
    inv = inv.reshape(lab.shape).astype(np.int32)
    if u[0] == 0:
        return inv, u[1:].astype(np.int32)
    return inv + 1, u.astype(np.int32)
