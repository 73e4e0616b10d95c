"""ResUNet-34: a U-Net whose encoder is a ResNet-34 (written here; torchvision is
not a dependency), predicting three classes per pixel — background, nucleus
interior, nucleus boundary — as the NB-Net / DIST style baselines of the paper.

Encoder: the standard ResNet-34 stem (7×7 conv stride 2, BN, ReLU, 3×3 max-pool)
and BasicBlock stages ``[3, 4, 6, 3]`` with widths ``width·(1, 2, 4, 8)``
(``width = 64`` is ResNet-34; smaller widths keep the layout for CPU smoke
runs). Weights are initialised from scratch (Kaiming), no download.
Decoder: at each of the five scales (1/32 → 1/2) upsample ×2 (bilinear),
concatenate the skip feature, two 3×3 conv-BN-ReLU; a last ×2 upsample and a
1×1 head give full-resolution logits. Input sides must be multiples of 32
(:func:`pad_to_multiple` handles that for inference).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["BasicBlock", "ResNet34Encoder", "ResUNet34", "N_CLASSES", "pad_to_multiple"]

N_CLASSES = 3  # background, interior, boundary


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, cin: int, cout: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.down = None
        if stride != 1 or cin != cout:
            self.down = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x):
        idt = x if self.down is None else self.down(x)
        y = F.relu(self.bn1(self.conv1(x)), inplace=True)
        y = self.bn2(self.conv2(y))
        return F.relu(y + idt, inplace=True)


class ResNet34Encoder(nn.Module):
    """ResNet-34 feature pyramid: returns features at strides 2, 4, 8, 16, 32."""

    LAYERS = (3, 4, 6, 3)

    def __init__(self, width: int = 64, in_ch: int = 3):
        super().__init__()
        w = int(width)
        self.conv1 = nn.Conv2d(in_ch, w, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(w)
        self.pool = nn.MaxPool2d(3, 2, 1)
        chans = [w, w, 2 * w, 4 * w, 8 * w]
        stages = []
        cin = w
        for i, n in enumerate(self.LAYERS):
            cout = chans[i + 1]
            blocks = [BasicBlock(cin, cout, 1 if i == 0 else 2)] + [BasicBlock(cout, cout) for _ in range(n - 1)]
            stages.append(nn.Sequential(*blocks))
            cin = cout
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.channels = chans

    def forward(self, x):
        f0 = F.relu(self.bn1(self.conv1(x)), inplace=True)  # /2
        f1 = self.layer1(self.pool(f0))  # /4
        f2 = self.layer2(f1)  # /8
        f3 = self.layer3(f2)  # /16
        f4 = self.layer4(f3)  # /32
        return [f0, f1, f2, f3, f4]


def _cbr(cin, cout):
    return nn.Sequential(nn.Conv2d(cin, cout, 3, 1, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class _Up(nn.Module):
    def __init__(self, cin, cskip, cout):
        super().__init__()
        self.block = nn.Sequential(_cbr(cin + cskip, cout), _cbr(cout, cout))

    def forward(self, x, skip):
        x = F.interpolate(x, size=skip.shape[-2:], mode="bilinear", align_corners=False)
        return self.block(torch.cat([x, skip], 1))


class ResUNet34(nn.Module):
    """ResNet-34 encoder + U-Net decoder → ``N_CLASSES`` logits at input resolution.

    Args:
        width: base width of the encoder (64 = ResNet-34); the decoder widths
            follow ``width·(4, 2, 1, 1/2)``.
        n_classes: output channels (3: background, interior, boundary).
    """

    def __init__(self, width: int = 64, n_classes: int = N_CLASSES):
        super().__init__()
        self.encoder = ResNet34Encoder(width)
        c = self.encoder.channels  # [w, w, 2w, 4w, 8w]
        d = [4 * width, 2 * width, width, max(width // 2, 8)]
        self.up3 = _Up(c[4], c[3], d[0])
        self.up2 = _Up(d[0], c[2], d[1])
        self.up1 = _Up(d[1], c[1], d[2])
        self.up0 = _Up(d[2], c[0], d[3])
        self.head = nn.Sequential(_cbr(d[3], d[3]), nn.Conv2d(d[3], n_classes, 1))
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, x):
        f0, f1, f2, f3, f4 = self.encoder(x)
        y = self.up3(f4, f3)
        y = self.up2(y, f2)
        y = self.up1(y, f1)
        y = self.up0(y, f0)
        y = F.interpolate(y, size=x.shape[-2:], mode="bilinear", align_corners=False)
        return self.head(y)


def pad_to_multiple(x: torch.Tensor, m: int = 32) -> tuple[torch.Tensor, tuple[int, int]]:
    """Reflect-pad an N×C×H×W tensor on the bottom/right to multiples of ``m``."""
    H, W = x.shape[-2:]
    ph, pw = (-H) % m, (-W) % m
    if ph or pw:
        mode = "reflect" if (ph < H and pw < W) else "replicate"
        x = F.pad(x, (0, pw, 0, ph), mode=mode)
    return x, (H, W)
