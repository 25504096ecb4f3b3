"""``xrdflow dataset import|generate|dedup|info``: end to end on small inputs,
interrupted runs (Ctrl-C in process, kill -9 of a subprocess) resumed to the
exact result of an uninterrupted run, and user errors."""
from __future__ import annotations

import csv
import gzip
import io
import json
import os
import random
import signal
import subprocess
import sys
import time
import types
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("h5py")

import xrdflow as xf  # noqa: E402
from xrdflow.symmetry import quiet_spglib  # noqa: E402
import xrdflow.data  # noqa: E402
from xrdflow.cli import main  # noqa: E402
from xrdflow.data import bundled_path, bundled_splits, load_structures  # noqa: E402
from xrdflow.data import shards  # noqa: E402
from xrdflow.data.shards import ShardedDataset  # noqa: E402

STRUCTURE_FIELDS = ("lattice", "frac", "numbers", "charges", "occupancy", "b_iso")
N_GOOD = 24
BROKEN = ("broken-1", "data_broken\n_cell_length_a 3.0\n")


def run(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def val_rows():
    """The first rows of the bundled validation split, as CSV rows."""
    keep = set(bundled_splits()["val"])
    with gzip.open(bundled_path(), "rt", newline="") as fh:
        rows = [r for r in csv.DictReader(io.StringIO(fh.read())) if r["material_id"] in keep]
    return rows


def write_csv(path: Path, rows) -> Path:
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["material_id", "cif"])
        for r in rows:
            w.writerow(r)
    return path


@pytest.fixture(scope="module")
def src_csv(tmp_path_factory, val_rows):
    """24 good structures and one broken entry in the middle."""
    rows = [(r["material_id"], r["cif"]) for r in val_rows[:N_GOOD]]
    rows.insert(5, BROKEN)
    return write_csv(tmp_path_factory.mktemp("src") / "src.csv", rows)


@pytest.fixture(scope="module")
def imported(tmp_path_factory, src_csv):
    """``dataset import`` of src_csv with shard size 5, run once, uninterrupted."""
    out = tmp_path_factory.mktemp("imp") / "ds"
    assert main(["dataset", "import", str(src_csv), "-o", str(out), "--shard-size", "5"]) == 0
    return out


def assert_same_dataset(path_a, path_b):
    a, b = ShardedDataset(path_a), ShardedDataset(path_b)
    assert a.ids() == b.ids()
    for s, t in zip(a, b):
        for name in STRUCTURE_FIELDS:
            x, y = getattr(s, name), getattr(t, name)
            assert x.dtype == y.dtype and np.array_equal(x, y), name
    la, lb = a.labels(), b.labels()
    assert all(np.array_equal(la[k], lb[k]) for k in la)
    assert a.params == b.params and a.contents == b.contents
    assert [(e["start"], e["stop"]) for e in a.shards] == [(e["start"], e["stop"]) for e in b.shards]
    if a.contents["reflections"]:
        ra, rb = a.reflections(), b.reflections()
        assert np.array_equal(ra.offsets, rb.offsets) and np.array_equal(ra.F2, rb.F2)


# ------------------------------------------------------------------ import + info
def test_import_and_info(capsys, imported, src_csv, val_rows):
    ds = ShardedDataset(imported)
    with pytest.warns(RuntimeWarning, match="could not be read"):
        expected = load_structures(src_csv, workers=1, progress=False)
    assert len(ds) == N_GOOD and ds.n_shards == 5
    assert ds.ids() == expected.ids == [r["material_id"] for r in val_rows[:N_GOOD]]
    for s, t in zip(ds, expected.structures):
        assert all(np.array_equal(getattr(s, f), getattr(t, f)) for f in STRUCTURE_FIELDS)
    with quiet_spglib():
        assert ds.labels()["space_group"].tolist() == [xf.space_group(s)[0] for s in expected.structures]
    assert ds.params["kind"] == "import" and ds.params["source"] == os.path.abspath(src_csv)
    failures = json.loads((imported / "failures.json").read_text())
    assert failures["n_failed"] == 1 and failures["failures"][0]["id"] == "broken-1"

    code, out, err = run(capsys, "dataset", "info", imported)
    assert code == 0, err
    assert "24 (24 unique ids) in 5 shard(s)" in out and "checksums OK" in out
    assert "space groups (top" in out and "crystal systems" in out
    code, out, err = run(capsys, "dataset", "info", imported, "--json")
    assert code == 0, err
    info = json.loads(out)
    assert info["n_items"] == N_GOOD and info["n_shards"] == 5 and info["checksums"] == "ok"
    assert sum(info["crystal_systems"].values()) == N_GOOD
    assert 1 <= len(info["space_groups"]) <= 10
    assert info["params"]["n_failed"] == 1


def test_import_reports_failures(capsys, tmp_path, src_csv):
    code, out, err = run(capsys, "dataset", "import", src_csv, "-o", tmp_path / "ds", "--shard-size", "100")
    assert code == 0, err
    assert "imported 24 structures" in out
    assert "1 entries could not be read" in out and "broken-1" in out
    assert "Traceback" not in err


def test_import_with_reflections_and_patterns(capsys, tmp_path, val_rows):
    src = write_csv(tmp_path / "s.csv", [(r["material_id"], r["cif"]) for r in val_rows[:6]])
    out = tmp_path / "ds"
    code, _, err = run(capsys, "dataset", "import", src, "-o", out, "--shard-size", "4", "--with-reflections",
                       "--with-patterns", "--n-points", "4000")
    assert code == 0, err
    ds = ShardedDataset(out)
    structures = load_structures(src, workers=1, progress=False).structures
    sim = xf.Simulator(n_points=4000)
    refl, direct = ds.reflections(), sim.reflections(structures)
    for name in ("offsets", "hkl", "d", "F2", "multiplicity", "lattices", "laue_offsets", "laue_rotations"):
        assert np.array_equal(getattr(refl, name), getattr(direct, name)), name
    y, axis = ds.patterns()
    assert np.array_equal(axis, sim.axis) and np.array_equal(y, sim.patterns(structures))


def test_import_interrupted_by_ctrl_c_resumes(capsys, monkeypatch, tmp_path, src_csv, imported):
    out = tmp_path / "ds"
    for k in (2, 1):  # stop after k more shards, twice
        original, calls = shards._write_shard, {"n": 0}

        def stop_after(*args, _k=k, _calls=calls, _original=original):
            if _calls["n"] == _k:
                raise KeyboardInterrupt
            _calls["n"] += 1
            return _original(*args)
        with monkeypatch.context() as m:
            m.setattr(shards, "_write_shard", stop_after)
            code, _, err = run(capsys, "dataset", "import", src_csv, "-o", out, "--shard-size", "5",
                               *(["--resume"] if k == 1 else []))
        assert code == 130 and "--resume" in err and "Traceback" not in err
    assert len(json.loads((out / "manifest.json").read_text())["shards"]) == 3
    code, outs, err = run(capsys, "dataset", "info", out)
    assert code == 0 and "INCOMPLETE: 3 of 5 shards" in outs
    code, outs, err = run(capsys, "dataset", "import", src_csv, "-o", out, "--shard-size", "5", "--resume")
    assert code == 0, err
    assert "2 written, 3 kept from an earlier run" in outs
    assert_same_dataset(out, imported)


def _listed(out: Path) -> int:
    try:
        return len(json.loads((out / "manifest.json").read_text())["shards"])
    except FileNotFoundError:
        return 0


def test_import_killed_with_sigkill_resumes(tmp_path, src_csv, imported):
    """kill -9 at random moments of a real run; --resume then gives the uninterrupted result."""
    out = tmp_path / "ds"
    cmd = [sys.executable, "-m", "xrdflow", "dataset", "import", str(src_csv), "-o", str(out), "--shard-size", "5"]
    rng = random.Random(7)
    kills = 0
    for attempt in range(2):
        before = _listed(out)
        proc = subprocess.Popen(cmd + (["--resume"] if attempt else []), stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE)
        deadline = time.monotonic() + 60
        while proc.poll() is None and _listed(out) <= before and time.monotonic() < deadline:
            time.sleep(0.002)
        time.sleep(rng.uniform(0.0, 0.02))
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            kills += 1
        proc.communicate(timeout=60)
        if proc.returncode == 0:
            break
        # Whatever the moment of the kill, the directory is a valid data set (maybe incomplete).
        ShardedDataset(out, allow_incomplete=True)
    assert kills >= 1
    done = subprocess.run(cmd + ["--resume"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr
    assert not [p.name for p in out.iterdir() if ".tmp-" in p.name]
    assert_same_dataset(out, imported)


def test_resume_with_other_options_is_refused(capsys, tmp_path, src_csv, imported):
    code, _, err = run(capsys, "dataset", "import", src_csv, "-o", imported, "--shard-size", "7", "--resume")
    assert code == 2 and err.startswith("xrdflow: error: cannot resume") and "shard size 5" in err
    code, _, err = run(capsys, "dataset", "import", src_csv, "-o", imported, "--shard-size", "5", "--resume",
                       "--with-reflections")
    assert code == 2 and "different contents" in err
    # the same options: nothing to do
    code, out, err = run(capsys, "dataset", "import", src_csv, "-o", imported, "--shard-size", "5", "--resume")
    assert code == 0 and "0 written, 5 kept" in out


# ------------------------------------------------------------------ dedup
def test_dedup_finds_planted_duplicates(capsys, tmp_path, val_rows):
    originals = [(r["material_id"], r["cif"]) for r in val_rows[:10]]
    copies = [("copy-of-" + originals[i][0], originals[i][1]) for i in (1, 4, 4)]
    src = write_csv(tmp_path / "planted.csv", originals[:6] + copies + originals[6:])
    other = write_csv(tmp_path / "other.csv", [("elsewhere-1", originals[7][1]), originals[9],
                                                (val_rows[20]["material_id"], val_rows[20]["cif"])])
    out, report = tmp_path / "kept", tmp_path / "report.json"
    code, text, err = run(capsys, "dataset", "dedup", src, "-o", out, "--json", report, "--against", other,
                          "--shard-size", "4")
    assert code == 0, err
    assert "3 duplicates removed, 10 kept" in text
    assert "against" in text and "2 of the 13 structures" in text and "1 ids in common" in text
    ds = ShardedDataset(out)
    assert ds.ids() == [i for i, _ in originals]
    rep = json.loads(report.read_text())
    assert rep["n_duplicates"] == 3 and rep["n_kept"] == 10
    groups = sorted(sorted(g) for g in rep["groups"])
    assert groups == sorted([sorted([originals[1][0], "copy-of-" + originals[1][0]]),
                             sorted([originals[4][0]] + ["copy-of-" + originals[4][0]] * 2)])
    (against,) = rep["against"]
    assert against["id_overlap"] == [originals[9][0]]
    assert sorted(p[0] for p in against["pairs"]) == sorted([originals[7][0], originals[9][0]])

    # a data set directory as the source: labels carried over; --remove-against drops the leaks
    out2 = tmp_path / "kept2"
    code, text, err = run(capsys, "dataset", "dedup", out, "-o", out2, "--against", other, "--remove-against")
    assert code == 0, err
    ds2 = ShardedDataset(out2)
    assert ds2.ids() == [i for i, _ in originals if i not in (originals[7][0], originals[9][0])]
    assert ds2.params["kind"] == "dedup" and ds2.params["source_params"]["kind"] == "dedup"
    keep = [ds.ids().index(i) for i in ds2.ids()]
    assert np.array_equal(ds2.labels()["space_group"], ds.labels()["space_group"][keep])


# ------------------------------------------------------------------ generate
def _fake_random_crystals():
    """A stand-in with the API of xrdflow.data.random_crystals: crystal i depends only on (seed, i)."""
    module = types.ModuleType("xrdflow.data.random_crystals")
    calls = []

    class RandomCrystal(tuple):
        structure = property(lambda self: self[0])
        space_group = property(lambda self: self[1])
        index = property(lambda self: self[2])
        attempts = property(lambda self: self[3])

    def generate_random_crystals(n, *, seed=0, space_groups="uniform", compositions=None, max_atoms=40,
                                 workers=None, progress=True, start=0):
        if n:
            calls.append((start, n))
        out = []
        for i in range(start, start + n):
            a = 3.5 + 0.01 * ((seed * 7919 + i * 31) % 97)
            s = xf.Structure.from_arrays([a, a, a, 90, 90, 90], [[0, 0, 0], [0.5, 0.5, 0.5]], ["Cs", "Cl"])
            out.append(RandomCrystal((s, 221, i, 1)))
        return out
    module.generate_random_crystals = generate_random_crystals
    module.calls = calls
    return module


def test_generate_resumes_with_a_stand_in_generator(capsys, monkeypatch, tmp_path):
    fake = _fake_random_crystals()
    monkeypatch.setitem(sys.modules, "xrdflow.data.random_crystals", fake)
    monkeypatch.setattr(xrdflow.data, "random_crystals", fake, raising=False)
    args = ["dataset", "generate", "--random", "10", "--seed", "3", "--shard-size", "4", "--max-atoms", "12"]
    ref = tmp_path / "ref"
    code, out, err = run(capsys, *args, "-o", ref)
    assert code == 0, err
    assert fake.calls == [(0, 4), (4, 4), (8, 2)]
    ds = ShardedDataset(ref)
    assert ds.ids() == [f"random-3-{i}" for i in range(10)]
    assert ds.params["seed"] == 3 and ds.params["n"] == 10 and ds.params["max_atoms"] == 12
    assert set(ds.labels()["space_group"].tolist()) == {221}

    out_dir = tmp_path / "gen"
    original = fake.generate_random_crystals

    def stop_on_second(n, **kw):
        if len(fake.calls) == 4:  # 3 calls were the reference run
            raise KeyboardInterrupt
        return original(n, **kw)
    fake.generate_random_crystals = stop_on_second
    code, _, err = run(capsys, *args, "-o", out_dir)
    assert code == 130 and "--resume" in err
    fake.generate_random_crystals = original
    del fake.calls[:]
    code, out, err = run(capsys, *args, "-o", out_dir, "--resume")
    assert code == 0, err
    assert fake.calls == [(4, 4), (8, 2)]  # only the missing shards are generated
    assert_same_dataset(out_dir, ref)
    code, _, err = run(capsys, "dataset", "generate", "--random", "10", "--seed", "4", "--shard-size", "4",
                       "--max-atoms", "12", "-o", out_dir, "--resume")
    assert code == 2 and "seed: 3 there, 4 now" in err

    # a failure before the first shard leaves no data set behind: the same command can run again
    def failing(n, **kw):
        if n:
            raise ValueError("no composition fits")
        return []
    fake.generate_random_crystals = failing
    code, _, err = run(capsys, *args, "-o", tmp_path / "failed")
    assert code == 2 and "no composition fits" in err
    assert not (tmp_path / "failed").exists()


def test_generate_random_crystals(capsys, monkeypatch, tmp_path):
    """The real generator, interrupted and resumed.  Kept to 4 crystals (2 shards): PyXtal needs up
    to seconds for some crystals at --max-atoms 12; seed 0's first four are quick."""
    pytest.importorskip("pyxtal")
    rc = pytest.importorskip("xrdflow.data.random_crystals")
    args = ["dataset", "generate", "--random", "4", "--max-atoms", "12", "--shard-size", "2", "--seed", "0",
            "--workers", "1"]
    ref = tmp_path / "ref"
    code, out, err = run(capsys, *args, "-o", ref)
    assert code == 0, err
    ds = ShardedDataset(ref)
    assert len(ds) == 4 and ds.n_shards == 2
    assert ds.ids() == [f"random-0-{i}" for i in range(4)]
    assert all(s.n_atoms <= 12 for s in ds)
    with quiet_spglib():
        assert ds.labels()["space_group"].tolist() == [xf.space_group(s)[0] for s in ds]

    original, calls = rc.generate_random_crystals, []

    def stop_on_second(n, **kw):
        if n == 0:  # the CLI's check of the options
            return original(n, **kw)
        calls.append(kw.get("start"))
        if len(calls) == 2:
            raise KeyboardInterrupt
        return original(n, **kw)
    with monkeypatch.context() as m:
        m.setattr(rc, "generate_random_crystals", stop_on_second)
        code, _, err = run(capsys, *args, "-o", tmp_path / "gen")
    assert code == 130 and calls == [0, 2]
    code, _, err = run(capsys, *args, "-o", tmp_path / "gen", "--resume")
    assert code == 0, err
    assert_same_dataset(tmp_path / "gen", ref)


@pytest.mark.filterwarnings("ignore:.*cannot be filled:RuntimeWarning")
def test_generate_skip_failures(capsys, monkeypatch, tmp_path):
    """--skip-failures with one attempt per index: seed 0 at --max-atoms 12 finds crystals for indices
    1, 3, 6, 7, 8 only (checked against generate_one), interrupted after its first shard and resumed."""
    pytest.importorskip("pyxtal")
    rc = pytest.importorskip("xrdflow.data.random_crystals")
    args = ["dataset", "generate", "--random", "10", "--max-atoms", "12", "--shard-size", "2", "--seed", "0",
            "--workers", "1", "--max-attempts", "1", "--skip-failures"]
    ref = tmp_path / "ref"
    code, out, err = run(capsys, *args, "-o", ref)
    assert code == 0, err
    ds = ShardedDataset(ref)
    found = [int(i.rsplit("-", 1)[1]) for i in ds.ids()]
    expected = [i for i in range(10) if rc.generate_one(i, seed=0, max_atoms=12, max_attempts=1) is not None]
    assert found == expected and 0 < len(found) < 10
    skipped = [i for i in range(10) if i not in found]
    p = ds.params
    assert p["on_failure"] == "skip" and p["max_attempts"] == 1 and p["n"] == 10
    assert p["n_found"] == len(found) and p["n_skipped"] == len(skipped)
    assert p["skipped"] == [[i, rc.space_group_of(i, seed=0, max_atoms=12)] for i in skipped]
    by_group = {}
    for _, g in p["skipped"]:
        by_group[str(g)] = by_group.get(str(g), 0) + 1
    assert p["skipped_by_space_group"] == by_group
    assert f"generated {len(found)} random crystals of 10 indices" in out
    assert f"{len(skipped)} indices skipped (space groups: " in out
    assert "left out" not in err  # summed up in the summary line, not warned per shard

    original, calls = rc.generate_random_crystals, []

    def stop_on_second(n, **kw):
        if n == 0:  # the CLI's check of the options
            return original(n, **kw)
        calls.append(kw.get("start"))
        if len(calls) == 3:  # shard 0 (indices 1 and 3) is written once the second block is in
            raise KeyboardInterrupt
        return original(n, **kw)
    with monkeypatch.context() as m:
        m.setattr(rc, "generate_random_crystals", stop_on_second)
        code, _, err = run(capsys, *args, "-o", tmp_path / "gen")
        assert code == 130 and calls == [0, 2, 4]
        assert ShardedDataset(tmp_path / "gen", allow_incomplete=True).n_shards == 1
        del calls[:]
        m.setattr(rc, "generate_random_crystals",
                  lambda n, **kw: calls.append(kw.get("start")) or original(n, **kw))
        code, _, err = run(capsys, *args, "-o", tmp_path / "gen", "--resume")
        assert code == 0, err
        # the kept shard (indices 1 and 3) is read back; generation continues after index 3
        assert [c for c in calls if c is not None] == [4, 6, 8]
        assert_same_dataset(tmp_path / "gen", ref)
        # resuming the complete data set changes nothing
        code, out, err = run(capsys, *args, "-o", tmp_path / "gen", "--resume")
        assert code == 0 and "0 written" in out, err
        assert_same_dataset(tmp_path / "gen", ref)
    code, _, err = run(capsys, *args[:-3], "--max-attempts", "2", "--skip-failures", "-o", tmp_path / "gen",
                       "--resume")
    assert code == 2 and "max_attempts: 1 there, 2 now" in err


# ------------------------------------------------------------------ user errors
def test_user_errors_exit_2_without_traceback(capsys, tmp_path, src_csv, imported):
    damaged = tmp_path / "damaged"
    assert main(["dataset", "import", str(src_csv), "-o", str(damaged), "--shard-size", "10"]) == 0
    shard = damaged / "shard-00001.h5"
    data = bytearray(shard.read_bytes())
    data[len(data) // 2] ^= 0x55
    shard.write_bytes(bytes(data))
    (tmp_path / "notads").mkdir()
    only_broken = write_csv(tmp_path / "broken.csv", [BROKEN])
    capsys.readouterr()
    cases = [
        (["dataset", "import", tmp_path / "missing.csv", "-o", tmp_path / "x"], "no such file"),
        (["dataset", "import", src_csv], "required: -o"),
        (["dataset", "import", src_csv, "-o", imported], "already holds a data set"),
        (["dataset", "import", src_csv, "-o", tmp_path / "y", "--shard-size", "0"], "positive integer"),
        (["dataset", "import", only_broken, "-o", tmp_path / "z"], "no structure could be read"),
        (["dataset", "import", src_csv, "-o", tmp_path / "nodir" / "ds"], "does not exist"),
        (["dataset", "import", imported, "-o", tmp_path / "w"], "already an xrdflow data set"),
        (["dataset", "info", tmp_path / "notads"], "not an xrdflow data set"),
        (["dataset", "info", tmp_path / "nowhere"], "no such data set"),
        (["dataset", "info", damaged], r"shard-00001\.h5.*damaged"),
        (["dataset", "dedup", tmp_path / "missing"], "no such file"),
        (["dataset", "generate", "-o", tmp_path / "g"], "required: --random"),
        (["dataset", "generate", "--random", "-3", "-o", tmp_path / "g"], "expected an integer >= 0"),
        (["dataset", "frobnicate"], "invalid choice"),
    ]
    import re

    for argv, message in cases:
        code, out, err = run(capsys, *argv)
        assert code == 2, (argv, err)
        last = err.strip().splitlines()[-1]
        assert last.startswith("xrdflow: error:") and re.search(message, last), (argv, err)
        assert "Traceback" not in err
    code, out, err = run(capsys, "dataset")
    assert code == 2 and "import" in err and "generate" in err


def test_errors_in_a_subprocess_have_no_traceback(tmp_path):
    done = subprocess.run([sys.executable, "-m", "xrdflow", "dataset", "info", str(tmp_path / "nowhere")],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [f"xrdflow: error: no such data set directory: "
                                                 f"{str(tmp_path / 'nowhere')!r}"]
