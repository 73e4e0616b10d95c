"""Every indexed data set shares IndexedDataset's indexing: ints, negatives, slices, one error type."""

from __future__ import annotations

import numpy as np
import pytest

from insmix_fast.data import FolderDataset, MoNuSegDataset, SyntheticNuclei, write_folder
from insmix_fast.data.base import IndexedDataset
from insmix_fast.errors import InputTypeError


def _monuseg(root, tiles):
    import cv2

    root.mkdir()
    for k, (img, lab) in enumerate(tiles):
        cv2.imwrite(str(root / f"t{k}.png"), img[:, :, ::-1])
        regions = []
        for i in np.unique(lab)[1:]:
            ys, xs = np.nonzero(lab == i)
            box = [(xs.min(), ys.min()), (xs.max(), ys.min()), (xs.max(), ys.max()), (xs.min(), ys.max())]
            verts = "".join(f'<Vertex X="{x}" Y="{y}"/>' for x, y in box)
            regions.append(f'<Region Id="{i}"><Vertices>{verts}</Vertices></Region>')
        (root / f"t{k}.xml").write_text(f"<Annotations><Annotation><Regions>{''.join(regions)}</Regions>"
                                        "</Annotation></Annotations>")
    return MoNuSegDataset(root)


@pytest.fixture(scope="module")
def datasets(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("idx")
    syn = SyntheticNuclei(seed=3, size=64, length=3)
    tiles = [syn[k] for k in range(3)]
    out = {"synthetic": syn, "folder": FolderDataset(write_folder(tmp / "f", tiles)),
           "monuseg": _monuseg(tmp / "m", tiles)}
    try:
        from insmix_fast.wsi import WSIPatchSource, write_synthetic_slide
    except ImportError:  # pragma: no cover - the wsi extra
        return out
    info = write_synthetic_slide(tmp / "s.tif", 1024, seed=4, gen_tile=256, unique_tiles=2, compression="deflate")
    out["wsi"] = WSIPatchSource(info.path, patch=64, mpp=0.25, patches_per_epoch=3, min_tissue=0.0, progress=False)
    return out


@pytest.mark.parametrize("name", ["synthetic", "folder", "monuseg", "wsi"])
def test_indexing_is_the_same_everywhere(datasets, name):
    if name not in datasets:
        pytest.skip("the wsi extra (tifffile) is not installed")
    ds = datasets[name]
    assert isinstance(ds, IndexedDataset) and len(ds) == 3
    last = ds[2]
    for k in (-1, np.int64(2), np.uint8(2)):
        assert all(np.array_equal(a, b) for a, b in zip(ds[k], last))
    sl = ds[1:]
    assert isinstance(sl, list) and len(sl) == 2 and np.array_equal(sl[1][1], last[1])
    assert ds[::-2][0][0].shape == last[0].shape and ds[5:] == []
    for bad in (3, -4):
        with pytest.raises(IndexError, match="out of range for length 3"):
            ds[bad]
    for bad in ("0", 1.0, True, None):
        with pytest.raises(InputTypeError, match="indices must be integers or slices"):
            ds[bad]
