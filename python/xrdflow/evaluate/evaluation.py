"""Structure retrieval from simulated patterns: the model and the baselines.

Gallery = structures; queries = their own patterns from the model's simulator
(``cfg.make_simulator()``), clean or with ``Augmentation.realistic()`` drawn
at a fixed seed; query ``i``'s answer is gallery entry ``i``.  Metrics are
those of :mod:`xrdflow.evaluate.retrieval`.
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass

import numpy as np

from .baselines import PatternCosine, PeakFOM, PeakFOMConfig
from .gallery import Gallery, gallery_embeddings, encode_patterns, load_gallery, space_group_counts
from .retrieval import DEFAULT_KS, RankAccumulator, retrieval_summary

QUERY_KINDS = ("clean", "realistic")
BASELINES = ("pattern_cosine", "peak_fom")


def make_queries(sim, reflections, kind: str = "clean", seed: int = 0) -> np.ndarray:
    """(n, n_points) float32 query patterns: clean, or realistic augmentation keyed by ``seed`` (epoch 0)."""
    import xrdflow as xf

    if kind not in QUERY_KINDS:
        raise ValueError(f"queries must be one of {QUERY_KINDS}, got {kind!r}")
    if kind == "clean":
        return sim.render(reflections)[0]
    return sim.render(reflections, augmentation=xf.Augmentation.realistic(), seed=seed)[0]


@dataclass
class Ranking:
    """Per query: rank of the answer, top-1 gallery index, the best ``keep`` indices and their scores."""

    ranks: np.ndarray
    top1: np.ndarray
    best: np.ndarray
    best_scores: np.ndarray


def _ranking(score_fn, n: int, keep: int, progress: "str | None", block: int = 512) -> Ranking:
    """Ranks of query i's answer (gallery i) with ``score_fn(start, stop)`` blocks; no full matrix kept."""
    acc = RankAccumulator(keep=keep)
    best_scores = []
    starts = range(0, n, block)
    if progress:
        from tqdm.auto import tqdm

        starts = tqdm(starts, desc=progress, total=len(starts), leave=False)
    for start in starts:
        stop = min(start + block, n)
        s = score_fn(start, stop)
        acc.add(s, np.arange(start, stop))
        best_scores.append(np.take_along_axis(s, acc._best[-1], axis=1))
    return Ranking(acc.ranks, acc.top1, acc.best,
                   np.concatenate(best_scores) if best_scores else np.zeros((0, keep), np.float32))


def load_checkpoint(checkpoint, device: str = "cpu"):
    """(model in eval mode, TrainConfig) of a contrastive checkpoint (xrdflow.train.load_model)."""
    if not os.path.isfile(os.fspath(checkpoint)):
        raise FileNotFoundError(f"no such checkpoint: {os.fspath(checkpoint)!r}")
    try:
        from ..train import load_model
    except ImportError:   # package without the re-export
        from ..train.checkpoint import load_model
    return load_model(checkpoint, map_location=device)


def run_baselines(sim, gallery: Gallery, reflections, query_patterns, train_counts: dict, *,
                  which=BASELINES, clean_patterns=None, fom_config: PeakFOMConfig | None = None,
                  progress: bool = False, keep: int = 10) -> tuple[dict, dict]:
    """``({name: metrics}, {name: Ranking})`` for the chosen baselines; metrics carry ``seconds``."""
    metrics, rankings = {}, {}
    cs = gallery.crystal_systems
    n = len(gallery)
    for name in which:
        t0 = time.perf_counter()
        if name == "pattern_cosine":
            clean = sim.render(reflections)[0] if clean_patterns is None else clean_patterns
            b = PatternCosine(clean)
            b.prepare(query_patterns)
        elif name == "peak_fom":
            b = PeakFOM(sim, reflections, fom_config)
            b.prepare(query_patterns, progress=progress)
        else:
            raise ValueError(f"unknown baseline {name!r}; choose from {BASELINES}")
        r = _ranking(b.scores, n, keep, name if progress else None)
        metrics[name] = {**retrieval_summary(r.ranks, r.top1, cs, gallery.space_groups, train_counts),
                         "seconds": round(time.perf_counter() - t0, 2)}
        if name == "peak_fom":
            metrics[name]["queries_without_peaks"] = b.n_without_peaks
            metrics[name]["config"] = dict(vars(b.cfg))
        rankings[name] = r
    return metrics, rankings


def _train_counts(train, gallery: Gallery, progress: bool) -> tuple[dict, str]:
    if train is None:
        return space_group_counts(gallery.space_groups), "gallery"
    tg = train if isinstance(train, Gallery) else load_gallery(train, progress=progress)
    return space_group_counts(tg.space_groups), (tg.source or "train")


def evaluate(checkpoint, gallery, *, queries: str = "clean", seed: int = 0, train=None, baselines=BASELINES,
             cache_dir=None, use_cache: bool = True, out_dir=None, progress: bool = False, device: str = "cpu",
             figure_query: "int | None" = None, tsne_max_points: int = 2000, log=None) -> dict:
    """Evaluate a contrastive checkpoint on a gallery; returns the JSON-ready result dict.

    checkpoint: path of a checkpoint written by ``xrdflow train``.
    gallery: a path (see :func:`~xrdflow.evaluate.gallery.load_gallery`) or a :class:`Gallery`.
    train: optional path / Gallery whose space-group counts define the frequency bins
        (default: the gallery itself).
    out_dir: when given, writes ``tsne.png`` and ``retrieval.png`` there.
    """
    timing = {}
    t_start = time.perf_counter()
    if not os.path.isfile(os.fspath(checkpoint)):
        raise FileNotFoundError(f"no such checkpoint: {os.fspath(checkpoint)!r}")
    if queries not in QUERY_KINDS:
        raise ValueError(f"queries must be one of {QUERY_KINDS}, got {queries!r}")
    if out_dir is not None and not os.path.isdir(out_dir):
        raise FileNotFoundError(f"--out-dir {os.fspath(out_dir)!r} is not an existing folder")
    say = log or (lambda *_: None)

    t0 = time.perf_counter()
    model, cfg = load_checkpoint(checkpoint, device)
    sim = cfg.make_simulator()
    if sim.n_points != model.n_points:
        raise ValueError(f"the checkpoint's simulator has {sim.n_points} points but its model takes {model.n_points}")
    timing["load_model_s"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    gal = gallery if isinstance(gallery, Gallery) else load_gallery(gallery, progress=progress)
    if len(gal) == 0:
        raise ValueError("the gallery is empty")
    train_counts, freq_source = _train_counts(train, gal, progress)
    timing["load_gallery_s"] = time.perf_counter() - t0
    say(f"gallery: {len(gal)} structures from {gal.source or 'memory'}, {len(gal.failures)} failed")

    t0 = time.perf_counter()
    refl = sim.reflections(gal.structures)
    clean = sim.render(refl)[0]
    Q = clean if queries == "clean" else make_queries(sim, refl, queries, seed)
    timing["simulate_s"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    cached = gallery_embeddings(model, gal, checkpoint, cache_dir=cache_dir, use_cache=use_cache,
                                progress=progress)
    timing["embed_gallery_s"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    qe = encode_patterns(model, Q)
    timing["embed_queries_s"] = time.perf_counter() - t0
    G = cached.embeddings

    t0 = time.perf_counter()
    model_rank = _ranking(lambda a, b: qe[a:b] @ G.T, len(gal), 10, None)
    timing["rank_s"] = time.perf_counter() - t0
    cs = gal.crystal_systems
    summary = retrieval_summary(model_rank.ranks, model_rank.top1, cs, gal.space_groups, train_counts, ks=DEFAULT_KS)

    base_metrics, base_rank = {}, {}
    if baselines:
        t0 = time.perf_counter()
        base_metrics, base_rank = run_baselines(sim, gal, refl, Q, train_counts, which=tuple(baselines),
                                                clean_patterns=clean, progress=progress)
        timing["baselines_s"] = time.perf_counter() - t0

    figures = {}
    if out_dir is not None:
        from .figures import plot_retrieval, plot_tsne

        t0 = time.perf_counter()
        figures["tsne"] = plot_tsne(G, cs, os.path.join(out_dir, "tsne.png"), seed=seed, max_points=tsne_max_points,
                                    title=f"gallery crystal embeddings ({os.path.basename(os.fspath(checkpoint))})")
        qi = choose_figure_query(model_rank, gal) if figure_query is None else int(figure_query)
        if not 0 <= qi < len(gal):
            raise ValueError(f"figure query {qi} is outside the gallery (0..{len(gal) - 1})")
        figures["retrieval"] = plot_retrieval(sim.two_theta_deg, Q[qi], clean, model_rank.best[qi][:3],
                                              model_rank.best_scores[qi][:3], gal, qi,
                                              os.path.join(out_dir, "retrieval.png"), queries=queries)
        figures["retrieval_query"] = qi
        timing["figures_s"] = time.perf_counter() - t0
    timing["total_s"] = time.perf_counter() - t_start

    return {"n_gallery": len(gal), **{k: summary[k] for k in ("top1", "top3", "top5", "top10")},
            "per_crystal_system": summary["per_crystal_system"],
            "space_group_top1": {**summary["space_group_top1"], "frequency_source": freq_source},
            "baselines": base_metrics,
            "queries": queries, "seed": int(seed), "checkpoint": os.fspath(checkpoint),
            "gallery": gal.source, "gallery_failures": [list(f) for f in gal.failures],
            "embedding_cache": {"path": None if cached.path is None else os.fspath(cached.path),
                                "reused": cached.reused, "reason": cached.reason},
            "ties": "pessimistic: a gallery entry scoring equal to the correct one ranks ahead of it",
            "figures": figures,
            "timing": {k: round(v, 3) for k, v in timing.items()}}


def choose_figure_query(ranking: Ranking, gallery: Gallery) -> int:
    """The first query retrieved correctly whose 2nd and 3rd structures have other space groups
    (the situation of the EACNN paper's Figure 3), else the first correct one, else 0."""
    sg = gallery.space_groups
    correct = np.flatnonzero(ranking.ranks == 1)
    for i in correct:
        b = ranking.best[i]
        if len(b) >= 3 and sg[b[1]] != sg[i] and sg[b[2]] != sg[i]:
            return int(i)
    return int(correct[0]) if correct.size else 0
