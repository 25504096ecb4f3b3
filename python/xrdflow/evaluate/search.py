"""Searching a gallery with a measured pattern.

The measured pattern is moved onto the model's grid in two steps:

1. if its wavelength differs from the model's, every 2-theta is converted
   through the d-spacing, d = lambda_file / (2 sin theta_file), 2 theta_model =
   2 asin(lambda_model / (2 d)) (Bragg's law; primary wavelengths; points with
   no reachable angle are dropped);
2. linear interpolation onto the model's 2-theta grid; grid points outside the
   measured range get the lowest measured intensity (the encoder rescales each
   pattern to [0, 1] itself, so that is "no signal").

Gallery structures are ranked by the cosine of their (L2-normalized) crystal
embedding with the pattern's embedding: a dense matrix product in blocks, or a
faiss ``IndexFlatIP`` (exact inner product, the same ranking) when
``index="faiss"``.

With ``rerank="peak_fom"`` the gallery is ranked by reciprocal rank fusion
(Cormack, Clarke & Buettcher, SIGIR 2009; k = 60, not tuned) of the model's
ranking and the peak figure of merit's
(:class:`~xrdflow.evaluate.baselines.PeakFOM`): every gallery entry's rank
under each (ties share the worst rank), summed as 1 / (60 + rank).  The model
scores every entry densely for this (one query: cheap, ``index`` is not
used).  PeakFOM needs the gallery's reflections, computed once and cached
next to the embeddings (:func:`~xrdflow.evaluate.gallery.gallery_reflections`);
building its line tables for the gallery still costs time and memory on every
call (about (2-theta range / 0.02 deg) x n float32, ~120 MB for 7,118
structures on 5-90 deg, twice that while built).

With ``rerank="fit"`` the fused ranking's best ``fit_candidates`` entries are
then fitted one by one to the measured pattern itself (its own points and
wavelength, not the model's grid): :func:`xrdflow.fit.fit_candidates`, a
cell-factor screen and a whole-pattern fit of cell, zero shift, profile,
background and scale, and listed by ascending Rwp; the entries after them keep
the fused order.  ~0.1-0.3 s per fit.
"""
from __future__ import annotations

import warnings

import numpy as np

from ..io.grid import convert_two_theta, pattern_on_model_grid  # noqa: F401 (convert_two_theta re-exported)

INDEXES = ("dense", "faiss")
RERANKERS = ("peak_fom", "fit")
#: Warn when the measured pattern covers less than this fraction of the model's range.
MIN_COVERAGE = 0.5


def pattern_on_grid(pattern, sim, *, wavelength=None) -> tuple[np.ndarray, dict]:
    """A :class:`~xrdflow.io.MeasuredPattern` as (n_points,) float32 on ``sim``'s grid, and what was done.

    ``wavelength`` (what the user said: "CuKa", 1.5406, a Radiation) is used when
    the file states none; when the file states one, ``wavelength`` must agree
    with it (else ValueError: the user or the file is wrong).  The conversion is
    :func:`xrdflow.io.pattern_on_model_grid` with both policies "raise".
    """
    y, shared = pattern_on_model_grid(pattern, sim, wavelength, missing_wavelength="raise",
                                      conflicting_wavelength="raise")
    info = {"file_wavelength": shared["wavelength_pattern_angstrom"],
            "model_wavelength": shared["wavelength_model_angstrom"], "converted": shared["converted"],
            "coverage": shared["coverage"], "two_theta_range_deg": shared["two_theta_range_deg"],
            "grid_deg": shared["grid_deg"]}
    coverage, (g0, g1, _) = shared["coverage"], shared["grid_deg"]
    if coverage < MIN_COVERAGE:
        warnings.warn(f"{pattern.source}: the pattern covers only {100 * coverage:.0f} % of the model's "
                      f"2-theta range {g0:g}-{g1:g} deg; results may be poor", RuntimeWarning,
                      stacklevel=2)
    return y, info


class EmbeddingIndex:
    """Top-k by inner product over L2-normalized gallery embeddings (dense blocks or faiss)."""

    def __init__(self, embeddings, kind: str = "dense", block: int = 4096):
        if kind not in INDEXES:
            raise ValueError(f"index must be one of {INDEXES}, got {kind!r}")
        emb = np.ascontiguousarray(embeddings, dtype=np.float32)
        if emb.ndim != 2 or len(emb) == 0:
            raise ValueError(f"the gallery is empty or malformed: embeddings of shape {emb.shape}")
        self.embeddings, self.kind, self.block = emb, kind, int(block)
        if kind == "faiss":
            try:
                import faiss
            except ImportError:
                raise ImportError("--index faiss needs faiss: pip install 'xrdflow[index]' (faiss-cpu)") from None
            self._faiss = faiss.IndexFlatIP(emb.shape[1])
            self._faiss.add(emb)

    def __len__(self) -> int:
        return len(self.embeddings)

    def search(self, queries, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(scores (m, k), indices (m, k)), best first; ties go to the lower gallery index."""
        from .retrieval import top_indices

        q = np.ascontiguousarray(np.atleast_2d(queries), dtype=np.float32)
        if q.shape[1] != self.embeddings.shape[1]:
            raise ValueError(f"query embeddings have width {q.shape[1]}, the gallery {self.embeddings.shape[1]}")
        k = max(1, min(int(k), len(self)))
        if self.kind == "faiss":
            scores, idx = self._faiss.search(q, k)
            return scores, idx.astype(np.int64)
        best_s, best_i = [], []
        for s in range(0, len(q), self.block):
            sim = q[s:s + self.block] @ self.embeddings.T
            idx = top_indices(sim, k)
            best_i.append(idx)
            best_s.append(np.take_along_axis(sim, idx, axis=1))
        return np.concatenate(best_s), np.concatenate(best_i)


def _cell(value) -> str:
    return f"{float(value):.4f}" if isinstance(value, (float, np.floating)) else str(value)


def format_table(gallery, scores, indices, *, score_name: str = "similarity", extra: "dict | None" = None) -> str:
    """Ranked table: rank, id, formula, space group, ``score_name`` and any ``extra`` {name: values} columns."""
    from ..data.labels import space_group_symbol

    extra = extra or {}
    rows = []
    for r, (i, s) in enumerate(zip(indices, scores), start=1):
        sg = int(gallery.space_groups[i])
        rows.append((str(r), str(gallery.ids[i]), gallery.structures[i].formula, f"{space_group_symbol(sg)} ({sg})",
                     f"{float(s):.4f}", *(_cell(v[r - 1]) for v in extra.values())))
    head = ("rank", "id", "formula", "space group", score_name, *extra)
    widths = [max(len(h), *(len(row[c]) for row in rows)) for c, h in enumerate(head)]
    fmt = "  ".join(f"{{:>{w}}}" if c == 0 or c >= 4 else f"{{:<{w}}}" for c, w in enumerate(widths))
    return "\n".join([fmt.format(*head)] + [fmt.format(*row) for row in rows])


def search_gallery(pattern, checkpoint, gallery, *, k: int = 10, wavelength=None, index: str = "dense",
                   cache_dir=None, use_cache: bool = True, device: str = "cpu", progress: bool = False,
                   rerank: "str | None" = None, fit_candidates: int = 10) -> dict:
    """Rank the gallery's structures for one measured pattern.

    pattern: a path (read with :func:`xrdflow.io.read_pattern`) or a MeasuredPattern.
    gallery: a path or a :class:`~xrdflow.evaluate.gallery.Gallery`.
    rerank: None (embedding similarity), ``"peak_fom"`` (reciprocal rank fusion of the model and
        the peak figure of merit, k = 60) or ``"fit"`` (that fusion, then whole-pattern fits of its best
        ``fit_candidates``, listed by Rwp; module docs).
    Returns ``{"gallery", "indices", "scores", "ids", "grid_info", "embedding_cache"}``; with ``rerank``
    ``scores`` are fused scores, and ``"rerank"`` holds, for the listed entries, ``model_scores``,
    ``model_ranks``, ``peak_fom_scores``, ``peak_fom_ranks``, the method and the reflection cache; with
    ``"fit"`` also ``r_wp`` and ``cell_factor`` (NaN for entries not fitted) and ``fused_ranks``.
    """
    import os

    from .evaluation import load_checkpoint
    from .gallery import Gallery, encode_patterns, gallery_embeddings, load_gallery

    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise ValueError(f"k must be a positive integer, got {k!r}")
    if index not in INDEXES:
        raise ValueError(f"index must be one of {INDEXES}, got {index!r}")
    if rerank is not None and rerank not in RERANKERS:
        raise ValueError(f"rerank must be None or one of {RERANKERS}, got {rerank!r}")
    if isinstance(fit_candidates, bool) or not isinstance(fit_candidates, (int, np.integer)) or \
            not 1 <= fit_candidates <= 100:
        raise ValueError(f"fit_candidates must be an integer from 1 to 100, got {fit_candidates!r}")
    model, cfg = load_checkpoint(checkpoint, device)
    sim = cfg.make_simulator()
    if isinstance(pattern, (str, os.PathLike)):
        from ..io import read_pattern

        if not os.path.isfile(os.fspath(pattern)):
            raise FileNotFoundError(f"no such pattern file: {os.fspath(pattern)!r}")
        pattern = read_pattern(pattern)
    y, info = pattern_on_grid(pattern, sim, wavelength=wavelength)
    gal = gallery if isinstance(gallery, Gallery) else load_gallery(gallery, progress=progress)
    refl = None
    if rerank is not None or model.uses_simulated_patterns:   # PeakFOM's lines, or the gallery's own patterns
        from .gallery import gallery_reflections

        refl = gallery_reflections(sim, gal, cache_dir=cache_dir, use_cache=use_cache)
    scan = None
    if model.uses_simulated_patterns and info["coverage"] < 1.0:
        # a partial scan: the gallery's own patterns are cut to the same range before they are embedded
        scan = (max(info["two_theta_range_deg"][0], info["grid_deg"][0]),
                min(info["two_theta_range_deg"][1], info["grid_deg"][1]))
    cached = gallery_embeddings(model, gal, checkpoint, simulator=sim,
                                reflections=None if refl is None else refl.reflections, scan_deg=scan,
                                cache_dir=cache_dir, use_cache=use_cache, progress=progress)
    q = encode_patterns(model, y[None, :])
    emb_info = {"path": None if cached.path is None else str(cached.path), "reused": cached.reused,
                "gallery_scan_range_deg": scan}
    if rerank is None:
        scores, idx = EmbeddingIndex(cached.embeddings, index).search(q, k)
        return {"gallery": gal, "indices": idx[0], "scores": scores[0], "ids": [gal.ids[i] for i in idx[0]],
                "grid_info": info, "pattern": y, "embedding_cache": emb_info}
    from .baselines import PeakFOM
    from .retrieval import RRF_K, ranks_of_all, reciprocal_rank_fusion, top_indices

    fom = PeakFOM(sim, refl.reflections)
    fom.prepare(y[None, :])
    model_s = q @ cached.embeddings.T                 # (1, n): every entry's score, for its rank
    fom_s = fom.scores(0, 1)
    model_r, fom_r = ranks_of_all(model_s), ranks_of_all(fom_s)
    fused = reciprocal_rank_fusion([model_r, fom_r], RRF_K)
    method = f"reciprocal rank fusion of model and peak_fom, k={RRF_K}"
    fit_info = {}
    if rerank == "fit":
        n_fit = min(int(fit_candidates), len(gal))
        idx = top_indices(fused, max(k, n_fit))[0]
        fused_rank = np.arange(1, len(idx) + 1)
        r_wp, cell = np.full(len(idx), np.nan), np.full(len(idx), np.nan)
        cands = _fit_short_list(pattern, [gal.structures[i] for i in idx[:n_fit]], wavelength)
        r_wp[:n_fit] = [np.nan if c.r_wp is None else c.r_wp for c in cands]
        cell[:n_fit] = [c.cell_factor for c in cands]
        from ..fit.identify import fit_order

        order = np.concatenate([fit_order(cands), np.arange(n_fit, len(idx))])[:k]
        idx, fused_rank, r_wp, cell = idx[order], fused_rank[order], r_wp[order], cell[order]
        method += f", then whole-pattern fits of its best {n_fit} ranked by Rwp"
        fit_info = {"r_wp": r_wp, "cell_factor": cell, "fused_ranks": fused_rank, "fit_candidates": n_fit}
    else:
        idx = top_indices(fused, k)[0]
    return {"gallery": gal, "indices": idx, "scores": fused[0, idx], "ids": [gal.ids[i] for i in idx],
            "grid_info": info, "pattern": y, "embedding_cache": emb_info,
            "rerank": {"method": method,
                       "model_scores": model_s[0, idx], "model_ranks": model_r[0, idx],
                       "peak_fom_scores": fom_s[0, idx], "peak_fom_ranks": fom_r[0, idx],
                       "query_peaks": int(len(fom.query_peaks[0][0])), **fit_info,
                       "reflection_cache": {"path": None if refl.path is None else str(refl.path),
                                            "reused": refl.reused}}}


def _fit_short_list(pattern, structures, wavelength):
    """:func:`xrdflow.fit.fit_candidates` of the measured pattern on its own points, with ``wavelength``
    when the user gave one (it agrees with the file's, :func:`pattern_on_grid` checked, and "CuKa" carries
    the K-alpha2 line a bare 1.5406 in a file does not), else the file's; numerical warnings of hopeless
    candidates' fits silenced."""
    from ..fit.identify import fit_candidates

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return fit_candidates(pattern, structures, wavelength)
