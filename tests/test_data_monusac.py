"""MoNuSAC: per-patient folders of image + Aperio XML whose annotation layers are classes."""

from __future__ import annotations

import logging
import warnings

import numpy as np
import pytest

from dataset_fixtures import assert_matches, make_truth, monusac_xml, real_dir, check_real_sample, write_monusac
from insmix_fast.data import LAYOUTS, MONUSAC_CLASSES, MoNuSACDataset, MoNuSegDataset, open_dataset
from insmix_fast.data.monuseg import read_aperio_xml, read_aperio_xml_typed
from insmix_fast.errors import LabelMapError, ReaderError

PATIENTS = ("TCGA-55-1594-01Z-00-DX1", "TCGA-5P-A9K0-01Z-00-DX1")


@pytest.fixture
def truths():
    return {PATIENTS[0]: [make_truth(1, 40, 4), make_truth(2, 40, 4)], PATIENTS[1]: [make_truth(3, 48, 4)]}


def test_reads_every_patient_with_classes(tmp_path, truths):
    root = write_monusac(tmp_path / "MoNuSAC_images_and_annotations", truths, MONUSAC_CLASSES)
    ds = MoNuSACDataset(root)
    assert ds.class_names == MONUSAC_CLASSES and ds.typed and len(ds) == 3
    assert ds.names == [f"{PATIENTS[0]}_001", f"{PATIENTS[0]}_002", f"{PATIENTS[1]}_001"]
    assert ds.patient(2) == PATIENTS[1] and ds.patient(-3) == PATIENTS[0]
    flat = truths[PATIENTS[0]] + truths[PATIENTS[1]]
    for k in range(3):
        assert_matches(ds[k], flat[k])
        assert not ds.ignore_mask(k).any()
    assert set(np.unique(ds[0][2])) > {0}
    one = MoNuSACDataset(root, patients=PATIENTS[1])
    assert len(one) == 1 and one.names == [f"{PATIENTS[1]}_001"]
    with pytest.raises(ReaderError, match="patient"):
        MoNuSACDataset(root, patients="TCGA-nope")


def test_svs_images_and_one_patient_folder(tmp_path, truths):
    pytest.importorskip("tifffile")
    root = write_monusac(tmp_path / "m", {PATIENTS[1]: truths[PATIENTS[1]]}, MONUSAC_CLASSES, suffix=".svs")
    ds = MoNuSACDataset(root / PATIENTS[1])  # the patient folder itself
    assert ds.patient(0) is None and ds.image_paths[0].suffix == ".svs"
    assert_matches(ds[0], truths[PATIENTS[1]][0])


def test_open_dataset_finds_monusac_not_monuseg(tmp_path, truths, caplog):
    root = write_monusac(tmp_path / "m", truths, MONUSAC_CLASSES)
    with caplog.at_level(logging.INFO, logger="insmix_fast"):
        ds = open_dataset(root)
    assert isinstance(ds, MoNuSACDataset) and "MoNuSAC layout" in caplog.text
    assert isinstance(open_dataset(root / PATIENTS[0]), MoNuSACDataset)
    names = [n for n, *_ in LAYOUTS]
    assert names.index("MoNuSAC") < names.index("images/labels folder") < names.index("MoNuSeg")
    # MoNuSeg's side-by-side test folder: its single layer is the unnamed "Description" one
    seg = tmp_path / "monuseg"
    seg.mkdir()
    image, labels, _ = make_truth(4, 40, 1)
    from dataset_fixtures import write_rgb

    write_rgb(seg / "TCGA-X.tif", image)
    (seg / "TCGA-X.xml").write_text(monusac_xml(labels, (labels > 0).astype(np.int32), ("background", "Description")))
    assert isinstance(open_dataset(seg), MoNuSegDataset)


def test_ambiguous_areas_are_the_ignore_mask(tmp_path, truths):
    image, labels, types = truths[PATIENTS[0]][0]
    root = write_monusac(tmp_path / "m", {PATIENTS[0]: [(image, labels, types)]}, MONUSAC_CLASSES,
                         ambiguous={(PATIENTS[0], 0): [(0, 0, 12, 12)]})
    ds = MoNuSACDataset(root)
    assert_matches(ds[0], (image, labels, types))  # ambiguous areas are no nuclei
    ign = ds.ignore_mask(0)
    assert ign.dtype == bool and ign[:13, :13].all() and ign.sum() == 13 * 13
    fresh = MoNuSACDataset(root)
    np.testing.assert_array_equal(fresh.ignore_mask(0), ign)  # before any read
    from insmix_fast.bank import InstanceBank

    plain = InstanceBank.from_samples([ds[0]], progress=False, class_names=MONUSAC_CLASSES)
    masked = InstanceBank.from_samples(ds, progress=False)  # takes ds.ignore_mask
    inside = [i for i in np.unique(labels[1:12, 1:12]) if i and not (labels[0] == i).any() and
              not (labels[:, 0] == i).any() and (labels == i).sum() >= 10]
    assert inside, "fixture: a nucleus inside the ambiguous box"
    assert masked.class_names == MONUSAC_CLASSES and 0 < len(masked) <= len(plain) - len(inside)


def _layer(aid: int, name: str, rid: int, verts) -> str:
    """An <Annotation> layer named ``name`` with one region of these (x, y) vertices."""
    vs = "".join(f'<Vertex X="{x}" Y="{y}"/>' for x, y in verts)
    return (f'<Annotation Id="{aid}"><Attributes><Attribute Name="{name}"/></Attributes><Regions>'
            f'<Region Id="{rid}"><Vertices>{vs}</Vertices></Region></Regions></Annotation>')


def _with_extra_layer(tmp_path, truth, extra: str):
    """One patient, one sample, whose XML gets the ``extra`` <Annotation> elements appended."""
    root = write_monusac(tmp_path / "m", {PATIENTS[0]: [truth]}, MONUSAC_CLASSES)
    (root / PATIENTS[0] / f"{PATIENTS[0]}_001.xml").write_text(monusac_xml(*truth[1:], MONUSAC_CLASSES, extra=extra))
    return root


def test_unknown_layer_raises_or_is_skipped(tmp_path, truths):
    image, labels, types = truths[PATIENTS[0]][0]
    root = _with_extra_layer(tmp_path, (image, labels, types), _layer(7, "Eosinophil", 77, [(30, 30), (36, 30), (36, 36)]))
    ds = MoNuSACDataset(root)
    with pytest.raises(LabelMapError, match=r"_001\.xml.*sample 0.*Annotation Id=7.*'Eosinophil'.*Id 77.*Epithelial"):
        ds[0]
    with pytest.warns(UserWarning, match="Eosinophil"):
        sample = MoNuSACDataset(root, unknown="skip")[0]
    assert_matches(sample, (image, labels, types))
    # a class added by name reads it
    names = MONUSAC_CLASSES + ("Eosinophil",)
    got = MoNuSACDataset(root, class_names=names)[0]
    assert (got[2] == 5).sum() > 0


def test_missing_files_name_them(tmp_path, truths):
    root = write_monusac(tmp_path / "m", truths, MONUSAC_CLASSES)
    (root / PATIENTS[0] / f"{PATIENTS[0]}_002.tif").unlink()
    with pytest.raises(ReaderError, match=r"count mismatch.*no image.*_002\.xml"):
        MoNuSACDataset(root)
    (root / PATIENTS[0] / f"{PATIENTS[0]}_002.xml").unlink()
    (root / PATIENTS[0] / f"{PATIENTS[0]}_001.xml").unlink()
    (root / PATIENTS[0] / "stray.tif").write_bytes((root / PATIENTS[1] / f"{PATIENTS[1]}_001.tif").read_bytes())
    with pytest.raises(ReaderError, match="no XML annotation"):
        MoNuSACDataset(root)
    with pytest.raises(ReaderError, match="not a MoNuSAC folder"):
        MoNuSACDataset(tmp_path / "nowhere")


def test_degenerate_regions_follow_the_policy(tmp_path, truths):
    image, labels, types = truths[PATIENTS[0]][0]
    root = _with_extra_layer(tmp_path, (image, labels, types), _layer(9, "Lymphocyte", 99, [(1, 1), (2, 2)]))
    with pytest.raises(ReaderError, match="Id=99 is degenerate"):
        MoNuSACDataset(root)[0]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert_matches(MoNuSACDataset(root, degenerate="skip")[0], (image, labels, types))


def test_typed_xml_keeps_the_untyped_rules(tmp_path):
    """Labels of the typed reader are exactly the untyped reader's, overlaps and all; each id has its layer's class."""
    from insmix_fast.data import SyntheticNuclei

    _, lab, typ = SyntheticNuclei(seed=4, size=96, length=1, n_classes=4, touching=0.6)[0]
    xml = tmp_path / "t.xml"
    xml.write_text(monusac_xml(lab, typ, MONUSAC_CLASSES))
    t = read_aperio_xml_typed(xml, lab.shape, MONUSAC_CLASSES)
    np.testing.assert_array_equal(t.labels, read_aperio_xml(xml, lab.shape))
    assert_matches((np.zeros((96, 96, 3), np.uint8), t.labels, t.types), (np.zeros((96, 96, 3), np.uint8), lab, typ))


def test_real_monusac_folder():
    ds = MoNuSACDataset(real_dir("INSMIX_MONUSAC_DIR"))
    for k in range(min(len(ds), 3)):
        check_real_sample(ds, k)
