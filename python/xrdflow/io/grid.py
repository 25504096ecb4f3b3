"""A measured pattern moved onto a model's 2-theta grid (shared by ``evaluate`` and ``classify``).

1. When the pattern's wavelength differs from the model's, every 2-theta is converted through
   the d-spacing: d = lambda_pattern / (2 sin theta_pattern), 2 theta_model =
   2 asin(lambda_model / (2 d)) (Bragg's law; primary wavelengths; points with no reachable
   angle are dropped).
2. Linear interpolation onto the model's grid; grid points outside the measured range get the
   lowest measured intensity (encoders rescale each pattern by its own min and max, so a
   constant fill adds no peak).

The callers differ on purpose in policy, chosen by keyword:

* ``missing_wavelength``: the file states none and none is given -> ``"raise"`` or
  ``"assume_model"`` (use the model's, ``info["wavelength_source"] == "assumed"``);
* ``conflicting_wavelength``: ``wavelength=`` contradicts the file -> ``"raise"`` or
  ``"override"`` (the given one wins).
"""
from __future__ import annotations

import math

import numpy as np

__all__ = ["convert_two_theta", "pattern_on_model_grid", "GridMismatchError"]

MISSING_POLICIES = ("raise", "assume_model")
CONFLICT_POLICIES = ("raise", "override")


class GridMismatchError(ValueError):
    """The pattern cannot be put on the model's grid; ``reason`` is "unreachable" or "no_overlap"."""

    def __init__(self, message: str, reason: str, **details):
        super().__init__(message)
        self.reason = reason
        self.details = details


def convert_two_theta(two_theta_deg, from_wavelength: float, to_wavelength: float):
    """(2-theta at ``to_wavelength``, mask of points that exist there) via d-spacing (Bragg's law)."""
    for name, value in (("from_wavelength", from_wavelength), ("to_wavelength", to_wavelength)):
        if not (isinstance(value, (int, float, np.floating)) and math.isfinite(value) and value > 0):
            raise ValueError(f"{name} must be a positive wavelength in angstrom, got {value!r}")
    tt = np.asarray(two_theta_deg, dtype=np.float64)
    s = np.sin(np.radians(tt / 2)) * (to_wavelength / from_wavelength)
    ok = (s > 0) & (s < 1)
    out = np.full_like(tt, np.nan)
    out[ok] = 2 * np.degrees(np.arcsin(s[ok]))
    return out, ok


def _given_wavelength(wavelength) -> "float | None":
    if wavelength is None:
        return None
    from ..radiation import parse_radiation  # "CuKa", 1.5406, "1.5406", a Radiation

    if isinstance(wavelength, str):
        try:
            wavelength = float(wavelength)
        except ValueError:
            pass
    return float(parse_radiation(wavelength).primary_wavelength)


def pattern_on_model_grid(pattern, simulator, wavelength=None, *, missing_wavelength: str = "raise",
                          conflicting_wavelength: str = "raise", use_reader_radiation: bool = True,
                          same_wavelength_tol_angstrom: "float | None" = None) -> tuple[np.ndarray, dict]:
    """``(y, info)``: ``pattern`` (a :class:`~xrdflow.io.MeasuredPattern` or anything with
    ``two_theta_deg``, ``intensity``, ``wavelengths``) as (n_points,) float32 on ``simulator``'s grid.

    wavelength: what the user said ("CuKa", 1.5406, "1.5406", a Radiation), or None.
    missing_wavelength / conflicting_wavelength: the policies (see the module docs).
    use_reader_radiation: when the file states no wavelength, a ``pattern.radiation`` set by the
        reader (``read_pattern(..., wavelength=...)``) counts as the pattern's wavelength.
    same_wavelength_tol_angstrom: wavelengths closer than this are equal (no conversion);
        default 1e-6 of the model's.

    info: ``wavelength_pattern_angstrom``, ``wavelength_model_angstrom``, ``wavelength_source``
    ("file", "reader", "given" or "assumed"), ``converted``, ``coverage`` (fraction of the grid
    inside the measured range), ``two_theta_range_deg`` (measured range at the model's
    wavelength), ``grid_deg`` (first, last, n).  Raises :class:`GridMismatchError` when no point
    is reachable or the ranges do not overlap.
    """
    if missing_wavelength not in MISSING_POLICIES:
        raise ValueError(f"missing_wavelength must be one of {MISSING_POLICIES}, got {missing_wavelength!r}")
    if conflicting_wavelength not in CONFLICT_POLICIES:
        raise ValueError(f"conflicting_wavelength must be one of {CONFLICT_POLICIES}, got {conflicting_wavelength!r}")
    source_name = getattr(pattern, "source", "") or "the pattern"
    model_lambda = float(simulator.radiation.primary_wavelength)
    given = _given_wavelength(wavelength)
    stated = getattr(pattern, "wavelengths", None)
    reader_rad = getattr(pattern, "radiation", None) if use_reader_radiation else None
    if stated and not (given is not None and conflicting_wavelength == "override"):
        lam, how = float(stated[0]), "file"
        if given is not None and abs(given - lam) > 1e-4 * lam:
            raise ValueError(f"{source_name}: the file says the wavelength is {lam:g} A but "
                             f"--wavelength says {given:g} A; drop --wavelength or fix the file")
    elif given is not None and (stated or reader_rad is None):
        lam, how = given, "given"
    elif reader_rad is not None:
        lam, how = float(reader_rad.primary_wavelength), "reader"
    elif missing_wavelength == "assume_model":
        lam, how = model_lambda, "assumed"
    else:
        raise ValueError(f"{source_name}: the file does not say its wavelength; give it with "
                         "--wavelength (e.g. CuKa, MoKa or 1.5406 in angstrom)")
    tol = 1e-6 * model_lambda if same_wavelength_tol_angstrom is None else same_wavelength_tol_angstrom
    tt = np.asarray(pattern.two_theta_deg, dtype=np.float64)
    y = np.asarray(pattern.intensity, dtype=np.float64)
    info = {"wavelength_pattern_angstrom": lam, "wavelength_model_angstrom": model_lambda,
            "wavelength_source": how, "converted": False}
    if abs(lam - model_lambda) > tol:
        tt, ok = convert_two_theta(tt, lam, model_lambda)
        tt, y = tt[ok], y[ok]
        info["converted"] = True
        if tt.size < 2:
            raise GridMismatchError(
                f"{source_name}: after converting 2-theta from {lam:g} A to the model's "
                f"{model_lambda:g} A no measured point is reachable; check the wavelength",
                "unreachable", wavelength_pattern=lam, wavelength_model=model_lambda)
    grid = np.asarray(simulator.two_theta_deg, dtype=np.float64)
    inside = (grid >= tt[0]) & (grid <= tt[-1])
    info["coverage"] = float(inside.mean())
    info["two_theta_range_deg"] = (float(tt[0]), float(tt[-1]))
    info["grid_deg"] = (float(grid[0]), float(grid[-1]), int(len(grid)))
    if not inside.any():
        raise GridMismatchError(
            f"{source_name}: the pattern covers 2-theta {tt[0]:.2f}-{tt[-1]:.2f} deg at the "
            f"model's wavelength {model_lambda:g} A, outside the model's range "
            f"{grid[0]:g}-{grid[-1]:g} deg; check the file's wavelength",
            "no_overlap", two_theta_range_deg=info["two_theta_range_deg"], grid_deg=info["grid_deg"])
    out = np.interp(grid, tt, y)
    out[~inside] = float(y.min())
    return out.astype(np.float32), info
