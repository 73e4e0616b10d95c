"""Typed sources (``(image, labels, types)``): InsMixLoader yields ``(images, labels, types)``
batches on both backends, the type map aligned with the labels through crop, augmentation and
InsMix (pasted nuclei carry their template's class), the same for every backend and worker count."""

import numpy as np
import pytest
import torch

from typed_data import CLASS_NAMES, TypedTiles

from insmix_fast import InstanceBank, InsMixConfig
from insmix_fast.augment import TraditionalAugment
from insmix_fast.errors import BankError, InputError
from insmix_fast.loader import InsMixLoader, dali_available

needs_dali = pytest.mark.skipif(not dali_available(), reason="NVIDIA DALI is not installed (pip install nvidia-dali-cuda120)")


@pytest.fixture(scope="module")
def data():
    return TypedTiles(seed=4, size=96, n=6)


@pytest.fixture(scope="module")
def bank(data):
    return InstanceBank.from_samples(data, progress=False, class_names=CLASS_NAMES)


def loader(data, bank, **kw):
    kw = dict(dict(batch_size=4, crop=64, backend="torch", seed=7), **kw)
    return InsMixLoader(data, bank=bank, **kw)


def collect(it):
    return [tuple(t.clone() for t in b) for b in it]


def same(a, b):
    return len(a) == len(b) and all(len(x) == len(y) and all(torch.equal(u, v) for u, v in zip(x, y))
                                    for x, y in zip(a, b))


def check_aligned(batches, bank):
    """Every instance has one class ≥ 1 of the bank's classes; background is class 0."""
    n_classes = len(bank.class_names)
    for images, labels, types in batches:
        assert types.dtype == torch.int64 and types.shape == labels.shape
        assert torch.equal(types == 0, labels == 0)
        assert int(types.max()) < n_classes
        for k in range(labels.shape[0]):
            lab, typ = labels[k].flatten(), types[k].flatten()
            order = torch.argsort(lab * n_classes + typ)
            pairs = torch.unique(torch.stack([lab[order], typ[order]]), dim=1)
            ids = pairs[0]
            assert len(torch.unique(ids)) == ids.numel(), f"an instance of crop {k} carries several classes"


@pytest.fixture(scope="module")
def reference(data, bank):
    lo = loader(data, bank)
    return [collect(lo), collect(lo)]


def test_typed_batches_are_aligned_and_pastes_keep_their_class(data, bank, reference):
    batches = reference[0]
    assert len(batches) == 2 and all(len(b) == 3 for b in batches)
    check_aligned(batches, bank)
    # InsMix pasted nuclei: the batch has more instances than the same crops without InsMix, all typed
    plain = collect(loader(data, bank, insmix=False))
    check_aligned(plain, bank)
    ids = lambda bs: sum(len(torch.unique(b[1][k])) for b in bs for k in range(b[1].shape[0]))  # noqa: E731
    assert ids(batches) > ids(plain)


def test_untyped_view_of_the_same_data_gives_the_same_images_and_labels(data, reference):
    """Types ride along: dropping them changes nothing else (same keys, same kernels)."""
    untyped = [(im, lab) for im, lab, _ in data.samples]
    ubank = InstanceBank.from_samples(untyped, progress=False)
    got = collect(InsMixLoader(untyped, bank=ubank, batch_size=4, crop=64, backend="torch", seed=7, insmix=False))
    typed = collect(InsMixLoader(data, bank=None, batch_size=4, crop=64, backend="torch", seed=7, insmix=False))
    assert all(len(b) == 2 for b in got)
    assert same(got, [b[:2] for b in typed])


def test_without_augmentation_types_are_the_source_crops(data, bank):
    """No augmentation and no InsMix: the type map is the source's, cut at the label crop."""
    batches = collect(loader(data, bank, augment=False, insmix=False, shuffle=False))
    k = 0
    for _, labels, types in batches:
        for b in range(labels.shape[0]):
            _, src_lab, src_typ = data[k]
            lab, typ = labels[b].numpy(), types[b].numpy()
            # find the crop window by matching the label map
            hits = [(y, x) for y in range(src_lab.shape[0] - 63) for x in range(src_lab.shape[1] - 63)
                    if np.array_equal(src_lab[y:y + 64, x:x + 64], lab)]
            assert hits and any(np.array_equal(src_typ[y:y + 64, x:x + 64], typ) for y, x in hits)
            k += 1


@pytest.mark.parametrize("kw", [dict(num_workers=2), dict(augment_on="device"),
                                pytest.param(dict(backend="dali", num_workers=2), marks=needs_dali),
                                pytest.param(dict(backend="dali", dali_ops="operators"), marks=needs_dali)])
def test_same_seed_same_typed_batches_across_backends_and_workers(data, bank, reference, kw):
    lo = loader(data, bank, **kw)
    first, second = collect(lo), collect(lo)
    if kw.get("dali_ops") == "operators":  # DALI's float warp: labels and types exact, images near
        for got, ref in ((first, reference[0]), (second, reference[1])):
            assert all(torch.equal(g[1], r[1]) and torch.equal(g[2], r[2]) for g, r in zip(got, ref))
        return
    assert same(first, reference[0]) and same(second, reference[1])


def test_typed_source_needs_a_typed_bank(data):
    untyped_bank = InstanceBank.from_samples([s[:2] for s in data.samples], progress=False)
    with pytest.raises(BankError, match="untyped"):
        InsMixLoader(data, bank=untyped_bank, batch_size=4, crop=64)
    # without a bank (augmentation only) a typed source is fine
    lo = InsMixLoader(data, bank=None, batch_size=4, crop=64, insmix=False)
    assert all(len(b) == 3 for b in lo)


def test_class_names_must_match_the_bank(data, bank):
    class Renamed(TypedTiles):
        class_names = ("background", "a", "b", "c", "d")

    other = Renamed.__new__(Renamed)
    other.samples = data.samples
    with pytest.raises(BankError, match="class_names"):
        InsMixLoader(other, bank=bank, batch_size=4, crop=64)


def test_a_source_that_is_typed_for_some_samples_only_is_refused(data, bank):
    class Mixed:
        def __len__(self):
            return len(data)

        def __getitem__(self, i):
            return data[i] if i == 0 else data[i][:2]

    with pytest.raises(InputError, match="typed"):
        collect(InsMixLoader(Mixed(), bank=bank, batch_size=4, crop=64, shuffle=False))


def test_balanced_template_class_through_the_loader(data, bank):
    cfg = InsMixConfig(template_class="balanced")
    batches = collect(loader(data, bank, config=cfg))
    check_aligned(batches, bank)


@pytest.mark.parametrize("backend", ["torch", pytest.param("dali", marks=needs_dali)])
def test_typed_batches_with_a_blender(data, bank, backend):
    """The blender changes images only: labels and types equal the run without it."""
    from insmix_fast.gan import Blender, Generator

    torch.manual_seed(0)
    blended = collect(loader(data, bank, backend=backend, blender=Blender(Generator(width=4))))
    ref = collect(loader(data, bank, backend=backend))
    assert all(len(b) == 3 for b in blended)
    assert all(torch.equal(b[1], r[1]) and torch.equal(b[2], r[2]) for b, r in zip(blended, ref))
    assert not all(torch.equal(b[0], r[0]) for b, r in zip(blended, ref))


@pytest.mark.parametrize("augment", [True, False])
def test_sparse_large_ids_keep_their_classes(data, bank, augment):
    """Ids far above the instance count (renumbered before the augmentation) keep their class."""
    class Sparse:
        class_names = CLASS_NAMES

        def __len__(self):
            return len(data)

        def __getitem__(self, i):
            image, labels, types = data[i]
            return image, np.where(labels > 0, labels * 5003 + 17, 0).astype(np.int32), types

    got = collect(loader(Sparse(), bank, augment=augment))
    check_aligned(got, bank)
    ref = collect(loader(data, bank, augment=augment))
    assert all(torch.equal(g[2], r[2]) for g, r in zip(got, ref))  # same classes where the pixels are


@pytest.mark.parametrize("backend", ["torch", pytest.param("dali", marks=needs_dali)])
def test_pannuke_layout_to_typed_loader_batches(tmp_path, backend):
    """Issue 14 end to end: PanNuke-layout files → open_dataset → typed bank →
    template_class="balanced" InsMix in the loader → (images, labels, types) batches."""
    from dataset_fixtures import make_truth, write_pannuke_fold

    from insmix_fast.data import PANNUKE_CLASSES, open_dataset

    for fold in (1, 2):
        write_pannuke_fold(tmp_path, fold, [make_truth(10 * fold + i, size=64) for i in range(3)],
                           ["Breast", "Colon", "Kidney"], seed=fold)
    train = open_dataset(tmp_path, folds=[1, 2])
    assert train.class_names == PANNUKE_CLASSES
    tbank = InstanceBank.from_samples(train, progress=False, min_area=4)
    assert tbank.class_names == PANNUKE_CLASSES and (tbank.classes > 0).all()
    lo = InsMixLoader(train, bank=tbank, batch_size=3, crop=48, backend=backend, seed=2,
                      config=InsMixConfig(template_class="balanced", p_paste=1.0))
    batches = collect(lo)
    assert len(batches) == 2 and all(len(b) == 3 for b in batches)
    check_aligned(batches, tbank)
    n_types = len(torch.unique(torch.cat([b[2].flatten() for b in batches])))
    assert n_types >= 3  # background and several nucleus classes came through
    plain = collect(InsMixLoader(train, bank=tbank, batch_size=3, crop=48, backend=backend, seed=2, insmix=False))
    ids = lambda bs: sum(len(torch.unique(b[1][k])) for b in bs for k in range(b[1].shape[0]))  # noqa: E731
    assert ids(batches) > ids(plain)  # nuclei were pasted, each with a class
    if backend == "dali":
        ref = collect(InsMixLoader(train, bank=tbank, batch_size=3, crop=48, backend="torch", seed=2,
                                   config=InsMixConfig(template_class="balanced", p_paste=1.0)))
        assert same(batches, ref)


def test_torch_type_lookup_equals_the_kernel(data, bank):
    """The CUDA path's torch lookup (here on CPU tensors) equals the host kernel on augmented
    labels, mirrored copies and filtered ids included."""
    from insmix_fast.loader.stages import SampleProgram, types_of, types_torch

    prog = SampleProgram(data, crop=64, seed=3, augment=TraditionalAugment(), bank=None, config=None, insmix_p=0.0)
    prog.read(0, 0, 0)
    keys = prog.make_keys(1, np.arange(6), np.arange(6) % len(data))
    batch = prog.prepare(keys)
    _, labels = prog.augment_host(batch)
    want = types_of(labels, batch["classes"], batch["maxid"])
    got = types_torch(torch.from_numpy(labels), torch.from_numpy(batch["classes"]), torch.from_numpy(batch["maxid"]))
    assert got.dtype == torch.int64 and np.array_equal(got.numpy(), want)
    assert (labels > batch["maxid"][:, None, None]).any()  # mirrored copies were looked up too


def test_resume_mid_epoch_gives_the_same_typed_batches(data, bank, reference):
    lo = loader(data, bank)
    it = iter(lo)
    first = tuple(t.clone() for t in next(it))
    state = lo.state_dict()
    resumed = loader(data, bank, num_workers=2)
    resumed.load_state_dict(state)
    assert same([first] + collect(resumed), reference[0])


# ---------------------------------------------------------------------- GPU
@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("augment_on", ["device", "workers"])
def test_cuda_gives_the_cpu_typed_batches(data, bank, reference, augment_on):
    """On CUDA (the device type lookup, the CUDA augmentation and the GPU InsMix with types) the
    typed batches are the CPU's bit for bit."""
    with loader(data, bank, device="cuda", augment_on=augment_on, num_workers=2) as lo:
        for ref in reference:
            out = collect(lo)
            assert all(t.device.type == "cuda" for b in out for t in b)
            assert same([tuple(t.cpu() for t in b) for b in out], ref)
