"""smooth-GAN networks: gated conv, FSE (Eq. 6–7), generator and PatchGAN shapes."""

import pytest
import torch
import torch.nn.functional as F

from insmix_fast.errors import ConfigError
from insmix_fast.gan.model import FSE, Discriminator, GatedConv2d, Generator, composite


def test_gated_conv_is_elu_times_sigmoid():
    torch.manual_seed(0)
    g = GatedConv2d(3, 4, 3)
    x = torch.randn(2, 3, 8, 8)
    y = g.conv(x)
    ref = F.elu(y[:, :4]) * torch.sigmoid(y[:, 4:])
    torch.testing.assert_close(g(x), ref)
    assert not any(isinstance(m, (torch.nn.BatchNorm2d, torch.nn.InstanceNorm2d)) for m in Generator(4).modules())


def _fse_reference(f, m_t, m_o, stride, scale):
    """Loop implementation of Eq. 6–7 (cosine over zero-padded 3×3 patches, masked softmax)."""
    n, c, h, w = f.shape
    fp = F.pad(f, (1, 1, 1, 1))
    out = f.clone()
    for b in range(n):
        keys, vals = [], []
        for y in range(0, h, stride):
            for x in range(0, w, stride):
                if m_o[b, 0, y, x] > 0.5 and m_t[b, 0, y, x] <= 0.5:
                    p = fp[b, :, y:y + 3, x:x + 3].reshape(-1)
                    keys.append(p / p.norm().clamp_min(1e-4))
                    vals.append(f[b, :, y, x])
        if not keys:
            continue
        K, V = torch.stack(keys), torch.stack(vals)
        for y in range(h):
            for x in range(w):
                if m_t[b, 0, y, x] > 0.5:
                    q = fp[b, :, y:y + 3, x:x + 3].reshape(-1)
                    s = K @ (q / q.norm().clamp_min(1e-4))
                    out[b, :, y, x] = torch.softmax(scale * s, 0) @ V
    return out


@pytest.mark.parametrize("stride", [1, 2])
def test_fse_matches_loop_reference(stride):
    torch.manual_seed(1)
    f = torch.randn(2, 3, 8, 6)
    m_t = torch.zeros(2, 1, 8, 6)
    m_o = torch.zeros(2, 1, 8, 6)
    m_t[0, 0, 1:3, 1:4] = 1
    m_o[0, 0, 4:8, 0:5] = 1
    m_t[1, 0, 5:7, 2:5] = 1
    m_o[1, 0, 0:4, :] = 0.75
    m_o[1, 0, 5, 2] = 1  # template wins over original: not a valid key
    got = FSE(key_stride=stride, softmax_scale=10.0)(f, m_t, m_o)
    torch.testing.assert_close(got, _fse_reference(f, m_t, m_o, stride, 10.0), rtol=1e-5, atol=1e-5)


def test_fse_single_key_copies_its_feature_and_ignores_invalid_keys():
    f = torch.zeros(1, 2, 4, 4)
    f[0, 0] = torch.arange(16.0).view(4, 4)
    f[0, 1] = 1.0
    m_t = torch.zeros(1, 1, 4, 4)
    m_t[0, 0, 0, 0] = 1
    m_o = torch.zeros(1, 1, 4, 4)
    m_o[0, 0, 2, 3] = 1  # the only valid key: softmax over one key = 1
    out = FSE(key_stride=1)(f, m_t, m_o)
    assert torch.equal(out[0, :, 0, 0], f[0, :, 2, 3])  # Eq. 7 with a single weight 1
    mask = torch.ones(4, 4, dtype=torch.bool)
    mask[0, 0] = False
    assert torch.equal(out[0][:, mask], f[0][:, mask])  # nothing else changes


def test_fse_without_original_or_template_is_identity():
    torch.manual_seed(0)
    f = torch.randn(2, 4, 6, 6)
    m_t = torch.zeros(2, 1, 6, 6)
    m_t[:, :, 2:4, 2:4] = 1
    assert torch.equal(FSE()(f, m_t, torch.zeros_like(m_t)), f)  # no valid key: pass through (no NaN)
    assert torch.equal(FSE()(f, torch.zeros_like(m_t), torch.ones_like(m_t)), f)  # nothing to replace


@pytest.mark.parametrize("hw", [(32, 32), (36, 44), (64, 48)])
def test_generator_any_size_divisible_by_4(hw):
    torch.manual_seed(0)
    g = Generator(width=4).eval()
    x = torch.rand(2, 3, *hw) * 2 - 1
    m = torch.zeros(2, 1, *hw)
    m[0, :, 4:12, 8:16] = 1
    o = torch.zeros(2, 1, *hw)
    o[:, :, 16:28, 16:28] = 1
    with torch.no_grad():
        y = g(x, m, o)
    assert y.shape == x.shape and torch.isfinite(y).all() and y.abs().max() <= 1
    s = composite(x, y, m)
    assert torch.equal(s[1], x[1])  # sample without pastes: identity
    assert torch.equal(s[0][:, m[0, 0] == 0], x[0][:, m[0, 0] == 0])
    assert not torch.equal(s[0], x[0])


def test_generator_fse_uses_original_region():
    """Changing the original nuclei's pixels changes the FSE output on the template cells only."""
    torch.manual_seed(0)
    g = Generator(width=4).eval()
    x = torch.zeros(1, 3, 64, 64)
    m = torch.zeros(1, 1, 64, 64)
    m[:, :, 4:12, 4:12] = 1  # template cells (1..2, 1..2) at 1/4 resolution
    o = torch.zeros(1, 1, 64, 64)
    o[:, :, 40:56, 40:56] = 1
    x2 = x.clone()
    x2[:, :, 40:56, 40:56] = 0.8
    seen = []
    g.fse.register_forward_hook(lambda mod, inp, out: seen.append((inp[0], out)))
    with torch.no_grad():
        g(x, m, o)
        g(x2, m, o)
    (f1, a), (f2, b) = seen
    assert (a[..., 1:3, 1:3] - b[..., 1:3, 1:3]).abs().max() > 1e-5  # template features borrow from originals
    assert not torch.equal(a[..., 1:3, 1:3], f1[..., 1:3, 1:3])
    keep = torch.ones(16, 16, dtype=torch.bool)
    keep[1:3, 1:3] = False
    assert torch.equal(a[..., keep], f1[..., keep]) and torch.equal(b[..., keep], f2[..., keep])


def test_generator_config_validation():
    with pytest.raises(ConfigError):
        Generator(width=3)
    with pytest.raises(ConfigError):
        FSE(key_stride=0)
    g = Generator(width=6, key_stride=1)
    assert Generator.from_config(g.config.to_dict()).config == g.config


def test_discriminator_patchgan_with_spectral_norm():
    d = Discriminator(width=8)
    convs = [m for m in d.modules() if isinstance(m, torch.nn.Conv2d)]
    assert [c.out_channels for c in convs] == [8, 16, 32, 64, 1]
    assert all(torch.nn.utils.parametrize.is_parametrized(c, "weight") for c in convs)
    assert d(torch.rand(2, 3, 64, 64)).shape == (2, 1, 6, 6)
    assert d(torch.rand(1, 3, 256, 256)).shape == (1, 1, 30, 30)  # 70×70 PatchGAN on 256²
    assert [c.out_channels for c in Discriminator().modules() if isinstance(c, torch.nn.Conv2d)] == [64, 128, 256, 512, 1]
