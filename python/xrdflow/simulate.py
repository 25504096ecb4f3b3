"""Powder patterns from structures: the :class:`Simulator`.

The work is split as in DESIGN.md:

1. *reflections* (expensive, once per structure): in C++, the space-group
   operations (or spglib's, with ``symmetry="spglib"``), the symmetry-unique
   hkl up to d_min, their multiplicities and Friedel-averaged |F|^2
   (:meth:`Simulator.reflections`, a :class:`~xrdflow.Reflections` cache);
2. *render* (cheap, every sample): Bragg angles for each emission line,
   Lorentz-polarization, TCH pseudo-Voigt profiles on the output grid, with
   optional physical augmentation (:meth:`Simulator.render`).

Both stages take whole batches as flat (CSR) arrays and run in C++ threads
with the GIL released; :meth:`Simulator.patterns` runs them fused.
"""
from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Iterable, Sequence

import numpy as np

from . import _core
from .augment import Augmentation, split_parameters
from .radiation import Radiation, parse_radiation
from .reflections import Reflections
from .scattering import anomalous_dispersion, atomic_weights, it92_coefficients, neutron_scattering_length
from .structure import Structure
from .symmetry import SymmetryOperations, symmetry_operations

NORMALIZATIONS = {"none": 0, "max": 1, "area": 2}

# Default instrument profile: Caglioti U, V, W (deg^2) of phase 2 of the FullProf
# refinement of a laboratory Cu K-alpha pattern of TaCr2O6 shipped in
# shared/data/experimental (Rietveld_refinment_TaCr2O6.pcr); FWHM ~0.05-0.07 deg.
DEFAULT_CAGLIOTI = (0.002915, -0.006758, 0.006255)


@dataclass(frozen=True)
class PeakTable:
    """Diffraction lines of one structure at the primary wavelength.

    ``two_theta`` is the Bragg angle in degrees (no zero shift applied), ``d``
    in angstrom, ``F2`` the Friedel-averaged |F|^2 without LP or multiplicity
    (electrons^2 for X-rays, fm^2 for neutrons), ``intensity`` = M |F|^2 LP.
    Rows are sorted by 2-theta.
    """

    hkl: np.ndarray
    d: np.ndarray
    two_theta: np.ndarray
    F2: np.ndarray
    multiplicity: np.ndarray
    intensity: np.ndarray
    wavelength: float

    def __len__(self) -> int:
        return len(self.d)

    def relative_intensity(self) -> np.ndarray:
        """Intensities scaled so that the strongest line is 100."""
        top = self.intensity.max() if len(self) else 0.0
        return self.intensity * (100.0 / top) if top > 0 else self.intensity.copy()

    def to_text(self, limit: int | None = None) -> str:
        """A fixed-width table (h k l, d, 2-theta, I/Imax, M), strongest ``limit`` lines if given."""
        rows = np.arange(len(self))
        if limit is not None and limit < len(self):
            rows = np.sort(np.argsort(-self.intensity, kind="stable")[:limit])
        rel = self.relative_intensity()
        lines = [f"{'h':>4}{'k':>4}{'l':>4}{'d (A)':>11}{'2theta':>10}{'I/Imax':>9}{'M':>5}"]
        for i in rows:
            h, k, l = self.hkl[i]
            lines.append(f"{h:4d}{k:4d}{l:4d}{self.d[i]:11.5f}{self.two_theta[i]:10.4f}{rel[i]:9.2f}"
                         f"{self.multiplicity[i]:5d}")
        return "\n".join(lines)


# Identity alone: Laue group -1, every hkl enumerated (symmetry="none").
_IDENTITY = SymmetryOperations(np.eye(3, dtype=np.int32)[None].copy(), np.zeros((1, 3)))


def _cell_masses(structures: Sequence[Structure]) -> np.ndarray:
    """Occupancy-weighted mass of each unit cell in daltons (atomic weights from gemmi)."""
    if not structures:
        return np.zeros(0)
    counts = np.fromiter((len(s) for s in structures), np.int64, len(structures))
    numbers = np.concatenate([s.numbers for s in structures])
    occupancy = np.concatenate([s.occupancy for s in structures])
    owner = np.repeat(np.arange(len(structures)), counts)
    return np.bincount(owner, weights=atomic_weights()[numbers] * occupancy, minlength=len(structures))


def _as_structure(obj) -> Structure:
    if isinstance(obj, Structure):
        return obj
    module = type(obj).__module__
    if module.startswith("pymatgen"):
        return Structure.from_pymatgen(obj)
    if module.startswith("ase"):
        return Structure.from_ase(obj)
    raise TypeError(f"expected an xrdflow.Structure (or a pymatgen Structure / ASE Atoms), got {type(obj).__name__}; "
                    "build one with Structure.from_cif, from_pymatgen, from_ase or from_arrays")


def _finite(name: str, value) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise TypeError(f"{name} must be a number, got {value!r}") from None
    if not math.isfinite(v):
        raise ValueError(f"{name} must be finite, got {value!r}")
    return v


def _indices(indices, n: int) -> np.ndarray:
    """Validated int64 structure indices into a cache of n structures (all when None)."""
    if indices is None:
        return np.arange(n, dtype=np.int64)
    idx = np.asarray(indices)
    if idx.ndim != 1 or not (idx.dtype.kind in "iu" or idx.size == 0):
        raise TypeError(f"indices must be a 1-D sequence of integers, got {idx.dtype} with shape {idx.shape}")
    if idx.size and (idx.min() < 0 or idx.max() >= n):
        raise IndexError(f"indices must lie in [0, {n}) for a cache of {n} structures")
    return np.ascontiguousarray(idx, dtype=np.int64)


def _unsigned(name: str, value, bits: int) -> int:
    # The random stream's counter holds 64 bits of seed and 32 of epoch.
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or not 0 <= value < 2 ** bits:
        raise ValueError(f"{name} must be an integer in [0, 2^{bits}), got {value!r}")
    return int(value)


def _threads(threads) -> int:
    if threads is None:
        return 0
    if isinstance(threads, bool) or not isinstance(threads, (int, np.integer)) or threads < 1:
        raise ValueError(f"threads must be a positive integer or None (all cores), got {threads!r}")
    return int(threads)


def instrument_dict(radiation: "str | float | Radiation", grid_two_theta_deg, axis=None, *, U: float, V: float,
                    W: float, X: float = 0.0, Y: float = 0.0, crystallite_size_nm: float | None = None,
                    size_angstrom: float | None = None, scherrer_k: float = 0.9, microstrain: float = 0.0,
                    zero_shift_deg: float = 0.0, monochromator_two_theta_deg: float = 0.0, neutron: bool = False,
                    normalization: str = "max", cutoff_rel: float = 1e-3) -> dict:
    """The instrument dict of ``_core.render_patterns`` / ``render_augmented`` /
    ``simulate_patterns`` (keys as read in bindings/convert.hpp): everything the
    renderer needs besides the reflections.

    ``grid_two_theta_deg``: the 2-theta points (degrees, increasing; may be
    uneven, e.g. measured points) where the pattern is evaluated; ``axis``: the
    output axis the "area" normalization integrates over (default: the 2-theta
    points).  Give the Scherrer size either as ``crystallite_size_nm`` or as
    ``size_angstrom`` (None / 0 = no size broadening).  The monochromator enters
    the LP factor as cos^2(2 theta_M).  The numbers are passed as given: range
    checks are the caller's (:class:`Simulator` does them once at construction).
    """
    rad = radiation if isinstance(radiation, Radiation) else parse_radiation(radiation)
    if crystallite_size_nm is not None and size_angstrom is not None:
        raise ValueError("give the crystallite size as crystallite_size_nm or as size_angstrom, not both")
    if size_angstrom is None:
        size_angstrom = 0.0 if crystallite_size_nm is None else 10.0 * crystallite_size_nm
    if normalization not in NORMALIZATIONS:
        raise ValueError(f"normalization must be one of {sorted(NORMALIZATIONS)}, got {normalization!r}")
    grid = np.ascontiguousarray(grid_two_theta_deg, dtype=np.float64)
    axis = grid if axis is None else np.ascontiguousarray(axis, dtype=np.float64)
    if grid.ndim != 1 or axis.shape != grid.shape:
        raise ValueError(f"grid_two_theta_deg must be 1-D and axis the same length, got shapes "
                         f"{grid.shape} and {axis.shape}")
    return dict(wavelengths=np.asarray(rad.wavelengths, dtype=np.float64),
                line_weights=np.asarray(rad.weights, dtype=np.float64),
                grid_two_theta=grid, axis=axis, zero_shift_deg=zero_shift_deg,
                cos2_2theta_m=math.cos(math.radians(monochromator_two_theta_deg)) ** 2, neutron=bool(neutron),
                normalization=NORMALIZATIONS[normalization], cutoff_rel=cutoff_rel,
                U=U, V=V, W=W, X=X, Y=Y, size_angstrom=size_angstrom, scherrer_k=scherrer_k,
                microstrain=microstrain)


class Simulator:
    """Powder diffraction simulator for one instrument configuration.

    Parameters
    ----------
    radiation : "CuKa" (K-alpha1 + K-alpha2, ratio 0.5; also MoKa, CoKa, FeKa,
        CrKa, AgKa), "CuKa1" (one line) or a wavelength in angstrom.
    two_theta : (start, stop) in degrees 2-theta, 0 < start < stop < 180.
    n_points, step : grid size, or step in degrees (give one; default 4096 points).
    q : (start, stop) in 1/angstrom to sample on a Q = 4 pi sin(theta) / lambda
        grid instead (Q from the primary wavelength); ``n_points`` points.
    probe : "xray" or "neutron" (coherent scattering lengths, no polarization).
    U, V, W : Caglioti Gaussian terms, H_G^2 = U tan^2 th + V tan th + W (deg^2).
    X, Y : Lorentzian terms, H_L = X tan th + Y / cos th (deg).
    crystallite_size_nm : Scherrer size (Lorentzian, K = ``scherrer_k``); None = none.
    microstrain : apparent strain delta d / d (Gaussian, 4 eps tan th); 0 = none.
    zero_shift_deg : added to every peak position (degrees 2-theta).
    monochromator_two_theta_deg : 2-theta of a monochromator for the LP factor (0 = none).
    anomalous : include f', f'' (Cromer-Liberman at the primary wavelength).
    normalization : "max" (strongest point = 1), "area" (unit area over the
        output axis) or "none" (absolute M |F|^2 LP per degree).
    symmetry : how the space-group operations are found: "builtin" (default;
        detected in the C++ core, in threads, the same algorithm as spglib and
        checked against it in tests), "spglib" (spglib.get_symmetry per
        structure in Python; ~1 ms each, the bottleneck of a batch) or "none"
        (identity only: Laue group -1, every hkl enumerated; for checks).
    symprec : symmetry tolerance in angstrom.
    max_reflections : refuse structures whose resolution sphere holds more
        hkl than this (memory/time cap, checked before allocating).
    cutoff_rel : profiles are cut where they fall below this fraction of
        their peak height (default 1e-3, see profile.hpp).
    """

    def __init__(self, radiation: "str | float | Radiation" = "CuKa", two_theta: Sequence[float] | None = None,
                 n_points: int | None = None, *, step: float | None = None, q: Sequence[float] | None = None,
                 probe: str = "xray", U: float = DEFAULT_CAGLIOTI[0], V: float = DEFAULT_CAGLIOTI[1],
                 W: float = DEFAULT_CAGLIOTI[2], X: float = 0.0, Y: float = 0.0,
                 crystallite_size_nm: float | None = None, scherrer_k: float = 0.9, microstrain: float = 0.0,
                 zero_shift_deg: float = 0.0, monochromator_two_theta_deg: float = 0.0, anomalous: bool = False,
                 normalization: str = "max", symmetry: str = "builtin", symprec: float = 1e-3,
                 max_reflections: int = 2_000_000,
                 cutoff_rel: float = 1e-3):
        self.radiation = parse_radiation(radiation)
        if probe not in ("xray", "neutron"):
            raise ValueError(f"probe must be 'xray' or 'neutron', got {probe!r}")
        self.probe = probe
        if probe == "neutron" and anomalous:
            raise ValueError("anomalous dispersion applies to X-rays only; use anomalous=False with probe='neutron'")
        self.anomalous = bool(anomalous)
        self._build_grid(two_theta, n_points, step, q)

        self.U, self.V, self.W, self.X, self.Y = (_finite(n, v) for n, v in zip("UVWXY", (U, V, W, X, Y)))
        if crystallite_size_nm is not None and not _finite("crystallite_size_nm", crystallite_size_nm) > 0:
            raise ValueError(f"crystallite_size_nm must be > 0 (or None for no size broadening), got {crystallite_size_nm}")
        self.crystallite_size_nm = None if crystallite_size_nm is None else float(crystallite_size_nm)
        self.scherrer_k = _finite("scherrer_k", scherrer_k)
        if not 0 < self.scherrer_k <= 2:
            raise ValueError(f"scherrer_k must be in (0, 2] (0.9 is usual), got {scherrer_k}")
        self.microstrain = _finite("microstrain", microstrain)
        if not 0 <= self.microstrain < 0.1:
            raise ValueError(f"microstrain is delta d / d and must be in [0, 0.1), got {microstrain}")
        self.zero_shift_deg = _finite("zero_shift_deg", zero_shift_deg)
        if abs(self.zero_shift_deg) > 5:
            raise ValueError(f"zero_shift_deg must be within +-5 degrees, got {zero_shift_deg}")
        mono = _finite("monochromator_two_theta_deg", monochromator_two_theta_deg)
        if not 0 <= mono < 180:
            raise ValueError(f"monochromator_two_theta_deg must be in [0, 180), got {monochromator_two_theta_deg}")
        self.monochromator_two_theta_deg = mono
        self._cos2_2theta_m = math.cos(math.radians(mono)) ** 2
        if normalization not in NORMALIZATIONS:
            raise ValueError(f"normalization must be one of {sorted(NORMALIZATIONS)}, got {normalization!r}")
        self.normalization = normalization
        if symmetry not in ("builtin", "spglib", "none"):
            raise ValueError(f"symmetry must be 'builtin', 'spglib' or 'none', got {symmetry!r}")
        self.symmetry = symmetry
        self.symprec = _finite("symprec", symprec)
        if not 0 < self.symprec < 1:
            raise ValueError(f"symprec is in angstrom and must be in (0, 1), got {symprec}")
        if isinstance(max_reflections, bool) or not isinstance(max_reflections, (int, np.integer)) or max_reflections < 1:
            raise ValueError(f"max_reflections must be a positive integer, got {max_reflections!r}")
        self.max_reflections = int(max_reflections)
        self.cutoff_rel = _finite("cutoff_rel", cutoff_rel)
        if not 0 < self.cutoff_rel < 1:
            raise ValueError(f"cutoff_rel must be in (0, 1), got {cutoff_rel}")
        self._check_profile()

    # ------------------------------------------------------------------ setup
    def _build_grid(self, two_theta, n_points, step, q) -> None:
        lam = self.radiation.primary_wavelength
        if n_points is not None and step is not None:
            raise ValueError("give either n_points or step, not both")
        if q is not None:
            if two_theta is not None or step is not None:
                raise ValueError("q= sets the grid by itself; do not also give two_theta or step")
            q0, q1 = (_finite("q", v) for v in q)
            if not 0 < q0 < q1:
                raise ValueError(f"q range must satisfy 0 < start < stop (1/angstrom), got {tuple(q)}")
            q_reach = 4 * math.pi / lam
            if q1 >= q_reach:
                raise ValueError(f"q stop {q1:g} 1/A is beyond the reach of lambda = {lam:g} A "
                                 f"(Q < 4 pi / lambda = {q_reach:.4g}); lower it or use a shorter wavelength")
            n = self._n_points(n_points if n_points is not None else 4096)
            self.q = np.linspace(q0, q1, n)
            self.two_theta_deg = np.degrees(2 * np.arcsin(self.q * lam / (4 * math.pi)))
            self.axis = self.q
            self.axis_name = "Q (1/angstrom)"
        else:
            start, stop = (5.0, 90.0) if two_theta is None else tuple(two_theta)
            start, stop = _finite("two_theta start", start), _finite("two_theta stop", stop)
            if not 0 < start < stop < 180:
                raise ValueError(f"two_theta must satisfy 0 < start < stop < 180 degrees, got ({start}, {stop})")
            if step is not None:
                step = _finite("step", step)
                if step <= 0:
                    raise ValueError(f"step must be > 0 degrees, got {step}")
                n = self._n_points(int(math.floor((stop - start) / step + 1e-9)) + 1)
                self.two_theta_deg = start + step * np.arange(n)
            else:
                n = self._n_points(n_points if n_points is not None else 4096)
                self.two_theta_deg = np.linspace(start, stop, n)
            self.q = None
            self.axis = self.two_theta_deg
            self.axis_name = "2theta (degrees)"
        self.two_theta_deg = np.ascontiguousarray(self.two_theta_deg, dtype=np.float64)
        self.axis = np.ascontiguousarray(self.axis, dtype=np.float64)

    @staticmethod
    def _n_points(n) -> int:
        if isinstance(n, bool) or not isinstance(n, (int, np.integer)):
            raise TypeError(f"n_points must be an integer, got {n!r}")
        if not 2 <= n <= 10_000_000:
            raise ValueError(f"n_points must be between 2 and 10,000,000, got {n}")
        return int(n)

    @property
    def n_points(self) -> int:
        return len(self.axis)

    def _profile_args(self) -> dict:
        size = 0.0 if self.crystallite_size_nm is None else 10.0 * self.crystallite_size_nm
        return dict(U=self.U, V=self.V, W=self.W, X=self.X, Y=self.Y, size_angstrom=size,
                    scherrer_k=self.scherrer_k, microstrain=self.microstrain)

    def peak_shape(self, two_theta_deg) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(FWHM in degrees, Lorentzian fraction eta, cutoff half-width in degrees) at
        each 2-theta for the primary line: the numbers the renderer uses."""
        tt = np.ascontiguousarray(np.atleast_1d(two_theta_deg), dtype=np.float64)
        return _core.peak_shape(tt, self.radiation.primary_wavelength, cutoff_rel=self.cutoff_rel,
                                **self._profile_args())

    def _check_profile(self) -> None:
        fwhm, _, cut = self.peak_shape(np.linspace(self.two_theta_deg[0], self.two_theta_deg[-1], 256))
        if not np.all(fwhm > 0):
            bad = np.linspace(self.two_theta_deg[0], self.two_theta_deg[-1], 256)[np.argmin(fwhm > 0)]
            raise ValueError(f"the profile (U, V, W, X, Y, size, strain) gives a zero or negative width near "
                             f"2theta = {bad:.2f} deg; increase W or add size/strain broadening")
        step = float(np.max(np.diff(self.two_theta_deg)))
        if step > 0.5 * fwhm.min():
            warnings.warn(f"grid step {step:.4f} deg is more than half the narrowest FWHM ({fwhm.min():.4f} deg); "
                          "peaks will be undersampled: use more points or broader profiles", RuntimeWarning,
                          stacklevel=3)
        # Reflections up to the top of the range plus the widest profile tail there,
        # so peaks just outside the window still contribute their tails.
        top = min(float(self.two_theta_deg[-1]) + float(cut.max()), 179.0)
        self.d_min = min(self.radiation.wavelengths) / (2 * math.sin(math.radians(top / 2)))

    # ------------------------------------------------------------ reflections
    def _flatten(self, structures: Sequence[Structure]) -> dict:
        """The flat CSR arrays the core reads (and spglib symmetry if asked for).

        Vectorized over the batch: the only per-structure Python work is
        gathering each structure's arrays (and spglib, when chosen).
        """
        n = len(structures)
        counts = np.fromiter((len(s) for s in structures), np.int64, n)
        atom_off = np.concatenate([[0], np.cumsum(counts)])
        lattices = np.array([s.lattice for s in structures], dtype=np.float64).reshape(n, 3, 3)
        volumes = np.abs(np.linalg.det(lattices)) if n else np.zeros(0)
        estimates = 4.0 * math.pi / 3.0 * volumes / self.d_min ** 3
        too_big = np.flatnonzero(estimates > self.max_reflections)
        if too_big.size:
            i = int(too_big[0])
            s = structures[i]
            raise ValueError(
                f"structure {i} ({s.label or s.formula}, V = {volumes[i]:.1f} A^3) would have ~{estimates[i]:.3g} hkl "
                f"with d >= {self.d_min:.4f} A, over the cap max_reflections={self.max_reflections:,}; "
                "raise Simulator(max_reflections=...) or narrow the 2-theta range")

        def cat(parts, shape, dtype):
            return np.ascontiguousarray(np.concatenate(parts) if parts else np.zeros(shape), dtype=dtype)

        numbers = cat([s.numbers for s in structures], (0,), np.int64)
        charges = cat([s.charges for s in structures], (0,), np.int64)
        # Scatterer types: distinct (Z, charge) within each structure, numbered
        # per structure (the core indexes a structure's own rows).
        owner = np.repeat(np.arange(n, dtype=np.int64), counts)
        species_key = numbers * 1000 + (charges + 500)
        uniq, atom_type = np.unique(owner * 1_000_000 + species_key, return_inverse=True)
        type_off = np.searchsorted(uniq // 1_000_000, np.arange(n + 1)).astype(np.int64)
        atom_type = (atom_type - type_off[owner]).astype(np.int32)
        it92, fp, fpp, nb = self._scatterer_rows(uniq % 1_000_000)

        if self.symmetry == "spglib":
            ops = [symmetry_operations(s, self.symprec) for s in structures]
        elif self.symmetry == "none":
            ops = [_IDENTITY] * n
        else:
            ops = []  # no operations: the core detects them
        op_counts = np.array([len(o) for o in ops] if ops else np.zeros(n), dtype=np.int64)
        return dict(lattice=lattices, atom_offsets=atom_off, frac=cat([s.frac for s in structures], (0, 3), np.float64),
                    atom_type=atom_type, occupancy=cat([s.occupancy for s in structures], (0,), np.float64),
                    b_iso=cat([s.b_iso for s in structures], (0,), np.float64), type_offsets=type_off,
                    it92=it92, fp=fp, fpp=fpp, neutron_b=nb,
                    op_offsets=np.concatenate([[0], np.cumsum(op_counts)]).astype(np.int64),
                    rotations=cat([o.rotations for o in ops], (0, 3, 3), np.int32),
                    translations=cat([o.translations for o in ops], (0, 3), np.float64))

    def _scatterer_rows(self, species_keys: np.ndarray):
        """IT92 rows, f', f'' and neutron b for species keys Z * 1000 + charge + 500."""
        distinct, where = np.unique(species_keys, return_inverse=True)
        m = len(distinct)
        it92, fp, fpp, nb = np.zeros((m, 9)), np.zeros(m), np.zeros(m), np.zeros(m)
        energy = self.radiation.energy_ev if self.anomalous else None
        for t, key in enumerate(distinct):
            z, charge = int(key // 1000), int(key % 1000) - 500
            if self.probe == "neutron":
                nb[t] = neutron_scattering_length(z)
            else:
                it92[t] = it92_coefficients(z, charge)
                if energy is not None:
                    fp[t], fpp[t] = anomalous_dispersion(z, energy)
        return (np.ascontiguousarray(it92[where]), np.ascontiguousarray(fp[where]),
                np.ascontiguousarray(fpp[where]), np.ascontiguousarray(nb[where]))

    def reflections(self, structures: Iterable[Structure], threads: int | None = None) -> Reflections:
        """Symmetry-unique reflections (hkl, d, |F|^2, multiplicity) of every structure.

        This is the expensive stage; keep the result to re-render cheaply with
        :meth:`render`.  ``threads=None`` uses every core.
        """
        structs = self._structures(structures)
        flat = self._flatten(structs)
        out = _core.compute_reflections(flat, **self._reflection_options(), threads=_threads(threads))
        return Reflections(offsets=out["offsets"], hkl=out["hkl"], d=out["d"], F2=out["F2"],
                           multiplicity=out["multiplicity"], lattices=flat["lattice"],
                           laue_offsets=out["laue_offsets"], laue_rotations=out["laue_rotations"],
                           cell_mass=_cell_masses(structs), d_min=np.array(self.d_min))

    @staticmethod
    def _structures(structures) -> list[Structure]:
        if isinstance(structures, Structure):
            raise TypeError("this method takes a list of structures; wrap a single one in a list")
        return [_as_structure(s) for s in structures]

    def _reflection_options(self) -> dict:
        return dict(d_min=self.d_min, neutron=self.probe == "neutron", max_box=8.0 * self.max_reflections,
                    symprec=self.symprec)

    def _instrument(self) -> dict:
        """Everything the renderer needs besides the reflections (see :func:`instrument_dict`)."""
        return instrument_dict(self.radiation, self.two_theta_deg, self.axis, U=self.U, V=self.V, W=self.W,
                               X=self.X, Y=self.Y, crystallite_size_nm=self.crystallite_size_nm,
                               scherrer_k=self.scherrer_k, microstrain=self.microstrain,
                               zero_shift_deg=self.zero_shift_deg,
                               monochromator_two_theta_deg=self.monochromator_two_theta_deg,
                               neutron=self.probe == "neutron", normalization=self.normalization,
                               cutoff_rel=self.cutoff_rel)

    # ----------------------------------------------------------------- render
    def render(self, reflections: Reflections, indices=None, augmentation: Augmentation | None = None,
               seed: int = 0, epoch: int = 0, threads: int | None = None) -> tuple[np.ndarray, dict]:
        """Patterns from cached :class:`Reflections`: ``(Y, params)``.

        ``Y`` is (B, n_points) float32 for the structures ``indices`` (default
        all, in order).  With an :class:`~xrdflow.Augmentation`, every sample
        gets its own draws, keyed by (``seed``, ``epoch``, structure index):
        the same key gives the same bytes whatever the thread count or batch
        split, and a new epoch gives new draws.  ``params`` holds the drawn
        values per sample (empty without augmentation).
        """
        if not isinstance(reflections, Reflections):
            raise TypeError(f"render() takes the Reflections returned by Simulator.reflections(), "
                            f"got {type(reflections).__name__}")
        if augmentation is not None and not isinstance(augmentation, Augmentation):
            raise TypeError(f"augmentation must be an xrdflow.Augmentation, got {type(augmentation).__name__}")
        idx = _indices(indices, len(reflections))
        if augmentation is None or augmentation.is_none:
            refl = reflections if indices is None else reflections.subset(idx)
            y = _core.render_patterns(refl.offsets, refl.d, refl.F2, refl.multiplicity, self._instrument(),
                                      threads=_threads(threads))
            return y, {}
        self._check_cache_reach(reflections, augmentation)
        cache = {f: getattr(reflections, f) for f in ("offsets", "d", "F2", "multiplicity", "hkl", "lattices",
                                                      "laue_offsets", "laue_rotations", "cell_mass")}
        y, table = _core.render_augmented(cache, idx, augmentation.core_config(), self._instrument(),
                                          seed=_unsigned("seed", seed, 64), epoch=_unsigned("epoch", epoch, 32),
                                          threads=_threads(threads))
        return y, split_parameters(_core.augment_parameter_names(), table)

    def _check_cache_reach(self, reflections: Reflections, augmentation: Augmentation) -> None:
        """A shorter tube than the one the cache was computed for would need reflections it lacks."""
        shortest = min([min(parse_radiation(t).wavelengths) for t in augmentation.tubes] +
                       list(self.radiation.wavelengths))
        needed = self.d_min * shortest / min(self.radiation.wavelengths)
        if float(reflections.d_min) > needed * (1 + 1e-9):
            raise ValueError(f"the cache was computed to d_min = {float(reflections.d_min):.4f} A but this "
                             f"simulator and augmentation need {needed:.4f} A; compute the reflections with a "
                             "Simulator whose radiation is the shortest tube you augment with")

    def patterns(self, structures: Iterable[Structure], threads: int | None = None) -> np.ndarray:
        """Patterns of many structures in one call: (B, n_points) float32, all cores by default.

        Same result as ``render(reflections(structures))[0]``, but each structure's
        reflections are rendered by the thread that computed them, with no
        intermediate table.
        """
        flat = self._flatten(self._structures(structures))
        return _core.simulate_patterns(flat, **self._reflection_options(), instrument=self._instrument(),
                                       threads=_threads(threads))

    def pattern(self, structure: Structure) -> np.ndarray:
        """Pattern of one structure: (n_points,) float32 on :attr:`axis`."""
        return self.patterns([structure])[0]

    def peaks(self, structure: Structure) -> PeakTable:
        """Lines of one structure inside the 2-theta range at the primary wavelength."""
        refl = self.reflections([structure])
        lam = self.radiation.primary_wavelength
        two_theta, _, intensity = _core.peak_intensities(refl.offsets, refl.d, refl.F2, refl.multiplicity,
                                                        wavelength=lam, cos2_2theta_m=self._cos2_2theta_m,
                                                        neutron=self.probe == "neutron")
        keep = (two_theta >= self.two_theta_deg[0]) & (two_theta <= self.two_theta_deg[-1])
        order = np.argsort(two_theta[keep], kind="stable")
        pick = np.flatnonzero(keep)[order]
        return PeakTable(hkl=refl.hkl[pick], d=refl.d[pick], two_theta=two_theta[pick], F2=refl.F2[pick],
                         multiplicity=refl.multiplicity[pick], intensity=intensity[pick], wavelength=lam)

    def __repr__(self) -> str:
        return (f"Simulator(radiation={self.radiation.name!r}, probe={self.probe!r}, "
                f"{self.axis_name}: {self.axis[0]:g}..{self.axis[-1]:g} in {self.n_points} points)")
