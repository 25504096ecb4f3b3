"""Staged whole-pattern (Rietveld) least squares of known structures.

:func:`fit_pattern` refines, with ``scipy.optimize.least_squares`` (trust
region reflective, bounds on every parameter), per phase a scale factor,
lattice parameters (only the free ones of the crystal system), TCH profile
parameters (Caglioti U, V, W, X, Y, or crystallite size and microstrain on a
fixed instrument profile), optionally an overall B and a March-Dollase r, and
globally a zero shift, optionally a sample displacement, and a Chebyshev
background.  Atomic positions stay fixed.

Scale factors and background coefficients are linear: every evaluation
solves them by weighted linear least squares (scales kept >= 0), so the
nonlinear optimizer only sees the nonlinear parameters (variable
projection).  The stages are

1. linear parameters alone for the start values;
2. a grid search of an isotropic cell factor (+-``cell_search``) per phase and
   of the zero shift, with peaks broadened so that the grid cannot step over
   the minimum (real cells differ from database cells by ~1 %);
3. zero shift, lattice and W (peak positions and a width);
4. + all profile parameters;
5. + displacement, preferred orientation, overall B (those asked for).

Standard uncertainties come from the Jacobian J of the weighted residuals
with respect to every refined parameter, linear ones included, at the
minimum: cov = (J^T J)^-1 chi^2_red (e.g. Prince, Mathematical Techniques in
Crystallography, ch. 8).  Weights are 1 / sigma^2 with sigma from the pattern
or sqrt(max(I, 1)) when the file has none.
"""
from __future__ import annotations

import math
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
from scipy.optimize import least_squares

from ..radiation import Radiation, parse_radiation
from ..structure import Structure
from .model import PROFILE_NAMES, PatternModel, compute_phase_data, metric_matrix

PROFILE_MODES = {
    "caglioti": ("U", "V", "W", "X", "Y"),
    "uvw": ("U", "V", "W"),
    "size_strain": ("size_nm", "microstrain"),
    "fixed": (),
}


@dataclass
class FitConfig:
    """Options of :func:`fit_pattern` (start values, what to refine, bounds).

    profile: "caglioti" (refine U, V, W, X, Y of each phase), "uvw", "size_strain"
        (crystallite size and microstrain on top of a fixed instrument U, V, W,
        X, Y) or "fixed".
    U, V, W, X, Y: start (or fixed instrument) profile, as in :class:`xrdflow.Simulator`.
    size_nm, microstrain: start values for "size_strain".
    refine_displacement: sample displacement s (mm) with the shift -2 s cos(theta) / R;
        strongly correlated with the zero shift and the cell, hence off by default.
    lattice_range: largest relative change of a cell length (bounds), default 3 %.
    cell_search: half-width of the isotropic cell-factor grid search (0 = none).
    zero_search_deg: half-width of the zero-shift grid search (0 = none).
    preferred_orientation: refine a March-Dollase r per phase along ``po_direction``.
    bounds: {name: (low, high)} overriding bounds; names as in FitResult.parameters
        ("zero_shift_deg", "phase0.W", ...) or a profile name ("W") for every phase.
    two_theta_range: fit only the points inside (start, stop) in degrees.
    """

    background_terms: int = 8
    refine_zero: bool = True
    zero_shift_deg: float = 0.0
    refine_displacement: bool = False
    displacement_mm: float = 0.0
    goniometer_radius_mm: float = 240.0
    refine_lattice: bool = True
    lattice_range: float = 0.03
    cell_search: float = 0.02
    zero_search_deg: float = 0.15
    profile: str = "caglioti"
    U: float = 0.002915
    V: float = -0.006758
    W: float = 0.006255
    X: float = 0.0
    Y: float = 0.0
    size_nm: float = 100.0
    microstrain: float = 0.0
    preferred_orientation: bool = False
    po_direction: tuple = (0, 0, 1)
    refine_b_overall: bool = False
    monochromator_two_theta_deg: float = 0.0
    two_theta_range: tuple | None = None
    bounds: dict = field(default_factory=dict)
    max_nfev: int = 100

    def check(self) -> None:
        if self.profile not in PROFILE_MODES:
            raise ValueError(f"profile must be one of {sorted(PROFILE_MODES)}, got {self.profile!r}")
        if isinstance(self.background_terms, bool) or not isinstance(self.background_terms, int) or \
                not 0 <= self.background_terms <= 40:
            raise ValueError(f"background_terms must be an integer in [0, 40], got {self.background_terms!r}")
        if not 0 < self.lattice_range <= 0.2:
            raise ValueError(f"lattice_range is a relative change of the cell lengths, in (0, 0.2]; "
                             f"got {self.lattice_range}")
        if not 0 <= self.cell_search <= self.lattice_range:
            raise ValueError(f"cell_search must be in [0, lattice_range={self.lattice_range}], got {self.cell_search}")
        if not 0 <= self.zero_search_deg <= 1:
            raise ValueError(f"zero_search_deg must be in [0, 1] degrees, got {self.zero_search_deg}")
        if not self.goniometer_radius_mm > 0:
            raise ValueError(f"goniometer_radius_mm must be > 0, got {self.goniometer_radius_mm}")
        if self.max_nfev < 1:
            raise ValueError(f"max_nfev must be >= 1, got {self.max_nfev}")


# ---------------------------------------------------------------- inputs
@dataclass
class PatternData:
    """Measured points ready for fitting."""

    two_theta_deg: np.ndarray
    intensity: np.ndarray
    sigma: np.ndarray
    radiation: Radiation
    source: str = ""


def _radiation_from(pattern, radiation) -> Radiation | None:
    if radiation is not None:
        return parse_radiation(radiation)
    rad = getattr(pattern, "radiation", None)
    if rad is not None:
        return parse_radiation(rad)
    wl = getattr(pattern, "wavelengths", None)
    if wl:
        weights = getattr(pattern, "line_weights", None) or (1.0,) * len(wl)
        return Radiation(" + ".join(f"{w:g} A" for w in wl), tuple(float(w) for w in wl),
                         tuple(float(w) for w in weights))
    return None


def as_pattern_data(pattern, radiation=None) -> PatternData:
    """Measured pattern from a MeasuredPattern (xrdflow.io), a file path, a
    (two_theta_deg, intensity[, sigma]) tuple or an (N, 2|3) array."""
    source = ""
    if isinstance(pattern, (str, os.PathLike)):
        source = os.fspath(pattern)
        try:
            from ..io import read_pattern
        except ImportError:
            raise ValueError("reading pattern files needs xrdflow.io.read_pattern, which this installation lacks; "
                             "pass (two_theta_deg, intensity) arrays instead") from None
        pattern = read_pattern(source, wavelength=radiation)
    if hasattr(pattern, "two_theta_deg") and hasattr(pattern, "intensity"):
        tt, y = pattern.two_theta_deg, pattern.intensity
        sigma = getattr(pattern, "sigma", None)
        source = source or str(getattr(pattern, "source", "") or "")
    elif isinstance(pattern, tuple) and len(pattern) in (2, 3):
        tt, y = pattern[0], pattern[1]
        sigma = pattern[2] if len(pattern) == 3 else None
    else:
        arr = np.asarray(pattern, dtype=np.float64) if not isinstance(pattern, (dict, set)) else None
        if arr is None or arr.ndim != 2 or arr.shape[1] not in (2, 3):
            raise TypeError("pattern must be a MeasuredPattern, a file path, a (two_theta_deg, intensity[, sigma]) "
                            f"tuple or an (N, 2) / (N, 3) array; got {type(pattern).__name__}")
        tt, y = arr[:, 0], arr[:, 1]
        sigma = arr[:, 2] if arr.shape[1] == 3 else None
    tt = np.asarray(tt, dtype=np.float64).ravel()
    y = np.asarray(y, dtype=np.float64).ravel()
    if tt.shape != y.shape:
        raise ValueError(f"two_theta_deg has {tt.size} points but intensity has {y.size}; they must match")
    if tt.size < 20:
        raise ValueError(f"the pattern has {tt.size} points; a whole-pattern fit needs at least 20")
    if not (np.all(np.isfinite(tt)) and np.all(np.isfinite(y))):
        raise ValueError("the pattern holds NaN or infinite values; remove those points first")
    if not np.all(np.diff(tt) > 0):
        raise ValueError("two_theta_deg must be strictly increasing; sort the points and remove duplicates")
    if tt[0] <= 0 or tt[-1] >= 180:
        raise ValueError(f"two_theta_deg runs from {tt[0]:g} to {tt[-1]:g}; it must lie inside (0, 180) degrees "
                         "(is the first column 2-theta in degrees?)")
    if sigma is None:
        sigma = np.sqrt(np.maximum(y, 1.0))
    else:
        sigma = np.asarray(sigma, dtype=np.float64).ravel()
        if sigma.shape != y.shape or not np.all(np.isfinite(sigma)) or np.any(sigma <= 0):
            raise ValueError("sigma must be finite, > 0 and have one value per point")
    rad = _radiation_from(pattern, radiation)
    if rad is None:
        raise ValueError("the wavelength is unknown: the pattern does not say it; pass radiation='CuKa' "
                         "(or a wavelength in angstrom) to fit_pattern, or --wavelength on the command line")
    return PatternData(tt, y, sigma, rad, source)


def as_structures(structures) -> list[Structure]:
    from ..simulate import _as_structure

    if isinstance(structures, (Structure, str, os.PathLike)) or type(structures).__module__.startswith(
            ("pymatgen", "ase")):
        structures = [structures]
    out = []
    for s in structures:
        if isinstance(s, (str, os.PathLike)):
            out.append(Structure.from_cif(os.fspath(s), label=Path(s).stem))
        else:
            out.append(_as_structure(s))
    if not out:
        raise ValueError("give at least one structure to fit")
    return out


# ---------------------------------------------------------------- the problem
class _Problem:
    """Residuals of the weighted fit for a subset of the nonlinear parameters,
    in scaled coordinates x = (value - start) / step."""

    def __init__(self, model: PatternModel, y: np.ndarray, w_sqrt: np.ndarray, names: Sequence[str]):
        self.model, self.y, self.w = model, y, w_sqrt
        self.names = list(names)
        self.base = model.values()
        self.start = np.array([self.base[n] for n in self.names])
        self.step = np.array([model.params[n].step for n in self.names])
        self.lb = np.array([(model.params[n].lower - self.base[n]) / model.params[n].step for n in self.names])
        self.ub = np.array([(model.params[n].upper - self.base[n]) / model.params[n].step for n in self.names])
        self._memo: tuple[bytes, np.ndarray] | None = None
        self.nfev = 0

    def vals(self, x: np.ndarray) -> dict:
        v = dict(self.base)
        for n, s0, st, xi in zip(self.names, self.start, self.step, x):
            v[n] = s0 + st * xi
        return v

    def residual(self, x: np.ndarray) -> np.ndarray:
        key = x.tobytes()
        if self._memo is not None and self._memo[0] == key:
            return self._memo[1]
        vals = self.vals(x)
        A = self.model.design(vals)
        coef = self.model.solve_linear(A, self.y, self.w)
        r = (self.y - A @ coef) * self.w
        self.nfev += 1
        self._memo = (key, r)
        return r

    def jacobian(self, x: np.ndarray) -> np.ndarray:
        r0 = self.residual(x)
        J = np.empty((r0.size, x.size))
        h = 0.1   # a tenth of a 'typical change': well above the profile-cutoff steps (cutoff_rel 1e-4)
        for k in range(x.size):
            xk = x.copy()
            sign = 1.0 if xk[k] + h <= self.ub[k] else -1.0
            xk[k] += sign * h
            J[:, k] = (self.residual(xk) - r0) / (sign * h)
        self._memo = (x.tobytes(), r0)
        return J

    def solve(self, max_nfev: int) -> np.ndarray:
        if not self.names:
            return np.zeros(0)
        # A start on a bound (X = Y = 0) stalls the trust-region reflective steps: start one step inside.
        mid = 0.5 * (self.lb + self.ub)
        x0 = np.maximum(np.zeros(len(self.names)), np.minimum(self.lb + 1.0, mid))
        x0 = np.minimum(x0, np.maximum(self.ub - 1.0, mid))
        res = least_squares(self.residual, x0, jac=self.jacobian, bounds=(self.lb, self.ub), method="trf",
                            x_scale=1.0, max_nfev=max_nfev, ftol=1e-9, xtol=1e-9, gtol=1e-9)
        vals = self.vals(res.x)
        for n in self.names:
            self.model.params[n].value = float(vals[n])
        return res.x


def _chi2(model: PatternModel, y: np.ndarray, w: np.ndarray, vals: dict | None = None) -> float:
    vals = model.values() if vals is None else vals
    A = model.design(vals)
    coef = model.solve_linear(A, y, w)
    return float(np.sum(((y - A @ coef) * w) ** 2))


def _grid_search(model: PatternModel, y: np.ndarray, w: np.ndarray, cfg: FitConfig) -> None:
    """Isotropic cell factor per phase (and zero shift with the strongest phase) on a grid,
    with every phase temporarily broadened to FWHM ``wb`` so the grid steps cannot miss."""
    tt = model.tt
    fwhm_top = []
    for i in range(len(model.phases)):
        v = model.values()
        hg2 = max(v[f"phase{i}.U"] + v[f"phase{i}.V"] + v[f"phase{i}.W"], 1e-6)
        fwhm_top.append(math.sqrt(hg2) + v[f"phase{i}.X"] + v[f"phase{i}.Y"])
    wb = min(max(0.12, 1.5 * max(fwhm_top)), 0.6)
    theta_top = math.radians(tt[-1] / 2)
    saved = {n: p.value for n, p in model.params.items()}
    for i in range(len(model.phases)):
        pre = f"phase{i}."
        for n, v in (("U", 0.0), ("V", 0.0), ("W", wb * wb), ("X", 0.0), ("Y", 0.0), ("microstrain", 0.0)):
            model.params[pre + n].value = v
        model.params[pre + "size_nm"].active = False
    df = math.radians(wb / 2) / (2 * math.tan(theta_top))
    n_cell = 1 if cfg.cell_search <= 0 or not cfg.refine_lattice else \
        min(2 * int(math.ceil(cfg.cell_search / df)) + 1, 61)
    factors = np.linspace(1 - cfg.cell_search, 1 + cfg.cell_search, n_cell) if n_cell > 1 else np.ones(1)
    n_zero = 1 if cfg.zero_search_deg <= 0 or not cfg.refine_zero else \
        min(2 * int(math.ceil(cfg.zero_search_deg / (wb / 2))) + 1, 15)
    zeros = np.linspace(-cfg.zero_search_deg, cfg.zero_search_deg, n_zero) + saved["zero_shift_deg"] \
        if n_zero > 1 else np.array([saved["zero_shift_deg"]])
    A = model.design(model.values())
    coef = model.solve_linear(A, y, w)
    contrib = [float(np.sum(A[:, i] * coef[i])) for i in range(len(model.phases))]
    order = np.argsort(contrib)[::-1]
    for rank, i in enumerate(order):
        ph = model.phases[i]
        names = [f"phase{i}.metric{k}" for k in range(ph.n_free_metric)]
        base = {n: model.params[n].value for n in names}
        best = (math.inf, None, None)
        zs = zeros if rank == 0 else np.array([model.params["zero_shift_deg"].value])
        for f in factors:
            for z in zs:
                vals = model.values()
                vals["zero_shift_deg"] = float(z)
                for k, n in enumerate(names):
                    p = model.params[n]
                    g0 = ph.metric0[ph.pivots[k]]
                    vals[n] = float(np.clip(base[n] + g0 * (f * f - 1) / p.ref, p.lower, p.upper))
                c = _chi2(model, y, w, vals)
                if c < best[0]:
                    best = (c, {n: vals[n] for n in names}, float(z))
        for n, v in best[1].items():
            model.params[n].value = v
        model.params["zero_shift_deg"].value = best[2]
    for n, p in model.params.items():
        if not (n.endswith(".metric0") or ".metric" in n or n == "zero_shift_deg"):
            p.value = saved[n]
    for i in range(len(model.phases)):
        model.params[f"phase{i}.size_nm"].active = cfg.profile == "size_strain"


def _apply_bounds(model: PatternModel, cfg: FitConfig) -> None:
    for key, bound in cfg.bounds.items():
        try:
            lo, hi = (float(b) for b in bound)
        except (TypeError, ValueError):
            raise ValueError(f"bounds[{key!r}] must be a (low, high) pair of numbers, got {bound!r}") from None
        targets = [key] if key in model.params else [n for n in model.params if n.split(".", 1)[-1] == key
                                                     and n.startswith("phase")]
        if not targets:
            raise ValueError(f"bounds: unknown parameter {key!r}; known: zero_shift_deg, displacement_mm, "
                             f"{', '.join(PROFILE_NAMES)}, B_overall, po_r or phase<i>.<name>")
        for n in targets:
            p = model.params[n]
            p.lower, p.upper = lo, hi
            p.check()


def fit_pattern(pattern, structures, radiation=None, config: FitConfig | None = None, **options):
    """Whole-pattern Rietveld fit of known structures; returns a :class:`FitResult`.

    pattern: MeasuredPattern / path / (two_theta_deg, intensity[, sigma]) / (N, 2|3) array.
    structures: one or more Structures or CIF paths (atomic positions stay fixed).
    radiation: "CuKa", a wavelength in angstrom or a Radiation; default: the pattern's.
    config / options: a :class:`FitConfig`, or its fields as keywords.
    """
    with _one_blas_thread():
        return _fit_pattern(pattern, structures, radiation, config, options)


class _one_blas_thread:
    """Limit BLAS/LAPACK to one thread while fitting: the matrices are small (N x ~30) and a threaded
    SVD of them is ~50x slower than a serial one on a shared machine (threadpoolctl, when installed)."""

    def __enter__(self):
        try:
            from threadpoolctl import threadpool_limits
        except ImportError:
            self._ctx = None
            return self
        self._ctx = threadpool_limits(1)
        self._ctx.__enter__()
        return self

    def __exit__(self, *exc):
        if self._ctx is not None:
            self._ctx.__exit__(*exc)
        return False


def _fit_pattern(pattern, structures, radiation, config, options):
    from .report import build_result

    if config is None:
        config = FitConfig(**options)
    elif options:
        config = FitConfig(**{**asdict(config), **options})
    cfg = config
    cfg.check()
    data = as_pattern_data(pattern, radiation)
    tt, y, sigma = data.two_theta_deg, data.intensity, data.sigma
    if cfg.two_theta_range is not None:
        lo, hi = (float(v) for v in cfg.two_theta_range)
        keep = (tt >= lo) & (tt <= hi)
        if keep.sum() < 20:
            raise ValueError(f"two_theta_range ({lo:g}, {hi:g}) keeps {int(keep.sum())} points of a pattern "
                             f"measured from {tt[0]:g} to {tt[-1]:g} degrees; choose a range inside the data")
        tt, y, sigma = tt[keep], y[keep], sigma[keep]
    structs = as_structures(structures)
    phases = [compute_phase_data(s, data.radiation, float(tt[-1]), cfg.lattice_range, name=s.label or s.formula)
              for s in structs]
    for ph in phases:
        d = 1.0 / np.sqrt(np.einsum("ri,ij,rj->r", ph.hkl, np.linalg.inv(metric_matrix(ph.metric0)), ph.hkl))
        sin_t = data.radiation.primary_wavelength / (2 * d)
        tt_peaks = 2 * np.degrees(np.arcsin(sin_t[sin_t < 1]))
        if not np.any((tt_peaks >= tt[0]) & (tt_peaks <= tt[-1])):
            raise ValueError(f"phase {ph.name} has no reflection between {tt[0]:g} and {tt[-1]:g} degrees 2-theta "
                             f"at lambda = {data.radiation.primary_wavelength:g} A: wrong wavelength, wrong "
                             "structure or a pattern outside the range of this phase")
    start = dict(zero_shift_deg=cfg.zero_shift_deg, displacement_mm=cfg.displacement_mm, U=cfg.U, V=cfg.V,
                 W=cfg.W, X=cfg.X, Y=cfg.Y, size_nm=cfg.size_nm if cfg.profile == "size_strain" else 0.0,
                 microstrain=cfg.microstrain)
    model = PatternModel(phases, tt, data.radiation, background_terms=cfg.background_terms,
                         goniometer_radius_mm=cfg.goniometer_radius_mm,
                         monochromator_two_theta_deg=cfg.monochromator_two_theta_deg,
                         po_direction=cfg.po_direction, profile_start=start, lattice_range=cfg.lattice_range)
    for p in model.params.values():
        p.check()
    _apply_bounds(model, cfg)
    w = 1.0 / sigma
    n_ph = len(phases)

    def names(kind: str) -> list[str]:
        out = []
        if kind in ("pos", "profile", "all"):
            if cfg.refine_zero:
                out.append("zero_shift_deg")
            for i, ph in enumerate(phases):
                if cfg.refine_lattice:
                    out += [f"phase{i}.metric{k}" for k in range(ph.n_free_metric)]
        for i in range(n_ph):
            prof = PROFILE_MODES[cfg.profile]
            if kind == "pos":
                out += [f"phase{i}.{n}" for n in prof if n in ("W", "size_nm")]
            elif kind in ("profile", "all"):
                out += [f"phase{i}.{n}" for n in prof]
            if kind == "all":
                if cfg.preferred_orientation:
                    out.append(f"phase{i}.po_r")
                if cfg.refine_b_overall:
                    out.append(f"phase{i}.B_overall")
        if kind == "all" and cfg.refine_displacement:
            out.append("displacement_mm")
        return out

    stages = []
    chi_start = _chi2(model, y, w)
    stages.append(("linear", chi_start))
    if (cfg.cell_search > 0 and cfg.refine_lattice) or (cfg.zero_search_deg > 0 and cfg.refine_zero):
        _grid_search(model, y, w, cfg)
        stages.append(("grid search", _chi2(model, y, w)))
    nfev = 0
    for kind in ("pos", "profile", "all"):
        if kind == "all" and names("all") == names("profile"):
            continue
        prob = _Problem(model, y, w, names(kind))
        prob.solve(cfg.max_nfev)
        nfev += prob.nfev
        stages.append((kind, _chi2(model, y, w)))
    refined = names("all")
    return build_result(model, data, tt, y, sigma, refined, cfg, stages, nfev)
