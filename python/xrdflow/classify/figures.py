"""Pictures of classifier evaluations (matplotlib, Agg, written atomically)."""
from __future__ import annotations

import numpy as np

from ..data.labels import CRYSTAL_SYSTEMS
from ..plot import _matplotlib, atomic_output

__all__ = ["plot_confusion", "plot_curve"]

_SHORT = ("tric.", "mono.", "ortho.", "tetr.", "trig.", "hex.", "cubic")


def _save(fig, canvas_cls, path):
    canvas = canvas_cls(fig)
    with atomic_output(path) as tmp:
        canvas.print_png(tmp) if str(path).endswith(".png") else fig.savefig(tmp, format=str(path).rsplit(".", 1)[-1])


def plot_confusion(result: dict, path, title: str = "") -> None:
    """Crystal-system confusion matrix (row-normalised, counts written in the cells) and per-system
    top-1 of the three heads, from one :func:`~xrdflow.classify.evaluate.score` result."""
    Figure, Canvas = _matplotlib()
    conf = np.asarray(result["crystal_system_confusion"], dtype=float)
    rows = conf.sum(axis=1, keepdims=True)
    frac = np.divide(conf, rows, out=np.zeros_like(conf), where=rows > 0)
    fig = Figure(figsize=(11, 4.6))
    ax = fig.add_subplot(1, 2, 1)
    im = ax.imshow(frac, cmap="Blues", vmin=0, vmax=1)
    for i in range(7):
        for j in range(7):
            if conf[i, j]:
                ax.text(j, i, int(conf[i, j]), ha="center", va="center", fontsize=7,
                        color="white" if frac[i, j] > 0.6 else "black")
    ax.set_xticks(range(7), _SHORT, rotation=45, ha="right", fontsize=8)
    ax.set_yticks(range(7), [f"{s} ({int(n)})" for s, n in zip(_SHORT, rows[:, 0])], fontsize=8)
    ax.set_xlabel("predicted crystal system")
    ax.set_ylabel("true crystal system (count)")
    fig.colorbar(im, ax=ax, fraction=0.046, label="fraction of the row")
    ax2 = fig.add_subplot(1, 2, 2)
    per = result["per_crystal_system"]
    x = np.arange(7)
    for off, (key, label) in zip((-0.27, 0, 0.27), (("crystal_system_top1", "crystal system"),
                                                     ("extinction_group_top1", "extinction group"),
                                                     ("space_group_top1", "space group"))):
        vals = [per[c].get(key, np.nan) if per[c]["n"] else np.nan for c in CRYSTAL_SYSTEMS]
        ax2.bar(x + off, vals, width=0.27, label=label)
    ax2.set_xticks(x, _SHORT, rotation=45, ha="right", fontsize=8)
    ax2.set_ylim(0, 1)
    ax2.set_ylabel("top-1 accuracy")
    ax2.legend(fontsize=8)
    ax2.grid(axis="y", alpha=0.3)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    _save(fig, Canvas, path)


def plot_curve(xs, series: dict, path, *, xlabel: str, title: str = "", logx: bool = False) -> None:
    """Accuracy curves: ``series`` maps a label to y values (fractions) at ``xs``."""
    Figure, Canvas = _matplotlib()
    fig = Figure(figsize=(6, 4.2))
    ax = fig.add_subplot(1, 1, 1)
    for label, ys in series.items():
        ax.plot(xs, ys, marker="o", label=label)
    if logx:
        ax.set_xscale("log")
        ax.minorticks_off()
    ax.set_xticks(list(xs), [str(x) for x in xs])
    ax.set_xlabel(xlabel)
    ax.set_ylabel("top-1 accuracy")
    ax.set_ylim(0, 1)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    if title:
        ax.set_title(title, fontsize=10)
    fig.tight_layout()
    _save(fig, Canvas, path)
