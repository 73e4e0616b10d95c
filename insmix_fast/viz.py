"""Pictures of what InsMix did: label overlays, paste outlines, shuffled patches, image
grids (cv2 only; charts are in :mod:`insmix_fast.plots`). Typed tiles: instances coloured
by class (:func:`overlay_types`, :func:`class_colors`) and a colour legend (:func:`legend`).

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

__all__ = ["label_colors", "overlay_labels", "draw_outline", "insmix_panel", "grid", "save_png", "CLASS_PALETTE",
           "class_colors", "overlay_types", "legend"]

#: RGB colours of classes 1, 2, … (distinct on H&E, and none yellow or cyan: those mark pastes and
#: moved patches); class ``c`` takes row ``(c - 1) % len``, darkened each time the palette repeats.
CLASS_PALETTE = np.array([
    [60, 220, 60], [255, 60, 60], [0, 90, 255], [255, 140, 0], [255, 255, 255], [150, 0, 255],
    [140, 80, 20], [0, 255, 150], [120, 120, 120], [255, 150, 200], [0, 100, 0], [128, 0, 0],
], np.uint8)


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


def class_colors(n_classes: int) -> np.ndarray:
    """``(n_classes + 1) × 3`` uint8 RGB colours indexed by class id (row 0, background: black).

    >>> class_colors(2).tolist()
    [[0, 0, 0], [60, 220, 60], [255, 60, 60]]
    """
    n = len(CLASS_PALETTE)
    rows = [np.zeros(3, np.uint8)]
    for c in range(1, int(n_classes) + 1):
        base = CLASS_PALETTE[(c - 1) % n].astype(np.float32)
        rows.append(np.clip(base * 0.75 ** ((c - 1) // n), 0, 255).astype(np.uint8))
    return np.stack(rows)


def overlay_types(image: np.ndarray, labels: np.ndarray, types: np.ndarray, colors: np.ndarray | None = None,
                  alpha: float = 0.55) -> np.ndarray:
    """The image with each instance tinted in its class's colour (``colors[class]``, default
    :func:`class_colors`) and instance boundaries drawn, so touching nuclei of one class stay apart."""
    types = np.asarray(types)
    if colors is None:
        colors = class_colors(int(types.max()) if types.size else 0)
    fg = labels != 0
    out = image.astype(np.float32)
    out[fg] = (1 - alpha) * out[fg] + alpha * np.asarray(colors, np.float32)[types[fg]]
    return draw_outline(out.astype(np.uint8), _boundaries(labels), (0, 0, 0))


def legend(class_names, colors: np.ndarray, width: int, counts=None) -> np.ndarray:
    """A white strip ``width`` px wide: a swatch of ``colors[c]`` and ``class_names[c]`` (and
    ``counts[c]``, when given) for every class c ≥ 1, wrapped into as many lines as needed."""
    import cv2

    font, scale = cv2.FONT_HERSHEY_SIMPLEX, 0.45
    items = []
    for c in range(1, len(class_names)):
        text = str(class_names[c]) + ("" if counts is None else f" ({int(counts[c])})")
        tw = cv2.getTextSize(text, font, scale, 1)[0][0]
        items.append((c, text, 14 + 6 + tw + 16))
    lines, line, used = [], [], 6
    for it in items:
        if line and used + it[2] > width:
            lines.append(line)
            line, used = [], 6
        line.append(it)
        used += it[2]
    if line:
        lines.append(line)
    out = np.full((max(1, len(lines)) * 22 + 6, int(width), 3), 255, np.uint8)
    for r, line in enumerate(lines):
        x, y = 6, 6 + r * 22
        for c, text, w in line:
            cv2.rectangle(out, (x, y + 2), (x + 13, y + 15), tuple(int(v) for v in colors[c]), -1)
            cv2.rectangle(out, (x, y + 2), (x + 13, y + 15), (0, 0, 0), 1)
            cv2.putText(out, text, (x + 20, y + 14), font, scale, (0, 0, 0), 1, cv2.LINE_AA)
            x += w
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


def insmix_panel(image, labels, result, bank=None, types=None, colors=None) -> list[np.ndarray]:
    """Four views of one InsMix call: original, result, original labels, result labels with pastes.

    In the last view pasted templates are outlined in yellow with a line to their
    original's centroid, and shuffled background patches are boxed in cyan. With the tile's
    ``types`` (and ``result.types``) the label views colour each instance by its class
    (``colors``: :func:`class_colors` rows).
    """
    import cv2

    res_view = result.image.copy()
    res_view = draw_outline(res_view, result.paste_mask, (255, 230, 0))
    typed = types is not None and getattr(result, "types", None) is not None
    if typed:
        lab_view = overlay_types(result.image, result.labels, result.types, colors)
        before = overlay_types(image, labels, types, colors)
    else:
        lab_view = overlay_labels(result.image, result.labels)
        before = overlay_labels(image, labels)
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
    return [image, res_view, before, lab_view]


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
