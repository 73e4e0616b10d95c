"""CoNIC (.npy, memory-mapped) and Lizard (.png + .mat, class through ``id``) readers."""

from __future__ import annotations

import numpy as np
import pytest
from dataset_fixtures import (
    assert_matches,
    check_real_sample,
    lizard_mat,
    make_truth,
    real_dir,
    savemat,
    write_conic,
    write_lizard,
)

from insmix_fast.data import CONIC_CLASSES, CoNICDataset, LizardDataset, open_dataset
from insmix_fast.errors import LabelMapError, ReaderError


def _truths(n=4, seed=0):
    return [make_truth(seed + i, n_classes=6) for i in range(n)]


# ----------------------------------------------------------------------------- CoNIC


@pytest.mark.parametrize("dtype", [np.uint16, np.int32, np.int64, np.uint8])
def test_conic_read_exactly(tmp_path, dtype, caplog):
    truths = _truths()
    root = write_conic(tmp_path / "conic", truths, dtype=dtype)
    with caplog.at_level("INFO", logger="insmix_fast"):
        ds = open_dataset(root)
    assert "CoNIC layout" in caplog.text
    assert isinstance(ds, CoNICDataset) and ds.class_names == CONIC_CLASSES
    assert CONIC_CLASSES == ("background", "neutrophil", "epithelial", "lymphocyte", "plasma", "eosinophil", "connective")
    assert isinstance(ds.images, np.memmap) and isinstance(ds.labels, np.memmap)
    assert len(ds) == 4 and ds.names[1] == "consep_1-0001"
    for k, t in enumerate(truths):
        assert_matches(ds[k], t)
    want = {n: int(np.unique(truths[2][1][truths[2][2] == c]).size) for c, n in enumerate(CONIC_CLASSES[1:], 1)}
    assert ds.counts(2) == want and ds.counts(-2) == want


def test_conic_pickles_paths_not_arrays(tmp_path):
    import pickle

    truths = _truths(3)
    ds = CoNICDataset(write_conic(tmp_path, truths))
    blob = pickle.dumps(ds)
    assert len(blob) < 4000 < (tmp_path / "images.npy").stat().st_size
    again = pickle.loads(blob)
    assert isinstance(again.labels, np.memmap)
    assert_matches(again[2], truths[2])


def test_conic_optional_csvs(tmp_path):
    truths = _truths(2)
    ds = CoNICDataset(write_conic(tmp_path, truths, counts=False, names=False))
    assert ds.counts(0) is None and ds.names is None
    assert_matches(ds[1], truths[1])


def test_conic_bad_files(tmp_path):
    truths = _truths(3)
    root = write_conic(tmp_path, truths)
    lines = (root / "counts.csv").read_text().splitlines()
    (root / "counts.csv").write_text("\n".join(lines[:-1]) + "\n")
    with pytest.raises(ReaderError, match=r"counts.csv: 2 rows for 3 tiles.*count mismatch"):
        CoNICDataset(root)
    (root / "counts.csv").unlink()
    labels = np.load(root / "labels.npy")
    np.save(root / "labels.npy", labels[:2])
    with pytest.raises(ReaderError, match="image/label count mismatch"):
        open_dataset(root)
    np.save(root / "labels.npy", labels.astype(np.float32))
    with pytest.raises(ReaderError, match="must be integers"):
        CoNICDataset(root)
    np.save(root / "labels.npy", labels)
    (root / "images.npy").unlink()
    with pytest.raises(ReaderError, match="CoNIC images: file not found.*images.npy"):
        open_dataset(root)


def test_conic_bad_classes(tmp_path):
    truths = _truths(2)
    root = write_conic(tmp_path, truths)
    labels = np.load(root / "labels.npy")
    inst = labels[1, ..., 0]
    i = int(inst[inst > 0][0])
    bad = labels.copy()
    bad[1, ..., 1][inst == i] = 7
    np.save(root / "labels.npy", bad)
    with pytest.raises(LabelMapError, match=rf"labels.npy, sample 1 \(consep_1-0001\): class id 7 is outside.*1..6.*instance id\(s\) {i}"):
        CoNICDataset(root)[1]
    bad = labels.copy()
    ys, xs = np.nonzero(inst == i)
    c = int(bad[1, ys[0], xs[0], 1])
    bad[1, ys[0], xs[0], 1] = c % 6 + 1
    np.save(root / "labels.npy", bad)
    with pytest.raises(LabelMapError, match=rf"sample 1 .*several classes: id {i} \(class .*1 px"):
        CoNICDataset(root)[1]
    bad = labels.copy()
    bad[1, ys[0], xs[0], 1] = 0
    np.save(root / "labels.npy", bad)
    with pytest.raises(LabelMapError, match=rf"id {i} \(class 0: 1 px"):
        CoNICDataset(root)[1]
    bad = labels.copy()
    bad[1, 0, 0] = (0, 3)  # a class on a background pixel
    np.save(root / "labels.npy", bad)
    with pytest.raises(LabelMapError, match="background pixel.*carry a class"):
        CoNICDataset(root)[1]
    assert_matches(CoNICDataset(root)[0], truths[0])  # the other tile still reads


def test_real_conic():
    ds = CoNICDataset(real_dir("INSMIX_CONIC_DIR"), fix_labels=True)
    for k in (0, len(ds) // 2, len(ds) - 1):
        check_real_sample(ds, k)


# ----------------------------------------------------------------------------- Lizard

NAMES = ["consep_1", "crag_2", "dpath_3", "glas_4", "pannuke_5"]


@pytest.fixture()
def lizard(tmp_path):
    pytest.importorskip("scipy.io")
    truths = _truths(5, seed=40)
    root = write_lizard(tmp_path / "lizard", truths, NAMES, splits=[1, 2, 3, 1, 2])
    return root, truths


def test_lizard_read_exactly(lizard, caplog):
    root, truths = lizard
    with caplog.at_level("INFO", logger="insmix_fast"):
        ds = open_dataset(root)
    assert "Lizard layout" in caplog.text
    assert isinstance(ds, LizardDataset) and ds.class_names == CONIC_CLASSES
    assert ds.names == NAMES
    for k, t in enumerate(truths):
        assert_matches(ds[k], t)
    assert ds.source(1) == "crag" and ds.split(2) == 3
    two = LizardDataset(root, split=2)
    assert two.names == ["crag_2", "pannuke_5"]
    assert_matches(two[1], truths[4])
    assert LizardDataset(root, split=[1, 3]).names == ["consep_1", "dpath_3", "glas_4"]


def test_lizard_class_found_through_id(lizard):
    """Rows of id/class are in another order than the ids; reading by row order would be wrong."""
    root, truths = lizard
    mat = lizard_mat(truths[0][1], truths[0][2], 0)
    assert not np.array_equal(mat["id"].ravel(), np.sort(mat["id"].ravel()))
    by_row = np.zeros(int(mat["inst_map"].max()) + 1, int)
    by_row[np.unique(mat["inst_map"])[1:]] = mat["class"].ravel()
    assert not np.array_equal(np.where(mat["inst_map"] > 0, by_row[mat["inst_map"]], 0), truths[0][2])
    assert_matches(LizardDataset(root)[0], truths[0])


def test_lizard_bad_labels(lizard):
    root, truths = lizard
    mat_path = root / "Lizard_Labels" / "Labels" / "crag_2.mat"
    mat = lizard_mat(truths[1][1], truths[1][2], 1)
    gone = int(mat["id"][0, 0])
    savemat(mat_path, **{**mat, "id": mat["id"][1:], "class": mat["class"][1:]})
    with pytest.raises(LabelMapError, match=rf"crag_2.mat: instance id\(s\) {gone} of the instance map have no entry in 'id'/'class'"):
        LizardDataset(root)[1]
    dup = {**mat, "id": np.vstack([mat["id"], mat["id"][:1]]), "class": np.vstack([mat["class"], mat["class"][:1] % 6 + 1])}
    savemat(mat_path, **dup)
    with pytest.raises(LabelMapError, match=rf"instance id {gone} is listed more than once"):
        LizardDataset(root)[1]
    savemat(mat_path, **{k: v for k, v in mat.items() if k != "class"})
    with pytest.raises(ReaderError, match=r"crag_2.mat: the .mat file has no variable 'class'"):
        LizardDataset(root)[1]


def test_lizard_missing_files(lizard):
    root, _ = lizard
    (root / "Lizard_Labels" / "Labels" / "glas_4.mat").unlink()
    with pytest.raises(ReaderError, match=r"count mismatch \(5 images, 4 .mat label files\).*glas_4.png"):
        LizardDataset(root)
    (root / "Lizard_Labels" / "info.csv").unlink()
    (root / "Lizard_Images2" / "Lizard_Images2" / "crag_2.png").unlink()
    (root / "Lizard_Images2" / "Lizard_Images2" / "glas_4.png").unlink()
    (root / "Lizard_Images1" / "Lizard_Images1" / "dpath_3.png").unlink()
    with pytest.raises(ReaderError, match=r"no image in .* for .mat label file\(s\) crag_2.mat, dpath_3.mat"):
        LizardDataset(root)
    for n in ("crag_2", "dpath_3"):
        (root / "Lizard_Labels" / "Labels" / f"{n}.mat").unlink()
    ds = LizardDataset(root)
    assert ds.names == ["consep_1", "pannuke_5"] and ds.source(0) is None
    with pytest.raises(ReaderError, match="split= needs Lizard_Labels/info.csv"):
        LizardDataset(root, split=1)


def test_real_lizard():
    ds = LizardDataset(real_dir("INSMIX_LIZARD_DIR"), fix_labels=True)
    for k in (0, len(ds) - 1):
        check_real_sample(ds, k)
