"""Time to import 10,000 real structures into a sharded dataset, with cached reflections.

    python benchmarks/import_time.py [--n 10000] [--workers 2]

Takes the first N rows of mp20_biternary_val + mp20_biternary_test (shared
data), writes them to a temporary CSV.gz and times `xrdflow dataset import
SRC -o DIR --with-reflections` (CIF parsing, space groups and labels,
reflections, HDF5 shards with checksums), printing a markdown row.
"""
from __future__ import annotations

import argparse
import csv
import gzip
import io
import os
import sys
import tempfile
import time
from pathlib import Path

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "structures"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=10_000)
    parser.add_argument("--workers", type=int, default=os.cpu_count())
    args = parser.parse_args(argv)
    rows, header = [], None
    for name in ("mp20_biternary_val.csv.gz", "mp20_biternary_test.csv.gz"):
        with gzip.open(DATA / name, "rt", newline="") as fh:
            reader = csv.DictReader(io.StringIO(fh.read()))
            header = header or ["material_id", "cif"]
            rows += [{k: r[k] for k in header} for r in reader]
    rows = rows[: args.n]
    from xrdflow.cli import main as xrdflow_main

    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "structures.csv.gz"
        with gzip.open(src, "wt", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=header)
            writer.writeheader()
            writer.writerows(rows)
        t0 = time.perf_counter()
        code = xrdflow_main(["dataset", "import", str(src), "-o", str(Path(tmp) / "ds"), "--with-reflections",
                             "--workers", str(args.workers)])
        elapsed = time.perf_counter() - t0
    if code != 0:
        return code
    print("| structures | workers | import + reflections (s) | per 1000 structures (s) |\n|---:|---:|---:|---:|")
    print(f"| {len(rows):,} | {args.workers} | {elapsed:.1f} | {elapsed / len(rows) * 1000:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
