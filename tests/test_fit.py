"""Whole-pattern fitting (xrdflow.fit): synthetic round trips with known parameters and
Poisson noise, bad input, JSON/picture/CLI, and the measured TaCr2O6 and XRed patterns
(skipped when ../shared/data is absent)."""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

import xrdflow as xf
from xrdflow import examples
from xrdflow.fit import FitConfig, fit_pattern
from xrdflow.fit.model import PatternModel, compute_phase_data, metric_basis

HERE = Path(__file__).resolve().parent
FIT_DATA = HERE / "data" / "fit"
EXPERIMENTAL = HERE.parents[1] / "shared" / "data" / "experimental"
CU = xf.parse_radiation("CuKa")


def _synthetic(structures, truth: dict, counts, tt=None, background=(80.0, 15.0), seed=0):
    """Render phases with known parameters (the model itself; normalization fixed by the
    truth's own model) and add Poisson noise.  Returns (tt, y, model, vals)."""
    tt = np.arange(15.0, 110.0, 0.02) if tt is None else tt
    phases = [compute_phase_data(s, CU, tt[-1], 0.03) for s in structures]
    m = PatternModel(phases, tt, CU, background_terms=len(background))
    vals = m.values()
    vals.update(truth)
    y = sum(c * m.phase_pattern(i, vals) for i, c in enumerate(counts))
    y = y + m.chebyshev @ np.asarray(background)
    rng = np.random.default_rng(seed)
    return tt, rng.poisson(y).astype(float), m, vals


def _within(value_sigma, truth, k=3.0):
    v, s = value_sigma
    assert s is not None and s > 0
    assert abs(v - truth) <= k * s, f"{v} +- {s} vs {truth}"


def test_metric_basis_counts_free_cell_parameters():
    cubic = compute_phase_data(xf.Structure.from_cif(examples.path("NaCl")), CU, 90, 0.03)
    tetragonal = compute_phase_data(xf.Structure.from_cif(examples.path("RuO2")), CU, 90, 0.03)
    hexagonal = compute_phase_data(xf.Structure.from_cif(FIT_DATA / "Cr2O3.cif"), CU, 90, 0.03)
    assert (cubic.n_free_metric, tetragonal.n_free_metric, hexagonal.n_free_metric) == (1, 2, 2)
    # Identity only (triclinic): all six metric components are free.
    N, piv = metric_basis(np.eye(3, dtype=np.int32)[None])
    assert len(piv) == 6 and np.allclose(N, np.eye(6))


def test_single_phase_round_trip_recovers_parameters():
    s = xf.Structure.from_cif(examples.path("RuO2"))
    truth = {"zero_shift_deg": 0.03, "phase0.metric0": 0.004, "phase0.metric1": -0.003, "phase0.W": 0.01,
             "phase0.Y": 0.02}
    tt, y, m, vals = _synthetic([s], truth, [5000.0])
    res = fit_pattern((tt, y), [s], radiation="CuKa", background_terms=2)
    a, _, c = m.cell(0, vals)[:3]
    ph = res.phases[0]
    _within(res.zero_shift_deg, 0.03)
    _within(ph.cell["a"], a)
    _within(ph.cell["c"], c)
    _within(ph.parameters["W"], 0.01)
    _within(ph.parameters["Y"], 0.02)
    assert ph.cell["b"][0] == ph.cell["a"][0] and ph.cell["gamma"] == (90.0, 0.0)   # tetragonal constraint
    assert 0.8 < res.chi2_red < 1.3 and res.r_wp < 0.12
    assert ph.weight_fraction == (1.0, 0.0)


def test_two_phase_mixture_weight_fractions():
    nacl = xf.Structure.from_cif(examples.path("NaCl"))
    si = xf.Structure.from_cif(examples.path("Si"))
    tt = np.arange(20.0, 100.0, 0.02)
    # Weight fractions 0.3 / 0.7: Rietveld scale S_i proportional to W_i / (cell mass x V).
    phases = [compute_phase_data(s, CU, tt[-1], 0.03) for s in (nacl, si)]
    mv = np.array([p.cell_mass * s.volume for p, s in zip(phases, (nacl, si))])
    S = np.array([0.3, 0.7]) / mv
    m = PatternModel(phases, tt, CU, background_terms=2)
    counts = S / m.norm                      # model columns carry the normalizing constant
    counts *= 20000.0 / counts.max()
    truth = {"zero_shift_deg": -0.02, "phase0.metric0": 0.002, "phase1.metric0": -0.001}
    tt, y, m, vals = _synthetic([nacl, si], truth, counts, tt=tt)
    res = fit_pattern((tt, y), [nacl, si], radiation="CuKa", background_terms=2, profile="uvw")
    _within(res.phases[0].weight_fraction, 0.3)
    _within(res.phases[1].weight_fraction, 0.7)
    assert res.phases[0].weight_fraction[1] < 0.01
    _within(res.zero_shift_deg, -0.02)
    _within(res.phases[1].cell["a"], m.cell(1, vals)[0])


def test_displacement_and_preferred_orientation_round_trip():
    s = xf.Structure.from_cif(examples.path("RuO2"))
    truth = {"displacement_mm": 0.15, "phase0.po_r": 0.85}
    tt, y, m, vals = _synthetic([s], truth, [20000.0], seed=3)
    res = fit_pattern((tt, y), [s], radiation="CuKa", background_terms=2, refine_zero=False, refine_lattice=False,
                      refine_displacement=True, preferred_orientation=True, po_direction=(0, 0, 1), profile="uvw",
                      cell_search=0.0, zero_search_deg=0.0)
    _within(res.displacement_mm, 0.15)
    _within(res.phases[0].parameters["po_r"], 0.85)


def test_bad_inputs_raise_clear_errors():
    s = xf.Structure.from_cif(examples.path("NaCl"))
    tt = np.arange(20.0, 80.0, 0.02)
    y = np.full(tt.size, 100.0)
    with pytest.raises(ValueError, match="wavelength is unknown"):
        fit_pattern((tt, y), [s])
    with pytest.raises(ValueError, match="no reflection between"):
        fit_pattern((np.arange(5.0, 9.0, 0.02), np.full(200, 10.0)), [s], radiation="CuKa")
    with pytest.raises(ValueError, match="impossible bounds"):
        fit_pattern((tt, y), [s], radiation="CuKa", bounds={"W": (0.1, 0.01)})
    with pytest.raises(ValueError, match="outside its bounds"):
        fit_pattern((tt, y), [s], radiation="CuKa", bounds={"zero_shift_deg": (0.1, 0.2)})
    with pytest.raises(ValueError, match="unknown parameter"):
        fit_pattern((tt, y), [s], radiation="CuKa", bounds={"nonsense": (0, 1)})
    with pytest.raises(ValueError, match="must match"):
        fit_pattern((tt, y[:-1]), [s], radiation="CuKa")
    with pytest.raises(ValueError, match="strictly increasing"):
        fit_pattern((tt[::-1], y), [s], radiation="CuKa")
    with pytest.raises(ValueError, match=r"inside \(0, 180\)"):
        fit_pattern((tt + 150, y), [s], radiation="CuKa")
    with pytest.raises(ValueError, match="profile must be"):
        fit_pattern((tt, y), [s], radiation="CuKa", profile="gauss")


def test_json_picture_and_command_line(tmp_path):
    from xrdflow.cli import main

    s = xf.Structure.from_cif(examples.path("Si"))
    tt, y, _, _ = _synthetic([s], {"zero_shift_deg": 0.01}, [3000.0], tt=np.arange(20.0, 90.0, 0.02))
    xy = tmp_path / "si.xy"
    np.savetxt(xy, np.column_stack([tt, y]))
    out_json, out_png = tmp_path / "fit.json", tmp_path / "fit.png"
    assert main(["fit", str(xy), str(examples.path("Si")), "--wavelength", "CuKa", "--profile", "uvw",
                 "--background-terms", "2", "--json", str(out_json), "--plot", str(out_png)]) == 0
    doc = json.loads(out_json.read_text())
    assert 0 < doc["r_wp"] < 0.15 and doc["phases"][0]["cell"]["a"]["sigma"] > 0
    assert abs(doc["zero_shift_deg"]["value"] - 0.01) < 0.005
    assert out_png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # No wavelength in an .xy file and none given: a one-line error, exit status 2.
    assert main(["fit", str(xy), str(examples.path("Si"))]) == 2


# ------------------------------------------------------------------ measured data
def _tacr2o6():
    folder = EXPERIMENTAL / "TaCr2O6"
    if not folder.exists():
        pytest.skip(f"reference data {folder} not present (needs ../shared beside the checkout)")
    lines = (folder / "xrd_measurement_TaCr2O6.dat").read_text().split()
    start, step, _ = (float(v) for v in lines[:3])
    y = np.array([float(v) for v in lines[3:]])
    return start + step * np.arange(y.size), y


def test_tacr2o6_against_fullprf_pcr():
    """FullProf .pcr: zero -0.01113 deg, TaCr2O6 a = 4.648826, c = 3.028236 A, Bov = -2.4738 A^2."""
    tt, y = _tacr2o6()
    rad = xf.Radiation("CuKa (pcr)", (1.540560, 1.544390), (1.0, 0.5))
    res = fit_pattern((tt, y), [FIT_DATA / "TaCr2O6.cif", FIT_DATA / "Cr2O3.cif"], radiation=rad,
                      background_terms=12, refine_b_overall=True)
    ph = res.phases[0]
    assert abs(res.zero_shift_deg[0] - (-0.01113)) < 0.005
    assert abs(ph.cell["a"][0] - 4.648826) < 0.001 and abs(ph.cell["c"][0] - 3.028236) < 0.001
    assert abs(ph.parameters["B_overall"][0] - (-2.4738)) < 0.5
    assert res.r_wp < 0.125
    assert 0.85 < ph.weight_fraction[0] < 0.97


@pytest.mark.parametrize("name,pattern,cif,max_rwp", [("RuO2", "data.csv", "1538150.cif", 0.22),
                                                      ("LiTMO3", "intensity.csv", "LiTMO3.cif", 0.06)])
def test_xred_patterns_fit(name, pattern, cif, max_rwp):
    folder = EXPERIMENTAL / "xred" / name
    if not folder.exists():
        pytest.skip(f"reference data {folder} not present (needs ../shared beside the checkout)")
    a = np.loadtxt(folder / pattern, delimiter=",")
    res = fit_pattern((a[:, 0], a[:, 1]), [folder / cif], radiation="CuKa")
    assert res.r_wp < max_rwp
    start = res.phases[0].cell_start
    assert abs(res.phases[0].cell["a"][0] / start["a"] - 1) < 0.01
