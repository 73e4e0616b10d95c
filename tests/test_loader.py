"""InsMixLoader end to end on the CPU: DALI CPU pipeline and the PyTorch backend."""

import logging

import numpy as np
import pytest
import torch

from insmix_fast import InstanceBank, InsMixConfig
from insmix_fast.data import SyntheticNuclei, write_folder
from insmix_fast.errors import BankError, ConfigError, InputError, InputTypeError
from insmix_fast.loader import InsMixLoader, dali_available, epoch_plan, stage_seed
from insmix_fast.loader.stages import IMAGENET_MEAN, IMAGENET_STD
from insmix_fast.sharding import shard_indices

needs_dali = pytest.mark.skipif(not dali_available(), reason="NVIDIA DALI is not installed (pip install nvidia-dali-cuda120)")
BACKENDS = ["torch", pytest.param("dali", marks=needs_dali)]


class IndexSource:
    """Tile i is filled with the value i: the loader's output tells which sample it is."""

    def __init__(self, n, size=16):
        self.n, self.size, self.epochs = n, size, []

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        if not 0 <= i < self.n:
            raise IndexError(i)
        return np.full((self.size, self.size, 3), i, np.uint8), np.zeros((self.size, self.size), np.int32)

    def set_epoch(self, epoch):
        self.epochs.append(epoch)


def decode(images):
    """Source index of each sample of an IndexSource batch (first pixel, red channel)."""
    v = images[:, 0, 0, 0].double() * 255 * IMAGENET_STD[0] + 255 * IMAGENET_MEAN[0]
    return torch.round(v).long().tolist()


def plain(source, **kw):
    kw = dict(dict(batch_size=4, crop=16, insmix=False, augment=False, backend="torch"), **kw)
    return InsMixLoader(source, **kw)


def collect(loader):
    return [(i.clone(), l.clone()) for i, l in loader]


def same(a, b):
    return len(a) == len(b) and all(torch.equal(x, y) and torch.equal(u, v) for (x, u), (y, v) in zip(a, b))


def grey_levels(a, b):
    """Largest |difference| between two batches of normalised images, in grey levels (0..255)."""
    std = torch.tensor(IMAGENET_STD, dtype=torch.float64).view(1, 3, 1, 1) * 255
    return max(((x.double() - y.double()).abs() * std).max().item() for (x, _), (y, _) in zip(a, b))


@pytest.fixture(scope="module")
def data():
    return SyntheticNuclei(seed=3, size=96, length=10)


@pytest.fixture(scope="module")
def bank(data):
    return InstanceBank.from_samples(data, progress=False)


@pytest.fixture(scope="module")
def blender():
    from insmix_fast.gan import Blender, Generator

    torch.manual_seed(0)
    return Blender(Generator(width=4))


@pytest.fixture(scope="module")
def reference(data, bank):
    """Two epochs from the torch backend, no workers: the samples every other run must equal."""
    loader = InsMixLoader(data, bank=bank, batch_size=4, crop=64, backend="torch", seed=5)
    return [collect(loader), collect(loader)]


# ---------------------------------------------------------------------- outputs
@pytest.mark.parametrize("backend", BACKENDS)
def test_batches_are_normalised_tensors_and_backend_is_reported(data, bank, backend, caplog):
    with caplog.at_level(logging.INFO, logger="insmix_fast.loader"):
        loader = InsMixLoader(data, bank=bank, batch_size=4, crop=64, backend=backend, seed=5)
    assert loader.backend == backend and f"backend={backend}" in caplog.text
    batches = collect(loader)
    assert len(loader) == len(batches) == 3
    assert [b[0].shape[0] for b in batches] == [4, 4, 2]
    images, labels = batches[0]
    assert images.dtype == torch.float32 and images.shape == (4, 3, 64, 64) and images.device.type == "cpu"
    assert labels.dtype == torch.int64 and labels.shape == (4, 64, 64)
    assert -3 < images.min() < 0 < images.max() < 3  # ImageNet normalisation of [0, 255]
    assert (labels > 0).any(axis=(1, 2)).sum() >= 2  # most crops hold nuclei


def test_insmix_pastes_and_augment_changes_the_samples(data, bank, reference):
    plain_ = collect(InsMixLoader(data, bank=bank, batch_size=4, crop=64, backend="torch", seed=5, insmix=False))
    noaug = collect(InsMixLoader(data, bank=bank, batch_size=4, crop=64, backend="torch", seed=5, augment=False))
    ref = reference[0]
    assert not same(ref, plain_) and not same(ref, noaug)
    # InsMix adds instances: more ids than without it, on the same crops
    ids = lambda bs: sum(len(torch.unique(l[k])) for _, l in bs for k in range(l.shape[0]))  # noqa: E731
    assert ids(ref) > ids(plain_)
    half = collect(InsMixLoader(data, bank=bank, batch_size=4, crop=64, backend="torch", seed=5, insmix=0.5))
    flags = [torch.equal(a[k], b[k]) for (a, _), (b, _) in zip(half, plain_) for k in range(a.shape[0])]
    assert 0 < sum(flags) < len(flags)  # some samples got InsMix, some did not


@needs_dali
def test_dali_cpu_pipeline_gives_the_torch_samples(data, bank, reference):
    """The CPU graph runs the same kernels: bit-identical batches."""
    loader = InsMixLoader(data, bank=bank, batch_size=4, crop=64, backend="dali", seed=5, num_workers=2)
    assert loader.augment_on == "dali:kernels"
    assert same(collect(loader), reference[0]) and same(collect(loader), reference[1])


@needs_dali
@pytest.mark.parametrize("insmix", [True, False])
def test_dali_batches_stay_intact_while_later_ones_are_made(data, bank, reference, insmix):
    """The CPU graph hands out DALI's int64 output buffers without copying them: batches kept
    across a whole epoch (and the next) must not be overwritten by later runs."""
    loader = InsMixLoader(data, bank=bank, batch_size=4, crop=64, backend="dali", seed=5, num_workers=2,
                          insmix=insmix, prefetch=2)
    kept = [b for b in loader]  # references only
    second = [b for b in loader]
    if insmix:
        want = reference
    else:
        torch_loader = InsMixLoader(data, bank=bank, batch_size=4, crop=64, backend="torch", seed=5, insmix=False)
        want = [collect(torch_loader), collect(torch_loader)]
    assert same(kept, want[0]) and same(second, want[1])
    assert all(lab.dtype == torch.int64 for _, lab in kept)


@needs_dali
def test_dali_operator_graph_gives_the_same_labels_and_near_images(data, bank, reference):
    """DALI's warp_affine / coord_transform / gaussian_blur (the GPU graph, here in CPU mode): the
    labels are exact, the images within 2 grey levels (float vs integer arithmetic)."""
    loader = InsMixLoader(data, bank=bank, batch_size=4, crop=64, backend="dali", dali_ops="operators", seed=5,
                          num_workers=2)
    for ref in reference:
        got = collect(loader)
        assert len(got) == len(ref)
        assert all(torch.equal(lg, lr) for (_, lg), (_, lr) in zip(got, ref))
        assert grey_levels(got, ref) <= 2.0 + 1e-6


def test_torch_device_path_gives_the_worker_samples(data, bank, reference):
    """augment_on="device" (workers only read and crop; the kernels run where the batch lands —
    the CUDA path's structure, here on CPU tensors) equals the all-in-workers path."""
    loader = InsMixLoader(data, bank=bank, batch_size=4, crop=64, backend="torch", seed=5, augment_on="device",
                          num_workers=2, prefetch=1)
    assert loader.augment_on == "device"
    with loader:
        assert same(collect(loader), reference[0]) and same(collect(loader), reference[1])


@needs_dali
def test_dali_pipeline_is_built_once_and_a_break_keeps_the_order(data, bank, reference):
    loader = InsMixLoader(data, bank=bank, batch_size=4, crop=64, backend="dali", seed=5, num_workers=2, prefetch=2)
    head = []
    for batch in loader:
        head.append((batch[0].clone(), batch[1].clone()))
        break  # DALI has prefetched ahead: those batches are drained, not handed out
    pipe = loader._impl._pipe
    rest = collect(loader)
    assert same(head + rest, reference[0])
    assert same(collect(loader), reference[1])
    assert loader._impl._pipe is pipe  # reset per pass, never rebuilt


@needs_dali
def test_blender_runs_in_both_backends_identically(data, bank, blender, reference):
    a = collect(InsMixLoader(data, bank=bank, batch_size=4, crop=64, backend="torch", seed=5, blender=blender))
    b = collect(InsMixLoader(data, bank=bank, batch_size=4, crop=64, backend="dali", seed=5, blender=blender))
    assert same(a, b)
    assert not same(a, reference[0])  # the blend changed pasted pixels …
    assert all(torch.equal(la, lr) for (_, la), (_, lr) in zip(a, reference[0]))  # … never the labels


def test_same_samples_across_runs_and_worker_counts(data, bank, reference):
    again = InsMixLoader(data, bank=bank, batch_size=4, crop=64, backend="torch", seed=5)
    assert same(collect(again), reference[0])
    with InsMixLoader(data, bank=bank, batch_size=4, crop=64, backend="torch", seed=5, num_workers=2,
                      prefetch=1) as workers:
        assert same(collect(workers), reference[0]) and same(collect(workers), reference[1])
    other = InsMixLoader(data, bank=bank, batch_size=4, crop=64, backend="torch", seed=6)
    assert not same(collect(other), reference[0])


# ---------------------------------------------------------------------- epochs
@pytest.mark.parametrize("backend", BACKENDS)
def test_epochs_reshuffle_and_set_epoch_replays(backend):
    src = IndexSource(10)
    loader = plain(src, backend=backend, seed=2)
    e0 = sum((decode(i) for i, _ in loader), [])
    assert loader.epoch == 1 and sorted(e0) == list(range(10))
    e1 = sum((decode(i) for i, _ in loader), [])
    assert sorted(e1) == list(range(10)) and e1 != e0
    loader.set_epoch(0)
    assert sum((decode(i) for i, _ in loader), []) == e0
    assert src.epochs[:2] == [0, 1]
    assert sum((decode(i) for i, _ in plain(src, backend=backend, shuffle=False)), []) == list(range(10))
    dropped = plain(src, backend=backend, drop_last=True)
    assert len(dropped) == 2 and [len(decode(i)) for i, _ in dropped] == [4, 4]


def test_augmentation_keys_change_per_epoch_not_per_batching(data, bank):
    one = InsMixLoader(data, bank=bank, batch_size=10, crop=64, backend="torch", seed=5, shuffle=False)
    two = InsMixLoader(data, bank=bank, batch_size=3, crop=64, backend="torch", seed=5, shuffle=False)
    a = torch.cat([i for i, _ in one])
    b = torch.cat([i for i, _ in two])
    assert torch.equal(a, b)  # batch size does not change a sample
    assert not torch.equal(a, torch.cat([i for i, _ in one]))  # the next epoch does
    assert stage_seed(5, 0, 1) != stage_seed(5, 1, 1) != stage_seed(6, 1, 1)


@pytest.mark.parametrize("backend", BACKENDS)
def test_resume_mid_epoch_equals_uninterrupted(data, bank, reference, backend):
    first = InsMixLoader(data, bank=bank, batch_size=4, crop=64, backend="torch", seed=5)
    it = iter(first)
    head = [next(it)]
    state = first.state_dict()
    assert state["epoch"] == 0 and state["batch"] == 1
    first.close()
    resumed = InsMixLoader(data, bank=bank, batch_size=4, crop=64, backend=backend, seed=5)
    resumed.load_state_dict(state)
    rest = collect(resumed)
    assert same(head + rest, reference[0])
    assert same(collect(resumed), reference[1])


def test_break_keeps_position_and_bad_states_raise():
    src = IndexSource(10)
    loader = plain(src, seed=1)
    for k, (images, _) in enumerate(loader):
        if k == 1:
            break
    assert loader.state_dict()["batch"] == 2
    rest = [decode(i) for i, _ in loader]
    assert len(rest) == 1 and loader.epoch == 1
    other = plain(src, seed=2)
    with pytest.raises(ConfigError, match="seed"):
        other.load_state_dict(loader.state_dict())
    with pytest.raises(ConfigError, match="lacks"):
        other.load_state_dict({"epoch": 1})
    with pytest.raises(ConfigError, match="outside"):
        loader.load_state_dict(dict(loader.state_dict(), batch=99))


# ---------------------------------------------------------------------- sharding
@pytest.mark.parametrize("n,world,drop", [(10, 3, False), (12, 4, True), (7, 2, True)])
def test_plan_is_the_sharding_module_s_shard(n, world, drop):
    for r in range(world):
        plan = epoch_plan(n, batch_size=2, seed=9, epoch=3, rank=r, world_size=world, drop_last=drop)
        shard = shard_indices(n, rank=r, world_size=world, seed=9, epoch=3, drop_last=drop)
        if drop:  # the partial last batch is dropped too
            shard = shard[: len(shard) // 2 * 2]
        assert np.array_equal(plan.all_indices, shard) and len(plan) == len(shard) // 2 + len(shard) % 2
        assert all(len(p) == len(i) for p, i in zip(plan.positions, plan.indices))


def test_explicit_ranks_give_disjoint_complete_shards():
    src = IndexSource(12)
    seen = [sum((decode(i) for i, _ in plain(src, seed=4, rank=r, world_size=3)), []) for r in range(3)]
    assert sorted(sum(seen, [])) == list(range(12))
    assert [len(s) for s in seen] == [4, 4, 4]


# ---------------------------------------------------------------------- sources
def test_sources_from_paths_and_bank_built_when_missing(tmp_path, data, caplog):
    root = write_folder(tmp_path / "ds", [data[i] for i in range(4)])
    with caplog.at_level(logging.INFO, logger="insmix_fast.loader"):
        loader = InsMixLoader(str(root), batch_size=2, crop=64, backend="torch", seed=1)
    assert "building the instance bank" in caplog.text
    assert len(loader.bank) > 0 and len(loader) == 2
    assert [tuple(i.shape) for i, _ in loader] == [(2, 3, 64, 64)] * 2
    syn = InsMixLoader("synthetic", batch_size=2, crop=32, insmix=False, backend="torch")
    assert syn.n == len(SyntheticNuclei()) and next(iter(syn))[0].shape == (2, 3, 32, 32)


class NotASource:
    pass


class BadDtype(IndexSource):
    def __getitem__(self, i):
        return np.zeros((16, 16, 3), np.float32), np.zeros((16, 16), np.int32)


class NotAPair(IndexSource):
    def __getitem__(self, i):
        return np.zeros((16, 16, 3), np.uint8)


def test_bad_sources_raise_clear_errors(tmp_path):
    with pytest.raises(InputTypeError, match="__len__ and __getitem__"):
        plain(NotASource())
    with pytest.raises(InputError, match="empty"):
        plain(IndexSource(0))
    with pytest.raises(InputError, match="uint8"):
        plain(BadDtype(4))
    with pytest.raises(InputError, match=r"source\[0\] must return"):
        plain(NotAPair(4))
    with pytest.raises(InputError, match="smaller than crop=32"):
        plain(IndexSource(4), crop=32)
    with pytest.raises(Exception, match="is not a folder"):
        plain(str(tmp_path / "missing"))
    with pytest.raises(BankError, match="bank is empty"):
        InsMixLoader(IndexSource(4), batch_size=2, crop=16, backend="torch")


class MapSource(IndexSource):
    """32×32 tiles whose label map is ``labels`` (one for every sample)."""

    def __init__(self, labels):
        super().__init__(2, size=32)
        self.labels = labels

    def __getitem__(self, i):
        return np.zeros((32, 32, 3), np.uint8), self.labels


@pytest.mark.parametrize("labels,error,match", [
    (np.full((32, 32), -1, np.int32), InputError, r"source\[1\] labels \(crop at y=\d+, x=\d+\) holds negative ids"),
    (np.full((32, 32), 2**31, np.int64), InputError, r"source\[1\] labels \(crop at .*above int32 range"),
    (np.zeros((32, 32), np.float32), InputError, r"source\[1\] labels must be an integer instance map"),
    (np.zeros((32, 31), np.int32), InputError, r"source\[1\] labels shape \(32, 31\) does not match"),
])
def test_reader_checks_the_labels_it_crops(labels, error, match):
    """The reader checks the dtype and shape of each source map, and the ids of the window it
    crops (not two passes over the whole map): bad ids there name the sample and the window."""
    from insmix_fast.loader.stages import SampleProgram

    prog = SampleProgram(MapSource(labels), crop=16, seed=0, augment=None, bank=None, config=None, insmix_p=0.0)
    with pytest.raises(error, match=match):
        prog.read(0, 3, 1)


def test_reader_uses_only_the_window_s_ids():
    """The window's ids come back as int32 whatever the map's integer dtype; an id outside the
    cropped window is not read, so only windows that hold it fail."""
    from insmix_fast.loader.stages import SampleProgram

    prog = SampleProgram(MapSource(np.full((32, 32), 7, np.int64)), crop=32, seed=0, augment=None, bank=None,
                         config=None, insmix_p=0.0)
    _, lab, _ = prog.read(0, 0, 0)
    assert lab.dtype == np.int32 and (lab == 7).all()
    labels = np.zeros((32, 32), np.int64)
    labels[0, 0] = -5  # in the 16×16 window only when it starts at (0, 0)
    prog = SampleProgram(MapSource(labels), crop=16, seed=0, augment=None, bank=None, config=None, insmix_p=0.0)
    failed = 0
    for position in range(60):
        try:
            prog.read(0, position, 0)
        except InputError as e:
            assert "(crop at y=0, x=0) holds negative ids" in str(e)
            failed += 1
    assert failed < 60  # the windows without (0, 0) were read


@pytest.mark.parametrize("kw,match", [
    (dict(batch_size=0), "batch_size"), (dict(crop=4), "crop"), (dict(backend="jax"), "backend"),
    (dict(num_workers=-1), "num_workers"), (dict(prefetch=1.5), "prefetch"), (dict(seed=-1), "seed"),
    (dict(shuffle=1), "shuffle"), (dict(insmix=2.0), "insmix"), (dict(augment="yes"), "augment"),
    (dict(rank=2, world_size=2), "rank"), (dict(device="tpu"), "device"), (dict(std=(1, 0, 1)), "std"),
    (dict(config="full"), "config"), (dict(blender=3), "blender"), (dict(mp_context="thread"), "mp_context"),
    (dict(augment_on="gpu"), "augment_on"), (dict(dali_ops="fast"), "dali_ops"), (dict(drop_last="no"), "drop_last"),
])
def test_bad_parameters_raise(kw, match):
    with pytest.raises((ConfigError, InputError, InputTypeError), match=match):
        plain(IndexSource(4), **kw)


def test_blender_needs_a_crop_multiple_of_four(blender):
    with pytest.raises(ConfigError, match="multiple of 4"):
        plain(IndexSource(4, size=18), crop=18, blender=blender)


@pytest.mark.skipif(torch.cuda.is_available(), reason="a CUDA GPU is present")
def test_cuda_without_gpu_says_so():
    with pytest.raises(ConfigError, match="no CUDA GPU"):
        plain(IndexSource(4), device="cuda")


@pytest.mark.skipif(dali_available(), reason="DALI is installed")
def test_dali_missing_says_how_to_install():
    with pytest.raises(ConfigError, match="pip install nvidia-dali"):
        plain(IndexSource(4), backend="dali")


def test_closed_loader_cannot_iterate():
    with plain(IndexSource(4)) as loader:
        assert len(list(loader)) == 1
    with pytest.raises(RuntimeError, match="closed"):
        iter(loader)


def test_config_is_used(data, bank, reference):
    cfg = InsMixConfig(p_paste=1.0, background=False)
    other = collect(InsMixLoader(data, bank=bank, batch_size=4, crop=64, backend="torch", seed=5, config=cfg))
    assert not same(other, reference[0])


# ---------------------------------------------------------------------- GPU
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


@pytest.mark.gpu
@needs_cuda
@pytest.mark.parametrize("augment_on", ["device", "workers"])
def test_cuda_gives_the_cpu_samples(data, bank, reference, augment_on):
    """The CUDA build of the kernels and the GPU InsMix give the CPU's batches bit for bit."""
    loader = InsMixLoader(data, bank=bank, batch_size=4, crop=64, backend="torch", seed=5, device="cuda",
                          augment_on=augment_on, num_workers=2)
    with loader:
        for ref in reference:
            out = collect(loader)
            assert all(i.device.type == "cuda" and l.device.type == "cuda" for i, l in out)
            assert same([(i.cpu(), l.cpu()) for i, l in out], ref)


@pytest.mark.gpu
@needs_cuda
@needs_dali
def test_cuda_dali_graph_gives_the_cpu_labels(data, bank, reference):
    loader = InsMixLoader(data, bank=bank, batch_size=4, crop=64, backend="dali", seed=5, device="cuda")
    assert loader.augment_on == "dali:operators"
    out = [(i.cpu(), l.cpu()) for i, l in collect(loader)]
    assert all(torch.equal(lo, lr) for (_, lo), (_, lr) in zip(out, reference[0]))
    assert grey_levels(out, reference[0]) <= 2.0 + 1e-6


@pytest.mark.gpu
@needs_cuda
def test_cuda_steady_state_does_not_synchronise(data, bank):
    """After the first batch, the torch backend's device work issues no synchronising torch call
    (torch's sync debug mode raises on one)."""
    loader = InsMixLoader(data, bank=bank, batch_size=4, crop=64, backend="torch", seed=5, device="cuda")
    with loader:
        it = iter(loader)
        next(it)  # compilation, allocator warm-up
        torch.cuda.set_sync_debug_mode("error")
        try:
            rest = [b for b in it]
        finally:
            torch.cuda.set_sync_debug_mode("default")
    assert len(rest) == len(loader) - 1


@pytest.mark.gpu
@needs_cuda
def test_cuda_blender_changes_only_pasted_pixels(data, bank, blender, reference):
    from insmix_fast.gan import Blender

    gpu_blender = Blender(blender.model.generator, device="cuda")
    loader = InsMixLoader(data, bank=bank, batch_size=4, crop=64, backend="torch", seed=5, device="cuda",
                          blender=gpu_blender)
    cpu = collect(InsMixLoader(data, bank=bank, batch_size=4, crop=64, backend="torch", seed=5, blender=blender))
    out = [(i.cpu(), l.cpu()) for i, l in collect(loader)]
    assert all(torch.equal(lo, lc) for (_, lo), (_, lc) in zip(out, cpu))
    assert grey_levels(out, cpu) <= 3.0  # cuDNN vs CPU convolutions


def test_auto_without_dali_falls_back_to_torch_and_says_so(monkeypatch, caplog):
    import insmix_fast.loader.loader as mod

    monkeypatch.setattr(mod, "dali_available", lambda: False)
    with caplog.at_level(logging.INFO, logger="insmix_fast.loader"):
        loader = plain(IndexSource(4), backend="auto")
    assert loader.backend == "torch" and "DALI is not installed" in caplog.text
    with pytest.raises(ConfigError, match="pip install nvidia-dali"):
        plain(IndexSource(4), backend="dali")


def test_device_insmix_stage_matches_the_host_stage(data, bank):
    """The tensor path the CUDA backends take (here with CPU tensors) gives the numpy path's result."""
    from insmix_fast.loader import SampleProgram

    prog = SampleProgram(data, crop=64, seed=5, augment=None, bank=bank, config=None, insmix_p=0.6)
    keys = prog.make_keys(2, np.arange(8, 16), np.arange(8) % len(data))
    crops = prog.read_batch(keys)
    want = prog.insmix_batch(crops.images, crops.labels, keys)
    got = prog.insmix_device(torch.from_numpy(crops.images), torch.from_numpy(crops.labels), keys)
    assert 0 < prog.insmix_mask(keys).sum() < 8 and want[3].any()
    assert want[2] is None and got[2] is None  # untyped source: no type map
    for w, g in zip(want, got):
        assert (w is None) == (g is None) and (w is None or np.array_equal(w, g.numpy()))


def test_blender_from_an_exported_file(tmp_path, data, bank, blender):
    from insmix_fast.gan import export_blender

    path = export_blender(blender.model.generator, tmp_path / "blender.pt")
    a = collect(InsMixLoader(data, bank=bank, batch_size=4, crop=64, backend="torch", seed=5, blender=str(path)))
    b = collect(InsMixLoader(data, bank=bank, batch_size=4, crop=64, backend="torch", seed=5, blender=blender))
    assert len(a) == len(b) == 3
    for (x, lx), (y, ly) in zip(a, b):
        assert torch.equal(lx, ly) and torch.allclose(x, y, atol=0.05)  # TorchScript may round differently


def test_keyed_rng_draws_what_make_rng_draws():
    """The loader's per-sample generator (one Philox re-keyed per call) gives make_rng's draws,
    for any 64-bit seed, index and stream, whatever was drawn before."""
    from insmix_fast.baselines import make_rng
    from insmix_fast.baselines import keyed_rng

    for seed in (0, 5, 2**63 + 7, 2**64 - 1):
        for index in (0, 1, 99, 2**32 - 1, 2**40 + 3):
            for stream in (0, 7, 11):
                keyed_rng(1, 2, 3).random(5)  # leftovers of an earlier key must not leak
                want = make_rng(seed, index, stream)
                got = keyed_rng(seed, index, stream)
                assert got.integers(0, 65, 3).tolist() == want.integers(0, 65, 3).tolist()
                assert got.random(13).tolist() == want.random(13).tolist()
    for args, name in (((-1, 0), "seed=-1"), ((0, 2**64), "index=18446744073709551616"), ((0, 0, -2), "stream=-2")):
        with pytest.raises(InputError, match=rf"keyed_rng: {name} is outside \[0, 2\*\*64\)"):
            keyed_rng(*args)
