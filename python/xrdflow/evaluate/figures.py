"""Pictures of a retrieval evaluation (matplotlib, Agg; written atomically).

* :func:`plot_tsne` -- t-SNE (van der Maaten & Hinton, JMLR 9, 2008; sklearn) of
  gallery embeddings coloured by crystal system (as Figure 4 of the EACNN paper).
* :func:`plot_retrieval` -- a query pattern above the clean patterns of its
  three best structures, with formula, space group and similarity (as Figure 3).
"""
from __future__ import annotations

import numpy as np

from ..data.labels import CRYSTAL_SYSTEMS, space_group_symbol
from ..plot import _matplotlib, atomic_output, plot_format

_COLOURS = {"triclinic": "#8c564b", "monoclinic": "#e377c2", "orthorhombic": "#2ca02c", "tetragonal": "#ff7f0e",
            "trigonal": "#9467bd", "hexagonal": "#17becf", "cubic": "#1f77b4"}


def _save(fig, canvas, path) -> str:
    fmt = plot_format(path)
    with atomic_output(path) as tmp:
        with open(tmp, "wb") as fh:
            canvas.print_figure(fh, format=fmt, dpi=150)
    return str(path)


def tsne_coordinates(embeddings, *, seed: int = 0, perplexity: float = 30.0) -> np.ndarray:
    from sklearn.manifold import TSNE

    X = np.asarray(embeddings, dtype=np.float32)
    if len(X) < 5:
        raise ValueError(f"t-SNE needs at least 5 embeddings, got {len(X)}")
    perp = min(perplexity, max(2.0, (len(X) - 1) / 3.0))
    return TSNE(n_components=2, perplexity=perp, init="pca", metric="cosine", random_state=seed).fit_transform(X)


def plot_tsne(embeddings, crystal_systems, path, *, seed: int = 0, max_points: int = 2000, title: str = "") -> str:
    """t-SNE map of (at most ``max_points``, drawn with ``seed``) embeddings coloured by crystal system."""
    Figure, Canvas = _matplotlib()
    X = np.asarray(embeddings)
    cs = np.asarray(crystal_systems)
    if len(X) != len(cs):
        raise ValueError(f"{len(X)} embeddings but {len(cs)} crystal-system labels")
    pick = np.arange(len(X))
    if len(X) > max_points:
        pick = np.sort(np.random.default_rng(seed).choice(len(X), max_points, replace=False))
    xy = tsne_coordinates(X[pick], seed=seed)
    fig = Figure(figsize=(8.6, 6.0))
    canvas = Canvas(fig)
    ax = fig.add_subplot(111)
    for name in CRYSTAL_SYSTEMS:
        m = cs[pick] == name
        if m.any():
            ax.scatter(xy[m, 0], xy[m, 1], s=6, alpha=0.75, color=_COLOURS[name], label=f"{name} ({int(m.sum())})",
                       linewidths=0)
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_xlabel("t-SNE 1")
    ax.set_ylabel("t-SNE 2")
    sub = f"{len(pick)} of {len(X)} structures" if len(pick) < len(X) else f"{len(X)} structures"
    ax.set_title((title + "\n" if title else "") + f"t-SNE by crystal system, {sub}", fontsize=10)
    ax.legend(markerscale=2.5, fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    fig.tight_layout()
    return _save(fig, canvas, path)


def plot_retrieval(two_theta_deg, query_pattern, gallery_patterns, top_indices, top_scores, gallery, query_index,
                   path, *, queries: str = "clean") -> str:
    """Query pattern (top panel) and the clean patterns of its best structures, one panel each."""
    Figure, Canvas = _matplotlib()
    top_indices = list(np.asarray(top_indices).tolist())
    n = len(top_indices)
    fig = Figure(figsize=(8.0, 1.8 * (n + 1) + 0.4))
    canvas = Canvas(fig)
    axes = fig.subplots(n + 1, 1, sharex=True)
    x = np.asarray(two_theta_deg)

    def label(i):
        sg = int(gallery.space_groups[i])
        return f"{gallery.ids[i]}  {gallery.structures[i].formula}  {space_group_symbol(sg)} ({sg})"

    y = np.asarray(query_pattern, dtype=np.float64)
    y = (y - y.min()) / max(float(y.max() - y.min()), 1e-12)
    axes[0].plot(x, y, color="black", lw=0.8)
    axes[0].set_title(f"query: {queries} pattern of {label(query_index)}", fontsize=9, loc="left")
    for r, (i, s) in enumerate(zip(top_indices, top_scores), start=1):
        g = np.asarray(gallery_patterns[i], dtype=np.float64)
        g = g / max(float(g.max()), 1e-12)
        ok = i == query_index
        axes[r].plot(x, g, color="tab:green" if ok else "tab:red", lw=0.8)
        axes[r].set_title(f"#{r}  {label(i)}  similarity {float(s):.3f}" + ("  (correct)" if ok else ""),
                          fontsize=9, loc="left")
    for ax in axes:
        ax.set_ylabel("I / Imax", fontsize=8)
        ax.set_ylim(-0.05, 1.1)
        ax.tick_params(labelsize=8)
    axes[-1].set_xlabel("2θ (degrees)")
    fig.tight_layout()
    return _save(fig, canvas, path)
