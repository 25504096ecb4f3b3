"""Throughput of xrdflow against its peers, as one markdown table (and JSON with --json).

    python benchmarks/report.py [--n-structures 200] [--peer-structures 200] [--copies 5] [--repeats 5] [--json out.json]

Every number is the best (shortest) of ``--repeats`` wall-clock runs
(time.perf_counter) on the same data and instrument (see _common.py):

* xrdflow patterns/s: ``Simulator.patterns`` on the first ``--n-structures``
  structures, each given ``--copies`` times in one batch (so that thread
  start-up and the Python preparation of a short batch do not blur the
  1- vs 2-thread comparison), symmetry detection included (in the C++ core);
* render only: ``Simulator.render`` of reflections computed beforehand;
* pymatgen peer: XRDCalculator sticks + NumPy pseudo-Voigt sum, on the first
  ``--peer-structures`` structures, best of 2; the speed-up is per pattern;
* structure factors: reflections/s = unique hkl per second, for xrdflow's
  ``Simulator.reflections`` (symmetry + hkl enumeration + |F|^2), for its C++
  stage alone, and for gemmi's direct summation over the same hkl lists
  (SmallStructure built beforehand, not timed);
* where the time goes, stage by stage on one thread: the Python preparation
  ``Simulator._flatten``, ``_core.compute_reflections`` (symmetry, hkl,
  |F|^2) and ``Simulator.render`` (``patterns`` runs the last two fused).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402  (first: it pins NumPy's BLAS to one thread)

import numpy as np  # noqa: E402
import xrdflow as xf  # noqa: E402
import xrdflow.simulate as xsim  # noqa: E402


def best(fn, repeats: int) -> float:
    """Shortest wall time of ``repeats`` calls, in seconds."""
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def breakdown(sim, structs, repeats: int) -> dict:
    """Seconds (best of ``repeats``) of each stage of a 1-thread batch."""
    flat = sim._flatten(structs)
    refl = sim.reflections(structs, threads=1)
    return {"_flatten": best(lambda: sim._flatten(structs), repeats),
            "compute_reflections": best(lambda: xsim._core.compute_reflections(flat, **sim._reflection_options(),
                                                                                threads=1), repeats),
            "render_patterns": best(lambda: sim.render(refl, threads=1), repeats)}


def measure(n_structures: int, peer_structures: int, copies: int, repeats: int) -> dict:
    cifs = C.load_cifs(n_structures)
    structs = [xf.Structure.from_cif(c) for c in cifs]
    pmg = C.to_pymatgen(cifs[:peer_structures])
    sim = C.make_simulator()
    n, n_peer = len(structs), len(pmg)
    batch = structs * copies

    sim.patterns(structs[:5], threads=1)  # warm-up (imports, caches)
    refl = sim.reflections(structs, threads=1)
    batch_refl = sim.reflections(batch, threads=1)
    r = {"n_structures": n, "copies": copies, "peer_structures": n_peer, "n_reflections": refl.n_reflections}
    for t in (1, 2):
        r[f"patterns_{t}t_s"] = best(lambda: sim.patterns(batch, threads=t), repeats) / copies
        r[f"render_{t}t_s"] = best(lambda: sim.render(batch_refl, threads=t), repeats) / copies
    r["peer_s"] = best(lambda: C.peer_patterns(pmg, sim), min(repeats, 2))
    r["patterns_1t_peer_subset_s"] = best(lambda: sim.patterns(structs[:n_peer] * copies, threads=1),
                                          repeats) / copies
    r["reflections_s"] = best(lambda: sim.reflections(structs, threads=1), repeats)

    small = [C.to_gemmi(s) for s in structs]
    hkl = [refl.hkl[refl.rows(i)] for i in range(n)]
    r["gemmi_sf_s"] = best(lambda: [C.gemmi_f2(g, h) for g, h in zip(small, hkl)], repeats)

    stages = breakdown(sim, structs, repeats)
    stages["total"] = sum(stages.values())
    r["stages_s"] = stages
    r["core_reflections_s"] = stages["compute_reflections"]

    # Sanity: both sides compute the same thing.
    y, y_peer = sim.patterns(structs[:n_peer], threads=1), C.peer_patterns(pmg, sim)
    cos = (y * y_peer).sum(1) / (np.linalg.norm(y, axis=1) * np.linalg.norm(y_peer, axis=1))
    f2 = np.concatenate([C.gemmi_f2(g, h) for g, h in zip(small, hkl)])
    r["peer_min_cosine"] = float(cos.min())
    r["gemmi_max_rel_F2_diff"] = float(np.max(np.abs(f2 - refl.F2)) / refl.F2.max())
    r["machine"] = C.machine()
    return r


def table(r: dict) -> str:
    n, n_peer, n_refl = r["n_structures"], r["peer_structures"], r["n_reflections"]
    pps = {k: n / r[f"{k}_s"] for k in ("patterns_1t", "patterns_2t", "render_1t", "render_2t")}
    peer = n_peer / r["peer_s"]
    st = r["stages_s"]
    frac = {k: st[k] / st["total"] for k in ("_flatten", "compute_reflections", "render_patterns")}
    m = r["machine"]
    rows = [
        ("xrdflow patterns, 1 thread", f"{pps['patterns_1t']:,.0f} patterns/s",
         f"{n} structures x {r['copies']} per batch, symmetry detection included"),
        ("xrdflow patterns, 2 threads", f"{pps['patterns_2t']:,.0f} patterns/s", ""),
        ("xrdflow render only (cached reflections), 1 thread", f"{pps['render_1t']:,.0f} patterns/s", ""),
        ("xrdflow render only (cached reflections), 2 threads", f"{pps['render_2t']:,.0f} patterns/s", ""),
        ("pymatgen peer (XRDCalculator + NumPy pseudo-Voigt)", f"{peer:,.1f} patterns/s",
         f"first {n_peer} structures, per pattern"),
        ("speed-up xrdflow 1 thread / peer, per pattern",
         f"{r['peer_s'] / r['patterns_1t_peer_subset_s']:,.1f}x", f"same {n_peer} structures"),
        ("scaling patterns 2 threads / 1 thread", f"{pps['patterns_2t'] / pps['patterns_1t']:.2f}x", ""),
        ("scaling render 2 threads / 1 thread", f"{pps['render_2t'] / pps['render_1t']:.2f}x", ""),
        ("xrdflow sim.reflections, 1 thread", f"{n_refl / r['reflections_s']:,.0f} reflections/s",
         f"{n_refl} unique hkl + \\|F\\|^2, symmetry detection included"),
        ("xrdflow _core.compute_reflections only", f"{n_refl / r['core_reflections_s']:,.0f} reflections/s",
         "symmetry + hkl enumeration + \\|F\\|^2, C++"),
        ("gemmi StructureFactorCalculatorX", f"{n_refl / r['gemmi_sf_s']:,.0f} reflections/s",
         "same hkl lists, one call per hkl"),
        ("time in Simulator._flatten (Python prep)", f"{frac['_flatten']:.0%}", "of the 3 stages, 1 thread"),
        ("time in _core.compute_reflections", f"{frac['compute_reflections']:.0%}", "symmetry, hkl, \\|F\\|^2"),
        ("time in Simulator.render", f"{frac['render_patterns']:.0%}", "profiles onto the grid"),
        ("check: min cosine(xrdflow, peer)", f"{r['peer_min_cosine']:.4f}", "same patterns"),
        ("check: max \\|F\\|^2 diff xrdflow vs gemmi", f"{r['gemmi_max_rel_F2_diff']:.1e}", "relative to max"),
        ("machine", f"{m['nproc']} cores", m["cpu"]),
    ]
    lines = ["| measurement | value | notes |", "|---|---:|---|"]
    lines += [f"| {a} | {b} | {c} |" for a, b, c in rows]
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n-structures", type=int, default=200)
    ap.add_argument("--peer-structures", type=int, default=200)
    ap.add_argument("--copies", type=int, default=5, help="each structure this many times per xrdflow batch")
    ap.add_argument("--repeats", type=int, default=5, help="best of this many runs (the peer: at most 2)")
    ap.add_argument("--json", type=Path, help="also write the numbers here")
    args = ap.parse_args(argv)
    if not (1 <= args.peer_structures <= args.n_structures):
        ap.error("need 1 <= --peer-structures <= --n-structures")
    try:
        r = measure(args.n_structures, args.peer_structures, args.copies, args.repeats)
    except FileNotFoundError as err:
        print(err, file=sys.stderr)
        return 2
    print(table(r))
    if args.json:
        args.json.write_text(json.dumps(r, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
