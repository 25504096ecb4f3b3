"""Balanced random crystals for the classifier within a time budget, as a sharded data set.

    python benchmarks/classifier_random_set.py -o data/random_s6 --seed 6 --minutes 14
    python benchmarks/classifier_random_set.py -o data/random_s7_test --seed 7 --minutes 6

Crystal i is :func:`xrdflow.data.random_crystals.generate_one` (seed, i) with ``--max-attempts``
attempts of its first attempt stream: the space group of index i is drawn uniformly over the
fillable groups, exactly as ``xrdflow dataset generate`` draws it.  Unlike ``dataset generate``,
an index whose attempts all fail is skipped (and counted per space group in the manifest's
params) instead of being retried over further attempt streams: with few atoms some high-symmetry
groups (e.g. 228, Fd-3c, at 24 atoms) can take 1,000 attempts, minutes each on a shared CPU.  So
the set is balanced except that such hard groups are under-represented.  Indices 0..K-1 are
tried in order until ``--minutes`` of wall time have passed (K is recorded), so a set is fixed by
(seed, K, max_atoms, max_attempts).
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
    args = ap.parse_args(argv)

    from tqdm.auto import tqdm

    from xrdflow.data.random_crystals import generate_one
    from xrdflow.data.shards import Item, write_dataset

    t0 = time.perf_counter()
    items, skipped = [], collections.Counter()
    k = 0
    bar = tqdm(desc=f"random crystals (seed {args.seed})", unit=" indices", file=sys.stderr)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)   # the 'cannot be filled' note, once per call
        while time.perf_counter() - t0 < 60 * args.minutes and k < args.max_n:
            c = generate_one(k, seed=args.seed, max_atoms=args.max_atoms, max_attempts=args.max_attempts)
            if c is None:
                from xrdflow.data.random_crystals import space_group_of

                skipped[int(space_group_of(k, seed=args.seed, max_atoms=args.max_atoms))] += 1
            else:
                items.append(Item(f"random-{args.seed}-{k}", c.structure, int(c.space_group)))
            k += 1
            bar.update(1)
            bar.set_postfix(kept=len(items), skipped=sum(skipped.values()))
    bar.close()
    params = {"kind": "random", "generator": "benchmarks/classifier_random_set.py (generate_one, first stream)",
              "seed": args.seed, "indices_tried": k, "max_atoms": args.max_atoms,
              "max_attempts": args.max_attempts, "space_groups": "uniform",
              "skipped_by_space_group": {str(g): n for g, n in sorted(skipped.items())},
              "wall_s": round(time.perf_counter() - t0, 1)}
    write_dataset(args.output, items, shard_size=args.shard_size, params=params, progress=False)
    print(f"{len(items)} crystals of indices 0..{k - 1} (seed {args.seed}) in {args.output}; "
          f"{sum(skipped.values())} skipped (space groups {dict(sorted(skipped.items()))}); "
          f"{time.perf_counter() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
