"""Rendering: profiles, cutoff, doublets, grids, normalization and batches."""
from __future__ import annotations

import math

import numpy as np
import pytest

import xrdflow as xf
from xrdflow.radiation import KALPHA2_RATIO, TUBES


def cubic_p(a: float = 4.0, element: str = "Cu") -> xf.Structure:
    """One atom in a primitive cubic cell: isolated, easily predicted lines."""
    return xf.Structure.from_arrays((a, a, a, 90, 90, 90), [[0, 0, 0]], [element])


def lp(two_theta_deg, cos2m=1.0):
    th = np.radians(np.asarray(two_theta_deg) / 2)
    c2t = np.cos(2 * th)
    return (1 + c2t ** 2 * cos2m) / (np.sin(th) ** 2 * np.cos(th) * (1 + cos2m))


def test_isolated_peak_area_equals_intensity():
    """With normalization='none' a peak's area (per degree) is M |F|^2 LP: the
    profile has unit area; the truncated Lorentzian tails lose < 3 %."""
    sim = xf.Simulator("CuKa1", two_theta=(20, 40), n_points=20001, normalization="none", W=0.01, Y=0.02)
    s = cubic_p()
    p = sim.peaks(s)
    y = sim.pattern(s)
    (i100,) = np.flatnonzero((p.hkl == [1, 0, 0]).all(axis=1))
    window = np.abs(sim.two_theta_deg - p.two_theta[i100]) < 3
    area = np.trapezoid(y[window], sim.two_theta_deg[window])
    assert area == pytest.approx(p.intensity[i100], rel=0.03)
    assert area < p.intensity[i100]
    assert p.intensity[i100] == pytest.approx(6 * p.F2[i100] * lp(p.two_theta[i100]), rel=1e-12)


@pytest.mark.parametrize("W,Y", [(0.01, 0.0), (0.0, 0.05), (0.004, 0.02)])
def test_profile_cutoff_error_below_1e3_of_height(W, Y):
    s = cubic_p()
    kw = dict(two_theta=(25, 40), n_points=15001, normalization="none", W=W, Y=Y, radiation="CuKa1")
    cut = xf.Simulator(**kw).pattern(s)
    exact = xf.Simulator(**kw, cutoff_rel=1e-12).pattern(s)
    assert np.max(np.abs(exact - cut)) <= 1e-3 * exact.max()
    # and the default cutoff is not grossly conservative: 1e-2 would be visible
    coarse = xf.Simulator(**kw, cutoff_rel=1e-1).pattern(s)
    assert np.max(np.abs(exact - coarse)) > 1e-3 * exact.max()


def test_tch_widths_match_formulas():
    sim = xf.Simulator("CuKa1", U=0.01, V=-0.005, W=0.004, X=0.0, Y=0.0)
    tt = np.array([20.0, 50.0, 80.0])
    fwhm, eta, _ = sim.peak_shape(tt)
    t = np.tan(np.radians(tt / 2))
    np.testing.assert_allclose(fwhm, np.sqrt(0.01 * t ** 2 - 0.005 * t + 0.004), rtol=1e-12)
    np.testing.assert_allclose(eta, 0.0, atol=1e-15)
    lor = xf.Simulator("CuKa1", U=0, V=0, W=0, X=0.03, Y=0.01, n_points=16384)
    fwhm, eta, _ = lor.peak_shape(tt)
    np.testing.assert_allclose(fwhm, 0.03 * t + 0.01 / np.cos(np.radians(tt / 2)), rtol=1e-12)
    np.testing.assert_allclose(eta, 1.36603 - 0.47719 + 0.11116, rtol=1e-12)


def test_scherrer_size_broadening():
    """FWHM (radians) = K lambda / (L cos theta) for a pure-size Lorentzian."""
    size_nm, lam = 20.0, 1.54056
    sim = xf.Simulator(lam, U=0, V=0, W=0, crystallite_size_nm=size_nm)
    tt = np.array([30.0, 60.0])
    fwhm, eta, _ = sim.peak_shape(tt)
    expected = np.degrees(0.9 * lam / (size_nm * 10 * np.cos(np.radians(tt / 2))))
    np.testing.assert_allclose(fwhm, expected, rtol=1e-12)
    assert np.all(eta > 0.99)
    strain = xf.Simulator(lam, U=0, V=0, W=0, microstrain=1e-3, two_theta=(20, 90))
    fwhm, _, _ = strain.peak_shape(tt)
    np.testing.assert_allclose(fwhm, np.degrees(4e-3 * np.tan(np.radians(tt / 2))), rtol=1e-12)


def test_kalpha_doublet_positions_and_ratio():
    """Cu K-alpha: two peaks at the angles Bragg's law gives for each line, with
    areas in the ratio 0.5 x LP(2theta_2) / LP(2theta_1)."""
    s = cubic_p(3.0)
    sim = xf.Simulator("CuKa", two_theta=(100, 125), n_points=25001, normalization="none", U=0, V=0, W=0.002)
    y = sim.pattern(s)
    ka1, ka2 = TUBES["Cu"]
    d = 3.0 / math.sqrt(1 + 4 + 4)  # the (2 2 1) / (3 0 0) line near 112 degrees
    t1 = 2 * math.degrees(math.asin(ka1 / (2 * d)))
    t2 = 2 * math.degrees(math.asin(ka2 / (2 * d)))
    x = sim.two_theta_deg
    assert abs(x[np.argmax(np.where(np.abs(x - t1) < 0.1, y, 0))] - t1) < 2e-3
    assert abs(x[np.argmax(np.where(np.abs(x - t2) < 0.1, y, 0))] - t2) < 2e-3
    mid = 0.5 * (t1 + t2)
    a1 = np.trapezoid(np.where((x < mid) & (x > t1 - 0.3), y, 0), x)
    a2 = np.trapezoid(np.where((x >= mid) & (x < t2 + 0.3), y, 0), x)
    assert a2 / a1 == pytest.approx(KALPHA2_RATIO * lp(t2) / lp(t1), rel=0.01)


def test_monochromator_polarization():
    s = cubic_p()
    plain = xf.Simulator("CuKa1", normalization="none").peaks(s)
    mono = xf.Simulator("CuKa1", normalization="none", monochromator_two_theta_deg=26.6).peaks(s)
    cos2m = math.cos(math.radians(26.6)) ** 2
    np.testing.assert_allclose(mono.intensity / plain.intensity,
                               lp(plain.two_theta, cos2m) / lp(plain.two_theta), rtol=1e-12)


def test_zero_shift_moves_peaks():
    s = cubic_p()
    base = xf.Simulator("CuKa1", two_theta=(20, 30), n_points=10001)
    shifted = xf.Simulator("CuKa1", two_theta=(20, 30), n_points=10001, zero_shift_deg=0.1)
    x = base.two_theta_deg
    assert x[np.argmax(shifted.pattern(s))] - x[np.argmax(base.pattern(s))] == pytest.approx(0.1, abs=2e-3)
    assert base.peaks(s).two_theta == pytest.approx(shifted.peaks(s).two_theta)  # Bragg angles unchanged


def test_q_grid_peak_at_two_pi_over_d():
    s = cubic_p()
    sim = xf.Simulator("CuKa1", q=(1.0, 3.0), n_points=20001)
    y = sim.pattern(s)
    q_peak = sim.q[np.argmax(y)]
    assert q_peak == pytest.approx(2 * math.pi / 4.0, abs=2e-4)  # (1 0 0) of a = 4 A
    assert sim.axis is sim.q


def test_normalizations():
    s = cubic_p()
    kw = dict(radiation="CuKa", two_theta=(10, 80), n_points=7001)
    assert xf.Simulator(**kw, normalization="max").pattern(s).max() == pytest.approx(1.0)
    sim = xf.Simulator(**kw, normalization="area")
    assert np.trapezoid(sim.pattern(s), sim.two_theta_deg) == pytest.approx(1.0, rel=1e-5)
    raw = xf.Simulator(**kw, normalization="none").pattern(s)
    np.testing.assert_allclose(xf.Simulator(**kw).pattern(s), raw / raw.max(), rtol=1e-5)


def test_step_grid():
    sim = xf.Simulator("CuKa", two_theta=(5, 90), step=0.02)
    assert sim.n_points == 4251
    np.testing.assert_allclose(np.diff(sim.two_theta_deg), 0.02)


def test_batch_equals_single_and_threads_are_deterministic(mp20_structures):
    sim = xf.Simulator("CuKa", two_theta=(10, 60), n_points=2048)
    structs = mp20_structures[:24]
    one = sim.patterns(structs, threads=1)
    two = sim.patterns(structs, threads=2)
    assert one.dtype == np.float32 and one.shape == (24, 2048)
    assert np.array_equal(one, two)  # bitwise: each structure is computed by one thread
    np.testing.assert_array_equal(sim.pattern(structs[5]), one[5])


def test_reflections_cache_rerenders(mp20_structures):
    sim = xf.Simulator("CuKa")
    refl = sim.reflections(mp20_structures[:10])
    assert len(refl) == 10 and refl.offsets[-1] == refl.n_reflections
    assert refl.nbytes > 0 and refl.lattices.shape == (10, 3, 3)
    np.testing.assert_array_equal(sim.render(refl)[0], sim.patterns(mp20_structures[:10]))
    rows = refl.rows(3)
    assert np.all(np.diff(refl.d[rows]) <= 0)  # sorted by decreasing d


def test_long_wavelength_gives_empty_pattern():
    """A wavelength longer than 2 d_max reaches no reflection: zeros, not an error."""
    sim = xf.Simulator(90.0, two_theta=(5, 170), n_points=16384)
    y = sim.pattern(cubic_p())
    assert y.shape == (16384,) and not y.any()
    assert len(sim.peaks(cubic_p())) == 0


def test_pymatgen_and_ase_objects_accepted():
    pytest.importorskip("ase")
    from ase.build import bulk

    sim = xf.Simulator("CuKa")
    y_ase = sim.pattern(bulk("Cu", "fcc", a=3.615))
    y_ref = sim.pattern(xf.Structure.from_arrays(np.eye(3) * 3.615, [[0, 0, 0], [0, .5, .5], [.5, 0, .5], [.5, .5, 0]],
                                                 ["Cu"] * 4))
    np.testing.assert_allclose(y_ase, y_ref, atol=1e-5)


@pytest.mark.parametrize("Y", [0.05, 0.6])
def test_lorentzian_tail_pieces_match_the_formula(Y):
    """Far tails are drawn as linear pieces; inside the cutoff windows each
    peak's tail errs by less than 1e-5 of its height, so the pattern by less
    than 1e-5 of the sum of the overlapping peaks' heights."""
    sim = xf.Simulator("CuKa1", two_theta=(10, 100), n_points=4096, U=0, V=0, W=0, Y=Y, normalization="none")
    s = cubic_p()
    y = sim.pattern(s).astype(np.float64)
    p = sim.peaks(s)
    x = sim.two_theta_deg
    exact = np.zeros_like(x)
    fwhm, eta, cut = sim.peak_shape(p.two_theta)
    for t, i, h, c in zip(p.two_theta, p.intensity, fwhm, cut):
        inside = np.abs(x - t) < c
        exact[inside] += i * 2 / (np.pi * h) / (1 + 4 * (x[inside] - t) ** 2 / h ** 2)
    assert np.all(eta > 0.999)
    heights = p.intensity * 2 / (np.pi * fwhm)
    # Away from the ends, where peaks outside the range (not in the table) reach in.
    inner = (x > x[0] + cut.max()) & (x < x[-1] - cut.max())
    assert inner.sum() > 500
    err = np.abs(y - exact)[inner]
    assert np.max(err) < 1e-5 * heights.sum() + 1e-6 * exact.max()
