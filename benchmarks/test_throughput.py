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
* augmented render vs from scratch: N_STRUCTURES patterns per call on the
  training instrument (Cu K-alpha1+2, 5-90 deg, 4096 points, max-normalized)
  with ``Augmentation.realistic()``, one thread; extra_info holds the
  patterns/s of both and their ratio (see the test's docstring).
"""
from __future__ import annotations

from types import SimpleNamespace

import pytest

import _common as C
import xrdflow as xf
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


@pytest.fixture(scope="module")
def training(bench):
    """The training instrument (as in stream_throughput.py), its cache of the same structures, realistic()."""
    sim = xf.Simulator(radiation="CuKa", two_theta=(5.0, 90.0), n_points=C.N_POINTS)
    return SimpleNamespace(sim=sim, cache=sim.reflections(bench.structs, threads=1), structs=bench.structs,
                           aug=xf.Augmentation.realistic())


@pytest.mark.benchmark(group="augmented render vs from scratch (200 patterns per call)")
def test_realistic_render_vs_from_scratch(benchmark, training):
    """Realistic augmented render from cached reflections (the timed call), 1 thread, against two
    from-scratch baselines timed in the same run (best of 5): ``sim.patterns`` (structure
    factors + plain render, no augmentation) and ``sim.reflections`` + augmented render (what
    a from-scratch simulation of the same augmented pattern costs).  extra_info: patterns/s of
    each (best round) and the ratios (augmented render / baseline speed)."""
    t = training
    n = len(t.structs)
    scratch_s, _ = C.best_time(lambda: t.sim.patterns(t.structs, threads=1))
    scratch_aug_s, _ = C.best_time(lambda: t.sim.render(t.sim.reflections(t.structs, threads=1), augmentation=t.aug,
                                                          seed=0, threads=1))
    y, params = benchmark(t.sim.render, t.cache, augmentation=t.aug, seed=0, threads=1)
    assert y.shape == (n, C.N_POINTS) and len(params["counts"]) == n
    render_s = benchmark.stats.stats.min  # best round, like the baselines' best of 5
    info = benchmark.extra_info
    info["patterns"] = n
    info["augmented_render_patterns_per_s"] = n / render_s
    info["from_scratch_patterns_per_s"] = n / scratch_s
    info["from_scratch_augmented_patterns_per_s"] = n / scratch_aug_s
    info["ratio_vs_from_scratch"] = scratch_s / render_s
    info["ratio_vs_from_scratch_augmented"] = scratch_aug_s / render_s
    print(f"\naugmented render {n / render_s:,.0f} patterns/s; from scratch (sim.patterns) {n / scratch_s:,.0f} "
          f"patterns/s, ratio {scratch_s / render_s:.2f}x; from scratch with the augmentation "
          f"(reflections + augmented render) {n / scratch_aug_s:,.0f} patterns/s, ratio "
          f"{scratch_aug_s / render_s:.2f}x")
