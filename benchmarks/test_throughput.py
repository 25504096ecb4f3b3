"""Throughput of xrdflow and its peers (pytest-benchmark; times are seconds per call).

Per-call work (divide the time by it; it is also in each benchmark's extra_info):
* patterns / render: N_STRUCTURES patterns of 4096 points per call;
* pymatgen peer: PEER_STRUCTURES patterns per call (pymatgen is slow, so a
  subset with 1 warm-up + 2 rounds); compare per pattern: time / extra_info["patterns"];
* structure factors: extra_info["reflections"] unique hkl per call.  xrdflow's
  ``Simulator.reflections`` includes symmetry detection (C++ core) and hkl
  enumeration; gemmi evaluates |F|^2 by direct summation on the hkl lists
  xrdflow returned, one Python call per hkl (gemmi has no vectorized
  structure-factor path for a SmallStructure; its FFT path needs a Model).
"""
from __future__ import annotations

import pytest

import _common as C
from conftest import N_STRUCTURES, PEER_STRUCTURES

THREADS = pytest.mark.parametrize("threads", [1, 2], ids=["1 thread", "2 threads"])


@THREADS
@pytest.mark.benchmark(group="patterns (200 structures per call)")
def test_xrdflow_patterns(benchmark, bench, threads):
    """xrdflow patterns, N threads: Simulator.patterns, symmetry detection included."""
    benchmark.extra_info["patterns"] = N_STRUCTURES
    y = benchmark(bench.sim.patterns, bench.structs, threads=threads)
    assert y.shape == (N_STRUCTURES, C.N_POINTS)


@THREADS
@pytest.mark.benchmark(group="patterns (200 structures per call)")
def test_xrdflow_render_only(benchmark, bench, threads):
    """xrdflow render only (cached reflections), N threads."""
    benchmark.extra_info["patterns"] = N_STRUCTURES
    y = benchmark(bench.sim.render, bench.refl, threads=threads)
    assert y.shape == (N_STRUCTURES, C.N_POINTS)


@pytest.mark.benchmark(group="pymatgen peer (40 structures per call)")
def test_pymatgen_peer(benchmark, bench):
    """pymatgen peer: XRDCalculator.get_pattern + NumPy pseudo-Voigt sum, PEER_STRUCTURES patterns."""
    benchmark.extra_info["patterns"] = PEER_STRUCTURES
    y = benchmark.pedantic(C.peer_patterns, args=(bench.pmg[:PEER_STRUCTURES], bench.sim), rounds=2,
                           iterations=1, warmup_rounds=1)
    assert y.shape == (PEER_STRUCTURES, C.N_POINTS)


@pytest.mark.benchmark(group="structure factors")
def test_xrdflow_reflections(benchmark, bench):
    """xrdflow Simulator.reflections, 1 thread, N_STRUCTURES structures (hkl + |F|^2, symmetry detection included)."""
    benchmark.extra_info["reflections"] = bench.refl.n_reflections
    refl = benchmark(bench.sim.reflections, bench.structs, threads=1)
    assert refl.n_reflections == bench.refl.n_reflections


@pytest.mark.benchmark(group="structure factors")
def test_gemmi_structure_factors(benchmark, bench):
    """gemmi |F|^2 on the N_STRUCTURES hkl lists of xrdflow (SmallStructures built beforehand)."""
    benchmark.extra_info["reflections"] = sum(len(h) for h in bench.hkl)
    f2 = benchmark(lambda: [C.gemmi_f2(g, h) for g, h in zip(bench.gemmi, bench.hkl)])
    assert sum(map(len, f2)) == benchmark.extra_info["reflections"]
