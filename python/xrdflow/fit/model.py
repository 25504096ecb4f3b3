"""Calculated powder pattern of a phase mixture for a vector of refinable parameters.

A :class:`PatternModel` holds, for each phase, the symmetry-unique
reflections computed once by the engine (hkl, |F|^2, multiplicity, Laue
group), and turns a set of parameter values into a calculated pattern on the
measured 2-theta points:

* lattice: the direct metric tensor G (fractional basis, G = L L^T) is kept
  invariant under the phase's Laue group, so only the free components of its
  crystal system are refined (cubic: a; tetragonal / hexagonal: a, c; ...),
  whatever the setting of the cell.  d = 1 / sqrt(h^T G* h), G* = G^-1;
* sample displacement s: every reflection is moved by
  -2 s cos(theta) / R (radians; R = goniometer radius), implemented by giving
  each reflection the effective d whose Bragg angle at the primary
  wavelength is the shifted one (the K-alpha2 partner follows from that d,
  the difference in cos(theta) between the two lines is neglected);
* zero shift: the renderer's ``zero_shift_deg`` (added to every position);
* profile: TCH pseudo-Voigt per phase, Caglioti U, V, W (Gaussian),
  X, Y (Lorentzian), Scherrer size and microstrain (see ``profile.hpp``);
* March-Dollase preferred orientation, P(alpha) = (r^2 cos^2 alpha +
  sin^2 alpha / r)^(-3/2) (Dollase, J. Appl. Cryst. 19, 267, 1986), averaged
  over the symmetry-equivalent reflections of each hkl orbit via the Laue
  rotations (the function is normalized over the sphere, so the average
  intensity is conserved), folded into |F|^2;
* overall Debye-Waller: |F|^2 exp(-2 B s^2), s = 1 / (2 d);
* scale factors and a Chebyshev background, which enter linearly and are
  solved by linear least squares inside each evaluation (variable projection,
  Golub & Pereyra, SIAM J. Numer. Anal. 10, 413, 1973).

Each phase is rendered by ``xrdflow._core.render_patterns`` with
normalization "none" (M |F|^2 LP per degree), so the Rietveld scale S of a
phase multiplies |F_cell|^2 directly and weight fractions follow from
Hill & Howard (J. Appl. Cryst. 20, 467, 1987): W_i = S_i Z_i M_i V_i / sum_j S_j Z_j M_j V_j,
with Z M the cell mass.
"""
from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from .. import _core
from ..radiation import Radiation
from ..simulate import DEFAULT_CAGLIOTI, Simulator, instrument_dict
from ..structure import Structure

RAD = math.pi / 180.0
#: (i, j) entries of the 6 independent components of a symmetric 3x3 matrix.
METRIC_INDEX = ((0, 0), (1, 1), (2, 2), (0, 1), (0, 2), (1, 2))
PROFILE_NAMES = ("U", "V", "W", "X", "Y", "size_nm", "microstrain")


# ---------------------------------------------------------------- parameters
@dataclass
class Parameter:
    """One nonlinear parameter: value in physical units, bounds, and the size
    of a 'typical small change' used to scale the optimizer's coordinates."""

    name: str
    value: float
    lower: float
    upper: float
    step: float
    refine: bool = False
    unit: str = ""
    ref: float = 1.0        # metric components: the G value a relative change refers to
    active: bool = True     # size_nm: whether Scherrer broadening is applied at all

    def check(self) -> None:
        if not (math.isfinite(self.lower) or self.lower == -math.inf) or not (
                math.isfinite(self.upper) or self.upper == math.inf):
            raise ValueError(f"parameter {self.name}: bounds must be numbers, got ({self.lower}, {self.upper})")
        if not self.lower < self.upper:
            raise ValueError(f"parameter {self.name}: impossible bounds, lower {self.lower:g} is not below "
                             f"upper {self.upper:g}; widen them")
        if not self.lower <= self.value <= self.upper:
            raise ValueError(f"parameter {self.name}: start value {self.value:g} lies outside its bounds "
                             f"[{self.lower:g}, {self.upper:g}]; change the start value or the bounds")


def metric_basis(rotations: np.ndarray, tol: float = 1e-6) -> tuple[np.ndarray, np.ndarray]:
    """Free components of a metric tensor invariant under the given rotations.

    Returns (N, pivots): N is (k, 6), its rows span the symmetric matrices G
    with R^T G R = G for every R (as 6-vectors over METRIC_INDEX), in reduced
    row-echelon form with pivot columns ``pivots``; so every invariant G is
    sum_j G[pivots[j]] N[j].  k = 1 cubic, 2 tetragonal/hexagonal/trigonal,
    3 orthorhombic, 4 monoclinic, 6 triclinic.
    """
    rots = np.asarray(rotations, dtype=np.float64)
    P = np.zeros((6, 6))
    for k, (i, j) in enumerate(METRIC_INDEX):
        E = np.zeros((3, 3))
        E[i, j] = E[j, i] = 1.0
        A = np.einsum("lai,ab,lbj->ij", rots, E, rots) / len(rots)   # mean of R^T E R
        P[k] = [A[a, b] for a, b in METRIC_INDEX]
    # Reduced row-echelon form of P (its row space is the invariant subspace).
    M = P.copy()
    pivots = []
    row = 0
    for col in range(6):
        if row >= 6:
            break
        r = row + int(np.argmax(np.abs(M[row:, col])))
        if abs(M[r, col]) < tol:
            continue
        M[[row, r]] = M[[r, row]]
        M[row] /= M[row, col]
        for other in range(6):
            if other != row:
                M[other] -= M[other, col] * M[row]
        pivots.append(col)
        row += 1
    N = M[:row]
    N[np.abs(N) < 1e-12] = 0.0
    return N, np.array(pivots, dtype=np.int64)


def metric_vector(G: np.ndarray) -> np.ndarray:
    return np.array([G[i, j] for i, j in METRIC_INDEX])


def metric_matrix(v: np.ndarray) -> np.ndarray:
    G = np.empty((3, 3))
    for k, (i, j) in enumerate(METRIC_INDEX):
        G[i, j] = G[j, i] = v[k]
    return G


def cell_from_metric(G: np.ndarray) -> np.ndarray:
    """(a, b, c, alpha, beta, gamma, V) in angstrom, degrees, angstrom^3."""
    a, b, c = np.sqrt(np.diag(G))
    alpha = math.degrees(math.acos(np.clip(G[1, 2] / (b * c), -1, 1)))
    beta = math.degrees(math.acos(np.clip(G[0, 2] / (a * c), -1, 1)))
    gamma = math.degrees(math.acos(np.clip(G[0, 1] / (a * b), -1, 1)))
    return np.array([a, b, c, alpha, beta, gamma, math.sqrt(max(np.linalg.det(G), 0.0))])


CRYSTAL_SYSTEM_BY_FREE = {1: "cubic", 2: "tetragonal/hexagonal", 3: "orthorhombic", 4: "monoclinic",
                          6: "triclinic"}


# ---------------------------------------------------------------- one phase
@dataclass
class PhaseData:
    """What the engine computed once for a phase (everything the model needs)."""

    name: str
    structure: Structure
    hkl: np.ndarray            # (R, 3) float64
    hkl_int: np.ndarray        # (R, 3) int32
    F2: np.ndarray             # (R,)
    multiplicity: np.ndarray   # (R,) int32
    rotations: np.ndarray      # (L, 3, 3) int32, Laue group on fractional coordinates
    equivalents: np.ndarray    # (R, L, 3) float64, h R for every Laue rotation
    metric0: np.ndarray        # (6,) symmetrized start metric
    basis: np.ndarray          # (k, 6)
    pivots: np.ndarray         # (k,)
    cell_mass: float           # daltons
    offsets: np.ndarray = field(default=None)  # (2,) int64 for the renderer

    @property
    def n_free_metric(self) -> int:
        return len(self.pivots)


def compute_phase_data(structure: Structure, radiation: Radiation, two_theta_max_deg: float,
                       lattice_range: float, name: str | None = None) -> PhaseData:
    """Reflections of one structure down to the d reached at ``two_theta_max_deg``
    for a cell up to ``lattice_range`` larger (plus profile tails)."""
    s_top = math.sin(math.radians(min(two_theta_max_deg + 3.0, 179.0)) / 2) * (1 + 2 * lattice_range)
    top = 2 * math.degrees(math.asin(min(s_top, 0.9998)))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)   # the 64-point grid only sets d_min
        sim = Simulator(radiation=radiation, two_theta=(max(1.0, min(5.0, top / 2)), top), n_points=64,
                        U=0.0, V=0.0, W=1e-4, X=0.0, Y=0.0)
    refl = sim.reflections([structure], threads=1)
    rot = np.asarray(refl.laue_rotations, dtype=np.int32)
    hkl_i = np.asarray(refl.hkl, dtype=np.int32)
    hkl = hkl_i.astype(np.float64)
    equiv = np.einsum("ri,lij->rlj", hkl, rot.astype(np.float64))
    L = np.asarray(refl.lattices[0], dtype=np.float64)
    basis, pivots = metric_basis(rot)
    v = metric_vector(L @ L.T)
    v0 = v[pivots] @ basis          # projection onto the invariant subspace via its free components
    return PhaseData(name=name or structure.label or structure.formula, structure=structure, hkl=hkl,
                     hkl_int=hkl_i, F2=np.asarray(refl.F2, dtype=np.float64),
                     multiplicity=np.ascontiguousarray(refl.multiplicity, dtype=np.int32), rotations=rot,
                     equivalents=equiv, metric0=v0, basis=basis, pivots=pivots,
                     cell_mass=float(refl.cell_mass[0]), offsets=np.array([0, len(hkl)], dtype=np.int64))


# ---------------------------------------------------------------- the model
class PatternModel:
    """Calculated pattern = sum_i S_i y_i(p) + Chebyshev background on measured points.

    ``phases``: list of :class:`PhaseData`; ``two_theta_deg``: measured points
    (strictly increasing); ``radiation``: emission lines.  Nonlinear
    parameters live in :attr:`params` (name -> :class:`Parameter`); the
    linear ones (scales, background coefficients) are returned by
    :meth:`solve_linear`.
    """

    def __init__(self, phases: Sequence[PhaseData], two_theta_deg: np.ndarray, radiation: Radiation, *,
                 background_terms: int = 8, goniometer_radius_mm: float = 240.0,
                 monochromator_two_theta_deg: float = 0.0, po_direction=(0, 0, 1), cutoff_rel: float = 1e-4,
                 profile_start: dict | None = None, lattice_range: float = 0.03):
        self.phases = list(phases)
        self.tt = np.ascontiguousarray(two_theta_deg, dtype=np.float64)
        self.radiation = radiation
        self.lam = radiation.primary_wavelength
        self.R_mm = float(goniometer_radius_mm)
        self.n_bkg = int(background_terms)
        x = (2 * self.tt - self.tt[0] - self.tt[-1]) / (self.tt[-1] - self.tt[0])
        self.chebyshev = np.polynomial.chebyshev.chebvander(x, max(self.n_bkg - 1, 0))[:, :self.n_bkg]
        self.monochromator_two_theta_deg = float(monochromator_two_theta_deg)
        self.cutoff_rel = float(cutoff_rel)
        self.po_direction = np.asarray(po_direction, dtype=np.float64)
        if self.po_direction.shape != (3,) or not np.any(self.po_direction):
            raise ValueError(f"po_direction must be three Miller indices, not all zero, got {po_direction!r}")
        self.params: dict[str, Parameter] = {}
        self._build_params(profile_start or {}, lattice_range)
        # Normalizing constants so that scale factors are O(1) numbers for the optimizer.
        self.norm = np.ones(len(self.phases))
        for i in range(len(self.phases)):
            y = self.phase_pattern(i, self.values())
            top = float(np.max(y)) if y.size else 0.0
            self.norm[i] = 1.0 / top if top > 0 else 1.0

    # ------------------------------------------------------------ parameters
    def _add(self, *args, **kw) -> None:
        p = Parameter(*args, **kw)
        self.params[p.name] = p

    def _build_params(self, start: dict, lattice_range: float) -> None:
        self._add("zero_shift_deg", float(start.get("zero_shift_deg", 0.0)), -1.0, 1.0, 0.005, unit="deg")
        self._add("displacement_mm", float(start.get("displacement_mm", 0.0)), -2.0, 2.0, 0.01, unit="mm")
        U, V, W = DEFAULT_CAGLIOTI
        defaults = dict(U=U, V=V, W=W, X=0.0, Y=0.0, size_nm=0.0, microstrain=0.0)
        for i, ph in enumerate(self.phases):
            pre = f"phase{i}."
            v0 = ph.metric0
            for k, piv in enumerate(ph.pivots):
                a, b = METRIC_INDEX[piv]
                ref = math.sqrt(v0[METRIC_INDEX.index((a, a))] * v0[METRIC_INDEX.index((b, b))])
                # relative change of the free metric component, in units of sqrt(G_aa G_bb)
                self._add(pre + f"metric{k}", 0.0, -2 * lattice_range, 2 * lattice_range, 1e-4, ref=ref)
            prof = {n: float(start.get(n, defaults[n])) for n in PROFILE_NAMES}
            self._add(pre + "U", prof["U"], -0.1, 2.0, 0.002, unit="deg^2")
            self._add(pre + "V", prof["V"], -1.0, 1.0, 0.002, unit="deg^2")
            self._add(pre + "W", prof["W"], 0.0, 1.0, 0.001, unit="deg^2")
            self._add(pre + "X", prof["X"], 0.0, 1.0, 0.002, unit="deg")
            self._add(pre + "Y", prof["Y"], 0.0, 1.0, 0.002, unit="deg")
            self._add(pre + "size_nm", prof["size_nm"] if prof["size_nm"] > 0 else 200.0, 1.0, 10000.0, 5.0,
                      unit="nm", active=prof["size_nm"] > 0)
            self._add(pre + "microstrain", prof["microstrain"], 0.0, 0.05, 1e-4)
            self._add(pre + "B_overall", float(start.get("B_overall", 0.0)), -5.0, 10.0, 0.05, unit="A^2")
            self._add(pre + "po_r", float(start.get("po_r", 1.0)), 0.2, 5.0, 0.01)

    def values(self) -> dict[str, float]:
        return {n: p.value for n, p in self.params.items()}

    def metric(self, i: int, vals: dict) -> np.ndarray:
        ph = self.phases[i]
        free = ph.metric0[ph.pivots].copy()
        for k in range(len(ph.pivots)):
            p = self.params[f"phase{i}.metric{k}"]
            free[k] += vals[p.name] * p.ref
        return metric_matrix(free @ ph.basis)

    def cell(self, i: int, vals: dict) -> np.ndarray:
        return cell_from_metric(self.metric(i, vals))

    def size_active(self, i: int) -> bool:
        return self.params[f"phase{i}.size_nm"].active

    # ------------------------------------------------------------ evaluation
    def reflection_d(self, i: int, vals: dict, metric: np.ndarray | None = None) -> np.ndarray:
        ph = self.phases[i]
        Gs = np.linalg.inv(self.metric(i, vals) if metric is None else metric)
        q2 = np.einsum("ri,ij,rj->r", ph.hkl, Gs, ph.hkl)
        return 1.0 / np.sqrt(q2)

    def effective_d(self, i: int, vals: dict, metric: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(true d, effective d carrying the displacement shift) of phase i's reflections."""
        d = self.reflection_d(i, vals, metric)
        s = vals["displacement_mm"]
        if s == 0.0:
            return d, d
        sin_t = np.minimum(self.lam / (2 * d), 1.0)
        theta = np.arcsin(sin_t)
        shifted = theta - s * np.cos(theta) / self.R_mm   # half of the 2-theta shift -2 s cos(theta) / R
        d_eff = np.where((sin_t < 1.0) & (shifted > 1e-6), self.lam / (2 * np.sin(np.clip(shifted, 1e-6, None))),
                         d)
        return d, d_eff

    def texture(self, i: int, vals: dict, metric: np.ndarray | None = None) -> np.ndarray:
        """March-Dollase factor of each reflection, averaged over its equivalents."""
        r = vals[f"phase{i}.po_r"]
        ph = self.phases[i]
        if r == 1.0:
            return np.ones(len(ph.hkl))
        Gs = np.linalg.inv(self.metric(i, vals) if metric is None else metric)
        p = self.po_direction
        hp = ph.equivalents @ (Gs @ p)                              # (R, L)
        hh = np.einsum("ri,ij,rj->r", ph.hkl, Gs, ph.hkl)           # |h|^2 same for all equivalents
        pp = p @ Gs @ p
        cos2 = np.clip(hp ** 2 / (hh[:, None] * pp), 0.0, 1.0)
        P = (r * r * cos2 + (1.0 - cos2) / r) ** -1.5
        return P.mean(axis=1)

    def phase_pattern(self, i: int, vals: dict) -> np.ndarray:
        """Unscaled pattern of phase i (float64, M |F|^2 LP per degree times norm)."""
        ph = self.phases[i]
        G = self.metric(i, vals)
        d, d_eff = self.effective_d(i, vals, G)
        F2 = ph.F2 * self.texture(i, vals, G)
        B = vals[f"phase{i}.B_overall"]
        if B != 0.0:
            F2 = F2 * np.exp(-2.0 * B / (4.0 * d * d))
        pre = f"phase{i}."
        inst = instrument_dict(self.radiation, self.tt, U=vals[pre + "U"], V=vals[pre + "V"], W=vals[pre + "W"],
                               X=vals[pre + "X"], Y=vals[pre + "Y"],
                               crystallite_size_nm=vals[pre + "size_nm"] if self.size_active(i) else None,
                               microstrain=vals[pre + "microstrain"], zero_shift_deg=vals["zero_shift_deg"],
                               monochromator_two_theta_deg=self.monochromator_two_theta_deg,
                               normalization="none", cutoff_rel=self.cutoff_rel)
        y = _core.render_patterns(ph.offsets, np.ascontiguousarray(d_eff), np.ascontiguousarray(F2),
                                  ph.multiplicity, inst, threads=1)[0]
        out = y.astype(np.float64)
        if hasattr(self, "norm"):
            out *= self.norm[i]
        return out

    def design(self, vals: dict) -> np.ndarray:
        """(N, n_phases + n_bkg) columns: unscaled phase patterns, then Chebyshev terms."""
        cols = [self.phase_pattern(i, vals) for i in range(len(self.phases))]
        return np.column_stack(cols + [self.chebyshev]) if cols else self.chebyshev

    def solve_linear(self, A: np.ndarray, y: np.ndarray, w_sqrt: np.ndarray) -> np.ndarray:
        """Weighted linear least squares for scales (>= 0) and background coefficients.

        Normal equations on diagonally scaled columns (P <= ~50 columns, N points):
        O(N P^2) and no SVD of the N x P matrix; a scale that comes out negative
        is removed and the rest solved again (active set).
        """
        n_ph = len(self.phases)
        Aw = A * w_sqrt[:, None]
        yw = y * w_sqrt
        M = Aw.T @ Aw
        b = Aw.T @ yw
        active = [j for j in range(A.shape[1]) if M[j, j] > 0]
        coef = np.zeros(A.shape[1])
        for _ in range(n_ph + 1):
            Ma = M[np.ix_(active, active)]
            d = np.sqrt(np.diag(Ma))
            try:
                sol = np.linalg.solve(Ma / np.outer(d, d), b[active] / d) / d
            except np.linalg.LinAlgError:
                sol = np.linalg.lstsq(Aw[:, active], yw, rcond=None)[0]
            coef[:] = 0.0
            coef[active] = sol
            neg = [j for j in active if j < n_ph and coef[j] < 0]
            if not neg:
                break
            active.remove(min(neg, key=lambda j: coef[j]))
        coef[:n_ph] = np.maximum(coef[:n_ph], 0.0)
        return coef

    def rietveld_scales(self, coef: np.ndarray) -> np.ndarray:
        """Scale factors S_i multiplying |F_cell|^2 (renderer units)."""
        return coef[:len(self.phases)] * self.norm

    def weight_fractions(self, coef: np.ndarray, vals: dict) -> np.ndarray:
        S = self.rietveld_scales(coef)
        mv = np.array([ph.cell_mass * self.cell(i, vals)[6] for i, ph in enumerate(self.phases)])
        w = S * mv
        total = w.sum()
        return w / total if total > 0 else np.full(len(w), np.nan)

    def peak_positions(self, i: int, vals: dict) -> np.ndarray:
        """2-theta (deg) of phase i's reflections at the primary wavelength, all corrections applied."""
        _, d_eff = self.effective_d(i, vals)
        s = self.lam / (2 * d_eff)
        tt = np.where(s < 1, 2 * np.degrees(np.arcsin(np.minimum(s, 1))), np.nan)
        return tt + vals["zero_shift_deg"]
