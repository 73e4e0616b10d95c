"""Figures of a smooth-GAN run: loss curves (matplotlib, the ``plots`` extra) and sample grids (cv2)."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence

import numpy as np

from ..plots import line_chart, new_figure, save_figure
from ..viz import draw_outline, grid, save_png

__all__ = ["loss_curves_png", "sample_grid_png"]

#: (history key, legend, panel title) of the four loss-curve panels
PANELS = (
    ("d_loss", "L_D", "discriminator loss"),
    ("g_adv", "L_adv", "generator adversarial loss"),
    ("g_rec", "|u − G(u)|", "reconstruction L1"),
    ("gap", "d(a,S(u)) − d(a,p)", "D separation (triplet) / accuracy (bce)"),
)


def loss_curves_png(history: Mapping[str, Sequence[float]], path: str | os.PathLike) -> None:
    """Four panels (D loss, adversarial loss, reconstruction L1, D separation): the raw values
    per step, faint, and their moving average."""
    fig, axes = new_figure(4, cols=2, width=9, height=5.2, sharex=True)
    for ax, (key, name, title) in zip(axes, PANELS):
        line_chart(ax, {name: history.get(key, [])}, title=title, xlabel="step" if ax in axes[2:] else "")
    save_figure(fig, path)


def sample_grid_png(path: str | os.PathLike, u: np.ndarray, blended: np.ndarray, real: np.ndarray,
                    paste_mask: np.ndarray) -> None:
    """One row per sample: the pasted tile u (paste outlined in green), S(u), |S(u) − u|·4 and
    a real tile; N×H×W×3 uint8 images, N×H×W bool mask."""
    diff = np.clip(np.abs(blended.astype(np.int16) - u.astype(np.int16)) * 4, 0, 255).astype(np.uint8)
    rows = [[draw_outline(u[i], paste_mask[i], (0, 255, 0)), blended[i], diff[i], real[i]] for i in range(len(u))]
    save_png(path, grid(rows, ["u (pasted)", "S(u)", "|S(u)-u| x4", "real"]))
