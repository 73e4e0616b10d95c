import numpy as np
import pytest

from insmix_fast.errors import ConfigError
from insmix_fast.sharding import dist_info, epoch_order, shard_indices


def test_order_is_a_seeded_permutation_per_epoch():
    a = epoch_order(100, seed=1, epoch=0)
    assert sorted(a.tolist()) == list(range(100))
    assert np.array_equal(a, epoch_order(100, seed=1, epoch=0))
    assert not np.array_equal(a, epoch_order(100, seed=1, epoch=1))
    assert not np.array_equal(a, epoch_order(100, seed=2, epoch=0))
    assert np.array_equal(epoch_order(5, seed=1, epoch=3, shuffle=False), np.arange(5))


@pytest.mark.parametrize("n,world", [(10, 3), (12, 4), (7, 1), (3, 5)])
def test_shards_are_disjoint_and_complete(n, world):
    shards = [shard_indices(n, rank=r, world_size=world, seed=4, epoch=2) for r in range(world)]
    assert len({len(s) for s in shards}) == 1 and len(shards[0]) == -(-n // world)
    flat = np.concatenate(shards)
    assert set(flat.tolist()) == set(range(n))
    if n % world == 0:
        assert len(flat) == len(set(flat.tolist()))
    dropped = [shard_indices(n, rank=r, world_size=world, seed=4, epoch=2, drop_last=True) for r in range(world)]
    flat = np.concatenate(dropped)
    assert len(flat) == (n // world) * world and len(set(flat.tolist())) == len(flat)


def test_dist_info_from_environment_and_bad_values(monkeypatch):
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "4")
    assert dist_info() == dist_info(1, 4)
    with pytest.raises(ConfigError, match="rank"):
        dist_info(4, 4)
    with pytest.raises(ConfigError, match="world_size"):
        dist_info(0, 0)
