"""Radiation sources: wavelengths of the common X-ray tubes and how a
``radiation=`` argument is turned into emission lines.

Tube wavelengths (angstrom) are those of Bearden, Rev. Mod. Phys. 39, 78
(1967), rounded as in pymatgen's ``XRDCalculator`` (the Cu values are the ones
FullProf and most laboratory refinements use: 1.54056 / 1.54439 A).  The
K-alpha2/K-alpha1 intensity ratio is 0.5, the 2:1 ratio of the 2p3/2 and 2p1/2
level populations (Cullity & Stock, Elements of X-ray Diffraction, 3rd ed.,
sec. 1.5).  pymatgen is an optional dependency, so the few numbers live here;
tests/test_radiation.py checks them against pymatgen when it is installed.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

# K-alpha1, K-alpha2 in angstrom.
TUBES: dict[str, tuple[float, float]] = {
    "Cu": (1.54056, 1.54439),
    "Mo": (0.70930, 0.71359),
    "Co": (1.78896, 1.79285),
    "Fe": (1.93604, 1.93998),
    "Cr": (2.28970, 2.29361),
    "Ag": (0.559421, 0.563813),
}
KALPHA2_RATIO = 0.5


@dataclass(frozen=True)
class Radiation:
    """Emission lines used to simulate a pattern.

    ``wavelengths`` in angstrom, ``weights`` relative intensities; the first
    line is the primary one (peak tables and the Q axis refer to it).
    """

    name: str
    wavelengths: tuple[float, ...]
    weights: tuple[float, ...]

    @property
    def primary_wavelength(self) -> float:
        return self.wavelengths[0]

    @property
    def energy_ev(self) -> float:
        """Photon energy of the primary line, E = hc / lambda (hc = 12398.42 eV A)."""
        import gemmi

        return gemmi.hc / self.wavelengths[0]


def parse_radiation(radiation: "str | float | Radiation") -> Radiation:
    """Turn ``"CuKa"`` (K-alpha1 + K-alpha2 doublet), ``"CuKa1"`` (single
    line) or a wavelength in angstrom (single line) into a :class:`Radiation`."""
    if isinstance(radiation, Radiation):
        return radiation
    if isinstance(radiation, (bool, np.bool_)):
        raise TypeError("radiation must be a tube name such as 'CuKa' or a wavelength in angstrom, not a bool")
    if isinstance(radiation, (int, float, np.integer, np.floating)):
        wl = float(radiation)
        if not math.isfinite(wl) or wl <= 0.0:
            raise ValueError(f"wavelength must be a positive number of angstrom, got {radiation!r}")
        if wl > 100.0:
            raise ValueError(f"wavelength {wl} angstrom is not an X-ray or thermal-neutron wavelength; "
                             "give it in angstrom (e.g. 1.5406), not in pm or nm")
        return Radiation(f"{wl:g} A", (wl,), (1.0,))
    if isinstance(radiation, str):
        key = radiation.strip()
        for tube, (ka1, ka2) in TUBES.items():
            if key.lower() == f"{tube}ka".lower():
                return Radiation(f"{tube}Ka", (ka1, ka2), (1.0, KALPHA2_RATIO))
            if key.lower() == f"{tube}ka1".lower():
                return Radiation(f"{tube}Ka1", (ka1,), (1.0,))
            if key.lower() == f"{tube}ka2".lower():
                return Radiation(f"{tube}Ka2", (ka2,), (1.0,))
        names = ", ".join(f"{t}Ka" for t in TUBES)
        raise ValueError(f"unknown radiation {radiation!r}; use one of {names} (doublets), "
                         f"the same with a 1 or 2 suffix for a single line, or a wavelength in angstrom")
    raise TypeError(f"radiation must be a tube name or a wavelength in angstrom, got {type(radiation).__name__}")
