"""Whole-pattern fits and phase identification on the measured patterns in ../shared/data/experimental.

python benchmarks/fit_measured.py      (prints the README tables; ~1 minute on 2 cores)

* TaCr2O6 (laboratory Cu K-alpha, 5-90 deg): the two phases of its FullProf .pcr (TaCr2O6 and Cr2O3,
  CIFs in tests/data/fit written from the .pcr), compared with the .pcr values;
* XRed RuO2, Tb2BaCoO5, LiTMO3 (pattern CSV + CIF of the phase): Rwp of the fit of the given CIF;
* identification of each XRed pattern among 56 candidates: the three XRed CIFs, the bundled examples
  (NaCl, Si; RuO2 left out as a duplicate) and the first 50 structures of the bundled MP-20 test split.
"""
from __future__ import annotations

import math
import time
from pathlib import Path

import numpy as np

import xrdflow as xf
from xrdflow import _core, examples
from xrdflow.data import bundled_dataset
from xrdflow.fit import fit_pattern, identify

ROOT = Path(__file__).resolve().parents[1]
EXP = ROOT.parent / "shared" / "data" / "experimental"
FIT_DATA = ROOT / "tests" / "data" / "fit"
XRED = (("RuO2", "data.csv", "1538150.cif"), ("Tb2BaCoO5", "data.csv", "1526799.cif"),
        ("LiTMO3", "intensity.csv", "LiTMO3.cif"))

# Rietveld_refinment_TaCr2O6.pcr
PCR = dict(zero=-0.01113, a1=4.648826, c1=3.028236, a2=4.956595, c2=13.611871, bov1=-2.47380,
           uvw1=(0.197118, -0.159146, 0.059143), eta1=(0.29328, 0.005359),
           scale=(0.1448695e-2, 0.1331057e-4), atz=(253.964, 911.926))


def pcr_weight_fraction() -> float:
    """Hill-Howard W = S ATZ V / sum from the .pcr scales, ATZ (Z M) and cells."""
    v1 = PCR["a1"] ** 2 * PCR["c1"]
    v2 = PCR["a2"] ** 2 * PCR["c2"] * math.sin(math.radians(120))
    w = np.array([PCR["scale"][0] * PCR["atz"][0] * v1, PCR["scale"][1] * PCR["atz"][1] * v2])
    return float(w[0] / w.sum())


def fmt(v) -> str:
    value, sigma = v
    if not sigma:
        return f"{value:.5g}"
    digits = max(0, -int(math.floor(math.log10(sigma))) + 1)
    return f"{value:.{digits}f}({round(sigma * 10 ** digits):d})"


def tacr2o6() -> None:
    folder = EXP / "TaCr2O6"
    words = (folder / "xrd_measurement_TaCr2O6.dat").read_text().split()
    start, step = float(words[0]), float(words[1])
    y = np.array([float(v) for v in words[3:]])
    tt = start + step * np.arange(y.size)
    rad = xf.Radiation("CuKa1/Ka2 1.54056/1.54439, 0.5", (1.54056, 1.54439), (1.0, 0.5))
    t0 = time.perf_counter()
    res = fit_pattern((tt, y), [FIT_DATA / "TaCr2O6.cif", FIT_DATA / "Cr2O3.cif"], radiation=rad,
                      background_terms=12, refine_b_overall=True)
    dt = time.perf_counter() - t0
    p1, p2 = res.phases
    print(f"TaCr2O6 + Cr2O3: Rwp {100 * res.r_wp:.2f} %, Rp {100 * res.r_p:.2f} %, Rexp {100 * res.r_exp:.2f} %, "
          f"GoF {res.gof:.2f}, {res.n_params} parameters, {dt:.1f} s\n")
    print("| quantity | xrdflow | FullProf .pcr |")
    print("|---|---:|---:|")
    print(f"| zero shift (deg) | {fmt(res.zero_shift_deg)} | {PCR['zero']} |")
    print(f"| TaCr2O6 a (A) | {fmt(p1.cell['a'])} | {PCR['a1']} |")
    print(f"| TaCr2O6 c (A) | {fmt(p1.cell['c'])} | {PCR['c1']} |")
    print(f"| TaCr2O6 overall B (A^2) | {fmt(p1.parameters['B_overall'])} | {PCR['bov1']} |")
    print(f"| Cr2O3 a (A) | {fmt(p2.cell['a'])} | {PCR['a2']} |")
    print(f"| Cr2O3 c (A) | {fmt(p2.cell['c'])} | {PCR['c2']} |")
    print(f"| TaCr2O6 weight fraction | {fmt(p1.weight_fraction)} | {pcr_weight_fraction():.3f} (from scales) |")
    U, V, W = (p1.parameters[n][0] for n in "UVW")
    print(f"| TaCr2O6 U, V, W (deg^2) | {U:.4f}, {V:.4f}, {W:.4f} (TCH Gaussian) | "
          f"{', '.join(f'{v:.4f}' for v in PCR['uvw1'])} (pseudo-Voigt total, Npr 5) |")
    for two_theta in (27.0, 53.5, 85.0):
        fwhm, eta, _ = _core.peak_shape(np.array([two_theta]), 1.54056, U=U, V=V, W=W, X=p1.parameters["X"][0],
                                        Y=p1.parameters["Y"][0], size_angstrom=0.0, scherrer_k=0.9,
                                        microstrain=0.0, cutoff_rel=1e-3)
        t = math.tan(math.radians(two_theta / 2))
        u, v, w = PCR["uvw1"]
        print(f"| TaCr2O6 FWHM at {two_theta:g} deg (deg), eta | {fwhm[0]:.4f}, {eta[0]:.2f} | "
              f"{math.sqrt(u * t * t + v * t + w):.4f}, {PCR['eta1'][0] + PCR['eta1'][1] * two_theta:.2f} |")


def xred_fits() -> None:
    print("\n| XRed pattern | points | Rwp % | Rexp % | GoF | a (CIF -> refined) | c (CIF -> refined) | s |")
    print("|---|---:|---:|---:|---:|---|---|---:|")
    for name, pattern, cif in XRED:
        a = np.loadtxt(EXP / "xred" / name / pattern, delimiter=",")
        t0 = time.perf_counter()
        res = fit_pattern((a[:, 0], a[:, 1]), [EXP / "xred" / name / cif], radiation="CuKa")
        dt = time.perf_counter() - t0
        p = res.phases[0]
        print(f"| {name} | {res.n_points} | {100 * res.r_wp:.2f} | {100 * res.r_exp:.2f} | {res.gof:.2f} | "
              f"{p.cell_start['a']:.4f} -> {fmt(p.cell['a'])} | {p.cell_start['c']:.4f} -> {fmt(p.cell['c'])} | "
              f"{dt:.1f} |")


def identification() -> None:
    cands = [xf.Structure.from_cif(EXP / "xred" / n / c, label=n) for n, _, c in XRED]
    cands += [xf.Structure.from_cif(examples.path(n), label=n) for n in examples.names() if n != "RuO2"]
    cands += bundled_dataset("test", limit=50).structures
    print(f"\n| XRed pattern | screen rank | fit rank | best model (Rwp %) | s |  ({len(cands)} candidates)")
    print("|---|---:|---:|---|---:|")
    for name, pattern, _ in XRED:
        a = np.loadtxt(EXP / "xred" / name / pattern, delimiter=",")
        t0 = time.perf_counter()
        res = identify((a[:, 0], a[:, 1]), cands, radiation="CuKa", k=5, max_phases=2, progress=False)
        dt = time.perf_counter() - t0
        s_rank = next(i for i, c in enumerate(res.screened, 1) if c.id == name)
        f_rank = next((i for i, c in enumerate(res.ranked, 1) if c.id == name), None)
        model = " + ".join(f"{i} {100 * w:.0f} %" for i, w in zip(res.mixture, res.mixture_weight_fractions))
        print(f"| {name} | {s_rank} | {f_rank if f_rank else '> k'} | {model} ({100 * res.mixture_fit.r_wp:.1f}) "
              f"| {dt:.1f} |")


if __name__ == "__main__":
    if not EXP.exists():
        raise SystemExit(f"needs the reference data in {EXP}")
    tacr2o6()
    xred_fits()
    identification()
