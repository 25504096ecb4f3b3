"""Retrieval metrics from a query x gallery similarity matrix.

Query ``i``'s correct gallery entry is column ``true_index[i]`` (the diagonal
when the queries are the gallery's own patterns).  Its **rank** counts every
other gallery entry whose score is greater than *or equal to* the correct
one's, plus one::

    rank_i = 1 + #{j : s_ij > s_i,t} + #{j != t : s_ij == s_i,t}

so ties count against the query (pessimistic, deterministic, independent of
gallery order): a gallery holding two identical structures can never score a
top-1 hit for either by luck.  Top-k accuracy is the fraction of queries with
rank <= k.  The *retrieved* structure used for space-group accuracy is the
highest-scoring column, the lowest column index among equal scores
(``numpy.argmax``).

Everything works on blocks of query rows, so a 7,118 x 7,118 evaluation never
needs the whole matrix at once (:class:`RankAccumulator`).

**Hybrid retrieval** fuses several rankers by reciprocal rank fusion (Cormack,
Clarke & Buettcher, SIGIR 2009): score(q, g) = sum_r 1 / (k + rank_r(q, g)),
k = 60 as in the paper, nothing tuned.  ``rank_r(q, g)`` is every gallery
entry's rank under ranker r with the same tie rule as above (entries tied under
r all get the worst rank of their group, :func:`ranks_of_all`); ties of the
fused score again count against the query.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Iterable, Sequence

import numpy as np

DEFAULT_KS = (1, 3, 5, 10)

#: Space-group frequency bins (number of training structures with that group):
#: (label, low, high) inclusive.  "0" = the group never occurs in training.
#: Table 2 of Zhang, Wang & Hu (Preprints 2025, doi:10.20944/preprints202504.1913.v1)
#: contrasts groups seen once with Fm-3m seen 808 times; these bins cover the range between.
FREQUENCY_BINS = (("0", 0, 0), ("1", 1, 1), ("2-9", 2, 9), ("10-99", 10, 99), ("100-999", 100, 999),
                  (">=1000", 1000, np.iinfo(np.int64).max))


def _as_scores(scores) -> np.ndarray:
    s = np.asarray(scores)
    if s.ndim != 2:
        raise ValueError(f"a similarity matrix must be 2-D (queries x gallery), got shape {s.shape}")
    if s.shape[1] == 0:
        raise ValueError("the gallery is empty: a similarity matrix needs at least one column")
    if s.dtype.kind not in "fiu":
        raise TypeError(f"similarities must be numbers, got dtype {s.dtype}")
    if s.dtype.kind == "f" and not np.all(np.isfinite(s)):
        bad = np.argwhere(~np.isfinite(s))[0]
        raise ValueError(f"similarity matrix holds NaN or inf (first at query {bad[0]}, gallery {bad[1]}); "
                         "check the embeddings / patterns that produced it")
    return s


def ranks_from_scores(scores, true_index) -> np.ndarray:
    """Rank (1 = best) of each row's correct column, ties counted against the query (module docs)."""
    s = _as_scores(scores)
    t = np.asarray(true_index, dtype=np.int64)
    if t.shape != (s.shape[0],):
        raise ValueError(f"true_index must have one entry per query row ({s.shape[0]}), got shape {t.shape}")
    if t.size and (t.min() < 0 or t.max() >= s.shape[1]):
        raise ValueError(f"true_index must lie in [0, {s.shape[1]}) (gallery columns)")
    correct = s[np.arange(len(t)), t][:, None]
    # >= counts the correct column itself once: that is the "+1".
    return np.count_nonzero(s >= correct, axis=1).astype(np.int64)


#: k of reciprocal rank fusion (Cormack, Clarke & Buettcher, SIGIR 2009; their fixed value, not tuned here).
RRF_K = 60


def ranks_of_all(scores) -> np.ndarray:
    """(b, n) int32 rank (1 = best) of *every* column in each row, ties counted pessimistically:
    ``rank_ij = #{l : s_il >= s_ij}`` (tied columns share the worst rank of their group), so the
    rank of the correct column equals :func:`ranks_from_scores`.  One stable argsort per row."""
    s = _as_scores(scores)
    b, n = s.shape
    order = np.argsort(s, axis=1, kind="stable")                  # ascending
    srt = np.take_along_axis(s, order, axis=1)
    new = np.ones((b, n), dtype=bool)
    new[:, 1:] = srt[:, 1:] != srt[:, :-1]
    # First sorted position of each tie group: entries from there on score >= this one.
    first = np.maximum.accumulate(np.where(new, np.arange(n), 0), axis=1)
    out = np.empty((b, n), dtype=np.int32)
    np.put_along_axis(out, order, (n - first).astype(np.int32), axis=1)
    return out


def reciprocal_rank_fusion(rank_blocks: Sequence, k: float = RRF_K) -> np.ndarray:
    """(b, n) float64 ``sum_r 1 / (k + rank_r)`` of same-shaped rank arrays (1 = best), in the
    given order (Cormack, Clarke & Buettcher, SIGIR 2009)."""
    if isinstance(k, bool) or not isinstance(k, (int, float, np.integer, np.floating)) or not k >= 0:
        raise ValueError(f"the fusion constant k must be a number >= 0 (the paper's 60), got {k!r}")
    blocks = [np.asarray(r) for r in rank_blocks]
    if not blocks:
        raise ValueError("reciprocal rank fusion needs at least one ranking")
    shape = blocks[0].shape
    for r in blocks:
        if r.shape != shape or r.ndim != 2:
            raise ValueError(f"rankings to fuse must be 2-D and of one shape, got {[b.shape for b in blocks]}")
        if r.dtype.kind not in "iu" or (r.size and r.min() < 1):
            raise ValueError("ranks must be integers >= 1 (1 = best); use ranks_of_all(scores)")
    fused = np.zeros(shape, dtype=np.float64)
    for r in blocks:
        fused += 1.0 / (float(k) + r)
    return fused


def fused_scores(score_blocks: Sequence, k: float = RRF_K) -> np.ndarray:
    """Reciprocal rank fusion of score blocks (each (b, n), higher = better) via :func:`ranks_of_all`."""
    return reciprocal_rank_fusion([ranks_of_all(s) for s in score_blocks], k)


def topk_from_ranks(ranks, ks: Sequence[int] = DEFAULT_KS) -> dict[str, float]:
    """``{"top1": fraction with rank <= 1, "top3": ..., ...}`` (NaN-free; 0 queries gives 0.0)."""
    r = np.asarray(ranks)
    return {f"top{k}": (float(np.mean(r <= k)) if r.size else 0.0) for k in ks}


def top_indices(scores, k: int) -> np.ndarray:
    """Column indices of each row's k best scores, best first (ties: lower column first)."""
    s = _as_scores(scores)
    k = min(int(k), s.shape[1])
    if k < s.shape[1]:
        part = np.argpartition(-s, k - 1, axis=1)[:, :k]
    else:
        part = np.broadcast_to(np.arange(s.shape[1]), s.shape).copy()
    vals = np.take_along_axis(s, part, axis=1)
    order = np.lexsort((part, -vals), axis=1)   # last key primary: descending score, then column
    return np.take_along_axis(part, order, axis=1)


@dataclass
class RankAccumulator:
    """Collects ranks, top-1 columns and the k best columns block by block.

    ``acc.add(scores_block, true_index_block)`` for consecutive query rows;
    then ``acc.ranks``, ``acc.top1`` and ``acc.best`` (n, keep) are complete.
    """

    keep: int = 10
    _ranks: list = field(default_factory=list)
    _top1: list = field(default_factory=list)
    _best: list = field(default_factory=list)

    def add(self, scores, true_index) -> None:
        s = _as_scores(scores)
        self._ranks.append(ranks_from_scores(s, true_index))
        self._top1.append(np.argmax(s, axis=1).astype(np.int64))
        self._best.append(top_indices(s, self.keep))

    @property
    def ranks(self) -> np.ndarray:
        return np.concatenate(self._ranks) if self._ranks else np.zeros(0, np.int64)

    @property
    def top1(self) -> np.ndarray:
        return np.concatenate(self._top1) if self._top1 else np.zeros(0, np.int64)

    @property
    def best(self) -> np.ndarray:
        return np.concatenate(self._best) if self._best else np.zeros((0, self.keep), np.int64)


def query_blocks(n_queries: int, block: int = 512, progress: "str | None" = None):
    """``(start, stop)`` of consecutive query row blocks; a tqdm bar named ``progress`` when given."""
    starts = range(0, n_queries, block)
    if progress:
        from tqdm.auto import tqdm

        starts = tqdm(starts, desc=progress, total=len(starts), leave=False)
    for start in starts:
        yield start, min(start + block, n_queries)


def blockwise_ranks(score_block: Callable[[int, int], np.ndarray], n_queries: int, true_index, *,
                    block: int = 512, keep: int = 10, progress: "str | None" = None) -> RankAccumulator:
    """Run ``score_block(start, stop) -> (stop - start, n_gallery)`` over all query rows."""
    true_index = np.asarray(true_index, dtype=np.int64)
    acc = RankAccumulator(keep=keep)
    for start, stop in query_blocks(n_queries, block, progress):
        acc.add(score_block(start, stop), true_index[start:stop])
    return acc


def per_group(ranks, groups, ks: Sequence[int] = DEFAULT_KS, order: Iterable[str] | None = None) -> dict:
    """``{group: {"n": count, "top1": ..., ...}}`` for each distinct label in ``groups``.

    ``order`` fixes the key order (labels not present are left out); else sorted.
    """
    r = np.asarray(ranks)
    g = np.asarray(groups)
    if g.shape != r.shape:
        raise ValueError(f"one group label per query is needed: {g.shape} labels for {r.shape} ranks")
    present = set(g.tolist())
    names = [x for x in order if x in present] if order is not None else sorted(present)
    out = {}
    for name in names:
        mask = g == name
        out[str(name)] = {"n": int(mask.sum()), **topk_from_ranks(r[mask], ks)}
    return out


def frequency_bin(count: int, bins=FREQUENCY_BINS) -> str:
    for label, lo, hi in bins:
        if lo <= count <= hi:
            return label
    raise ValueError(f"a frequency must be >= 0, got {count}")


def space_group_top1(true_sg, retrieved_sg, train_counts: "dict[int, int]", bins=FREQUENCY_BINS) -> dict:
    """Space-group accuracy of the top-1 retrieved structure, split by how often
    the query's true space group occurs in ``train_counts``.

    Returns ``{"bins": {label: {"n_queries", "n_space_groups", "accuracy"}},
    "overall": accuracy, "most_frequent": {"space_group", "train_count", "n_queries", "accuracy"}}``;
    empty bins are left out.  (As Table 2 of the EACNN paper: accuracy for the
    most frequent group and for groups seen once.)
    """
    t = np.asarray(true_sg, dtype=np.int64)
    p = np.asarray(retrieved_sg, dtype=np.int64)
    if t.shape != p.shape or t.ndim != 1:
        raise ValueError(f"true and retrieved space groups must be 1-D and the same length, got {t.shape} and {p.shape}")
    hit = t == p
    counts = np.array([int(train_counts.get(int(sg), 0)) for sg in t], dtype=np.int64)
    labels = np.array([frequency_bin(c, bins) for c in counts]) if t.size else np.zeros(0, dtype="<U1")
    out_bins = {}
    for label, _, _ in bins:
        mask = labels == label
        if mask.any():
            out_bins[label] = {"n_queries": int(mask.sum()), "n_space_groups": int(len(set(t[mask].tolist()))),
                               "accuracy": float(hit[mask].mean())}
    result = {"bins": out_bins, "overall": float(hit.mean()) if t.size else 0.0}
    if train_counts:
        top_sg = max(sorted(train_counts), key=lambda sg: train_counts[sg])
        mask = t == top_sg
        result["most_frequent"] = {"space_group": int(top_sg), "train_count": int(train_counts[top_sg]),
                                   "n_queries": int(mask.sum()),
                                   "accuracy": float(hit[mask].mean()) if mask.any() else None}
    return result


def retrieval_summary(ranks, top1_index, crystal_systems, space_groups, train_counts, *,
                      ks: Sequence[int] = DEFAULT_KS, true_index=None) -> dict:
    """The metric block reported for the model and for each baseline.

    ``space_groups`` / ``crystal_systems`` are per gallery entry; query ``i``'s
    truth is entry ``true_index[i]`` (default ``i``).
    """
    from ..data.labels import CRYSTAL_SYSTEMS

    r = np.asarray(ranks)
    sg = np.asarray(space_groups, dtype=np.int64)
    cs = np.asarray(crystal_systems)
    t = np.arange(len(r)) if true_index is None else np.asarray(true_index, dtype=np.int64)
    return {**topk_from_ranks(r, ks),
            "per_crystal_system": per_group(r, cs[t], ks, order=CRYSTAL_SYSTEMS),
            "space_group_top1": space_group_top1(sg[t], sg[np.asarray(top1_index, dtype=np.int64)], train_counts)}
