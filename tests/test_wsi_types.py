"""Typed whole-slide patches: one class table shared by all slides, classes matched by name."""

from __future__ import annotations

import json

import numpy as np
import pytest

pytest.importorskip("tifffile")

from insmix_fast.errors import ConfigError, LabelMapError  # noqa: E402
from insmix_fast.wsi import (  # noqa: E402
    WSIPatchSource,
    build_bank_from_slides,
    read_geojson,
    shared_class_table,
    write_synthetic_slide,
)

KW = dict(patch=128, mpp=0.5, patches_per_epoch=6, seed=3, progress=False, min_tissue=0.0, tissue_mpp=2.0)


def _classify(geojson, names, seed):
    """Give every feature of a GeoJSON file a class drawn from ``names`` (in the file, first appearance
    decides its class ids)."""
    doc = json.loads(geojson.read_text())
    rng = np.random.default_rng(seed)
    for k, f in enumerate(doc["features"]):
        name = names[0] if k == 0 else str(rng.choice(names))
        f["properties"] = {"objectType": "detection", "classification": {"name": name}}
    geojson.write_text(json.dumps(doc))
    return geojson


@pytest.fixture(scope="module")
def slides(tmp_path_factory):
    d = tmp_path_factory.mktemp("typed_wsi")
    out = []
    for k, names in enumerate((["Tumor", "Lymphocyte"], ["Stroma", "Tumor"])):
        info = write_synthetic_slide(d / f"s{k}.tif", 1024, mpp=0.25, seed=(3, 10)[k], gen_tile=256, unique_tiles=2,
                                     compression="deflate")
        out.append((info.path, _classify(info.geojson, names, k)))
    return out


def test_patches_carry_shared_classes(slides):
    paths, geos = zip(*slides)
    src = WSIPatchSource(list(paths), list(geos), **{**KW, "patches_per_epoch": 16})
    assert src.typed and src.class_names == ("background", "Tumor", "Lymphocyte", "Stroma")
    assert {int(v) for v in src.coords[:, 0]} == {0, 1}
    files = [read_geojson(g) for g in geos]
    assert files[1].class_names == ("background", "Stroma", "Tumor")  # numbered its own way
    seen = set()
    for i in range(len(src)):
        image, labels, types = src[i]
        assert types.dtype == np.int32 and types.shape == labels.shape
        assert ((types > 0) == (labels > 0)).all()
        s, x, y = (int(v) for v in src.coords[i])
        lab_f, typ_f = files[s].rasterize(x, y, labels.shape, src.mpp / src.slides[s].mpp, with_types=True)
        np.testing.assert_array_equal(lab_f, labels)
        names_f = np.array(files[s].class_names, object)[typ_f[labels > 0]]
        names_src = np.array(src.class_names, object)[types[labels > 0]]
        assert (names_f == names_src).all()
        seen |= set(names_src.tolist())
    assert seen == {"Tumor", "Lymphocyte", "Stroma"}


def test_fixed_table_untyped_and_mixed(slides):
    paths, geos = zip(*slides)
    table = ("background", "Lymphocyte", "Stroma", "Tumor", "Necrosis")
    src = WSIPatchSource(list(paths), list(geos), class_names=table, **KW)
    assert src.class_names == table and int(max(src[i][2].max() for i in range(len(src)))) <= 3
    with pytest.raises(LabelMapError, match=r"s1\.tif: class 'Stroma' .*not in class_names"):
        WSIPatchSource(list(paths), list(geos), class_names=("background", "Tumor", "Lymphocyte"), **KW)
    plain = WSIPatchSource(list(paths), list(geos), with_types=False, **KW)
    assert plain.class_names is None and len(plain[0]) == 2
    np.testing.assert_array_equal(plain[0][1], src[0][1])
    untyped = read_geojson(geos[0]).subset(np.arange(5))
    untyped = type(untyped)(untyped.points, untyped.ring_offsets, untyped.poly_offsets, source="plain")
    with pytest.raises(ConfigError, match="carry no classes while those of other slides do"):
        WSIPatchSource(list(paths), [untyped, geos[1]], **KW)
    with pytest.raises(ConfigError, match="no slide's annotations carry classes"):
        shared_class_table([untyped, None], with_types=True)
    names, luts = shared_class_table([None, read_geojson(geos[1])])
    assert names == ("background", "Stroma", "Tumor") and luts[0] is None and list(luts[1]) == [0, 1, 2]


def test_unannotated_slide_gives_empty_type_maps(slides):
    paths, geos = zip(*slides)
    src = WSIPatchSource(list(paths), [geos[0], None], **{**KW, "patches_per_epoch": 12})
    assert src.typed
    empty = [src[i] for i in range(len(src)) if int(src.coords[i][0]) == 1]
    assert empty and all(len(s) == 3 and not s[1].any() and not s[2].any() for s in empty)


def test_bank_from_typed_slides_shares_the_table(slides):
    paths, geos = zip(*slides)
    bank = build_bank_from_slides(list(paths), list(geos), patch=256, margin=48, progress=False)
    src = WSIPatchSource(list(paths), list(geos), **KW)
    assert bank.typed and bank.class_names == src.class_names
    counts = bank.class_counts()
    assert (counts[1:] > 0).all() and counts.sum() == len(bank)
    plain = build_bank_from_slides(list(paths), list(geos), patch=256, margin=48, progress=False, with_types=False)
    assert not plain.typed and len(plain) == len(bank)
    # a typed source and its bank work with InsMix: pasted nuclei keep their class
    from insmix_fast.config import InsMixConfig
    from insmix_fast.core import insmix

    image, labels, types = src[0]
    r = insmix(image, labels, bank, InsMixConfig(p_paste=1.0, template_class="balanced"), seed=0, types=types)
    assert ((r.types > 0) == (r.labels > 0)).all() and r.types.max() <= len(bank.class_names) - 1
