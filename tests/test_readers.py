"""xrdflow.data.readers: load_structures on CSV / CIF / extxyz, and the bundled data."""
from __future__ import annotations

import csv
import gzip
import io
import json
import warnings
from pathlib import Path

import numpy as np
import pytest

import xrdflow as xf
from xrdflow.data import readers
from xrdflow.data.readers import (
    LoadResult,
    bundled_dataset,
    bundled_path,
    bundled_splits,
    load_structures,
)

STRUCTURES_DIR = Path(__file__).resolve().parents[2] / "shared" / "data" / "structures"
FIELDS = ("lattice", "frac", "numbers", "charges", "occupancy", "b_iso")

NACL_CIF = """data_NaCl
_symmetry_space_group_name_H-M 'F m -3 m'
_cell_length_a 5.64
_cell_length_b 5.64
_cell_length_c 5.64
_cell_angle_alpha 90
_cell_angle_beta 90
_cell_angle_gamma 90
loop_
_atom_site_label
_atom_site_type_symbol
_atom_site_fract_x
_atom_site_fract_y
_atom_site_fract_z
Na1 Na 0 0 0
Cl1 Cl 0.5 0.5 0.5
"""
CSCL_CIF = """data_CsCl
_cell_length_a 4.12
_cell_length_b 4.12
_cell_length_c 4.12
_cell_angle_alpha 90
_cell_angle_beta 90
_cell_angle_gamma 90
loop_
_atom_site_label
_atom_site_type_symbol
_atom_site_fract_x
_atom_site_fract_y
_atom_site_fract_z
Cs1 Cs 0 0 0
Cl1 Cl 0.5 0.5 0.5
"""
# Parses as CIF, but the cell is degenerate: a StructureError.
BAD_CELL_CIF = CSCL_CIF.replace("data_CsCl", "data_bad").replace(
    "_cell_angle_gamma 90", "_cell_angle_gamma 180")


# ----------------------------------------------------------------------------
# helpers
# ----------------------------------------------------------------------------


def read_table(path: Path, n: int) -> tuple[list[str], list[list[str]]]:
    """Header and the first n raw rows of a (gzipped) CSV."""
    with gzip.open(path, "rt", encoding="utf-8", newline="") as fh:
        reader = csv.reader(fh)
        header = next(reader)
        rows = [row for _, row in zip(range(n), reader)]
    return header, rows


def write_table(path: Path, header, rows) -> Path:
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    if path.name.endswith(".gz"):
        with gzip.open(path, "wt", encoding="utf-8", newline="") as fh:
            fh.write(text.getvalue())
    else:
        path.write_text(text.getvalue(), encoding="utf-8")
    return path


def assert_same_structure(a: xf.Structure, b: xf.Structure):
    assert a.label == b.label
    for name in FIELDS:
        x, y = getattr(a, name), getattr(b, name)
        assert x.dtype == y.dtype and x.shape == y.shape, name
        np.testing.assert_array_equal(x, y, err_msg=name)


def assert_same_result(a: LoadResult, b: LoadResult):
    assert a.ids == b.ids
    assert a.failures == b.failures
    assert a.columns == b.columns
    assert a.warnings == b.warnings
    assert len(a.structures) == len(b.structures)
    for s, t in zip(a.structures, b.structures):
        assert_same_structure(s, t)


def check_table_round_trip(tmp_path, header, rows):
    """Load the rows as .csv and .csv.gz and compare with Structure.from_cif row by row."""
    cif = header.index("cif")
    ids = [row[header.index("material_id")] for row in rows]
    expected = [xf.Structure.from_cif(row[cif], label=i) for row, i in zip(rows, ids)]
    others = [h for h in header if h not in ("cif", "material_id")]
    for name in ("table.csv", "table.csv.gz"):
        res = load_structures(write_table(tmp_path / name, header, rows), workers=1,
                              progress=False)
        assert isinstance(res, LoadResult) and len(res) == len(rows)
        assert res.ids == ids and res.failures == []
        assert [s.label for s in res.structures] == ids
        for s, e in zip(res.structures, expected):
            assert_same_structure(s, e)
        assert list(res.columns) == others
        for col in others:
            assert res.columns[col] == [row[header.index(col)] for row in rows]


# ----------------------------------------------------------------------------
# CSV
# ----------------------------------------------------------------------------


def test_csv_round_trip_shared_data(tmp_path):
    path = STRUCTURES_DIR / "mp20_biternary_test.csv.gz"
    if not path.exists():
        pytest.skip(f"reference data {path} not present")
    header, rows = read_table(path, 40)
    assert header[0] == "" and "spacegroup.number" in header  # pandas index kept as a column
    check_table_round_trip(tmp_path, header, rows)


def test_csv_round_trip_bundled(tmp_path):
    header, rows = read_table(bundled_path(), 40)
    assert header == ["material_id", "pretty_formula", "spacegroup.number", "cif"]
    check_table_round_trip(tmp_path, header, rows)


def test_whole_source_file_loads_with_columns():
    res = load_structures(bundled_path(), limit=50, progress=False)
    assert len(res) == 50 and res.failures == []
    assert set(res.columns) == {"pretty_formula", "spacegroup.number"}
    assert all(len(v) == 50 for v in res.columns.values())
    assert res.structures[0].lattice.flags.writeable is False
    assert "loaded 50 of 50" in res.summary()
    assert "structures=50" in repr(res)


def test_csv_failures_are_reported_not_dropped(tmp_path):
    header, rows = read_table(bundled_path(), 4)
    broken = rows[1][:3] + [rows[1][3].replace("_cell_length_a", "_cell_length_q")]
    not_cif = ["mp-notcif", "X", "1", "this is not a CIF"]
    empty = ["mp-empty", "Y", "2", ""]
    degenerate = ["mp-degenerate", "Z", "3", BAD_CELL_CIF]
    short = ["mp-short", "W"]
    table = [rows[0], broken, not_cif, rows[2], empty, degenerate, short, rows[3]]
    path = write_table(tmp_path / "mixed.csv", header, table)
    with pytest.warns(RuntimeWarning, match="5 of 8 entries"):
        res = load_structures(path, workers=1, progress=False)
    good = [rows[0][0], rows[2][0], rows[3][0]]
    assert res.ids == good
    assert res.columns["pretty_formula"] == [rows[0][1], rows[2][1], rows[3][1]]
    failed = dict(res.failures)
    assert list(failed) == [broken[0], "mp-notcif", "mp-empty", "mp-degenerate", "mp-short"]
    assert "cell" in failed[broken[0]]
    assert "CIF" in failed["mp-notcif"] or "cif" in failed["mp-notcif"]
    assert "empty" in failed["mp-empty"]
    assert "StructureError" in failed["mp-degenerate"]
    assert "fields" in failed["mp-short"]
    assert all(reason for reason in failed.values())
    summary = res.summary()
    assert "loaded 3 of 8" in summary and "mp-notcif" in summary


def test_csv_without_cif_column(tmp_path):
    path = write_table(tmp_path / "nocif.csv", ["material_id", "structure"], [["a", "b"]])
    with pytest.raises(ValueError, match=r"no 'cif' column.*'material_id', 'structure'"):
        load_structures(path, progress=False)


def test_csv_id_fallbacks(tmp_path):
    rows = [[NACL_CIF, "x"], [CSCL_CIF, "y"]]
    res = load_structures(write_table(tmp_path / "a.csv", ["cif", "note"], rows),
                          workers=1, progress=False)
    assert res.ids == ["0", "1"] and res.columns == {"note": ["x", "y"]}
    indexed = [["7", *rows[0]], ["9", *rows[1]]]
    res = load_structures(write_table(tmp_path / "b.csv", ["", "cif", "note"], indexed),
                          workers=1, progress=False)
    assert res.ids == ["7", "9"] and res.columns == {"note": ["x", "y"]}
    assert [s.formula for s in res.structures] == ["Cl4Na4", "ClCs"]


def test_bad_paths(tmp_path):
    with pytest.raises(FileNotFoundError):
        load_structures(tmp_path / "missing.csv.gz")
    (tmp_path / "data.json").write_text("{}")
    with pytest.raises(ValueError, match="cannot tell the format"):
        load_structures(tmp_path / "data.json")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no CIF files"):
        load_structures(tmp_path / "empty")
    with pytest.raises(ValueError, match="workers"):
        load_structures(bundled_path(), workers=0)


# ----------------------------------------------------------------------------
# CIF files and folders
# ----------------------------------------------------------------------------


def test_folder_of_cifs(tmp_path):
    folder = tmp_path / "cifs"
    folder.mkdir()
    (folder / "b_nacl.cif").write_text(NACL_CIF)
    (folder / "a_cscl.cif").write_text(CSCL_CIF)
    (folder / "c_broken.cif").write_text("data_x\n_cell_length_a 'unterminated\nloop_\n")
    (folder / "notes.txt").write_text("not a structure")
    with gzip.open(folder / "d_gz.cif.gz", "wt") as fh:
        fh.write(CSCL_CIF)
    with pytest.warns(RuntimeWarning, match="1 of 4"):
        res = load_structures(folder, progress=False)
    assert res.ids == ["a_cscl", "b_nacl", "d_gz"]
    assert [s.label for s in res.structures] == res.ids
    assert_same_structure(res.structures[1], xf.Structure.from_cif(NACL_CIF, label="b_nacl"))
    assert [i for i, _ in res.failures] == ["c_broken"]
    assert res.columns == {}


def test_single_and_multi_block_cif(tmp_path):
    one = tmp_path / "NaCl.cif"
    one.write_text(NACL_CIF)
    res = load_structures(one, progress=False)
    assert res.ids == ["NaCl"] and res.structures[0].n_atoms == 8

    multi = tmp_path / "salts.cif"
    multi.write_text(NACL_CIF + "\n" + CSCL_CIF)
    res = load_structures(multi, progress=False)
    assert res.ids == ["salts:NaCl", "salts:CsCl"]
    assert [s.label for s in res.structures] == res.ids
    assert [s.formula for s in res.structures] == ["Cl4Na4", "ClCs"]

    # one bad block: the other blocks still load, the bad one is reported by id
    mixed = tmp_path / "mixed.cif"
    mixed.write_text(NACL_CIF + "\n" + BAD_CELL_CIF + "\n" + CSCL_CIF)
    with pytest.warns(RuntimeWarning, match="1 of 3"):
        res = load_structures(mixed, progress=False)
    assert res.ids == ["mixed:NaCl", "mixed:CsCl"]
    assert [i for i, _ in res.failures] == ["mixed:bad"]

    assert load_structures(multi, limit=1, progress=False).ids == ["salts:NaCl"]


def test_parse_warnings_are_collected(tmp_path):
    text = NACL_CIF.replace("_atom_site_fract_z\n", "_atom_site_fract_z\n_atom_site_occupancy\n")
    text = text.replace("Na1 Na 0 0 0", "Na1 Na 0 0 0 1\nK1 K 0.25 0.25 0.25 0")
    text = text.replace("Cl1 Cl 0.5 0.5 0.5", "Cl1 Cl 0.5 0.5 0.5 1")
    (tmp_path / "vac.cif").write_text(text)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # collected, not raised
        res = load_structures(tmp_path / "vac.cif", progress=False)
    assert res.ids == ["vac"] and res.failures == []
    assert len(res.warnings) == 1 and res.warnings[0][0] == "vac"
    assert "zero occupancy" in res.warnings[0][1]


# ----------------------------------------------------------------------------
# extxyz
# ----------------------------------------------------------------------------


def test_extxyz_round_trip(tmp_path):
    ase_build = pytest.importorskip("ase.build")
    ase_io = pytest.importorskip("ase.io")
    frames = [ase_build.bulk("NaCl", "rocksalt", a=5.64), ase_build.bulk("Si", "diamond", a=5.43)]
    path = tmp_path / "two.extxyz"
    ase_io.write(path, frames, format="extxyz")
    res = load_structures(path, progress=False)
    assert res.ids == ["0", "1"] and res.failures == []
    for i, (s, atoms) in enumerate(zip(res.structures, frames)):
        expected = xf.Structure.from_ase(atoms, label=str(i))
        np.testing.assert_allclose(s.lattice, expected.lattice, atol=1e-6)
        np.testing.assert_allclose(s.frac, expected.frac, atol=1e-6)
        np.testing.assert_array_equal(s.numbers, expected.numbers)
        assert s.label == str(i)

    # a malformed frame is reported (reading cannot go on past it)
    with open(path, "a") as fh:
        fh.write('3\nLattice="1 0 0 0 1 0 0 0 1" Properties=species:S:1:pos:R:3\nNa 0 0\n')
    with pytest.warns(RuntimeWarning, match="1 of 3"):
        res = load_structures(path, progress=False)
    assert res.ids == ["0", "1"] and [i for i, _ in res.failures] == ["2"]


# ----------------------------------------------------------------------------
# parallel parsing, limit
# ----------------------------------------------------------------------------


def test_workers_give_identical_results(tmp_path):
    header, rows = read_table(bundled_path(), 300)
    rows.insert(7, ["mp-bad", "X", "1", "not a cif"])
    rows.insert(200, ["mp-bad2", "Y", "2", BAD_CELL_CIF])
    path = write_table(tmp_path / "many.csv.gz", header, rows)
    results = []
    for workers in (1, 2):
        with pytest.warns(RuntimeWarning, match="2 of 302"):
            results.append(load_structures(path, workers=workers, progress=False))
    serial, pooled = results
    assert len(serial) == 300 and [i for i, _ in serial.failures] == ["mp-bad", "mp-bad2"]
    assert serial.ids == [r[0] for r in rows if not r[0].startswith("mp-bad")]
    assert_same_result(serial, pooled)
    s = pooled.structures[0]  # built from the worker's arrays: still immutable
    assert not s.frac.flags.writeable and s.frac.flags.c_contiguous
    with pytest.raises(AttributeError):
        s.label = "x"
    assert_same_structure(pooled.structures[5], xf.Structure.from_cif(
        rows[5][3], label=rows[5][0]))
    assert pooled.structures[5].formula == xf.Structure.from_cif(rows[5][3]).formula


def test_limit(tmp_path):
    assert len(load_structures(bundled_path(), limit=7, progress=False)) == 7
    assert load_structures(bundled_path(), limit=0, progress=False).ids == []
    header, rows = read_table(bundled_path(), 3)
    rows.insert(1, ["mp-bad", "X", "1", "not a cif"])
    path = write_table(tmp_path / "t.csv", header, rows)
    with pytest.warns(RuntimeWarning):
        res = load_structures(path, limit=2, progress=False)
    assert res.ids == [rows[0][0]] and [i for i, _ in res.failures] == ["mp-bad"]


def test_progress_bar_runs(capsys):
    pytest.importorskip("tqdm")
    res = load_structures(bundled_path(), limit=3, progress=True)
    assert len(res) == 3


def test_structures_pickle():
    import pickle

    s = load_structures(bundled_path(), limit=1, progress=False).structures[0]
    assert_same_structure(pickle.loads(pickle.dumps(s)), s)


# ----------------------------------------------------------------------------
# bundled data
# ----------------------------------------------------------------------------


def bundled_ids() -> list[str]:
    _, rows = read_table(bundled_path(), 10**6)
    return [row[0] for row in rows]


def shared_ids(name: str) -> set[str] | None:
    path = STRUCTURES_DIR / name
    if not path.exists():
        return None
    header, rows = read_table(path, 10**6)
    col = header.index("material_id")
    return {row[col] for row in rows}


def test_bundled_files_present():
    folder = bundled_path().parent
    assert bundled_path().name == "mp20_subset.csv.gz"
    assert bundled_path().stat().st_size < 1_500_000
    for name in ("splits.json", "README.md", "LICENSE-wyckofftransformer.txt"):
        assert (folder / name).is_file(), name
    readme = (folder / "README.md").read_text()
    assert "CC BY 4.0" in readme and "make_bundled_dataset.py" in readme


def test_bundled_splits_are_disjoint_and_cover_the_file():
    splits = bundled_splits()
    assert {k: len(v) for k, v in splits.items()} == {"train": 2400, "val": 300, "test": 300}
    train, val, test = (set(splits[k]) for k in ("train", "val", "test"))
    assert len(train) == 2400 and len(val) == 300 and len(test) == 300  # no duplicates
    assert not (train & val) and not (train & test) and not (val & test)
    ids = bundled_ids()
    assert len(ids) == len(set(ids)) == 3000
    assert set(ids) == train | val | test
    meta = json.loads((bundled_path().parent / "splits.json").read_text())
    assert meta["counts"] == {"train": 2400, "val": 300, "test": 300}


def test_bundled_test_split_is_from_mp20_test():
    splits = bundled_splits()
    test_ids, val_ids = shared_ids("mp20_biternary_test.csv.gz"), shared_ids(
        "mp20_biternary_val.csv.gz")
    if test_ids is None or val_ids is None:
        pytest.skip("MP-20 reference files not present")
    assert set(splits["test"]) <= test_ids
    assert set(splits["train"]) <= val_ids - test_ids
    assert set(splits["val"]) <= val_ids - test_ids


@pytest.mark.parametrize("split", ["val", "test"])
def test_bundled_dataset_split(split):
    res = bundled_dataset(split)
    assert res.failures == []
    assert sorted(res.ids) == sorted(bundled_splits()[split])
    assert len(res) == 300
    assert set(res.columns) == {"pretty_formula", "spacegroup.number"}
    sg = [int(x) for x in res.columns["spacegroup.number"]]
    assert all(1 <= n <= 230 for n in sg)


def test_bundled_dataset_arguments():
    with pytest.raises(ValueError, match="split"):
        bundled_dataset("training")
    res = bundled_dataset("train", limit=5)
    assert len(res) == 5 and set(res.ids) <= set(bundled_splits()["train"])


def test_module_exports():
    assert set(readers.__all__) >= {"LoadResult", "load_structures", "bundled_dataset",
                                    "bundled_path", "bundled_splits"}
