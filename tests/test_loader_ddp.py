"""InsMixLoader under torch.distributed: 2 CPU processes (gloo), ranks from the process group."""

import json
import socket

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from insmix_fast.loader import dali_available
from insmix_fast.loader.stages import IMAGENET_MEAN, IMAGENET_STD

N = 13  # not a multiple of the world size: the last shard is padded by wrapping around


class IndexSource:
    def __len__(self):
        return N

    def __getitem__(self, i):
        return np.full((16, 16, 3), i, np.uint8), np.zeros((16, 16), np.int32)


def _decode(images):
    v = images[:, 0, 0, 0].double() * 255 * IMAGENET_STD[0] + 255 * IMAGENET_MEAN[0]
    return torch.round(v).long().tolist()


def _worker(rank, world, port, out, backends):
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    try:
        from insmix_fast.loader import InsMixLoader

        res = {}
        for backend in backends:
            loader = InsMixLoader(IndexSource(), batch_size=3, crop=16, insmix=False, augment=False,
                                  backend=backend, seed=7)
            assert (loader.rank, loader.world_size) == (rank, world)
            epochs = [sum((_decode(i) for i, _ in loader), []) for _ in range(2)]
            res[backend] = {"len": len(loader), "epochs": epochs}
            loader.close()
        gathered = [None] * world
        dist.all_gather_object(gathered, res)
        if rank == 0:
            with open(out, "w") as f:
                json.dump(gathered, f)
    finally:
        dist.destroy_process_group()


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.skipif(not dist.is_available() or not dist.is_gloo_available(), reason="torch.distributed with gloo needed")
def test_ddp_ranks_get_disjoint_complete_shards(tmp_path):
    backends = ["torch"] + (["dali"] if dali_available() else [])
    out = tmp_path / "shards.json"
    mp.spawn(_worker, args=(2, _free_port(), str(out), backends), nprocs=2, join=True)
    ranks = json.loads(out.read_text())
    for backend in backends:
        per_rank = [r[backend] for r in ranks]
        assert [r["len"] for r in per_rank] == [3, 3]  # ceil(ceil(13 / 2) / 3)
        for e in range(2):
            a, b = (r["epochs"][e] for r in per_rank)
            assert len(a) == len(b) == 7
            assert set(a) | set(b) == set(range(N))  # complete
            assert len(set(a) & set(b)) == 1  # disjoint but for the one wrap-around pad sample
            assert len(set(a)) == len(a) and len(set(b)) == len(b)
        assert per_rank[0]["epochs"][0] != per_rank[0]["epochs"][1]  # reshuffled per epoch
    if len(backends) == 2:
        assert ranks[0]["torch"] == ranks[0]["dali"] and ranks[1]["torch"] == ranks[1]["dali"]
