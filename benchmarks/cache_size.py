"""Size and cost of the Reflections cache, and what a million structures would need.

    python benchmarks/cache_size.py                 # first 2000 of mp20_biternary_test (+ mpts52_val)
    python benchmarks/cache_size.py --n 500 --json cache_size.json

For the first N structures of each data set (P1 CIFs from ../shared/data),
with the default instrument (``xf.Simulator()``: Cu K-alpha1+2, 5-90 degrees
2-theta), it reports bytes per structure of the cache in memory
(``Reflections.nbytes``), on disk as ``.npz`` (deflate) and ``.h5`` (gzip 4 +
shuffle), the time to compute the cache on 1 and 2 threads (best of
``--repeat``, CIF parsing excluded), to save and load it, and the linear
extrapolation to 1,000,000 structures (GB = 1e9 bytes).

MP-20 holds cells of at most 20 atoms; the Materials Project as a whole has
larger cells, and the cache grows with the cell volume (the number of hkl
with d >= d_min is ~ 4 pi V / (3 d_min^3) before symmetry reduction), so
mpts52_val (up to 52 atoms) is measured beside it as a heavier MP-like
sample; bytes per A^3 of cell volume are given to rescale to other sets.
"""
from __future__ import annotations

import argparse
import csv
import gzip
import json
import os
import platform
import sys
import tempfile
from pathlib import Path

import _common  # noqa: F401  (sets single-threaded BLAS before NumPy loads)
from _common import best_time
import numpy as np

import xrdflow as xf

DATA_DIR = _common.DATA.parent
MILLION = 1_000_000


def load_structures(name: str, n: int) -> list[xf.Structure]:
    path = DATA_DIR / f"{name}.csv.gz"
    if not path.is_file():
        raise FileNotFoundError(f"benchmark data not found: {path}")
    with gzip.open(path, "rt", newline="") as f:
        cifs = [row["cif"] for _, row in zip(range(n), csv.DictReader(f))]
    return [xf.Structure.from_cif(c) for c in cifs]


def measure(name: str, n: int, repeat: int, threads: list[int]) -> dict:
    structures = load_structures(name, n)
    sim = xf.Simulator()
    timings = {}
    cache = None
    for t in threads:
        timings[t], cache = best_time(lambda: sim.reflections(structures, threads=t), repeat)
    b = len(cache)
    result = {
        "dataset": name, "structures": b,
        "atoms_per_cell_mean": float(np.mean([len(s) for s in structures])),
        "atoms_per_cell_max": int(max(len(s) for s in structures)),
        "volume_mean_A3": float(cache.volumes.mean()),
        "reflections_per_structure": cache.n_reflections / b,
        "laue_operations_per_structure": len(cache.laue_rotations) / b,
        "d_min_A": float(cache.d_min),
        "compute_s": {str(t): s for t, s in timings.items()},
        "compute_ms_per_1000": {str(t): 1e3 * s / b * 1000 for t, s in timings.items()},
        "memory_bytes": cache.nbytes,
        "memory_bytes_per_field": {f: int(getattr(cache, f).nbytes) for f in
                                   ("offsets", "hkl", "d", "F2", "multiplicity", "lattices", "laue_offsets",
                                    "laue_rotations", "cell_mass", "d_min")},
        "disk_bytes": {}, "save_s": {}, "load_s": {},
    }
    with tempfile.TemporaryDirectory() as tmp:
        for suffix in (".npz", ".h5"):
            path = Path(tmp) / f"cache{suffix}"
            try:
                result["save_s"][suffix], _ = best_time(lambda: cache.save(path), repeat)
            except ImportError as exc:
                print(f"skipping {suffix}: {exc}", file=sys.stderr)
                continue
            result["disk_bytes"][suffix] = path.stat().st_size
            result["load_s"][suffix], loaded = best_time(lambda: xf.Reflections.load(path), repeat)
            assert loaded.n_reflections == cache.n_reflections
    per = {"memory": cache.nbytes / b, **{f"disk{k}": v / b for k, v in result["disk_bytes"].items()}}
    result["bytes_per_structure"] = per
    result["bytes_per_A3"] = {k: v / result["volume_mean_A3"] for k, v in per.items()}
    result["GB_per_million"] = {k: v * MILLION / 1e9 for k, v in per.items()}
    result["compute_minutes_per_million"] = {str(t): s / b * MILLION / 60 for t, s in timings.items()}
    return result


def markdown(results: list[dict], threads: list[int]) -> str:
    head = "| | " + " | ".join(f"{r['dataset']} (first {r['structures']})" for r in results) + " |"
    lines = [head, "|---" * (len(results) + 1) + "|"]

    def row(label, fmt):
        lines.append(f"| {label} | " + " | ".join(fmt(r) for r in results) + " |")

    def get(r, *keys):
        for k in keys:
            r = r.get(k) if isinstance(r, dict) else None
        return r

    def num(value, spec):
        return "n/a" if value is None else format(value, spec)

    row("atoms per cell, mean (max)", lambda r: f"{r['atoms_per_cell_mean']:.1f} ({r['atoms_per_cell_max']})")
    row("cell volume, mean (A^3)", lambda r: f"{r['volume_mean_A3']:.0f}")
    row("unique reflections per structure", lambda r: f"{r['reflections_per_structure']:.0f}")
    row("Laue operations per structure", lambda r: f"{r['laue_operations_per_structure']:.1f}")
    row("bytes/structure, memory", lambda r: f"{r['bytes_per_structure']['memory']:,.0f}")
    row("bytes/structure, .npz", lambda r: num(get(r, "bytes_per_structure", "disk.npz"), ",.0f"))
    row("bytes/structure, .h5 (gzip 4)", lambda r: num(get(r, "bytes_per_structure", "disk.h5"), ",.0f"))
    for t in threads:
        row(f"compute, {t} thread{'s' if t > 1 else ''} (ms per 1000 structures)",
            lambda r, t=t: f"{r['compute_ms_per_1000'][str(t)]:.0f}")
    row("save .npz / .h5 (ms, whole cache)",
        lambda r: " / ".join(num(None if get(r, "save_s", k) is None else 1e3 * r["save_s"][k], ".0f")
                             for k in (".npz", ".h5")))
    row("load .npz / .h5 (ms, whole cache)",
        lambda r: " / ".join(num(None if get(r, "load_s", k) is None else 1e3 * r["load_s"][k], ".0f")
                             for k in (".npz", ".h5")))
    row("**1M structures: memory (GB)**", lambda r: f"**{r['GB_per_million']['memory']:.2f}**")
    row("**1M structures: .npz (GB)**", lambda r: "**" + num(get(r, "GB_per_million", "disk.npz"), ".2f") + "**")
    row("**1M structures: .h5 (GB)**", lambda r: "**" + num(get(r, "GB_per_million", "disk.h5"), ".2f") + "**")
    t_max = max(threads)
    row(f"1M structures: compute, {t_max} thread{'s' if t_max > 1 else ''} (minutes, CIF parsing excluded)",
        lambda r: f"{r['compute_minutes_per_million'][str(t_max)]:.1f}")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=2000, help="structures per data set (default 2000)")
    ap.add_argument("--datasets", default="mp20_biternary_test,mpts52_val",
                    help="comma-separated names in shared/data/structures (default: %(default)s)")
    ap.add_argument("--threads", default="1,2", help="thread counts to time (default: %(default)s)")
    ap.add_argument("--repeat", type=int, default=3, help="timing repeats, best kept (default 3)")
    ap.add_argument("--json", metavar="OUT", help="also write the numbers as JSON to OUT")
    args = ap.parse_args(argv)
    if args.n < 1 or args.repeat < 1:
        ap.error("--n and --repeat must be >= 1")
    threads = [int(t) for t in args.threads.split(",")]
    results = []
    for name in [d.strip() for d in args.datasets.split(",") if d.strip()]:
        try:
            results.append(measure(name, args.n, args.repeat, threads))
        except FileNotFoundError as exc:
            print(f"skipping {name}: {exc}", file=sys.stderr)
    if not results:
        print("no data set found", file=sys.stderr)
        return 1
    print(f"Reflections cache, xf.Simulator() defaults (Cu K-alpha1+2, 5-90 deg, d_min = "
          f"{results[0]['d_min_A']:.4f} A); {platform.processor() or platform.machine()}, "
          f"{os.cpu_count()} CPUs; GB = 1e9 bytes, linear in the number of structures\n")
    print(markdown(results, threads))
    if args.json:
        meta = {"xrdflow": xf.__version__, "numpy": np.__version__, "cpus": os.cpu_count(),
                "machine": platform.machine(), "threads": threads, "repeat": args.repeat}
        Path(args.json).write_text(json.dumps({"meta": meta, "results": results}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
