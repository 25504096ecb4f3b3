"""Non-learned retrieval baselines: what a database search does without a model.

Both rank every gallery structure for every query pattern and return scores
in blocks of queries, so they plug into :func:`~xrdflow.evaluate.retrieval.blockwise_ranks`.

``pattern_cosine``
    Cosine similarity between the query pattern and each gallery structure's
    *clean* simulated pattern on the same grid (whole-pattern database
    matching).  Float32 matrix products in blocks.

``peak_fom``
    A search-match figure of merit on peak positions and intensities, in the
    spirit of the classic powder search-match programs (Hanawalt search on the
    strongest lines; a Smith-Snyder-like weighting that rewards both the
    fraction of lines found and how close they lie).  Definitions:

    * query peaks x_i with intensities h_i: :func:`scipy.signal.find_peaks` on
      the max-normalized pattern with ``prominence >= peak_prominence``; h_i is
      the peak's prominence (height above the surrounding background), the
      ``max_query_peaks`` most prominent are kept;
    * reference lines of a gallery structure: 2-theta at the primary wavelength
      from its cached reflections (d, |F|^2, M), intensity w_j = M |F|^2 LP,
      lines within the grid, the ``max_reference_lines`` strongest above
      ``min_line_fraction`` of the strongest (the "card");
    * a position tolerance that grows with angle as strain moves peaks in d:
      tau(2 theta) = tol_deg + 2 tan(theta) * tol_rel_d (radians -> degrees),
      and a linear closeness c(delta) = max(0, 1 - |delta| / tau);
    * f_ref = sum_j w_j c(min_i |t_j - x_i|) / sum_j w_j: the fraction of the
      card's intensity found in the query;
    * f_obs = sum_i h_i c(min_j |x_i - t_j|) / sum_i h_i: the fraction of the
      observed peak intensity the structure explains (here the structure's
      lines include its K-alpha2 companions when the simulator has them);
    * FOM = f_ref * f_obs, in [0, 1].

    Both fractions are matrix products: the query's closeness profile on a
    fine 2-theta grid (bin = ``bin_deg``) times the card's sparse line vector,
    and the query's sparse peak vector times each structure's closeness
    profile; so 7,118 x 7,118 runs in tens of seconds on two cores.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .. import _core


# ------------------------------------------------------------------ cosine
def normalized_rows(Y) -> np.ndarray:
    """Rows scaled to unit L2 norm, float32 (all-zero rows stay zero)."""
    Y = np.asarray(Y, dtype=np.float32)
    if Y.ndim != 2:
        raise ValueError(f"patterns must be 2-D (n, n_points), got shape {Y.shape}")
    if not np.all(np.isfinite(Y)):
        raise ValueError("patterns contain NaN or inf")
    norm = np.linalg.norm(Y, axis=1, keepdims=True)
    return np.divide(Y, norm, out=np.zeros_like(Y), where=norm > 0)


class PatternCosine:
    """Cosine of each query pattern with every gallery pattern (same grid)."""

    name = "pattern_cosine"

    def __init__(self, gallery_patterns):
        self.gallery = normalized_rows(gallery_patterns)
        if len(self.gallery) == 0:
            raise ValueError("the gallery is empty: pattern_cosine needs at least one gallery pattern")

    def prepare(self, query_patterns) -> None:
        q = normalized_rows(query_patterns)
        if q.shape[1] != self.gallery.shape[1]:
            raise ValueError(f"query patterns have {q.shape[1]} points but gallery patterns {self.gallery.shape[1]}; "
                             "render both on the same grid")
        self.queries = q

    def scores(self, start: int, stop: int) -> np.ndarray:
        return self.queries[start:stop] @ self.gallery.T


# ------------------------------------------------------------------ peak FOM
@dataclass(frozen=True)
class PeakFOMConfig:
    """Parameters of the peak figure of merit (module docs).

    ``tol_rel_d`` was chosen on mp20_biternary_val (7,140 structures, realistic
    queries, seed 0), never on a test split: top-1 0.44 / 0.56 / 0.61 / 0.63 /
    0.65 / 0.66 / 0.67 for 0.004 / 0.008 / 0.012 / 0.016 / 0.02 / 0.025 / 0.03;
    0.02 sits where the gain flattens (Augmentation.realistic() strains cells
    by up to 1 % per component, so lines move by about that much in d)."""

    tol_deg: float = 0.10              # constant part of the 2-theta tolerance (zero shift, displacement)
    tol_rel_d: float = 0.02            # relative d tolerance (lattice strain)
    peak_prominence: float = 0.02      # of the pattern's maximum
    max_query_peaks: int = 40
    max_reference_lines: int = 20
    min_line_fraction: float = 0.01    # lines weaker than this x strongest are ignored
    bin_deg: float = 0.02              # grid of the closeness profiles

    def __post_init__(self):
        for name in ("tol_deg", "peak_prominence", "bin_deg"):
            if not float(getattr(self, name)) > 0:
                raise ValueError(f"PeakFOMConfig.{name} must be > 0, got {getattr(self, name)!r}")
        if not 0 <= self.tol_rel_d < 0.1:
            raise ValueError(f"PeakFOMConfig.tol_rel_d must be in [0, 0.1), got {self.tol_rel_d!r}")
        for name in ("max_query_peaks", "max_reference_lines"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"PeakFOMConfig.{name} must be >= 1, got {getattr(self, name)!r}")
        if not 0 <= self.min_line_fraction < 1:
            raise ValueError(f"PeakFOMConfig.min_line_fraction must be in [0, 1), got {self.min_line_fraction!r}")


def tolerance_deg(two_theta_deg, cfg: PeakFOMConfig) -> np.ndarray:
    """tau(2theta) = tol_deg + 2 tan(theta) tol_rel_d in degrees (d(2theta) = -2 tan(theta) dd/d)."""
    theta = np.radians(np.asarray(two_theta_deg, dtype=np.float64) / 2)
    return cfg.tol_deg + np.degrees(2 * np.tan(theta) * cfg.tol_rel_d)


def pick_peaks(two_theta_deg, y, cfg: PeakFOMConfig) -> tuple[np.ndarray, np.ndarray]:
    """(positions in degrees, prominences relative to the maximum) of the strongest peaks of one pattern."""
    from scipy.signal import find_peaks

    y = np.asarray(y, dtype=np.float64)
    top = float(y.max()) if y.size else 0.0
    if not top > 0:
        return np.zeros(0), np.zeros(0)
    idx, props = find_peaks(y / top, prominence=cfg.peak_prominence)
    prom = props["prominences"]
    if len(idx) > cfg.max_query_peaks:
        keep = np.sort(np.argsort(-prom, kind="stable")[: cfg.max_query_peaks])
        idx, prom = idx[keep], prom[keep]
    return np.asarray(two_theta_deg)[idx], prom


def reference_lines(sim, reflections, cfg: PeakFOMConfig, *, all_wavelengths: bool = False):
    """Per structure (CSR): line 2-theta (deg), intensity M |F|^2 LP scaled to the strongest = 1.

    The primary wavelength only (the "card"), or every emission line of the
    simulator weighted by its line weight when ``all_wavelengths``.
    Returns (offsets (B+1,), two_theta (L,), weight (L,)).
    """
    lo, hi = float(sim.two_theta_deg[0]), float(sim.two_theta_deg[-1])
    waves = list(zip(sim.radiation.wavelengths, sim.radiation.weights))
    if not all_wavelengths:
        waves = waves[:1]
    neutron = sim.probe == "neutron"
    parts_tt, parts_w, parts_owner = [], [], []
    n = len(reflections)
    owner = np.repeat(np.arange(n), np.diff(reflections.offsets))
    base = None
    for k, (lam, weight) in enumerate(waves):
        tt, _, inten = _core.peak_intensities(reflections.offsets, reflections.d, reflections.F2,
                                              reflections.multiplicity, wavelength=float(lam),
                                              cos2_2theta_m=sim._cos2_2theta_m, neutron=neutron)
        if k == 0:
            base = inten   # strongest line of the primary wavelength sets the scale
        parts_tt.append(tt)
        parts_w.append(inten * weight)
        parts_owner.append(owner)
    tt = np.concatenate(parts_tt)
    w = np.concatenate(parts_w)
    own = np.concatenate(parts_owner)
    inside = (tt >= lo) & (tt <= hi)
    # Scale by each structure's strongest primary line inside the range.
    prim_inside = (parts_tt[0] >= lo) & (parts_tt[0] <= hi)
    top = np.zeros(n)
    np.maximum.at(top, owner[prim_inside], base[prim_inside])
    with np.errstate(divide="ignore", invalid="ignore"):
        rel = np.where(top[own] > 0, w / top[own], 0.0)
    keep = inside & (rel >= cfg.min_line_fraction)
    tt, rel, own = tt[keep], rel[keep], own[keep]
    # Strongest max_reference_lines per structure (primary + companions counted together).
    order = np.lexsort((-rel, own))
    tt, rel, own = tt[order], rel[order], own[order]
    counts = np.bincount(own, minlength=n)
    starts = np.concatenate([[0], np.cumsum(counts)])
    position = np.arange(len(own)) - starts[own]
    limit = cfg.max_reference_lines * len(waves)
    sel = position < limit
    tt, rel, own = tt[sel], rel[sel], own[sel]
    offsets = np.concatenate([[0], np.cumsum(np.bincount(own, minlength=n))]).astype(np.int64)
    return offsets, tt, rel


class PeakFOM:
    """Peak-position figure of merit search (module docs); needs the gallery's
    cached reflections and the simulator that rendered the queries."""

    name = "peak_fom"

    def __init__(self, sim, gallery_reflections, cfg: PeakFOMConfig | None = None):
        from scipy import sparse

        self.cfg = cfg or PeakFOMConfig()
        n = len(gallery_reflections)
        if n == 0:
            raise ValueError("the gallery is empty: peak_fom needs at least one gallery structure")
        self.sim = sim
        self.lo, self.hi = float(sim.two_theta_deg[0]), float(sim.two_theta_deg[-1])
        self.n_bins = int(math.ceil((self.hi - self.lo) / self.cfg.bin_deg)) + 1
        self.n_gallery = n
        # Card: strongest primary lines -> sparse (n, bins), rows normalized to sum 1.
        off, tt, w = reference_lines(sim, gallery_reflections, self.cfg, all_wavelengths=False)
        rows = np.repeat(np.arange(n), np.diff(off))
        card = sparse.csr_matrix((w, (rows, self._bin(tt))), shape=(n, self.n_bins), dtype=np.float64)
        total = np.asarray(card.sum(axis=1)).ravel()
        self.empty_cards = int(np.count_nonzero(total == 0))
        card = sparse.diags(np.divide(1.0, total, out=np.zeros_like(total), where=total > 0)) @ card
        self.card = card.astype(np.float32).tocsr()
        # Explaining profile of every structure: max closeness to any of its lines
        # (K-alpha2 companions included), (bins, n) so a query's peak bins gather rows.
        off2, tt2, _ = reference_lines(sim, gallery_reflections, self.cfg, all_wavelengths=True)
        self.explain_T = self._profiles(off2, tt2).T.copy()   # (bins, n) float32

    def _bin(self, two_theta) -> np.ndarray:
        b = np.rint((np.asarray(two_theta) - self.lo) / self.cfg.bin_deg).astype(np.int64)
        return np.clip(b, 0, self.n_bins - 1)

    def _profiles(self, offsets, positions, block: int = 256) -> np.ndarray:
        """(n_rows, bins) float32: max over the row's positions of c(grid - position)."""
        n = len(offsets) - 1
        grid = self.lo + self.cfg.bin_deg * np.arange(self.n_bins)
        out = np.zeros((n, self.n_bins), dtype=np.float32)
        owner = np.repeat(np.arange(n), np.diff(offsets))
        tau = tolerance_deg(positions, self.cfg)
        half = np.ceil(tau / self.cfg.bin_deg).astype(np.int64)
        centre = self._bin(positions)
        # Each position touches its window of bins: scatter-max with np.maximum.at in chunks.
        for s in range(0, len(positions), 65536):
            sl = slice(s, s + 65536)
            width = int(half[sl].max()) if half[sl].size else 0
            offs = np.arange(-width, width + 1)
            b = centre[sl, None] + offs[None, :]
            valid = (b >= 0) & (b < self.n_bins) & (np.abs(offs)[None, :] <= half[sl, None])
            bb = np.clip(b, 0, self.n_bins - 1)
            c = 1.0 - np.abs(grid[bb] - positions[sl, None]) / tau[sl, None]
            c = np.where(valid, np.maximum(c, 0.0), 0.0).astype(np.float32)
            rows = np.broadcast_to(owner[sl, None], b.shape)
            np.maximum.at(out, (rows[valid], bb[valid]), c[valid])
        return out

    def prepare(self, query_patterns, progress: bool = False) -> None:
        """Pick the peaks of every query pattern (on the simulator's 2-theta grid)."""
        from scipy import sparse

        Y = np.asarray(query_patterns)
        if Y.ndim != 2 or Y.shape[1] != self.sim.n_points:
            raise ValueError(f"query patterns must be (n, {self.sim.n_points}) on the simulator's grid, "
                             f"got shape {Y.shape}")
        it = range(len(Y))
        if progress:
            from tqdm.auto import tqdm

            it = tqdm(it, desc="peak picking", leave=False)
        pos, hts, counts = [], [], []
        for i in it:
            x, h = pick_peaks(self.sim.two_theta_deg, Y[i], self.cfg)
            pos.append(x)
            hts.append(h)
            counts.append(len(x))
        self.query_peaks = list(zip(pos, hts))
        offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
        x = np.concatenate(pos) if pos else np.zeros(0)
        h = np.concatenate(hts) if hts else np.zeros(0)
        rows = np.repeat(np.arange(len(Y)), counts)
        peaks = sparse.csr_matrix((h, (rows, self._bin(x))), shape=(len(Y), self.n_bins), dtype=np.float64)
        total = np.asarray(peaks.sum(axis=1)).ravel()
        peaks = sparse.diags(np.divide(1.0, total, out=np.zeros_like(total), where=total > 0)) @ peaks
        self.peaks = peaks.astype(np.float32).tocsr()
        self._peak_offsets, self._peak_x = offsets, x
        self.n_without_peaks = int(np.count_nonzero(total == 0))

    def scores(self, start: int, stop: int) -> np.ndarray:
        # f_ref: the query's closeness profile read at the card's line bins.
        closeness = self._profiles(self._peak_offsets[start:stop + 1] - self._peak_offsets[start],
                                   self._peak_x[self._peak_offsets[start]:self._peak_offsets[stop]])
        f_ref = np.asarray(self.card @ closeness.T).T                 # (b, n)
        f_obs = np.asarray(self.peaks[start:stop] @ self.explain_T)   # (b, n)
        return (f_ref * f_obs).astype(np.float32)
