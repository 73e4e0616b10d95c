"""Epoch plan and resumable position of an :class:`~insmix_fast.loader.InsMixLoader`.

The plan of one epoch is a pure function of ``(n, seed, epoch, rank, world_size,
shuffle, drop_last, batch_size)``:

* the epoch order is :func:`insmix_fast.sharding.epoch_order` (Philox keyed by
  ``(seed, epoch)``); with ``drop_last=False`` it is padded by wrapping around to a
  multiple of ``world_size`` (as ``DistributedSampler``), with ``drop_last=True`` the
  tail is cut;
* *global position* ``p`` is a slot of that (padded) order — the same on every rank —
  and rank ``r`` takes positions ``r, r + world_size, …``;
* the rank's positions are cut into batches of ``batch_size`` (the last one partial
  unless ``drop_last``).

Every per-sample random key is derived from ``(seed, epoch, p)``, so a sample's
augmentation depends neither on the batch it lands in, nor on the number of
workers, the backend or the rank that draws it.

:class:`LoaderState` is the loader's position: the epoch and the number of batches
of it already handed out. It is all that ``state_dict()`` needs, plus the settings it
was taken under (checked by ``load_state_dict``).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from ..errors import ConfigError, InputError, InputTypeError
from ..sharding import epoch_order
from ..validation import check_bool, check_int, check_seed

__all__ = ["EpochPlan", "LoaderState", "epoch_plan", "STATE_VERSION"]

STATE_VERSION = 1


@dataclass(frozen=True)
class EpochPlan:
    """One rank's epoch: ``positions[b]`` / ``indices[b]`` are batch ``b``'s global
    positions and source indices (int64 arrays of equal length)."""

    epoch: int
    positions: list[np.ndarray]
    indices: list[np.ndarray]

    def __len__(self) -> int:
        return len(self.positions)

    @property
    def all_indices(self) -> np.ndarray:
        return np.concatenate(self.indices) if self.indices else np.zeros(0, np.int64)


def n_batches(n: int, batch_size: int, world_size: int, drop_last: bool) -> int:
    """Batches per epoch on one rank."""
    per_rank = n // world_size if drop_last else -(-n // world_size)
    return per_rank // batch_size if drop_last else -(-per_rank // batch_size)


def epoch_plan(n: int, *, batch_size: int, seed: int, epoch: int, rank: int = 0, world_size: int = 1,
               shuffle: bool = True, drop_last: bool = False) -> EpochPlan:
    """The batches of ``epoch`` for ``rank`` (see the module docstring)."""
    if n < 1:
        raise ConfigError(f"the source is empty (n = {n})")
    if epoch < 0:
        raise ConfigError(f"epoch must be ≥ 0, got {epoch}")
    order = epoch_order(n, seed=seed, epoch=epoch, shuffle=shuffle)
    if drop_last:
        total = (n // world_size) * world_size
        order = order[:total]
    else:
        total = -(-n // world_size) * world_size
        if total > n:
            order = np.concatenate([order, np.resize(order, total - n)])
    pos = np.arange(rank, total, world_size, dtype=np.int64)
    idx = order[pos]
    nb = n_batches(n, batch_size, world_size, drop_last)
    positions = [pos[b * batch_size:(b + 1) * batch_size] for b in range(nb)]
    indices = [idx[b * batch_size:(b + 1) * batch_size] for b in range(nb)]
    return EpochPlan(int(epoch), positions, indices)


@dataclass
class LoaderState:
    """Where a loader stands: ``epoch`` and ``batch`` = batches of it already yielded."""

    epoch: int = 0
    batch: int = 0
    # the settings the position refers to (checked on load)
    seed: int = 0
    n: int = 0
    batch_size: int = 1
    world_size: int = 1
    rank: int = 0
    shuffle: bool = True
    drop_last: bool = False
    version: int = STATE_VERSION

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d) -> "LoaderState":
        """A state from ``state_dict()``'s dict, every field checked: integers must be ints
        (numpy integers accepted; bools, floats and strings are not), flags bools, all in range
        — ``ConfigError`` names the field otherwise. Unknown fields are refused too."""
        if not isinstance(d, dict):
            raise ConfigError(f"a loader state must be a dict (from state_dict()), got {type(d).__name__}")
        missing = [k for k in ("epoch", "batch", "seed", "n", "batch_size", "world_size", "rank") if k not in d]
        if missing:
            raise ConfigError(f"loader state lacks {missing}; pass what InsMixLoader.state_dict() returned")
        unknown = sorted(str(k) for k in d if k not in cls.__dataclass_fields__)
        if unknown:
            raise ConfigError(f"loader state has unknown fields {unknown}; pass what InsMixLoader.state_dict() returned")
        version = check_int("loader state 'version'", d.get("version", STATE_VERSION))
        if version != STATE_VERSION:
            raise ConfigError(f"loader state version {version} is not supported (expected {STATE_VERSION})")
        v = {k: check_int(f"loader state {k!r}", d[k], lo)
             for k, lo in (("epoch", 0), ("batch", 0), ("n", 1), ("batch_size", 1), ("world_size", 1), ("rank", 0))}
        if v["rank"] >= v["world_size"]:
            raise ConfigError(f"loader state 'rank' {v['rank']} must be < 'world_size' {v['world_size']}")
        try:
            seed = check_seed(d["seed"])
        except (InputError, InputTypeError) as e:
            raise ConfigError(f"loader state 'seed': {e}") from None
        flags = {k: check_bool(f"loader state {k!r}", d[k]) for k in ("shuffle", "drop_last") if k in d}
        return cls(seed=seed, version=version, **v, **flags)

    def check_compatible(self, other: "LoaderState") -> None:
        """Raise if ``other`` (a saved state) was taken under different settings."""
        diff = [f"{k}: saved {getattr(other, k)!r}, loader {getattr(self, k)!r}"
                for k in ("seed", "n", "batch_size", "world_size", "rank", "shuffle", "drop_last")
                if getattr(self, k) != getattr(other, k)]
        if diff:
            raise ConfigError("cannot resume: the saved state was taken with other settings (" + "; ".join(diff) + ")")
