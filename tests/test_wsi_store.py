"""Annotation stores (issue 17): streaming conversion, cache, concurrency, bad input, types,
the ``wsi index`` CLI — and the polygon rules shared with the MoNuSeg XML reader (issue 15)."""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import pickle
import re
import time

import cv2
import numpy as np
import pytest

from insmix_fast.data.polygons import (ABSURD, MAX_COORD, NON_FINITE, OK, TOO_FEW, ZERO_AREA, clip_polygon,
                                       describe_problem, ring_problem)
from insmix_fast.errors import InputError, ReaderError
from insmix_fast.wsi import store as store_mod
from insmix_fast.wsi.annotations import Annotations, load_annotations, read_geojson, read_hovernet_json
from insmix_fast.wsi.jsonscan import scan_annotations
from insmix_fast.wsi.spatial import GridIndex
from insmix_fast.wsi.store import STORE_SUFFIX, check_store, find_store, read_store, store_locations


# ----------------------------------------------------------------------------- fixtures
def _blob(rng, cx, cy, r, k=9):
    ang = np.sort(rng.uniform(0, 2 * np.pi, k))
    rad = rng.uniform(0.6 * r, r, k)
    return np.stack([cx + rad * np.cos(ang), cy + rad * np.sin(ang)], 1).round(2)


def _closed(ring):
    ring = np.asarray(ring, float).tolist()
    return ring + [ring[0]]


def _features(n=300, seed=0):
    """QuPath-like features: classes (incl. unclassified and an escaped unicode name), holes,
    MultiPolygons, cells with nucleusGeometry, nested measurements, a Point (ignored)."""
    rng = np.random.default_rng(seed)
    classes = [{"name": "Tumor", "color": [200, 0, 0]}, {"name": "Lymph\u00f6cyte", "colorRGB": -1}, None, "Stroma"]
    feats = []
    for i in range(n):
        cx, cy = rng.uniform(0, 3000, 2)
        outer = _blob(rng, cx, cy, 12)
        kind = i % 5
        if kind == 1:  # a hole
            geom = {"type": "Polygon", "coordinates": [_closed(outer), _closed(_blob(rng, cx, cy, 3)[::-1])]}
        elif kind == 2:  # MultiPolygon: two parts of one nucleus
            geom = {"type": "MultiPolygon", "coordinates": [[_closed(outer)], [_closed(_blob(rng, cx + 40, cy, 5))]]}
        else:
            geom = {"coordinates": [_closed(outer)], "type": "Polygon"}  # keys in either order
        cl = classes[i % 4]
        props = {"objectType": "detection", "measurements": {"Area": float(i), "nested": [{"a": [1, 2, {"b": None}]}]},
                 "isLocked": False, "note": "a \"quoted\" \\ string"}
        if cl is not None:
            props["classification"] = cl
        ft = {"type": "Feature", "id": f"id-{i}", "geometry": geom, "properties": props}
        if kind == 3:  # a QuPath cell: the nucleus is nucleusGeometry
            ft["nucleusGeometry"] = ft["geometry"]
            ft["geometry"] = {"type": "Polygon", "coordinates": [_closed(_blob(rng, cx, cy, 25))]}
        feats.append(ft)
    feats.insert(7, {"type": "Feature", "geometry": {"type": "Point", "coordinates": [5.0, 5.0]}, "properties": {}})
    return feats


@pytest.fixture
def geojson(tmp_path):
    p = tmp_path / "case1.geojson"
    p.write_text(json.dumps({"type": "FeatureCollection", "crs": {"type": "name"}, "features": _features()}))
    return p


def _hovernet_doc(n=200, seed=1):
    """HoVer-Net-style nuclei: contours of real masks (cv2.findContours), types incl. 0 and null."""
    from insmix_fast.data import SyntheticNuclei

    _, lab = SyntheticNuclei(seed=seed, size=256, length=1)[0]
    nuc = {}
    for k, i in enumerate(np.unique(lab)[1:][:n]):
        cs, _ = cv2.findContours((lab == i).astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
        c = max(cs, key=len).reshape(-1, 2)
        if len(c) < 3:
            continue
        t = [1, 2, 3, 0, None][k % 5]
        nuc[str(int(i))] = {"bbox": [[0, 0], [1, 1]], "centroid": [1.0, 2.0], "contour": c.tolist(),
                            "type_prob": 0.9, "type": t}
    return {"mag": 40, "nuc": nuc}, lab


# ----------------------------------------------------------------------------- conversion
def _same(a: Annotations, b: Annotations) -> None:
    assert np.array_equal(a.points, b.points)
    assert np.array_equal(a.ring_offsets, b.ring_offsets) and np.array_equal(a.poly_offsets, b.poly_offsets)
    assert np.array_equal(np.asarray(a.bbox), np.asarray(b.bbox))
    assert a.class_names == b.class_names and a.closed == b.closed
    assert (a.types is None) == (b.types is None)
    if a.types is not None:
        assert np.array_equal(np.asarray(a.types), np.asarray(b.types))


def test_store_equals_in_memory_parse_and_reference(geojson):
    mem = read_geojson(geojson)
    feats = [f for f in json.loads(geojson.read_text())["features"] if f["geometry"]["type"] != "Point"]
    assert len(mem) == len(feats) == 300
    # the reference: the rings of each feature (nucleusGeometry first), closing vertex dropped
    ref = []
    for f in feats:
        g = f.get("nucleusGeometry") or f["geometry"]
        polys = [g["coordinates"]] if g["type"] == "Polygon" else g["coordinates"]
        ref.append([np.asarray(r[:-1], np.float32) for poly in polys for r in poly])
    ref_ann = Annotations.from_polygons(ref)
    assert np.array_equal(mem.points, ref_ann.points) and np.array_equal(mem.ring_offsets, ref_ann.ring_offsets)
    assert np.array_equal(mem.poly_offsets, ref_ann.poly_offsets)
    assert np.array_equal(mem.bbox, ref_ann.bbox)
    # classes in order of first appearance; unclassified ones get "Unclassified"
    assert mem.class_names == ("background", "Tumor", "Lymph\u00f6cyte", "Unclassified", "Stroma")
    assert mem.types[:4].tolist() == [1, 2, 3, 4]
    ann = load_annotations(geojson)
    assert ann.info["built"] and ann.info["store"] == str(geojson.with_name(geojson.name + STORE_SUFFIX))
    assert not ann.points.flags.writeable and not ann.points.flags.owndata      # memory-mapped
    _same(ann, mem)
    for x0, y0, s in [(0, 0, 1.0), (1000, 1500, 2.0), (2500, 100, 0.5)]:
        la, ta = ann.rasterize(x0, y0, (200, 200), s, with_types=True)
        lm, tm = mem.rasterize(x0, y0, (200, 200), s, with_types=True)
        assert np.array_equal(la, lm) and np.array_equal(ta, tm)
        assert ((ta > 0) == (la > 0)).all()
    again = load_annotations(geojson)
    assert not again.info["built"] and again.info["build"] == ann.info["build"]
    assert again.info["counts"] == {"items": 301, "polygons": 300, "rings": 420, "points": len(mem.points),
                                    "skipped": 0, "ignored": 1}
    assert check_store(again.info["store"]) == []


@pytest.mark.parametrize("chunk", [7, 61, 4096])
def test_chunk_boundaries_do_not_matter(tmp_path, geojson, chunk):
    text = json.dumps(json.loads(geojson.read_text()), indent=2)  # pretty-printed: whitespace everywhere
    p = tmp_path / "pretty.geojson"
    p.write_text(text)

    def collect(path, **kw):
        parts = [[] for _ in range(5)]
        info = scan_annotations(path, lambda *a: [lst.append(x.copy()) for lst, x in zip(parts, a)], **kw)
        return [np.concatenate(x) for x in parts], info

    ref, info_ref = collect(geojson)
    got, info = collect(p, chunk=chunk, batch=64)  # tiny batches too: many sink calls, buffer growth
    assert all(np.array_equal(a, b) for a, b in zip(ref, got))
    assert (info.items, info.ignored, info.raw_names) == (info_ref.items, info_ref.ignored, info_ref.raw_names)


def test_document_shapes(tmp_path, geojson):
    feats = json.loads(geojson.read_text())["features"]
    want = len(read_geojson(geojson))
    docs = {
        "list.json": json.dumps(feats),
        "later.geojson": json.dumps({"type": "FeatureCollection", "bbox": [0, 1, 2, 3], "name": "x",
                                     "features": feats, "after": {"k": [1, 2]}}),
        "bom.geojson": "\ufeff" + json.dumps({"features": feats}),
    }
    for name, text in docs.items():
        (tmp_path / name).write_text(text, encoding="utf-8")
        assert len(read_geojson(tmp_path / name)) == want, name
    one = {"type": "Feature", "geometry": {"type": "Polygon", "coordinates": [[[0, 0], [10, 0], [10, 10], [0, 0]]]}}
    (tmp_path / "one.geojson").write_text(json.dumps(one))
    (tmp_path / "geom.geojson").write_text(json.dumps(one["geometry"]))
    for name in ("one.geojson", "geom.geojson"):
        a = load_annotations(tmp_path / name)
        assert len(a) == 1 and a.rasterize(0, 0, (12, 12)).sum() == 55, name  # centres with x > y
    (tmp_path / "empty.geojson").write_text(json.dumps({"type": "FeatureCollection", "features": []}))
    e = load_annotations(tmp_path / "empty.geojson")
    assert len(e) == 0 and e.rasterize(0, 0, (8, 8)).sum() == 0 and e.class_names is None


# ----------------------------------------------------------------------------- bad input
_SQ = [[0, 0], [10, 0], [10, 10], [0, 10], [0, 0]]


def _fc(*geoms, raw=None):
    feats = [json.dumps({"type": "Feature", "geometry": {"type": "Polygon", "coordinates": [_SQ]}})]
    feats += [raw] if raw is not None else [json.dumps({"type": "Feature", "geometry": g}) for g in geoms]
    feats.append(feats[0])
    return '{"type": "FeatureCollection", "features": [' + ", ".join(feats) + "]}"


BAD = {
    "null geometry": (_fc(None), "feature 1 has no geometry"),
    "no geometry": (_fc(raw='{"type": "Feature", "properties": {}}'), "feature 1 has no geometry"),
    "NaN": (_fc(raw='{"type": "Feature", "geometry": {"type": "Polygon", "coordinates": '
                    '[[[0, 0], [NaN, 0], [10, 10], [0, 0]]]}}'), "feature 1 is degenerate: vertex with NaN"),
    "Infinity": (_fc(raw='{"type": "Feature", "geometry": {"type": "Polygon", "coordinates": '
                         '[[[0, 0], [1e999, 0], [10, 10], [0, 0]]]}}'), "feature 1 is degenerate: vertex with NaN"),
    "absurd": (_fc({"type": "Polygon", "coordinates": [[[0, 0], [1e20, 0], [10, 10], [0, 0]]]}),
               "feature 1 is degenerate: absurd coordinate (1e+20, 0)"),
    "collinear": (_fc({"type": "Polygon", "coordinates": [[[0, 0], [5, 5], [10, 10], [0, 0]]]}),
                  "feature 1 is degenerate: zero polygon area"),
    "two vertices": (_fc({"type": "Polygon", "coordinates": [[[0, 0], [5, 5], [0, 0]]]}),
                     "feature 1 is degenerate: only 2 vertices"),
    "degenerate hole": (_fc({"type": "Polygon", "coordinates": [_SQ, [[1, 1], [2, 2], [1, 1]]]}),
                        "only 2 vertices (a polygon needs ≥ 3) in ring 1"),
    "collection": (_fc({"type": "GeometryCollection", "geometries": []}), "feature 1 has an unsupported geometry"),
    "no type": (_fc({"coordinates": [_SQ]}), "feature 1 has an unsupported geometry"),
    "nesting": (_fc({"type": "Polygon", "coordinates": [[_SQ]]}), "feature 1 has malformed coordinates"),
    "string coordinate": (_fc({"type": "Polygon", "coordinates": [[[0, 0], ["1", 2], [3, 4], [0, 0]]]}),
                          "feature 1 has malformed coordinates"),
    "empty ring": (_fc({"type": "Polygon", "coordinates": [[]]}), "feature 1 has malformed coordinates"),
    "not a feature": (_fc(raw='{"type": "Polygon", "coordinates": [[[0, 0], [1, 0], [1, 1]]]}'),
                      "feature 1 is not a GeoJSON Feature"),
    "not an object": (_fc(raw="[1, 2]"), "feature 1 is not a JSON object"),
}
SYNTAX = {
    "missing comma": '{"type": "FeatureCollection", "features": [{"type": "Feature" "geometry": null}]}',
    "trailing comma": _fc()[:-2] + ",]}",
    "truncated": _fc()[:-40],
    "bad number": _fc(raw='{"type": "Feature", "geometry": {"type": "Polygon", "coordinates": [[[01, 0]]]}}'),
    "garbage after": _fc() + " x",
    "unterminated string": '{"features": [{"type": "Feature", "properties": {"a": "abc',
    "not json": "nope",
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_feature_named_or_skipped_and_never_cached(tmp_path, case):
    text, message = BAD[case]
    p = tmp_path / "bad.geojson"
    p.write_text(text)
    with pytest.raises(ReaderError) as e:
        load_annotations(p)
    assert "bad.geojson" in str(e.value) and message in str(e.value), str(e.value)
    assert not any(f.name.endswith(STORE_SUFFIX) or ".tmp-" in f.name for f in tmp_path.iterdir())  # nothing cached
    with pytest.warns(UserWarning, match="1 bad feature"):
        ann = load_annotations(p, on_error="skip")
    assert len(ann) == 2 and ann.info["counts"]["skipped"] == 1 and ann.info["skipped_examples"][0][0] == 1
    assert (ann.rasterize(0, 0, (12, 12)) > 0).sum() == 100
    with pytest.raises(ReaderError, match="1 bad feature.*on_error='skip'"):   # the skip store does not hide it
        load_annotations(p)


@pytest.mark.parametrize("case", list(SYNTAX))
def test_malformed_json_is_an_error_with_position(tmp_path, case):
    p = tmp_path / "broken.geojson"
    p.write_text(SYNTAX[case])
    for on_error in ("raise", "skip"):
        with pytest.raises(ReaderError, match="broken.geojson.*(malformed JSON at byte|unexpected end of file|not JSON)"):
            load_annotations(p, on_error=on_error)
    assert not any(f.name.endswith(STORE_SUFFIX) for f in tmp_path.iterdir())


def test_holes_and_multipolygons_rasterize_as_documented(tmp_path):
    feats = [{"type": "Feature", "geometry": {"type": "Polygon", "coordinates": [
        _closed([[0, 0], [20, 0], [20, 20], [0, 20]]), _closed([[5, 5], [15, 5], [15, 15], [5, 15]])]}},
        {"type": "Feature", "geometry": {"type": "MultiPolygon", "coordinates": [
            [_closed([[30, 0], [34, 0], [34, 4], [30, 4]])], [_closed([[30, 10], [36, 10], [36, 16], [30, 16]])]]}}]
    p = tmp_path / "h.geojson"
    p.write_text(json.dumps({"type": "FeatureCollection", "features": feats}))
    lab = load_annotations(p).rasterize(0, 0, (40, 40), clean=False)
    assert (lab == 1).sum() == 300 and (lab[5:15, 5:15] == 0).all()               # the hole stays background
    assert (lab == 2).sum() == 16 + 36                                             # both parts, one nucleus
    assert (load_annotations(p).rasterize(0, 0, (40, 40)) == 2).sum() == 36        # cleaned: largest piece


# ----------------------------------------------------------------------------- cache
def test_stale_store_is_rebuilt_and_corrupt_store_replaced(tmp_path, geojson):
    a = load_annotations(geojson)
    store = a.info["store"]
    feats = json.loads(geojson.read_text())["features"][:50]
    geojson.write_text(json.dumps({"type": "FeatureCollection", "features": feats}))
    os.utime(geojson, ns=(time.time_ns(), time.time_ns() + 10**9))
    assert find_store(geojson)[1] == "stale"
    b = load_annotations(geojson)
    assert b.info["built"] and len(b) == 49 and b.info["store"] == store
    assert len(a) == 300  # a process that still maps the old store keeps it intact
    # corruption: --check finds it; a truncated store is rebuilt on open
    data = bytearray(open(store, "rb").read())
    data[200] ^= 0xFF
    open(store, "wb").write(bytes(data))
    assert any("CRC-32" in m for m in check_store(store))
    open(store, "wb").write(bytes(data[: len(data) // 2]))
    assert find_store(geojson)[1].startswith("corrupt")
    c = load_annotations(geojson)
    assert c.info["built"] and check_store(store) == []


def test_unwritable_folder_falls_back_to_cache_dir(tmp_path, geojson, monkeypatch):
    beside, in_cache = store_locations(geojson, tmp_path / "cache")
    real = store_mod._writable_lock
    monkeypatch.setattr(store_mod, "_writable_lock", lambda s: None if s == beside else real(s))
    a = load_annotations(geojson, cache_dir=tmp_path / "cache")
    assert a.info["store"] == str(in_cache) and in_cache.exists() and not beside.exists()
    assert in_cache.parent == tmp_path / "cache" and geojson.stem in in_cache.name
    monkeypatch.setattr(store_mod, "_writable_lock", real)
    b = load_annotations(geojson, cache_dir=tmp_path / "cache")   # found in the cache dir: no conversion
    assert not b.info["built"] and b.info["store"] == str(in_cache)
    monkeypatch.setenv("INSMIX_FAST_CACHE_DIR", str(tmp_path / "env"))
    assert store_locations(geojson)[1].parent == tmp_path / "env"


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() == 0, reason="root ignores folder permissions")
def test_read_only_folder_really_uses_cache_dir(tmp_path, geojson):
    ro = tmp_path / "ro"
    ro.mkdir()
    src = ro / "s.geojson"
    src.write_bytes(geojson.read_bytes())
    ro.chmod(0o555)
    try:
        a = load_annotations(src, cache_dir=tmp_path / "cache")
        assert a.info["store"].startswith(str(tmp_path / "cache"))
    finally:
        ro.chmod(0o755)


def _convert_then_die(path):
    """A child that dies (os._exit) in the middle of a conversion, after writing some points."""
    import insmix_fast.wsi.store as sm

    real = sm.scan_annotations

    def dying(src, sink, **kw):
        def sink2(*a):
            sink(*a)
            os._exit(3)
        return real(src, sink2, **{**kw, "batch": 64})

    sm.scan_annotations = dying
    load_annotations(path)


def test_crash_mid_conversion_leaves_no_store(tmp_path, geojson):
    ctx = mp.get_context("fork")
    p = ctx.Process(target=_convert_then_die, args=(geojson,))
    p.start()
    p.join(60)
    assert p.exitcode == 3
    names = [f.name for f in tmp_path.iterdir()]
    assert not any(n.endswith(STORE_SUFFIX) for n in names) and any(".tmp-" in n for n in names)
    a = load_annotations(geojson)     # the lock died with the child; the next open converts and cleans up
    assert a.info["built"] and len(a) == 300
    assert not any(".tmp-" in f.name for f in tmp_path.iterdir())


def _open_and_report(path, barrier, q):
    barrier.wait()
    a = load_annotations(path)
    q.put((a.info["built"], a.info["build"]["pid"], len(a), int(a.rasterize(1000, 1000, (300, 300)).max())))


def test_concurrent_first_opens_convert_once(tmp_path, geojson):
    big = tmp_path / "big.geojson"
    big.write_text(json.dumps({"type": "FeatureCollection", "features": _features(3000, seed=5)}))
    # spawn: fresh interpreters load the scanner from Numba's on-disk cache, as torchrun ranks do
    ctx = mp.get_context("spawn")
    n = 4
    barrier, q = ctx.Barrier(n), ctx.Queue()
    procs = [ctx.Process(target=_open_and_report, args=(big, barrier, q)) for _ in range(n)]
    for p in procs:
        p.start()
    res = [q.get(timeout=120) for _ in range(n)]
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    assert sum(r[0] for r in res) == 1                      # one process converted ...
    assert len({r[1] for r in res}) == 1                     # ... and everyone maps its store
    assert len({(r[2], r[3]) for r in res}) == 1 and res[0][2] == 3000
    assert not load_annotations(big).info["built"]


def test_store_pickles_as_its_path(geojson):
    a = load_annotations(geojson)
    blob = pickle.dumps(a)
    assert len(blob) < 2000
    b = pickle.loads(blob)
    assert b.source == str(geojson) and not b.points.flags.writeable
    assert np.array_equal(b.rasterize(0, 0, (500, 500)), a.rasterize(0, 0, (500, 500)))
    arrays, header = read_store(a.info["store"], mmap=False)
    assert arrays["points"].flags.writeable and header["counts"]["polygons"] == 300   # read, not mapped


# ----------------------------------------------------------------------------- types
def test_hovernet_types_and_exact_inclusive_fill(tmp_path):
    doc, lab = _hovernet_doc()
    p = tmp_path / "hv.json"
    p.write_text(json.dumps(doc))
    ann = load_annotations(p)
    mem = read_hovernet_json(p)
    _same(ann, mem)
    assert ann.closed and len(ann) == len(doc["nuc"])
    # HoVer-Net ids are the class ids; type 0 and null get their own classes after them
    assert ann.class_names == ("background", "type_1", "type_2", "type_3", "type_0", "Unclassified")
    assert ann.types[:5].tolist() == [1, 2, 3, 4, 5]
    assert ann.info["source_types"] == [None, 1, 2, 3, 0, None]
    named = load_annotations(p, type_names={1: "neoplastic", 0: "nolabe"})
    assert named.class_names[1] == "neoplastic" and named.class_names[4] == "nolabe"
    info = tmp_path / "type_info.json"
    info.write_text(json.dumps({"0": ["nolabe", [0, 0, 0]], "2": ["inflam", [0, 255, 0]]}))
    assert read_hovernet_json(p, type_names=info).class_names[2] == "inflam"
    # level 0: exactly HoVer-Net's inclusive fill of each contour (cv2.drawContours)
    ids = [int(k) for k in doc["nuc"]]
    got, tmap = ann.rasterize(0, 0, lab.shape, clean=False, with_types=True)
    for k, i in enumerate(ids):
        want = np.zeros(lab.shape, np.uint8)
        cv2.drawContours(want, [np.asarray(doc["nuc"][str(i)]["contour"], np.int32)], -1, 1, thickness=-1)
        assert ((got == k + 1) == (want > 0)).all(), i
        assert (tmap[got == k + 1] == ann.types[k]).all()
    bad = {"nuc": {"1": {"contour": [[0, 0], [4, 0], [4, 4]], "type": "tumour"}}}
    (tmp_path / "badtype.json").write_text(json.dumps(bad))
    with pytest.raises(ReaderError, match="nucleus '1' .*not a non-negative integer"):
        load_annotations(tmp_path / "badtype.json")
    with pytest.raises(ReaderError, match="expected a HoVer-Net 'nuc' object"):
        read_hovernet_json(_write(tmp_path / "g.geojson", _fc()))


def _write(path, text):
    path.write_text(text)
    return path


def test_type_map_contract_and_class_filter(geojson):
    ann = load_annotations(geojson)
    lab, types = ann.rasterize(0, 0, (800, 800), 4.0, with_types=True)
    assert types.dtype == np.int32 and lab.dtype == np.int32
    assert ((types > 0) == (lab > 0)).all() and types.max() < len(ann.class_names)
    for k in np.unique(lab)[1:]:
        assert len(np.unique(types[lab == k])) == 1                 # one class per instance
    tumor = load_annotations(geojson, classes={"Tumor"})
    assert len(tumor) == 75 and set(np.asarray(tumor.types).tolist()) == {1}
    untyped = Annotations.from_polygons([np.array([[0, 0], [4, 0], [4, 4]], float)])
    with pytest.raises(InputError, match="no classes"):
        untyped.rasterize(0, 0, (5, 5), with_types=True)
    with pytest.raises(InputError, match="class_names"):
        Annotations.from_polygons([np.array([[0, 0], [4, 0], [4, 4]], float)], types=[1])


# ----------------------------------------------------------------------------- index
def test_sparse_index_handles_far_and_big_polygons():
    rng = np.random.default_rng(3)
    polys = [_blob(rng, *rng.uniform(0, 5000, 2), 10) for _ in range(400)]
    polys.append(np.array([[2.0e9, 2.0e9], [2.0e9 + 50, 2.0e9], [2.0e9, 2.0e9 + 50]]))       # far away
    polys.append(np.array([[-100.0, -100], [6000, -100], [6000, 6000], [-100, 6000]]))       # a region outline
    ann = Annotations.from_polygons(polys)
    assert ann.index.nbytes < 100_000 and len(ann.index.big) == 1
    b = ann.bbox
    for _ in range(40):
        x0, y0 = rng.uniform(-300, 5200, 2)
        w = rng.uniform(5, 900)
        want = np.flatnonzero((b[:, 0] < x0 + w) & (b[:, 2] >= x0) & (b[:, 1] < y0 + w) & (b[:, 3] >= y0))
        assert np.array_equal(ann.query(x0, y0, x0 + w, y0 + w), want)
    assert ann.query(2.0e9 - 100, 2.0e9 - 100, 2.0e9 + 100, 2.0e9 + 100).tolist() == [400]
    # the dense index of older .npz files converts to the same answers
    g = GridIndex.build(b[:400])
    dense_off = np.zeros(20 * 20 + 1, np.int64)
    cells = (g.keys >> 32) * 20 + (g.keys & 0xFFFFFFFF)
    np.add.at(dense_off, cells + 1, np.diff(g.offsets))
    d = GridIndex.from_dense(np.cumsum(dense_off), g.ids, (20, 20))
    assert all(np.array_equal(getattr(d, k), getattr(g, k)) for k in ("keys", "offsets", "ids"))


def test_npz_roundtrip_keeps_types_and_rule(tmp_path, geojson):
    a = read_geojson(geojson)
    b = Annotations.load(a.save(tmp_path / "a.npz"))
    _same(a, b)
    hv, _ = _hovernet_doc(40)
    h = read_hovernet_json(_write(tmp_path / "h.json", json.dumps(hv)))
    _same(h, Annotations.load(h.save(tmp_path / "h.npz")))


# ----------------------------------------------------------------------------- one polygon rule (issue 15)
def _xml(tmp_path, verts, rid):
    """A one-region Aperio XML file."""
    vs = "".join(f'<Vertex X="{x!r}" Y="{y!r}"/>' for x, y in verts)
    p = tmp_path / "t.xml"
    p.write_text(f'<Annotations><Annotation><Regions><Region Id="{rid}"><Vertices>{vs}</Vertices></Region>'
                 "</Regions></Annotation></Annotations>")
    return p


def test_one_degenerate_rule_for_xml_and_geojson(tmp_path):
    from insmix_fast.data.monuseg import read_aperio_xml

    bowtie = [[10, 10], [30, 30], [30, 10], [10, 30]]
    line = [[1, 1], [5, 5], [9, 9]]
    assert ring_problem(np.array(bowtie, float)) == OK and ring_problem(np.array(line, float)) == ZERO_AREA
    assert ring_problem(np.array([[0, 0], [1, 1], [0, 0]], float)) == TOO_FEW
    assert ring_problem(np.array([[0, 0], [np.nan, 1], [2, 0]], float)) == NON_FINITE
    assert ring_problem(np.array([[0, 0], [MAX_COORD * 2, 1], [2, 0]], float)) == ABSURD
    assert ring_problem(np.array([[0, 0], [1e6, 1e-2], [2e6, 0]], float)) == OK       # thin, not flat
    assert ring_problem(np.array([[0, 0], [1e6, 1e-4], [2e6, 0]], float)) == ZERO_AREA  # flat within 1e-9

    def xml(verts):
        return _xml(tmp_path, verts, 7)

    def geo(verts):
        return _write(tmp_path / "t.geojson", json.dumps(
            {"type": "FeatureCollection", "features": [{"type": "Feature", "geometry": {
                "type": "Polygon", "coordinates": [verts + [verts[0]]]}}]}))

    # the bow-tie: kept by both readers, both lobes filled
    assert (read_aperio_xml(xml(bowtie), (40, 40)) > 0).sum() > 150
    lab = read_geojson(geo(bowtie)).rasterize(0, 0, (40, 40), clean=False)
    assert lab[20, 12] == 1 and lab[20, 27] == 1 and lab[12, 20] == 0 and (lab > 0).sum() > 150
    # collinear: rejected by both, with the same words
    words = re.escape(describe_problem(ZERO_AREA))
    with pytest.raises(ReaderError, match=words):
        read_aperio_xml(xml(line), (40, 40))
    with pytest.raises(ReaderError, match=words):
        read_geojson(geo(line))


def test_xml_far_coordinates_clip_in_float_or_are_rejected(tmp_path):
    from insmix_fast.data.monuseg import read_aperio_xml

    def xml(verts):
        return _xml(tmp_path, verts, 3)

    # a rectangle reaching 2e9 px away, clipped to the 60×70 image: rows/cols 0..53 → 54² px
    far = [(-2e9, -2e9), (53.0, -2e9), (53.0, 53.0), (-2e9, 53.0)]
    assert (read_aperio_xml(xml(far), (60, 70)) == 1).sum() == 54 * 54
    far2 = [(6.0, 6.0), (2.1e9, 6.0), (2.1e9, 2.1e9), (6.0, 2.1e9)]
    assert (read_aperio_xml(xml(far2), (60, 70)) == 1).sum() == 54 * 64
    with pytest.raises(ReaderError, match="Id=3 is degenerate: absurd coordinate"):
        read_aperio_xml(xml([(-1e20, -1e20), (53.0, -1e20), (53.0, 53.0), (-1e20, 53.0)]), (60, 70))
    with pytest.warns(UserWarning, match="skipped 1 degenerate"):
        assert read_aperio_xml(xml([(0.0, 0.0), (1e20, 0.0), (5.0, 5.0)]), (60, 70), degenerate="skip").max() == 0
    # the clip itself is exact even with vertices far beyond the accepted range
    c = clip_polygon(np.array([[-1e20, -1e20], [53, -1e20], [53, 53], [-1e20, 53]]), -1, -1, 70, 60)
    assert sorted(map(tuple, c.tolist())) == [(-1, -1), (-1, 53), (53, -1), (53, 53)]


# ----------------------------------------------------------------------------- CLI
def _cli(*argv):
    from insmix_fast.wsi.cli import register

    parser = argparse.ArgumentParser(prog="insmix-fast")
    register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["wsi", "index", *map(str, argv)])
    return args.func(args)


def test_cli_index_and_check(tmp_path, geojson, capsys):
    hv, _ = _hovernet_doc(30)
    h = _write(tmp_path / "h.json", json.dumps(hv))
    slide = tmp_path / "case1.tif"
    slide.write_bytes(b"not read by index")
    (tmp_path / "nolabels.svs").write_bytes(b"x")
    assert _cli(tmp_path, h, "--no-progress") == 0
    out = capsys.readouterr().out
    assert "case1.tif (case1.geojson): 300 polygons, 4 classes (Tumor, Lymphöcyte, Unclassified, Stroma)" in out
    assert "converted in" in out and "nolabels.svs: no annotation file" in out
    assert f"h.json: {len(hv['nuc'])} polygons, 5 classes" in out and "3 of 3 slide(s) indexed" in out
    assert _cli(slide, "--no-progress") == 0
    assert "store up to date" in capsys.readouterr().out
    assert _cli(slide, h, "--check") == 0
    assert capsys.readouterr().out.count(": OK, ") == 2
    store = geojson.with_name(geojson.name + STORE_SUFFIX)
    data = bytearray(store.read_bytes())
    data[100] ^= 1
    store.write_bytes(bytes(data))
    with pytest.raises(ReaderError, match="1 of 2 slide\\(s\\) failed the check"):
        _cli(slide, h, "--check")
    assert "CRC-32 mismatch" in capsys.readouterr().out
    bad = _write(tmp_path / "bad.geojson", BAD["null geometry"][0])
    with pytest.raises(ReaderError, match="1 of 1 slide\\(s\\) failed to convert"):
        _cli(bad, "--no-progress")
    assert "feature 1 has no geometry" in capsys.readouterr().out
    with pytest.warns(UserWarning, match="1 bad feature"):
        assert _cli(bad, "--on-error", "skip", "--no-progress") == 0
    out = capsys.readouterr().out
    assert "2 polygons, untyped" in out and "1 skipped" in out
    with pytest.raises(ReaderError, match="no such"):
        _cli(tmp_path / "missing.svs")
