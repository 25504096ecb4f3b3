"""Scattering tables taken from gemmi at run time (never copied by hand).

* X-ray form factors: IT92 Gaussian fits, International Tables Vol. C,
  Table 6.1.1.4, as shipped in gemmi; ion coefficients when the formal charge
  is tabulated, else the neutral atom.
* Anomalous dispersion f', f'': Cromer & Liberman (1970), gemmi.cromer_liberman.
* Neutron coherent scattering lengths: Sears, Neutron News 3, 26 (1992), gemmi's
  Neutron92 table, in fm.
"""
from __future__ import annotations

import functools

import gemmi
import numpy as np


@functools.lru_cache(maxsize=None)
def it92_coefficients(atomic_number: int, charge: int = 0) -> tuple[float, ...]:
    """(a1..a4, b1..b4, c) of f0(s) = sum a_i exp(-b_i s^2) + c, s = sin(theta)/lambda.

    Uses the ion's coefficients when gemmi tabulates that charge, otherwise
    the neutral atom's (e.g. Ta5+ is tabulated, Ta3+ is not).
    """
    element = gemmi.Element(int(atomic_number))
    if charge:
        ignore = gemmi.IT92_get_ignore_charge()
        try:
            gemmi.IT92_set_ignore_charge(False)
            coef = gemmi.IT92_get_exact(element, int(charge))
        finally:
            gemmi.IT92_set_ignore_charge(ignore)
        if coef is not None:
            return tuple(coef.get_coefs())
    coef = element.it92
    if coef is None:
        raise ValueError(f"gemmi has no IT92 X-ray form factor for {element.name} (Z={atomic_number})")
    return tuple(coef.get_coefs())


def has_ion_coefficients(atomic_number: int, charge: int) -> bool:
    """True if the IT92 table has this exact ion (so f0 differs from the neutral atom)."""
    return charge != 0 and it92_coefficients(atomic_number, charge) != it92_coefficients(atomic_number, 0)


@functools.lru_cache(maxsize=None)
def anomalous_dispersion(atomic_number: int, energy_ev: float) -> tuple[float, float]:
    """(f', f'') in electrons at photon energy ``energy_ev`` (Cromer-Liberman via gemmi)."""
    fp, fpp = gemmi.cromer_liberman(z=int(atomic_number), energy=float(energy_ev))
    return float(fp), float(fpp)


@functools.lru_cache(maxsize=None)
def neutron_scattering_length(atomic_number: int) -> float:
    """Bound coherent scattering length b_c in fm (natural isotope mixture)."""
    element = gemmi.Element(int(atomic_number))
    table = element.neutron92
    coefs = table.get_coefs() if table is not None else []
    # gemmi stores 0.0 for elements without a measured value (Z > 97).
    if not coefs or not np.isfinite(coefs[0]) or coefs[0] == 0.0:
        raise ValueError(f"gemmi has no neutron scattering length for {element.name} (Z={atomic_number})")
    return float(coefs[0])


@functools.lru_cache(maxsize=None)
def atomic_weights() -> np.ndarray:
    """Standard atomic weights (daltons) indexed by Z (index 0 unused), from gemmi."""
    weights = np.zeros(119)
    for z in range(1, 119):
        weights[z] = gemmi.Element(z).weight
    weights.flags.writeable = False
    return weights


def f0(atomic_number: int, charge: int, stol: np.ndarray) -> np.ndarray:
    """Evaluate the IT92 form factor at s = sin(theta)/lambda (1/angstrom); for tests and plots."""
    c = np.asarray(it92_coefficients(atomic_number, charge))
    s2 = np.asarray(stol, dtype=float) ** 2
    return sum(c[i] * np.exp(-c[4 + i] * s2) for i in range(4)) + c[8]
