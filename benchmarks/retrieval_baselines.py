"""Non-learned retrieval baselines (pattern cosine, peak figure of merit) on simulated queries.

    python benchmarks/retrieval_baselines.py [--skip-large]

Gallery = a set of structures; queries = their own patterns (Cu K-alpha doublet,
5-90 deg, 4096 points, the default training simulator), clean or with
xf.Augmentation.realistic() drawn at seed 0; query i's answer is gallery entry i.
Ties count against the query.  Cases: the bundled test split (300 structures),
clean and realistic; mp20_biternary_test (7,118) from ../shared/data, realistic.
Prints a Markdown table (top-k in %, seconds per baseline).
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

import xrdflow as xf
from xrdflow.data import bundled_dataset
from xrdflow.evaluate.evaluation import make_queries, run_baselines
from xrdflow.evaluate.gallery import gallery_from_structures, load_gallery, space_group_counts

MP20_TEST = Path(__file__).resolve().parents[2] / "shared" / "data" / "structures" / "mp20_biternary_test.csv.gz"


def run_case(name, gallery, kind, sim, seed=0):
    refl = sim.reflections(gallery.structures)
    clean = sim.render(refl)[0]
    Q = clean if kind == "clean" else make_queries(sim, refl, kind, seed)
    metrics, _ = run_baselines(sim, gallery, refl, Q, space_group_counts(gallery.space_groups),
                               clean_patterns=clean, progress=sys.stderr.isatty())
    return [(name, len(gallery), kind, b, m) for b, m in metrics.items()]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--skip-large", action="store_true", help="only the bundled 300-structure split")
    args = ap.parse_args(argv)
    sim = xf.Simulator("CuKa", (5.0, 90.0), 4096)
    rows = []
    t0 = time.perf_counter()
    test = bundled_dataset("test")
    gal = gallery_from_structures(test.structures, test.ids)
    for kind in ("clean", "realistic"):
        rows += run_case("bundled test", gal, kind, sim)
    if not args.skip_large:
        if MP20_TEST.exists():
            big = load_gallery(MP20_TEST, progress=sys.stderr.isatty())
            rows += run_case("mp20_biternary_test", big, "realistic", sim)
        else:
            print(f"(skipped mp20_biternary_test: {MP20_TEST} not present)", file=sys.stderr)
    print("| gallery | structures | queries | baseline | top-1 % | top-3 % | top-5 % | top-10 % | seconds |")
    print("|---|---:|---|---|---:|---:|---:|---:|---:|")
    for name, n, kind, b, m in rows:
        print(f"| {name} | {n:,} | {kind} | {b} | {100 * m['top1']:.1f} | {100 * m['top3']:.1f} | "
              f"{100 * m['top5']:.1f} | {100 * m['top10']:.1f} | {m['seconds']:.1f} |")
    print(f"\ntotal {time.perf_counter() - t0:.0f} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
