"""Blender: batch blend on CPU, exact pass-through outside the paste mask, formats and errors."""

import numpy as np
import pytest
import torch

from insmix_fast.errors import ConfigError, InputError, InputTypeError
from insmix_fast.gan import Blender, Generator, export_blender


def _batch(n=3, h=32, w=40, seed=0):
    rng = np.random.default_rng(seed)
    imgs = rng.integers(0, 256, (n, h, w, 3), dtype=np.uint8)
    pm = np.zeros((n, h, w), bool)
    pm[0, 4:12, 4:14] = True
    pm[1, 20:30, 10:22] = True  # sample 2: no paste
    om = np.zeros((n, h, w), bool)
    om[:, 14:20, 24:36] = True
    return imgs, pm, om


@pytest.fixture(scope="module")
def blender():
    torch.manual_seed(0)
    return Blender(Generator(width=4))


def test_float_nchw_primary_outside_untouched(blender):
    imgs, pm, om = _batch()
    x = torch.from_numpy(imgs).permute(0, 3, 1, 2).float() / 255
    out = blender.blend(x, torch.from_numpy(pm), torch.from_numpy(om))
    assert out.shape == x.shape and out.dtype == x.dtype and not out.is_inference()
    m = torch.from_numpy(pm)[:, None].expand_as(x)
    assert torch.equal(out[~m], x[~m])  # bit for bit
    assert not torch.equal(out[m], x[m])
    assert torch.equal(out[2], x[2])
    assert out.min() >= 0 and out.max() <= 1


def test_uint8_nhwc_torch_and_numpy(blender):
    imgs, pm, om = _batch()
    out_np = blender.blend(imgs, pm, om)
    assert isinstance(out_np, np.ndarray) and out_np.dtype == np.uint8 and out_np.shape == imgs.shape
    assert np.array_equal(out_np[~pm], imgs[~pm])
    out_t = blender.blend(torch.from_numpy(imgs), torch.from_numpy(pm), torch.from_numpy(om)[:, None])
    assert torch.equal(out_t, torch.from_numpy(out_np))
    # same as the float path, up to rounding
    x = torch.from_numpy(imgs).permute(0, 3, 1, 2).float() / 255
    f = blender.blend(x, torch.from_numpy(pm), torch.from_numpy(om))
    f8 = (f * 255).round().byte().permute(0, 2, 3, 1).numpy()
    assert np.abs(f8.astype(int) - out_np.astype(int)).max() <= 1


def test_no_pastes_is_identity(blender):
    imgs, pm, om = _batch()
    pm[:] = False
    assert np.array_equal(blender.blend(imgs, pm, om), imgs)


def test_strength_interpolates(blender):
    imgs, pm, om = _batch()
    x = torch.from_numpy(imgs).permute(0, 3, 1, 2).float() / 255
    p, o = torch.from_numpy(pm), torch.from_numpy(om)
    full = blender.blend(x, p, o)
    b7 = Blender(blender.model, strength=0.7)
    torch.testing.assert_close(b7.blend(x, p, o), 0.7 * full + 0.3 * x, rtol=0, atol=1e-6)
    assert torch.equal(Blender(blender.model, strength=0.0).blend(x, p, o), x)


def test_from_file_matches(blender, tmp_path):
    imgs, pm, om = _batch()
    export_blender(blender.model.generator, tmp_path / "b.pt", "torchscript")
    b2 = Blender.from_file(tmp_path / "b.pt")
    assert np.array_equal(b2.blend(imgs, pm, om), blender.blend(imgs, pm, om))


def test_bf16_autocast_on_cpu(blender):
    imgs, pm, om = _batch()
    b = Blender(blender.model, amp="bf16")
    out = b.blend(imgs, pm, om)
    assert np.array_equal(out[~pm], imgs[~pm])
    assert np.abs(out.astype(int) - blender.blend(imgs, pm, om).astype(int)).max() <= 8


def test_errors(blender):
    imgs, pm, om = _batch()
    x = torch.from_numpy(imgs).permute(0, 3, 1, 2).float() / 255
    p, o = torch.from_numpy(pm), torch.from_numpy(om)
    with pytest.raises(InputError, match="multiples of 4"):
        blender.blend(x[..., :30], p[..., :30], o[..., :30])
    with pytest.raises(InputError, match="N×3×H×W"):
        blender.blend(x.permute(0, 2, 3, 1), p, o)
    with pytest.raises(InputError, match="dtype"):
        blender.blend(x.int(), p, o)
    with pytest.raises(InputError, match="paste_mask"):
        blender.blend(x, p[:2], o)
    with pytest.raises(InputError, match="original_mask"):
        blender.blend(x, p, o[..., :8])
    with pytest.raises(InputTypeError):
        blender.blend([1, 2], p, o)
    with pytest.raises(InputError, match="empty"):
        blender.blend(x[:0], p[:0], o[:0])
    with pytest.raises(ConfigError):
        Blender(blender.model, strength=1.5)
    with pytest.raises(ConfigError):
        Blender(blender.model, amp="int8")
    if torch.cuda.is_available():
        with pytest.raises(InputError, match="device"):
            blender.blend(x.cuda(), p, o)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_blend_matches_cpu(blender):
    imgs, pm, om = _batch()
    x = torch.from_numpy(imgs).permute(0, 3, 1, 2).float() / 255
    p, o = torch.from_numpy(pm), torch.from_numpy(om)
    ref = Blender(blender.model.generator, amp=False, device="cpu").blend(x, p, o)
    out = Blender(Generator.from_config(blender.model.generator.config.to_dict()), device="cuda")
    out.model.load_state_dict(blender.model.state_dict())
    got = out.blend(x.cuda(), p.cuda(), o.cuda())
    assert got.device.type == "cuda"
    m = p[:, None].expand_as(x)
    assert torch.equal(got.cpu()[~m], x[~m])
    assert (got.cpu() - ref).abs().max() < 0.05  # bf16/fp16 autocast
