"""Sharded HDF5 data sets (xrdflow.data.shards): round trip of every field,
atomic and resumable writing, detection of damaged shards."""
from __future__ import annotations

import hashlib
import json
import os
import random
from dataclasses import fields
from pathlib import Path

import numpy as np
import pytest

h5py = pytest.importorskip("h5py")

import xrdflow as xf  # noqa: E402
from xrdflow.symmetry import quiet_spglib  # noqa: E402
from xrdflow.data import bundled_dataset, labels_for  # noqa: E402
from xrdflow.data import shards  # noqa: E402
from xrdflow.data.shards import Batch, Item, ShardedDataset, write_dataset  # noqa: E402

STRUCTURE_FIELDS = ("lattice", "frac", "numbers", "charges", "occupancy", "b_iso")
N = 40          # structures used by most tests
SHARD = 12      # -> 4 shards, the last one short


@pytest.fixture(scope="module")
def items():
    res = bundled_dataset("val", workers=1)
    return list(zip(res.ids, res.structures))[:N]


@pytest.fixture(scope="module")
def sim():
    return xf.Simulator()


@pytest.fixture(scope="module")
def space_groups(items):
    with quiet_spglib():
        return [xf.space_group(s)[0] for _, s in items]


@pytest.fixture(scope="module")
def reference(tmp_path_factory, items, sim):
    """An uninterrupted write with reflections and patterns."""
    out = tmp_path_factory.mktemp("ref") / "ds"
    write_dataset(out, items, shard_size=SHARD, params={"kind": "test"}, simulator=sim, with_reflections=True,
                  with_patterns=True, progress=False)
    return out


def assert_same_structures(a, b):
    assert len(a) == len(b)
    for s, t in zip(a, b):
        for name in STRUCTURE_FIELDS:
            x, y = getattr(s, name), getattr(t, name)
            assert x.dtype == y.dtype and x.shape == y.shape, name
            assert np.array_equal(x, y), name


def assert_same_dataset(path_a, path_b):
    """Same ids, structures, labels, reflections and patterns (the contents, not the bytes)."""
    a, b = ShardedDataset(path_a), ShardedDataset(path_b)
    assert len(a) == len(b) and a.n_shards == b.n_shards
    assert a.ids() == b.ids()
    assert_same_structures(list(a), list(b))
    la, lb = a.labels(), b.labels()
    assert la.keys() == lb.keys()
    for k in la:
        assert np.array_equal(la[k], lb[k]), k
    assert a.contents == b.contents and a.params == b.params
    if a.contents["reflections"]:
        ra, rb = a.reflections(), b.reflections()
        for f in fields(ra):
            assert np.array_equal(getattr(ra, f.name), getattr(rb, f.name)), f.name
    if a.contents["patterns"]:
        (ya, xa), (yb, xb) = a.patterns(), b.patterns()
        assert np.array_equal(ya, yb) and np.array_equal(xa, xb)
    assert [(e["file"], e["start"], e["stop"]) for e in a.shards] == [(e["file"], e["start"], e["stop"])
                                                                       for e in b.shards]


# ------------------------------------------------------------------ round trip
def test_round_trip_of_every_field(reference, items, sim, space_groups):
    ds = ShardedDataset(reference)
    assert len(ds) == N and ds.n_shards == 4 and ds.complete and ds.checksums_verified
    ids = [i for i, _ in items]
    structures = [s for _, s in items]
    assert ds.ids() == ids
    back = list(ds)
    assert_same_structures(back, structures)
    assert [s.label for s in back] == ids
    for s in back:
        assert all(not getattr(s, f).flags.writeable for f in STRUCTURE_FIELDS)

    # shard by shard, items, indexing
    assert_same_structures(ds.structures(1), structures[SHARD:2 * SHARD])
    assert_same_structures(ds.structures(-1), structures[3 * SHARD:])
    assert_same_structures([ds[0], ds[13], ds[-1]], [structures[0], structures[13], structures[-1]])
    assert [i for i, _ in ds.items()] == ids
    with pytest.raises(IndexError):
        ds[N]
    with pytest.raises(IndexError):
        ds.structures(4)

    labels = ds.labels()
    expected = [labels_for(g) for g in space_groups]
    assert labels["space_group"].dtype == np.int32
    assert labels["space_group"].tolist() == space_groups
    for key in ("crystal_system", "extinction_group", "laue_class"):
        assert labels[key].tolist() == [e[key] for e in expected], key

    refl = ds.reflections()
    direct = sim.reflections(structures)
    for f in fields(refl):
        a, b = getattr(refl, f.name), getattr(direct, f.name)
        assert a.dtype == b.dtype and np.array_equal(a, b), f.name

    y, axis = ds.patterns()
    assert y.dtype == np.float32 and y.shape == (N, sim.n_points)
    assert np.array_equal(axis, sim.axis)
    assert np.array_equal(y, sim.patterns(structures))

    info = ds.info()
    json.dumps(info)
    assert info["n_items"] == N and info["checksums"] == "ok" and info["complete"]
    assert sum(info["crystal_systems"].values()) == N
    assert info["contents"]["simulator"]["d_min"] == pytest.approx(sim.d_min)


def test_on_disk_layout(reference):
    names = sorted(p.name for p in reference.iterdir())
    assert names == [".lock", "manifest.json"] + [f"shard-{k:05d}.h5" for k in range(4)]
    m = json.loads((reference / "manifest.json").read_text())
    assert m["format"] == "xrdflow-sharded-dataset" and m["format_version"] == 1
    assert m["complete"] is True and m["n_items"] == N and m["shard_size"] == SHARD
    assert m["params"] == {"kind": "test"}
    assert m["contents"]["reflections"] and m["contents"]["patterns"]
    for k, e in enumerate(m["shards"]):
        path = reference / e["file"]
        assert e["file"] == f"shard-{k:05d}.h5"
        assert (e["start"], e["stop"], e["n_items"]) == (k * SHARD, min((k + 1) * SHARD, N),
                                                         min((k + 1) * SHARD, N) - k * SHARD)
        assert e["bytes"] == path.stat().st_size
        assert e["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    with h5py.File(reference / "shard-00001.h5", "r") as f:
        assert set(f) == {"ids", "structures", "labels", "reflections", "patterns"}
        assert set(f["structures"]) == {"atom_offsets", "lattice", "frac", "numbers", "charges", "occupancy",
                                        "b_iso"}
        assert f["structures/atom_offsets"].dtype == np.int64 and f["structures/numbers"].dtype == np.int32
        assert h5py.check_string_dtype(f["ids"].dtype).encoding == "utf-8"
        assert set(f["reflections"]) == {fl.name for fl in fields(xf.Reflections)}
        assert f["patterns/intensity"].dtype == np.float32
        assert (int(f.attrs["start"]), int(f.attrs["stop"])) == (SHARD, 2 * SHARD)

        def no_objects(name, obj):  # nothing pickled: only numbers and HDF5 strings
            if isinstance(obj, h5py.Dataset):
                assert obj.dtype.kind in "iuf" or h5py.check_string_dtype(obj.dtype) is not None, name
        f.visititems(no_objects)


def test_item_forms_and_streaming_sources_agree(tmp_path, items, space_groups):
    as_tuples = [(i, s, g) for (i, s), g in zip(items, space_groups)]
    write_dataset(tmp_path / "a", as_tuples, shard_size=SHARD, progress=False)
    write_dataset(tmp_path / "b", (Item(i, s) for i, s in items), shard_size=SHARD, progress=False)  # generator

    def make_shard(start, stop):
        return Batch(ids=[items[k][0] for k in range(start, stop)],
                     structures=[items[k][1] for k in range(start, stop)], space_groups=space_groups[start:stop])
    write_dataset(tmp_path / "c", make_shard, n_items=N, shard_size=SHARD, progress=False)
    chunks = (items[i:i + 7] for i in range(0, N, 7))  # a generator of chunks of another size
    write_dataset(tmp_path / "f", chunks, shard_size=SHARD, progress=False)
    for d in "bcf":
        assert_same_dataset(tmp_path / "a", tmp_path / d)
    # bare Structures: ids are their labels
    res = write_dataset(tmp_path / "d", [s for _, s in items[:5]], shard_size=2, progress=False)
    assert (res.n_items, res.n_shards, res.written) == (5, 3, 3)
    assert ShardedDataset(tmp_path / "d").ids() == [i for i, _ in items[:5]]
    # an empty data set
    res = write_dataset(tmp_path / "e", [], progress=False)
    empty = ShardedDataset(tmp_path / "e")
    assert len(empty) == 0 and empty.ids() == [] and len(empty.labels()["space_group"]) == 0


def test_write_checks_its_input(tmp_path, items):
    with pytest.raises(ValueError, match="n_items"):
        write_dataset(tmp_path / "a", lambda a, b: [], progress=False)
    with pytest.raises(ValueError, match="returned 1 items for the range"):
        write_dataset(tmp_path / "b", lambda a, b: items[:1], n_items=4, shard_size=2, progress=False)
    with pytest.raises(TypeError, match="xrdflow.Structure"):
        write_dataset(tmp_path / "c", [("x", "not a structure")], progress=False)
    with pytest.raises(ValueError, match="shard_size"):
        write_dataset(tmp_path / "d", items, shard_size=0, progress=False)
    with pytest.raises(ValueError, match="simulator"):
        write_dataset(tmp_path / "e", items, with_reflections=True, progress=False)


# ------------------------------------------------------------------ interruption and resume
class Interrupt(KeyboardInterrupt):
    pass


def _interrupt_after(monkeypatch, target: str, k: int):
    """Make shards.<target> raise KeyboardInterrupt on its (k+1)-th call."""
    original = getattr(shards, target)
    calls = {"n": 0}

    def wrapper(*args, **kwargs):
        if calls["n"] == k:
            raise Interrupt(f"{target} #{k}")
        calls["n"] += 1
        return original(*args, **kwargs)
    monkeypatch.setattr(shards, target, wrapper)


def _partial_shard_file(monkeypatch):
    """A kill in the middle of writing a shard: half a file, then the interrupt."""
    original = shards._write_shard_file

    def wrapper(tmp, *args, **kwargs):
        original(tmp, *args, **kwargs)
        data = Path(tmp).read_bytes()
        Path(tmp).write_bytes(data[: len(data) // 2])
        raise Interrupt("during the shard")
    monkeypatch.setattr(shards, "_write_shard_file", wrapper)


@pytest.mark.parametrize("seed", range(4))
def test_interrupted_write_resumes_to_the_same_data_set(tmp_path, monkeypatch, items, sim, reference, seed):
    rng = random.Random(seed)
    out = tmp_path / "ds"
    kwargs = dict(shard_size=SHARD, params={"kind": "test"}, simulator=sim, with_reflections=True,
                  with_patterns=True, progress=False)
    produced = []

    def make_shard(start, stop):
        produced.append((start, stop))
        return items[start:stop]

    # Interrupt several times, at random shards and at random stages.
    resume, interrupted = False, []
    for _ in range(3):
        stage = rng.choice(["producer", "shard file", "manifest", "os.replace"])
        k = rng.randrange(3)
        with monkeypatch.context() as m:
            source = make_shard
            if stage == "producer":
                calls = {"n": 0}

                def failing(start, stop, _k=k, _calls=calls):
                    if _calls["n"] == _k:
                        raise Interrupt("producer")
                    _calls["n"] += 1
                    return make_shard(start, stop)
                source = failing
            elif stage == "shard file":
                _partial_shard_file(m)
            elif stage == "manifest":  # shard k renamed into place, the manifest not yet updated
                _interrupt_after(m, "_write_json_atomic", k + 1)
            else:
                real_replace = os.replace
                count = {"n": 0}

                def replace(src, dst, _k=k, _count=count):
                    if _count["n"] == _k:
                        raise Interrupt("os.replace")
                    _count["n"] += 1
                    return real_replace(src, dst)
                m.setattr(shards.os, "replace", replace)
            try:
                write_dataset(out, source, n_items=N, resume=resume, **kwargs)
            except Interrupt:
                interrupted.append(stage)
        resume = True
        # Whatever happened, the directory is a valid (possibly incomplete) data set, or
        # nothing at all when the interruption came before the first shard of a fresh run.
        if (out / "manifest.json").exists():
            partial = ShardedDataset(out, allow_incomplete=True)
            for e in partial.shards:
                assert e["stop"] - e["start"] == e["n_items"]
        else:
            assert not out.exists()
    assert interrupted
    before = list(produced)
    res = write_dataset(out, make_shard, n_items=N, resume=True, **kwargs)
    assert res.n_items == N and res.n_shards == 4 and res.written + res.reused == 4
    # Only the missing shards were produced by the final run.
    assert len(produced) - len(before) == res.written
    assert not [p.name for p in out.iterdir() if ".tmp-" in p.name]
    assert_same_dataset(out, reference)


def test_resume_cleans_temporaries_and_keeps_complete_shards(tmp_path, items, reference):
    out = tmp_path / "ds"
    with pytest.raises(Interrupt):
        write_dataset(out, _raising_after(items, 2), n_items=N, shard_size=SHARD, progress=False)
    m = json.loads((out / "manifest.json").read_text())
    assert m["complete"] is False and [e["file"] for e in m["shards"]] == ["shard-00000.h5", "shard-00001.h5"]
    with pytest.raises(ValueError, match="incomplete.*--resume"):
        ShardedDataset(out)
    assert len(ShardedDataset(out, allow_incomplete=True)) == 2 * SHARD
    # debris of a killed process
    (out / "shard-00002.h5.tmp-99999").write_bytes(b"half a shard")
    (out / "manifest.json.tmp-99999").write_text("{")
    (out / "shard-00003.h5").write_bytes(b"written but never listed")
    sha_before = [e["sha256"] for e in m["shards"]]
    calls = []

    def make_shard(start, stop):
        calls.append(start)
        return items[start:stop]
    res = write_dataset(out, make_shard, n_items=N, shard_size=SHARD, resume=True, progress=False)
    assert calls == [2 * SHARD, 3 * SHARD] and (res.written, res.reused) == (2, 2)
    assert sorted(p.name for p in out.iterdir()) == [".lock", "manifest.json"] + [f"shard-{k:05d}.h5"
                                                                                  for k in range(4)]
    m = json.loads((out / "manifest.json").read_text())
    assert [e["sha256"] for e in m["shards"][:2]] == sha_before
    ds = ShardedDataset(out)
    assert ds.ids() == [i for i, _ in items]
    assert_same_structures(list(ds), [s for _, s in items])
    # resuming a complete data set does nothing
    res = write_dataset(out, make_shard, n_items=N, shard_size=SHARD, resume=True, progress=False)
    assert (res.written, res.reused) == (0, 4) and len(calls) == 2


def _raising_after(items, k):
    def make_shard(start, stop):
        if start // SHARD == k:
            raise Interrupt("stop")
        return items[start:stop]
    return make_shard


def test_resume_rewrites_a_damaged_shard(tmp_path, items):
    out = tmp_path / "ds"
    write_dataset(out, items, shard_size=SHARD, progress=False)
    ref = ShardedDataset(out).ids()
    _flip_byte(out / "shard-00001.h5")
    with pytest.warns(RuntimeWarning, match="shard-00001.h5.*damaged"):
        res = write_dataset(out, items, shard_size=SHARD, resume=True, progress=False)
    assert (res.written, res.reused, res.rewritten) == (1, 3, 1)
    assert ShardedDataset(out).ids() == ref


def test_resume_must_describe_the_same_data_set(tmp_path, items, sim):
    out = tmp_path / "ds"
    write_dataset(out, items[:10], shard_size=4, params={"seed": 1}, progress=False)
    with pytest.raises(ValueError, match="already holds a data set"):
        write_dataset(out, items[:10], shard_size=4, params={"seed": 1}, progress=False)
    with pytest.raises(ValueError, match="seed: 1 there, 2 now"):
        write_dataset(out, items[:10], shard_size=4, params={"seed": 2}, resume=True, progress=False)
    with pytest.raises(ValueError, match="shard size 4"):
        write_dataset(out, items[:10], shard_size=5, params={"seed": 1}, resume=True, progress=False)
    with pytest.raises(ValueError, match="different contents"):
        write_dataset(out, items[:10], shard_size=4, params={"seed": 1}, resume=True, simulator=sim,
                      with_reflections=True, progress=False)
    with pytest.raises(ValueError, match="holds 10 items"):
        write_dataset(out, items[:12], shard_size=4, params={"seed": 1}, resume=True, progress=False)
    # resuming into an empty directory simply writes
    res = write_dataset(tmp_path / "new", items[:3], shard_size=4, resume=True, progress=False)
    assert res.written == 1


def test_a_second_writer_is_refused(tmp_path, items):
    fcntl = pytest.importorskip("fcntl")
    out = tmp_path / "ds"
    out.mkdir()
    fd = os.open(out / ".lock", os.O_RDWR | os.O_CREAT)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        with pytest.raises(ValueError, match="another process"):
            write_dataset(out, items[:3], progress=False)
    finally:
        os.close(fd)
    write_dataset(out, items[:3], progress=False)


# ------------------------------------------------------------------ damage
def _flip_byte(path: Path, where: float = 0.5) -> None:
    data = bytearray(path.read_bytes())
    i = int(len(data) * where)
    data[i] ^= 0xFF
    path.write_bytes(bytes(data))


@pytest.fixture()
def small(tmp_path, items):
    out = tmp_path / "ds"
    write_dataset(out, items[:12], shard_size=4, progress=False)
    return out


def test_flipped_byte_is_detected_on_open(small):
    _flip_byte(small / "shard-00001.h5")
    with pytest.raises(ValueError, match=r"shard-00001\.h5.*damaged.*sha256"):
        ShardedDataset(small)
    # lazily: opening works, reading the damaged shard fails, the others read
    lazy = ShardedDataset(small, verify="lazy")
    assert len(lazy.structures(0)) == 4
    with pytest.raises(ValueError, match=r"shard-00001\.h5"):
        lazy.structures(1)


def test_truncated_and_missing_shards_are_named(small):
    path = small / "shard-00002.h5"
    path.write_bytes(path.read_bytes()[:1000])
    with pytest.raises(ValueError, match=r"shard-00002\.h5.*1000 bytes.*truncated"):
        ShardedDataset(small, verify=False)
    (small / "shard-00001.h5").unlink()
    with pytest.raises(ValueError, match=r"2 shards.*shard-00001\.h5.*missing.*shard-00002\.h5"):
        ShardedDataset(small)


def test_manifest_problems_are_reported(small, tmp_path):
    manifest = small / "manifest.json"
    m = json.loads(manifest.read_text())
    bad = dict(m, shards=m["shards"][:2])
    manifest.write_text(json.dumps(bad))
    with pytest.raises(ValueError, match=r"complete with 12 items but does not list shard-00002\.h5"):
        ShardedDataset(small)
    evil = json.loads(json.dumps(m))
    evil["shards"][0]["file"] = "../shard-00000.h5"
    manifest.write_text(json.dumps(evil))
    with pytest.raises(ValueError, match="must be a name like"):
        ShardedDataset(small)
    manifest.write_text(json.dumps(m)[:-20])
    with pytest.raises(ValueError, match="manifest.json.*not valid JSON"):
        ShardedDataset(small)
    manifest.write_text(json.dumps(dict(m, format_version=99)))
    with pytest.raises(ValueError, match="version 99"):
        ShardedDataset(small)
    manifest.unlink()
    with pytest.raises(FileNotFoundError, match="not an xrdflow data set"):
        ShardedDataset(small)
    with pytest.raises(FileNotFoundError, match="no such data set"):
        ShardedDataset(tmp_path / "nowhere")


def _rehash(directory: Path, name: str) -> None:
    """Update the manifest after editing a shard, so that only the content checks can object."""
    m = json.loads((directory / "manifest.json").read_text())
    for e in m["shards"]:
        if e["file"] == name:
            data = (directory / name).read_bytes()
            e["sha256"], e["bytes"] = hashlib.sha256(data).hexdigest(), len(data)
    (directory / "manifest.json").write_text(json.dumps(m))


@pytest.mark.parametrize("edit, message", [
    (lambda f: _replace(f, "structures/numbers", f["structures/numbers"][()].astype(np.int64)),
     "'numbers' has dtype int64, expected int32"),
    (lambda f: _replace(f, "structures/frac", f["structures/frac"][()][:-1]), "ends at .* atoms"),
    (lambda f: _replace(f, "structures/atom_offsets", f["structures/atom_offsets"][()][::-1].copy()),
     "atom_offsets"),
    (lambda f: _replace(f, "labels/space_group", np.full(4, 999, dtype=np.int32)), "outside 1..230"),
    (lambda f: _replace(f, "ids", np.arange(4)), "variable-length UTF-8"),
    (lambda f: f.create_dataset("structures/extra", data=np.zeros(3)), "unexpected member"),
    (lambda f: f.attrs.__setitem__("start", 7), "attribute 'start'"),
])
def test_content_checks_on_read(small, edit, message):
    with h5py.File(small / "shard-00001.h5", "a") as f:
        edit(f)
    _rehash(small, "shard-00001.h5")
    ds = ShardedDataset(small)  # checksums match the edited file
    ds.structures(0)
    with pytest.raises(ValueError, match=r"shard-00001\.h5.*" + message):
        ds.structures(1)
        ds.labels()


def _replace(f, name, data):
    del f[name]
    f.create_dataset(name, data=data)


def test_damaged_reflections_are_refused(tmp_path, items, sim):
    out = tmp_path / "ds"
    write_dataset(out, items[:6], shard_size=3, simulator=sim, with_reflections=True, progress=False)
    with h5py.File(out / "shard-00000.h5", "a") as f:
        _replace(f, "reflections/d", -f["reflections/d"][()])
    _rehash(out, "shard-00000.h5")
    with pytest.raises(ValueError, match=r"shard-00000\.h5' reflections.*'d' must hold finite values > 0"):
        ShardedDataset(out).reflections()
