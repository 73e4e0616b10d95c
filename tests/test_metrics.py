"""Tests of insmix_fast.metrics: hand-computed cases, agreement with a plain
re-implementation of HoVer-Net's ``metrics/stats_utils.py``, bad input."""

from __future__ import annotations

import itertools
import math
from fractions import Fraction as F

import numpy as np
import pytest

from insmix_fast.errors import InputError, InputTypeError
from insmix_fast.metrics import (
    PQResult,
    aji,
    aji_plus,
    dice,
    evaluate,
    linear_sum_assignment,
    pq,
)

try:  # only for the reference of the one-to-one matchings; optional
    from scipy.optimize import linear_sum_assignment as scipy_lsa
except ImportError:  # pragma: no cover
    scipy_lsa = None

needs_scipy = pytest.mark.skipif(scipy_lsa is None, reason="scipy not installed")


def close(x, frac):
    """Float ``x`` equals the exact fraction to double precision."""
    return x == pytest.approx(float(frac), rel=1e-15, abs=1e-15)


def rect(shape, *boxes):
    """Label map with ``(id, r0, r1, c0, c1)`` boxes (half-open), painted in order."""
    lab = np.zeros(shape, np.int32)
    for i, r0, r1, c0, c1 in boxes:
        lab[r0:r1, c0:c1] = i
    return lab


def check_all(true, pred, *, dice_, aji_, ajip, pq_, dq, sq, tp, fp, fn, match_iou=0.5):
    assert close(dice(true, pred), dice_)
    assert close(aji(true, pred), aji_)
    assert close(aji_plus(true, pred), ajip)
    r = pq(true, pred, match_iou)
    assert isinstance(r, PQResult)
    assert (r.tp, r.fp, r.fn) == (tp, fp, fn)
    assert close(r.dq, dq) and close(r.sq, sq) and close(r.pq, pq_)
    assert close(r.pq, F(dq) * F(sq))
    ev = evaluate(true, pred, match_iou)
    assert ev == {
        "dice": dice(true, pred),
        "aji": aji(true, pred),
        "aji_plus": aji_plus(true, pred),
        "pq": r.pq,
        "dq": r.dq,
        "sq": r.sq,
        "tp": tp,
        "fp": fp,
        "fn": fn,
    }


# --------------------------------------------------------------------------- hand-computed

S = (8, 8)
A = (0, 2, 0, 2)  # 2×2 = 4 px
B = (4, 7, 4, 7)  # 3×3 = 9 px
C = (0, 2, 5, 8)  # 2×3 = 6 px, disjoint from A and B


def test_perfect_prediction():
    true = rect(S, (1, *A), (2, *B))
    pred = rect(S, (5, *A), (9, *B))  # other ids, same masks
    check_all(true, pred, dice_=1, aji_=1, ajip=1, pq_=1, dq=1, sq=1, tp=2, fp=0, fn=0)


def test_one_missed_instance():
    true = rect(S, (1, *A), (2, *B))
    pred = rect(S, (1, *A))
    # dice 2·4/(13+4); AJI 4/(4 + 9 unpaired GT); DQ 1/(1 + 1/2)
    check_all(true, pred, dice_=F(8, 17), aji_=F(4, 13), ajip=F(4, 13), pq_=F(2, 3), dq=F(2, 3), sq=1, tp=1, fp=0, fn=1)


def test_one_false_positive():
    true = rect(S, (1, *A))
    pred = rect(S, (1, *A), (2, *C))
    # dice 2·4/(4+10); AJI 4/(4 + 6 unpaired pred)
    check_all(true, pred, dice_=F(4, 7), aji_=F(2, 5), ajip=F(2, 5), pq_=F(2, 3), dq=F(2, 3), sq=1, tp=1, fp=1, fn=0)


def test_split_prediction():
    true = rect(S, (1, 0, 2, 0, 4))  # 2×4 = 8 px
    pred = rect(S, (1, 0, 2, 0, 3), (2, 0, 2, 3, 4))  # 6 px (IoU 3/4) + 2 px (IoU 1/4)
    # AJI: pair (GT, pred1) I=6 U=8, pred2 unpaired +2 → 6/10
    check_all(true, pred, dice_=1, aji_=F(3, 5), ajip=F(3, 5), pq_=F(1, 2), dq=F(2, 3), sq=F(3, 4), tp=1, fp=1, fn=0)


def test_merged_prediction():
    true = rect(S, (1, 0, 2, 0, 2), (2, 0, 2, 2, 5))  # 4 px and 6 px side by side
    pred = rect(S, (1, 0, 2, 0, 5))  # one 10 px blob: IoU 2/5 and 3/5
    # AJI: both GT pair with the blob: I = 4 + 6, U = 10 + 10 → 1/2
    # AJI+: blob goes to GT2 only: I = 6, U = 10 + 4 (GT1 unpaired) → 3/7
    kw = dict(dice_=1, aji_=F(1, 2), ajip=F(3, 7), pq_=F(2, 5), dq=F(2, 3), sq=F(3, 5), tp=1, fp=0, fn=1)
    check_all(true, pred, **kw)
    # below 0.5 the optimal assignment also keeps GT2–blob (0.6 > 0.4)
    check_all(true, pred, match_iou=0.3, **kw)


def test_shifted_masks_known_iou():
    true = rect(S, (1, 0, 4, 0, 4))  # 16 px
    pred = rect(S, (1, 0, 4, 1, 5))  # shifted by one column: I = 12, U = 20
    check_all(true, pred, dice_=F(3, 4), aji_=F(3, 5), ajip=F(3, 5), pq_=F(3, 5), dq=1, sq=F(3, 5), tp=1, fp=0, fn=0)
    pred2 = rect(S, (1, 0, 4, 2, 6))  # shifted by two: I = 8, U = 24, IoU 1/3
    check_all(true, pred2, dice_=F(1, 2), aji_=F(1, 3), ajip=F(1, 3), pq_=0, dq=0, sq=0, tp=0, fp=1, fn=1)
    check_all(true, pred2, match_iou=0.25, dice_=F(1, 2), aji_=F(1, 3), ajip=F(1, 3), pq_=F(1, 3), dq=1, sq=F(1, 3), tp=1, fp=0, fn=0)
    # IoU exactly at the threshold does not match (strict >)
    r = pq(true, pred2, match_iou=1 / 3)
    assert (r.tp, r.fp, r.fn) == (0, 1, 1)


@pytest.mark.parametrize("ids", [(7, 1000, 3, 2**20), (2**31 - 1, 12, 2**31 - 2, 5)])
def test_non_contiguous_ids(ids):
    g1, g2, p1, p2 = ids
    true = rect(S, (g1, 0, 2, 0, 2), (g2, 0, 2, 2, 5))
    pred = rect(S, (p1, 0, 2, 0, 5), (p2, *B))  # blob as in the merge case + a 9 px FP
    # AJI: I = 10, U = 20 + 9; AJI+: I = 6, U = 10 + 4 + 9; DQ = 1/(1 + 1/2 + 1/2)
    check_all(true, pred, dice_=F(20, 29), aji_=F(10, 29), ajip=F(6, 23), pq_=F(3, 10), dq=F(1, 2), sq=F(3, 5), tp=1, fp=1, fn=1)
    # relabelling never changes anything
    t2 = np.where(true == g1, 1, np.where(true == g2, 2, 0)).astype(np.int32)
    p2_ = np.where(pred == p1, 1, np.where(pred == p2, 2, 0)).astype(np.int32)
    assert evaluate(true, pred) == evaluate(t2, p2_)


def test_empty_gt():
    true = np.zeros(S, np.int32)
    pred = rect(S, (1, *A), (4, *B))
    check_all(true, pred, dice_=0, aji_=0, ajip=0, pq_=0, dq=0, sq=0, tp=0, fp=2, fn=0)


def test_empty_pred():
    true = rect(S, (1, *A), (4, *B))
    pred = np.zeros(S, np.uint8)
    check_all(true, pred, dice_=0, aji_=0, ajip=0, pq_=0, dq=0, sq=0, tp=0, fp=0, fn=2)


def test_both_empty_is_perfect():
    z = np.zeros(S, np.int64)
    check_all(z, z, dice_=1, aji_=1, ajip=1, pq_=1, dq=1, sq=1, tp=0, fp=0, fn=0)
    assert pq(z, z, match_iou=0.1) == PQResult(1.0, 1.0, 1.0, 0, 0, 0)
    e = np.zeros((0, 5), np.int32)  # zero-size maps are "both empty" too
    assert evaluate(e, e)["aji"] == 1.0


def test_aji_over_penalises_and_aji_plus_does_not():
    # one pred covering three GT: AJI counts the pred's area three times
    true = rect(S, (1, 0, 2, 0, 2), (2, 0, 2, 2, 4), (3, 0, 2, 4, 6))
    pred = rect(S, (1, 0, 2, 0, 6))
    assert close(aji(true, pred), F(12, 36))
    assert close(aji_plus(true, pred), F(4, 12 + 4 + 4))  # all IoU 1/3: whichever GT wins the tie
    r = pq(true, pred, match_iou=0.0)
    assert (r.tp, r.fp, r.fn) == (1, 0, 2) and close(r.sq, F(1, 3))


def test_input_dtypes_accepted():
    true = rect(S, (1, *A), (2, *B))
    for dt in (np.uint8, np.uint16, np.int16, np.int64, np.uint32):
        assert evaluate(true.astype(dt), true.astype(dt))["aji"] == 1.0


# --------------------------------------------------------------------------- bad input


def test_float_labels_rejected():
    t = rect(S, (1, *A))
    with pytest.raises(InputError, match="true.*integer"):
        aji(t.astype(np.float32), t)
    with pytest.raises(InputError, match="pred.*integer"):
        pq(t, t.astype(np.float64))
    with pytest.raises(InputError, match="integer"):
        dice(t, t.astype(bool))


def test_negative_ids_rejected():
    t = rect(S, (1, *A))
    with pytest.raises(InputError, match="negative"):
        evaluate(t, -t)
    with pytest.raises(InputError, match="negative"):
        dice(-t, t)


def test_shape_mismatch_names_both_shapes():
    t = np.zeros((8, 8), np.int32)
    p = np.zeros((8, 9), np.int32)
    for f in (dice, aji, aji_plus, pq, evaluate):
        with pytest.raises(InputError, match=r"\(8, 8\).*\(8, 9\)"):
            f(t, p)
    with pytest.raises(InputError, match="2-D"):
        aji(np.zeros((2, 8, 8), np.int32), np.zeros((2, 8, 8), np.int32))


def test_non_array_and_bad_match_iou():
    t = rect(S, (1, *A))
    with pytest.raises(InputTypeError):
        dice(t.tolist(), t)
    for bad in (-0.1, 1.5, float("nan")):
        with pytest.raises(InputError, match="match_iou"):
            pq(t, t, bad)
    with pytest.raises(InputTypeError, match="match_iou"):
        pq(t, t, "0.5")
    assert pq(t, t, 1.0).tp == 0  # IoU > 1 is impossible: nothing matches


# --------------------------------------------------------------------------- reference
# A plain, slow re-implementation of HoVer-Net's metrics/stats_utils.py
# (get_dice_1, get_fast_aji, get_fast_aji_plus, get_fast_pq), written from
# their definitions: per-instance full-image masks and Python loops.


def _masks(lab):
    ids = [int(i) for i in np.unique(lab) if i != 0]
    return ids, [lab == i for i in ids]


def _pairwise(true, pred):
    t_ids, t_masks = _masks(true)
    p_ids, p_masks = _masks(pred)
    inter = np.zeros((len(t_ids), len(p_ids)))
    union = np.zeros((len(t_ids), len(p_ids)))
    for a, tm in enumerate(t_masks):
        for b, pm in enumerate(p_masks):
            i = int(np.logical_and(tm, pm).sum())
            if i:
                inter[a, b] = i
                union[a, b] = int(np.logical_or(tm, pm).sum())
    return t_masks, p_masks, inter, union


def ref_dice(true, pred):
    t = (true > 0).astype(np.int64)
    p = (pred > 0).astype(np.int64)
    return 2.0 * (t * p).sum() / (t + p).sum()


def _ref_aji_total(t_masks, p_masks, inter, union, pairs):
    tot_i = sum(inter[a, b] for a, b in pairs)
    tot_u = sum(union[a, b] for a, b in pairs)
    paired_t = {a for a, _ in pairs}
    paired_p = {b for _, b in pairs}
    tot_u += sum(m.sum() for a, m in enumerate(t_masks) if a not in paired_t)
    tot_u += sum(m.sum() for b, m in enumerate(p_masks) if b not in paired_p)
    return tot_i / tot_u


def ref_aji(true, pred):
    t_masks, p_masks, inter, union = _pairwise(true, pred)
    iou = inter / (union + 1.0e-6)
    pairs = []
    for a in range(len(t_masks)):
        b = int(np.argmax(iou[a]))  # best pred for this GT (first on ties)
        if iou[a, b] > 0:
            pairs.append((a, b))
    return _ref_aji_total(t_masks, p_masks, inter, union, pairs)


def ref_aji_plus(true, pred):
    t_masks, p_masks, inter, union = _pairwise(true, pred)
    iou = inter / (union + 1.0e-6)
    rows, cols = scipy_lsa(-iou)
    pairs = [(a, b) for a, b in zip(rows, cols) if iou[a, b] > 0]
    return _ref_aji_total(t_masks, p_masks, inter, union, pairs)


def ref_pq(true, pred, match_iou=0.5):
    """HoVer-Net get_fast_pq, returning (dq, sq, pq, tp, fp, fn); sq uses tp + 1e-6 as there."""
    t_masks, p_masks, inter, union = _pairwise(true, pred)
    iou = np.where(union > 0, inter / np.where(union > 0, union, 1), 0.0)
    if match_iou >= 0.5:
        pairs = [(a, b) for a in range(iou.shape[0]) for b in range(iou.shape[1]) if iou[a, b] > match_iou]
    else:
        rows, cols = scipy_lsa(-iou)
        pairs = [(a, b) for a, b in zip(rows, cols) if iou[a, b] > match_iou]
    tp = len(pairs)
    fp = len(p_masks) - tp
    fn = len(t_masks) - tp
    dq = tp / (tp + 0.5 * fp + 0.5 * fn)
    sq = sum(iou[a, b] for a, b in pairs) / (tp + 1.0e-6)
    return dq, sq, dq * sq, tp, fp, fn


def _ellipse(yy, xx, rng, cy, cx, a, b):
    th = rng.uniform(0, math.pi)
    dy, dx = yy - cy, xx - cx
    u = dx * math.cos(th) + dy * math.sin(th)
    v = -dx * math.sin(th) + dy * math.cos(th)
    return (u / a) ** 2 + (v / b) ** 2 <= 1.0


def random_pair(seed, h=72, w=80):
    """GT of overlapping random ellipses and a perturbed prediction with misses,
    false positives, merges and splits; both with non-contiguous ids."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:h, :w].astype(np.float64)
    true = np.zeros((h, w), np.int32)
    pred = np.zeros((h, w), np.int32)
    n = int(rng.integers(6, 22))
    pid = 0
    for k in range(1, n + 1):
        cy, cx = rng.uniform(0, h), rng.uniform(0, w)
        a, b = rng.uniform(2.5, 9, 2)
        true[_ellipse(yy, xx, rng, cy, cx, a, b)] = k
        u = rng.random()
        if u < 0.12:
            continue  # missed
        m = _ellipse(yy, xx, rng, cy + rng.normal(0, 1.5), cx + rng.normal(0, 1.5),
                     a * rng.uniform(0.7, 1.3), b * rng.uniform(0.7, 1.3))
        if u < 0.24 and pid > 0:
            pred[m] = pid  # merged with the previous prediction
            continue
        pid += 1
        pred[m] = pid
        if u > 0.85:  # split along a vertical line
            pid += 1
            pred[m & (xx > cx)] = pid
    for _ in range(int(rng.integers(0, 4))):  # false positives
        pid += 1
        pred[_ellipse(yy, xx, rng, rng.uniform(0, h), rng.uniform(0, w), *rng.uniform(2, 6, 2))] = pid

    def scatter(lab):  # non-contiguous, order-scrambled ids
        ids = np.unique(lab)[1:]
        new = rng.choice(np.arange(1, 50 * (ids.size + 1)), ids.size, replace=False)
        lut = np.zeros(lab.max() + 1, np.int64)
        lut[ids] = new
        return lut[lab]

    return scatter(true), scatter(pred)


SEEDS = list(range(20))


@pytest.fixture(scope="module")
def random_pairs():
    return [random_pair(s) for s in SEEDS]


def test_random_maps_are_nontrivial(random_pairs):
    # the set exercises partial matches, AJI ≠ AJI+ and below-threshold pairs
    assert sum(aji(t, p) != aji_plus(t, p) for t, p in random_pairs) >= 3
    assert all(0 < pq(t, p).tp < len(np.unique(t)) - 1 for t, p in random_pairs[:5])


def test_dice_aji_match_reference(random_pairs):
    for t, p in random_pairs:
        assert abs(dice(t, p) - ref_dice(t, p)) <= 1e-12
        assert abs(aji(t, p) - ref_aji(t, p)) <= 1e-12


@needs_scipy
def test_aji_plus_matches_reference(random_pairs):
    for t, p in random_pairs:
        assert abs(aji_plus(t, p) - ref_aji_plus(t, p)) <= 1e-12


@pytest.mark.parametrize("match_iou", [0.5, 0.75, pytest.param(0.0, marks=needs_scipy), pytest.param(0.3, marks=needs_scipy)])
def test_pq_matches_reference(random_pairs, match_iou):
    for t, p in random_pairs:
        r = pq(t, p, match_iou)
        dq, sq, pq_, tp, fp, fn = ref_pq(t, p, match_iou)
        assert (r.tp, r.fp, r.fn) == (tp, fp, fn)
        assert abs(r.dq - dq) <= 1e-12
        # HoVer-Net divides by tp + 1e-6; ours is the exact mean
        assert abs(r.sq - (sq * (tp + 1e-6) / tp if tp else 0.0)) <= 1e-12
        assert abs(r.pq - r.dq * r.sq) <= 1e-15
        assert abs(r.sq - sq) <= 1e-6 and abs(r.pq - pq_) <= 1e-6


def test_evaluate_consistent(random_pairs):
    for t, p in random_pairs[:5]:
        ev = evaluate(t, p)
        assert ev["dice"] == dice(t, p) and ev["aji"] == aji(t, p) and ev["aji_plus"] == aji_plus(t, p)
        assert (ev["pq"], ev["dq"], ev["sq"], ev["tp"], ev["fp"], ev["fn"]) == tuple(pq(t, p))


def test_identity_and_symmetry(random_pairs):
    for t, p in random_pairs[:5]:
        assert evaluate(t, t) == {"dice": 1.0, "aji": 1.0, "aji_plus": 1.0, "pq": 1.0, "dq": 1.0, "sq": 1.0,
                                  "tp": len(np.unique(t)) - 1, "fp": 0, "fn": 0}
        assert dice(t, p) == dice(p, t)
        assert abs(pq(t, p).pq - pq(p, t).pq) <= 1e-15


# --------------------------------------------------------------------------- assignment solver


def _brute_min(cost):
    nr, nc = cost.shape
    if nr <= nc:
        return min(sum(cost[i, c] for i, c in enumerate(cols)) for cols in itertools.permutations(range(nc), nr))
    return _brute_min(cost.T)


def test_lsa_optimal_vs_brute_force():
    rng = np.random.default_rng(1)
    for it in range(300):
        nr, nc = rng.integers(1, 6, 2)
        cost = rng.integers(-4, 1, (nr, nc)).astype(float) if it % 2 else -rng.random((nr, nc))
        r, c = linear_sum_assignment(cost)
        assert len(r) == min(nr, nc) and len(set(c)) == len(c) and np.all(np.diff(r) > 0)
        assert abs(cost[r, c].sum() - _brute_min(cost)) <= 1e-12
    e = linear_sum_assignment(np.zeros((0, 3)))
    assert e[0].size == 0 and e[1].size == 0


@needs_scipy
def test_lsa_same_assignment_as_scipy_including_ties():
    rng = np.random.default_rng(2)
    for it in range(400):
        nr, nc = rng.integers(1, 9, 2)
        if it % 2:
            cost = rng.integers(-3, 1, (nr, nc)).astype(float)  # many ties
        else:
            cost = -rng.random((nr, nc)) * (rng.random((nr, nc)) < 0.5)
        a = scipy_lsa(cost)
        b = linear_sum_assignment(cost)
        assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])


def test_large_component_matching():
    # a chain of alternating GT / pred bars gives one big overlap component
    h, w = 4, 200
    true = np.zeros((h, w), np.int32)
    pred = np.zeros((h, w), np.int32)
    for k in range(20):
        true[:, 10 * k: 10 * k + 10] = k + 1
        pred[:, 10 * k + 3: 10 * k + 13] = k + 1
    r = pq(true, pred, match_iou=0.0)
    # every GT k pairs with pred k (I = 28, U = 52) except the last: pred 20 is clipped
    assert r.tp == 20 and r.fp == 0 and r.fn == 0
    assert close(aji_plus(true, pred), F(19 * 28 + 28, 19 * 52 + 40))


def test_unique_fallback_paths_agree(random_pairs, monkeypatch):
    """Huge ids / very many instances switch from bincount tables to np.unique."""
    import insmix_fast.metrics as M

    expected = [evaluate(t, p, 0.3) for t, p in random_pairs[:6]]
    for name in ("_LUT_MIN", "_LUT_PER_PIXEL", "_PAIR_TABLE_MIN", "_PAIR_TABLE_PER_PIXEL"):
        monkeypatch.setattr(M, name, -1)
    got = [evaluate(t, p, 0.3) for t, p in random_pairs[:6]]
    assert got == expected
    # a map without background, ids far apart: no id 0 anywhere
    true = np.full(S, 2**31 - 1, np.int64)
    true[:4] = 2**30
    pred = true[::-1].copy()
    ev = evaluate(true, pred)
    assert ev["dice"] == 1.0 and ev["tp"] == 2 and ev["aji"] == 1.0


def test_no_background_small_ids():
    true = np.ones(S, np.int32)
    true[:, 4:] = 3
    pred = np.full(S, 2, np.int32)
    # one pred covering both GT halves (32 px each): IoU 1/2 each, not > 0.5
    ev = evaluate(true, pred)
    assert ev["dice"] == 1.0 and ev["tp"] == 0 and (ev["fp"], ev["fn"]) == (1, 2)
    assert close(ev["aji"], F(64, 128)) and close(ev["aji_plus"], F(32, 64 + 32))


# --------------------------------------------------------------------------- multi-class PQ
# PanNuke mPQ/bPQ (PanNuke-metrics run.py) and CoNIC mPQ+ (compute_stats.py).

from insmix_fast.metrics import MPQPlus, PanNukeScores, bpq, mpq, pq_multiclass  # noqa: E402

B2 = (4, 7, 4, 8)  # 12 px; IoU with B = 9 / 12 = 0.75


def typed(shape, *boxes):
    """(labels, types) from ``(id, class, r0, r1, c0, c1)`` boxes."""
    lab = rect(shape, *[(i, *box) for i, _, *box in boxes])
    typ = rect(shape, *[(c, *box) for _, c, *box in boxes])
    return lab, typ


def test_pannuke_per_class_hand_computed():
    t, tt = typed(S, (1, 1, *A), (2, 2, *B))
    p, pt = typed(S, (4, 1, *A), (7, 1, *B), (9, 3, *C))  # B predicted as class 1; an FP of class 3
    per = pq_multiclass(t, tt, p, pt, 3)
    assert (per[0].tp, per[0].fp, per[0].fn) == (1, 1, 0) and close(per[0].pq, F(2, 3))
    assert (per[1].tp, per[1].fp, per[1].fn) == (0, 0, 1) and per[1].pq == 0.0
    assert per[2] is None  # class 3 is not in the GT: skipped, its FP is not counted (as PanNuke)
    assert close(mpq(t, tt, p, pt, 3), F(1, 3))
    assert close(bpq(t, p), F(4, 5))  # 2 TP, 1 FP, classes ignored
    assert math.isnan(mpq(np.zeros(S, np.int32), np.zeros(S, np.int32), p, pt, 3))
    assert math.isnan(bpq(np.zeros(S, np.int32), p))
    assert bpq(t, np.zeros(S, np.int32)) == 0.0


def test_pannuke_scores_average_over_tissues():
    scores = PanNukeScores(3, class_names=("background", "neo", "inf", "con"))
    t, tt = typed(S, (1, 1, *A), (2, 2, *B))
    p, pt = typed(S, (4, 1, *A), (7, 1, *B), (9, 3, *C))
    one = scores.update(t, tt, p, pt, tissue="Breast")
    assert close(one["mpq"], F(1, 3)) and close(one["bpq"], F(4, 5)) and math.isnan(one["per_class"]["con"])
    empty = np.zeros(S, np.int32)
    two = scores.update(empty, empty, p, pt, tissue="Breast")  # empty GT: skipped for both
    assert math.isnan(two["mpq"]) and math.isnan(two["bpq"])
    t3, tt3 = typed(S, (1, 2, *A))
    scores.update(t3, tt3, t3, tt3, tissue="Colon")
    r = scores.compute()
    assert r["n_images"] == 3
    assert r["per_tissue"]["Breast"]["n_images"] == 2
    assert close(r["per_tissue"]["Breast"]["mpq"], F(1, 3)) and close(r["per_tissue"]["Breast"]["bpq"], F(4, 5))
    assert r["per_tissue"]["Colon"] == {"mpq": 1.0, "bpq": 1.0, "n_images": 1}
    assert close(r["mpq"], F(2, 3)) and close(r["bpq"], F(9, 10))  # means over the two tissues
    assert close(r["per_class"]["neo"], F(2, 3)) and close(r["per_class"]["inf"], F(1, 2))
    assert math.isnan(r["per_class"]["con"])
    scores.reset()
    assert scores.compute()["n_images"] == 0 and math.isnan(scores.compute()["mpq"])


def test_mpq_plus_hand_computed():
    metric = MPQPlus(3)
    t, tt = typed(S, (1, 1, *A), (2, 2, *B))
    p, pt = typed(S, (5, 1, *A), (6, 2, *B2))
    metric.update(t, tt, p, pt)  # class 1: TP (IoU 1); class 2: TP (IoU 3/4)
    t2, tt2 = typed(S, (3, 1, *C))
    metric.update(t2, tt2, np.zeros(S, np.int32), np.zeros(S, np.int32))  # class 1: FN
    p3, pt3 = typed(S, (1, 2, *A))
    metric.update(np.zeros(S, np.int32), np.zeros(S, np.int32), p3, pt3)  # class 2: FP
    r = metric.compute()
    c1, c2, c3 = r["per_class"][1], r["per_class"][2], r["per_class"][3]
    assert (c1.tp, c1.fp, c1.fn) == (1, 0, 1) and close(c1.pq, F(2, 3))
    assert (c2.tp, c2.fp, c2.fn) == (1, 1, 0) and close(c2.dq, F(2, 3)) and close(c2.sq, F(3, 4)) and close(c2.pq, F(1, 2))
    assert (c3.tp, c3.fp, c3.fn) == (0, 0, 0) and c3.pq == 0.0  # absent everywhere: 0, as CoNIC
    assert close(r["mpq_plus"], F(7, 18)) and r["n_images"] == 3
    # per image then averaged (MoNuSAC style) would differ: mPQ+ pools the counts first
    assert not close(r["mpq_plus"], (F(7, 12) + 0 + 0) / 3)


def test_multiclass_splits_a_mixed_class_prediction():
    """A predicted instance with two classes counts as one piece in each (inst * (type == c))."""
    t, tt = typed(S, (1, 1, *B))
    p, pt = typed(S, (3, 1, *B))
    pt[4, 4:7] = 2  # one row of the prediction says class 2
    per = pq_multiclass(t, tt, p, pt, 2)
    assert per[0].tp == 1 and close(per[0].sq, F(6, 9)) and per[1] is None
    m = MPQPlus(2)
    m.update(t, tt, p, pt)
    assert m.compute()["per_class"][2].fp == 1


def test_multiclass_bad_input():
    t, tt = typed(S, (1, 1, *A))
    with pytest.raises(InputError, match="true_types holds class 3, beyond n_classes = 2"):
        pq_multiclass(t, tt * 3, t, tt, 2)
    with pytest.raises(InputError, match="pred_types shape"):
        mpq(t, tt, t, tt[:4], 2)
    with pytest.raises(InputError, match="same H×W"):
        MPQPlus(2).update(t, tt, t[:4], tt[:4])
    with pytest.raises(InputError, match="n_classes"):
        MPQPlus(0)
    with pytest.raises(InputError, match="class_names must name the 2 classes"):
        PanNukeScores(2, class_names=["a"])
    with pytest.raises(InputError, match="match_iou"):
        PanNukeScores(2, match_iou=1.5)
    assert list(MPQPlus(2, class_names=("background", "x", "y")).compute()["per_class"]) == ["x", "y"]


def _ref_pq_info(true, pred, match_iou=0.5):
    """(tp, fp, fn, sum IoU) of HoVer-Net / CoNIC get_pq, from per-instance masks."""
    t_masks, p_masks, inter, union = _pairwise(true, pred)
    iou = np.where(union > 0, inter / np.where(union > 0, union, 1), 0.0)
    pairs = [(a, b) for a in range(iou.shape[0]) for b in range(iou.shape[1]) if iou[a, b] > match_iou]
    return len(pairs), len(p_masks) - len(pairs), len(t_masks) - len(pairs), sum(iou[a, b] for a, b in pairs)


def random_typed(seed, n_classes=4):
    true, pred = random_pair(seed)
    rng = np.random.default_rng(1000 + seed)
    tl = np.zeros(true.max() + 1, np.int64)
    tl[1:] = rng.integers(1, n_classes + 1, true.max())
    pl = np.zeros(pred.max() + 1, np.int64)
    pl[1:] = rng.integers(1, n_classes + 1, pred.max())
    for j in np.unique(pred)[1:]:  # mostly the class of the GT nucleus under the prediction
        under = true[(pred == j) & (true > 0)]
        if under.size and rng.random() < 0.75:
            pl[j] = tl[np.bincount(under).argmax()]
    ptypes = pl[pred]
    ptypes[(pred > 0) & (np.arange(pred.shape[1]) % 9 == 0)] = 1  # some predictions carry two classes
    return true, tl[true], pred, ptypes


def test_pannuke_and_conic_match_official_code(random_pairs):
    """Against plain re-implementations of PanNuke-metrics run.py and CoNIC compute_stats.py."""
    n = 4
    pooled = np.zeros((n, 4))
    metric = MPQPlus(n)
    scores = PanNukeScores(n)
    ref_img_mpq = []
    for seed in SEEDS:
        t, tt, p, pt = random_typed(seed, n)
        ref = []
        for c in range(1, n + 1):
            tc, pc = t * (tt == c), p * (pt == c)
            info = _ref_pq_info(tc, pc)
            pooled[c - 1] += info
            if np.unique(tc).size == 1:
                ref.append(math.nan)  # GT empty for this class: skipped
            else:
                tp, fp, fn, s = info
                ref.append(tp / (tp + 0.5 * fp + 0.5 * fn) * s / (tp + 1.0e-6))
        ref_img_mpq.append(np.nanmean(ref) if not all(math.isnan(x) for x in ref) else math.nan)
        got = mpq(t, tt, p, pt, n)
        assert got == pytest.approx(ref_img_mpq[-1], rel=1e-5, nan_ok=True)
        assert bpq(t, p) == pytest.approx(ref_pq(t, p)[2], rel=1e-5)
        metric.update(t, tt, p, pt)
        scores.update(t, tt, p, pt)
    tp, fp, fn, s = pooled.T
    conic = np.mean(tp / (tp + 0.5 * fp + 0.5 * fn + 1.0e-6) * s / (tp + 1.0e-6))
    assert metric.compute()["mpq_plus"] == pytest.approx(conic, rel=1e-5)
    assert all(pq_.tp == int(a) for pq_, a in zip(metric.compute()["per_class"].values(), tp))
    assert scores.compute()["mpq"] == pytest.approx(np.nanmean(ref_img_mpq), rel=1e-5)
    assert 0.05 < conic < 0.95  # a non-trivial case
