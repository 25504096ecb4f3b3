"""Realistic render speed as the best of many short calls, for A/B comparisons of builds.

    python benchmarks/render_best_of.py
    python benchmarks/render_best_of.py --n-structures 512 --batch-size 256 --calls 20 --threads 1

On a shared host, bursts of load from elsewhere last longer than one call of
``sim.render`` (~15 ms for 256 patterns) but rarely cover all of many calls, so
the best call measures the code rather than the neighbours; the longer
stream_throughput.py rows are the end-to-end figures.  Each call renders
``--batch-size`` consecutive structures of the first ``--n-structures`` of
mp20_biternary_test (wrapping around) with ``xf.Augmentation.realistic()`` at
its own epoch, on the training instrument (``xf.Simulator(radiation="CuKa",
two_theta=(5, 90), n_points=4096)``, K-alpha1+2).  To compare two builds,
install each in turn and alternate the runs.
"""
from __future__ import annotations

import argparse
import sys
import time

import _common  # noqa: F401  (sets single-threaded BLAS before NumPy loads)
import numpy as np

import xrdflow as xf


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n-structures", type=int, default=512, help="first N of mp20_biternary_test (default 512)")
    ap.add_argument("--batch-size", type=int, default=256, help="patterns per call (default 256)")
    ap.add_argument("--calls", type=int, default=20, help="timed calls, the best kept (default 20)")
    ap.add_argument("--threads", type=int, default=1, help="render threads (default 1)")
    args = ap.parse_args(argv)
    if min(args.n_structures, args.batch_size, args.calls, args.threads) < 1:
        ap.error("--n-structures, --batch-size, --calls and --threads must be >= 1")
    try:
        cifs = _common.load_cifs(args.n_structures)
    except FileNotFoundError as exc:
        print(exc, file=sys.stderr)
        return 1
    sim = xf.Simulator(radiation="CuKa", two_theta=(5.0, 90.0), n_points=4096)
    cache = sim.reflections([xf.Structure.from_cif(c) for c in cifs], threads=None)
    aug = xf.Augmentation.realistic()
    n = len(cache)
    best = float("inf")
    for call in range(args.calls):
        indices = (call * args.batch_size + np.arange(args.batch_size)) % n
        t = time.perf_counter()
        sim.render(cache, indices=indices, augmentation=aug, seed=0, epoch=call, threads=args.threads)
        best = min(best, time.perf_counter() - t)
    info = _common.machine()
    print(f"realistic render, {args.batch_size} patterns per call, best of {args.calls} calls, {args.threads} "
          f"thread(s), {n} structures; {info['cpu']}, {info['nproc']} CPUs: "
          f"{args.batch_size / best:,.0f} patterns/s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
