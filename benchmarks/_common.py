"""Shared set-up of the benchmarks: data, the instrument, and the peers.

Everything is measured on the same data (the first structures of
mp20_biternary_test, P1 CIFs) with the same instrument: Cu K-alpha1 only
(1.54056 angstrom), 5-90 degrees 2-theta on 4096 points, one TCH pseudo-Voigt
(Caglioti U, V, W of the Simulator default plus a Lorentzian Y, so that eta is
not zero), no normalization.  The peers take FWHM and eta from
``Simulator.peak_shape`` so they draw the very same profile; NumPy's BLAS runs
on one thread (see below).
"""
from __future__ import annotations

import csv
import gzip
import math
import os
import sys
import time
import warnings
from pathlib import Path

# The peer is timed on one core, like xrdflow with threads=1: keep NumPy's BLAS
# single-threaded (threaded OpenBLAS makes pymatgen's many tiny products ~2x slower
# here and erratic on a busy machine).  Effective only if NumPy is not loaded yet.
if "numpy" in sys.modules and "OPENBLAS_NUM_THREADS" not in os.environ:
    warnings.warn("NumPy was imported before benchmarks/_common.py: its BLAS may be multi-threaded; "
                  "set OPENBLAS_NUM_THREADS=1 for single-core peer timings", RuntimeWarning)
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")

import numpy as np  # noqa: E402

import xrdflow as xf  # noqa: E402
from xrdflow.simulate import DEFAULT_CAGLIOTI  # noqa: E402

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "structures" / "mp20_biternary_test.csv.gz"
WAVELENGTH = 1.54056  # angstrom, Cu K-alpha1
TWO_THETA = (5.0, 90.0)  # degrees
N_POINTS = 4096
PROFILE = dict(zip("UVW", DEFAULT_CAGLIOTI), X=0.0, Y=0.03)  # deg^2 (U, V, W), deg (X, Y)


def make_simulator() -> xf.Simulator:
    return xf.Simulator(radiation="CuKa1", two_theta=TWO_THETA, n_points=N_POINTS, normalization="none", **PROFILE)


def load_cifs(n: int) -> list[str]:
    """CIF texts of the first ``n`` structures (FileNotFoundError if the data set is absent)."""
    if not DATA.is_file():
        raise FileNotFoundError(f"benchmark data not found: {DATA}")
    with gzip.open(DATA, "rt", newline="") as f:
        return [row["cif"] for _, row in zip(range(n), csv.DictReader(f))]


def to_pymatgen(cifs: list[str]) -> list:
    from pymatgen.core import Structure

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pymatgen warns about rounded occupancies etc.
        return [Structure.from_str(c, fmt="cif") for c in cifs]


# ------------------------------------------------------------------ pymatgen peer
def pseudo_voigt_sum(grid: np.ndarray, pos: np.ndarray, intensity: np.ndarray, fwhm: np.ndarray,
                     eta: np.ndarray) -> np.ndarray:
    """Sum of unit-area pseudo-Voigt profiles (vectorized NumPy, dense sticks x grid), float32."""
    x2 = ((grid[None, :] - pos[:, None]) / fwhm[:, None]) ** 2
    gauss = math.sqrt(4 * math.log(2) / math.pi) * np.exp(-4 * math.log(2) * x2)
    lorentz = (2 / math.pi) / (1 + 4 * x2)
    return ((intensity / fwhm)[None, :] @ ((1 - eta)[:, None] * gauss + eta[:, None] * lorentz))[0].astype(np.float32)


def peer_patterns(pmg_structures: list, sim: xf.Simulator) -> np.ndarray:
    """What users do today: pymatgen XRDCalculator sticks, then a NumPy pseudo-Voigt sum onto the grid."""
    from pymatgen.analysis.diffraction.xrd import XRDCalculator

    calc = XRDCalculator(wavelength=WAVELENGTH)
    out = np.empty((len(pmg_structures), sim.n_points), np.float32)
    for i, s in enumerate(pmg_structures):
        sticks = calc.get_pattern(s, scaled=False, two_theta_range=TWO_THETA)
        fwhm, eta, _ = sim.peak_shape(sticks.x)
        out[i] = pseudo_voigt_sum(sim.two_theta_deg, sticks.x, sticks.y, fwhm, eta)
    return out


# -------------------------------------------------------------- gemmi structure factors
def to_gemmi(s: xf.Structure):
    """gemmi.SmallStructure in P1 (no symmetry images) with the atoms of ``s``; u_iso = B / (8 pi^2)."""
    import gemmi

    small = gemmi.SmallStructure()
    small.cell = gemmi.UnitCell(*s.cell_parameters)
    small.spacegroup_hm = "P 1"
    for xyz, z, q, occ, b in zip(s.frac, s.numbers, s.charges, s.occupancy, s.b_iso):
        site = gemmi.SmallStructure.Site()
        site.fract = gemmi.Fractional(*xyz)
        site.element = gemmi.Element(int(z))
        site.charge = int(q)
        site.occ = float(occ)
        site.u_iso = float(b) / (8 * math.pi**2)
        small.add_site(site)
    small.setup_cell_images()
    return small


def gemmi_f2(small, hkl: np.ndarray) -> np.ndarray:
    """|F|^2 of every hkl by gemmi's direct summation (one Python call per reflection: gemmi
    has no vectorized structure-factor path for SmallStructure; its FFT path needs a Model)."""
    import gemmi

    calc = gemmi.StructureFactorCalculatorX(small.cell)
    return np.array([abs(calc.calculate_sf_from_small_structure(small, h)) ** 2 for h in hkl.tolist()])


def best_time(fn, repeat: int = 5):
    """(best wall seconds over ``repeat`` calls of ``fn()``, the last call's result)."""
    best, out = float("inf"), None
    for _ in range(repeat):
        t = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t)
    return best, out


def machine() -> dict:
    """nproc and CPU model (from /proc/cpuinfo)."""
    model = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"nproc": len(os.sched_getaffinity(0)), "cpu": model}
