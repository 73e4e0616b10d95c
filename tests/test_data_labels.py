"""Tests of insmix_fast.data.labels (topology checks and repair)."""

from __future__ import annotations


import cv2
import numpy as np
import pytest

from insmix_fast.data import (
    LabelProblems,
    check_label_topology,
    clean_labels,
    find_label_problems,
    relabel_sequential,
)
from insmix_fast.errors import InputError, LabelMapError


def _ref_problems(lab: np.ndarray, connectivity: int = 8) -> tuple[list[int], list[int]]:
    """Brute-force reference with skimage.measure.label."""
    sk = pytest.importorskip("skimage.measure")
    H, W = lab.shape
    fg_conn = 2 if connectivity == 8 else 1
    bg_conn = 1 if connectivity == 8 else 2
    split = [int(i) for i in np.unique(lab) if i and sk.label(lab == i, connectivity=fg_conn).max() > 1]
    bg = sk.label(lab == 0, connectivity=bg_conn)
    fp = cv2.getStructuringElement(cv2.MORPH_CROSS if bg_conn == 1 else cv2.MORPH_RECT, (3, 3))
    holes = set()
    for b in range(1, bg.max() + 1):
        m = bg == b
        rr, cc = np.nonzero(m)
        if rr.min() == 0 or cc.min() == 0 or rr.max() == H - 1 or cc.max() == W - 1:
            continue
        ring = cv2.dilate(m.astype(np.uint8), fp).astype(bool) & ~m
        ids = np.unique(lab[ring])
        if ids.size == 1 and ids[0] > 0:
            holes.add(int(ids[0]))
    return split, sorted(holes)


def test_valid_map_is_ok():
    lab = np.zeros((10, 10), np.int32)
    lab[1:4, 1:4] = 5
    lab[1:4, 4:7] = 9  # touching another id is fine
    lab[6:9, 6:9] = 70000
    p = find_label_problems(lab)
    assert isinstance(p, LabelProblems)
    assert p.ok
    assert p.split_ids.size == 0 and p.hole_ids.size == 0
    assert check_label_topology(lab).dtype == np.int32


def test_split_detection_and_connectivity():
    lab = np.zeros((8, 8), np.int32)
    lab[1, 1] = 3
    lab[2, 2] = 3  # diagonal neighbour: one piece with 8-connectivity, two with 4
    lab[5:7, 5:7] = 3  # a separate third piece
    lab[0, 6] = 4
    p8 = find_label_problems(lab)
    assert p8.split_ids.tolist() == [3]
    assert p8.split_pieces.tolist() == [2]
    p4 = find_label_problems(lab, connectivity=4)
    assert p4.split_ids.tolist() == [3]
    assert p4.split_pieces.tolist() == [3]
    assert not p8.ok


def test_hole_detection_rules():
    lab = np.zeros((12, 12), np.int32)
    lab[1:6, 1:6] = 2
    lab[3, 3] = 0  # enclosed by id 2 only -> hole
    lab[0:4, 8:12] = 5
    lab[0, 10] = 0  # background touching the border -> not a hole
    lab[7:11, 1:4] = 6
    lab[7:11, 4:7] = 7
    lab[8:10, 3:5] = 0  # pocket between two ids is fine ... but enclosed by 6 and 7 -> not a hole
    p = find_label_problems(lab)
    assert p.hole_ids.tolist() == [2]
    assert p.split_ids.size == 0


def test_diagonal_ring_encloses_hole_with_8_connectivity():
    lab = np.zeros((7, 7), np.int32)
    # a diamond ring: 8-connected, its centre pixel is 4-enclosed
    for r, c in [(1, 3), (2, 2), (2, 4), (3, 1), (3, 5), (4, 2), (4, 4), (5, 3)]:
        lab[r, c] = 1
    p = find_label_problems(lab)
    assert p.split_ids.size == 0
    assert p.hole_ids.tolist() == [1]
    # with 4-connectivity the ring is 8 pieces and the background is one 8-connected region
    p4 = find_label_problems(lab, connectivity=4)
    assert p4.split_pieces.tolist() == [8] and p4.hole_ids.size == 0


@pytest.mark.parametrize("connectivity", [8, 4])
def test_against_bruteforce_reference(connectivity):
    rng = np.random.default_rng(1)
    for _ in range(150):
        H, W = (int(x) for x in rng.integers(1, 11, 2))
        lab = rng.integers(0, int(rng.integers(1, 5)), (H, W)).astype(np.int32) * 7
        p = find_label_problems(lab, connectivity=connectivity)
        split, holes = _ref_problems(lab, connectivity)
        assert p.split_ids.tolist() == split, lab
        assert p.hole_ids.tolist() == holes, lab


def test_check_label_topology_message():
    lab = np.zeros((40, 60), np.int32)
    for k in range(12):  # 12 split ids, only ~10 are listed
        lab[2, 2 + 4 * k] = k + 1
        lab[6, 2 + 4 * k] = k + 1
    lab[20:25, 20:25] = 99
    lab[22, 22] = 0
    with pytest.raises(LabelMapError) as exc:
        check_label_topology(lab, name="tile_07.png")
    msg = str(exc.value)
    assert "tile_07.png" in msg
    assert "id 1 split into 2 pieces" in msg
    assert "id 99 has holes" in msg
    assert "+2 more" in msg
    assert "clean_labels" in msg
    assert "id 12 split" not in msg  # beyond the listing limit


def test_clean_labels_relabel_keeps_largest_and_gives_new_ids():
    lab = np.zeros((10, 12), np.int32)
    lab[1:3, 1:3] = 4  # 4 px
    lab[5:9, 5:9] = 4  # 16 px: the largest keeps id 4
    lab[1:3, 8:10] = 9
    out = clean_labels(lab)
    assert out[6, 6] == 4
    assert out[1, 1] == 10  # max id + 1
    assert out[1, 8] == 9
    assert find_label_problems(out).ok
    out2 = clean_labels(lab, split="largest")
    assert out2[1, 1] == 0 and out2[6, 6] == 4
    assert set(np.unique(out2).tolist()) == {0, 4, 9}


def test_clean_labels_fills_holes_and_min_size():
    lab = np.zeros((12, 12), np.int32)
    lab[1:8, 1:8] = 3
    lab[3:5, 3:5] = 0  # hole
    lab[9, 9] = 5  # a 1-px nucleus
    out = clean_labels(lab, min_size=2)
    assert out[3, 3] == 3 and out[4, 4] == 3
    assert out[9, 9] == 0
    assert find_label_problems(out).ok
    kept = clean_labels(lab, fill_holes=False)
    assert kept[3, 3] == 0 and find_label_problems(kept).hole_ids.tolist() == [3]


def test_clean_labels_fills_hole_left_by_removed_piece():
    lab = np.zeros((12, 12), np.int32)
    lab[1:9, 1:9] = 1
    lab[4, 4] = 2  # a tiny nucleus inside nucleus 1 -> removed -> leaves a hole in 1
    lab[3:6, 3:6][lab[3:6, 3:6] == 1] = 0
    lab[4, 4] = 2
    out = clean_labels(lab, min_size=2)
    assert out[4, 4] == 1 and out[3, 3] == 1
    assert find_label_problems(out).ok


@pytest.mark.parametrize("split", ["relabel", "largest"])
def test_clean_labels_random_maps_always_valid(split):
    rng = np.random.default_rng(2)
    for _ in range(120):
        H, W = (int(x) for x in rng.integers(1, 14, 2))
        lab = rng.integers(0, int(rng.integers(1, 6)), (H, W)).astype(np.int32)
        min_size = int(rng.integers(1, 4))
        out = clean_labels(lab, min_size=min_size, split=split)
        assert find_label_problems(out).ok
        assert out.dtype == np.int32 and out.shape == lab.shape
        fg = lab > 0
        if split == "relabel" and min_size == 1:
            # nothing is removed: a nucleus pixel keeps its id or moves to a new id
            assert np.all((out[fg] == lab[fg]) | (out[fg] > lab.max()))
        if min_size == 1 and split == "relabel":
            assert np.count_nonzero(out) >= np.count_nonzero(fg)  # only hole filling adds pixels


def test_clean_labels_keeps_valid_maps_unchanged():
    lab = np.zeros((20, 20), np.int32)
    cv2.circle(lab, (5, 5), 3, 17, -1)
    cv2.circle(lab, (14, 12), 4, 3, -1)
    out = clean_labels(lab)
    np.testing.assert_array_equal(out, lab)
    assert out is not lab


def test_relabel_sequential():
    lab = np.array([[0, 50, 50], [7, 0, 2_000_000_000]], np.int32)
    out, old = relabel_sequential(lab)
    assert old.tolist() == [7, 50, 2_000_000_000]
    np.testing.assert_array_equal(out, [[0, 2, 2], [1, 0, 3]])
    np.testing.assert_array_equal(np.concatenate([[0], old])[out], lab)
    small = np.array([[3, 0], [3, 9]], np.uint16)
    out2, old2 = relabel_sequential(small)
    assert out2.dtype == np.int32 and old2.tolist() == [3, 9] and out2.max() == 2


def test_bad_inputs_raise():
    with pytest.raises(InputError):
        find_label_problems(np.zeros((4, 4), np.float32))
    with pytest.raises(InputError):
        find_label_problems(-np.ones((4, 4), np.int32))
    with pytest.raises(InputError):
        find_label_problems(np.zeros((4, 4), np.int32), connectivity=6)
    with pytest.raises(InputError):
        clean_labels(np.zeros((4, 4), np.int32), split="biggest")
    with pytest.raises(InputError):
        clean_labels(np.zeros((4, 4), np.int32), min_size=0)
    assert find_label_problems(np.zeros((0, 5), np.int32)).ok


def test_find_label_problems_on_1000px_with_many_cut_circles():
    rng = np.random.default_rng(0)
    lab = np.zeros((1000, 1000), np.int32)
    for k in range(1, 1001):
        y, x = (int(v) for v in rng.integers(0, 1000, 2))
        cv2.circle(lab, (x, y), int(rng.integers(4, 14)), k, -1)
    p = find_label_problems(lab)
    assert p.split_ids.size > 0  # later circles cut earlier ones
    assert find_label_problems(clean_labels(lab)).ok  # speed: bench/bench_data.py
