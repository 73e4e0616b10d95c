"""The tensor batch op ``InsMixBatch``: equal to ``insmix_batch`` on the CPU, keyed per sample
(batch-size independent), exact for float images, and — under the CUDA simulator — the
device path's output handling equals the CPU's.

The simulator runs numba.cuda kernels on numpy / numba device arrays; it has no torch CUDA
tensors, so ``InsMixBatch`` on CUDA tensors itself is checked by ``test_cuda_tensors_match_cpu``
on a real GPU (skipped without one). The simulator case feeds a real ``GPUBatchResult`` (device
records included) to the same ``batch_output`` the CUDA branch uses.
"""

import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from insmix_fast.config import InsMixConfig
from insmix_fast.core import insmix_batch
from insmix_fast.errors import ConfigError, InputError, InputTypeError
from insmix_fast.transforms.batch import InsMixBatch
from typed_data import typed_bank, types_of
from insmix_fast.transforms.common import TYPED_INSMIX_BATCH

CFG = InsMixConfig(p_paste=1.0, alpha=0.5, patch=8)
INDICES = np.array([3, 8, 21], np.int64)
typed = pytest.mark.skipif(not TYPED_INSMIX_BATCH, reason="needs typed InsMix (issue 14)")


def _nchw(images):
    return torch.from_numpy(images).permute(0, 3, 1, 2).contiguous()


def _nhwc(x):
    return x.permute(0, 2, 3, 1).numpy()


@pytest.fixture(scope="module")
def batch(small_data):
    images, labels = small_data.as_arrays(8)
    return images, labels


def test_equals_insmix_batch(batch, small_bank):
    images, labels = batch
    op = InsMixBatch(small_bank, CFG, p=1.0, seed=17)
    out_images, out_labels = op(_nchw(images), torch.from_numpy(labels).long())
    ref = insmix_batch(images, labels, small_bank, CFG, seed=17, indices=np.arange(8))
    assert out_images.is_contiguous() and out_images.shape == (8, 3, 96, 96) and out_images.dtype == torch.uint8
    assert out_labels.dtype == torch.int64
    np.testing.assert_array_equal(_nhwc(out_images), ref.images)
    np.testing.assert_array_equal(out_labels.numpy(), ref.labels)
    assert sum(len(p) for p in ref.pastes) >= 8 and op.samples_seen == 8


def test_batch_size_and_split_do_not_matter(batch, small_bank):
    images, labels = batch
    whole = InsMixBatch(small_bank, CFG, p=0.5, seed=4)(_nchw(images), torch.from_numpy(labels))
    op = InsMixBatch(small_bank, CFG, p=0.5, seed=4)
    parts = [op(_nchw(images[a:b]), torch.from_numpy(labels[a:b])) for a, b in ((0, 3), (3, 4), (4, 8))]
    assert torch.equal(whole[0], torch.cat([p[0] for p in parts]))
    assert torch.equal(whole[1], torch.cat([p[1] for p in parts]))


def test_probability_picks_samples_by_key(batch, small_bank):
    images, labels = batch
    op = InsMixBatch(small_bank, CFG, p=0.5, seed=9)
    sel = op.coins(range(8))
    assert 0 < sel.sum() < 8
    out_images, out_labels = op(_nchw(images), torch.from_numpy(labels.astype(np.uint8)))
    assert out_labels.dtype == torch.int32  # uint8 maps cannot hold the new ids
    ref = insmix_batch(images, labels, small_bank, CFG, seed=9, indices=np.arange(8))
    np.testing.assert_array_equal(_nhwc(out_images)[sel], ref.images[sel])
    np.testing.assert_array_equal(out_labels.numpy()[sel], ref.labels[sel])
    np.testing.assert_array_equal(_nhwc(out_images)[~sel], images[~sel])
    np.testing.assert_array_equal(out_labels.numpy()[~sel], labels[~sel])
    x, y = _nchw(images), torch.from_numpy(labels)
    never = InsMixBatch(small_bank, CFG, p=0.0)(x, y)
    assert torch.equal(never[0], x) and torch.equal(never[1], y)


def test_indices_and_state_dict(batch, small_bank):
    images, labels = batch
    x, y = _nchw(images[:3]), torch.from_numpy(labels[:3])
    got = InsMixBatch(small_bank, CFG, p=1.0, seed=2)(x, y, indices=torch.from_numpy(INDICES))
    ref = insmix_batch(images[:3], labels[:3], small_bank, CFG, seed=2, indices=INDICES)
    np.testing.assert_array_equal(_nhwc(got[0]), ref.images)
    a = InsMixBatch(small_bank, CFG, p=0.5, seed=6)
    a(x, y)
    state = a.state_dict()
    b = InsMixBatch(small_bank, CFG, p=0.5, seed=99)
    b.load_state_dict(state)
    assert b.seed == 6 and b.samples_seen == 3
    ra, rb = a(x, y), b(x, y)
    assert torch.equal(ra[0], rb[0]) and torch.equal(ra[1], rb[1])


def test_float_batches_are_exact(batch, small_bank):
    images, labels = batch
    rng = np.random.default_rng(1)
    x = np.clip(images / np.float32(255) + rng.uniform(-1e-3, 1e-3, images.shape).astype(np.float32), 0, 1)
    x = torch.from_numpy(x.astype(np.float32)).permute(0, 3, 1, 2).contiguous()
    out, _ = InsMixBatch(small_bank, CFG, p=1.0, seed=3)(x, torch.from_numpy(labels))
    ref = insmix_batch(images, labels, small_bank, CFG, seed=3, indices=np.arange(8))
    assert out.dtype == torch.float32 and out.is_contiguous()
    y, xs = _nhwc(out), _nhwc(x)
    same = ~(ref.paste_masks | ref.shuffled_masks)
    np.testing.assert_array_equal(y[same], xs[same])
    np.testing.assert_array_equal(y[ref.paste_masks], ref.images[ref.paste_masks].astype(np.float32) / np.float32(255))
    t, gw = CFG.patch, images.shape[2] // CFG.patch
    n_moves = 0
    for b in range(8):
        for src, dst in ref.moves[b]:
            sy, sx, dy, dx = src // gw * t, src % gw * t, dst // gw * t, dst % gw * t
            np.testing.assert_array_equal(y[b, dy:dy + t, dx:dx + t], xs[b, sy:sy + t, sx:sx + t])
            n_moves += 1
    assert n_moves >= 8
    out255, _ = InsMixBatch(small_bank, CFG, p=1.0, seed=3, max_value=255.0)(_nchw(images).double(),
                                                                             torch.from_numpy(labels))
    assert out255.dtype == torch.float64
    np.testing.assert_array_equal(_nhwc(out255), ref.images.astype(np.float64))


def test_float_with_templates_from_the_tile(batch):
    """``template_source='self'`` cuts templates from the (quantised) float tile itself."""
    images, labels = batch
    cfg = InsMixConfig(template_source="self", p_paste=1.0, alpha=0.5, patch=8)
    out, _ = InsMixBatch(None, cfg, p=1.0, seed=6)(_nchw(images).float() / 255, torch.from_numpy(labels))
    ref = insmix_batch(images, labels, None, cfg, seed=6, indices=np.arange(8))
    assert ref.paste_masks.any()
    np.testing.assert_array_equal(_nhwc((out * 255).round().to(torch.uint8)), ref.images)


def _collate_with(op):
    def collate(samples):
        images = torch.stack([torch.from_numpy(im).permute(2, 0, 1) for im, _ in samples])
        labels = torch.stack([torch.from_numpy(lab) for _, lab in samples])
        return op(images, labels)
    return collate


def test_workers_do_not_repeat_each_other(small_data, small_bank):
    """In DataLoader workers the default keys differ per worker and per epoch, and follow torch.manual_seed."""
    same = [small_data[0]] * 4  # four identical batches of one: only the keys can differ
    op = InsMixBatch(small_bank, CFG, p=1.0, seed=0)

    def epochs(n):
        torch.manual_seed(5)
        loader = torch.utils.data.DataLoader(same, batch_size=1, num_workers=2, collate_fn=_collate_with(op))
        return [[b[0] for b in loader] for _ in range(n)]

    a, b = epochs(2), epochs(1)
    assert all(torch.equal(x, y) for x, y in zip(a[0], b[0]))  # reproducible
    assert not torch.equal(a[0][0], a[0][1])                   # worker 0 vs worker 1
    assert not torch.equal(a[0][0], a[0][2])                   # second batch of worker 0
    assert not torch.equal(a[0][0], a[1][0])                   # next epoch
    assert op.samples_seen == 0                                 # the main-process counter is untouched


def test_usable_in_a_collate_fn(small_data, small_bank):
    op = InsMixBatch(small_bank, CFG, p=1.0, seed=0)
    loader = torch.utils.data.DataLoader([small_data[k] for k in range(6)], batch_size=3, collate_fn=_collate_with(op))
    images, labels = next(iter(loader))
    assert images.shape == (3, 3, 96, 96) and labels.shape == (3, 96, 96) and op.samples_seen == 3


def _bad(images, labels):
    x, y = _nchw(images[:2]), torch.from_numpy(labels[:2])
    return [
        ((torch.from_numpy(images[:2]), y), InputError, "channel-last"),
        ((x, y.float()), InputError, "labels must be an integer instance map"),
        ((x, y > 0), InputError, "integer"),
        ((images[:2], y), InputTypeError, "images must be a torch.Tensor"),
        ((x, y[:, :50]), InputError, "labels must be N×H×W"),
        ((x, y[:1]), InputError, "labels must be N×H×W"),
        ((x.float(), y), InputError, "max_value=255"),
        ((x.int(), y), InputError, "uint8 .* or float"),
        ((x, y - 1), InputError, "negative"),
    ]


@pytest.mark.parametrize("case", range(9))
def test_bad_input(batch, small_bank, case):
    args, error, pattern = _bad(*batch)[case]
    with pytest.raises(error, match=pattern):
        InsMixBatch(small_bank, CFG, p=1.0)(*args)


def test_bad_arguments(batch, small_bank):
    images, labels = batch
    with pytest.raises(ConfigError, match="bank is None"):
        InsMixBatch(None)
    with pytest.raises(ConfigError, match="p"):
        InsMixBatch(small_bank, p=-0.1)
    with pytest.raises(InputError, match="indices"):
        InsMixBatch(small_bank, p=1.0)(_nchw(images[:2]), torch.from_numpy(labels[:2]), indices=[1, 2, 3])
    with pytest.raises(InputTypeError, match="seed"):
        InsMixBatch(small_bank, seed=1.5)


def test_seed_from_torch_generator(small_bank):
    torch.manual_seed(0)
    a = InsMixBatch(small_bank).seed
    torch.manual_seed(0)
    assert InsMixBatch(small_bank).seed == a


@pytest.mark.skipif(TYPED_INSMIX_BATCH, reason="insmix_batch accepts types here")
def test_types_need_a_typed_core(batch, small_bank):
    images, labels = batch
    y = torch.from_numpy(labels[:2])
    with pytest.raises(InputError, match="types="):
        InsMixBatch(small_bank, p=1.0)(_nchw(images[:2]), y, types=(y > 0).to(torch.uint8))


@typed
@pytest.mark.parametrize("p", [1.0, 0.5])
def test_types_follow_the_labels(batch, p):
    """Every sample (p=1) or the sampled ones (p=0.5, the others unchanged) get the functional
    insmix_batch result's types."""
    bank = typed_bank()
    images, labels = batch
    types = types_of(labels)
    op = InsMixBatch(bank, CFG, p=p, seed=5)
    out_images, out_labels, out_types = op(_nchw(images), torch.from_numpy(labels), types=torch.from_numpy(types),
                                           indices=np.arange(8))
    ref = insmix_batch(images, labels, bank, CFG, seed=5, indices=np.arange(8), types=types)
    sel = op.coins(np.arange(8), 5)
    assert out_types.dtype == torch.uint8 and sel.any() and (p == 1.0 or not sel.all())
    np.testing.assert_array_equal(out_types.numpy()[sel], ref.types[sel])
    np.testing.assert_array_equal(out_labels.numpy()[sel], ref.labels[sel])
    np.testing.assert_array_equal(out_types.numpy()[~sel], types[~sel])
    assert any(len(ref[i].pastes) for i in np.flatnonzero(sel))


# ---------------------------------------------------------------------- devices
@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU visible to torch")
def test_cuda_tensors_match_cpu(batch, small_bank):
    from insmix_fast.gpu import cuda_available

    ok, reason = cuda_available()
    if not ok:
        pytest.skip(reason)
    images, labels = batch
    for x in (_nchw(images), _nchw(images).float() / 255):
        cpu = InsMixBatch(small_bank, CFG, p=0.7, seed=8)(x, torch.from_numpy(labels).long())
        gpu = InsMixBatch(small_bank, CFG, p=0.7, seed=8)(x.cuda(), torch.from_numpy(labels).long().cuda())
        assert gpu[0].is_cuda and gpu[1].is_cuda and gpu[0].dtype == x.dtype and gpu[1].dtype == torch.int64
        assert torch.equal(gpu[0].cpu(), cpu[0]) and torch.equal(gpu[1].cpu(), cpu[1])


@pytest.mark.gpu
@typed
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU visible to torch")
def test_cuda_type_maps_match_cpu(batch):
    """Typed batches on the device: the same images, labels and types as on the CPU (types keep their dtype)."""
    from insmix_fast.gpu import cuda_available

    ok, reason = cuda_available()
    if not ok:
        pytest.skip(reason)
    bank = typed_bank()
    images, labels = batch
    types = torch.from_numpy(types_of(labels, np.int16))
    for x in (_nchw(images), _nchw(images).float() / 255):
        cpu = InsMixBatch(bank, CFG, p=0.7, seed=8)(x, torch.from_numpy(labels), types=types)
        gpu = InsMixBatch(bank, CFG, p=0.7, seed=8)(x.cuda(), torch.from_numpy(labels).cuda(), types=types.cuda())
        assert gpu[2].is_cuda and gpu[2].dtype == torch.int16
        for a, b in zip(gpu, cpu):
            assert torch.equal(a.cpu(), b)


def _sim_data():
    from insmix_fast.bank import InstanceBank
    from insmix_fast.data import SyntheticNuclei

    bank = InstanceBank.from_samples(SyntheticNuclei(seed=7, size=96, length=8), progress=False)
    images, labels = SyntheticNuclei(seed=5, size=64, length=3).as_arrays()
    x = torch.from_numpy(images).permute(0, 3, 1, 2).contiguous()
    return bank, images, labels, x


def _sim_worker(out_path: str) -> None:
    """Under NUMBA_ENABLE_CUDASIM=1: InsMix on device arrays, then the CUDA branch's output step."""
    assert os.environ.get("NUMBA_ENABLE_CUDASIM") == "1"
    from numba import cuda

    from insmix_fast.transforms.common import batch_output

    bank, images, labels, x = _sim_data()
    res = insmix_batch(cuda.to_device(images), cuda.to_device(labels), bank, CFG, seed=12, indices=INDICES,
                       device="cuda")
    assert type(res).__name__ == "GPUBatchResult"
    y = torch.from_numpy(labels).long()
    u8 = batch_output(x, y, None, res, CFG)
    fl = batch_output(x.float() / 255, y, None, res, CFG)
    host = insmix_batch(images, labels, bank, CFG, seed=12, indices=INDICES, device="cuda")  # numpy in → numpy out
    np.savez(out_path, u8=u8[0].contiguous().numpy(), labels=u8[1].numpy(), float=fl[0].numpy(),
             host_images=host.images, host_labels=host.labels)


def test_simulator_device_path_matches_cpu(tmp_path):
    out = tmp_path / "sim.npz"
    env = dict(os.environ, NUMBA_ENABLE_CUDASIM="1")
    p = subprocess.run([sys.executable, os.path.abspath(__file__), str(out)], env=env, capture_output=True, text=True,
                       timeout=600, cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    if p.returncode != 0:
        pytest.fail(f"CUDA-simulator worker failed (rc {p.returncode}):\n{p.stdout[-3000:]}\n{p.stderr[-6000:]}")
    sim = dict(np.load(out))
    bank, images, labels, x = _sim_data()
    y = torch.from_numpy(labels).long()
    u8, lab = InsMixBatch(bank, CFG, p=1.0, seed=12)(x, y, indices=INDICES)
    fl, _ = InsMixBatch(bank, CFG, p=1.0, seed=12)(x.float() / 255, y, indices=INDICES)
    assert not np.array_equal(u8.numpy(), x.numpy())
    np.testing.assert_array_equal(sim["u8"], u8.numpy())
    np.testing.assert_array_equal(sim["labels"], lab.numpy())
    np.testing.assert_array_equal(sim["float"], fl.numpy())
    np.testing.assert_array_equal(sim["host_images"], _nhwc(u8))
    np.testing.assert_array_equal(sim["host_labels"], lab.numpy())


if __name__ == "__main__":
    _sim_worker(sys.argv[1])
