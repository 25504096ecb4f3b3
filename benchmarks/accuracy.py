"""Accuracy of xrdflow against independent references, on real structures.

    python benchmarks/accuracy.py [--n-structures 200] [--json OUT]

Prints (and optionally writes as JSON):
* |F|^2 vs gemmi.StructureFactorCalculatorX (same IT92 table, neutral atoms,
  per-element B): worst and median relative error on reflections above 1e-3
  of the strongest;
* line positions and relative intensities vs pymatgen's XRDCalculator (Cu
  K-alpha1, spglib-idealized structures so that symmetry-equal lines are
  exactly equal in both programs): worst position difference (deg) and, per
  structure, the worst line difference in % of the strongest line.
The test suite asserts the same comparisons on fewer structures.
"""
from __future__ import annotations

import argparse
import json
import sys
import warnings
from pathlib import Path

import numpy as np
import spglib

import xrdflow as xf

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402  (shared data loading and the gemmi reference)

def load(n: int) -> list[xf.Structure]:
    return [xf.Structure.from_cif(cif) for cif in C.load_cifs(n)]


def idealized(s: xf.Structure) -> xf.Structure:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        lattice, frac, numbers = spglib.standardize_cell((s.lattice, s.frac, s.numbers), to_primitive=False,
                                                          no_idealize=False, symprec=1e-3)
    return xf.Structure.from_arrays(lattice, frac, [int(z) for z in numbers], label=s.label)


def merge_lines(x, values, tol):
    order = np.argsort(x, kind="stable")
    xs, vs = np.asarray(x)[order], np.asarray(values)[order]
    group = np.concatenate([[0], np.cumsum(np.diff(xs) > tol)])
    return np.bincount(group, weights=xs) / np.bincount(group), np.bincount(group, weights=vs)


def compare_gemmi(structures) -> dict:
    sim = xf.Simulator("CuKa1", two_theta=(5, 90), normalization="none")
    errors = []
    for s in structures:
        s = xf.Structure.from_arrays(s.lattice, s.frac, [int(z) for z in s.numbers], b_iso=0.3 + 0.02 * s.numbers)
        refl = sim.reflections([s])
        ref = C.gemmi_f2(C.to_gemmi(s), refl.hkl)
        strong = ref > 1e-3 * ref.max()
        errors.append(np.abs(refl.F2[strong] - ref[strong]) / ref[strong])
    errors = np.concatenate(errors)
    return {"n_reflections": int(errors.size), "max_rel_error": float(errors.max()),
            "median_rel_error": float(np.median(errors))}


def compare_pymatgen(structures) -> dict:
    from pymatgen.analysis.diffraction.xrd import XRDCalculator
    from pymatgen.core import Lattice
    from pymatgen.core import Structure as PmgStructure

    calc = XRDCalculator(wavelength=1.54056)
    sim = xf.Simulator("CuKa1", two_theta=(5, 90), normalization="none")
    worst_pos, worst_int = 0.0, []
    for s in structures:
        s = idealized(s)
        ours = sim.peaks(s)
        pm = calc.get_pattern(PmgStructure(Lattice(s.lattice), [int(z) for z in s.numbers], s.frac),
                              two_theta_range=(5, 90))
        tt_ref, i_ref = merge_lines(np.asarray(pm.x), np.asarray(pm.y), 1e-4)
        tt_ours, i_ours = merge_lines(ours.two_theta, ours.intensity, 1e-4)
        i_ref, i_ours = 100 * i_ref / i_ref.max(), 100 * i_ours / i_ours.max()
        worst = 0.0
        for t, i in zip(tt_ref[i_ref > 1.0], i_ref[i_ref > 1.0]):
            j = np.argmin(np.abs(tt_ours - t))
            worst_pos = max(worst_pos, abs(tt_ours[j] - t))
            worst = max(worst, abs(i_ours[j] - i))
        worst_int.append(worst)
    w = np.array(worst_int)
    return {"max_position_diff_deg": worst_pos, "intensity_diff_pct_median": float(np.median(w)),
            "intensity_diff_pct_p90": float(np.percentile(w, 90)), "intensity_diff_pct_max": float(w.max())}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n-structures", type=int, default=200)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    if not C.DATA.exists():
        print(f"reference data not found at {C.DATA}", file=sys.stderr)
        return 2
    structures = load(args.n_structures)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = {"n_structures": len(structures), "gemmi": compare_gemmi(structures),
                  "pymatgen": compare_pymatgen(structures)}
    g, p = result["gemmi"], result["pymatgen"]
    print(f"| reference | structures | measure | value |\n|---|---|---|---|\n"
          f"| gemmi StructureFactorCalculatorX | {len(structures)} | max relative error of F^2 "
          f"({g['n_reflections']:,} reflections > 1e-3 of strongest) | {g['max_rel_error']:.1e} |\n"
          f"| gemmi StructureFactorCalculatorX | {len(structures)} | median relative error | "
          f"{g['median_rel_error']:.1e} |\n"
          f"| pymatgen XRDCalculator | {len(structures)} | max line-position difference | "
          f"{p['max_position_diff_deg']:.1e} deg |\n"
          f"| pymatgen XRDCalculator | {len(structures)} | worst-line intensity difference per structure, "
          f"median / 90th pct / max | {p['intensity_diff_pct_median']:.2f} / {p['intensity_diff_pct_p90']:.2f} / "
          f"{p['intensity_diff_pct_max']:.2f} % of strongest |")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
