"""Deterministic per-epoch order and sharding of sample indices across ranks.

Used by the loader and the whole-slide patch sources: every rank computes the
same permutation from ``(seed, epoch)`` — no communication — and takes its own
slice, so shards are disjoint and together cover the epoch (SPEC §6 keying:
nothing depends on a clock or on DALI's internal RNG).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

from .errors import ConfigError
from .validation import check_int

__all__ = ["DistInfo", "dist_info", "epoch_order", "shard_indices"]

_ORDER_STREAM = 0x4F524452  # "ORDR": keeps the order stream apart from other uses of the seed


@dataclass(frozen=True)
class DistInfo:
    rank: int
    world_size: int


def dist_info(rank: int | None = None, world_size: int | None = None) -> DistInfo:
    """Rank and world size: explicit values, else ``torch.distributed`` if initialised,
    else the ``RANK``/``WORLD_SIZE`` variables ``torchrun`` sets, else (0, 1)."""
    if rank is None or world_size is None:
        r, w = 0, 1
        try:
            import torch.distributed as tdist

            if tdist.is_available() and tdist.is_initialized():
                r, w = tdist.get_rank(), tdist.get_world_size()
            else:
                r, w = int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))
        except ImportError:
            r, w = int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))
        rank = r if rank is None else rank
        world_size = w if world_size is None else world_size
    world_size = check_int("world_size", world_size, 1)
    rank = check_int("rank", rank, 0, world_size - 1)
    return DistInfo(rank, world_size)


def epoch_order(n: int, *, seed: int, epoch: int, shuffle: bool = True) -> np.ndarray:
    """The epoch's order of ``range(n)``: a permutation drawn from ``(seed, epoch)`` (Philox)."""
    if n < 0:
        raise ConfigError(f"n must be ≥ 0, got {n}")
    if not shuffle:
        return np.arange(n, dtype=np.int64)
    ss = np.random.SeedSequence([int(seed) & (2**64 - 1), int(epoch), _ORDER_STREAM])
    return np.random.Generator(np.random.Philox(ss)).permutation(n).astype(np.int64)


def shard_indices(n: int, *, rank: int = 0, world_size: int = 1, seed: int = 0, epoch: int = 0,
                  shuffle: bool = True, drop_last: bool = False) -> np.ndarray:
    """This rank's indices for one epoch.

    As ``torch.utils.data.DistributedSampler``: with ``drop_last=False`` the order is
    padded by wrapping around so every rank gets ``ceil(n / world_size)`` indices;
    with ``drop_last=True`` the tail is dropped so every rank gets ``n // world_size``.
    Rank ``r`` takes positions ``r, r + world_size, …`` of the epoch order.
    """
    info = dist_info(rank, world_size)
    order = epoch_order(n, seed=seed, epoch=epoch, shuffle=shuffle)
    w = info.world_size
    if drop_last:
        order = order[: (n // w) * w]
    elif n and n % w:
        order = np.concatenate([order, np.resize(order, (-n) % w)])
    return order[info.rank::w]
