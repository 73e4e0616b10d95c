"""PanNuke reader: the official fold layout written file by file, read back exactly."""

from __future__ import annotations

import numpy as np
import pytest
from dataset_fixtures import assert_matches, check_real_sample, make_truth, real_dir, write_pannuke_fold

from insmix_fast.data import PANNUKE_CLASSES, PanNukeDataset, open_dataset
from insmix_fast.errors import LabelMapError, ReaderError

TISSUES = ["Breast", "Colon", "Adrenal_gland", "Kidney"]


@pytest.fixture()
def three_folds(tmp_path):
    truths = {f: [make_truth(10 * f + i) for i in range(2 + f % 2)] for f in (1, 2, 3)}
    for f, ts in truths.items():
        write_pannuke_fold(tmp_path, f, ts, TISSUES[: len(ts)], seed=f)
    return tmp_path, truths


def test_reads_every_fold_exactly(three_folds):
    root, truths = three_folds
    ds = PanNukeDataset(root)
    assert ds.folds == [1, 2, 3] and ds.typed and ds.class_names == PANNUKE_CLASSES
    flat = [t for f in (1, 2, 3) for t in truths[f]]
    assert len(ds) == len(flat) == 8
    assert any(np.unique(t[2]).size > 3 for t in flat)  # several classes in one tile
    for k, truth in enumerate(flat):
        assert_matches(ds[k], truth)
    assert ds.fold(0) == 1 and ds.fold(-1) == 3
    assert ds.tissue(3) == "Breast" and ds.tissues[:4] == ["Breast", "Colon", "Adrenal_gland", "Breast"]


def test_fold_folder_and_fold_selection(three_folds):
    root, truths = three_folds
    one = PanNukeDataset(root / "Fold 2")
    assert one.folds == [2] and len(one) == 2
    assert_matches(one[1], truths[2][1])
    sel = PanNukeDataset(root, folds=[3, 1])
    assert sel.folds == [3, 1] and len(sel) == 6
    assert_matches(sel[0], truths[3][0])
    assert_matches(sel[5], truths[1][2])
    assert len(PanNukeDataset(root, folds=2)) == 2
    with pytest.raises(ReaderError, match=r"fold\(s\) \[4\] not found; found fold\(s\) 1, 2, 3"):
        PanNukeDataset(root, folds=4)


def test_open_dataset_finds_pannuke(three_folds, caplog):
    root, _ = three_folds
    with caplog.at_level("INFO", logger="insmix_fast"):
        ds = open_dataset(root, folds=1)
    assert isinstance(ds, PanNukeDataset) and ds.folds == [1]
    assert "PanNuke layout" in caplog.text
    assert isinstance(open_dataset(root / "Fold 3"), PanNukeDataset)


def test_flat_layout(tmp_path):
    truths = [make_truth(1), make_truth(2)]
    d = write_pannuke_fold(tmp_path, 1, truths, ["Skin", "Lung"])
    flat = tmp_path / "flat"
    flat.mkdir()
    for sub, name in (("images", "images.npy"), ("images", "types.npy"), ("masks", "masks.npy")):
        (flat / name).write_bytes((d / sub / "fold1" / name).read_bytes())
    ds = open_dataset(flat)
    assert isinstance(ds, PanNukeDataset) and ds.folds == [None]
    assert_matches(ds[1], truths[1])


def test_overlapping_channels_later_channel_wins(tmp_path):
    image, labels, types = make_truth(3)
    d = write_pannuke_fold(tmp_path, 1, [(image, labels, types)], ["Colon"])
    p = d / "masks" / "fold1" / "masks.npy"
    m = np.load(p)
    m[0, 0:4, 0:4, 1] = 9  # an inflammatory nucleus
    m[0, 2:6, 2:6, 3] = 4  # a dead nucleus over its corner: channel 3 wins there
    np.save(p, m)
    _, lab, typ = PanNukeDataset(tmp_path)[0]
    assert (typ[0:2, 0:4] == 2).all() and (typ[2:4, 0:2] == 2).all() and (typ[2:6, 2:6] == 4).all()
    assert lab[0, 0] != lab[3, 3] and np.unique(lab[2:6, 2:6]).size == 1


def test_masks_are_memory_mapped(tmp_path):
    """A fold as large as a real one (~3 GB masks.npy, sparse on disk) opens and reads one tile quickly."""
    from numpy.lib.format import open_memmap

    n = 1000
    d = tmp_path / "Fold 1"
    (d / "images" / "fold1").mkdir(parents=True)
    (d / "masks" / "fold1").mkdir(parents=True)
    try:
        masks = open_memmap(d / "masks" / "fold1" / "masks.npy", "w+", np.float64, (n, 256, 256, 6))
        images = open_memmap(d / "images" / "fold1" / "images.npy", "w+", np.float64, (n, 256, 256, 3))
    except OSError as exc:  # pragma: no cover - a file system without sparse files
        pytest.skip(f"cannot create a large sparse file here: {exc}")
    masks[n - 1, 10:20, 10:20, 4] = 3
    images[n - 1] = 200
    masks.flush()
    images.flush()
    del masks, images
    np.save(d / "images" / "fold1" / "types.npy", np.array(["Breast"] * n))
    ds = PanNukeDataset(tmp_path)
    assert len(ds) == n
    image, labels, types = ds[-1]
    assert image[0, 0, 0] == 200 and labels.max() == 1 and (types[10:20, 10:20] == 5).all()


def test_pickles_paths_not_arrays(three_folds):
    """Worker processes (spawn) get the data set pickled: it must not carry the memory-mapped arrays."""
    import pickle

    root, truths = three_folds
    ds = PanNukeDataset(root)
    ds[0]
    blob = pickle.dumps(ds)
    assert len(blob) < 4000  # the arrays alone are 8 tiles × 40×40×9 float64 = 900 kB
    again = pickle.loads(blob)
    assert_matches(again[-1], truths[3][-1])


def _fold(tmp_path, truths=None):
    truths = truths or [make_truth(5), make_truth(6)]
    return write_pannuke_fold(tmp_path, 1, truths, ["Breast"] * len(truths)), truths


def test_missing_file_is_named(tmp_path):
    d, _ = _fold(tmp_path)
    (d / "masks" / "fold1" / "masks.npy").unlink()
    with pytest.raises(ReaderError, match="has no masks.npy"):
        PanNukeDataset(tmp_path)
    with pytest.raises(ReaderError, match="has no masks.npy"):
        open_dataset(tmp_path)


def test_count_mismatch(tmp_path):
    d, _ = _fold(tmp_path)
    np.save(d / "images" / "fold1" / "types.npy", np.array(["Breast"] * 3))
    with pytest.raises(ReaderError, match="count mismatch"):
        PanNukeDataset(tmp_path)


def test_bad_arrays(tmp_path):
    d, _ = _fold(tmp_path)
    p = d / "images" / "fold1" / "images.npy"
    images = np.load(p)
    np.save(p, images / 255.0)  # scaled to 0..1: would silently read as black
    with pytest.raises(ReaderError, match="integers 0..255.*multiplied by 255"):
        PanNukeDataset(tmp_path)[1]
    np.save(p, images[..., :2])
    with pytest.raises(ReaderError, match="last of size 3"):
        PanNukeDataset(tmp_path)
    np.save(p, images)
    mp = d / "masks" / "fold1" / "masks.npy"
    m = np.load(mp)
    m[1, 0, 0, 2] = 1.5
    np.save(mp, m)
    ds = PanNukeDataset(tmp_path)
    ds[0]
    with pytest.raises(LabelMapError, match=r"masks.npy, sample 1, channel 2 \(Connective\).*non-integral"):
        ds[1]


def test_topology_policy(tmp_path):
    image, labels, types = make_truth(7)
    i = int(labels.max())
    labels = labels.copy()
    labels[-3:, -3:] = i  # a second piece of the last instance
    types = np.where(labels > 0, types, 0)
    types[-3:, -3:] = types[labels == i][0]
    _fold(tmp_path, [(image, labels, types)])
    with pytest.raises(LabelMapError, match=r"masks.npy, sample 0: .*split into several pieces.*fix_labels=True"):
        PanNukeDataset(tmp_path)[0]
    _, lab, typ = PanNukeDataset(tmp_path, fix_labels=True)[0]
    assert lab.max() == np.unique(labels).size  # the piece got its own id
    np.testing.assert_array_equal(typ, types)  # and kept its class
    _, lab2, _ = PanNukeDataset(tmp_path, check=False)[0]
    assert lab2.max() == np.unique(labels).size - 1


def test_real_pannuke():
    ds = PanNukeDataset(real_dir("INSMIX_PANNUKE_DIR"))
    for k in (0, len(ds) // 2, len(ds) - 1):
        check_real_sample(ds, k)
        assert ds.tissue(k)
