"""The CPU DALI graph's one operator per sample (``insmix_fast.loader.dali_sample``): the kernel
itself (no DALI needed) against the functional calls, and the loader paths that use it or not."""

import numpy as np
import pytest
import torch

from typed_data import CLASS_NAMES, TypedTiles

from insmix_fast import InstanceBank, InsMixConfig, insmix
from insmix_fast.core import kernel_templates
from insmix_fast.errors import BankError, ConfigError, InputTypeError, LabelMapError
from insmix_fast.loader import InsMixLoader, dali_available
from insmix_fast.loader.dali_sample import (R_HEADER, STATUS_WIDTH, bank_descriptor, sample_kernel, sample_rows)
from insmix_fast.loader.stages import IMAGENET_MEAN, IMAGENET_STD

needs_dali = pytest.mark.skipif(not dali_available(), reason="NVIDIA DALI is not installed (pip install nvidia-dali-cuda120)")

MEAN = [255.0 * m for m in IMAGENET_MEAN]
INV = [1.0 / (255.0 * s) for s in IMAGENET_STD]


def grid(size, pitch=5, r=3, seed=0):
    """A crowded tile: a grid of r×r nuclei every ``pitch`` pixels (hundreds of instances)."""
    rng = np.random.default_rng(seed)
    image = rng.integers(120, 220, (size, size, 3), dtype=np.uint8)
    labels = np.zeros((size, size), np.int32)
    k = 0
    for y in range(1, size - r, pitch):
        for x in range(1, size - r, pitch):
            k += 1
            labels[y:y + r, x:x + r] = k
            image[y:y + r, x:x + r] = rng.integers(20, 80, 3, dtype=np.uint8)
    return image, labels


def normalised(image):
    return ((image.astype(np.float32) - np.float32(MEAN)) * np.float32(INV)).transpose(2, 0, 1)


def run_kernel(image, labels, bank, config, *, seed, index, coin=True, typed_classes=None, maxid=None):
    table, classes, params, n_classes, _ = kernel_templates(bank, config, typed_classes is not None)
    desc, keep = bank_descriptor(table, classes)
    row = sample_rows(1, seed=seed, positions=[index], sources=[3], coin=[coin], augment=False, params=params,
                      n_classes=n_classes, mean=MEAN, inv=INV,
                      classes=None if typed_classes is None else typed_classes[None],
                      maxid=None if maxid is None else [maxid])[0]
    h, w = labels.shape
    out_image = np.empty((3, h, w), np.float32)
    out_labels = np.empty((h, w), np.int64)
    out_types = np.empty((h, w), np.int64) if typed_classes is not None else None
    status = np.empty(STATUS_WIDTH, np.int64)
    stand_in = np.zeros(1, np.int64)
    sample_kernel(out_image, out_labels, out_types, status, image, labels, stand_in, stand_in, row, desc)
    del keep  # (alive until here)
    return out_image, out_labels, out_types, status


def test_kernel_equals_insmix_and_grows_its_record_tables():
    """A tile with hundreds of pastes (more than the first record tables hold): the operator's
    plan is planned again with room, and the sample equals the functional insmix()."""
    image, labels = grid(128)
    bank = InstanceBank.from_samples([grid(128, seed=s) for s in (1, 2)], progress=False, min_area=1)
    cfg = InsMixConfig(p_paste=1.0)
    want = insmix(image, labels, bank, cfg, seed=11, index=4)
    assert len(want.pastes) > 256  # the case under test
    out_image, out_labels, _, status = run_kernel(image, labels, bank, cfg, seed=11, index=4)
    assert not status[:STATUS_WIDTH - 1].any() and status[-1] == 3
    np.testing.assert_array_equal(out_labels, want.labels)
    np.testing.assert_array_equal(out_image, normalised(want.image))


def test_kernel_without_the_coin_only_normalises():
    image, labels = grid(64)
    bank = InstanceBank.from_samples([grid(64, seed=1)], progress=False, min_area=1)
    out_image, out_labels, _, status = run_kernel(image, labels, bank, InsMixConfig(), seed=1, index=0, coin=False)
    np.testing.assert_array_equal(out_labels, labels)
    np.testing.assert_array_equal(out_image, normalised(image))
    assert not status[:STATUS_WIDTH - 1].any()


def test_kernel_reports_a_class_outside_the_bank_instead_of_pasting():
    data = TypedTiles(seed=4, size=64, n=3)
    bank = InstanceBank.from_samples(data, progress=False, class_names=CLASS_NAMES)
    image, labels, types = data[0]
    top = int(labels.max())
    classes = np.zeros(top + 1, np.int32)
    classes[labels[labels > 0]] = types[labels > 0]
    wrong = classes.copy()
    v = int(labels[labels > 0][0])
    wrong[v] = len(CLASS_NAMES) + 3
    out_image, out_labels, out_types, status = run_kernel(image, labels, bank, InsMixConfig(), seed=0, index=0,
                                                          typed_classes=wrong, maxid=top)
    code, y, x, vid, cls = (int(a) for a in status[:5])
    assert code != 0 and vid == v and cls == len(CLASS_NAMES) + 3 and labels[y, x] == v
    np.testing.assert_array_equal(out_labels, labels)  # nothing pasted
    # and with the right classes the type map follows the labels
    _, lab2, typ2, status2 = run_kernel(image, labels, bank, InsMixConfig(), seed=0, index=0,
                                        typed_classes=classes, maxid=top)
    assert not status2[:STATUS_WIDTH - 1].any()
    assert ((typ2 > 0) == (lab2 > 0)).all() and int(typ2.max()) < len(CLASS_NAMES)


def test_kernel_templates_refuses_what_insmix_batch_refuses():
    image, labels = grid(64)
    bank = InstanceBank.from_samples([grid(64, seed=1)], progress=False, min_area=1)
    with pytest.raises(InputTypeError, match="bank must be an InstanceBank"):
        kernel_templates("bank.npz", InsMixConfig(), False)
    with pytest.raises(InputTypeError, match="config must be an InsMixConfig"):
        kernel_templates(bank, {"p_paste": 1.0}, False)
    with pytest.raises(ConfigError, match="template_source='self'"):
        kernel_templates(bank, InsMixConfig(template_source="self"), False)
    with pytest.raises(ConfigError, match="typed instance bank"):
        kernel_templates(bank, InsMixConfig(template_class="balanced"), False)
    with pytest.raises(BankError, match="untyped"):
        kernel_templates(bank, InsMixConfig(), True)
    table, classes, params, n_classes, names = kernel_templates(bank, None, False)
    assert len(table.area) == len(bank) and params.patch == InsMixConfig().patch and names is None


def test_rows_carry_the_seed_bits_and_the_classes():
    rows = sample_rows(2, seed=2**64 - 5, positions=[7, 8], sources=[1, 2], coin=[True, False], augment=True,
                       params=None, n_classes=4, mean=MEAN, inv=INV, classes=np.array([[0, 1, 2], [0, 3, 0]]),
                       maxid=[2, 1])
    assert rows.shape == (2, R_HEADER + 3)
    assert rows[0, 0].astype(np.int64).view(np.uint64) == 2**64 - 5
    assert rows[:, R_HEADER:].tolist() == [[0, 1, 2], [0, 3, 0]]


# ---------------------------------------------------------------------- through the loader
class Tiles:
    def __init__(self, n, size, pitch=5, r=3):
        self.samples = [grid(size, pitch, r, seed=s) for s in range(n)]

    def __len__(self):
        return len(self.samples)

    def __getitem__(self, i):
        return self.samples[i]


def collect(it):
    return [tuple(t.clone() for t in b) for b in it]


def same(a, b):
    return len(a) == len(b) and all(all(torch.equal(u, v) for u, v in zip(x, y)) for x, y in zip(a, b))


@needs_dali
@pytest.mark.parametrize("augment", [True, False])
def test_crowded_tiles_give_the_torch_batches(augment):
    data = Tiles(4, 136)
    bank = InstanceBank.from_samples(data, progress=False, min_area=1)
    kw = dict(bank=bank, batch_size=2, crop=128, seed=3, augment=augment, config=InsMixConfig(p_paste=1.0))
    dali = InsMixLoader(data, backend="dali", num_workers=2, **kw)
    assert dali._impl.fused
    assert same(collect(dali), collect(InsMixLoader(data, backend="torch", **kw)))


@needs_dali
def test_python_stages_stay_for_self_templates_and_give_the_torch_batches():
    data = Tiles(4, 72, pitch=12, r=7)
    cfg = InsMixConfig(template_source="self")
    kw = dict(bank=None, batch_size=2, crop=64, seed=3, config=cfg, insmix=1.0)
    dali = InsMixLoader(data, backend="dali", **kw)
    assert not dali._impl.fused
    assert same(collect(dali), collect(InsMixLoader(data, backend="torch", **kw)))


@needs_dali
@pytest.mark.parametrize("backend", ["torch", "dali"])
def test_a_type_outside_the_bank_s_classes_is_refused(backend):
    data = TypedTiles(seed=4, size=80, n=4)
    bank = InstanceBank.from_samples(data, progress=False, class_names=CLASS_NAMES)

    class Wrong:  # no class_names: the loader cannot tell before it reads the types
        def __len__(self):
            return len(data)

        def __getitem__(self, i):
            image, labels, types = data[i]
            return image, labels, np.where(labels > 0, len(CLASS_NAMES) + 2, 0).astype(np.int32)

    with pytest.raises(LabelMapError, match="not one of the bank's classes"):
        collect(InsMixLoader(Wrong(), bank=bank, batch_size=2, crop=64, backend=backend, seed=1))


@needs_dali
def test_template_class_same_needs_a_typed_bank_in_the_dali_graph_too():
    data = Tiles(2, 72, pitch=12, r=7)
    bank = InstanceBank.from_samples(data, progress=False)
    with pytest.raises(ConfigError, match="typed instance bank"):
        collect(InsMixLoader(data, bank=bank, batch_size=2, crop=64, backend="dali",
                             config=InsMixConfig(template_class="same")))


@needs_dali
@pytest.mark.parametrize("kw", [dict(config=InsMixConfig(template_class="same")), dict(augment=False),
                                dict(insmix=0.5, config=InsMixConfig(template_class="balanced"))],
                         ids=["same", "no-augment", "half-balanced"])
def test_typed_sources_give_the_torch_batches(kw):
    data = TypedTiles(seed=5, size=96, n=6)
    bank = InstanceBank.from_samples(data, progress=False, class_names=CLASS_NAMES)
    args = dict(bank=bank, batch_size=4, crop=64, seed=9, **kw)
    dali = InsMixLoader(data, backend="dali", num_workers=2, **args)
    assert dali._impl.fused
    got, want = collect(dali), collect(InsMixLoader(data, backend="torch", **args))
    assert all(len(b) == 3 for b in got) and same(got, want)


@pytest.mark.parametrize("backend", ["torch", pytest.param("dali", marks=needs_dali)])
def test_crops_with_ids_beyond_the_dense_tables_are_renumbered_without_augmentation_too(backend):
    """Whole-slide label maps carry global ids (here up to ~3·10⁶): each crop is renumbered 1..k
    (in id order) before InsMix — with or without augmentation — and both backends agree."""
    base = Tiles(4, 72, pitch=12, r=7)

    class Sparse:
        def __len__(self):
            return len(base)

        def __getitem__(self, i):
            image, labels = base[i]
            return image, np.where(labels > 0, labels * 50_003 + 17, 0).astype(np.int64)

    bank = InstanceBank.from_samples(base, progress=False)
    kw = dict(bank=bank, batch_size=2, crop=64, seed=4, augment=False, shuffle=False)
    got = collect(InsMixLoader(Sparse(), backend=backend, **kw))
    plain = collect(InsMixLoader(Sparse(), backend=backend, insmix=False, **kw))
    for (_, lab), (_, lab0) in zip(got, plain):
        for k in range(lab0.shape[0]):
            ids = torch.unique(lab0[k])
            assert torch.equal(ids, torch.arange(len(ids)))  # 0, 1..k: renumbered, none lost
        assert int(lab.max()) < 2**16  # pasted nuclei added above them
    if backend == "dali":
        assert same(got, collect(InsMixLoader(Sparse(), backend="torch", **kw)))


@needs_dali
def test_untyped_source_with_a_typed_bank_and_balanced_classes_gives_the_torch_batches():
    """Balanced template classes need no tile classes: the draw picks a class of the typed bank
    (insmix_batch hands the kernels zero classes for the tile; the operator must too)."""
    data = TypedTiles(seed=6, size=96, n=6)
    bank = InstanceBank.from_samples(data, progress=False, class_names=CLASS_NAMES)
    untyped = [s[:2] for s in data.samples]
    args = dict(bank=bank, batch_size=4, crop=64, seed=2, config=InsMixConfig(template_class="balanced"))
    got = collect(InsMixLoader(untyped, backend="dali", **args))
    assert all(len(b) == 2 for b in got)
    assert same(got, collect(InsMixLoader(untyped, backend="torch", **args)))
    assert not same(got, collect(InsMixLoader(untyped, backend="torch", **dict(args, config=InsMixConfig()))))
