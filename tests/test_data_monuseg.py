"""Tests of insmix_fast.data.monuseg on hand-written Aperio XML fixtures."""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import cv2
import numpy as np
import pytest

from insmix_fast.data import MoNuSegDataset, find_label_problems, open_dataset, read_monuseg
from insmix_fast.data.monuseg import read_aperio_xml
from insmix_fast.errors import ReaderError


def _region(rid, verts, negative=False) -> str:
    vs = "".join(f'<Vertex X="{x}" Y="{y}" Z="0"/>' for x, y in verts)
    return (
        f'<Region Id="{rid}" Type="0" Zoom="0.5" NegativeROI="{1 if negative else 0}" Analyze="1">'
        f"<Attributes/><Vertices>{vs}</Vertices></Region>"
    )


def _xml(regions: list[str]) -> str:
    return (
        '<?xml version="1.0"?>\n<Annotations MicronsPerPixel="0.252">'
        '<Annotation Id="1" Name="" ReadOnly="0" LineColor="65280" Visible="1">'
        '<Attributes><Attribute Name="Description" Id="0" Value=""/></Attributes>'
        '<Regions><RegionAttributeHeaders><AttributeHeader Id="9999" Name="Region" ColumnWidth="-1"/>'
        "</RegionAttributeHeaders>" + "".join(regions) + "</Regions><Plots/></Annotation></Annotations>\n"
    )


def _square(x0, y0, x1, y1):
    return [(x0, y0), (x1, y0), (x1, y1), (x0, y1)]


def _write(tmp_path: Path, regions: list[str], shape=(60, 70), stem="tile") -> tuple[Path, Path]:
    img = np.full((*shape, 3), 200, np.uint8)
    ip = tmp_path / f"{stem}.png"
    cv2.imwrite(str(ip), img)
    xp = tmp_path / f"{stem}.xml"
    xp.write_text(_xml(regions))
    return ip, xp


def test_square_area_and_region_order(tmp_path):
    ip, xp = _write(
        tmp_path,
        [
            _region(1, _square(40, 5, 50, 15)),
            _region(2, _square(10, 10, 20, 20)),
            _region(3, _square(10.6, 30.6, 19.4, 39.4)),
            _region(4, _square(30.4, 30.4, 39.6, 39.6)),
        ],
    )
    image, labels = read_monuseg(ip, xp)
    assert image.shape == (60, 70, 3) and labels.dtype == np.int32
    # pixel centres on the outline are inside: 11 × 11
    assert np.count_nonzero(labels == 2) == 121
    rr, cc = np.nonzero(labels == 2)
    assert (rr.min(), rr.max(), cc.min(), cc.max()) == (10, 20, 10, 20)
    # sub-pixel vertices: an axis-aligned edge covers the nearest pixel line
    assert np.count_nonzero(labels == 3) == 9 * 9  # 10.6..19.4 -> 11..19
    assert np.count_nonzero(labels == 4) == 11 * 11  # 30.4..39.6 -> 30..40
    # ids follow document order, not position
    assert labels[10, 45] == 1 and labels[15, 15] == 2 and labels[35, 15] == 3 and labels[35, 35] == 4
    assert labels.max() == 4
    assert find_label_problems(labels).ok


def test_touching_polygons_first_region_claims_shared_pixels(tmp_path):
    ip, xp = _write(tmp_path, [_region(1, _square(10, 10, 20, 20)), _region(2, _square(20, 10, 30, 20))])
    _, labels = read_monuseg(ip, xp)
    assert np.count_nonzero(labels == 1) == 121
    assert np.count_nonzero(labels == 2) == 110  # column 20 went to region 1
    assert (labels[10:21, 20] == 1).all() and (labels[10:21, 21] == 2).all()
    assert find_label_problems(labels).ok


def test_overlap_that_splits_keeps_largest_piece_and_drops_empty(tmp_path):
    regions = [
        _region(1, _square(20, 0, 24, 40)),  # vertical bar, first
        _region(2, _square(0, 18, 40, 22)),  # horizontal bar, cut in two by region 1
        _region(3, _square(21, 5, 23, 8)),  # fully inside region 1 -> no pixel -> dropped
        _region(4, _square(50, 50, 55, 55)),
    ]
    ip, xp = _write(tmp_path, regions)
    _, labels = read_monuseg(ip, xp)
    # left piece: columns 0..19 (20) × rows 18..22 (5) = 100 px; right piece 25..40 = 80 px is dropped
    assert np.count_nonzero(labels == 2) == 100
    assert labels[20, 30] == 0 and labels[20, 5] == 2
    # region 3 vanished; region 4 becomes id 3
    assert labels.max() == 3 and labels[52, 52] == 3
    assert np.count_nonzero(labels == 1) == 5 * 41
    assert find_label_problems(labels).ok


def test_negative_roi_carves_a_hole(tmp_path):
    regions = [_region(1, _square(10, 10, 40, 40)), _region(2, _square(20, 20, 30, 30), negative=True), _region(3, _square(50, 5, 60, 15))]
    ip, xp = _write(tmp_path, regions)
    _, labels = read_monuseg(ip, xp)
    assert labels[25, 25] == 0 and labels[15, 15] == 1
    assert np.count_nonzero(labels == 1) == 31 * 31 - 11 * 11
    assert labels[10, 55] == 2  # the negative region takes no id
    assert labels.max() == 2
    # a hole drawn on purpose is reported by the topology check
    assert find_label_problems(labels).hole_ids.tolist() == [1]


def test_negative_roi_that_cuts_a_nucleus_keeps_largest_piece(tmp_path):
    regions = [_region(1, _square(10, 10, 40, 20)), _region(2, _square(20, 0, 22, 30), negative=True)]
    ip, xp = _write(tmp_path, regions)
    _, labels = read_monuseg(ip, xp)
    assert labels[15, 15] == 0  # left piece (10 columns) dropped
    assert np.count_nonzero(labels == 1) == 18 * 11  # columns 23..40
    assert find_label_problems(labels).ok


def test_vertices_outside_image_are_clipped(tmp_path):
    regions = [
        _region(1, _square(-10, -10, 10, 10)),
        _region(2, [(60, 40), (1e9, 40), (60, 50)]),  # huge coordinate
        _region(3, _square(100, 100, 120, 120)),  # entirely outside -> empty, dropped
    ]
    ip, xp = _write(tmp_path, regions, shape=(60, 70))
    _, labels = read_monuseg(ip, xp)
    assert np.count_nonzero(labels == 1) == 121  # rows 0..10 × cols 0..10
    assert labels[0, 0] == 1 and labels[11, 5] == 0
    assert labels[40, 69] == 2 and labels[45, 69] == 2
    assert labels.max() == 2


@pytest.mark.parametrize(
    "bad, reason",
    [
        (_region(7, [(1, 1), (5, 5)]), "2 vertices"),
        (_region(7, [(1, 1), (5, 5), (9, 9)]), "zero polygon area"),
        (_region(7, [(1, 1), ("nan", 5), (9, 1)]), "NaN"),
        (_region(7, [(1, 1), ("abc", 5), (9, 1)]), "non-numeric"),
    ],
)
def test_degenerate_region_raises_naming_file_and_id(tmp_path, bad, reason):
    ip, xp = _write(tmp_path, [_region(1, _square(10, 10, 20, 20)), bad])
    with pytest.raises(ReaderError) as exc:
        read_monuseg(ip, xp)
    msg = str(exc.value)
    assert "tile.xml" in msg and "Id=7" in msg and reason in msg


def test_degenerate_regions_skipped_with_warning(tmp_path):
    regions = [
        _region(1, [(1, 1), (5, 5)]),
        _region(2, _square(10, 10, 20, 20)),
        _region(3, [(1, 1), (5, 5), (9, 9)]),
        _region(4, [(1, 1), ("nan", 5), (9, 1)]),
    ]
    ip, xp = _write(tmp_path, regions)
    with pytest.warns(UserWarning, match="skipped 3 degenerate"):
        _, labels = read_monuseg(ip, xp, degenerate="skip")
    assert labels.max() == 1 and np.count_nonzero(labels) == 121


def test_broken_xml_and_missing_file(tmp_path):
    ip, xp = _write(tmp_path, [])
    xp.write_text("<Annotations><Annotation><Regions>")
    with pytest.raises(ReaderError, match="tile.xml.*does not parse"):
        read_monuseg(ip, xp)
    with pytest.raises(ReaderError, match="missing.xml"):
        read_monuseg(ip, tmp_path / "missing.xml")
    with pytest.raises(ValueError):
        read_monuseg(ip, xp, degenerate="ignore")


def test_empty_annotation_gives_zero_map(tmp_path):
    ip, xp = _write(tmp_path, [])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        image, labels = read_monuseg(ip, xp)
    assert labels.shape == image.shape[:2] and not labels.any()


def test_self_intersecting_outline_passes_topology(tmp_path):
    bowtie = [(10, 10), (30, 30), (30, 10), (10, 30)]
    star = [(40 + 10 * np.cos(a), 30 + 10 * np.sin(a)) for a in np.arange(5) * 4 * np.pi / 5]
    labels = read_aperio_xml(_write(tmp_path, [_region(1, bowtie), _region(2, star)])[1], (60, 70))
    assert find_label_problems(labels).ok
    assert labels[30, 40] == 2  # the star's centre (an even-odd "hole") is filled
    assert set(np.unique(labels).tolist()) == {0, 1, 2}


def test_roundtrip_synthetic_contours_reproduce_labels(tmp_path):
    """Outlines traced through boundary pixel centres rasterise back to the same map."""
    from insmix_fast.data import SyntheticNuclei

    _, lab = SyntheticNuclei(seed=1, size=160, length=1, touching=0.5)[0]
    regions = []
    for i in range(1, int(lab.max()) + 1):
        contours, _ = cv2.findContours((lab == i).astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
        c = max(contours, key=len)[:, 0, :]
        regions.append(_region(i, [(float(x), float(y)) for x, y in c]))
    xp = tmp_path / "rt.xml"
    xp.write_text(_xml(regions))
    out = read_aperio_xml(xp, lab.shape)
    assert lab.max() > 10 and np.count_nonzero((lab[1:] != lab[:-1]) & (lab[1:] > 0) & (lab[:-1] > 0)) > 0
    np.testing.assert_array_equal(out, lab)


def _make_folder(root: Path, img_dir: str, xml_dir: str, stems=("b", "a")) -> None:
    (root / img_dir).mkdir(parents=True, exist_ok=True)
    (root / xml_dir).mkdir(parents=True, exist_ok=True)
    for k, s in enumerate(stems):
        cv2.imwrite(str(root / img_dir / f"{s}.tif"), np.full((40, 40, 3), 100 + k, np.uint8))
        (root / xml_dir / f"{s}.xml").write_text(_xml([_region(1, _square(5, 5, 10 + k, 10))]))


@pytest.mark.parametrize("img_dir, xml_dir", [("Tissue Images", "Annotations"), ("images", "annotations"), (".", ".")])
def test_dataset_layouts(tmp_path, img_dir, xml_dir):
    root = tmp_path / "MoNuSeg"
    _make_folder(root, img_dir, xml_dir)
    ds = MoNuSegDataset(root)
    assert ds.names == ["a", "b"] and len(ds) == 2
    image, labels = ds[0]
    assert image.shape == (40, 40, 3) and np.count_nonzero(labels) == 7 * 6  # "a" has the wider square
    assert np.count_nonzero(ds[-1][1]) == 6 * 6
    assert image[0, 0, 0] == 101
    with pytest.raises(IndexError):
        ds[2]
    assert isinstance(open_dataset(root), MoNuSegDataset)


def test_dataset_missing_annotation_and_bad_root(tmp_path):
    root = tmp_path / "m"
    _make_folder(root, "Tissue Images", "Annotations")
    (root / "Annotations" / "a.xml").unlink()
    with pytest.raises(ReaderError, match="a.tif"):
        MoNuSegDataset(root)
    with pytest.raises(ReaderError, match="not a MoNuSeg folder"):
        MoNuSegDataset(tmp_path / "elsewhere")


_REAL = os.environ.get("INSMIX_MONUSEG_DIR")


@pytest.mark.skipif(not _REAL, reason="set INSMIX_MONUSEG_DIR to a MoNuSeg folder to run this test")
def test_real_monuseg_folder():
    ds = MoNuSegDataset(_REAL)
    assert len(ds) > 0
    for name, (image, labels) in zip(ds.names, ds):
        assert image.ndim == 3 and image.shape[2] == 3 and labels.shape == image.shape[:2]
        p = find_label_problems(labels)
        assert p.ok, f"{name}: {p.describe()}"
        assert labels.max() > 100, f"{name}: only {labels.max()} instances"
