"""The Rietveld picture: observed points, calculated line, difference curve
below, and one row of tick marks per phase (strongest reflections labelled hkl)."""
from __future__ import annotations

import os

import numpy as np


def plot_fit(result, path=None, *, title: str | None = None, label_top: int = 6, figsize=(10, 6.5), dpi=150):
    """Draw a :class:`~xrdflow.fit.FitResult`; write it to ``path`` (atomically) when given.

    Returns the matplotlib Figure.  ``label_top`` labels that many of each
    phase's strongest reflections with hkl above their ticks.
    """
    import matplotlib

    if path is not None:
        matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    tt, yo, yc = result.two_theta_deg, result.observed, result.calculated
    diff = yo - yc
    n_ph = len(result.phases)
    fig, (ax, axd) = plt.subplots(2, 1, sharex=True, figsize=figsize,
                                  gridspec_kw=dict(height_ratios=[4, 1], hspace=0.05))
    ax.plot(tt, yo, ".", ms=2.0, color="tab:red", label="observed", zorder=2)
    ax.plot(tt, yc, "-", lw=0.8, color="k", label="calculated", zorder=3)
    ax.plot(tt, result.background_curve, "-", lw=0.7, color="tab:gray", label="background", zorder=1)
    top, bottom = float(max(yo.max(), yc.max())), float(min(yo.min(), result.background_curve.min(), 0.0))
    span = top - bottom
    colors = ["tab:blue", "tab:green", "tab:purple", "tab:orange", "tab:brown", "tab:cyan"]
    tick_h = 0.04 * span
    for i, ph in enumerate(result.phases):
        y0 = bottom - (i + 1) * 1.6 * tick_h
        c = colors[i % len(colors)]
        pos = ph.tick_two_theta_deg
        ax.vlines(pos, y0, y0 + tick_h, color=c, lw=0.8)
        wf = ph.weight_fraction[0]
        ax.text(tt[-1], y0 + 0.5 * tick_h, f" {ph.name} ({100 * wf:.1f} wt%)" if n_ph > 1 else f" {ph.name}",
                color=c, va="center", ha="left", fontsize=8, clip_on=False)
        if label_top and len(pos):
            curve = result.phase_curves[i]
            idx = np.clip(np.searchsorted(tt, pos), 0, len(tt) - 1)
            strongest = np.argsort(-curve[idx])[:label_top] if i < len(result.phase_curves) else []
            for j in strongest:
                h, k, l = ph.tick_hkl[j]
                ax.annotate(f"{h}{k}{l}", (pos[j], result.calculated[idx[j]]), xytext=(0, 4),
                            textcoords="offset points", ha="center", fontsize=7, color=c, rotation=90)
    ax.set_ylim(bottom - (n_ph + 1) * 1.6 * tick_h, top + 0.12 * span)
    ax.set_ylabel("intensity (counts)")
    ax.legend(loc="upper right", fontsize=8, frameon=False)
    ax.set_title(title or (f"{os.path.basename(result.source) or 'pattern'}: Rwp {100 * result.r_wp:.2f} %, "
                           f"Rexp {100 * result.r_exp:.2f} %, GoF {result.gof:.2f}"), fontsize=10)
    axd.plot(tt, diff, "-", lw=0.6, color="tab:blue")
    axd.axhline(0, color="k", lw=0.5)
    axd.set_ylabel("obs - calc")
    axd.set_xlabel("2theta (degrees)")
    axd.set_xlim(tt[0], tt[-1])
    fig.subplots_adjust(right=0.84)
    if path is not None:
        _save_atomic(fig, path, dpi)
        plt.close(fig)
    return fig


def _save_atomic(fig, path, dpi) -> None:
    from .._fileio import atomic_output

    fmt = os.path.splitext(os.fspath(path))[1].lstrip(".") or "png"
    with atomic_output(path) as tmp:
        fig.savefig(tmp, dpi=dpi, format=fmt)
