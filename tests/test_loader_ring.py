"""The torch backend's shared-memory ring (CPU workers write finished batches into reusable
slots): batches equal the in-process ones, survive later batches, and passes that are abandoned
midway leave no slot taken."""

import pytest
import torch

from typed_data import CLASS_NAMES, TypedTiles

from insmix_fast import InstanceBank
from insmix_fast.loader import InsMixLoader
from insmix_fast.loader.torch_backend import _Ring


@pytest.fixture(scope="module")
def data(small_data):
    return small_data


@pytest.fixture(scope="module")
def bank(small_bank):
    return small_bank


def collect(it):
    return [tuple(t.clone() for t in b) for b in it]


def same(a, b):
    return len(a) == len(b) and all(len(x) == len(y) and all(torch.equal(u, v) for u, v in zip(x, y))
                                    for x, y in zip(a, b))


def test_workers_use_the_ring_and_kept_batches_stay_intact(data, bank):
    """Batches kept by reference over two passes (8 batches through 4 slots: each slot reused)
    equal the in-process batches."""
    kw = dict(bank=bank, batch_size=2, crop=64, backend="torch", seed=5)
    lo0 = InsMixLoader(data, **kw)
    want = [collect(lo0), collect(lo0)]
    with InsMixLoader(data, num_workers=2, prefetch=1, **kw) as lo:
        assert lo._impl.ring is not None and lo._impl.ring.n_slots == 1 * 2 + 2
        kept = [list(lo), list(lo)]  # references only, no copies
    assert len(kept[0]) == 4 and same(kept[0], want[0]) and same(kept[1], want[1])


def test_an_abandoned_pass_leaves_no_slot_taken(data, bank):
    def run(**kw):
        lo = InsMixLoader(data, bank=bank, batch_size=4, crop=64, backend="torch", seed=5, **kw)
        with lo:
            for _ in range(3):
                for _batch in lo:
                    break  # the workers have prefetched into slots that are never finished
            return collect(lo), lo._impl.ring

    want, _ = run()
    got, ring = run(num_workers=2, prefetch=2)
    assert same(got, want)
    assert sorted(ring._free) == list(range(ring.n_slots))  # every slot free again after a full pass


def test_typed_batches_with_a_blender_through_the_ring():
    from insmix_fast.gan import Blender, Generator

    data = TypedTiles(seed=4, size=96, n=6)
    bank = InstanceBank.from_samples(data, progress=False, class_names=CLASS_NAMES)
    torch.manual_seed(0)
    blender = Blender(Generator(width=4))
    kw = dict(bank=bank, batch_size=4, crop=64, backend="torch", seed=7, blender=blender)
    want = collect(InsMixLoader(data, **kw))
    with InsMixLoader(data, num_workers=2, **kw) as lo:
        assert lo._impl.ring is not None and "types" in lo._impl.ring.arrays and "paste" in lo._impl.ring.arrays
        got = collect(lo)
    assert all(len(b) == 3 for b in got) and same(got, want)


def test_ring_refuses_to_hand_out_a_slot_twice():
    ring = _Ring(2, 1, 8, typed=False, masks=False)
    a, b = ring.take(), ring.take()
    assert {a, b} == {0, 1}
    with pytest.raises(RuntimeError, match="slots are in use"):
        ring.take()
    ring.release(a)
    assert ring.take() == a


def test_no_ring_without_workers_or_on_the_device_path(data, bank):
    assert InsMixLoader(data, bank=bank, batch_size=4, crop=64, backend="torch")._impl.ring is None
    with InsMixLoader(data, bank=bank, batch_size=4, crop=64, backend="torch", num_workers=1,
                      augment_on="device") as lo:
        assert lo._impl.ring is None
