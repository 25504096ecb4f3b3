"""Space-group detection with spglib.

Symmetry is detected on *sites*: atoms that share a position (mixed or
partially occupied sites) are merged into one site whose type is the set of
(element, charge, occupancy, B) it holds, so spglib only maps sites onto
chemically identical sites.  The operations are returned in the basis of the
structure's own lattice, whatever its setting (non-standard, oblique, centred
or a supercell), which is what the reflection enumeration needs.
"""
from __future__ import annotations

import contextlib
import warnings
from dataclasses import dataclass

import numpy as np
import spglib

from .structure import Structure

@contextlib.contextmanager
def quiet_spglib():
    """Silence spglib 2.5+'s notice about its future error handling, which it
    repeats on every call; xrdflow handles both behaviours (None or SpglibError)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*OLD_ERROR_HANDLING", category=DeprecationWarning)
        yield


# Atoms closer than this (angstrom) are taken as one site.
SITE_MERGE_TOLERANCE = 1e-3


@dataclass(frozen=True)
class SymmetryOperations:
    """Space-group operations x' = R x + t in fractional coordinates of the input lattice."""

    rotations: np.ndarray     # (n, 3, 3) int32
    translations: np.ndarray  # (n, 3) float64

    def __len__(self) -> int:
        return len(self.rotations)


def _sites(structure: Structure) -> tuple[np.ndarray, np.ndarray]:
    """Merge atoms at the same position: returns site positions (S, 3) and integer site types (S,)."""
    frac = structure.frac
    n = len(frac)

    def close_to(i: np.ndarray | slice) -> np.ndarray:
        diff = frac[i, None, :] - frac[None, :, :]
        diff -= np.round(diff)
        return np.linalg.norm(diff @ structure.lattice, axis=-1) < SITE_MERGE_TOLERANCE

    # All pairs at once for ordinary cells; row by row (O(N) memory) for big ones.
    same = close_to(slice(None)) if n <= 512 else None
    site_of = -np.ones(n, dtype=np.int64)
    n_sites = 0
    for i in range(n):
        if site_of[i] < 0:
            row = same[i] if same is not None else close_to(np.array([i]))[0]
            site_of[row & (site_of < 0)] = n_sites
            n_sites += 1
    keys = []
    for s in range(n_sites):
        members = np.flatnonzero(site_of == s)
        keys.append(tuple(sorted(
            (int(structure.numbers[j]), int(structure.charges[j]), round(float(structure.occupancy[j]), 4),
             round(float(structure.b_iso[j]), 3)) for j in members)))
    first = np.array([np.flatnonzero(site_of == s)[0] for s in range(n_sites)])
    labels = {k: i for i, k in enumerate(sorted(set(keys)))}
    return frac[first], np.array([labels[k] for k in keys], dtype=np.int32)


def symmetry_operations(structure: Structure, symprec: float = 1e-3,
                        angle_tolerance: float = -1.0) -> SymmetryOperations:
    """Space-group operations of ``structure`` found by spglib (``symprec`` in angstrom).

    If spglib finds no symmetry (it can fail for badly distorted input), the
    identity alone is returned with a warning: reflections are then enumerated
    in P-1 Laue symmetry, slower but still correct.
    """
    positions, types = _sites(structure)
    cell = (np.asarray(structure.lattice), positions, types)
    try:
        with quiet_spglib():
            sym = spglib.get_symmetry(cell, symprec=symprec, angle_tolerance=angle_tolerance)
            reason = spglib.get_error_message() if sym is None else ""
    except Exception as err:  # SpglibError
        sym, reason = None, str(err)
    if sym is None:
        warnings.warn(f"spglib found no symmetry for {structure.label or 'a structure'} ({reason}); "
                      "using the identity only", RuntimeWarning, stacklevel=2)
        return SymmetryOperations(np.eye(3, dtype=np.int32)[None], np.zeros((1, 3)))
    return SymmetryOperations(np.ascontiguousarray(sym["rotations"], dtype=np.int32),
                              np.ascontiguousarray(sym["translations"], dtype=np.float64))


def space_group(structure: Structure, symprec: float = 1e-3) -> tuple[int, str]:
    """(International number, Hermann-Mauguin symbol) of the structure's space group."""
    positions, types = _sites(structure)
    try:
        with quiet_spglib():
            dataset = spglib.get_symmetry_dataset((np.asarray(structure.lattice), positions, types), symprec=symprec)
    except Exception:  # SpglibError: no symmetry found
        dataset = None
    if dataset is None:
        return 1, "P1"
    return int(dataset.number), str(dataset.international)
