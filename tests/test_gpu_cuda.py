"""The GPU path on a real CUDA device (skipped with the reason when there is none),
and its behaviour without one (clear errors, nothing imported at package import)."""

import os
import subprocess
import sys

import numpy as np
import pytest

from insmix_fast import InputError, InsMixConfig, insmix_batch
from insmix_fast.gpu import cuda_available

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from test_insmix import CONFIGS  # noqa: E402
from transfer_log import transfer_log  # noqa: E402

SIM = os.environ.get("NUMBA_ENABLE_CUDASIM", "0") not in ("", "0")
OK, REASON = cuda_available()
gpu = pytest.mark.skipif(not OK or SIM, reason=f"needs a CUDA GPU: {REASON}")
no_gpu = pytest.mark.skipif(OK, reason=f"a GPU path is available here ({REASON})")


# ---------------------------------------------------------------------- without a GPU
def test_availability_reports_a_reason():
    ok, reason = cuda_available()
    assert isinstance(ok, bool) and isinstance(reason, str) and len(reason) > 10
    assert cuda_available() == (ok, reason)  # computed once


@no_gpu
def test_cuda_without_gpu_raises_with_reason(small_data, small_bank):
    images, labels = small_data.as_arrays(2)
    with pytest.raises(InputError, match="device='cuda'.*cannot be used") as e:
        insmix_batch(images, labels, small_bank, seed=0, device="cuda")
    assert REASON in str(e.value)
    with pytest.raises(InputError, match="cannot be used"):
        small_bank.to("cuda")


def test_device_argument_is_checked(small_data, small_bank):
    images, labels = small_data.as_arrays(2)
    with pytest.raises(InputError, match="device must be"):
        insmix_batch(images, labels, small_bank, seed=0, device="tpu")
    with pytest.raises(InputError, match="device must be"):
        small_bank.to("gpu0")
    assert small_bank.to("cpu") is small_bank
    r = insmix_batch(images, labels, small_bank, seed=0, device="CPU")  # the CPU path, any case
    assert r.images.shape == images.shape


def test_device_copies_are_not_pickled(small_bank):
    import pickle

    small_bank.__dict__["_device_banks"] = {0: object()}  # what to("cuda") leaves behind
    try:
        clone = pickle.loads(pickle.dumps(small_bank))
    finally:
        del small_bank.__dict__["_device_banks"]
    assert "_device_banks" not in clone.__dict__ and len(clone) == len(small_bank)
    np.testing.assert_array_equal(clone.masks, small_bank.masks)


def test_importing_the_package_does_not_import_gpu_stacks():
    code = ("import sys, insmix_fast, insmix_fast.gpu; from insmix_fast import InstanceBank; "
            "bad = [m for m in ('numba.cuda', 'cupy', 'insmix_fast.kernels.cuda_device') if m in sys.modules]; "
            "print(bad); sys.exit(1 if bad else 0)")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stdout + p.stderr


# ---------------------------------------------------------------------- on a GPU
def _same(gpu_r, cpu_r):
    for f in ("images", "labels", "paste_masks", "shuffled_masks"):
        np.testing.assert_array_equal(np.asarray(getattr(gpu_r, f)), getattr(cpu_r, f), err_msg=f)
    for a, b in zip(gpu_r.pastes, cpu_r.pastes):
        assert a.tolist() == b.tolist()
    for a, b in zip(gpu_r.moves, cpu_r.moves):
        np.testing.assert_array_equal(a.reshape(-1, 2), b.reshape(-1, 2))


@gpu
@pytest.mark.gpu
@pytest.mark.parametrize("name", sorted(CONFIGS))
@pytest.mark.parametrize("seed", [0, 12345])
def test_gpu_matches_cpu_256(tiles256, bank256, name, seed):
    images = np.stack([t[0] for t in tiles256])
    labels = np.stack([t[1] for t in tiles256])
    idx = np.arange(len(images), dtype=np.int64) * 7 + 1
    cfg = CONFIGS[name]
    cpu = insmix_batch(images, labels, bank256, cfg, seed=seed, indices=idx)
    dev = insmix_batch(images, labels, bank256, cfg, seed=seed, indices=idx, device="cuda")
    _same(dev, cpu)
    if name == "always-paste":
        assert sum(len(p) for p in cpu.pastes) >= 20


@gpu
@pytest.mark.gpu
def test_gpu_device_input_no_transfer(tiles256, bank256):
    from numba import cuda
    from numba.cuda.cudadrv import devicearray

    images = np.stack([t[0] for t in tiles256])
    labels = np.stack([t[1] for t in tiles256])
    di, dl = cuda.to_device(images), cuda.to_device(labels)
    dbank = bank256.to("cuda")
    assert bank256.to("cuda") is dbank  # uploaded once
    with transfer_log(cuda, devicearray.DeviceNDArray) as log:
        r = insmix_batch(di, dl, dbank, InsMixConfig(p_paste=1.0), seed=3, device="cuda")
        cuda.synchronize()
    assert [n for d, n in log if d == "d2h"] == [8], log
    assert all(n < 1024 for d, n in log if d == "h2d"), log
    assert type(r.images).__name__ == "DeviceNDArray"
    _same(r.to_host(), insmix_batch(images, labels, bank256, InsMixConfig(p_paste=1.0), seed=3))


@gpu
@pytest.mark.gpu
@pytest.mark.parametrize("lib", ["cupy", "torch"])
def test_gpu_zero_copy_kinds(tiles256, bank256, lib):
    images = np.stack([t[0] for t in tiles256[:4]])
    labels = np.stack([t[1] for t in tiles256[:4]])
    if lib == "cupy":
        cp = pytest.importorskip("cupy")
        di, dl = cp.asarray(images), cp.asarray(labels)
    else:
        torch = pytest.importorskip("torch")
        if not torch.cuda.is_available():
            pytest.skip("torch has no CUDA here")
        di, dl = torch.from_numpy(images).cuda(), torch.from_numpy(labels).cuda()
    r = insmix_batch(di, dl, bank256, InsMixConfig(p_paste=1.0), seed=2, device="cuda")
    assert type(r.images) is type(di) and type(r.labels) is type(dl)
    cpu = insmix_batch(images, labels, bank256, InsMixConfig(p_paste=1.0), seed=2)
    _same(r.to_host(), cpu)


@gpu
@pytest.mark.gpu
@pytest.mark.parametrize("lib", ["numba", "torch", "cupy"])
def test_gpu_caller_stream(tiles256, bank256, lib):
    """``stream=`` of each kind: same output as the default stream, and the result is
    read only after ``to_host()`` waited for the stream."""
    from numba import cuda

    images = np.stack([t[0] for t in tiles256[:4]])
    labels = np.stack([t[1] for t in tiles256[:4]])
    if lib == "numba":
        stream = cuda.stream()
        di, dl = cuda.to_device(images, stream=stream), cuda.to_device(labels, stream=stream)
    elif lib == "torch":
        torch = pytest.importorskip("torch")
        if not torch.cuda.is_available():
            pytest.skip("torch has no CUDA here")
        stream = torch.cuda.Stream()
        with torch.cuda.stream(stream):
            di, dl = torch.from_numpy(images).cuda(), torch.from_numpy(labels).cuda()
    else:
        cp = pytest.importorskip("cupy")
        stream = cp.cuda.Stream(non_blocking=True)
        with stream:
            di, dl = cp.asarray(images), cp.asarray(labels)
    r = insmix_batch(di, dl, bank256, InsMixConfig(p_paste=1.0), seed=5, device="cuda", stream=stream)
    _same(r.to_host(), insmix_batch(images, labels, bank256, InsMixConfig(p_paste=1.0), seed=5))


@gpu
@pytest.mark.gpu
def test_gpu_bankwide_counts_match_cpu(tiles256, bank256):
    from insmix_fast.gpu.scoring import admissible_counts_cuda
    from insmix_fast.kernels.instances import build_table, tile_stats
    from insmix_fast.kernels.ssd import admissible_counts
    from insmix_fast.kernels.tables import Table

    labels = np.stack([t[1] for t in tiles256[:4]])
    cfg = InsMixConfig(eps=0.5, rho=0.6)
    got = admissible_counts_cuda(labels, bank256, cfg)
    for b in range(len(labels)):
        ids, _l, area, sr, sc, bbox, _ = tile_stats(labels[b], 20, int(labels[b].max()), 0)
        t = build_table(labels[b], ids, area, sr, sc, bbox)
        ot = Table(t[0], t[1], t[2], t[4], t[5], np.zeros(0, np.uint8), t[6], t[7])
        np.testing.assert_array_equal(got[b, 1:len(ids) + 1], admissible_counts(ot, bank256.table, 0.5, 0.6))


@gpu
@pytest.mark.gpu
@pytest.mark.parametrize("mode", ["any", "same", "balanced"])
def test_gpu_typed_matches_cpu(mode):
    """Typed batches (types, ignore, template classes) give the CPU's output on the device too."""
    from numba import cuda

    from insmix_fast import InstanceBank
    from typed_data import TypedTiles

    bank = InstanceBank.from_samples(TypedTiles(seed=11, size=256, n=6), progress=False)
    images, labels, types = TypedTiles(seed=12, size=256, n=8).arrays()
    ignore = np.zeros(labels.shape, bool)
    ignore[::2, 60:100, :] = True
    cfg = InsMixConfig(p_paste=1.0, template_class=mode, max_draws=2)
    cpu = insmix_batch(images, labels, bank, cfg, seed=4, types=types, ignore=ignore)
    dev = insmix_batch(images, labels, bank, cfg, seed=4, types=types, ignore=ignore, device="cuda")
    _same(dev, cpu)
    np.testing.assert_array_equal(dev.types, cpu.types)
    d = insmix_batch(*(cuda.to_device(a) for a in (images, labels)), bank, cfg, seed=4, types=cuda.to_device(types),
                     ignore=cuda.to_device(ignore), device="cuda").to_host()
    _same(d, cpu)
    np.testing.assert_array_equal(d.types, cpu.types)
    assert sum(len(p) for p in cpu.pastes) >= 20
