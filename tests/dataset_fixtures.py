"""Tiny fixtures of the public nuclei data-set layouts, written file by file as the
real downloads store them, plus checks that a read sample equals its truth.

Used by tests/test_data_*.py. A *truth* is ``(image, labels, types)``: labels with
ids 1..K, types 0 on background and the instance's class on its pixels.
"""

from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np
import pytest


def make_truth(seed: int, size: int = 40, n_classes: int = 5, n_max: int = 9):
    """A random tile: non-touching discs and boxes with random classes (ids 1..K in raster order)."""
    rng = np.random.default_rng(seed)
    image = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
    labels = np.zeros((size, size), np.int32)
    yy, xx = np.mgrid[:size, :size]
    k = 0
    cell = 13
    for cy in range(6, size - 6, cell):
        for cx in range(6, size - 6, cell):
            if k >= n_max or rng.random() < 0.2:
                continue
            k += 1
            r = rng.uniform(2.5, 5.5)
            if rng.random() < 0.5:
                m = (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r
            else:
                m = (abs(yy - cy) <= int(r)) & (abs(xx - cx) <= int(r) - 1)
            labels[m] = k
    classes = rng.integers(1, n_classes + 1, k + 1)
    classes[0] = 0
    types = np.where(labels > 0, classes[labels], 0).astype(np.int32)
    return image, labels, types


def scramble(labels: np.ndarray, seed: int, spread: int = 40) -> np.ndarray:
    """Same instances under other, non-contiguous ids in another order."""
    rng = np.random.default_rng(seed)
    ids = np.unique(labels)
    ids = ids[ids > 0]
    lut = np.zeros(int(labels.max()) + 1, np.int64)
    lut[ids] = rng.choice(np.arange(1, spread * (ids.size + 1)), ids.size, replace=False)
    return lut[labels]


def same_instances(a: np.ndarray, b: np.ndarray) -> bool:
    """True when ``b`` is ``a`` with its ids renamed one-to-one (0 stays 0)."""
    a = np.asarray(a, np.int64)
    b = np.asarray(b, np.int64)
    if a.shape != b.shape or not np.array_equal(a == 0, b == 0):
        return False
    pairs = np.unique(np.stack([a.ravel(), b.ravel()]), axis=1)
    return pairs.shape[1] == np.unique(a).size == np.unique(b).size


def assert_matches(sample, truth, typed: bool = True) -> None:
    """The read ``sample`` equals ``truth``: image exact, labels up to renumbering (ids 1..K), types exact."""
    image, labels, types = truth
    assert len(sample) == (3 if typed else 2)
    np.testing.assert_array_equal(sample[0], image)
    assert sample[0].dtype == np.uint8 and sample[1].dtype == np.int32
    assert same_instances(sample[1], labels)
    k = np.unique(sample[1]).size - 1
    assert sample[1].max() == k  # ids are 1..K
    if typed:
        assert sample[2].dtype == np.int32
        np.testing.assert_array_equal(sample[2], types)


def write_rgb(path: Path, image: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if image.ndim == 3 and image.shape[2] == 3:
        image = cv2.cvtColor(image, cv2.COLOR_RGB2BGR)
    elif image.ndim == 3 and image.shape[2] == 4:
        image = cv2.cvtColor(image, cv2.COLOR_RGBA2BGRA)
    assert cv2.imwrite(str(path), image)
    return path


def write_pannuke_fold(root: Path, fold: int, truths, tissues, seed: int = 0) -> Path:
    """``root/Fold N/{images,masks}/foldN/…`` as the official download (float64 arrays)."""
    d = root / f"Fold {fold}"
    (d / "images" / f"fold{fold}").mkdir(parents=True)
    (d / "masks" / f"fold{fold}").mkdir(parents=True)
    n = len(truths)
    h, w = truths[0][1].shape
    images = np.zeros((n, h, w, 3), np.float64)
    masks = np.zeros((n, h, w, 6), np.float64)
    for i, (image, labels, types) in enumerate(truths):
        images[i] = image
        for c in range(5):
            ch = np.where(types == c + 1, labels, 0)
            # ids restart in every channel, non-contiguous and shuffled
            masks[i, :, :, c] = scramble(ch, seed + 10 * i + c, spread=3) if ch.any() else 0
        masks[i, :, :, 5] = (labels == 0).astype(np.float64)
    np.save(d / "images" / f"fold{fold}" / "images.npy", images)
    np.save(d / "images" / f"fold{fold}" / "types.npy", np.asarray(tissues))
    np.save(d / "masks" / f"fold{fold}" / "masks.npy", masks)
    return d


def write_conic(root: Path, truths, dtype=np.int32, counts: bool = True, names: bool = True) -> Path:
    """``images.npy``, ``labels.npy`` (+ ``counts.csv``, ``patch_info.csv``) as CoNIC's release."""
    root.mkdir(parents=True, exist_ok=True)
    np.save(root / "images.npy", np.stack([t[0] for t in truths]))
    labels = np.stack([np.stack([scramble(t[1], i), t[2]], axis=-1) for i, t in enumerate(truths)])
    np.save(root / "labels.npy", labels.astype(dtype))
    if counts:
        rows = ["neutrophil,epithelial,lymphocyte,plasma,eosinophil,connective"]
        for _, lab, typ in truths:
            rows.append(",".join(str(np.unique(lab[typ == c]).size) for c in range(1, 7)))
        (root / "counts.csv").write_text("\n".join(rows) + "\n")
    if names:
        (root / "patch_info.csv").write_text("patch_info\n" + "".join(f"consep_1-{i:04d}\n" for i in range(len(truths))))
    return root


def savemat(path: Path, **arrays) -> Path:
    sio = pytest.importorskip("scipy.io")
    path.parent.mkdir(parents=True, exist_ok=True)
    sio.savemat(str(path), arrays)
    return path


def consep_mat(labels: np.ndarray, types: np.ndarray) -> dict:
    """CoNSeP's variables (MATLAB doubles): inst_map ids 1..N, inst_type row i = class of id i + 1."""
    n = int(labels.max())
    itype = np.zeros((n, 1))
    cent = np.zeros((n, 2))
    for i in range(1, n + 1):
        m = labels == i
        itype[i - 1, 0] = types[m][0]
        ys, xs = np.nonzero(m)
        cent[i - 1] = xs.mean(), ys.mean()
    return {"inst_map": labels.astype(np.float64), "type_map": types.astype(np.float64),
            "inst_type": itype, "inst_centroid": cent}


def write_hovernet_split(d: Path, truths, names, typed: bool = True, suffix: str = ".png") -> Path:
    """``d/Images/<name><suffix>`` + ``d/Labels/<name>.mat`` (CoNSeP when typed, else Kumar/CPM)."""
    for name, (image, labels, types) in zip(names, truths):
        write_rgb(d / "Images" / f"{name}{suffix}", image)
        arrays = consep_mat(labels, types) if typed else {"inst_map": labels.astype(np.float64)}
        savemat(d / "Labels" / f"{name}.mat", **arrays)
    return d


def lizard_mat(labels: np.ndarray, types: np.ndarray, seed: int) -> dict:
    """Lizard's variables: non-contiguous ids; id/class rows in another order than the ids."""
    inst = scramble(labels, seed)
    ids = np.unique(inst)[1:]
    rng = np.random.default_rng(seed)
    ids = ids[rng.permutation(ids.size)]
    cls = np.array([types[inst == i][0] for i in ids])
    bbox = np.array([[*np.nonzero(inst == i)[0][[0, -1]], 0, 0] for i in ids]).reshape(-1, 4)
    cent = np.zeros((ids.size, 2))
    return {"inst_map": inst.astype(np.int32), "id": ids.reshape(-1, 1).astype(np.int32),
            "class": cls.reshape(-1, 1).astype(np.int32), "bbox": bbox, "centroid": cent}


def write_lizard(root: Path, truths, names, splits=None) -> Path:
    """``Lizard_Images1/Lizard_Images1/*.png``, ``Lizard_Images2/…``, ``Lizard_Labels/Labels/*.mat`` (+ info.csv)."""
    for k, (name, (image, labels, types)) in enumerate(zip(names, truths)):
        part = 1 if k % 2 == 0 else 2
        write_rgb(root / f"Lizard_Images{part}" / f"Lizard_Images{part}" / f"{name}.png", image)
        savemat(root / "Lizard_Labels" / "Labels" / f"{name}.mat", **lizard_mat(labels, types, k))
    if splits is not None:
        rows = ["Filename,Source,Split"] + [f"{n},{n.split('_')[0]},{s}" for n, s in zip(names, splits)]
        (root / "Lizard_Labels" / "info.csv").write_text("\n".join(rows) + "\n")
    return root


def write_dsb(stage: Path, truths, names) -> Path:
    """``stage/<id>/images/<id>.png`` (RGBA) and one binary ``masks/<m>.png`` per nucleus."""
    for name, (image, labels, _) in zip(names, truths):
        rgba = np.dstack([image, np.full(image.shape[:2], 255, np.uint8)])
        write_rgb(stage / name / "images" / f"{name}.png", rgba)
        (stage / name / "masks").mkdir(parents=True)
        rng = np.random.default_rng(len(name))
        for i in np.unique(labels)[1:]:
            mask_name = "".join(rng.choice(list("0123456789abcdef"), 16))
            assert cv2.imwrite(str(stage / name / "masks" / f"{mask_name}.png"), (labels == i).astype(np.uint8) * 255)
    return stage


def write_nuinsseg_organ(d: Path, truths, names, vague=None) -> Path:
    """``d/tissue images/*.png``, ``d/label masks modify/*.tif`` (16-bit), ``d/vague areas/mask binary/*.png``."""
    (d / "label masks modify").mkdir(parents=True)
    for k, (name, (image, labels, _)) in enumerate(zip(names, truths)):
        write_rgb(d / "tissue images" / f"{name}.png", image)
        assert cv2.imwrite(str(d / "label masks modify" / f"{name}.tif"), scramble(labels, k).astype(np.uint16))
        if vague is not None and vague[k] is not None:
            (d / "vague areas" / "mask binary").mkdir(parents=True, exist_ok=True)
            assert cv2.imwrite(str(d / "vague areas" / "mask binary" / f"{name}.png"), vague[k].astype(np.uint8) * 255)
    return d


def _pixel_centre_outline(mask: np.ndarray) -> np.ndarray:
    """Outline through the centres of a mask's boundary pixels (Aperio/MoNuSeg convention)."""
    contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    return max(contours, key=len)[:, 0, :].astype(np.float64)


def monusac_xml(labels: np.ndarray, types: np.ndarray, class_names, extra: str = "", ambiguous=None) -> str:
    """A MoNuSAC-style Aperio XML: one ``Annotation`` layer per class present (class order),
    each nucleus a ``Region``; ``ambiguous`` (x0, y0, x1, y1) boxes in an ``Ambiguous`` layer;
    ``extra``: more ``<Annotation>`` elements appended."""

    def region(rid, pts):
        vs = "".join(f'<Vertex X="{x:g}" Y="{y:g}" Z="0"/>' for x, y in pts)
        return f'<Region Id="{rid}" Type="0" NegativeROI="0"><Attributes/><Vertices>{vs}</Vertices></Region>'

    def layer(aid, name, regions):
        return (f'<Annotation Id="{aid}" Name="" ReadOnly="0"><Attributes><Attribute Name="{name}" Id="0" '
                f'Value=""/></Attributes><Regions>{"".join(regions)}</Regions><Plots/></Annotation>')

    layers = []
    rid = 0
    for c in range(1, len(class_names)):
        regs = []
        for i in np.unique(labels[types == c]):
            rid += 1
            regs.append(region(rid, _pixel_centre_outline(labels == i)))
        if regs:
            layers.append(layer(len(layers) + 1, class_names[c], regs))
    if ambiguous:
        regs = [region(900 + k, [(x0, y0), (x1, y0), (x1, y1), (x0, y1)]) for k, (x0, y0, x1, y1) in enumerate(ambiguous)]
        layers.append(layer(len(layers) + 1, "Ambiguous", regs))
    return ('<?xml version="1.0"?>\n<Annotations MicronsPerPixel="0.25">' + "".join(layers) + extra
            + "</Annotations>\n")


def write_monusac(root: Path, patients: dict, class_names, suffix: str = ".tif", ambiguous=None) -> Path:
    """``root/<patient>/<patient>_<k>.tif`` (or ``.svs``: a plain TIFF) + ``.xml`` as MoNuSAC's download;
    ``patients``: name → list of truths; ``ambiguous``: (patient, k) → boxes of an Ambiguous layer."""
    import tifffile

    for patient, truths in patients.items():
        d = root / patient
        d.mkdir(parents=True, exist_ok=True)
        for k, (image, labels, types) in enumerate(truths):
            stem = f"{patient}_{k + 1:03d}"
            if suffix == ".svs":
                tifffile.imwrite(d / f"{stem}.svs", image, photometric="rgb")
            else:
                write_rgb(d / f"{stem}{suffix}", image)
            boxes = (ambiguous or {}).get((patient, k))
            (d / f"{stem}.xml").write_text(monusac_xml(labels, types, class_names, ambiguous=boxes))
    return root


def geojson_features(labels: np.ndarray, types: np.ndarray, class_names) -> list:
    """QuPath-style features, one Polygon per nucleus (pixel-edge outline), ``classification.name`` = its class."""
    from insmix_fast.wsi import mask_outline

    out = []
    for i in np.unique(labels)[1:]:
        ring = mask_outline(labels == i).astype(float).tolist()
        c = int(types[labels == i][0])
        out.append({"type": "Feature", "id": f"n{int(i)}",
                    "geometry": {"type": "Polygon", "coordinates": [ring + [ring[0]]]},
                    "properties": {"objectType": "annotation", "classification": {"name": class_names[c],
                                                                                 "color": [255, 0, 0]}}})
    return out


def write_puma(root: Path, truths, names, class_names, rgba: bool = True, side_by_side: bool = False,
               extra_features=None) -> Path:
    """PUMA's download: ``01_training_dataset_tif_ROIs/<name>.tif`` (RGBA) and
    ``01_training_dataset_geojson_nuclei/<name>_nuclei.geojson`` (or both in ``root``);
    ``extra_features``: name → features appended to that file."""
    import json

    img_dir = root if side_by_side else root / "01_training_dataset_tif_ROIs"
    geo_dir = root if side_by_side else root / "01_training_dataset_geojson_nuclei"
    geo_dir.mkdir(parents=True, exist_ok=True)
    for name, (image, labels, types) in zip(names, truths):
        im = np.concatenate([image, np.full(image.shape[:2] + (1,), 255, np.uint8)], 2) if rgba else image
        write_rgb(img_dir / f"{name}.tif", im)
        feats = geojson_features(labels, types, class_names) + list((extra_features or {}).get(name, []))
        (geo_dir / f"{name}_nuclei.geojson").write_text(json.dumps({"type": "FeatureCollection", "features": feats}))
    return root


def check_real_sample(ds, k: int) -> None:
    """What every sample of a real data set must satisfy (for the INSMIX_*_DIR tests)."""
    sample = ds[k]
    image, labels = sample[0], sample[1]
    assert image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3
    assert labels.dtype == np.int32 and labels.shape == image.shape[:2]
    assert labels.max() == np.unique(labels).size - 1
    if ds.typed:
        types = sample[2]
        assert len(sample) == 3 and types.shape == labels.shape
        assert not np.any(types[labels == 0]) and np.all(types[labels > 0] >= 1)
        assert types.max() < len(ds.class_names)
        for i in np.unique(labels)[1:]:
            assert np.unique(types[labels == i]).size == 1
    else:
        assert len(sample) == 2


def real_dir(var: str) -> Path:
    """The folder named by environment variable ``var``, or skip the test with the reason."""
    value = os.environ.get(var)
    if not value:
        pytest.skip(f"set {var} to the data set's folder to run this test on real data")
    return Path(value)
