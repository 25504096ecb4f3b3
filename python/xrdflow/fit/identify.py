"""Phase identification: which candidate structures (and which mixture of up
to ``max_phases`` of them) explain a measured pattern.

1. Screen every candidate (fast, all in C++): its reflections are computed
   once; for each isotropic cell factor f on a grid (+-``cell_search``, since
   real cells differ from database cells by ~1-2 %) every candidate is
   rendered on the measured points with broad Gaussian peaks (FWHM
   ``screen_fwhm_deg``) and compared with the measured pattern after
   background removal (a running low-percentile envelope) and the same
   Gaussian broadening, on a square-root intensity scale (which damps
   texture and intensity errors); the score is the best cosine over f.
2. Whole-pattern fits (:func:`fit_pattern`) of the ``k`` best-screened
   candidates, ranked by Rwp.
3. Greedy mixtures: starting from the best single fit, add the candidate
   (among the ``k``) that lowers Rwp most, while it lowers Rwp by more than
   ``min_improvement`` (relative) and its weight fraction is above
   ``min_weight_fraction``; up to ``max_phases`` phases.
"""
from __future__ import annotations

import json
import math
import os
import warnings
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from .. import _core
from .._fileio import atomic_write_text
from ..simulate import Simulator
from ..structure import Structure
from .refine import FitConfig, as_pattern_data, fit_pattern
from .report import FitResult


@dataclass
class Candidate:
    """One screened (and possibly fitted) candidate."""

    index: int
    id: str
    formula: str
    screen_score: float            # best cosine of the screen, in [0, 1]
    cell_factor: float             # isotropic cell factor of the best screen match
    r_wp: float | None = None      # Rwp of its single-phase fit (None: not fitted)
    fit: FitResult | None = field(default=None, repr=False)

    def to_dict(self) -> dict:
        return dict(index=self.index, id=self.id, formula=self.formula, screen_score=self.screen_score,
                    cell_factor=self.cell_factor, r_wp=self.r_wp)


@dataclass
class IdentifyResult:
    """Ranked candidates and the best mixture."""

    ranked: list                   # fitted Candidates, best (lowest Rwp) first
    screened: list                 # every Candidate, best screen score first
    mixture: list                  # ids of the chosen phases
    mixture_weight_fractions: list
    mixture_fit: FitResult | None
    mixture_steps: list            # (ids, Rwp) of every mixture tried
    source: str = ""

    def summary(self, top: int = 10) -> str:
        lines = [f"identification of {self.source or 'pattern'}: {len(self.screened)} candidates screened, "
                 f"{len(self.ranked)} fitted"]
        lines.append(f"{'rank':>4}  {'id':<24}{'formula':<20}{'screen':>8}{'cell f':>8}{'Rwp %':>8}")
        for r, c in enumerate(self.ranked[:top], 1):
            lines.append(f"{r:4d}  {c.id[:23]:<24}{c.formula[:19]:<20}{c.screen_score:8.3f}{c.cell_factor:8.3f}"
                         f"{100 * c.r_wp:8.2f}")
        if self.mixture_fit is not None:
            parts = ", ".join(f"{i} {100 * w:.1f} wt%" for i, w in zip(self.mixture, self.mixture_weight_fractions))
            lines.append(f"best model: {parts}; Rwp {100 * self.mixture_fit.r_wp:.2f} %")
        return "\n".join(lines)

    def to_dict(self) -> dict:
        return dict(source=self.source, ranked=[c.to_dict() for c in self.ranked],
                    screened=[c.to_dict() for c in self.screened], mixture=list(self.mixture),
                    mixture_weight_fractions=[float(w) for w in self.mixture_weight_fractions],
                    mixture_r_wp=None if self.mixture_fit is None else self.mixture_fit.r_wp,
                    mixture_steps=[{"phases": list(ids), "r_wp": float(r)} for ids, r in self.mixture_steps],
                    mixture_fit=None if self.mixture_fit is None else self.mixture_fit.to_dict())

    def save_json(self, path) -> None:
        atomic_write_text(path, json.dumps(self.to_dict(), indent=2) + "\n")


def _reduced(s: Structure) -> tuple:
    """Reduced composition: (symbol, fraction) pairs."""
    counts: dict[int, float] = {}
    for z, occ in zip(s.numbers, s.occupancy):
        counts[int(z)] = counts.get(int(z), 0.0) + float(occ)
    total = sum(counts.values()) or 1.0
    return tuple(sorted((z, round(c / total, 3)) for z, c in counts.items()))


def load_candidates(candidates, progress: bool = False) -> tuple[list[str], list[Structure]]:
    """(ids, structures) from a list of Structures / CIF paths, a CIF folder, a CSV(.gz) with a cif
    column, a CIF file or an xrdflow dataset directory."""
    if isinstance(candidates, (str, os.PathLike)):
        from ..data.readers import load_structures
        from ..data.shards import ShardedDataset, is_dataset

        path = os.fspath(candidates)
        if not os.path.exists(path):
            raise FileNotFoundError(f"no such candidate file or folder: {path!r}")
        if os.path.isdir(path) and is_dataset(path):
            ds = ShardedDataset(path)
            pairs = list(ds.items())
            return [i for i, _ in pairs], [s for _, s in pairs]
        res = load_structures(path, progress=progress)
        if not res.structures:
            raise ValueError(f"no structure could be read from {path!r}: {res.summary()}")
        return list(res.ids), list(res.structures)
    ids, out = [], []
    for k, s in enumerate(candidates):
        if isinstance(s, (str, os.PathLike)):
            s = Structure.from_cif(os.fspath(s), label=os.path.splitext(os.path.basename(os.fspath(s)))[0])
        if not isinstance(s, Structure):
            raise TypeError(f"candidate {k} is a {type(s).__name__}; give Structures or CIF paths")
        ids.append(s.label or f"candidate{k}")
        out.append(s)
    if not out:
        raise ValueError("no candidates given")
    return ids, out


def _prepare_measured(tt: np.ndarray, y: np.ndarray, fwhm_deg: float) -> np.ndarray:
    from scipy import ndimage

    step = float(np.median(np.diff(tt)))
    win = max(5, int(round(2.0 / step)) | 1)          # ~2 degree window for the background envelope
    env = ndimage.percentile_filter(y, 10, size=win, mode="nearest")
    env = ndimage.uniform_filter1d(env, win, mode="nearest")
    net = np.maximum(y - env, 0.0)
    sigma_pts = fwhm_deg / 2.3548 / step
    net = ndimage.gaussian_filter1d(net, sigma_pts, mode="constant")
    v = np.sqrt(np.maximum(net, 0.0))
    n = np.linalg.norm(v)
    if n == 0:
        raise ValueError("the measured pattern has no peaks above its background; nothing to identify")
    return v / n


def screen(tt: np.ndarray, y: np.ndarray, structures: Sequence[Structure], radiation, *, cell_search: float = 0.015,
           screen_fwhm_deg: float = 0.25, progress: bool = True, threads: int | None = None, _cache=None):
    """(scores, cell_factors) of every structure: best cosine over the cell-factor grid.

    ``_cache``: a dict reused between calls on the same grid and candidates (the reflections)."""
    measured = _prepare_measured(tt, y, screen_fwhm_deg)
    cache = {} if _cache is None else _cache
    if "refl" not in cache:
        top = min(float(tt[-1]) * (1 + cell_search) + 2.0, 179.0)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)   # this simulator's own grid only sets d_min
            sim = Simulator(radiation=radiation, two_theta=(max(1.0, float(tt[0]) * 0.9), top), n_points=256,
                            U=0.0, V=0.0, W=screen_fwhm_deg ** 2)
        cache["refl"] = sim.reflections(structures, threads=threads)
        cache["instrument"] = sim._instrument()
    refl = cache["refl"]
    # Broad Gaussian peaks convolved by the same Gaussian as the data: FWHM sqrt(2) x.
    inst = dict(cache["instrument"])
    inst.update(grid_two_theta=np.ascontiguousarray(tt), axis=np.ascontiguousarray(tt), U=0.0, V=0.0,
                W=2.0 * screen_fwhm_deg ** 2, X=0.0, Y=0.0, normalization=0, zero_shift_deg=0.0)
    theta_top = math.radians(float(tt[-1]) / 2)
    df = math.radians(screen_fwhm_deg / 2) / (2 * math.tan(theta_top))
    n_f = 1 if cell_search <= 0 else 2 * int(math.ceil(cell_search / df)) + 1
    factors = np.linspace(1 - cell_search, 1 + cell_search, n_f) if n_f > 1 else np.ones(1)
    best = np.full(len(structures), -1.0)
    best_f = np.ones(len(structures))
    iterator = factors
    if progress:
        from tqdm.auto import tqdm

        iterator = tqdm(factors, desc=f"screening {len(structures)} candidates", unit="cell factor")
    thr = 0 if threads is None else int(threads)
    for f in iterator:
        Y = _core.render_patterns(refl.offsets, np.ascontiguousarray(refl.d * f), refl.F2, refl.multiplicity, inst,
                                  threads=thr).astype(np.float64)
        Y = np.sqrt(np.maximum(Y, 0.0))
        norms = np.linalg.norm(Y, axis=1)
        cos = np.where(norms > 0, Y @ measured / np.where(norms > 0, norms, 1.0), 0.0)
        better = cos > best
        best[better] = cos[better]
        best_f[better] = f
    return best, best_f


def _scaled(s: Structure, cell_factor: float) -> Structure:
    """``s`` with its cell lengths times ``cell_factor`` (fractional coordinates kept)."""
    return type(s)(s.lattice * cell_factor, s.frac, s.numbers, s.charges, s.occupancy, s.b_iso, s.label)


#: Fits after a screen: the screen found the isotropic cell factor, so they search only locally.
SCREENED_FIT = dict(cell_search=0.004, zero_search_deg=0.1, max_nfev=40)


def _fit_each(pat, todo: Sequence[Candidate], structs: Sequence[Structure], radiation, cfg: FitConfig,
              progress: bool) -> list[Candidate]:
    """Single-phase fits of the Candidates ``todo`` (from their screened cell factor); sets ``fit`` and
    ``r_wp`` and returns those that could be fitted (a ValueError, e.g. no reflection in range, skips one)."""
    fitted = []
    it = todo
    if progress:
        from tqdm.auto import tqdm

        it = tqdm(todo, desc="fitting candidates", unit="fit")
    for c in it:
        try:
            c.fit = fit_pattern(pat, [_scaled(structs[c.index], c.cell_factor)], radiation=radiation, config=cfg)
            c.r_wp = c.fit.r_wp
            fitted.append(c)
        except ValueError:
            continue           # e.g. no reflection in range: not a candidate for this pattern
    return fitted


def fit_candidates(pattern, structures: Sequence[Structure], radiation=None, *, ids: "Sequence[str] | None" = None,
                   cell_search: float = 0.015, screen_fwhm_deg: float = 0.25, fit_config: FitConfig | None = None,
                   progress: bool = False) -> list[Candidate]:
    """Every given structure fitted alone to ``pattern``: the re-ranking stage of ``xrdflow search
    --rerank fit``, for a short list that another ranker chose (so, unlike :func:`identify`, the screen
    only supplies each structure's isotropic cell factor and chooses nothing).

    Returns one :class:`Candidate` per structure, in the given order (``index`` = position in
    ``structures``), with ``r_wp`` set, or None where the fit failed (no reflection in range).
    """
    data = as_pattern_data(pattern, radiation)
    structs = list(structures)
    if not structs:
        raise ValueError("no candidates given")
    ids = [str(i) for i in range(len(structs))] if ids is None else [str(i) for i in ids]
    if len(ids) != len(structs):
        raise ValueError(f"{len(ids)} ids for {len(structs)} structures")
    tt, y = data.two_theta_deg, data.intensity
    scores, factors = screen(tt, y, structs, data.radiation, cell_search=cell_search,
                             screen_fwhm_deg=screen_fwhm_deg, progress=False)
    cands = [Candidate(i, ids[i], s.formula, float(scores[i]), float(factors[i])) for i, s in enumerate(structs)]
    cfg = fit_config or FitConfig(**SCREENED_FIT)
    _fit_each((tt, y, data.sigma), cands, structs, data.radiation, cfg, progress)
    return cands


def r_wp_values(cands: Sequence[Candidate]) -> np.ndarray:
    """Rwp of each Candidate, inf where it has no fit."""
    return np.array([np.inf if c.r_wp is None else c.r_wp for c in cands], dtype=np.float64)


def fit_order(cands: Sequence[Candidate]) -> np.ndarray:
    """Positions of ``cands`` by ascending Rwp (stable); those without a fit last, in their order."""
    return np.argsort(r_wp_values(cands), kind="stable")


def identify(pattern, candidates, radiation=None, *, k: int = 5, max_phases: int = 3, cell_search: float = 0.015,
             screen_fwhm_deg: float = 0.25, min_improvement: float = 0.1, min_weight_fraction: float = 0.01,
             fit_config: FitConfig | None = None, progress: bool = True) -> IdentifyResult:
    """Rank candidate phases for a measured pattern and find the best mixture.

    pattern: as for :func:`fit_pattern`; candidates: Structures / CIF paths, a CIF folder,
    a CSV(.gz) with a cif column or a dataset directory.  k: how many best-screened
    candidates get whole-pattern fits; max_phases: largest mixture tried.
    """
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ValueError(f"k must be a positive integer, got {k!r}")
    if isinstance(max_phases, bool) or not isinstance(max_phases, int) or not 1 <= max_phases <= 5:
        raise ValueError(f"max_phases must be an integer from 1 to 5, got {max_phases!r}")
    if not 0 <= cell_search <= 0.05:
        raise ValueError(f"cell_search is a relative cell change in [0, 0.05], got {cell_search}")
    data = as_pattern_data(pattern, radiation)
    ids, structs = load_candidates(candidates, progress=progress)
    tt, y = data.two_theta_deg, data.intensity
    cache: dict = {}
    scores, factors = screen(tt, y, structs, data.radiation, cell_search=cell_search,
                             screen_fwhm_deg=screen_fwhm_deg, progress=progress, _cache=cache)
    order = np.argsort(-scores, kind="stable")
    screened = [Candidate(int(i), ids[i], structs[i].formula, float(scores[i]), float(factors[i])) for i in order]
    # The screen found each cell factor; the fits start from the scaled cell and only search locally.
    cfg = fit_config or FitConfig(**SCREENED_FIT)

    def scaled(c: Candidate) -> Structure:
        return _scaled(structs[c.index], c.cell_factor)

    def same_phase(a: Candidate, b: Candidate) -> bool:
        """Duplicates in the candidate set (same formula, volume per atom within 2 %) are not a mixture."""
        sa, sb = structs[a.index], structs[b.index]
        if sa.formula != sb.formula and _reduced(sa) != _reduced(sb):
            return False
        va, vb = sa.volume / len(sa), sb.volume / len(sb)
        return abs(va - vb) < 0.02 * max(va, vb)

    pat = (tt, y, data.sigma)
    fitted = _fit_each(pat, screened[:k], structs, data.radiation, cfg, progress)
    ranked = sorted(fitted, key=lambda c: c.r_wp)
    if not ranked:
        return IdentifyResult([], screened, [], [], None, [], data.source)
    chosen = [ranked[0]]
    best_fit = ranked[0].fit
    steps = [([ranked[0].id], ranked[0].r_wp)]
    while len(chosen) < max_phases:
        trial_best = None
        # Re-screen every candidate against what the current model leaves unexplained
        # (observed minus the fitted phases), and try the k best of that screen.
        rest = y - best_fit.phase_curves.sum(axis=0)
        try:
            r_scores, r_factors = screen(tt, rest, structs, data.radiation, cell_search=cell_search,
                                         screen_fwhm_deg=screen_fwhm_deg, progress=False, _cache=cache)
        except ValueError:        # nothing left above the background
            break
        trials = []
        for i in np.argsort(-r_scores, kind="stable"):
            c = Candidate(int(i), ids[i], structs[i].formula, float(scores[i]), float(r_factors[i]))
            if any(c.index == x.index or same_phase(c, x) for x in chosen):
                continue
            trials.append(c)
            if len(trials) == k:
                break
        for c in trials:
            try:
                fit = fit_pattern(pat, [scaled(x) for x in chosen + [c]], radiation=data.radiation, config=cfg)
            except ValueError:
                continue
            steps.append(([x.id for x in chosen + [c]], fit.r_wp))
            if fit.phases[-1].weight_fraction[0] < min_weight_fraction:
                continue
            if trial_best is None or fit.r_wp < trial_best[1].r_wp:
                trial_best = (c, fit)
        if trial_best is None or trial_best[1].r_wp > best_fit.r_wp * (1 - min_improvement):
            break
        chosen.append(trial_best[0])
        best_fit = trial_best[1]
    return IdentifyResult(ranked=ranked, screened=screened, mixture=[c.id for c in chosen],
                          mixture_weight_fractions=[float(p.weight_fraction[0]) for p in best_fit.phases],
                          mixture_fit=best_fit, mixture_steps=steps, source=data.source)
