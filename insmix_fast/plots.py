"""Figures with matplotlib (the optional ``plots`` extra: ``pip install 'insmix-fast[plots]'``).

Figures are drawn off-screen with the Agg canvas on a :class:`matplotlib.figure.Figure`
(no ``pyplot``, so nothing here touches the user's backend or global state) and saved
atomically. Building blocks: :func:`new_figure`, :func:`line_chart`, :func:`bar_chart`,
:func:`save_figure`; :func:`require_matplotlib` fails early, naming the extra.

>>> import tempfile, pathlib
>>> fig, (a, b) = new_figure(2, width=6, height=2.4)
>>> line_chart(a, {"loss": [3.0, 2.0, 1.5, 1.2]}, title="training")
>>> bar_chart(b, {"none": 40.1, "insmix": 42.5}, errors={"none": 1.2, "insmix": 0.8}, ylabel="AJI (%)")
>>> save_figure(fig, pathlib.Path(tempfile.mkdtemp()) / "f.png").stat().st_size > 0
True
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from .atomic import atomic_path

__all__ = ["INSTALL_HINT", "matplotlib_available", "require_matplotlib", "new_figure", "line_chart", "bar_chart",
           "save_figure", "COLOURS"]

INSTALL_HINT = "pip install 'insmix-fast[plots]'"
#: matplotlib's default colour cycle (tab10), for figures that colour by the same key across panels
COLOURS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22",
           "#17becf")


def matplotlib_available() -> bool:
    """True when matplotlib can be imported."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    return True


def require_matplotlib(what: str = "figures") -> None:
    """Raise ``ImportError`` naming the ``plots`` extra when matplotlib is missing."""
    if not matplotlib_available():
        raise ImportError(f"{what} need matplotlib, which is not installed: {INSTALL_HINT}")


def new_figure(n: int = 1, *, cols: int | None = None, width: float = 6.4, height: float = 3.2, **subplots):
    """``(figure, axes)``: ``n`` panels in a grid of ``cols`` columns (default: one row), with a
    constrained layout (no wasted margins). ``axes`` is a flat list (one entry when ``n == 1``:
    the Axes itself)."""
    require_matplotlib()
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    cols = n if cols is None else cols
    rows = -(-n // cols)
    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(rows, cols, squeeze=False, **subplots).ravel()
    for ax in axes[n:]:
        ax.set_visible(False)
    return fig, (axes[0] if n == 1 else list(axes[:n]))


def _moving_average(y: np.ndarray, k: int) -> np.ndarray:
    """Centred moving average of width ``k`` (shrinking at the ends), same length as ``y``."""
    if k <= 1 or len(y) < 3:
        return y
    k = min(k, len(y))
    c = np.cumsum(np.insert(y, 0, 0.0))
    i = np.arange(len(y))
    lo = np.clip(i - k // 2, 0, len(y))
    hi = np.clip(i + (k - k // 2), 0, len(y))
    return (c[hi] - c[lo]) / (hi - lo)


def line_chart(ax, series: Mapping[str, Sequence[float]], *, smooth: int | None = None, title: str | None = None,
               xlabel: str = "step", ylabel: str | None = None, legend: bool | None = None) -> None:
    """One line per series (x = index). With ``smooth`` (default: about 1/50 of the length) the
    raw values are drawn faint and their moving average on top. Non-finite values are skipped."""
    drawn = 0
    for c, (name, values) in enumerate(series.items()):
        y = np.asarray(values, np.float64)
        x = np.arange(len(y))
        ok = np.isfinite(y)
        x, y = x[ok], y[ok]
        if not len(y):
            continue
        colour = COLOURS[c % len(COLOURS)]
        k = max(1, len(y) // 50) if smooth is None else int(smooth)
        if k > 1:
            ax.plot(x, y, color=colour, alpha=0.25, linewidth=0.8)
            ax.plot(x, _moving_average(y, k), color=colour, linewidth=1.5, label=name)
        else:
            ax.plot(x, y, color=colour, linewidth=1.5, marker="o" if len(y) == 1 else None, label=name)
        drawn += 1
    if title:
        ax.set_title(title, fontsize="medium")
    ax.set_xlabel(xlabel)
    if ylabel:
        ax.set_ylabel(ylabel)
    ax.grid(True, alpha=0.3)
    ax.margins(x=0.01)
    if legend or (legend is None and drawn > 1):
        ax.legend(fontsize="small", frameon=False)


def bar_chart(ax, values: Mapping[str, float] | Mapping[str, Mapping[str, float]], *,
              errors: Mapping | None = None, points: Mapping | None = None, title: str | None = None,
              ylabel: str | None = None, fmt: str = "{:.3g}", colours: Mapping[str, str] | None = None,
              reference: tuple[float, str] | None = None) -> None:
    """Bars with their values printed on top.

    ``values`` is ``{bar: value}`` or grouped ``{group: {bar: value}}`` (bars of one name share a
    colour, legend when there are several). ``errors`` (same shape) draws ± error bars,
    ``points`` (same shape, lists) the individual values (e.g. per seed) as dots,
    ``reference=(y, label)`` a dashed horizontal line labelled at its right end (keep the label short).
    """
    grouped = bool(values) and all(isinstance(v, Mapping) for v in values.values())
    groups = dict(values) if grouped else {"": dict(values)}
    errs = (errors if grouped else {"": errors}) if errors else {}
    pts = (points if grouped else {"": points}) if points else {}
    names = list(dict.fromkeys(k for g in groups.values() for k in g))
    colour = {n: (colours or {}).get(n, COLOURS[i % len(COLOURS)]) for i, n in enumerate(names)}
    width = 0.8 / max(len(names), 1) if grouped else 0.7
    for gi, (gname, g) in enumerate(groups.items()):
        for bi, name in enumerate(names):
            if name not in g:
                continue
            x = gi + (bi - (len(names) - 1) / 2) * width if grouped else bi
            v = float(g[name])
            e = (errs.get(gname) or {}).get(name)
            ax.bar(x, v, width * 0.92, color=colour[name], label=name if gi == 0 and grouped else None,
                   yerr=e if e else None, capsize=3 if e else 0, error_kw={"linewidth": 1})
            p = (pts.get(gname) or {}).get(name)
            if p is not None and len(p) > 1:
                ax.plot(np.full(len(p), x), p, "o", color="black", markersize=2.5, alpha=0.6)
            top = v + (e or 0)
            ax.annotate(fmt.format(v), (x, top), xytext=(0, 2), textcoords="offset points", ha="center",
                        va="bottom", fontsize="small")
    if reference is not None:  # labelled at its right end, outside the axes: never over a bar or its value
        ax.axhline(reference[0], color="0.3", linestyle="--", linewidth=1)
        ax.annotate(reference[1], (1.0, reference[0]), xycoords=("axes fraction", "data"), xytext=(3, 0),
                    textcoords="offset points", ha="left", va="center", fontsize="small", color="0.3",
                    annotation_clip=False)
    if grouped:
        ax.set_xticks(range(len(groups)), list(groups))
    else:
        crowded = len(names) * max(map(len, names), default=0) > 60
        ax.set_xticks(range(len(names)), names, rotation=30 if crowded else 0, ha="right" if crowded else "center")
    if grouped and len(names) > 1:  # bar names: outside the axes, never over a bar
        ax.legend(fontsize="small", frameon=False, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    if title:
        ax.set_title(title, fontsize="medium")
    if ylabel:
        ax.set_ylabel(ylabel)
    ax.margins(y=0.12)
    ax.grid(True, axis="y", alpha=0.3)
    ax.set_axisbelow(True)
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)


def save_figure(fig, path, dpi: int = 120) -> Path:
    """Save ``fig`` (format from the suffix) atomically; returns the path."""
    path = Path(os.fspath(path))
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=dpi, format=path.suffix.lstrip(".") or "png")
    return path
