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
from .retrieval import DEFAULT_KS, RRF_K, RankAccumulator, fused_scores, query_blocks, retrieval_summary

QUERY_KINDS = ("clean", "realistic")
BASELINES = ("pattern_cosine", "peak_fom")
#: The hybrid: the model's ranking fused with this baseline's (reciprocal rank fusion, k = RRF_K).
HYBRID_PARTNER = "peak_fom"
HYBRID_METHOD = f"reciprocal rank fusion of model and {HYBRID_PARTNER}, k={RRF_K}"
#: How many best entries per query each ranking keeps (the hybrid's list the fit stage re-ranks).
HYBRID_KEEP = 10
HYBRID_TIES = ("entries tied under one ranker share the worst rank of their group; "
               "an entry with a fused score equal to the correct one's ranks ahead of it")


def make_queries(sim, reflections, kind: str = "clean", seed: int = 0) -> np.ndarray:
    """(n, n_points) float32 query patterns: clean, or realistic augmentation keyed by ``seed`` (epoch 0)."""
    import xrdflow as xf

    if kind not in QUERY_KINDS:
        raise ValueError(f"queries must be one of {QUERY_KINDS}, got {kind!r}")
    if kind == "clean":
        return sim.render(reflections)[0]
    return sim.render(reflections, augmentation=xf.Augmentation.realistic(), seed=seed)[0]


def cut_queries(Q: np.ndarray, two_theta_deg, scan_deg, seed: int = 0) -> np.ndarray:
    """A copy of the (n, n_points) queries cut to ``scan_deg`` = (start, end) degrees 2-theta (partial scans).
    ValueError when :class:`xrdflow.ScanRange` refuses the range (reversed, not finite, outside 0-180 deg)
    or it keeps fewer than 2 grid points."""
    import xrdflow as xf

    start, end = (float(v) for v in scan_deg)
    try:
        scan = xf.ScanRange.fixed(start, end)
    except ValueError as err:
        raise ValueError(f"scan range {start:g}-{end:g} deg: {err}") from None
    grid = np.asarray(two_theta_deg, dtype=np.float64)
    if ((grid >= start) & (grid <= end)).sum() < 2:
        raise ValueError(f"scan range {start:g}-{end:g} deg keeps fewer than 2 points of the model's grid "
                         f"{grid[0]:g}-{grid[-1]:g} deg")
    Q = np.array(Q, dtype=np.float32, copy=True)
    scan.apply(Q, grid, np.arange(len(Q)), seed)
    return Q


@dataclass
class Ranking:
    """Per query: rank of the answer, top-1 gallery index, the best ``keep`` indices and their scores."""

    ranks: np.ndarray
    top1: np.ndarray
    best: np.ndarray
    best_scores: np.ndarray


def _ranking(score_fn, n: int, keep: int, progress: "str | None", block: int = 512) -> Ranking:
    """Ranks of query i's answer (gallery i) with ``score_fn(start, stop)`` blocks; no full matrix kept."""
    return _rankings(score_fn, n, keep, progress, block)[0]


class _Collect:
    """RankAccumulator plus the scores of each row's best ``keep`` columns."""

    def __init__(self, keep: int):
        self.acc = RankAccumulator(keep=keep)
        self.best_scores = []

    def add(self, s, start: int, stop: int) -> None:
        self.acc.add(s, np.arange(start, stop))
        self.best_scores.append(np.take_along_axis(s, self.acc._best[-1], axis=1))

    def ranking(self) -> Ranking:
        keep = self.acc.keep
        return Ranking(self.acc.ranks, self.acc.top1, self.acc.best,
                       np.concatenate(self.best_scores) if self.best_scores else np.zeros((0, keep), np.float32))


def _rankings(score_fn, n: int, keep: int, progress: "str | None", block: int = 512, fuse_with=None,
              rrf_k: float = RRF_K) -> "tuple[Ranking, Ranking | None, float]":
    """(ranking by ``score_fn``, ranking by reciprocal rank fusion of ``fuse_with`` and ``score_fn`` or
    None, seconds spent on the fusion).  Per query block both score blocks are turned into every
    gallery entry's rank (int32, ties pessimistic) and fused; no full matrix is ever held."""
    main = _Collect(keep)
    hybrid = _Collect(keep) if fuse_with is not None else None
    fuse_s = 0.0
    for start, stop in query_blocks(n, block, progress):
        s = score_fn(start, stop)
        main.add(s, start, stop)
        if hybrid is not None:
            t0 = time.perf_counter()
            hybrid.add(fused_scores([fuse_with(start, stop), s], rrf_k), start, stop)
            fuse_s += time.perf_counter() - t0
    return main.ranking(), (hybrid.ranking() if hybrid is not None else None), fuse_s


def load_checkpoint(checkpoint, device: str = "cpu"):
    """(model in eval mode, TrainConfig) of a contrastive checkpoint (xrdflow.train.load_model)."""
    if not os.path.isfile(os.fspath(checkpoint)):
        raise FileNotFoundError(f"no such checkpoint: {os.fspath(checkpoint)!r}")
    from ..train import load_model

    return load_model(checkpoint, map_location=device)


def run_baselines(sim, gallery: Gallery, reflections, query_patterns, train_counts: dict, *,
                  which=BASELINES, clean_patterns=None, fom_config: PeakFOMConfig | None = None,
                  progress: bool = False, keep: int = 10, fuse_with=None) -> tuple[dict, dict]:
    """``({name: metrics}, {name: Ranking})`` for the chosen baselines; metrics carry ``seconds``.

    ``fuse_with(start, stop) -> (stop - start, n)`` model scores: when given and ``peak_fom`` runs, the
    same pass also ranks by reciprocal rank fusion of the model and peak_fom; both dicts then hold
    ``"hybrid"`` too (metrics with ``method``, ``k`` and ``seconds``, the fusion's own time; peak_fom's
    ``seconds`` exclude it).
    """
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
        fuse = fuse_with if name == HYBRID_PARTNER else None
        r, h, fuse_s = _rankings(b.scores, n, keep, name if progress else None, fuse_with=fuse)
        metrics[name] = {**retrieval_summary(r.ranks, r.top1, cs, gallery.space_groups, train_counts),
                         "seconds": round(time.perf_counter() - t0 - fuse_s, 2)}
        if h is not None:
            metrics["hybrid"] = {"method": HYBRID_METHOD, "k": RRF_K, "ties": HYBRID_TIES,
                                 **retrieval_summary(h.ranks, h.top1, cs, gallery.space_groups, train_counts),
                                 "seconds": round(fuse_s, 2)}
            rankings["hybrid"] = h
        if name == "peak_fom":
            metrics[name]["queries_without_peaks"] = b.n_without_peaks
            metrics[name]["config"] = dict(vars(b.cfg))
        rankings[name] = r
    return metrics, rankings


#: How the third stage re-ranks: what ``hybrid_fit`` in the result says it did.
FIT_METHOD = ("single-phase whole-pattern fits (xrdflow.fit.fit_candidates: cell factor from a screen, then "
              "cell, zero shift, profile, background and scale refined) of the hybrid's best {k}, ranked by Rwp")


def _check_fit_rerank(n_queries, candidates, keep: int) -> None:
    """ValueError unless ``candidates`` is in 1..``keep`` (what the hybrid keeps) and ``n_queries`` >= 1."""
    if isinstance(candidates, bool) or not 1 <= int(candidates) <= keep:
        raise ValueError(f"fit candidates must be an integer from 1 to {keep} (the hybrid keeps {keep}), "
                         f"got {candidates!r}")
    if isinstance(n_queries, bool) or int(n_queries) < 1:
        raise ValueError(f"the number of fitted queries must be a positive integer, got {n_queries!r}")


def fit_rerank(sim, gallery: Gallery, query_patterns, hybrid: Ranking, *, n_queries: int, candidates: int = 10,
               seed: int = 0, progress: bool = False, scan_deg=None, model: "Ranking | None" = None) -> dict:
    """The hybrid's best ``candidates`` entries re-ranked by Rwp of a whole-pattern fit of each to the query,
    for ``n_queries`` queries drawn at random (``numpy.random.default_rng(seed)``, without replacement;
    all when ``n_queries`` >= the gallery); a fit costs ~0.1-0.3 s, hence the subset.

    scan_deg: (start, end) of queries cut to a partial scan: only the points inside are fitted (the rest
    is fill, not data).

    Ranks below ``candidates`` are the hybrid's; within them a candidate with an Rwp equal to the
    answer's ranks ahead of it, and a failed fit has Rwp = inf.  Returns top-k and per-crystal-system metrics of the
    re-ranked list and, on the same queries, of the hybrid alone (and of the ``model`` ranking alone, when
    given: ``model_same_queries``), with the query indices and seconds.
    """
    import warnings

    from ..fit.identify import fit_candidates, r_wp_values
    from .retrieval import per_group, topk_from_ranks

    n = len(gallery)
    _check_fit_rerank(n_queries, candidates, hybrid.best.shape[1])
    t0 = time.perf_counter()
    chosen = np.arange(n) if n_queries >= n else \
        np.sort(np.random.default_rng(seed).choice(n, int(n_queries), replace=False))
    ranks = hybrid.ranks[chosen].copy()
    it = chosen
    if progress:
        from tqdm.auto import tqdm

        it = tqdm(chosen, desc=f"fitting the best {candidates} of {len(chosen)} queries", unit="query")
    tt = np.asarray(sim.two_theta_deg, dtype=np.float64)
    inside = np.ones(tt.size, bool) if scan_deg is None else (tt >= scan_deg[0]) & (tt <= scan_deg[1])
    tt = tt[inside]
    for j, i in enumerate(it):
        short = hybrid.best[i][:candidates]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)      # ill-conditioned fits of wrong candidates
            cands = fit_candidates((tt, np.asarray(query_patterns[i], dtype=np.float64)[inside]),
                                   [gallery.structures[c] for c in short], sim.radiation)
        hit = np.flatnonzero(short == i)
        if hit.size:      # ties count against the query, as in the other rankings
            r_wp = r_wp_values(cands)
            ranks[j] = 1 + int(np.sum(np.delete(r_wp, hit[0]) <= r_wp[hit[0]]))
    cs = gallery.crystal_systems[chosen]
    return {"method": FIT_METHOD.format(k=candidates), "candidates": int(candidates),
            "n_queries": int(len(chosen)), "query_seed": int(seed),
            **topk_from_ranks(ranks), "per_crystal_system": per_group(ranks, cs),
            "hybrid_same_queries": {**topk_from_ranks(hybrid.ranks[chosen]),
                                    "per_crystal_system": per_group(hybrid.ranks[chosen], cs)},
            **({"model_same_queries": {**topk_from_ranks(model.ranks[chosen]),
                                       "per_crystal_system": per_group(model.ranks[chosen], cs)}}
               if model is not None else {}),
            "queries": chosen.tolist(), "seconds": round(time.perf_counter() - t0, 2)}


def _train_counts(train, gallery: Gallery, progress: bool) -> tuple[dict, str]:
    if train is None:
        return space_group_counts(gallery.space_groups), "gallery"
    tg = train if isinstance(train, Gallery) else load_gallery(train, progress=progress)
    return space_group_counts(tg.space_groups), (tg.source or "train")


def evaluate(checkpoint, gallery, *, queries: str = "clean", seed: int = 0, train=None, baselines=BASELINES,
             cache_dir=None, use_cache: bool = True, out_dir=None, progress: bool = False, device: str = "cpu",
             figure_query: "int | None" = None, tsne_max_points: int = 2000, scan_deg=None, log=None,
             fit_queries: "int | None" = None, fit_candidates: int = 10) -> dict:
    """Evaluate a contrastive checkpoint on a gallery; returns the JSON-ready result dict.

    checkpoint: path of a checkpoint written by ``xrdflow train``.
    gallery: a path (see :func:`~xrdflow.evaluate.gallery.load_gallery`) or a :class:`Gallery`.
    train: optional path / Gallery whose space-group counts define the frequency bins
        (default: the gallery itself).
    out_dir: when given, writes ``tsne.png`` and ``retrieval.png`` there.
    scan_deg: (start, end) in degrees 2-theta: every query cut to that range as a partial measured scan
        (:meth:`xrdflow.ScanRange.fixed`, the points outside filled with the smallest value inside, as
        ``xrdflow search`` fills a short scan); the baselines' gallery patterns stay whole, and a model with
        ``simulated_pattern_weight`` > 0 embeds the gallery's patterns cut to the same range.

    When the peak_fom baseline runs, the result also holds ``hybrid``: the model's and peak_fom's
    rankings fused by reciprocal rank fusion (k = 60, :mod:`~xrdflow.evaluate.retrieval`), with the
    same top-k / per-crystal-system / space-group metrics.  Nothing is tuned on the gallery.

    A model with ``simulated_pattern_weight`` > 0 ranks by its structure embeddings (crystal tower fused
    with the gallery's clean patterns); the result then also holds ``crystal_tower``, the same metrics of
    the crystal tower's embeddings alone.

    fit_queries: when given (needs the peak_fom baseline), a third stage on that many random queries
    (seed ``seed``): the hybrid's best ``fit_candidates`` re-ranked by whole-pattern fits
    (:func:`fit_rerank`); the result then holds ``hybrid_fit``.
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
    if fit_queries is not None and "peak_fom" not in tuple(baselines or ()):
        raise ValueError("fit re-ranking works on the hybrid's list, which needs the peak_fom baseline")
    if fit_queries is not None:   # before the minutes of embedding and ranking, not after
        _check_fit_rerank(fit_queries, fit_candidates, HYBRID_KEEP)

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
    if scan_deg is not None:
        Q = cut_queries(Q, sim.two_theta_deg, scan_deg, seed)
    timing["simulate_s"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    cached = gallery_embeddings(model, gal, checkpoint, simulator=sim, reflections=refl, scan_deg=scan_deg,
                                cache_dir=cache_dir, use_cache=use_cache, progress=progress)
    timing["embed_gallery_s"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    qe = encode_patterns(model, Q)
    timing["embed_queries_s"] = time.perf_counter() - t0
    G = cached.embeddings

    def model_scores(start: int, stop: int) -> np.ndarray:
        return qe[start:stop] @ G.T

    t0 = time.perf_counter()
    model_rank = _ranking(model_scores, len(gal), 10, None)
    timing["rank_s"] = time.perf_counter() - t0
    cs = gal.crystal_systems
    summary = retrieval_summary(model_rank.ranks, model_rank.top1, cs, gal.space_groups, train_counts, ks=DEFAULT_KS)
    crystal_tower = None
    if model.uses_simulated_patterns:   # what the crystal tower alone ranks, for comparison
        C = cached.crystal_embeddings
        r = _ranking(lambda start, stop: qe[start:stop] @ C.T, len(gal), 10, None)
        crystal_tower = retrieval_summary(r.ranks, r.top1, cs, gal.space_groups, train_counts, ks=DEFAULT_KS)
        crystal_tower["space_group_top1"]["frequency_source"] = freq_source

    base_metrics, base_rank = {}, {}
    if baselines:
        t0 = time.perf_counter()
        base_metrics, base_rank = run_baselines(sim, gal, refl, Q, train_counts, which=tuple(baselines),
                                                clean_patterns=clean, progress=progress,
                                                fuse_with=model_scores, keep=HYBRID_KEEP)
        timing["baselines_s"] = time.perf_counter() - t0
    hybrid = base_metrics.pop("hybrid", None)
    hybrid_fit = None
    if fit_queries is not None:
        say(f"fitting the hybrid's best {fit_candidates} for {min(int(fit_queries), len(gal))} queries")
        hybrid_fit = fit_rerank(sim, gal, Q, base_rank["hybrid"], n_queries=fit_queries,
                                candidates=fit_candidates, seed=seed, progress=progress, scan_deg=scan_deg,
                                model=model_rank)
        timing["fit_rerank_s"] = hybrid_fit["seconds"]

    figures = {}
    if out_dir is not None:
        from .figures import plot_retrieval, plot_tsne

        t0 = time.perf_counter()
        figures["tsne"] = plot_tsne(cached.crystal_embeddings, cs, os.path.join(out_dir, "tsne.png"), seed=seed,
                                    max_points=tsne_max_points,
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
            "simulated_pattern_weight": model.simulated_pattern_weight,
            **({"crystal_tower": crystal_tower} if crystal_tower is not None else {}),
            "baselines": base_metrics,
            **({"hybrid": {**hybrid, "space_group_top1": {**hybrid["space_group_top1"],
                                                          "frequency_source": freq_source}}}
               if hybrid is not None else {}),
            **({"hybrid_fit": hybrid_fit} if hybrid_fit is not None else {}),
            "queries": queries, "seed": int(seed), "checkpoint": os.fspath(checkpoint),
            "scan_range_deg": None if scan_deg is None else [float(v) for v in scan_deg],
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
