"""The core's own space-group search against spglib, operation by operation."""
from __future__ import annotations

import numpy as np
import pytest

import xrdflow as xf
from xrdflow import _core

from conftest import read_csv_rows


def core_ops(s: xf.Structure, symprec=1e-3):
    kind = np.unique(s.numbers, return_inverse=True)[1].astype(np.int32)
    return _core.find_symmetry(np.ascontiguousarray(s.lattice), np.ascontiguousarray(s.frac), kind, symprec)


def contains(a_rot, a_tr, b_rot, b_tr, tol=2e-3) -> bool:
    """Is every operation of set b also in set a (translations mod 1)?"""
    for r, t in zip(b_rot, b_tr):
        match = np.all(a_rot == r, axis=(1, 2))
        diff = a_tr[match] - t
        diff -= np.round(diff)
        if not np.any(np.all(np.abs(diff) < tol, axis=1)):
            return False
    return True


def assert_consistent_with_spglib(structures, symprec=1e-3, borderline_fraction=0.03):
    """Ours never misses an operation spglib finds, and finds the same set on
    all but a few borderline structures.  The distance tests differ: ours
    accepts an operation when every site lies within symprec of its image under
    the mean-residual translation; spglib measures from the trial translation
    of one reference atom (whose own error adds to every other site's), so ours
    may find more, e.g. carbon_24 C-34617-8887-22 has a 2-fold axis with every
    atom within 0.995e-3 A that spglib confirms only at symprec = 8e-3.  Every
    extra operation must be confirmed by spglib within 8 x symprec."""
    borderline, wrong = [], []
    for s in structures:
        rot, tr = core_ops(s, symprec)
        ref = xf.symmetry_operations(s, symprec=symprec)
        if not contains(rot, tr, ref.rotations, ref.translations):
            wrong.append((s.label, "misses operations", len(rot), len(ref)))
        elif len(rot) != len(ref):
            loose = xf.symmetry_operations(s, symprec=8 * symprec)
            if contains(loose.rotations, loose.translations, rot, tr, tol=1e-2):
                borderline.append(s.label)
            else:
                wrong.append((s.label, "extra operations", len(rot), len(ref)))
    assert not wrong, wrong
    assert len(borderline) <= borderline_fraction * len(structures), borderline


def test_matches_spglib_on_mp20(mp20_structures):
    assert_consistent_with_spglib(mp20_structures)


# carbon_24 holds generated carbon frameworks, many symmetric only to ~1e-3 A:
# 19 of its first 200 are borderline in the sense above (measured), so it gets a
# looser allowance; the Materials Project sets have 0-2 in 200.
@pytest.mark.parametrize("name,limit,borderline", [("carbon24_test.csv.gz", 100, 0.12),
                                                   ("perov5_test.csv.gz", 100, 0.03),
                                                   ("mpts52_val.csv.gz", 100, 0.03)])
def test_matches_spglib_on_other_sets(name, limit, borderline):
    rows = read_csv_rows(name, limit)
    assert_consistent_with_spglib([xf.Structure.from_cif(r["cif"], label=r.get("material_id", str(i)))
                           for i, r in enumerate(rows)], borderline_fraction=borderline)


def test_supercell_pure_translations():
    """A 2x2x1 supercell of a primitive cubic cell: its tetragonal lattice keeps
    the 16 operations of 4/mmm, each with 4 translations (3 of them pure
    translations of the small cell), and odd h or k become absent."""
    frac = np.array([[i / 2, j / 2, 0.0] for i in range(2) for j in range(2)])
    s = xf.Structure.from_arrays(np.diag([6.0, 6.0, 3.0]), frac, ["Cu"] * 4)
    rot, tr = core_ops(s)
    assert len(rot) == 4 * 16
    sim = xf.Simulator("CuKa1")
    assert all(h % 2 == 0 and k % 2 == 0 for h, k, _ in sim.peaks(s).hkl)


def test_builtin_and_spglib_modes_give_identical_patterns(mp20_structures):
    kw = dict(radiation="CuKa", two_theta=(5, 90))
    a = xf.Simulator(**kw, symmetry="builtin").patterns(mp20_structures[:50])
    b = xf.Simulator(**kw, symmetry="spglib").patterns(mp20_structures[:50])
    c = xf.Simulator(**kw, symmetry="none").patterns(mp20_structures[:50])
    np.testing.assert_allclose(a, b, atol=1e-6)
    np.testing.assert_allclose(a, c, atol=2e-4)  # 'none' keeps the slightly asymmetric input metric


def test_large_supercell_matches_unit_cell():
    """A 5x5x5 NaCl supercell (1,000 atoms, 24,000 operations) gives the unit
    cell's pattern; the search handles it through pure translations and a
    spatial index of the sites (it used to be cubic in the atom count)."""
    fcc = np.array([[0, 0, 0], [0, .5, .5], [.5, 0, .5], [.5, .5, 0]])
    base = np.vstack([fcc, fcc + .5]) % 1
    shifts = np.array([[i, j, k] for i in range(5) for j in range(5) for k in range(5)])
    frac = ((base[None] + shifts[:, None]) / 5).reshape(-1, 3)
    species = ["Na"] * 4 + ["Cl"] * 4
    big = xf.Structure.from_arrays(np.eye(3) * 5.64 * 5, frac, species * 125)
    small = xf.Structure.from_arrays(np.eye(3) * 5.64, base, species)
    rot, _ = core_ops(big)
    assert len(rot) == 48 * 500
    sim = xf.Simulator("CuKa", normalization="none", max_reflections=5_000_000)
    np.testing.assert_allclose(sim.pattern(big), 125 ** 2 * sim.pattern(small), rtol=2e-5,
                               atol=1e-6 * 125 ** 2 * sim.pattern(small).max())
    assert [tuple(h) for h in sim.peaks(big).hkl] == [tuple(5 * h) for h in sim.peaks(small).hkl]
