"""Balanced random crystals for the classifier within a time budget, as a sharded data set.

    python benchmarks/classifier_random_set.py -o data/random_s6 --seed 6 --minutes 14
    python benchmarks/classifier_random_set.py -o data/random_s7_test --seed 7 --minutes 6

Crystal i is crystal i of :func:`xrdflow.data.random_crystals.generate_random_crystals` with
``on_failure="skip"`` and ``--max-attempts`` attempts (its first attempt stream only, the same
crystal as ``generate_one(i, ...)``): the space group of index i is drawn uniformly over the
fillable groups, exactly as ``xrdflow dataset generate`` draws it.  An index whose attempts all
fail is skipped (listed, and counted per space group, in the manifest's params) instead of being
retried over further attempt streams: with few atoms some high-symmetry groups (e.g. 228, Fd-3c,
at 24 atoms) can take 1,000 attempts, minutes each on a shared CPU.  So the set is balanced except
that such hard groups are under-represented.  Indices 0..K-1 are tried in order, ``--block`` at a
time, until ``--minutes`` of wall time have passed (K is recorded), so a set is fixed by (seed, K,
max_atoms, max_attempts) and equals ``xrdflow dataset generate --random K --seed S --max-atoms M
--max-attempts A --skip-failures`` item for item.
"""
from __future__ import annotations

import argparse
import collections
import sys
import time
import warnings


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-o", "--output", required=True)
    ap.add_argument("--seed", type=int, required=True)
    ap.add_argument("--minutes", type=float, required=True, help="wall-time budget")
    ap.add_argument("--max-atoms", type=int, default=24)
    ap.add_argument("--max-attempts", type=int, default=5)
    ap.add_argument("--max-n", type=int, default=100000, help="stop after this many indices")
    ap.add_argument("--shard-size", type=int, default=500)
    ap.add_argument("--block", type=int, default=4, help="indices per generator call (time-budget granularity)")
    ap.add_argument("--workers", type=int, default=1, help="generator processes (the result does not depend on it)")
    args = ap.parse_args(argv)

    from tqdm.auto import tqdm

    from xrdflow.data.random_crystals import generate_random_crystals
    from xrdflow.data.shards import Item, write_dataset

    t0 = time.perf_counter()
    items, skipped = [], []
    k = 0
    bar = tqdm(desc=f"random crystals (seed {args.seed})", unit=" indices", file=sys.stderr)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)   # 'cannot be filled' and 'left out', once per call
        while time.perf_counter() - t0 < 60 * args.minutes and k < args.max_n:
            n = min(args.block, args.max_n - k)
            found = generate_random_crystals(n, start=k, seed=args.seed, max_atoms=args.max_atoms,
                                             max_attempts=args.max_attempts, on_failure="skip",
                                             workers=args.workers, progress=False)
            items.extend(Item(f"random-{args.seed}-{c.index}", c.structure, int(c.space_group)) for c in found)
            skipped.extend(found.skipped)
            k += n
            bar.update(n)
            bar.set_postfix(kept=len(items), skipped=len(skipped))
    bar.close()
    by_group = collections.Counter(sg for _, sg in skipped)
    params = {"kind": "random",
              "generator": "benchmarks/classifier_random_set.py (generate_random_crystals, on_failure='skip')",
              "seed": args.seed, "indices_tried": k, "max_atoms": args.max_atoms,
              "max_attempts": args.max_attempts, "space_groups": "uniform",
              "skipped_by_space_group": {str(g): c for g, c in sorted(by_group.items())},
              "skipped": [list(pair) for pair in skipped],
              "wall_s": round(time.perf_counter() - t0, 1)}
    write_dataset(args.output, items, shard_size=args.shard_size, params=params, progress=False)
    print(f"{len(items)} crystals of indices 0..{k - 1} (seed {args.seed}) in {args.output}; "
          f"{len(skipped)} skipped (space groups {dict(sorted(by_group.items()))}); "
          f"{time.perf_counter() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
