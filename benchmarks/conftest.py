"""Session fixtures of the benchmarks: the data parsed once, the shared Simulator.

Run with ``python -m pytest benchmarks/ --benchmark-only``; the normal test run
(testpaths = ["tests"]) does not collect this folder.
"""
from __future__ import annotations

from types import SimpleNamespace

import pytest

import _common as C
import xrdflow as xf

N_STRUCTURES = 200  # xrdflow and gemmi
PEER_STRUCTURES = 40  # pymatgen: ~10 ms per pattern here, so a subset


@pytest.fixture(scope="session")
def bench():
    """Structures (xrdflow + pymatgen), Simulator, cached reflections, gemmi SmallStructures."""
    try:
        cifs = C.load_cifs(N_STRUCTURES)
    except FileNotFoundError as err:
        pytest.skip(f"{err} (the benchmarks need the shared data folder next to the repository)")
    structs = [xf.Structure.from_cif(c) for c in cifs]
    sim = C.make_simulator()
    refl = sim.reflections(structs, threads=1)
    return SimpleNamespace(
        sim=sim, structs=structs, pmg=C.to_pymatgen(cifs), refl=refl,
        gemmi=[C.to_gemmi(s) for s in structs], hkl=[refl.hkl[refl.rows(i)] for i in range(len(structs))],
    )
