"""Plots of simulated powder patterns (matplotlib, optional: ``pip install xrdflow[plot]``).

:func:`plot_pattern` draws what a crystallographer expects to see: the
pattern as a line, a row of tick marks under it at every Bragg position, and
the strongest lines labelled with their Miller indices.

matplotlib is imported only when a plot is made, and figures are built on the
Agg canvas directly (``matplotlib.figure.Figure``), never through pyplot: the
module works on a machine with no display, and plotting from a script or a
thread does not change the backend or the global figure list of the caller.
A returned Figure still shows inline in Jupyter.
"""
from __future__ import annotations

import os
from typing import Sequence

import numpy as np

from ._fileio import atomic_output, check_output_path  # re-exported: xrdflow.plot.atomic_output stays importable

__all__ = ["plot_pattern", "hkl_label", "atomic_output", "check_output_path", "plot_format"]

_INSTALL_HINT = "pip install xrdflow[plot]"


def _matplotlib():
    """(Figure, FigureCanvasAgg), or an ImportError that says how to install matplotlib."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError as err:
        raise ImportError(f"plotting needs matplotlib, which is not installed: {_INSTALL_HINT}") from err
    return Figure, FigureCanvasAgg


def plot_format(path: "str | os.PathLike") -> str:
    """The image format for ``path`` from its extension ('png' when it has none);
    ValueError for one matplotlib cannot write, ImportError without matplotlib."""
    Figure, FigureCanvasAgg = _matplotlib()
    fmt = os.path.splitext(os.fspath(path))[1].lstrip(".").lower() or "png"
    supported = FigureCanvasAgg(Figure()).get_supported_filetypes()
    if fmt not in supported:
        raise ValueError(f"cannot save a plot as '.{fmt}'; use .png, .pdf or .svg "
                         f"(or one of {', '.join('.' + e for e in sorted(supported))})")
    return fmt


def hkl_label(hkl: Sequence[int]) -> str:
    """'(200)', '(1 0 10)' when an index has two digits, negative indices with an
    overbar as matplotlib mathtext ('$(1\\bar{1}0)$')."""
    hkl = [int(v) for v in hkl]
    wide = any(abs(v) >= 10 for v in hkl)
    if any(v < 0 for v in hkl):
        parts = [rf"\bar{{{-v}}}" if v < 0 else str(v) for v in hkl]
        return "$(" + (r"\ ".join(parts) if wide else "".join(parts)) + ")$"
    return "(" + (" ".join(map(str, hkl)) if wide else "".join(map(str, hkl))) + ")"


def _label_groups(positions: np.ndarray, intensity: np.ndarray, hkl: np.ndarray, tol: float):
    """Lines closer than ``tol`` merge into one label ('(511)/(333)'); returns
    [(position, summed intensity, text)] sorted by decreasing intensity."""
    order = np.argsort(positions, kind="stable")
    groups: list[list[int]] = []
    for i in order:
        if groups and positions[i] - positions[groups[-1][-1]] < tol:
            groups[-1].append(int(i))
        else:
            groups.append([int(i)])
    out = []
    for g in groups:
        members = sorted(g, key=lambda j: -intensity[j])
        text = "/".join(hkl_label(hkl[j]) for j in members[:3]) + ("/..." if len(members) > 3 else "")
        weights = intensity[g]
        pos = float(np.average(positions[g], weights=weights)) if weights.sum() > 0 else float(positions[g[0]])
        out.append((pos, float(weights.sum()), text))
    out.sort(key=lambda t: -t[1])
    return out


def plot_pattern(axis, y, peaks=None, *, title: str = "", label_top: int = 10, path=None,
                 axis_label: str = "2θ (degrees)", intensity_label: str = "Intensity (normalized)",
                 positions=None, figsize: tuple[float, float] = (9.0, 4.8), dpi: int = 150):
    """Figure of one powder pattern.

    axis, y : the grid (e.g. ``Simulator.two_theta_deg``) and the pattern on it.
    peaks : a :class:`~xrdflow.PeakTable`; a tick is drawn under the pattern at
        every line and the strongest ``label_top`` lines (coincident lines
        merged, e.g. '(511)/(333)') are labelled with their hkl, staggered
        upwards where labels would overlap each other or the pattern.
    positions : the peak positions on ``axis`` (default ``peaks.two_theta``;
        give them when plotting on a Q axis).
    title : figure title, e.g. formula, space group and radiation.
    intensity_label : y-axis label ("Intensity (normalized)" or "Intensity (a.u.)").
    path : when given the figure is also saved there, atomically (temporary
        file in the same directory, then os.replace); the format follows the
        extension (.png, .pdf, .svg, ...).

    Returns the matplotlib Figure. Raises ImportError when matplotlib is
    missing (``pip install xrdflow[plot]``).
    """
    Figure, FigureCanvasAgg = _matplotlib()
    x = np.asarray(axis, dtype=np.float64)
    yy = np.asarray(y, dtype=np.float64)
    if x.ndim != 1 or yy.shape != x.shape or len(x) < 2:
        raise ValueError(f"axis and y must be 1D arrays of the same length (>= 2), got shapes {x.shape} and {yy.shape}")
    if not (np.all(np.isfinite(x)) and np.all(np.isfinite(yy))):
        raise ValueError("axis and y must be finite")
    if isinstance(label_top, bool) or not isinstance(label_top, (int, np.integer)) or label_top < 0:
        raise ValueError(f"label_top must be a non-negative integer, got {label_top!r}")
    fmt = None if path is None else plot_format(path)

    fig = Figure(figsize=figsize, dpi=dpi, layout="constrained")
    canvas = FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    ymax = float(yy.max()) if yy.max() > 0 else 1.0
    ax.plot(x, yy, color="#1f3b73", lw=0.8, zorder=3)
    ax.axhline(0.0, color="0.7", lw=0.5, zorder=1)
    ax.set_xlim(x[0], x[-1])
    ax.set_xlabel(axis_label)
    ax.set_ylabel(intensity_label)
    if title:
        ax.set_title(title, fontsize=10)
    ax.minorticks_on()
    ax.tick_params(which="both", direction="in", top=True, right=True)

    ylow = -0.12 * ymax
    ytop = 1.12 * ymax
    if peaks is not None and len(peaks):
        pos = np.asarray(peaks.two_theta if positions is None else positions, dtype=np.float64)
        if pos.shape != (len(peaks),):
            raise ValueError(f"positions must have one value per peak ({len(peaks)}), got shape {pos.shape}")
        inside = (pos >= x[0]) & (pos <= x[-1])
        # Bragg positions: one row of ticks under the pattern.
        ax.vlines(pos[inside], -0.095 * ymax, -0.035 * ymax, color="#b2182b", lw=0.8, zorder=2)
        step = float(np.median(np.diff(x)))
        groups = _label_groups(pos[inside], np.asarray(peaks.intensity, dtype=np.float64)[inside],
                               np.asarray(peaks.hkl)[inside], tol=max(2.0 * step, 1e-3 * (x[-1] - x[0])))
        groups = [g for g in groups if g[1] > 0][:label_top]
        if groups:
            ytop = _place_labels(fig, canvas, ax, x, yy, groups, ylow, ytop, step)
    ax.set_ylim(ylow, ytop)

    if path is not None:
        with atomic_output(path) as tmp:
            fig.savefig(tmp, format=fmt)
    return fig


def _place_labels(fig, canvas, ax, x, y, groups, ylow, ytop, step) -> float:
    """Put hkl labels above their peaks, strongest first, each raised above the
    pattern under it and above every label it would overlap; grows the y range
    until all labels fit and returns the top of the y range."""
    window = max(3.0 * step, 0.1)  # where to look for the apex of a peak (axis units)
    pad = 3.0                       # pixels between a peak (or a label) and a label above it
    texts = [ax.text(p, 0.0, t, fontsize=7.5, ha="center", va="bottom", color="0.1", zorder=4,
                     bbox=dict(boxstyle="square,pad=0.05", fc="white", ec="none", alpha=0.7))
             for p, _, t in groups]
    leaders = []
    for _ in range(4):
        ax.set_ylim(ylow, ytop)
        for line in leaders:
            line.remove()
        leaders = []
        canvas.draw()  # fixes the layout, so data <-> pixel transforms are final
        renderer = canvas.get_renderer()
        to_px = ax.transData.transform
        to_data = ax.transData.inverted().transform
        placed = []  # (x0, x1, y0, y1) pixel boxes
        for (p, _, _t), text in zip(groups, texts):
            text.set_position((p, 0.0))
            box = text.get_window_extent(renderer)
            half = 0.5 * box.width + 1.0
            px = to_px((p, 0.0))[0]
            xa, xb = to_data((px - half, 0))[0], to_data((px + half, 0))[0]
            under = (x >= xa - step) & (x <= xb + step)
            apex_zone = (x >= p - window) & (x <= p + window)
            apex = float(y[apex_zone].max()) if apex_zone.any() else 0.0
            floor = float(y[under].max()) if under.any() else apex
            bottom = to_px((p, max(floor, apex, 0.0)))[1] + pad
            moved = True
            while moved:
                moved = False
                for x0, x1, y0, y1 in placed:
                    if px + half > x0 and px - half < x1 and bottom < y1 + 1 and bottom + box.height > y0 - 1:
                        bottom = y1 + 1.0
                        moved = True
            placed.append((px - half, px + half, bottom, bottom + box.height))
            text.set_position((p, to_data((px, bottom))[1]))
            apex_px = to_px((p, apex))[1]
            if bottom - apex_px > 12.0:  # raised far above its own peak: draw a leader line
                leaders.append(ax.plot([p, p], [to_data((px, apex_px + 2.0))[1], to_data((px, bottom - 1.0))[1]],
                                       color="0.55", lw=0.5, zorder=2)[0])
        highest = max(y1 for *_, y1 in placed)
        need = to_data((0.0, highest + 4.0))[1]
        if need <= ytop:
            return ytop
        ytop = need + 0.02 * (ytop - ylow)
    return ytop
