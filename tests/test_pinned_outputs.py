"""Seeded generators keep their exact output across refactors.

The hashes below were taken from the code before ``SyntheticNuclei._geometry`` and
``write_synthetic_slide`` were split into smaller functions (issue 12): the split must keep
the order of random draws, so every tile and every slide pixel stays bit-identical.
A change of OpenCV (``fillPoly``, ``GaussianBlur``, ``resize``) or of numpy's Philox/PCG64
streams may legitimately change them; then re-pin after checking the pictures.
"""

from __future__ import annotations

import hashlib

import numpy as np
import pytest

from insmix_fast.data import SyntheticNuclei


def _digest(*arrays) -> str:
    h = hashlib.sha256()
    for a in arrays:
        a = np.ascontiguousarray(a)
        h.update(str((a.dtype.str, a.shape)).encode())
        h.update(a.tobytes())
    return h.hexdigest()[:16]


SYNTHETIC_CASES = {
    "default": (dict(seed=0, size=128, length=3), "9cc66929e858180a"),
    "dense-touching": (dict(seed=5, size=(96, 160), length=3, density=2.0, touching=0.8, clustering=1.0),
                       "991cd304a510e50d"),
    "uniform-other-stain": (dict(seed=2**63 + 7, size=64, length=3, clustering=0.0, elongation=(1.5, 3.0),
                                 radius_range=(2.0, 8.0), stain=[[0.35, 0.55, 0.76], [0.07, 0.99, 0.11]],
                                 blur=0.0, noise=0.0), "01b093a17b54947c"),
}


@pytest.mark.parametrize("case", sorted(SYNTHETIC_CASES))
def test_synthetic_nuclei_tiles_are_pinned(case):
    kw, want = SYNTHETIC_CASES[case]
    ds = SyntheticNuclei(**kw)
    got = _digest(*(a for k in range(len(ds)) for a in ds[k]))
    assert got == want, f"{case}: SyntheticNuclei output changed (got {got})"


SLIDE_CASES = {
    "hashed-tiles": (dict(size=(1000, 1200), mpp=0.5, seed=4, gen_tile=256, tile=128, unique_tiles=3),
                     (6, 197, "3f5a9cf9d7ccbfe5", "b9a79ab4b0de04f2")),
    "distinct-tiles": (dict(size=700, mpp=0.25, seed=1, gen_tile=128, tile=256, unique_tiles=None,
                            downsamples=(1, 2, 8)), (13, 104, "074bfd8f98df0968", "b34aa5a574f8e089")),
}


@pytest.mark.parametrize("case", sorted(SLIDE_CASES))
def test_synthetic_slide_is_pinned(case, tmp_path):
    tifffile = pytest.importorskip("tifffile")
    from insmix_fast.wsi import write_synthetic_slide

    kw, want = SLIDE_CASES[case]
    info = write_synthetic_slide(tmp_path / "s.tif", compression="deflate", annotations="geojson", **kw)
    with tifffile.TiffFile(info.path) as tf:
        levels = [p.asarray() for p in tf.pages]
    assert [lv.shape[:2] for lv in levels] == [(-(-info.size[0] // d), -(-info.size[1] // d)) for d in info.downsamples]
    got = (info.n_tissue_tiles, info.n_nuclei, _digest(*levels), hashlib.sha256(info.geojson.read_bytes()).hexdigest()[:16])
    assert got == want, f"{case}: write_synthetic_slide output changed (got {got})"
