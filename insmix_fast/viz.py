"""Pictures of what InsMix did: label overlays, paste outlines, shuffled patches, image
grids (cv2 only; charts are in :mod:`insmix_fast.plots`).

>>> import numpy as np
>>> labels = np.zeros((8, 8), np.int32); labels[2:5, 2:6] = 1
>>> view = overlay_labels(np.full((8, 8, 3), 200, np.uint8), labels)
>>> view.shape, bool((view[0, 0] == 200).all()), bool((view[3, 2] == 255).all())
((8, 8, 3), True, True)
>>> grid([[view, view]], ["a", "b"]).shape
(38, 28, 3)
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from .atomic import write_bytes

__all__ = ["label_colors", "overlay_labels", "draw_outline", "insmix_panel", "grid", "save_png"]


def label_colors(labels: np.ndarray, seed: int = 0) -> np.ndarray:
    """A random but stable RGB colour per instance id (background black)."""
    ids = np.unique(labels)
    rng = np.random.default_rng(seed)
    lut_ids = ids[ids != 0]
    colors = rng.integers(60, 256, (lut_ids.size, 3), dtype=np.uint8)
    out = np.zeros(labels.shape + (3,), np.uint8)
    if lut_ids.size:
        idx = np.searchsorted(lut_ids, labels)
        fg = labels != 0
        out[fg] = colors[np.clip(idx[fg], 0, lut_ids.size - 1)]
    return out


def overlay_labels(image: np.ndarray, labels: np.ndarray, alpha: float = 0.45) -> np.ndarray:
    """The image with each instance tinted in its own colour and its boundary drawn."""
    col = label_colors(labels)
    fg = labels != 0
    out = image.astype(np.float32)
    out[fg] = (1 - alpha) * out[fg] + alpha * col[fg]
    out = out.astype(np.uint8)
    return draw_outline(out, _boundaries(labels), (255, 255, 255))


def _boundaries(labels: np.ndarray) -> np.ndarray:
    b = np.zeros(labels.shape, bool)
    b[:-1] |= labels[:-1] != labels[1:]
    b[1:] |= labels[:-1] != labels[1:]
    b[:, :-1] |= labels[:, :-1] != labels[:, 1:]
    b[:, 1:] |= labels[:, :-1] != labels[:, 1:]
    return b & (labels != 0)


def draw_outline(image: np.ndarray, mask_or_edges: np.ndarray, color, thickness: int = 1) -> np.ndarray:
    """Paint ``color`` on the outline of a boolean mask (or on given edge pixels)."""
    import cv2

    m = mask_or_edges.astype(np.uint8)
    out = image.copy()
    if thickness > 0 and m.any():
        contours, _ = cv2.findContours(m, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
        if contours:
            cv2.drawContours(out, contours, -1, tuple(int(c) for c in color), thickness)
        else:
            out[m.astype(bool)] = color
    return out


def insmix_panel(image, labels, result, bank=None) -> list[np.ndarray]:
    """Four views of one InsMix call: original, result, original labels, result labels with pastes.

    In the last view pasted templates are outlined in yellow with a line to their
    original's centroid, and shuffled background patches are boxed in cyan.
    """
    import cv2

    res_view = result.image.copy()
    res_view = draw_outline(res_view, result.paste_mask, (255, 230, 0))
    lab_view = overlay_labels(result.image, result.labels)
    lab_view = draw_outline(lab_view, result.paste_mask, (255, 230, 0))
    for p in result.pastes:
        ys, xs = np.nonzero(labels == p["original"])
        if ys.size == 0:
            continue
        oy, ox = int(round(ys.mean())), int(round(xs.mean()))
        cv2.line(lab_view, (ox, oy), (ox + int(p["dx"]), oy + int(p["dy"])), (255, 230, 0), 1, cv2.LINE_AA)
    sh = result.shuffled_mask.astype(np.uint8)
    if sh.any():
        n, _, stats, _ = cv2.connectedComponentsWithStats(sh, connectivity=4)
        for s in stats[1:]:
            x, y, w, h = (int(v) for v in s[:4])
            cv2.rectangle(lab_view, (x, y), (x + w - 1, y + h - 1), (0, 230, 255), 1)
            cv2.rectangle(res_view, (x, y), (x + w - 1, y + h - 1), (0, 230, 255), 1)
    return [image, res_view, overlay_labels(image, labels), lab_view]


def grid(rows: list[list[np.ndarray]], titles: list[str] | None = None, pad: int = 4) -> np.ndarray:
    """Tile equally sized RGB images into one picture, with optional column titles."""
    import cv2

    h = max(im.shape[0] for r in rows for im in r)
    w = max(im.shape[1] for r in rows for im in r)
    ncol = max(len(r) for r in rows)
    top = 22 if titles else 0
    out = np.full((top + len(rows) * (h + pad) + pad, ncol * (w + pad) + pad, 3), 255, np.uint8)
    for i, r in enumerate(rows):
        for j, im in enumerate(r):
            y = top + pad + i * (h + pad)
            x = pad + j * (w + pad)
            out[y:y + im.shape[0], x:x + im.shape[1]] = im
    if titles:
        font = cv2.FONT_HERSHEY_SIMPLEX
        for j, t in enumerate(titles):
            width = cv2.getTextSize(t, font, 0.45, 1)[0][0]
            scale = 0.45 * min(1.0, (w - 4) / max(width, 1))  # shrink a title to its column
            cv2.putText(out, t, (pad + j * (w + pad) + 2, 16), font, scale, (0, 0, 0), 1, cv2.LINE_AA)
    return out


def save_png(path, image: np.ndarray) -> Path:
    """Write an H×W×3 uint8 RGB image as PNG, atomically; returns the path."""
    import cv2

    ok, buf = cv2.imencode(".png", np.ascontiguousarray(np.asarray(image)[:, :, ::-1]), [cv2.IMWRITE_PNG_COMPRESSION, 9])
    if not ok:
        raise OSError(f"cannot encode {os.fspath(path)} as PNG (image {np.asarray(image).shape})")
    return write_bytes(path, buf.tobytes())
