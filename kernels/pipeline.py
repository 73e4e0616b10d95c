"""Per-tile InsMix: plan (a pure function of labels, bank, parameters and seed)
then apply (paste + background shuffle). One call per tile, or one per batch."""

from __future__ import annotations

import numpy as np
from numba import prange

from .alloc import empty, zeros
from .classes import TEMPLATE_ANY, TEMPLATE_SAME, mark_ignored
from .instances import build_table_rows, new_scratch, tile_stats
from .jit import njit
from .paste import apply_pastes, copy_into, fill_false
from .placement import place_pastes
from .records import F_SHAPE, R_ORIGINAL, R_TEMPLATE, shape_gap
from .rng import STREAM_SELECT, uniform01
from .shuffle import apply_background, plan_background
from .ssd import choose_in, choose_template, shape_xor
from .tables import Table
from .warmup import start_background


@njit(cache=True, nogil=True, inline="always")  # inlined into insmix_tile: one library less to compile
def plan_tile(work, bt, ct, P, seed, sample, rec_i, rec_f, moves, max_id, id_class, ignore, use_ignore):
    """Plan InsMix for one tile.

    ``work`` holds the tile's label map on entry (largest id ``max_id``) and the
    new label map on return (pasted instances written in). ``ct`` is the bank's
    :class:`~.classes.ClassTable`; ``id_class[id]`` the class of each instance (read
    with ``P.template_class == TEMPLATE_SAME``), or None for ``template_class="any"``;
    ``ignore`` (or None): with ``use_ignore`` no template pixel lands on an ``ignore``
    pixel and patches holding one never move. A None is compiled out: the plain call
    (``id_class`` and ``ignore`` None) compiles neither the class choice nor the ignore
    tests (issue 15: ~2 s less to compile on first use).

    Writes paste records into ``rec_i`` / ``rec_f`` (layout of :mod:`.records`) and
    background moves into ``moves``. Returns ``(n_pastes, n_moves)``; ``n_pastes = -1``
    when ``rec_i`` is too small (the caller retries with room for one paste per instance).
    """
    ids, lut, area, sum_r, sum_c, bbox, occupied = tile_stats(work, P.patch, max_id, rec_i.shape[0])
    if ignore is not None and use_ignore:
        mark_ignored(occupied, ignore, P.patch)
    k = ids.shape[0]
    n = 0
    if P.foreground and k > 0 and bt.area.shape[0] > 0:
        selected = empty(k, np.bool_)
        for i in range(k):
            selected[i] = uniform01(seed, sample, STREAM_SELECT, i) < P.p_paste
        t_area, anchor, hw, origin, offset, masks, desc, fits = build_table_rows(work, ids, area, sum_r, sum_c,
                                                                                 bbox, selected)
        ot = Table(t_area, anchor, hw, offset, masks, empty(0, np.uint8), desc, fits)
        # per rank c = i + 1: the chosen template (-1: none) and the absolute anchor
        choice = empty(k + 1, np.int64)
        anchor_abs = zeros((k + 1, 2), np.int64)
        choice[0] = -1
        for i in range(k):
            choice[i + 1] = -1
            if selected[i]:
                if id_class is None or P.template_class == TEMPLATE_ANY:  # the paper's choice, no class table
                    choice[i + 1] = choose_in(ot, i, bt, bt.area, None, 0, bt.area.shape[0], P.eps, P.rho, P.ssd,
                                              P.max_draws, seed, sample, i)
                else:
                    o_class = id_class[ids[i]] if P.template_class == TEMPLATE_SAME else 0
                    choice[i + 1] = choose_template(ot, i, bt, ct, P.template_class, o_class, P.eps, P.rho, P.ssd,
                                                    P.max_draws, seed, sample, i)
            anchor_abs[i + 1, 0] = np.int64(origin[i, 0]) + anchor[i, 0]
            anchor_abs[i + 1, 1] = np.int64(origin[i, 1]) + anchor[i, 1]
        cap_ids = k + 1 + rec_i.shape[0]
        ids_ext = zeros(cap_ids, np.int64)
        cur_area = zeros(cap_ids, np.int64)
        ibbox = zeros((cap_ids, 4), np.int32)
        pieces = empty(cap_ids, np.int64)
        for c in range(cap_ids):
            pieces[c] = -1
        for c in range(1, k + 1):
            cur_area[c] = area[c]
            for j in range(4):  # element-wise (a slice assignment compiles Numba's shape-error formatting)
                ibbox[c, j] = bbox[c, j]
            ids_ext[c] = ids[c - 1]
        big = P.max_crop
        for c in range(1, k + 1):
            big = max(big, (bbox[c, 2] - bbox[c, 0]) * (bbox[c, 3] - bbox[c, 1]))
        n = place_pastes(work, k, max_id, choice, area, anchor_abs, lut, ids_ext, cur_area, ibbox, pieces, occupied,
                         zeros(cap_ids, np.int64), zeros(cap_ids, np.int64), new_scratch(big), bt.area,
                         bt.anchor, bt.hw, bt.offset, bt.masks, ct.classes, ignore, use_ignore, P.patch, P.n_tries,
                         P.ssd, P.diagonal, P.delta, P.gamma, P.max_occlusion, seed, sample, rec_i, rec_f)
        if n < 0:
            return -1, 0
        for j in range(n):
            c = lut[rec_i[j, R_ORIGINAL]]
            t = rec_i[j, R_TEMPLATE]
            rec_f[j, F_SHAPE] = shape_gap(shape_xor(ot, c - 1, bt, t), area[c], bt.area[t])
    n_moves = 0
    if P.background:
        n_moves = plan_background(occupied, P.alpha, seed, sample, moves)
    return n, n_moves


@njit(cache=True, nogil=True)
def apply_tile(image, labels, bt, patch, rec_i, n, moves, n_moves, out_image, out_labels, paste_mask, shuffled, typed,
               types, out_types):
    """Apply a plan: copy inputs to the outputs, paste, then move background patches (``patch``×``patch``);
    with ``typed``, ``out_types`` is ``types`` with each paste's class on its pixels."""
    copy_into(out_image, image)
    copy_into(out_labels, labels)
    if typed:
        copy_into(out_types, types)
    fill_false(paste_mask)
    fill_false(shuffled)
    apply_pastes(out_image, out_labels, paste_mask, rec_i, n, bt, typed, out_types)
    apply_background(out_image, moves, n_moves, patch, shuffled)


@njit(cache=True, nogil=True)
def insmix_tile(image, labels, bt, ct, P, seed, sample, rec_i, rec_f, moves, out_image, out_labels, paste_mask,
                shuffled, max_id, typed, types, out_types, id_class, ignore, use_ignore, lut=None, channel_first=None):
    """Plan and apply for one tile; returns ``(n_pastes, n_moves)`` (-1 pastes: records too small,
    nothing written to ``out_image``).

    The planner works directly in ``out_labels``; the apply step then pastes the
    image (and writes the same labels again, which costs only the pasted pixels).
    Arguments as :func:`plan_tile` and :func:`apply_tile`: ``image`` None applies the plan in
    place on ``out_image`` (any strides; float with ``lut``), ``labels`` None plans on the map
    ``out_labels`` holds already; both compiled out when None. ``channel_first`` not None:
    ``image`` (when given) and ``out_image`` are C-contiguous 3×H×W arrays (see
    :func:`.paste.apply_pastes`); the copy is then one flat pass, as for H×W×3. ``paste_mask``
    and ``shuffled`` None: the masks are not made (compiled out; for callers that drop them).
    """
    if labels is not None:
        copy_into(out_labels, labels)
    n, n_moves = plan_tile(out_labels, bt, ct, P, seed, sample, rec_i, rec_f, moves, max_id, id_class, ignore,
                           use_ignore)
    if n < 0:
        return n, n_moves
    if image is not None:
        copy_into(out_image, image)
    if typed:
        copy_into(out_types, types)
    if paste_mask is not None:
        fill_false(paste_mask)
    if shuffled is not None:
        fill_false(shuffled)
    apply_pastes(out_image, out_labels, paste_mask, rec_i, n, bt, typed, out_types, lut, channel_first)
    apply_background(out_image, moves, n_moves, P.patch, shuffled, channel_first)
    return n, n_moves


@njit(cache=True, nogil=True)
def row_or_none(a, b):
    """``a[b]``, or None when ``a`` is None (a function: a conditional expression inside a
    ``prange`` loop trips Numba's parfor array analysis)."""
    if a is None:
        return None
    return a[b]


@njit(cache=True, nogil=True)
def narrow_into(dst, src):
    """``dst[...] = src`` (C-contiguous, one shape; ``dst`` int32, ``src`` int64) in one pass, and
    ``src``'s largest value, or -1 when some value lies outside ``[0, 2**31 - 1]``."""
    d = dst.reshape(-1)
    s = src.reshape(-1)
    bad = 0
    hi = 0
    for i in range(s.shape[0]):
        v = s[i]
        bad |= v >> 31  # non-zero for a negative id and for one int32 cannot hold
        d[i] = v
        hi = max(hi, v)
    return -1 if bad != 0 else hi


@njit(cache=True, nogil=True)
def row_unless(a, b, flag):
    """``a[b]``, or None when ``flag`` is not None (a function, as :func:`row_or_none`)."""
    if flag is not None:
        return None
    return a[b]


@njit(cache=True, nogil=True, parallel=True)
def insmix_batch_kernel(images, labels, bt, ct, P, seed, samples, rec_i, rec_f, moves, out_images, out_labels,
                        paste_masks, shuffled, counts, max_ids, typed, types, out_types, id_classes, ignore,
                        use_ignore, lut=None, wide_labels=None, id_limit=None, channel_first=None):
    """``insmix_tile`` over a batch, tiles in parallel; ``counts[b] = (n_pastes, n_moves)``.
    ``types``/``out_types`` have one row per tile (stand-ins of one pixel when untyped);
    ``id_classes`` and ``ignore`` one row per tile, or None (compiled out, as in :func:`plan_tile`).
    ``images`` None: ``out_images`` (any strides; float with ``lut``) hold the inputs and are
    written in place (see :func:`insmix_tile`). ``wide_labels`` (or None, compiled out) gets a
    copy of each finished ``out_labels`` tile in its own dtype, while the tile is in cache.

    ``id_limit`` (or None): ``labels`` are unchecked int64 maps, narrowed to ``out_labels`` as
    they are copied (:func:`narrow_into`), which also gives ``max_ids[b]`` (-1: an id outside
    int32); a tile with such an id or one above ``id_limit`` is left alone (nothing written to
    its image) with ``counts[b, 0] = -2``, for the caller to check or redo.

    ``channel_first`` (or None): ``images`` / ``out_images`` are C-contiguous N×3×H×W (see
    :func:`insmix_tile`); ``paste_masks`` and ``shuffled`` may be None (not made)."""
    for b in prange(labels.shape[0]):
        n = -2
        m = 0
        go = True
        if id_limit is not None:
            max_ids[b] = narrow_into(out_labels[b], labels[b])
            go = 0 <= max_ids[b] <= id_limit
        if go:
            n, m = insmix_tile(row_or_none(images, b), row_unless(labels, b, id_limit), bt, ct, P, seed, samples[b],
                               rec_i[b], rec_f[b], moves[b], out_images[b], out_labels[b], row_or_none(paste_masks, b),
                               row_or_none(shuffled, b), max_ids[b], typed, types[b], out_types[b],
                               row_or_none(id_classes, b), row_or_none(ignore, b), use_ignore, lut, channel_first)
            if wide_labels is not None and n >= 0:
                copy_into(wide_labels[b], out_labels[b])
        counts[b, 0] = n
        counts[b, 1] = m


# First use with an empty Numba cache: compile the kernels above in a background process while
# the caller loads data and builds its bank (see kernels.warmup; INSMIX_FAST_PRECOMPILE=0: off).
start_background(insmix_tile)
