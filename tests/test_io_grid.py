"""xrdflow.io.pattern_on_model_grid: the two wavelength policies and the d-spacing conversion."""
from types import SimpleNamespace

import numpy as np
import pytest

import xrdflow as xf
from xrdflow.io import GridMismatchError, pattern_on_model_grid


def _pattern(wavelengths, peak_deg=30.0):
    tt = np.linspace(10, 60, 501)
    return SimpleNamespace(two_theta_deg=tt, intensity=np.exp(-0.5 * ((tt - peak_deg) / 0.1) ** 2),
                           wavelengths=wavelengths, radiation=None, source="p.xy")


@pytest.fixture(scope="module")
def cu():
    return xf.Simulator(radiation="CuKa1", two_theta=(5, 90), n_points=2048, W=0.04)


def test_missing_wavelength_policies(cu):
    p = _pattern(None)
    with pytest.raises(ValueError, match="does not say its wavelength"):
        pattern_on_model_grid(p, cu, missing_wavelength="raise")
    y, info = pattern_on_model_grid(p, cu, missing_wavelength="assume_model")
    assert info["wavelength_source"] == "assumed" and not info["converted"]
    assert abs(cu.two_theta_deg[np.argmax(y)] - 30.0) < 0.1


def test_conflicting_wavelength_policies(cu):
    p = _pattern((0.7093,), peak_deg=14.0)                       # measured with Mo Ka1
    with pytest.raises(ValueError, match="the file says the wavelength is 0.7093"):
        pattern_on_model_grid(p, cu, "CuKa1", conflicting_wavelength="raise")
    y, info = pattern_on_model_grid(p, cu, "CuKa1", conflicting_wavelength="override")
    assert info["wavelength_source"] == "given" and not info["converted"]
    assert abs(cu.two_theta_deg[np.argmax(y)] - 14.0) < 0.1     # taken as Cu: not moved
    # the file's Mo wavelength: the peak moves through d-spacing (Bragg's law)
    y, info = pattern_on_model_grid(p, cu)
    lam_cu = float(cu.radiation.primary_wavelength)
    d = 0.7093 / (2 * np.sin(np.radians(7.0)))
    assert info["converted"] and info["wavelength_source"] == "file"
    assert abs(cu.two_theta_deg[np.argmax(y)] - 2 * np.degrees(np.arcsin(lam_cu / (2 * d)))) < 0.1
    with pytest.raises(ValueError, match="conflicting_wavelength must be"):
        pattern_on_model_grid(p, cu, conflicting_wavelength="ignore")


def test_no_overlap_is_a_grid_mismatch(cu):
    p = _pattern((1.5406,))
    p.two_theta_deg = np.linspace(100, 120, 501)
    with pytest.raises(GridMismatchError) as e:
        pattern_on_model_grid(p, cu)
    assert e.value.reason == "no_overlap"
