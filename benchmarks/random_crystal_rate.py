"""How fast balanced random crystals are made (PyXtal), on 1 and 2 worker processes.

    python benchmarks/random_crystal_rate.py                    # N=200, workers 1 and 2
    python benchmarks/random_crystal_rate.py --n 1000 --workers 1 2 4 --json rate.json

Generates crystals ``0 .. N-1`` of seed ``--seed`` uniformly over the 230 space
groups with the default settings of
:func:`xrdflow.data.random_crystals.generate_random_crystals` (compositions of
the bundled MP-20 subset, at most 40 atoms per primitive cell, minimum distance
0.7 x the sum of covalent radii), once per worker count, and prints a markdown
table: wall time (pool start-up included), crystals per second, the
distribution of PyXtal attempts per crystal, and how many indices needed more
than ``max_attempts`` attempts (the "failures" of the first attempt stream,
completed from later streams).  Every run must give the same crystals (checked).
A second table lists the space groups that cost the most time (from the
single-worker run, which times each crystal).  Wall times include the pool's
start-up (a second or two: each worker imports xrdflow and PyXtal), not the
once-per-process parsing of the bundled compositions and check of which
groups can be filled (about 3 s, done before the timings).
"""
from __future__ import annotations

import argparse
import collections
import json
import os
import platform
import sys
import time
import warnings

import numpy as np


def _describe(values) -> str:
    v = np.asarray(values)
    return (f"{v.mean():.2f} / {np.median(v):.0f} / {np.percentile(v, 90):.0f} / {v.max():.0f}")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=200, help="crystals per run (default 200)")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2], help="worker counts (default 1 2)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max-atoms", type=int, default=40)
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args(argv)

    import pyxtal

    import xrdflow as xf
    from xrdflow.data import random_crystals as rc

    # Once per process, outside the timings: parse the bundled compositions and check which
    # of the 230 groups can be filled (~3 s; each worker only fills its own caches as it goes).
    rc._make_context(seed=args.seed, weights="uniform", compositions=None, max_atoms=args.max_atoms,
                     min_distance_factor=0.7, volume_factor=1.0, max_attempts=1, cell="primitive").prepare()
    max_attempts = 50
    rows, runs, per_crystal = [], {}, []
    real_generate = rc._generate_full

    def timed_generate(ctx, index):  # per-crystal times of the in-process run
        t0 = time.perf_counter()
        out = real_generate(ctx, index)
        per_crystal.append((out[0].space_group if out[0] else 0, time.perf_counter() - t0,
                            out[0].attempts if out[0] else 0))
        return out

    for workers in args.workers:
        rc._generate_full = timed_generate if workers == 1 else real_generate
        try:
            start = time.perf_counter()
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)  # indices completed from later streams
                crystals = rc.generate_random_crystals(args.n, seed=args.seed, max_atoms=args.max_atoms,
                                                       workers=workers, progress=False)
            wall = time.perf_counter() - start
        finally:
            rc._generate_full = real_generate
        runs[workers] = crystals
        attempts = [c.attempts for c in crystals]
        atoms = [c.structure.n_atoms for c in crystals]
        rows.append(dict(workers=workers, n=len(crystals), wall_s=wall, rate=len(crystals) / wall,
                         attempts=attempts, atoms=atoms,
                         failures=sum(a > max_attempts for a in attempts),
                         groups=len({c.space_group for c in crystals})))

    reference = runs[args.workers[0]]
    for workers, crystals in runs.items():
        for a, b in zip(reference, crystals):
            if not (a.space_group == b.space_group and np.array_equal(a.structure.frac, b.structure.frac)):
                print(f"MISMATCH: workers={workers} differs at index {a.index}", file=sys.stderr)
                return 1
        for c in crystals:
            assert xf.space_group(c.structure)[0] == c.space_group

    print(f"\n{args.n} random crystals, uniform over the 230 space groups, seed {args.seed}, "
          f"max_atoms {args.max_atoms} (primitive cell); pyxtal {pyxtal.__version__}, "
          f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs\n")
    print("| workers | crystals | groups | wall (s) | crystals/s | attempts mean / median / p90 / max "
          "| atoms mean / median / p90 / max | failures (> 50 attempts) |")
    print("|---:|---:|---:|---:|---:|---|---|---:|")
    for r in rows:
        print(f"| {r['workers']} | {r['n']} | {r['groups']} | {r['wall_s']:.1f} | {r['rate']:.2f} | "
              f"{_describe(r['attempts'])} | {_describe(r['atoms'])} | {r['failures']} |")

    if per_crystal:
        by_group = collections.defaultdict(lambda: [0.0, 0, 0])
        for sg, dt, att in per_crystal:
            by_group[sg][0] += dt
            by_group[sg][1] += 1
            by_group[sg][2] += att
        total = sum(v[0] for v in by_group.values())
        worst = sorted(by_group.items(), key=lambda kv: -kv[1][0])[:10]
        print(f"\nSlowest space groups (1 worker; {total:.1f} s of crystal time in all):\n")
        print("| space group | crystals | time (s) | share | attempts |")
        print("|---:|---:|---:|---:|---:|")
        for sg, (dt, count, att) in worst:
            print(f"| {sg} {xf.data.labels.space_group_symbol(sg)} | {count} | {dt:.2f} | {dt / total:.0%} | {att} |")

    if args.json:
        with open(args.json, "w", encoding="utf-8") as fh:
            json.dump(dict(n=args.n, seed=args.seed, max_atoms=args.max_atoms, pyxtal=pyxtal.__version__,
                           runs=[{k: v for k, v in r.items()} for r in rows],
                           per_crystal=per_crystal), fh, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
