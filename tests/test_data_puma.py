"""PUMA / QuPath GeoJSON tiles: ``*.tif`` ROIs + ``*_nuclei.geojson`` polygons with ``classification.name``."""

from __future__ import annotations

import json
import logging
import warnings

import numpy as np
import pytest

from dataset_fixtures import assert_matches, check_real_sample, make_truth, real_dir, write_puma
from insmix_fast.data import LAYOUTS, PUMA_CLASSES, PUMA_TRACK1_CLASSES, PumaDataset, open_dataset
from insmix_fast.errors import LabelMapError, ReaderError

NAMES = ("training_set_metastatic_roi_001", "training_set_primary_roi_002")


@pytest.fixture
def truths():
    return [make_truth(11, 40, 10), make_truth(12, 44, 10)]


def _feature(ring, name=None, kind="Polygon"):
    props = {"objectType": "annotation"}
    if name is not None:
        props["classification"] = {"name": name, "color": [0, 0, 255]}
    coords = [ring] if kind == "Polygon" else ring
    return {"type": "Feature", "geometry": {"type": kind, "coordinates": coords}, "properties": props}


def test_reads_the_download_layout(tmp_path, truths):
    root = write_puma(tmp_path / "puma", truths, NAMES, PUMA_CLASSES)
    ds = PumaDataset(root)
    assert ds.class_names == PUMA_CLASSES and ds.names == sorted(NAMES) and len(ds) == 2
    for k, name in enumerate(sorted(NAMES)):
        assert_matches(ds[k], truths[NAMES.index(name)])  # RGBA tif → RGB; every pixel and class exact


def test_side_by_side_and_open_dataset(tmp_path, truths, caplog):
    root = write_puma(tmp_path / "flat", truths, NAMES, PUMA_CLASSES, rgba=False, side_by_side=True)
    with caplog.at_level(logging.INFO, logger="insmix_fast"):
        ds = open_dataset(root)
    assert isinstance(ds, PumaDataset) and "PUMA" in caplog.text
    assert isinstance(open_dataset(write_puma(tmp_path / "dl", truths, NAMES, PUMA_CLASSES)), PumaDataset)
    names = [n for n, *_ in LAYOUTS]
    assert names.index("PUMA / GeoJSON tiles") < names.index("images/labels folder")


def test_track1_merge(tmp_path, truths):
    root = write_puma(tmp_path / "p", truths, NAMES, PUMA_CLASSES)
    ds = PumaDataset(root, merge=True)
    assert ds.class_names == PUMA_TRACK1_CLASSES
    _, labels, types = truths[NAMES.index(ds.names[0])]
    want = np.array([0, 1, 2, 2, 3, 3, 3, 3, 3, 3, 3])[types]
    got = ds[0]
    np.testing.assert_array_equal(got[2], want)
    with pytest.raises(ReaderError, match="merge"):
        PumaDataset(root, merge=True, class_names=("background", "x"))


def test_overlaps_multipolygons_and_pixel_edges(tmp_path):
    """First polygon keeps shared pixels; a MultiPolygon's parts are one nucleus (here they touch: disjoint
    parts keep the largest, as a nucleus cut in pieces); pixel (r, c) covers [c, c+1) × [r, r+1)."""
    d = tmp_path / "t"
    d.mkdir()
    from dataset_fixtures import write_rgb

    write_rgb(d / "a.tif", np.full((20, 20, 3), 180, np.uint8))
    feats = [_feature([[2, 2], [8, 2], [8, 8], [2, 8], [2, 2]], "nuclei_tumor"),
             _feature([[6, 2], [12, 2], [12, 8], [6, 8], [6, 2]], "nuclei_lymphocyte"),
             _feature([[[[14, 14], [16, 14], [16, 16], [14, 16]]], [[[16, 14], [18, 14], [18, 16], [16, 16]]]],
                      "nuclei_stroma", "MultiPolygon")]
    (d / "a_nuclei.geojson").write_text(json.dumps({"type": "FeatureCollection", "features": feats}))
    _, labels, types = PumaDataset(d)[0]
    assert (labels == 1).sum() == 36 and labels[2:8, 2:8].min() == 1  # rows/cols 2..7
    assert (labels == 2).sum() == 24 and (labels[2:8, 8:12] == 2).all()
    assert (labels == 3).sum() == 8 and types[labels == 3].min() == PUMA_CLASSES.index("nuclei_stroma")
    assert (types[labels == 2] == 2).all() and (types[labels == 1] == 1).all()


def test_unknown_and_unclassified_nuclei(tmp_path, truths):
    extra = {NAMES[0]: [_feature([[30, 30], [36, 30], [36, 36], [30, 36], [30, 30]], "nuclei_mitosis"),
                        _feature([[1, 30], [4, 30], [4, 34], [1, 34], [1, 30]])]}
    root = write_puma(tmp_path / "p", truths, NAMES, PUMA_CLASSES, extra_features=extra)
    ds = PumaDataset(root)
    k = ds.names.index(NAMES[0])
    with pytest.raises(LabelMapError, match=rf"{NAMES[0]}_nuclei\.geojson \(sample {k}.*'nuclei_mitosis'.*"
                                            r"'Unclassified'.*Known: nuclei_tumor"):
        ds[k]
    with pytest.warns(UserWarning, match="left out 2 nucleus polygon"):
        sample = PumaDataset(root, unknown="skip")[k]
    assert_matches(sample, truths[0])
    own = PUMA_CLASSES + ("nuclei_mitosis", "Unclassified")
    got = PumaDataset(root, class_names=own)[k]
    assert (got[2] == 11).sum() == 36 and (got[2] == 12).sum() > 0


def test_missing_files_and_bad_features(tmp_path, truths):
    root = write_puma(tmp_path / "p", truths, NAMES, PUMA_CLASSES)
    geo = root / "01_training_dataset_geojson_nuclei"
    (geo / f"{NAMES[1]}_nuclei.geojson").unlink()
    with pytest.raises(ReaderError, match=rf"count mismatch \(2 images, 1 .*{NAMES[1]}\.tif"):
        PumaDataset(root)
    bad = {NAMES[0]: [_feature([[1, 1], [5, 5], [9, 9], [1, 1]], "nuclei_tumor")]}  # zero area
    root = write_puma(tmp_path / "q", truths, NAMES, PUMA_CLASSES, extra_features=bad)
    ds = PumaDataset(root)
    k = ds.names.index(NAMES[0])
    with pytest.raises(ReaderError, match=rf"{NAMES[0]}_nuclei\.geojson.*sample {k}.*feature"):
        ds[k]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert_matches(PumaDataset(root, on_error="skip")[k], truths[0])
    with pytest.raises(ReaderError, match="not a PUMA"):
        PumaDataset(tmp_path / "none")


def test_a_nucleus_with_a_hole_follows_the_topology_policy(tmp_path):
    d = tmp_path / "h"
    d.mkdir()
    from dataset_fixtures import write_rgb

    write_rgb(d / "a.tif", np.full((20, 20, 3), 180, np.uint8))
    ring = {"type": "Feature", "properties": {"classification": {"name": "nuclei_tumor"}},
            "geometry": {"type": "Polygon", "coordinates": [[[2, 2], [12, 2], [12, 12], [2, 12], [2, 2]],
                                                            [[5, 5], [8, 5], [8, 8], [5, 8], [5, 5]]]}}
    (d / "a_nuclei.geojson").write_text(json.dumps({"type": "FeatureCollection", "features": [ring]}))
    with pytest.raises(LabelMapError, match=r"a_nuclei\.geojson \(sample 0.*hole"):
        PumaDataset(d)[0]
    _, labels, types = PumaDataset(d, fix_labels=True)[0]
    assert (labels == 1).sum() == 100 and (types == 1).sum() == 100


def test_real_puma_folder():
    ds = PumaDataset(real_dir("INSMIX_PUMA_DIR"))
    for k in range(min(len(ds), 3)):
        check_real_sample(ds, k)
