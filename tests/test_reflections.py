"""Reflections and structure factors against independent references:
a NumPy brute-force sum over every hkl, gemmi's StructureFactorCalculatorX,
pymatgen's XRDCalculator, and hand calculations."""
from __future__ import annotations

import dataclasses
import math

import gemmi
import numpy as np
import pytest
import spglib

import xrdflow as xf
from xrdflow.scattering import f0, it92_coefficients

RNG = np.random.default_rng(20261121)


def brute_force(structure: xf.Structure, d_min: float, anomalous: dict | None = None):
    """Every hkl with d >= d_min (no symmetry at all) and its |F|^2, in NumPy.

    ``anomalous`` maps Z -> (f', f''); the result is then the Friedel mean
    (|F(h)|^2 + |F(-h)|^2) / 2 that a powder pattern sees.
    """
    lat = structure.lattice
    recip = np.linalg.inv(lat).T  # rows a*, b*, c*
    hmax = [int(np.floor(np.linalg.norm(v) / d_min)) for v in lat]
    grids = np.meshgrid(*[np.arange(-m, m + 1) for m in hmax], indexing="ij")
    hkl = np.stack([g.ravel() for g in grids], axis=1)
    q = np.linalg.norm(hkl @ recip, axis=1)
    keep = (q > 0) & (q <= 1 / d_min + 1e-12)
    hkl, q = hkl[keep], q[keep]
    stol = q / 2
    fre = np.zeros((len(hkl), len(structure)))
    fim = np.zeros_like(fre)
    for j in range(len(structure)):
        z, ch = int(structure.numbers[j]), int(structure.charges[j])
        w = structure.occupancy[j] * np.exp(-structure.b_iso[j] * stol ** 2)
        fp, fpp = (anomalous or {}).get(z, (0.0, 0.0))
        fre[:, j] = w * (f0(z, ch, stol) + fp)
        fim[:, j] = w * fpp
    phase = np.exp(2j * np.pi * hkl @ structure.frac.T)
    f_plus = ((fre + 1j * fim) * phase).sum(axis=1)
    f_minus = ((fre + 1j * fim) * np.conj(phase)).sum(axis=1)
    return hkl, 1 / q, 0.5 * (np.abs(f_plus) ** 2 + np.abs(f_minus) ** 2)


def merge_lines(x, values, tol):
    """Merge lines whose positions x lie within ``tol`` of their neighbour
    (gap clustering, robust where rounding would split a cluster)."""
    order = np.argsort(x, kind="stable")
    xs, vs = np.asarray(x)[order], np.asarray(values)[order]
    group = np.concatenate([[0], np.cumsum(np.diff(xs) > tol)])
    counts = np.bincount(group)
    return np.bincount(group, weights=xs) / counts, np.bincount(group, weights=vs)


def idealized(s: xf.Structure, b_per_element: bool = True) -> xf.Structure:
    """The structure symmetrized by spglib (standard setting, exact symmetry), with
    a different B for each element so Debye-Waller damping is exercised."""
    lattice, frac, numbers = spglib.standardize_cell((s.lattice, s.frac, s.numbers), to_primitive=False,
                                                      no_idealize=False, symprec=1e-3)
    b = 0.3 + 0.02 * numbers if b_per_element else None
    return xf.Structure.from_arrays(lattice, frac, [int(z) for z in numbers], b_iso=b, label=s.label)


def assert_matches_brute_force(sim: xf.Simulator, s: xf.Structure, anomalous=None):
    refl = sim.reflections([s])
    hkl, d, f2 = brute_force(s, sim.d_min, anomalous)
    # Lines within rounding of the d_min sphere may fall on either side of it.
    edge = sim.d_min * (1 + 1e-6)
    hkl, d, f2 = hkl[d > edge], d[d > edge], f2[d > edge]
    inside = refl.d > edge
    refl = dataclasses.replace(refl, hkl=refl.hkl[inside], d=refl.d[inside], F2=refl.F2[inside],
                               multiplicity=refl.multiplicity[inside])
    total_unique = np.sum(refl.multiplicity * refl.F2)
    # Orbits tile the shell: every non-vanishing hkl is counted exactly once.
    threshold = 1e-6 * f2.max()
    assert refl.multiplicity[refl.F2 >= threshold].sum() == np.sum(f2 >= threshold)
    np.testing.assert_allclose(total_unique, f2.sum(), rtol=1e-9)
    # Same line list after merging reflections that share a d-spacing.
    d_ref, i_ref = merge_lines(d, f2, tol=1e-6)
    d_ours, i_ours = merge_lines(refl.d, refl.multiplicity * refl.F2, tol=1e-6)
    strong = i_ref > 1e-6 * i_ref.max()
    for dd, ii in zip(d_ref[strong], i_ref[strong]):
        j = np.argmin(np.abs(d_ours - dd))
        assert abs(d_ours[j] - dd) < 1e-6, f"{s.label}: line at d = {dd} missing"
        assert i_ours[j] == pytest.approx(ii, rel=1e-8, abs=1e-10 * i_ref.max())


# --------------------------------------------------------------- hand cases

def rock_salt(a: float, cation: str, anion: str, **kw) -> xf.Structure:
    fcc = np.array([[0, 0, 0], [0, .5, .5], [.5, 0, .5], [.5, .5, 0]])
    return xf.Structure.from_arrays(lattice=(a, a, a, 90, 90, 90), frac=np.vstack([fcc, fcc + .5]) % 1,
                                    species=[cation] * 4 + [anion] * 4, **kw)


def silicon() -> xf.Structure:
    fcc = np.array([[0, 0, 0], [0, .5, .5], [.5, 0, .5], [.5, .5, 0]])
    return xf.Structure.from_arrays(lattice=(5.4311, 5.4311, 5.4311, 90, 90, 90),
                                    frac=np.vstack([fcc, fcc + .25]) % 1, species=["Si"] * 8)


def test_nacl_by_hand():
    s = rock_salt(5.6402, "Na+", "Cl-")
    sim = xf.Simulator("CuKa1", normalization="none")
    p = sim.peaks(s)
    table = {tuple(h): (m, f2, d) for h, m, f2, d in zip(p.hkl, p.multiplicity, p.F2, p.d)}
    # Face-centred: only all-even or all-odd hkl appear.
    assert all(len({x % 2 for x in h}) == 1 for h in table)
    assert [table[h][0] for h in [(1, 1, 1), (2, 0, 0), (2, 2, 0), (3, 1, 1), (2, 2, 2)]] == [8, 6, 12, 24, 8]
    for h, sign in [((1, 1, 1), -1), ((2, 0, 0), 1), ((2, 2, 0), 1), ((3, 1, 1), -1)]:
        d = 5.6402 / math.sqrt(sum(x * x for x in h))
        stol = 1 / (2 * d)
        # F = 4 (f_Na + f_Cl) for all-even, 4 (f_Na - f_Cl) for all-odd (ions: Na+, Cl-).
        expected = (4 * (f0(11, 1, stol) + sign * f0(17, -1, stol))) ** 2
        assert table[h][1] == pytest.approx(expected, rel=1e-9)
        assert table[h][2] == pytest.approx(d, rel=1e-12)
    # Ion coefficients really are used: Cl- differs from neutral Cl.
    assert it92_coefficients(17, -1) != it92_coefficients(17, 0)


def test_silicon_by_hand():
    sim = xf.Simulator("CuKa1", two_theta=(10, 150), n_points=8192, normalization="none")
    p = sim.peaks(silicon())
    table = {tuple(h): (m, f2) for h, m, f2 in zip(p.hkl, p.multiplicity, p.F2)}
    assert (2, 0, 0) not in table and (4, 2, 0) not in table  # d-glide / F-centring absences
    a = 5.4311
    for h, factor, mult in [((1, 1, 1), 32, 8), ((2, 2, 0), 64, 12), ((3, 1, 1), 32, 24), ((4, 0, 0), 64, 6)]:
        stol = math.sqrt(sum(x * x for x in h)) / (2 * a)
        assert table[h][0] == mult
        assert table[h][1] == pytest.approx(factor * f0(14, 0, stol) ** 2, rel=1e-9)
    # 222 is not a space-group absence but vanishes for atoms on 8a (a "special" extinction).
    assert table[(2, 2, 2)][1] < 1e-20
    # Relative intensities M |F|^2 LP: 111 is the strongest silicon line for Cu K-alpha.
    assert tuple(p.hkl[np.argmax(p.intensity)]) == (1, 1, 1)


def test_neutron_mno_negative_scattering_length():
    """MnO: b(Mn) = -3.73 fm, b(O) = +5.803 fm, so for neutrons 111 (F = 4(b_Mn - b_O))
    is far stronger than 200 (F = 4(b_Mn + b_O)) -- the reverse of X-rays."""
    b_mn, b_o = gemmi.Element("Mn").neutron92.get_coefs()[0], gemmi.Element("O").neutron92.get_coefs()[0]
    assert b_mn < 0
    s = rock_salt(4.445, "Mn", "O")
    neutron = xf.Simulator(1.54, probe="neutron", normalization="none").peaks(s)
    xray = xf.Simulator(1.54, normalization="none").peaks(s)
    n = {tuple(h): (f2, i, tt) for h, f2, i, tt in zip(neutron.hkl, neutron.F2, neutron.intensity, neutron.two_theta)}
    assert n[(1, 1, 1)][0] == pytest.approx((4 * (b_mn - b_o)) ** 2, rel=1e-9)
    assert n[(2, 0, 0)][0] == pytest.approx((4 * (b_mn + b_o)) ** 2, rel=1e-9)
    # No polarization factor for neutrons: I = M F^2 / (sin^2 theta cos theta).
    th = math.radians(n[(1, 1, 1)][2] / 2)
    assert n[(1, 1, 1)][1] == pytest.approx(8 * n[(1, 1, 1)][0] / (math.sin(th) ** 2 * math.cos(th)), rel=1e-9)
    x = dict(zip(map(tuple, xray.hkl), xray.intensity))
    assert n[(1, 1, 1)][1] > 5 * n[(2, 0, 0)][1] and x[(2, 0, 0)] > x[(1, 1, 1)]


def test_debye_waller_and_occupancy_scale_f():
    base = rock_salt(5.64, "Na", "Cl")
    sim = xf.Simulator("CuKa1", normalization="none")
    p0 = sim.peaks(base)
    pb = sim.peaks(base.with_b_iso(1.5))
    stol2 = 1 / (4 * p0.d ** 2)
    np.testing.assert_allclose(pb.F2, p0.F2 * np.exp(-2 * 1.5 * stol2), rtol=1e-9)
    half = rock_salt(5.64, "Na", "Cl", occupancy=np.full(8, 0.5))
    np.testing.assert_allclose(sim.peaks(half).F2, 0.25 * p0.F2, rtol=1e-12)


# -------------------------------------------- brute force on real structures

def test_symmetry_reduced_equals_brute_force_real(mp20_structures):
    sim = xf.Simulator("CuKa1", two_theta=(5, 70), normalization="none")
    for s in mp20_structures[:40]:
        assert_matches_brute_force(sim, idealized(s))


def test_raw_relaxed_structures_total_intensity(mp20_structures):
    """As given (symmetric only within spglib's tolerance), the symmetry-reduced
    sum still equals the brute-force sum to the precision of the input."""
    sim = xf.Simulator("CuKa1", two_theta=(5, 70), normalization="none")
    for s in mp20_structures[:40]:
        refl = sim.reflections([s])
        _, d, f2 = brute_force(s, sim.d_min * 1.001)
        inside = refl.d > sim.d_min * 1.001
        np.testing.assert_allclose(np.sum((refl.multiplicity * refl.F2)[inside]), f2.sum(), rtol=2e-5)


def _transformed(s: xf.Structure, p: np.ndarray, shift=(0.0, 0.0, 0.0)) -> xf.Structure:
    """Same crystal in the cell with basis rows P @ A (integer P, det = +-1 or a supercell)."""
    p = np.asarray(p, dtype=float)
    lattice = p @ s.lattice
    n = int(round(abs(np.linalg.det(p))))
    # Replicate the atoms so the new cell holds n copies of the old content.
    shifts = np.array([[i, j, k] for i in range(-3, 4) for j in range(-3, 4) for k in range(-3, 4)], dtype=float)
    cart = ((s.frac[None, :, :] + shifts[:, None, :]) @ s.lattice).reshape(-1, 3)
    frac = cart @ np.linalg.inv(lattice) + np.asarray(shift)
    inside = np.all((frac >= -1e-9) & (frac < 1 - 1e-9), axis=1)
    idx = np.tile(np.arange(len(s)), len(shifts))[inside]
    assert len(idx) == n * len(s)
    species = [f"{gemmi.Element(int(z)).name}" for z in s.numbers[idx]]
    return xf.Structure.from_arrays(lattice, frac[inside] % 1, species, occupancy=s.occupancy[idx],
                                    b_iso=s.b_iso[idx], charges=s.charges[idx])


@pytest.mark.parametrize("name,p", [
    ("oblique (non-reduced) cell", [[1, 1, 0], [0, 1, 0], [0, 1, 1]]),
    ("permuted, left-handed avoided", [[0, 1, 0], [0, 0, 1], [1, 0, 0]]),
    ("2x1x1 supercell", [[2, 0, 0], [0, 1, 0], [0, 0, 1]]),
])
def test_brute_force_other_settings(mp20_structures, name, p):
    sim = xf.Simulator("CuKa1", two_theta=(5, 60), normalization="none")
    for s in mp20_structures[:8]:
        s = idealized(s)
        t = _transformed(s, p, shift=(0.137, 0.0, 0.291))
        assert_matches_brute_force(sim, t)
        # The powder pattern does not depend on the choice of cell.
        # A supercell of n cells has F n times larger on the original lattice points.
        y_s, y_t = sim.pattern(s), sim.pattern(t)
        scale = (len(t) / len(s)) ** 2
        np.testing.assert_allclose(y_t, scale * y_s, atol=1e-5 * scale * y_s.max())


def test_centred_conventional_cell():
    """F-centred conventional NaCl (4 formula units) vs its primitive cell."""
    conv = rock_salt(5.64, "Na+", "Cl-")
    prim = xf.Structure.from_arrays(np.array([[0, .5, .5], [.5, 0, .5], [.5, .5, 0]]) * 5.64,
                                    [[0, 0, 0], [.5, .5, .5]], ["Na+", "Cl-"])
    sim = xf.Simulator("CuKa1", normalization="none")
    assert_matches_brute_force(sim, conv)
    pc, pp = sim.peaks(conv), sim.peaks(prim)
    np.testing.assert_allclose(pc.two_theta, pp.two_theta, atol=1e-9)
    np.testing.assert_allclose(pc.intensity, 16 * pp.intensity, rtol=1e-9)  # F scales with 4 formula units


def test_partial_occupancy_mixed_site():
    """A disordered Fe/Co site: symmetry must treat the mixed site as one scatterer."""
    fcc = np.array([[0, 0, 0], [0, .5, .5], [.5, 0, .5], [.5, .5, 0]])
    frac = np.vstack([fcc, fcc, fcc + 0.5]) % 1
    s = xf.Structure.from_arrays((4.2, 4.2, 4.2, 90, 90, 90), frac, ["Fe"] * 4 + ["Co"] * 4 + ["O"] * 4,
                                 occupancy=[0.3] * 4 + [0.7] * 4 + [1.0] * 4)
    assert xf.space_group(s)[0] == 225
    assert_matches_brute_force(xf.Simulator("CuKa1", normalization="none"), s)


def test_anomalous_dispersion_friedel_mean(mp20_structures):
    sim = xf.Simulator("CuKa1", two_theta=(5, 60), normalization="none", anomalous=True)
    energy = gemmi.hc / 1.54056
    for s in mp20_structures[:6]:
        s = idealized(s)
        anomalous = {int(z): gemmi.cromer_liberman(z=int(z), energy=energy) for z in set(s.numbers)}
        assert_matches_brute_force(sim, s, anomalous)


# ---------------------------------------------------------------- gemmi

def gemmi_small_structure(s: xf.Structure) -> gemmi.SmallStructure:
    ss = gemmi.SmallStructure()
    ss.cell = gemmi.UnitCell(*s.cell_parameters)
    for x, z, occ, b in zip(s.frac, s.numbers, s.occupancy, s.b_iso):
        site = gemmi.SmallStructure.Site()
        site.element = gemmi.Element(int(z))
        site.fract = gemmi.Fractional(*x)
        site.occ = float(occ)
        site.u_iso = float(b) / (8 * math.pi ** 2)
        ss.add_site(site)
    ss.setup_cell_images()
    return ss


def test_structure_factors_match_gemmi(mp20_structures):
    """|F|^2 vs gemmi.StructureFactorCalculatorX (same IT92 table, neutral atoms) on
    200 real structures: relative error < 1e-4 on reflections above 1e-3 of the strongest."""
    sim = xf.Simulator("CuKa1", two_theta=(5, 90), normalization="none")
    worst = 0.0
    n_checked = 0
    for s in mp20_structures:
        s = s.with_b_iso(RNG.uniform(0.1, 1.2, size=len(s)))
        refl = sim.reflections([s])
        # gemmi's lattice (a along x) differs from ours by a rotation; fractional
        # coordinates and hkl are the same.
        calc = gemmi.StructureFactorCalculatorX(gemmi.UnitCell(*s.cell_parameters))
        ss = gemmi_small_structure(s)
        ref = np.array([abs(calc.calculate_sf_from_small_structure(ss, [int(v) for v in h])) ** 2 for h in refl.hkl])
        strong = ref > 1e-3 * ref.max()
        rel = np.abs(refl.F2[strong] - ref[strong]) / ref[strong]
        worst = max(worst, rel.max())
        n_checked += strong.sum()
    assert n_checked > 10_000
    assert worst < 1e-4, worst


# -------------------------------------------------------------- pymatgen

def _pymatgen_pairs(rows, n):
    """(xrdflow, pymatgen) versions of the same idealized structures.

    MP structures are symmetric only within ~1e-4 angstrom, so lines that
    symmetry makes equal are split by up to ~1e-3 deg in pymatgen while
    xrdflow puts them at their symmetric mean (symmetrized metric).  Both
    programs get the spglib-idealized structure so positions can be compared
    to 1e-4 deg.
    """
    pytest.importorskip("pymatgen.analysis.diffraction.xrd")
    from pymatgen.core import Lattice
    from pymatgen.core import Structure as PmgStructure

    for row in rows[:n]:
        s = idealized(xf.Structure.from_cif(row["cif"]), b_per_element=False)
        yield s, PmgStructure(Lattice(s.lattice), [int(z) for z in s.numbers], s.frac)


def test_lines_match_pymatgen(mp20_rows):
    """Merged line positions within 1e-4 deg and relative intensities close to
    pymatgen's XRDCalculator (same wavelength).  Intensity differences come from
    the form-factor tables (pymatgen's own 4-Gaussian fits vs IT92); the worst
    case over these 60 structures is asserted below and quoted in README."""
    from pymatgen.analysis.diffraction.xrd import XRDCalculator

    calc = XRDCalculator(wavelength=1.54056)
    sim = xf.Simulator("CuKa1", two_theta=(5, 90), normalization="none")
    worst_pos, worst_int = 0.0, []
    for s, pm_structure in _pymatgen_pairs(mp20_rows, 60):
        ours = sim.peaks(s)
        pm = calc.get_pattern(pm_structure, two_theta_range=(5, 90))
        # Both sides merged by position (pymatgen splits some families into several rows).
        tt_ref, i_ref = merge_lines(np.asarray(pm.x), np.asarray(pm.y), tol=1e-4)
        tt_ours, i_ours = merge_lines(ours.two_theta, ours.intensity, tol=1e-4)
        i_ref, i_ours = 100 * i_ref / i_ref.max(), 100 * i_ours / i_ours.max()
        worst_int.append(0.0)
        for t, i in zip(tt_ref[i_ref > 1.0], i_ref[i_ref > 1.0]):
            j = np.argmin(np.abs(tt_ours - t))
            worst_pos = max(worst_pos, abs(tt_ours[j] - t))
            worst_int[-1] = max(worst_int[-1], abs(i_ours[j] - i))
        for t in tt_ours[i_ours > 1.0]:  # and nothing strong that pymatgen lacks
            assert np.min(np.abs(tt_ref - t)) < 1e-4
    assert worst_pos < 1e-4
    # Worst line per structure, in % of the strongest line.  Measured on these
    # 60: median 0.4 %, max 3.4 % (BeH2: hydrogen is where the two tables differ most).
    assert np.median(worst_int) < 1.0 and max(worst_int) < 5.0, worst_int


def test_line_positions_exact_vs_pymatgen(mp20_rows):
    """Bragg angles of individual hkl agree with pymatgen's d_hkl to 1e-4 degrees."""
    sim = xf.Simulator("CuKa1", two_theta=(5, 90), normalization="none")
    for s, pm_structure in _pymatgen_pairs(mp20_rows, 30):
        p = sim.peaks(s)
        d_ref = np.array([pm_structure.lattice.d_hkl(h) for h in p.hkl])
        tt_ref = np.degrees(2 * np.arcsin(1.54056 / (2 * d_ref)))
        np.testing.assert_allclose(p.two_theta, tt_ref, atol=1e-4, rtol=0)
