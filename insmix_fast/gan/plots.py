"""PNG figures drawn with OpenCV only (no matplotlib): line plots and image grids."""

from __future__ import annotations

import math
import os
from collections.abc import Sequence

import cv2
import numpy as np

__all__ = ["line_panel", "loss_curves_png", "image_grid", "outline", "save_rgb", "bar_panel"]

_COLOURS = [(31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189), (140, 86, 75)]
_FONT = cv2.FONT_HERSHEY_SIMPLEX


def _fmt(v: float) -> str:
    if v == 0 or not math.isfinite(v):
        return f"{v:g}"
    return f"{v:.3g}" if 1e-3 <= abs(v) < 1e4 else f"{v:.2e}"


def _smooth(y: np.ndarray, k: int) -> np.ndarray:
    if k <= 1 or len(y) < k:
        return y
    c = np.cumsum(np.insert(y, 0, 0.0))
    s = (c[k:] - c[:-k]) / k
    return np.concatenate([y[: k - 1] * 0 + s[0], s]) if len(s) else y


def line_panel(series: dict[str, Sequence[float]], title: str, size=(420, 300), smooth: int = 1,
               xlabel: str = "step") -> np.ndarray:
    """One RGB panel with a line per series (same x = index), axes and legend."""
    W, H = size
    img = np.full((H, W, 3), 255, np.uint8)
    L, R, T, B = 58, 10, 26, 34
    cv2.putText(img, title, (L, 18), _FONT, 0.5, (0, 0, 0), 1, cv2.LINE_AA)
    ys = {k: np.asarray(v, np.float64) for k, v in series.items() if len(v)}
    ys = {k: _smooth(v[np.isfinite(v)], smooth) for k, v in ys.items()}
    ys = {k: v for k, v in ys.items() if len(v)}
    cv2.rectangle(img, (L, T), (W - R, H - B), (0, 0, 0), 1)
    if not ys:
        return img
    lo = min(float(v.min()) for v in ys.values())
    hi = max(float(v.max()) for v in ys.values())
    if hi - lo < 1e-12:
        hi, lo = hi + 0.5, lo - 0.5
    n = max(len(v) for v in ys.values())
    for t in range(5):
        val = lo + (hi - lo) * t / 4
        y = int(round(H - B - (H - B - T) * t / 4))
        cv2.line(img, (L - 3, y), (L, y), (0, 0, 0), 1)
        cv2.putText(img, _fmt(val), (2, y + 4), _FONT, 0.35, (0, 0, 0), 1, cv2.LINE_AA)
    cv2.putText(img, f"0 .. {n - 1} {xlabel}", (L, H - 10), _FONT, 0.4, (0, 0, 0), 1, cv2.LINE_AA)
    for c, (name, v) in enumerate(ys.items()):
        col = _COLOURS[c % len(_COLOURS)]
        xs = L + (np.arange(len(v)) / max(n - 1, 1)) * (W - R - L)
        yy = H - B - (v - lo) / (hi - lo) * (H - B - T)
        pts = np.stack([xs, yy], 1).round().astype(np.int32)
        if len(pts) == 1:
            cv2.circle(img, tuple(int(p) for p in pts[0]), 3, col, -1)
        else:
            cv2.polylines(img, [pts], False, col, 1, cv2.LINE_AA)
        cv2.putText(img, name, (W - R - 150, T + 16 + 16 * c), _FONT, 0.45, col, 1, cv2.LINE_AA)
    return img


def bar_panel(groups: dict[str, dict[str, float]], title: str, size=(420, 300)) -> np.ndarray:
    """Grouped bar chart: ``{group: {bar name: value}}`` (values ≥ 0)."""
    W, H = size
    img = np.full((H, W, 3), 255, np.uint8)
    L, R, T, B = 50, 10, 30, 40
    cv2.putText(img, title, (L, 18), _FONT, 0.5, (0, 0, 0), 1, cv2.LINE_AA)
    cv2.rectangle(img, (L, T), (W - R, H - B), (0, 0, 0), 1)
    names = list(dict.fromkeys(k for g in groups.values() for k in g))
    hi = max([v for g in groups.values() for v in g.values()] + [1e-9]) * 1.15
    gw = (W - R - L) / max(len(groups), 1)
    bw = gw * 0.8 / max(len(names), 1)
    for t in range(5):
        y = int(round(H - B - (H - B - T) * t / 4))
        cv2.putText(img, _fmt(hi * t / 4), (2, y + 4), _FONT, 0.35, (0, 0, 0), 1, cv2.LINE_AA)
    for gi, (gname, g) in enumerate(groups.items()):
        x0 = L + gi * gw + gw * 0.1
        for bi, name in enumerate(names):
            if name not in g:
                continue
            v = g[name]
            col = _COLOURS[bi % len(_COLOURS)]
            y = int(round(H - B - v / hi * (H - B - T)))
            cv2.rectangle(img, (int(x0 + bi * bw), y), (int(x0 + (bi + 1) * bw) - 2, H - B), col, -1)
            cv2.putText(img, _fmt(v), (int(x0 + bi * bw), y - 3), _FONT, 0.33, (0, 0, 0), 1, cv2.LINE_AA)
        cv2.putText(img, gname, (int(x0), H - B + 16), _FONT, 0.4, (0, 0, 0), 1, cv2.LINE_AA)
    for bi, name in enumerate(names):
        cv2.putText(img, name, (L + 8, T + 16 + 14 * bi), _FONT, 0.4, _COLOURS[bi % len(_COLOURS)], 1, cv2.LINE_AA)
    return img


def loss_curves_png(history: dict[str, Sequence[float]], path: str | os.PathLike) -> None:
    """Three panels: discriminator loss, generator adversarial loss, reconstruction (+ D gap)."""
    n = max((len(v) for v in history.values()), default=0)
    k = max(1, n // 50)
    panels = [
        line_panel({"L_D": history.get("d_loss", [])}, "discriminator loss", smooth=k),
        line_panel({"L_adv": history.get("g_adv", [])}, "generator adversarial loss", smooth=k),
        line_panel({"|u-G(u)|": history.get("g_rec", [])}, "reconstruction L1", smooth=k),
        line_panel({"d(a,n)-d(a,p)": history.get("gap", [])}, "D separation (triplet) / acc (bce)", smooth=k),
    ]
    save_rgb(path, np.concatenate([np.concatenate(panels[:2], 1), np.concatenate(panels[2:], 1)], 0))


def outline(image: np.ndarray, mask: np.ndarray, colour=(0, 255, 0)) -> np.ndarray:
    """Copy of an RGB uint8 image with the outline of ``mask`` drawn in ``colour``."""
    out = image.copy()
    m = mask.astype(np.uint8)
    edge = m - cv2.erode(m, np.ones((3, 3), np.uint8))
    out[edge > 0] = colour
    return out


def image_grid(rows: list[list[np.ndarray]], titles: list[str] | None = None, pad: int = 4) -> np.ndarray:
    """Grid of equally sized RGB uint8 images, optional column titles."""
    h, w = rows[0][0].shape[:2]
    ncol = max(len(r) for r in rows)
    top = 20 if titles else 0
    canvas = np.full((top + len(rows) * (h + pad) + pad, ncol * (w + pad) + pad, 3), 255, np.uint8)
    for r, row in enumerate(rows):
        for c, im in enumerate(row):
            y, x = top + pad + r * (h + pad), pad + c * (w + pad)
            canvas[y:y + h, x:x + w] = im
    for c, t in enumerate(titles or []):
        cv2.putText(canvas, t, (pad + c * (w + pad), 14), _FONT, 0.4, (0, 0, 0), 1, cv2.LINE_AA)
    return canvas


def save_rgb(path: str | os.PathLike, image: np.ndarray) -> None:
    if not cv2.imwrite(str(path), np.ascontiguousarray(image[:, :, ::-1]), [cv2.IMWRITE_PNG_COMPRESSION, 9]):
        raise OSError(f"cannot write {path}")
