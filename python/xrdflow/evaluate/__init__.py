"""Evaluating structure retrieval and searching galleries with measured patterns.

* :mod:`~xrdflow.evaluate.retrieval` -- top-k metrics from similarity matrices
  (ties counted against the query), reciprocal rank fusion of rankers (the hybrid), per crystal system, space-group accuracy
  of the top-1 structure by training frequency (EACNN paper, Table 2).
* :mod:`~xrdflow.evaluate.baselines` -- whole-pattern cosine and a peak
  figure-of-merit search, the non-learned references.
* :mod:`~xrdflow.evaluate.gallery` -- gallery loading with labels, and crystal
  embeddings cached on disk per (checkpoint, gallery).
* :mod:`~xrdflow.evaluate.evaluation` -- :func:`evaluate` (``xrdflow evaluate``).
* :mod:`~xrdflow.evaluate.search` -- a measured pattern onto the model's grid,
  ranked gallery (``xrdflow search``).
* :mod:`~xrdflow.evaluate.figures` -- t-SNE and retrieval pictures.

Only the model parts need torch; metrics and baselines need numpy and scipy.
"""
from .baselines import PatternCosine, PeakFOM, PeakFOMConfig, pick_peaks, reference_lines
from .gallery import (Gallery, content_hash, gallery_embeddings, gallery_from_structures, gallery_reflections,
                      load_gallery)
from .retrieval import (DEFAULT_KS, FREQUENCY_BINS, RRF_K, RankAccumulator, blockwise_ranks, fused_scores, per_group,
                        ranks_from_scores, ranks_of_all, reciprocal_rank_fusion, retrieval_summary, space_group_top1,
                        top_indices, topk_from_ranks)
from .search import EmbeddingIndex, convert_two_theta, format_table, pattern_on_grid, search_gallery

__all__ = ["DEFAULT_KS", "EmbeddingIndex", "format_table", "FREQUENCY_BINS", "Gallery", "PatternCosine", "PeakFOM", "PeakFOMConfig",
           "RRF_K", "RankAccumulator", "blockwise_ranks", "content_hash", "convert_two_theta", "evaluate",
           "fused_scores", "gallery_embeddings", "gallery_reflections", "gallery_from_structures", "load_gallery", "pattern_on_grid", "per_group",
           "pick_peaks", "ranks_from_scores", "ranks_of_all", "reciprocal_rank_fusion", "reference_lines", "retrieval_summary", "run_baselines", "search_gallery",
           "space_group_top1", "top_indices", "topk_from_ranks"]


def __getattr__(name):
    if name in ("evaluate", "run_baselines", "make_queries"):
        from . import evaluation

        return getattr(evaluation, name)
    raise AttributeError(f"module 'xrdflow.evaluate' has no attribute {name!r}")
