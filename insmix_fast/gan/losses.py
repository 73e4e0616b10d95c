"""smooth-GAN losses (paper Eq. 3–5, SPEC §5).

Notation: ``D(·)`` is the PatchGAN output map (N×1×h×w). The L1 *distance*
between two discriminator outputs is the mean absolute difference over the
patch map, per sample:

    d(a, b) = mean_{h,w} |D(a) − D(b)|                       (one number per sample)

* triplet / discriminator loss (Eq. 3), anchor ``x_a`` and positive ``x_p`` two
  real tiles, negative the smoothed tile S(u)::

      L_D = mean_batch max(0, d(x_a, x_p) − d(x_a, S(u)) + m),   m = 1.0

* adversarial loss for the generator (Eq. 4)::

      L_adv = mean_batch [ d(x_a, S(u)) − d(x_a, x_p) ]

* generator loss (Eq. 5), reconstruction = mean absolute error over all pixels
  and channels of the [−1, 1] images::

      L_G = L_adv + λ · mean |u − G(u)|,   λ = 10

The official training script uses a standard GAN instead (BCE on the patch
logits, real → 1, S(u) → 0) with λ = 100; :func:`bce_discriminator_loss` and
:func:`bce_generator_loss` implement it (``loss="bce"`` in training).
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F

__all__ = [
    "l1_distance", "triplet_loss", "adversarial_loss", "reconstruction_loss", "generator_loss",
    "bce_discriminator_loss", "bce_generator_loss", "GLoss", "MARGIN", "LAMBDA", "LAMBDA_BCE",
]

MARGIN = 1.0
LAMBDA = 10.0
LAMBDA_BCE = 100.0


class GLoss(NamedTuple):
    total: torch.Tensor
    adv: torch.Tensor
    rec: torch.Tensor


def l1_distance(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Per-sample mean absolute difference of two N×… tensors → shape (N,)."""
    if a.shape != b.shape:
        raise ValueError(f"l1_distance: shapes differ {tuple(a.shape)} vs {tuple(b.shape)}")
    return (a.float() - b.float()).abs().flatten(1).mean(dim=1)


def triplet_loss(d_anchor: torch.Tensor, d_positive: torch.Tensor, d_negative: torch.Tensor,
                 margin: float = MARGIN) -> torch.Tensor:
    """Eq. 3: ``mean(max(0, d(a, p) − d(a, n) + margin))`` on discriminator outputs."""
    return F.relu(l1_distance(d_anchor, d_positive) - l1_distance(d_anchor, d_negative) + margin).mean()


def adversarial_loss(d_anchor: torch.Tensor, d_positive: torch.Tensor, d_negative: torch.Tensor) -> torch.Tensor:
    """Eq. 4: ``mean(d(a, S(u)) − d(a, p))`` (the generator minimises it)."""
    return (l1_distance(d_anchor, d_negative) - l1_distance(d_anchor, d_positive)).mean()


def reconstruction_loss(u: torch.Tensor, g: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """``mean |u − G(u)|`` over all pixels and channels, or over the pixels of ``mask``
    (N×1×H×W, {0,1}) only; a batch whose mask is empty gives 0."""
    diff = (u.float() - g.float()).abs()
    if mask is None:
        return diff.mean()
    if mask.shape[0] != diff.shape[0] or mask.shape[-2:] != diff.shape[-2:]:
        raise ValueError(f"reconstruction_loss: mask {tuple(mask.shape)} does not match images {tuple(diff.shape)}")
    m = mask.float()
    return (diff * m).sum() / (m.sum() * diff.shape[1]).clamp_min(1.0)


def generator_loss(d_anchor: torch.Tensor, d_positive: torch.Tensor, d_negative: torch.Tensor,
                   u: torch.Tensor, g: torch.Tensor, lam: float = LAMBDA,
                   rec_mask: torch.Tensor | None = None) -> GLoss:
    """Eq. 5: ``L_G = L_adv + λ·|u − G(u)|₁`` → ``GLoss(total, adv, rec)``
    (the L1 term over ``rec_mask`` only when given, see :func:`reconstruction_loss`)."""
    adv = adversarial_loss(d_anchor, d_positive, d_negative)
    rec = reconstruction_loss(u, g, rec_mask)
    return GLoss(adv + lam * rec, adv, rec)


def bce_discriminator_loss(d_real: torch.Tensor, d_fake: torch.Tensor) -> torch.Tensor:
    """Official variant: BCE-with-logits, real patches → 1, S(u) patches → 0 (averaged)."""
    real = F.binary_cross_entropy_with_logits(d_real.float(), torch.ones_like(d_real, dtype=torch.float32))
    fake = F.binary_cross_entropy_with_logits(d_fake.float(), torch.zeros_like(d_fake, dtype=torch.float32))
    return 0.5 * (real + fake)


def bce_generator_loss(d_fake: torch.Tensor, u: torch.Tensor, g: torch.Tensor,
                       lam: float = LAMBDA_BCE, rec_mask: torch.Tensor | None = None) -> GLoss:
    """Official variant: ``BCE(D(S(u)), 1) + λ·|u − G(u)|₁`` with λ = 100."""
    adv = F.binary_cross_entropy_with_logits(d_fake.float(), torch.ones_like(d_fake, dtype=torch.float32))
    rec = reconstruction_loss(u, g, rec_mask)
    return GLoss(adv + lam * rec, adv, rec)
