"""smooth-GAN losses (Eq. 3–5) on tensors with hand-computed values."""

import math

import pytest
import torch

from insmix_fast.gan.losses import (adversarial_loss, bce_discriminator_loss, bce_generator_loss, generator_loss,
                                    l1_distance, reconstruction_loss, triplet_loss)


def _maps():
    # two samples, D outputs of 1×2×2 patches
    a = torch.tensor([[[[0.0, 0.0], [0.0, 0.0]]], [[[1.0, 1.0], [1.0, 1.0]]]])
    p = torch.tensor([[[[0.5, 0.5], [0.5, 0.5]]], [[[1.0, 1.0], [1.0, 3.0]]]])  # d(a,p) = 0.5, 0.5
    n = torch.tensor([[[[2.0, 0.0], [0.0, 0.0]]], [[[4.0, 4.0], [4.0, 4.0]]]])  # d(a,n) = 0.5, 3.0
    return a, p, n


def test_l1_distance_per_sample_mean():
    a, p, n = _maps()
    torch.testing.assert_close(l1_distance(a, p), torch.tensor([0.5, 0.5]))
    torch.testing.assert_close(l1_distance(a, n), torch.tensor([0.5, 3.0]))
    with pytest.raises(ValueError):
        l1_distance(a, a[:, :, :1])


def test_triplet_loss_eq3():
    a, p, n = _maps()
    # sample 0: max(0, 0.5 − 0.5 + 1) = 1 ; sample 1: max(0, 0.5 − 3 + 1) = 0 → mean 0.5
    assert triplet_loss(a, p, n).item() == pytest.approx(0.5)
    assert triplet_loss(a, p, n, margin=3.0).item() == pytest.approx((3.0 + 0.5) / 2)
    assert triplet_loss(a, a, a).item() == pytest.approx(1.0)  # margin when nothing is separated


def test_adversarial_and_generator_loss_eq4_eq5():
    a, p, n = _maps()
    # L_adv = mean(d(a,n) − d(a,p)) = mean(0, 2.5) = 1.25
    assert adversarial_loss(a, p, n).item() == pytest.approx(1.25)
    u = torch.zeros(2, 3, 2, 2)
    g = torch.full((2, 3, 2, 2), 0.1)
    g[0, 0, 0, 0] = -0.5  # |u − G(u)|: 23 × 0.1 + 0.5 over 24 values
    rec = (23 * 0.1 + 0.5) / 24
    assert reconstruction_loss(u, g).item() == pytest.approx(rec)
    tot, adv, r = generator_loss(a, p, n, u, g)
    assert adv.item() == pytest.approx(1.25)
    assert r.item() == pytest.approx(rec)
    assert tot.item() == pytest.approx(1.25 + 10 * rec)  # λ = 10
    assert generator_loss(a, p, n, u, g, lam=2.0).total.item() == pytest.approx(1.25 + 2 * rec)


def test_reconstruction_over_the_paste_mask():
    u = torch.zeros(2, 3, 2, 2)
    g = torch.full((2, 3, 2, 2), 0.1)
    g[0, :, 0, 0] = 0.7  # inside the mask
    g[1, :, 1, 1] = 5.0  # outside the mask: ignored
    m = torch.zeros(2, 1, 2, 2)
    m[0, 0, 0, 0] = 1
    m[1, 0, 0, :] = 1
    # masked pixels: (0,0,0) with 0.7 in 3 channels, (1,0,0) and (1,0,1) with 0.1 → (3·0.7 + 6·0.1) / 9
    assert reconstruction_loss(u, g, m).item() == pytest.approx((3 * 0.7 + 6 * 0.1) / 9)
    assert reconstruction_loss(u, g, torch.zeros_like(m)).item() == 0.0  # no pastes: nothing to reconstruct
    a, p, n = _maps()
    tot, adv, r = generator_loss(a, p, n, u, g, rec_mask=m)
    assert tot.item() == pytest.approx(1.25 + 10 * (3 * 0.7 + 6 * 0.1) / 9)
    with pytest.raises(ValueError, match="mask"):
        reconstruction_loss(u, g, torch.zeros(1, 1, 2, 2))


def test_generator_gradient_flows_only_through_negative():
    a, p, n = _maps()
    n = n.clone().requires_grad_(True)
    adversarial_loss(a, p, n).backward()
    # ∂/∂n mean_b mean_hw |a − n| = sign(n − a) / (B·h·w) = 1/8 where n ≠ a, 0 where equal
    expect = torch.full_like(n, 1 / 8)
    expect[0, 0, 0, 1:] = 0
    expect[0, 0, 1, :] = 0
    torch.testing.assert_close(n.grad, expect)


def test_bce_variant():
    real = torch.zeros(2, 1, 2, 2)
    fake = torch.zeros(2, 1, 2, 2)
    assert bce_discriminator_loss(real, fake).item() == pytest.approx(math.log(2))
    real = torch.full((1, 1, 1, 1), 100.0)
    fake = torch.full((1, 1, 1, 1), -100.0)
    assert bce_discriminator_loss(real, fake).item() == pytest.approx(0.0, abs=1e-6)
    u = torch.zeros(1, 3, 2, 2)
    g = torch.full((1, 3, 2, 2), 0.01)
    tot, adv, rec = bce_generator_loss(torch.zeros(1, 1, 2, 2), u, g)
    assert adv.item() == pytest.approx(math.log(2))
    assert tot.item() == pytest.approx(math.log(2) + 100 * 0.01)  # λ = 100 (official)
