"""Results of a whole-pattern fit: refined values with standard uncertainties,
agreement factors, JSON.

Agreement factors (Young, The Rietveld Method, IUCr/OUP 1993, ch. 1), with
w = 1 / sigma^2, N points and P refined parameters (linear ones included):
Rp = sum |yo - yc| / sum yo;  Rwp = sqrt(sum w (yo - yc)^2 / sum w yo^2);
Rexp = sqrt((N - P) / sum w yo^2);  chi2_red = sum w (yo - yc)^2 / (N - P);
GoF = Rwp / Rexp = sqrt(chi2_red).
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field

import numpy as np

from .._fileio import atomic_write_text
from .model import PatternModel

CELL_NAMES = ("a", "b", "c", "alpha", "beta", "gamma", "volume")


@dataclass
class PhaseResult:
    """One refined phase.  Values are (value, standard uncertainty) pairs;
    the uncertainty is None for a parameter that was not refined (and 0 for a
    cell parameter fixed by symmetry)."""

    name: str
    formula: str
    free_lattice_parameters: int
    cell: dict                  # a, b, c (A), alpha, beta, gamma (deg), volume (A^3) -> (value, sigma)
    cell_start: dict            # the structure's own cell
    scale: tuple                # Rietveld scale S multiplying |F_cell|^2 (renderer units)
    weight_fraction: tuple      # Hill-Howard
    parameters: dict            # U, V, W, X, Y, size_nm, microstrain, B_overall, po_r -> (value, sigma|None)
    tick_two_theta_deg: np.ndarray = field(repr=False)
    tick_hkl: np.ndarray = field(repr=False)

    def to_dict(self) -> dict:
        return dict(name=self.name, formula=self.formula, free_lattice_parameters=self.free_lattice_parameters,
                    cell={k: _pair(v) for k, v in self.cell.items()},
                    cell_start={k: float(v) for k, v in self.cell_start.items()},
                    scale=_pair(self.scale), weight_fraction=_pair(self.weight_fraction),
                    parameters={k: _pair(v) for k, v in self.parameters.items()})


def _pair(v):
    value, sigma = v
    return {"value": float(value), "sigma": None if sigma is None else float(sigma)}


@dataclass
class FitResult:
    """Outcome of :func:`xrdflow.fit.fit_pattern`."""

    phases: list
    zero_shift_deg: tuple
    displacement_mm: tuple
    background: np.ndarray          # Chebyshev coefficients (counts) over the fitted range mapped to [-1, 1]
    r_p: float
    r_wp: float
    r_exp: float
    chi2_red: float
    gof: float
    n_points: int
    n_params: int
    radiation: dict
    source: str
    stages: list                    # (stage, chi^2 after it)
    two_theta_deg: np.ndarray = field(repr=False)
    observed: np.ndarray = field(repr=False)
    calculated: np.ndarray = field(repr=False)
    background_curve: np.ndarray = field(repr=False)
    sigma: np.ndarray = field(repr=False)
    phase_curves: np.ndarray = field(repr=False)   # (n_phases, N) scaled contribution of each phase
    parameters: dict = field(default_factory=dict, repr=False)
    config: dict = field(default_factory=dict, repr=False)
    correlation: np.ndarray | None = field(default=None, repr=False)
    correlation_names: list = field(default_factory=list, repr=False)

    @property
    def weight_fractions(self) -> np.ndarray:
        return np.array([p.weight_fraction[0] for p in self.phases])

    def summary(self) -> str:
        lines = [f"fit of {self.source or 'pattern'} ({self.n_points} points, {self.radiation['name']}): "
                 f"Rp {100 * self.r_p:.2f} %  Rwp {100 * self.r_wp:.2f} %  Rexp {100 * self.r_exp:.2f} %  "
                 f"chi2_red {self.chi2_red:.3g}  GoF {self.gof:.3g}  ({self.n_params} parameters)",
                 f"  zero shift {_fmt(self.zero_shift_deg)} deg   displacement {_fmt(self.displacement_mm)} mm"]
        for p in self.phases:
            lines.append(f"  {p.name} ({p.formula}): weight fraction {_fmt(p.weight_fraction)}  "
                         f"scale {_fmt(p.scale)}")
            cell = "  ".join(f"{k} {_fmt(p.cell[k])}" for k in CELL_NAMES if k in ("a", "b", "c", "volume")
                             or abs(p.cell[k][0] - 90) > 1e-9)
            lines.append(f"    cell: {cell}  (start a,b,c = {p.cell_start['a']:.5f}, {p.cell_start['b']:.5f}, "
                         f"{p.cell_start['c']:.5f})")
            prof = "  ".join(f"{k} {_fmt(v)}" for k, v in p.parameters.items() if v[1] is not None)
            lines.append(f"    refined: {prof}")
        return "\n".join(lines)

    def to_dict(self, arrays: bool = False) -> dict:
        out = dict(source=self.source, radiation=self.radiation, n_points=self.n_points, n_params=self.n_params,
                   r_p=self.r_p, r_wp=self.r_wp, r_exp=self.r_exp, chi2_red=self.chi2_red, gof=self.gof,
                   zero_shift_deg=_pair(self.zero_shift_deg), displacement_mm=_pair(self.displacement_mm),
                   background_chebyshev=[float(c) for c in self.background],
                   phases=[p.to_dict() for p in self.phases],
                   parameters={k: dict(v) for k, v in self.parameters.items()},
                   stages=[{"stage": s, "chi2": float(c)} for s, c in self.stages], config=self.config)
        if arrays:
            out["arrays"] = dict(two_theta_deg=self.two_theta_deg.tolist(), observed=self.observed.tolist(),
                                 calculated=self.calculated.tolist(), background=self.background_curve.tolist(),
                                 sigma=self.sigma.tolist(), phases=self.phase_curves.tolist())
        return out

    def save_json(self, path, arrays: bool = False) -> None:
        """Write :meth:`to_dict` as JSON, atomically."""
        atomic_write_text(path, json.dumps(self.to_dict(arrays=arrays), indent=2, default=_json_default) + "\n")

    def plot(self, path=None, **kw):
        """The Rietveld picture (see :func:`xrdflow.fit.plot.plot_fit`)."""
        from .plot import plot_fit

        return plot_fit(self, path, **kw)


def _json_default(o):
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, tuple):
        return list(o)
    raise TypeError(f"not JSON serializable: {type(o).__name__}")


def _fmt(v) -> str:
    value, sigma = v
    if sigma is None or not math.isfinite(sigma) or sigma <= 0:
        return f"{value:.6g}" + ("" if sigma is None else " (fixed)" if sigma == 0 else "")
    digits = max(0, -int(math.floor(math.log10(sigma))) + 1)
    return f"{value:.{digits}f}({sigma:.{digits}f})" if digits < 10 else f"{value:.3g}+-{sigma:.2g}"


#: old name, kept as a re-export of :func:`xrdflow._fileio.atomic_write_text`
write_text_atomic = atomic_write_text


# ---------------------------------------------------------------- assembly
def _residual_fixed_linear(model: PatternModel, vals: dict, coef: np.ndarray, y, w) -> np.ndarray:
    return (y - model.design(vals) @ coef) * w


def build_result(model: PatternModel, data, tt, y, sigma, refined: list, cfg, stages, nfev) -> FitResult:
    from dataclasses import asdict

    w = 1.0 / sigma
    vals = model.values()
    A = model.design(vals)
    coef = model.solve_linear(A, y, w)
    yc = A @ coef
    r = (y - yc) * w
    n_ph = len(model.phases)
    lin_idx = [j for j in range(A.shape[1]) if j >= n_ph or coef[j] > 0]
    # Jacobian of the weighted residuals: nonlinear parameters by central differences
    # (linear coefficients held), linear ones analytically.
    cols = []
    for n in refined:
        p = model.params[n]
        h = 0.1 * p.step
        vp, vm = dict(vals), dict(vals)
        vp[n] = min(vals[n] + h, p.upper)
        vm[n] = max(vals[n] - h, p.lower)
        cols.append((_residual_fixed_linear(model, vp, coef, y, w) - _residual_fixed_linear(model, vm, coef, y, w))
                    / (vp[n] - vm[n]))
    for j in lin_idx:
        cols.append(-A[:, j] * w)
    J = np.column_stack(cols)
    N, P = len(y), J.shape[1]
    chi2 = float(r @ r)
    dof = max(N - P, 1)
    chi2_red = chi2 / dof
    JTJ = J.T @ J
    # Scale columns for a well-conditioned inverse.
    dscale = np.sqrt(np.maximum(np.diag(JTJ), 1e-300))
    cov = np.linalg.pinv(JTJ / np.outer(dscale, dscale), rcond=1e-12) / np.outer(dscale, dscale) * chi2_red
    sig = np.sqrt(np.maximum(np.diag(cov), 0.0))
    n_nl = len(refined)
    sig_of = {n: float(sig[k]) for k, n in enumerate(refined)}
    corr = cov / np.outer(np.where(sig > 0, sig, 1), np.where(sig > 0, sig, 1))
    corr_names = list(refined) + [f"phase{j}.scale" if j < n_ph else f"background{j - n_ph}" for j in lin_idx]

    # Full parameter vector for derived quantities: nonlinear (phys) then linear coefficients.
    def derived(fn, x):
        """fn(vals, coef) -> array; gradient by central differences in the refined parameters."""
        f0 = np.atleast_1d(fn(vals, coef))
        G = np.zeros((f0.size, P))
        for k in range(P):
            v2p, v2m, cp, cm = dict(vals), dict(vals), coef.copy(), coef.copy()
            if k < n_nl:
                n = refined[k]
                h = 0.1 * model.params[n].step
                v2p[n] += h
                v2m[n] -= h
            else:
                j = lin_idx[k - n_nl]
                h = 1e-6 * max(abs(coef[j]), 1e-12)
                cp[j] += h
                cm[j] -= h
            G[:, k] = (np.atleast_1d(fn(v2p, cp)) - np.atleast_1d(fn(v2m, cm))) / (2 * h)
        s = np.sqrt(np.maximum(np.einsum("ik,kl,il->i", G, cov, G), 0.0))
        return f0, s

    phases = []
    bkg_curve = model.chebyshev @ coef[n_ph:]
    curves = np.array([A[:, i] * coef[i] for i in range(n_ph)]) if n_ph else np.zeros((0, N))
    wf, wf_sig = derived(lambda v, c: model.weight_fractions(c, v), None)
    for i, ph in enumerate(model.phases):
        cell, cell_sig = derived(lambda v, c, i=i: model.cell(i, v), None)
        cell_sig = np.where(np.abs(cell_sig) < 1e-12, 0.0, cell_sig)
        L = ph.structure.lattice
        from .model import cell_from_metric

        start = cell_from_metric(L @ L.T)
        pre = f"phase{i}."
        params = {}
        for name in ("U", "V", "W", "X", "Y", "size_nm", "microstrain", "B_overall", "po_r"):
            full = pre + name
            if name == "size_nm" and not model.size_active(i):
                continue
            params[name] = (vals[full], sig_of.get(full))
        S = coef[i] * model.norm[i]
        S_sig = float(sig[n_nl + lin_idx.index(i)] * model.norm[i]) if i in lin_idx else None
        tick = model.peak_positions(i, vals)
        inside = np.isfinite(tick) & (tick >= tt[0]) & (tick <= tt[-1])
        order = np.argsort(tick[inside])
        phases.append(PhaseResult(
            name=ph.name, formula=ph.structure.formula, free_lattice_parameters=ph.n_free_metric,
            cell={k: (float(cell[j]), float(cell_sig[j])) for j, k in enumerate(CELL_NAMES)},
            cell_start={k: float(start[j]) for j, k in enumerate(CELL_NAMES)},
            scale=(float(S), S_sig), weight_fraction=(float(wf[i]), float(wf_sig[i])),
            parameters=params, tick_two_theta_deg=tick[inside][order], tick_hkl=ph.hkl_int[inside][order]))
    parameters = {n: dict(value=float(p.value), sigma=sig_of.get(n), refined=n in sig_of, unit=p.unit,
                          lower=float(p.lower), upper=float(p.upper)) for n, p in model.params.items()}
    sum_wy2 = float(np.sum((w * y) ** 2))
    r_wp = math.sqrt(chi2 / sum_wy2)
    r_exp = math.sqrt(dof / sum_wy2)
    rad = data.radiation
    config = asdict(cfg)
    config["po_direction"] = list(config["po_direction"])
    return FitResult(
        phases=phases, zero_shift_deg=(vals["zero_shift_deg"], sig_of.get("zero_shift_deg")),
        displacement_mm=(vals["displacement_mm"], sig_of.get("displacement_mm")),
        background=coef[n_ph:].copy(), r_p=float(np.sum(np.abs(y - yc)) / np.sum(np.abs(y))), r_wp=r_wp,
        r_exp=r_exp, chi2_red=chi2_red, gof=math.sqrt(chi2_red), n_points=N, n_params=P,
        radiation=dict(name=rad.name, wavelengths=list(rad.wavelengths), weights=list(rad.weights)),
        source=data.source, stages=[(s, c) for s, c in stages] + [("function evaluations", nfev)],
        two_theta_deg=tt, observed=y, calculated=yc, background_curve=bkg_curve, sigma=sigma, phase_curves=curves,
        parameters=parameters, config=config, correlation=corr, correlation_names=corr_names)
