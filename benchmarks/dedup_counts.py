"""How many duplicates the shared data sets hold, and how long finding them takes.

    python benchmarks/dedup_counts.py                # every data set in full (~35 s on 2 cores)
    python benchmarks/dedup_counts.py --limit 1000   # the first 1000 structures of each

For each data set of ../shared/data/structures it runs
:func:`xrdflow.data.dedup.find_duplicates` (with the material ids, so a
repeated id counts too) and reports the duplicate groups, the structures
removed and the time (CIF parsing excluded, reported apart).  Across
mp20_biternary_val and mpts52_val (the shared README reports ~410 common
material ids; the two CSV files share 270) it reports the id overlap, the
structural cross duplicates found by :func:`xrdflow.data.dedup.cross_duplicates`
and how the two agree; and it runs one call on all sets together to count the
duplicates shared between sets.  The output is markdown.  Times are wall-clock on this machine with
the engine on every core (``--threads`` to change), and include the space
groups of every structure and the fingerprints of the candidates.
"""
from __future__ import annotations

import argparse
import itertools
import os
import platform
import sys
import time
import warnings
from pathlib import Path

from xrdflow.data import load_structures
from xrdflow.data.dedup import cross_duplicates, find_duplicates, id_overlap

DATA_DIR = Path(__file__).resolve().parents[2] / "shared" / "data" / "structures"
DATASETS = ("mp20_biternary_val", "mp20_biternary_test", "mpts52_val", "perov5_val", "perov5_test",
            "carbon24_val", "carbon24_test")
CROSS = ("mp20_biternary_val", "mpts52_val")


def load(data_dir, name, limit):
    path = data_dir / f"{name}.csv.gz"
    if not path.exists():
        return None, 0.0
    t0 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = load_structures(path, limit=limit, progress=False)
    return res, time.perf_counter() - t0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--limit", type=int, default=None, help="first N structures of each data set")
    parser.add_argument("--threads", type=int, default=None, help="engine threads (default: all cores)")
    parser.add_argument("--data-dir", type=Path, default=DATA_DIR)
    parser.add_argument("--progress", action="store_true", help="tqdm bars")
    args = parser.parse_args(argv)
    if not args.data_dir.is_dir():
        print(f"data folder {args.data_dir} not found", file=sys.stderr)
        return 1

    options = dict(threads=args.threads, progress=args.progress)
    loaded = {}
    rows, notes = [], []
    total_n, total_t = 0, 0.0
    for name in DATASETS:
        res, t_load = load(args.data_dir, name, args.limit)
        if res is None:
            print(f"skipping {name}: not found", file=sys.stderr)
            continue
        loaded[name] = res
        t0 = time.perf_counter()
        report = find_duplicates(res.structures, ids=res.ids, **options)
        dt = time.perf_counter() - t0
        n = len(res.structures)
        total_n, total_t = total_n + n, total_t + dt
        largest = max((len(g) for g in report.groups), default=0)
        rows.append(f"| {name} | {n:,} | {len(report.groups):,} | {largest} | {report.n_duplicates:,} | "
                    f"{100.0 * report.n_duplicates / max(n, 1):.1f} % | {t_load:.1f} | {dt:.1f} | "
                    f"{1000.0 * dt / max(n, 1):.2f} |")
        examples = [", ".join(res.ids[i] for i in g[:4]) + (" ..." if len(g) > 4 else "")
                    for g in report.groups[:3]]
        if examples:
            notes.append(f"- {name}: " + "; ".join(f"({e})" for e in examples))

    limit_text = f"first {args.limit:,} structures of each set" if args.limit else "full data sets"
    print(f"## Duplicates within each data set ({limit_text})\n")
    print(f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, Python "
          f"{platform.python_version()}; engine threads: {args.threads or 'all'}\n")
    print("| data set | structures | duplicate groups | largest group | duplicates removed | removed | "
          "load (s) | dedup (s) | dedup s / 1000 |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for row in rows:
        print(row)
    if total_n:
        print(f"| sum of the rows above | {total_n:,} | | | | | | {total_t:.1f} | "
              f"{1000.0 * total_t / total_n:.2f} |")
    if notes:
        print("\nFirst groups (ids):\n")
        print("\n".join(notes))

    if len(loaded) > 1:  # one call on everything: duplicates within and across the sets
        structures = [s for res in loaded.values() for s in res.structures]
        # Ids prefixed with the set: groups across sets come from structure alone
        # (perov_5 ids are row numbers, not material ids).
        ids = [f"{name}:{i}" for name, res in loaded.items() for i in res.ids]
        t0 = time.perf_counter()
        report = find_duplicates(structures, ids=ids, **options)
        dt = time.perf_counter() - t0
        n = len(structures)
        between = {}
        for g in report.groups:
            names = sorted({ids[i].split(":")[0] for i in g})
            for a_set, b_set in itertools.combinations(names, 2):
                between[(a_set, b_set)] = between.get((a_set, b_set), 0) + 1
        spans = sum(1 for g in report.groups if len({ids[i].split(":")[0] for i in g}) > 1)
        print(f"\n## All {len(loaded)} sets in one find_duplicates call\n")
        print(f"{n:,} structures: {len(report.groups):,} duplicate groups ({spans:,} spanning two or more sets, "
              f"largest {max((len(g) for g in report.groups), default=0)}), {report.n_duplicates:,} duplicates "
              f"removed ({100.0 * report.n_duplicates / max(n, 1):.1f} %), {dt:.1f} s "
              f"({1000.0 * dt / max(n, 1):.2f} s per 1000 structures).")
        if between:
            print("\nStructural duplicate groups shared between two sets:\n")
            print("| set | set | groups |")
            print("|---|---|---:|")
            for (a_set, b_set), count in sorted(between.items(), key=lambda kv: -kv[1]):
                print(f"| {a_set} | {b_set} | {count:,} |")

    a_name, b_name = CROSS
    if a_name in loaded and b_name in loaded:
        a, b = loaded[a_name], loaded[b_name]
        t0 = time.perf_counter()
        shared_ids = id_overlap(a.ids, b.ids)
        pairs = cross_duplicates(a.structures, b.structures, **options)
        dt = time.perf_counter() - t0
        structural_b = {j for _, j in pairs}
        confirmed = {b.ids[j] for i, j in pairs if a.ids[i] == b.ids[j]}
        missed = [ident for ident in shared_ids if ident not in confirmed]
        other_id = {j for i, j in pairs if a.ids[i] != b.ids[j]}
        id_index_b = {ident: j for j, ident in enumerate(b.ids)}
        leaking = structural_b | {id_index_b[i] for i in shared_ids}
        print(f"\n## Across {a_name} ({len(a):,}) and {b_name} ({len(b):,})\n")
        print("| quantity | count |")
        print("|---|---:|")
        print(f"| material ids in both | {len(shared_ids):,} |")
        print(f"| structural duplicate pairs (cross_duplicates) | {len(pairs):,} |")
        print(f"| {b_name} structures with a structural duplicate in {a_name} | {len(structural_b):,} |")
        print(f"| ... of the shared ids, found as structural duplicates of their namesake | {len(confirmed):,} |")
        print(f"| ... structural duplicates under a different material id | {len(other_id):,} |")
        print(f"| {b_name} structures to drop (id or structure) | {len(leaking):,} |")
        print(f"| time (s), space groups of both sets included | {dt:.1f} |")
        print(f"| time per 1000 structures (s) | {1000.0 * dt / (len(a) + len(b)):.2f} |")
        if missed:
            print(f"\nShared ids not confirmed structurally ({len(missed)}; e.g. re-relaxed or re-symmetrised "
                  f"in the later MP release): {', '.join(missed[:10])}" + (" ..." if len(missed) > 10 else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
