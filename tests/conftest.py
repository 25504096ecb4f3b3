"""Shared fixtures: real structures from ../shared/data (skipped when absent)."""
from __future__ import annotations

import csv
import gzip
import io
import shutil
from pathlib import Path

import pytest

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
STRUCTURES_DIR = SHARED_DATA / "structures"


def read_csv_rows(name: str, limit: int | None = None) -> list[dict]:
    path = STRUCTURES_DIR / name
    if not path.exists():
        pytest.skip(f"reference data {path} not present (needs ../shared beside the checkout)")
    with gzip.open(path, "rt", newline="") as fh:
        rows = []
        for row in csv.DictReader(io.StringIO(fh.read())):
            rows.append(row)
            if limit is not None and len(rows) >= limit:
                break
    return rows


@pytest.fixture(scope="session")
def mp20_rows():
    """First 200 structures of the MP-20 binary/ternary test split (CIF text in P1)."""
    return read_csv_rows("mp20_biternary_test.csv.gz", 200)


@pytest.fixture(scope="session")
def mp20_structures(mp20_rows):
    import xrdflow as xf

    return [xf.Structure.from_cif(r["cif"], label=r["material_id"]) for r in mp20_rows]


def prepared_data_cache(tmp_path_factory, prepare_data, config_of, name: str) -> Path:
    """``OUT/cache`` of ``prepare_data(config_of(OUT), OUT)`` in a fresh temporary folder OUT (for a
    fixture that prepares the training data of a tiny config once)."""
    out = tmp_path_factory.mktemp(name)
    prepare_data(config_of(out), out, log=lambda m: None)
    return out / "cache"


def run_dir(tmp_path, data_cache, name: str = "run") -> Path:
    """A run's out_dir holding a copy of a prepared data cache (a run with the same data settings reuses it)."""
    out = Path(tmp_path) / name
    shutil.copytree(data_cache, out / "cache")
    return out
