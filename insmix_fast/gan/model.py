"""smooth-GAN networks (SPEC §5, paper §2.3).

Generator
    DeepFill-style encoder–decoder built from gated convolutions
    (``ELU(a) · sigmoid(b)``, no normalisation). Input: the pasted tile ``u`` in
    [−1, 1] (N×3×H×W) plus two mask channels, the paste mask ``M`` (template
    pixels) and the original-instance mask ``O`` (``labels > 0 & ~M``). The
    encoder goes down to 1/4 resolution; there two branches run side by side:

    * a dilated branch (rates 2, 4, 8, 16) for a large receptive field;
    * the Foreground Similarity Encoder (:class:`FSE`, Eq. 6–7): every 3×3
      feature patch of the template region is compared (cosine similarity) with
      the 3×3 patches of the original-instance region, and its feature is
      replaced by the softmax-weighted sum of the original features.

    Their outputs are concatenated and decoded (nearest ×2 upsampling) to an
    RGB image through ``tanh``. ``H`` and ``W`` must be multiples of 4.

Discriminator
    70×70 PatchGAN (64-128-256-512) with spectral normalisation from
    :func:`torch.nn.utils.parametrizations.spectral_norm` (the parametrization
    version; the old hook version cannot be scripted/traced).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm

from ..errors import ConfigError

__all__ = ["GatedConv2d", "FSE", "Generator", "Discriminator", "GeneratorConfig", "STRIDE"]

#: total down-sampling factor of the generator: tile sides must be multiples of it.
STRIDE = 4


class GatedConv2d(nn.Module):
    """Gated convolution (Yu et al., DeepFill v2): ``ELU(a) · sigmoid(b)``.

    One convolution produces ``2·out_ch`` channels split into a feature half
    ``a`` and a gate half ``b``. No normalisation layer.
    """

    def __init__(self, in_ch: int, out_ch: int, kernel: int = 3, stride: int = 1, dilation: int = 1):
        super().__init__()
        pad = dilation * (kernel - 1) // 2
        self.out_ch = out_ch
        self.conv = nn.Conv2d(in_ch, 2 * out_ch, kernel, stride=stride, padding=pad, dilation=dilation)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a, b = torch.split(self.conv(x), self.out_ch, dim=1)
        return F.elu(a) * torch.sigmoid(b)


class FSE(nn.Module):
    """Foreground Similarity Encoder: masked patch attention (Eq. 6–7).

    ``forward(f, m_t, m_o)`` with features ``f`` (N×C×h×w) and the template and
    original masks at feature resolution (N×1×h×w, values in [0, 1]):

    * queries: the 3×3 patch of ``f`` around every position (zero padded),
      L2-normalised over its ``C·9`` values;
    * keys: the 3×3 patches on a ``key_stride`` grid, normalised the same way,
      *valid* only where the key centre is inside the original-instance region
      (``m_o > 0.5``) and not in the template region (``m_t ≤ 0.5``);
    * ``S_ij`` = cosine similarity (Eq. 6); weights = ``softmax_j(scale · S_ij)``
      over valid keys only (invalid keys are masked out);
    * ``f̄(p_i) = Σ_j w_ij · f(p_j)`` (Eq. 7), ``f(p_j)`` the feature at the key
      centre.

    Only positions inside the template region (``m_t > 0.5``) are replaced;
    elsewhere, and in any sample without a single valid key, ``f`` passes through
    unchanged. No Python control flow depends on data, so the module traces and
    exports for any batch/tile size.
    """

    def __init__(self, key_stride: int = 2, softmax_scale: float = 10.0, eps: float = 1e-4):
        super().__init__()
        if key_stride < 1:
            raise ConfigError(f"FSE key_stride must be ≥ 1, got {key_stride}")
        self.key_stride = int(key_stride)
        self.softmax_scale = float(softmax_scale)
        self.eps = float(eps)

    def forward(self, f: torch.Tensor, m_t: torch.Tensor, m_o: torch.Tensor) -> torch.Tensor:
        n, c, h, w = f.shape
        s = self.key_stride
        q = F.unfold(f, 3, padding=1)  # N × C·9 × L
        q = q / q.float().norm(dim=1, keepdim=True).clamp_min(self.eps).to(q.dtype)
        k = F.unfold(f, 3, padding=1, stride=s)  # N × C·9 × K (key centres on the stride grid)
        k = k / k.float().norm(dim=1, keepdim=True).clamp_min(self.eps).to(k.dtype)
        v = f[:, :, ::s, ::s].flatten(2)  # N × C × K
        valid = ((m_o[:, :, ::s, ::s] > 0.5) & (m_t[:, :, ::s, ::s] <= 0.5)).flatten(2)  # N × 1 × K
        sim = torch.bmm(q.transpose(1, 2), k).float()  # N × L × K, cosine similarity (Eq. 6)
        logits = (sim * self.softmax_scale).masked_fill(~valid, -1e4)
        attn = torch.softmax(logits, dim=-1).to(v.dtype)
        out = torch.bmm(v, attn.transpose(1, 2)).view(n, c, h, w)  # Eq. 7
        has_key = valid.any(dim=-1).view(n, 1, 1, 1)
        replace = (m_t > 0.5) & has_key
        return torch.where(replace, out, f)


@dataclass(frozen=True)
class GeneratorConfig:
    """Hyper-parameters of :class:`Generator` (stored in checkpoints)."""

    width: int = 48
    key_stride: int = 2
    softmax_scale: float = 10.0
    dilations: tuple[int, ...] = (2, 4, 8, 16)

    def __post_init__(self):
        if not isinstance(self.width, int) or self.width < 2 or self.width % 2:
            raise ConfigError(f"generator width must be an even integer ≥ 2, got {self.width!r}")
        if not self.dilations or any(int(d) < 1 for d in self.dilations):
            raise ConfigError(f"dilations must be positive integers, got {self.dilations!r}")
        object.__setattr__(self, "dilations", tuple(int(d) for d in self.dilations))

    def to_dict(self) -> dict:
        return asdict(self)


class Generator(nn.Module):
    """smooth-GAN generator G (see module docstring).

    ``forward(x, paste_mask, original_mask)``: ``x`` N×3×H×W in [−1, 1], masks
    N×1×H×W in {0, 1} (any float/bool dtype); returns G(u), N×3×H×W in [−1, 1].
    The composite S(u) = G(u)·M + u·(1−M) is done by the caller
    (:class:`insmix_fast.gan.blender.Blender`, :func:`composite`).
    """

    def __init__(self, width: int = 48, key_stride: int = 2, softmax_scale: float = 10.0,
                 dilations: tuple[int, ...] = (2, 4, 8, 16)):
        super().__init__()
        self.config = GeneratorConfig(width=width, key_stride=key_stride, softmax_scale=softmax_scale,
                                      dilations=tuple(dilations))
        w = width
        self.encoder = nn.Sequential(
            GatedConv2d(5, w, 5),
            GatedConv2d(w, 2 * w, 3, stride=2),
            GatedConv2d(2 * w, 2 * w, 3),
            GatedConv2d(2 * w, 4 * w, 3, stride=2),
            GatedConv2d(4 * w, 4 * w, 3),
        )
        self.dilated = nn.Sequential(
            *[GatedConv2d(4 * w, 4 * w, 3, dilation=d) for d in self.config.dilations],
            GatedConv2d(4 * w, 4 * w, 3),
        )
        self.fse_in = GatedConv2d(4 * w, 2 * w, 3)
        self.fse = FSE(key_stride=key_stride, softmax_scale=softmax_scale)
        self.fse_out = GatedConv2d(2 * w, 2 * w, 3)
        self.dec1 = nn.Sequential(GatedConv2d(6 * w, 4 * w, 3), GatedConv2d(4 * w, 4 * w, 3))
        self.dec2 = nn.Sequential(GatedConv2d(4 * w, 2 * w, 3), GatedConv2d(2 * w, 2 * w, 3))
        self.dec3 = nn.Sequential(GatedConv2d(2 * w, w, 3), GatedConv2d(w, w // 2, 3))
        self.to_rgb = nn.Conv2d(w // 2, 3, 3, padding=1)

    @classmethod
    def from_config(cls, config: GeneratorConfig | dict) -> "Generator":
        if isinstance(config, dict):
            config = GeneratorConfig(**config)
        return cls(**config.to_dict())

    def forward(self, x: torch.Tensor, paste_mask: torch.Tensor, original_mask: torch.Tensor) -> torch.Tensor:
        m = paste_mask.to(x.dtype)
        o = original_mask.to(x.dtype)
        feat = self.encoder(torch.cat([x, m, o], dim=1))
        # masks at 1/4 resolution: a feature cell is "template" if any pixel of it
        # was pasted; its "original" fraction is the mean of O over the 4×4 cell.
        m_t = F.max_pool2d(m, STRIDE)
        m_o = F.avg_pool2d(o, STRIDE)
        d = self.dilated(feat)
        a = self.fse_out(self.fse(self.fse_in(feat), m_t, m_o))
        y = self.dec1(torch.cat([d, a], dim=1))
        y = self.dec2(F.interpolate(y, scale_factor=2.0, mode="nearest"))
        y = self.dec3(F.interpolate(y, scale_factor=2.0, mode="nearest"))
        return torch.tanh(self.to_rgb(y))


def composite(u: torch.Tensor, g: torch.Tensor, paste_mask: torch.Tensor) -> torch.Tensor:
    """S(u) = G(u)·M + u·(1−M) with ``torch.where``: pixels outside M are ``u`` bit for bit."""
    return torch.where(paste_mask > 0.5, g.to(u.dtype), u)


class Discriminator(nn.Module):
    """70×70 PatchGAN (C64-C128-C256-C512, 4×4 kernels) with spectral norm, no BatchNorm.

    Input N×3×H×W in [−1, 1] (H, W ≥ 32); output N×1×h×w patch scores (logits).
    """

    def __init__(self, width: int = 64, in_ch: int = 3):
        super().__init__()
        self.width = width
        w = width
        chans = [in_ch, w, 2 * w, 4 * w, 8 * w]
        layers: list[nn.Module] = []
        for i in range(4):
            stride = 2 if i < 3 else 1
            layers += [spectral_norm(nn.Conv2d(chans[i], chans[i + 1], 4, stride=stride, padding=1)),
                       nn.LeakyReLU(0.2, inplace=True)]
        layers.append(spectral_norm(nn.Conv2d(chans[4], 1, 4, stride=1, padding=1)))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)
