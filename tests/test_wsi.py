"""Whole-slide reading, tissue detection, annotations, patch sources (insmix_fast.wsi)."""

import json
from pathlib import Path
import pickle

import cv2
import numpy as np
import pytest

pytest.importorskip("tifffile")  # the wsi extra; JPEG tiles when imagecodecs is installed, else deflate

from insmix_fast.data import SyntheticNuclei  # noqa: E402
from insmix_fast.errors import ReaderError  # noqa: E402
from insmix_fast.wsi import (  # noqa: E402
    Annotations,
    SlideError,
    TileCache,
    WSIPatchSource,
    build_bank_from_slides,
    detect_tissue,
    load_annotations,
    mask_outline,
    open_slide,
    read_geojson,
    read_hovernet_json,
    write_synthetic_slide,
)
from insmix_fast.wsi._optional import available  # noqa: E402
from insmix_fast.wsi.synthetic_slide import synthetic_tissue  # noqa: E402

BACKENDS = ["tifffile"] + (["openslide"] if available("openslide") else [])


@pytest.fixture(scope="session")
def slide_file(tmp_path_factory):
    d = tmp_path_factory.mktemp("wsi")
    info = write_synthetic_slide(d / "slide.tif", 2048, mpp=0.25, seed=3, annotations="both")
    return info


# ------------------------------------------------------------------------------- reading
@pytest.mark.parametrize("backend", BACKENDS)
def test_levels_and_mpp(slide_file, backend):
    s = open_slide(slide_file.path, backend)
    assert s.backend == backend
    assert s.dimensions == (2048, 2048)
    assert s.level_dimensions == [(2048, 2048), (512, 512)]
    assert s.level_downsamples == pytest.approx([1.0, 4.0])
    assert s.mpp == pytest.approx(0.25)
    assert s.level_mpp == pytest.approx([0.25, 1.0])
    assert s.best_level(0.25) == 0 and s.best_level(0.5) == 0 and s.best_level(1.0) == 1 and s.best_level(4) == 1
    assert s.best_level(0.1) == 0


def test_backends_agree(slide_file):
    if len(BACKENDS) < 2:
        pytest.skip("openslide-python/openslide-bin not installed")
    a, b = (open_slide(slide_file.path, k) for k in BACKENDS)
    for args in [(100, 200, 300, 200, 0.25), (100, 200, 300, 200, 0.5), (400, 800, 100, 100, 1.0), (1900, 1900, 300, 300, 0.5)]:
        assert np.array_equal(a.read(*args), b.read(*args)), args


@pytest.mark.parametrize("backend", BACKENDS)
def test_read_at_mpp_matches_direct_crop(slide_file, backend):
    s = open_slide(slide_file.path, backend)
    # a level's own resolution on its pixel grid: exactly a crop of that level
    assert np.array_equal(s.read(400, 800, 100, 120, 1.0), s.read_level(1, 100, 200, 100, 120))
    assert np.array_equal(s.read(7, 9, 50, 60), s.read_level(0, 7, 9, 50, 60))
    # between levels: level 0 area-averaged
    crop = s.read_level(0, 100, 200, 600, 400)
    assert np.array_equal(s.read(100, 200, 300, 200, 0.5), cv2.resize(crop, (300, 200), interpolation=cv2.INTER_AREA))
    # off-grid at a level's resolution: close to the crop (sub-pixel shift), not equal
    off = s.read(402, 800, 100, 100, 1.0).astype(int)
    ref = s.read_level(1, 100, 200, 100, 100).astype(int)
    assert np.abs(off - ref).mean() < 12
    # outside the slide: white
    out = s.read(2000, 2000, 100, 100)
    assert (out[48:, 48:] == 255).all() and out.shape == (100, 100, 3)
    # large reads go in blocks and equal a single read
    big = s.read(0, 0, 1100, 1100, 0.5)
    assert np.array_equal(big[:300, :300], s.read(0, 0, 300, 300, 0.5))


def test_tile_cache_bounded(slide_file):
    s = open_slide(slide_file.path, "tifffile", cache_bytes=3 * 256 * 256 * 3)
    s.read(0, 0, 1024, 1024)
    assert len(s.cache) == 3 and s.cache.nbytes <= 3 * 256 * 256 * 3
    c = TileCache(100)
    c.put(1, np.zeros(60, np.uint8))
    c.put(2, np.zeros(60, np.uint8))
    assert c.get(1) is None and c.get(2) is not None and c.nbytes == 60


def test_slide_pickles_and_reopens(slide_file):
    s = open_slide(slide_file.path, "tifffile")
    a = s.read(300, 300, 64, 64, 0.5)
    blob = pickle.dumps(s)
    assert len(blob) < 5000
    t = pickle.loads(blob)
    assert t._handle is None
    assert np.array_equal(t.read(300, 300, 64, 64, 0.5), a)


@pytest.mark.parametrize("backend", BACKENDS)
def test_corrupt_and_missing_files_name_the_file(tmp_path, slide_file, backend):
    bad = tmp_path / "garbage.tif"
    bad.write_bytes(b"II*\x00" + b"\x13" * 5000)
    with pytest.raises(SlideError, match="garbage.tif"):
        open_slide(bad, backend)
    with pytest.raises(SlideError, match="nothere.tif"):
        open_slide(tmp_path / "nothere.tif", backend)
    # a truncated slide: header intact, tiles cut off
    data = slide_file.path.read_bytes()
    cut = tmp_path / "truncated.tif"
    cut.write_bytes(data[: len(data) // 3])
    with pytest.raises(SlideError, match="truncated.tif"):
        s = open_slide(cut, backend)
        s.read(0, 0, 2048, 2048)


def test_source_skips_unreadable_slides(tmp_path, slide_file):
    bad = tmp_path / "broken.tif"
    bad.write_bytes(b"not a tiff at all")
    with pytest.raises(SlideError, match="broken.tif"):
        WSIPatchSource([slide_file.path, bad], [slide_file.geojson, None], patches_per_epoch=4)
    with pytest.warns(UserWarning, match="broken.tif"):
        src = WSIPatchSource([slide_file.path, bad], [slide_file.geojson, None], patches_per_epoch=4, on_error="skip")
    assert len(src.slides) == 1 and src.skipped[0][0] == str(bad)
    assert src[0][0].shape == (256, 256, 3)


def test_missing_mpp_is_an_error(tmp_path):
    import tifffile

    p = tmp_path / "nompp.tif"
    tifffile.imwrite(p, np.full((300, 300, 3), 200, np.uint8), tile=(256, 256), photometric="rgb", metadata=None)
    with pytest.raises(SlideError, match="microns-per-pixel.*|nompp"):
        open_slide(p, "tifffile")
    assert open_slide(p, "tifffile", mpp=0.5).mpp == 0.5


# ------------------------------------------------------------------------------- tissue
def test_tissue_mask_matches_layout(slide_file):
    s = open_slide(slide_file.path)
    t = detect_tissue(s)
    G = slide_file.gen_tile
    truth = synthetic_tissue(3, 2048 // G, 2048 // G)
    k = int(round(G / t.scale))
    m = t.mask[: truth.shape[0] * k, : truth.shape[1] * k].reshape(truth.shape[0], k, truth.shape[1], k).mean((1, 3))
    assert truth.any() and not truth.all()
    assert (m[truth] > 0.8).all() and (m[~truth] < 0.2).all(), (m, truth)
    from insmix_fast.wsi import tissue_mask_from_image

    glass = np.clip(np.random.default_rng(0).normal(242, 2, (200, 200, 3)), 0, 255).astype(np.uint8)
    assert not tissue_mask_from_image(glass, 8.0)[0].any()


# ------------------------------------------------------------------------------- annotations
def _raster(polys, x0=0.0, y0=0.0, shape=(40, 40), scale=1.0, clean=True):
    return Annotations.from_polygons(polys).rasterize(x0, y0, shape, scale, clean=clean)


def _sq(a, b, c, d):
    return np.array([[a, b], [c, b], [c, d], [a, d]], float)


def test_raster_touching_overlap_holes_border_scale():
    lab = _raster([_sq(10, 10, 20, 20), _sq(20, 10, 30, 20)])
    assert (lab == 1).sum() == 100 and (lab == 2).sum() == 100
    assert (lab[10:20, 10:30] > 0).all() and (lab > 0).sum() == 200          # no gap, no overlap
    lab = _raster([_sq(0, 0, 10, 10), _sq(5, 5, 15, 15)])
    assert (lab == 1).sum() == 100 and (lab == 2).sum() == 75                   # first claims
    lab = _raster([[_sq(0, 0, 20, 20), _sq(5, 5, 15, 15)]])
    assert (lab == 1).sum() == 300 and (lab[5:15, 5:15] == 0).all()             # hole stays background
    lab = _raster([_sq(-5, -5, 10, 10)])
    assert (lab == 1).sum() == 100                                              # cut by the patch border
    lab = _raster([_sq(0, 0, 20, 20)], scale=2.0)
    assert (lab == 1).sum() == 100                                              # at half resolution
    lab = _raster([_sq(100, 100, 110, 110), _sq(30, 30, 35, 35)], x0=95, y0=95, shape=(10, 10))
    assert (lab == 1).sum() == 25 and lab.max() == 1                            # ids renumbered per patch
    # an instance cut in two by an earlier one keeps its largest piece
    lab = _raster([_sq(10, 0, 12, 30), _sq(0, 10, 30, 14)])
    assert (lab == 2).sum() == 18 * 4 and (lab[10:14, :10] == 0).all()


def test_raster_stitches_across_patch_borders():
    rng = np.random.default_rng(1)
    polys = []
    for _ in range(60):
        c = rng.uniform(0, 200, 2)
        ang = np.sort(rng.uniform(0, 2 * np.pi, 9))
        r = rng.uniform(3, 9, 9)
        polys.append(np.stack([c[0] + r * np.cos(ang), c[1] + r * np.sin(ang)], 1))
    ann = Annotations.from_polygons(polys)
    full = ann.rasterize(0, 0, (200, 200), clean=False)
    parts = np.zeros_like(full)
    for y in (0, 77, 150):
        for x in (0, 64, 133):
            h, w = min(77 if y == 0 else 73 if y == 77 else 50, 200 - y), min(64 if x == 0 else 69 if x == 64 else 67, 200 - x)
            sub = ann.rasterize(x, y, (h, w), clean=False)
            parts[y:y + h, x:x + w] = sub > 0
    assert np.array_equal(full > 0, parts > 0)


def test_raster_matches_point_in_polygon():
    from skimage.measure import points_in_poly

    rng = np.random.default_rng(5)
    for k in range(20):
        ang = np.sort(rng.uniform(0, 2 * np.pi, 12))
        r = rng.uniform(5, 25, 12)
        P = np.stack([50 + r * np.cos(ang), 40 + r * np.sin(ang)], 1)
        P = P.astype(np.float32).astype(np.float64)  # as stored
        x0, y0, s = rng.uniform(0, 20), rng.uniform(0, 20), rng.uniform(0.5, 2.5)
        lab = Annotations.from_polygons([P]).rasterize(x0, y0, (64, 64), s, clean=False)
        yy, xx = np.mgrid[:64, :64]
        cx, cy = x0 + (xx + 0.5) * s, y0 + (yy + 0.5) * s
        inside = points_in_poly(np.stack([cx.ravel(), cy.ravel()], 1), P).reshape(64, 64)
        assert np.array_equal(lab > 0, inside), k


def test_outline_roundtrip_reproduces_masks():
    img, lab = SyntheticNuclei(seed=4, size=256, length=1)[0]
    ids = np.unique(lab)[1:]
    polys = [mask_outline(lab == i) for i in ids]
    back = Annotations.from_polygons(polys).rasterize(0, 0, lab.shape, clean=False)
    # nuclei overlap-free and 4-connected: outline → raster is exact
    agree = (back > 0) == (lab > 0)
    assert agree.mean() > 0.999, agree.mean()
    for i, p in zip(ids[:20], polys[:20]):
        one = Annotations.from_polygons([p]).rasterize(0, 0, lab.shape, clean=False)
        assert np.array_equal(one > 0, lab == i) or abs(int((one > 0).sum()) - int((lab == i).sum())) <= 2


def test_geojson_qupath_and_hovernet(tmp_path):
    fc = {"type": "FeatureCollection", "features": [
        {"type": "Feature", "geometry": {"type": "Polygon", "coordinates": [
            [[0, 0], [20, 0], [20, 20], [0, 20], [0, 0]], [[5, 5], [15, 5], [15, 15], [5, 15], [5, 5]]]},
         "properties": {"objectType": "detection", "classification": {"name": "Nucleus"}}},
        {"type": "Feature", "geometry": {"type": "MultiPolygon", "coordinates": [
            [[[30, 0], [34, 0], [34, 4], [30, 4]]], [[[30, 10], [36, 10], [36, 16], [30, 16]]]]},
         "properties": {"classification": {"name": "Nucleus"}}},
        {"type": "Feature", "geometry": {"type": "Polygon", "coordinates": [[[0, 30], [40, 30], [40, 39], [0, 39]]]},
         "nucleusGeometry": {"type": "Polygon", "coordinates": [[[1, 31], [3, 31], [3, 33], [1, 33]]]},
         "properties": {"objectType": "cell", "classification": {"name": "Nucleus"}}},
        {"type": "Feature", "geometry": {"type": "Point", "coordinates": [5, 5]}, "properties": {}},
        {"type": "Feature", "geometry": {"type": "Polygon", "coordinates": [[[0, 0], [2, 0], [2, 2]]]},
         "properties": {"classification": {"name": "Stroma"}}},
    ]}
    p = tmp_path / "a.geojson"
    p.write_text(json.dumps(fc))
    ann = read_geojson(p, classes={"Nucleus"})
    assert len(ann) == 3
    lab = ann.rasterize(0, 0, (40, 40))
    assert (lab == 1).sum() == 300 and (lab == 2).sum() == 36 and (lab == 3).sum() == 4
    assert len(read_geojson(p)) == 4
    assert len(load_annotations(p)) == 4
    np_path = ann.save(tmp_path / "a.npz")
    assert np.array_equal(Annotations.load(np_path).rasterize(0, 0, (40, 40)), lab)
    (tmp_path / "bad.geojson").write_text('{"type": "FeatureCollection", "features": [{"type": "Feature", '
                                          '"geometry": {"type": "Polygon", "coordinates": [[[0,0],[1,1]]]}}]}')
    with pytest.raises(ReaderError, match="bad.geojson.*feature 0"):
        read_geojson(tmp_path / "bad.geojson")
    with pytest.warns(UserWarning, match="skipped 1"):
        assert len(read_geojson(tmp_path / "bad.geojson", degenerate="skip")) == 0
    (tmp_path / "broken.geojson").write_text("{nope")
    with pytest.raises(ReaderError, match="broken.geojson"):
        read_geojson(tmp_path / "broken.geojson")


def test_hovernet_json(tmp_path):
    hv = {"mag": 40, "nuc": {"1": {"contour": [[10, 10], [19, 10], [19, 19], [10, 19]]},
                             "2": {"contour": [[30, 30], [33, 30], [33, 33], [30, 33]]}}}
    q = tmp_path / "h.json"
    q.write_text(json.dumps(hv))
    h = load_annotations(q)
    assert isinstance(h, Annotations) and len(h) == 2
    lab = h.rasterize(0, 0, (40, 40))
    assert (lab == 1).sum() == 100 and (lab[10:20, 10:20] == 1).all()           # contour = pixel centres, inclusive
    assert read_hovernet_json(q).bbox.shape == (2, 4)
    # a HoVer-Net contour of a real mask fills back to that mask (cv2.drawContours is inclusive)
    img, lab = SyntheticNuclei(seed=9, size=128, length=1)[0]
    nuc = {}
    for i in np.unique(lab)[1:]:
        cs, _ = cv2.findContours((lab == i).astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
        nuc[str(i)] = {"contour": max(cs, key=len).reshape(-1, 2).tolist()}
    (tmp_path / "m.json").write_text(json.dumps({"nuc": nuc}))
    back = read_hovernet_json(tmp_path / "m.json").rasterize(0, 0, lab.shape, clean=False)
    assert ((back > 0) == (lab > 0)).mean() > 0.995


def test_spatial_index_query_is_complete():
    rng = np.random.default_rng(2)
    polys = [_sq(x, y, x + w, y + w) for x, y, w in zip(rng.uniform(0, 3000, 500), rng.uniform(0, 3000, 500),
                                                          rng.uniform(2, 40, 500))]
    ann = Annotations.from_polygons(polys)
    for _ in range(30):
        x0, y0 = rng.uniform(-100, 3000, 2)
        w = rng.uniform(10, 700)
        got = set(ann.query(x0, y0, x0 + w, y0 + w).tolist())
        b = ann.bbox
        want = set(np.flatnonzero((b[:, 0] < x0 + w) & (b[:, 2] >= x0) & (b[:, 1] < y0 + w) & (b[:, 3] >= y0)).tolist())
        assert got == want


# ------------------------------------------------------------------------------- source
def test_synthetic_slide_labels_match_image(slide_file):
    src = WSIPatchSource(slide_file.path, patch=256, mpp=0.25, patches_per_epoch=8, seed=1)
    assert src.annotations[0] is not None and src.annotations[0].source.endswith(".npz")
    n_nuc = 0
    for i in range(len(src)):
        img, lab = src[i]
        assert img.shape == (256, 256, 3) and img.dtype == np.uint8
        assert lab.shape == (256, 256) and lab.dtype == np.int32
        n = int(lab.max())
        assert n == len(np.unique(lab)) - 1
        n_nuc += n
        if n:
            grey = img.mean(2)
            assert grey[lab > 0].mean() < grey[lab == 0].mean() - 20        # nuclei are the dark, stained parts
    assert n_nuc > 50
    geo = WSIPatchSource(slide_file.path, slide_file.geojson, patch=256, mpp=0.25, patches_per_epoch=8, seed=1)
    assert all(np.array_equal(src[i][1], geo[i][1]) for i in range(4))


def test_sampler_determinism_and_tissue(slide_file):
    kw = dict(patch=128, mpp=0.5, patches_per_epoch=64, seed=7, min_tissue=0.6)
    a, b = WSIPatchSource(slide_file.path, **kw), WSIPatchSource(slide_file.path, **kw)
    assert np.array_equal(a.coords, b.coords)
    e0 = a.coords.copy()
    a.set_epoch(1)
    b.set_epoch(1)
    assert np.array_equal(a.coords, b.coords) and not np.array_equal(a.coords, e0)
    a.set_epoch(0)
    assert np.array_equal(a.coords, e0)
    c = WSIPatchSource(slide_file.path, **{**kw, "seed": 8})
    assert not np.array_equal(c.coords, e0)
    t = a.tissue[0]
    size0 = 128 * 0.5 / 0.25
    assert (t.fraction_in(e0[:, 1], e0[:, 2], size0) >= 0.6).all()
    assert (e0[:, 1:] >= 0).all() and (e0[:, 1:] + size0 <= 2048).all()
    assert (e0[:, 1:] % 2 == 0).all()                       # on the 0.5 µm/px output grid
    # grid: stride patch - overlap, inside tissue, same grid every epoch in a new order
    g = WSIPatchSource(slide_file.path, patch=128, mpp=0.5, mode="grid", overlap=32, min_tissue=0.5, seed=0)
    xy = g.coords[:, 1:]
    assert (xy % ((128 - 32) * 2) == 0).all()
    assert (t.fraction_in(xy[:, 0], xy[:, 1], size0) >= 0.5).all()
    g2 = pickle.loads(pickle.dumps(g))
    g2.set_epoch(1)
    assert sorted(map(tuple, g2.coords.tolist())) == sorted(map(tuple, g.coords.tolist()))
    assert not np.array_equal(g2.coords, g.coords)


def test_source_pickles(slide_file):
    src = WSIPatchSource(slide_file.path, patch=128, mpp=0.5, patches_per_epoch=10, seed=2)
    first = src[3]
    blob = pickle.dumps(src)
    assert len(blob) < 2_000_000
    back = pickle.loads(blob)
    x = back[3]
    assert np.array_equal(x[0], first[0]) and np.array_equal(x[1], first[1])


def test_sharding_in_process(slide_file):
    full = WSIPatchSource(slide_file.path, patch=128, mpp=0.5, patches_per_epoch=30, seed=4, rank=0, world_size=1)
    shards = [WSIPatchSource(slide_file.path, patch=128, mpp=0.5, patches_per_epoch=30, seed=4, rank=r, world_size=3)
              for r in range(3)]
    for e in (0, 1):
        full.set_epoch(e)
        for s in shards:
            s.set_epoch(e)
        idx = np.concatenate([s.indices for s in shards])
        assert sorted(idx.tolist()) == list(range(30))
        got = sorted(map(tuple, np.concatenate([s.coords for s in shards]).tolist()))
        assert got == sorted(map(tuple, full.coords.tolist()))


def test_sharding_default_follows_torchrun_only_when_asked(slide_file, monkeypatch):
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "2")
    plain = WSIPatchSource(slide_file.path, patch=128, mpp=0.5, patches_per_epoch=30, seed=4)
    assert not plain.sharded and len(plain) == 30 and (plain.rank, plain.world_size) == (0, 1)
    sh = WSIPatchSource(slide_file.path, patch=128, mpp=0.5, patches_per_epoch=30, seed=4, shard=True)
    assert sh.sharded and (sh.rank, sh.world_size) == (1, 2) and len(sh) == 15
    assert np.array_equal(sh.coords, plain.coords[1::2])


def test_build_bank_from_slides(slide_file):
    bank = build_bank_from_slides([slide_file.path], [slide_file.npz], patch=256, margin=48, progress=False)
    n_ann = len(load_annotations(slide_file.npz))
    # every nucleus is drawn exactly once; whole ones (≥ min_area, not cut) enter the bank
    assert 0.8 * n_ann <= len(bank) <= n_ann, (len(bank), n_ann)
    small = build_bank_from_slides([slide_file.path], patch=256, margin=48, progress=False, max_patches=3)
    assert 0 < len(small) < len(bank)


def test_torch_dataloader_two_workers(slide_file):
    torch = pytest.importorskip("torch")
    src = WSIPatchSource(slide_file.path, patch=128, mpp=0.5, patches_per_epoch=12, seed=5)
    dl = torch.utils.data.DataLoader(src, batch_size=4, num_workers=2, shuffle=False)
    imgs, labs = [], []
    for im, lb in dl:
        assert im.shape == (4, 128, 128, 3) and im.dtype == torch.uint8 and lb.dtype == torch.int32
        imgs.append(im.numpy())
        labs.append(lb.numpy())
    ref = [src[i] for i in range(12)]
    assert np.array_equal(np.concatenate(imgs), np.stack([r[0] for r in ref]))
    assert np.array_equal(np.concatenate(labs), np.stack([r[1] for r in ref]))


def test_insmix_loader_end_to_end(slide_file):
    """A synthetic WSI with GeoJSON nuclei trains through InsMixLoader (2 workers) on CPU."""
    loader_mod = pytest.importorskip("insmix_fast.loader", reason="insmix_fast.loader (InsMixLoader) not landed yet")
    torch = pytest.importorskip("torch")
    from insmix_fast import InstanceBank

    bank = build_bank_from_slides([slide_file.path], [slide_file.geojson], patch=256, progress=False, max_patches=4)
    src = WSIPatchSource(slide_file.path, slide_file.geojson, patch=128, mpp=0.25, patches_per_epoch=8, seed=6)
    assert isinstance(bank, InstanceBank) and len(bank) > 50
    loader = loader_mod.InsMixLoader(src, bank=bank, batch_size=4, crop=128, device="cpu", seed=0, num_workers=2)
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.ReLU(), torch.nn.Conv2d(8, 2, 1))
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    w0 = net[0].weight.detach().clone()
    n = nuclei = 0
    losses = []
    for epoch in range(2):
        loader.set_epoch(epoch)
        for batch in loader:
            images, labels = (batch[0], batch[1]) if isinstance(batch, (tuple, list)) else (batch["images"], batch["labels"])
            assert tuple(images.shape) == (images.shape[0], 3, 128, 128) and images.dtype == torch.float32
            assert tuple(labels.shape) == (images.shape[0], 128, 128)
            nuclei += int((labels.amax(dim=(1, 2)) > 0).sum())
            n += images.shape[0]
            loss = torch.nn.functional.cross_entropy(net(images), (labels > 0).long())
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(float(loss.detach()))
    assert n == 16 and nuclei >= 12
    assert all(np.isfinite(losses)) and not torch.equal(w0, net[0].weight)


def test_folder_of_slides(slide_file, tmp_path):
    from insmix_fast.wsi import list_slides

    folder = slide_file.path.parent
    assert list_slides(folder) == [slide_file.path]
    src = WSIPatchSource(folder, patch=128, mpp=0.5, patches_per_epoch=4, seed=0)
    assert src.annotations[0] is not None and len(src) == 4
    with pytest.raises(Exception, match="no slide files"):
        list_slides(tmp_path)


def test_stripped_and_ome_tiff(tmp_path):
    import tifffile

    rng = np.random.default_rng(0)
    a = rng.integers(0, 255, (300, 410, 3), dtype=np.uint8)
    p = tmp_path / "strips.tif"
    tifffile.imwrite(p, a, photometric="rgb", rowsperstrip=64, compression="zlib", metadata=None,
                     resolution=(1e4 / 0.5, 1e4 / 0.5), resolutionunit="CENTIMETER")
    s = open_slide(p, "tifffile")
    assert s.mpp == pytest.approx(0.5) and s.level_count == 1
    assert np.array_equal(s.read_level(0, 0, 0, 410, 300), a)
    assert np.array_equal(s.read(33, 61, 100, 150), a[61:211, 33:133])
    # OME-TIFF with a SubIFD pyramid and PhysicalSizeX
    q = tmp_path / "pyr.ome.tif"
    with tifffile.TiffWriter(q) as tw:
        tw.write(a, subifds=1, tile=(128, 128), photometric="rgb", compression="zlib",
                 metadata={"axes": "YXS", "PhysicalSizeX": 0.25, "PhysicalSizeY": 0.25})
        tw.write(a[::2, ::2].copy(), subfiletype=1, tile=(128, 128), photometric="rgb", compression="zlib")
    o = open_slide(q)
    assert o.backend == "tifffile" and o.mpp == pytest.approx(0.25)
    assert o.level_dimensions == [(410, 300), (205, 150)] and o.best_level(0.5) == 1
    assert np.array_equal(o.read(20, 40, 50, 30, 0.5), a[::2, ::2][20:50, 10:60])
    with pytest.raises(Exception, match="level must be in"):
        o.read_level(2, 0, 0, 4, 4)


@pytest.mark.parametrize("chunk", [7, 64, 1 << 20])
def test_geojson_streaming_parser(tmp_path, slide_file, chunk):
    from insmix_fast.wsi.jsonscan import scan_annotations

    def scan(path):
        parts = [[], []]
        info = scan_annotations(path, lambda pts, rl, *_: (parts[0].append(pts.copy()), parts[1].append(rl.copy())),
                                chunk=chunk)
        return np.concatenate(parts[0]), np.concatenate(parts[1]), info

    ref = Annotations.load(slide_file.npz)
    pts, rings, info = scan(slide_file.geojson)
    assert info.polygons == slide_file.n_nuclei and info.raw_names == ["Nucleus"]
    assert np.array_equal(pts, ref.points) and np.array_equal(rings, np.diff(ref.ring_offsets))
    doc = json.loads(slide_file.geojson.read_text())
    lst = tmp_path / "list.json"
    lst.write_text(json.dumps(doc["features"][:5], indent=2))
    assert np.array_equal(scan(lst)[0], ref.points[:ref.ring_offsets[5]])
    cut = tmp_path / "cut.geojson"
    text = slide_file.geojson.read_text()
    cut.write_text(text[: len(text) // 2])
    with pytest.raises(ReaderError, match="cut.geojson.*unexpected end of file"):
        scan(cut)
    ann = read_geojson(slide_file.geojson)
    assert np.array_equal(ann.points, ref.points) and np.array_equal(ann.poly_offsets, ref.poly_offsets)


def test_annotation_store_mmap_and_pickle(slide_file, tmp_path):
    a = Annotations.load(slide_file.npz)
    assert not a.points.flags.writeable and not a.points.flags.owndata   # mapped read-only from the file
    blob = pickle.dumps(a)
    assert len(blob) < 1000                                  # the path, not the arrays
    b = pickle.loads(blob)
    full = Annotations.load(slide_file.npz, mmap=False)
    assert full.points.flags.writeable and len(pickle.dumps(full)) > 100_000
    for x in (a, b, full):
        assert np.array_equal(x.rasterize(512, 512, (300, 300)), full.rasterize(512, 512, (300, 300)))
        assert np.array_equal(x.query(0, 0, 900, 900), full.query(0, 0, 900, 900))
    # a store from an older writer without the saved index still loads (index rebuilt)
    old = tmp_path / "old.npz"
    np.savez(old, points=full.points, ring_offsets=full.ring_offsets, poly_offsets=full.poly_offsets)
    c = Annotations.load(old)
    assert np.array_equal(c.bbox, full.bbox) and np.array_equal(c.query(0, 0, 900, 900), full.query(0, 0, 900, 900))
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"PK\x03\x04garbage")
    with pytest.raises(ReaderError, match="bad.npz"):
        Annotations.load(bad)


def test_deflate_slide_without_imagecodecs_path(tmp_path, slide_file):
    info = write_synthetic_slide(tmp_path / "d.tif", 2048, mpp=0.25, seed=3, compression="deflate", annotations="npz")
    assert info.compression == "deflate" and info.n_nuclei == slide_file.n_nuclei
    d, j = open_slide(info.path), open_slide(slide_file.path)
    for args in [(0, 0, 2048, 2048, 2.0), (600, 700, 256, 256, 0.25)]:
        a, b = d.read(*args).astype(int), j.read(*args).astype(int)
        assert np.abs(a - b).mean() < (4 if slide_file.compression == "jpeg" else 0.001)
    assert np.array_equal(Annotations.load(info.npz).points, Annotations.load(slide_file.npz).points)


def test_prefetch_threads_same_patches(slide_file):
    kw = dict(patch=128, mpp=0.5, mode="grid", overlap=32, shuffle=False, seed=0)
    plain, ahead = WSIPatchSource(slide_file.path, **kw), WSIPatchSource(slide_file.path, prefetch=3, **kw)
    for i in list(range(len(plain))) + [5, 2, 9]:
        a, b = plain[i], ahead[i]
        assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])
    ahead.set_epoch(1)
    plain.set_epoch(1)
    assert np.array_equal(ahead[0][1], plain[0][1])
    back = pickle.loads(pickle.dumps(ahead))
    assert np.array_equal(back[1][0], plain[1][0])
    ahead.close()


def test_slide_without_annotation_file_warns_once(tmp_path, slide_file):
    import shutil
    import warnings

    bare = tmp_path / ("bare" + Path(slide_file.path).suffix)
    shutil.copy(slide_file.path, bare)  # no <stem>.geojson/.json/.npz beside it
    with pytest.warns(UserWarning, match=r"1 of 2 slide\(s\) have no annotation file.*all-zero labels.*bare") as rec:
        WSIPatchSource([slide_file.path, bare], patch=128, mpp=0.5, patches_per_epoch=4, seed=0)
    assert len([w for w in rec if "annotation file" in str(w.message)]) == 1
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # annotated slides alone: no warning
        WSIPatchSource(slide_file.path, patch=128, mpp=0.5, patches_per_epoch=4, seed=0)
