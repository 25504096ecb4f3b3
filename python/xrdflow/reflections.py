"""Cached reflections: the expensive, once-per-structure result of
:meth:`xrdflow.Simulator.reflections`, as flat CSR arrays.

Rendering (instrument, sample and augmentation) re-uses this cache instead of
recomputing structure factors.
"""
from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np


@dataclass(frozen=True)
class Reflections:
    """Symmetry-unique reflections of many structures.

    The rows of structure ``i`` are ``offsets[i]:offsets[i+1]``, sorted by
    decreasing d.  ``F2`` is the Friedel-averaged |F|^2 (no LP, no
    multiplicity).  ``lattices`` and each structure's Laue group are kept so
    that later stages can recompute d from hkl under a strained metric and
    average orientation effects over symmetry-equivalent reflections;
    ``cell_mass`` (daltons) and the cell volume give weight fractions of
    mixtures.  ``d_min`` (angstrom) is the resolution the cache was computed to.
    """

    offsets: np.ndarray         # (B + 1,) int64
    hkl: np.ndarray             # (R, 3) int32
    d: np.ndarray               # (R,) float64, angstrom
    F2: np.ndarray              # (R,) float64
    multiplicity: np.ndarray    # (R,) int32
    lattices: np.ndarray        # (B, 3, 3) float64, angstrom, rows a, b, c
    laue_offsets: np.ndarray    # (B + 1,) int64
    laue_rotations: np.ndarray  # (L, 3, 3) int32, on fractional coordinates
    cell_mass: np.ndarray       # (B,) float64, daltons
    d_min: np.ndarray           # () float64, angstrom

    def __len__(self) -> int:
        return len(self.offsets) - 1

    @property
    def n_reflections(self) -> int:
        return len(self.d)

    @property
    def volumes(self) -> np.ndarray:
        """Cell volumes in angstrom^3."""
        return np.abs(np.linalg.det(self.lattices))

    @property
    def nbytes(self) -> int:
        return sum(getattr(self, f.name).nbytes for f in fields(self))

    def rows(self, i: int) -> slice:
        """Slice of the flat reflection arrays that belongs to structure ``i``."""
        if not 0 <= i < len(self):
            raise IndexError(f"structure index {i} out of range for {len(self)} structures")
        return slice(int(self.offsets[i]), int(self.offsets[i + 1]))
