#!/usr/bin/env python
"""Make the MP-20 subset bundled with xrdflow (python/xrdflow/data/bundled/).

    python scripts/make_bundled_dataset.py [--source DIR] [--out DIR]

DIR (--source) holds mp20_biternary_val.csv.gz, mp20_biternary_test.csv.gz and
LICENSE-wyckofftransformer.txt (default: ../shared/data/structures beside the
checkout).  The output is byte-for-byte reproducible:

* mp20_subset.csv.gz: 3000 structures (columns material_id, pretty_formula,
  spacegroup.number, cif; rows sorted by material_id; gzip level 9, no
  timestamp);
* splits.json: a fixed split by material_id, train 2400 / val 300 / test 300.
  train and val are drawn from MP-20's validation file, test only from
  MP-20's test file, so nothing of MP-20's own test split reaches our train
  or val split;
* LICENSE-wyckofftransformer.txt copied from the source folder.

Selection: the rows of each file are deduplicated by material_id (an id in
both files counts as a test id and is left out of the train/val pool), sorted
by material_id, put in the order of numpy.random.default_rng(SEED).permutation,
and taken in that order, skipping any row that xrdflow cannot read or that
warns while being read, until the counts are reached.  The first 2400 drawn
from the validation file are train, the next 300 val.
"""
from __future__ import annotations

import argparse
import csv
import gzip
import io
import json
import re
import shutil
import sys
import warnings
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
DEFAULT_SOURCE = REPO.parent / "shared" / "data" / "structures"
DEFAULT_OUT = REPO / "python" / "xrdflow" / "data" / "bundled"

SEED = 20240607
N_TRAIN, N_VAL, N_TEST = 2400, 300, 300
COLUMNS = ["material_id", "pretty_formula", "spacegroup.number", "cif"]
VAL_FILE, TEST_FILE = "mp20_biternary_val.csv.gz", "mp20_biternary_test.csv.gz"
LICENSE_FILE = "LICENSE-wyckofftransformer.txt"


def id_key(material_id: str):
    """Natural order: 'mp-9' < 'mp-10'; other ids after, as text."""
    match = re.fullmatch(r"([a-z]+)-(\d+)", material_id)
    return (0, match.group(1), int(match.group(2)), "") if match else (1, "", 0, material_id)


def read_rows(path: Path) -> dict[str, dict]:
    csv.field_size_limit(2**31 - 1)
    rows = {}
    with gzip.open(path, "rt", encoding="utf-8", newline="") as fh:
        for row in csv.DictReader(fh):
            missing = [c for c in COLUMNS if c not in row]
            if missing:
                sys.exit(f"{path} lacks columns {missing}")
            rows.setdefault(row["material_id"], {c: row[c] for c in COLUMNS})
    return rows


def readable(row: dict) -> bool:
    import xrdflow as xf

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        try:
            xf.Structure.from_cif(row["cif"], label=row["material_id"])
        except Exception:  # noqa: BLE001 - any problem: not bundled
            return False
    return True


def draw(rows: dict[str, dict], n: int, rng) -> list[str]:
    ids = sorted(rows, key=id_key)
    chosen, skipped = [], 0
    for k in rng.permutation(len(ids)):
        if readable(rows[ids[k]]):
            chosen.append(ids[k])
            if len(chosen) == n:
                print(f"drew {n} of {len(ids)} rows ({skipped} unreadable rows skipped)")
                return chosen
        else:
            skipped += 1
    sys.exit(f"only {len(chosen)} readable rows, {n} needed")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--source", type=Path, default=DEFAULT_SOURCE,
                        help=f"folder with the MP-20 files (default {DEFAULT_SOURCE})")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT,
                        help=f"output folder (default {DEFAULT_OUT})")
    args = parser.parse_args(argv)

    val_rows = read_rows(args.source / VAL_FILE)
    test_rows = read_rows(args.source / TEST_FILE)
    overlap = set(val_rows) & set(test_rows)
    for material_id in overlap:  # a test structure never goes to train/val
        del val_rows[material_id]
    print(f"{VAL_FILE}: {len(val_rows)} unique ids (after removing {len(overlap)} also in "
          f"{TEST_FILE}); {TEST_FILE}: {len(test_rows)} unique ids")

    rng = np.random.default_rng(SEED)
    trainval = draw(val_rows, N_TRAIN + N_VAL, rng)
    test = draw(test_rows, N_TEST, rng)
    splits = {"train": trainval[:N_TRAIN], "val": trainval[N_TRAIN:], "test": test}

    args.out.mkdir(parents=True, exist_ok=True)
    chosen = {**{i: val_rows[i] for i in trainval}, **{i: test_rows[i] for i in test}}
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=COLUMNS, lineterminator="\n")
    writer.writeheader()
    for material_id in sorted(chosen, key=id_key):
        writer.writerow(chosen[material_id])
    csv_path = args.out / "mp20_subset.csv.gz"
    with open(csv_path, "wb") as raw, gzip.GzipFile(filename="", mode="wb", fileobj=raw,
                                                    compresslevel=9, mtime=0) as gz:
        gz.write(text.getvalue().encode("utf-8"))

    meta = {
        "description": "Fixed split by material_id of mp20_subset.csv.gz; train and val "
                       f"from MP-20's validation split ({VAL_FILE}), test only from "
                       f"MP-20's test split ({TEST_FILE}). Made by "
                       "scripts/make_bundled_dataset.py.",
        "seed": SEED,
        "counts": {name: len(ids) for name, ids in splits.items()},
        **{name: sorted(ids, key=id_key) for name, ids in splits.items()},
    }
    splits_path = args.out / "splits.json"
    splits_path.write_text(json.dumps(meta, indent=1) + "\n", encoding="utf-8")
    shutil.copyfile(args.source / LICENSE_FILE, args.out / LICENSE_FILE)

    for path in (csv_path, splits_path, args.out / LICENSE_FILE):
        print(f"wrote {path} ({path.stat().st_size / 1e6:.3f} MB)")
    print("split sizes:", meta["counts"])


if __name__ == "__main__":
    main()
