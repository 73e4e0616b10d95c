"""WSIPatchSource sharding across two torch.distributed (gloo) processes."""

import json
import os

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("tifffile")


def _worker(rank, world, init_file, slide, out_dir, n):
    import torch.distributed as dist

    from insmix_fast.wsi import WSIPatchSource

    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        res = {}
        for mode, kw in (("random", dict(patches_per_epoch=n)), ("grid", dict(overlap=16))):
            src = WSIPatchSource(slide, patch=128, mpp=0.5, mode=mode, seed=11, progress=False, shard=True, **kw)
            assert (src.rank, src.world_size) == (rank, world)  # taken from torch.distributed
            for epoch in (0, 1):
                src.set_epoch(epoch)
                mine = [src.indices.tolist(), src.coords.tolist()]
                gathered = [None] * world
                dist.all_gather_object(gathered, mine)
                # one patch read per rank proves the shard is readable in this process
                img, lab = src[0][:2]  # (image, labels, types): the GeoJSON classifies every nucleus
                assert img.shape == (128, 128, 3)
                res[f"{mode}/{epoch}"] = gathered
        if rank == 0:
            with open(os.path.join(out_dir, "shards.json"), "w") as f:
                json.dump(res, f)
    finally:
        dist.destroy_process_group()


def test_two_rank_gloo_shards_disjoint_and_complete(tmp_path):
    import torch.multiprocessing as mp

    from insmix_fast.wsi import WSIPatchSource, write_synthetic_slide

    info = write_synthetic_slide(tmp_path / "s.tif", 2048, mpp=0.25, seed=3, annotations="geojson")
    n = 40
    mp.spawn(_worker, args=(2, str(tmp_path / "init"), str(info.path), str(tmp_path), n), nprocs=2, join=True)
    res = json.loads((tmp_path / "shards.json").read_text())
    for mode in ("random", "grid"):
        ref = WSIPatchSource(info.path, patch=128, mpp=0.5, mode=mode, seed=11, rank=0, world_size=1,
                             **(dict(patches_per_epoch=n) if mode == "random" else dict(overlap=16)))
        for epoch in (0, 1):
            ref.set_epoch(epoch)
            (i0, c0), (i1, c1) = res[f"{mode}/{epoch}"]
            total = len(ref)
            assert abs(len(i0) - len(i1)) == 0
            if total % 2 == 0:
                assert not set(i0) & set(i1)                              # disjoint
            assert set(i0) | set(i1) == set(range(total))                 # complete
            got = sorted(map(tuple, c0 + c1))
            want = sorted(map(tuple, ref.coords.tolist()))
            if total % 2 == 0:
                assert got == want
            else:
                assert set(got) == set(want)
            assert np.array_equal(np.array(c0), ref.coords[np.array(i0)])
