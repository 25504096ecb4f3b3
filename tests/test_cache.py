"""The Reflections cache on disk (.npz and HDF5), subset and concatenate.

Round trips must be exact (every field, same dtypes, same rendered pattern);
damaged or hostile files must raise ValueError naming the file and the field,
never unpickle anything and never crash; a failed save must leave the
destination as it was and no temporary file behind.
"""
from __future__ import annotations

import dataclasses
import io
import os
import pickle
import zipfile

import numpy as np
import pytest

import xrdflow as xf
import xrdflow.reflections as refl_mod
from xrdflow import examples
from xrdflow.reflections import FORMAT_VERSION, VERSION_KEY, Reflections

FIELDS = [f.name for f in dataclasses.fields(Reflections)]
SUFFIXES = [".npz", ".h5", ".hdf5"]


def needs_format(suffix: str) -> None:
    if suffix in (".h5", ".hdf5"):
        pytest.importorskip("h5py")


def render(sim: xf.Simulator, cache: Reflections, **kwargs) -> np.ndarray:
    """The patterns of ``sim.render`` (which also returns augmentation parameters, as ``(Y, params)``)."""
    out = sim.render(cache, **kwargs)
    return out[0] if isinstance(out, tuple) else out


def assert_same(a: Reflections, b: Reflections) -> None:
    for name in FIELDS:
        x, y = getattr(a, name), getattr(b, name)
        assert x.dtype == y.dtype, name
        assert x.shape == y.shape, name
        assert np.array_equal(x, y), name


# ------------------------------------------------------------------ fixtures
@pytest.fixture(scope="module")
def sim():
    return xf.Simulator()


@pytest.fixture(scope="module")
def small(sim):
    """NaCl, RuO2, Si (the bundled CIFs) plus a hand-built wurtzite-like cell."""
    structures = [xf.Structure.from_cif(examples.path(n)) for n in ("NaCl", "RuO2", "Si")]
    structures.append(xf.Structure.from_arrays(
        [[3.25, 0, 0], [-1.625, 2.8145, 0], [0, 0, 5.21]],
        [[1 / 3, 2 / 3, 0], [2 / 3, 1 / 3, 0.5], [1 / 3, 2 / 3, 0.382], [2 / 3, 1 / 3, 0.882]],
        ["Zn", "Zn", "O", "O"], b_iso=[0.5, 0.5, 0.7, 0.7]))
    return sim.reflections(structures)


@pytest.fixture(scope="module")
def long_wavelength():
    """90 A radiation: the small cells have no reflection at all, a 100 A cell has a few."""
    sim = xf.Simulator(90.0, two_theta=(5, 170), n_points=16384)
    big = xf.Structure.from_arrays(np.eye(3) * 100.0, [[0, 0, 0]], ["Si"])
    structures = [xf.Structure.from_cif(examples.path("NaCl")), big, xf.Structure.from_cif(examples.path("Si"))]
    return sim, sim.reflections(structures)


@pytest.fixture(scope="module")
def empty(sim):
    return sim.reflections([])


def write_npz(path, arrays: dict) -> None:
    """An .npz with exactly these entries (np.savez pickles object arrays)."""
    with open(path, "wb") as f:
        np.savez(f, **arrays)


def cache_arrays(cache: Reflections) -> dict:
    out = {name: np.array(getattr(cache, name)) for name in FIELDS}
    out[VERSION_KEY] = np.array(FORMAT_VERSION, dtype=np.int64)
    return out


# ------------------------------------------------------------------ round trips
def test_every_field_has_a_schema():
    assert set(refl_mod._SCHEMA) == set(FIELDS)


@pytest.mark.parametrize("suffix", SUFFIXES)
@pytest.mark.parametrize("which", ["small", "empty", "long_wavelength"])
def test_round_trip(tmp_path, suffix, which, request):
    needs_format(suffix)
    cache = request.getfixturevalue(which)
    if which == "long_wavelength":
        sim, cache = cache
        counts = np.diff(cache.offsets)
        assert counts[0] == 0 and counts[1] > 0 and counts[2] == 0
    else:
        sim = request.getfixturevalue("sim")
    path = tmp_path / f"cache{suffix}"
    cache.save(path)
    loaded = Reflections.load(path)
    assert_same(cache, loaded)
    assert len(loaded) == len(cache)
    for name in FIELDS:
        assert not getattr(loaded, name).flags.writeable
    np.testing.assert_array_equal(render(sim, loaded), render(sim, cache))
    assert os.listdir(tmp_path) == [path.name]


@pytest.mark.parametrize("suffix", [".npz", ".h5"])
def test_round_trip_mp20(tmp_path, suffix, sim, mp20_structures):
    needs_format(suffix)
    cache = sim.reflections(mp20_structures[:100])
    path = tmp_path / f"mp20{suffix}"
    cache.save(str(path))  # str paths work as well as Path
    loaded = Reflections.load(str(path))
    assert_same(cache, loaded)
    np.testing.assert_array_equal(render(sim, loaded, threads=1), render(sim, cache, threads=1))


def test_npz_is_a_plain_numpy_archive(tmp_path, small):
    small.save(tmp_path / "c.npz")
    with np.load(tmp_path / "c.npz", allow_pickle=False) as z:
        assert sorted(z.files) == sorted(FIELDS + [VERSION_KEY])
        assert int(z[VERSION_KEY]) == FORMAT_VERSION
        np.testing.assert_array_equal(z["F2"], small.F2)


def test_h5_layout(tmp_path, small):
    h5py = pytest.importorskip("h5py")
    small.save(tmp_path / "c.h5")
    with h5py.File(tmp_path / "c.h5", "r") as f:
        assert int(f.attrs[VERSION_KEY]) == FORMAT_VERSION
        assert sorted(f.keys()) == sorted(FIELDS)
        assert f["d"].compression == "gzip"


def test_save_overwrites(tmp_path, small, empty):
    path = tmp_path / "c.npz"
    small.save(path)
    empty.save(path)
    assert len(Reflections.load(path)) == 0
    assert os.listdir(tmp_path) == ["c.npz"]


def test_save_refuses_an_invalid_cache(tmp_path, small):
    bad = dataclasses.replace(small, hkl=small.hkl.astype(np.int64))
    with pytest.raises(ValueError, match="'hkl'.*int64"):
        bad.save(tmp_path / "c.npz")
    assert os.listdir(tmp_path) == []


def test_bad_paths(tmp_path, small):
    with pytest.raises(ValueError, match=r"\.npz, \.h5 or \.hdf5"):
        small.save(tmp_path / "c.pkl")
    with pytest.raises(ValueError, match=r"\.npz, \.h5 or \.hdf5"):
        Reflections.load(tmp_path / "c.txt")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        small.save(tmp_path / "no" / "such" / "dir" / "c.npz")
    with pytest.raises(FileNotFoundError, match="c.npz"):
        Reflections.load(tmp_path / "c.npz")
    with pytest.raises(TypeError, match="path"):
        small.save(123)
    (tmp_path / "dir.npz").mkdir()
    with pytest.raises(ValueError, match="not a regular file"):
        Reflections.load(tmp_path / "dir.npz")


def test_h5py_missing_gives_a_clear_error(tmp_path, small, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "h5py", None)
    with pytest.raises(ImportError, match="pip install h5py"):
        small.save(tmp_path / "c.h5")
    assert os.listdir(tmp_path) == []


# ------------------------------------------------------------------ subset / concatenate
def test_subset_renders_the_chosen_rows(sim, small):
    full = render(sim, small)
    part = small.subset([2, 0])
    assert len(part) == 2
    np.testing.assert_array_equal(render(sim, part), full[[2, 0]])
    for j, i in enumerate([2, 0]):
        rows, new = small.rows(i), part.rows(j)
        for name in ("hkl", "d", "F2", "multiplicity"):
            np.testing.assert_array_equal(getattr(part, name)[new], getattr(small, name)[rows])
        np.testing.assert_array_equal(part.lattices[j], small.lattices[i])
        np.testing.assert_array_equal(part.cell_mass[j], small.cell_mass[i])
        lo, hi = small.laue_offsets[i], small.laue_offsets[i + 1]
        np.testing.assert_array_equal(part.laue_rotations[part.laue_offsets[j]:part.laue_offsets[j + 1]],
                                      small.laue_rotations[lo:hi])
    # repeats, negative indices, numpy integer arrays
    np.testing.assert_array_equal(render(sim, small.subset(np.array([-1, 1, 1], dtype=np.int32))), full[[3, 1, 1]])
    assert_same(small.subset(range(len(small))), small)


def test_subset_edge_cases(sim, small, long_wavelength):
    none = small.subset([])
    assert len(none) == 0 and none.n_reflections == 0 and none.laue_rotations.shape == (0, 3, 3)
    assert render(sim, none).shape == (0, sim.n_points)
    lw_sim, lw = long_wavelength
    np.testing.assert_array_equal(render(lw_sim, lw.subset([2, 1, 0])), render(lw_sim, lw)[[2, 1, 0]])
    with pytest.raises(IndexError, match="out of range"):
        small.subset([0, 4])
    with pytest.raises(IndexError, match="out of range"):
        small.subset([-5])
    with pytest.raises(TypeError, match="flatnonzero"):
        small.subset(np.ones(len(small), dtype=bool))
    with pytest.raises(TypeError, match="integer"):
        small.subset([0.5])
    with pytest.raises(ValueError, match="1-D"):
        small.subset([[0, 1]])


def test_subset_of_a_loaded_cache(tmp_path, sim, small):
    small.save(tmp_path / "c.npz")
    loaded = Reflections.load(tmp_path / "c.npz")
    np.testing.assert_array_equal(render(sim, loaded.subset([3, 1])), render(sim, small)[[3, 1]])


def test_concatenate_halves_is_the_whole(sim, small, mp20_structures):
    assert_same(Reflections.concatenate([small.subset([0, 1]), small.subset([2, 3])]), small)
    structures = mp20_structures[:60]
    whole = sim.reflections(structures)
    joined = Reflections.concatenate([sim.reflections(structures[:25]), sim.reflections(structures[25:])])
    assert_same(joined, whole)
    np.testing.assert_array_equal(render(sim, joined), render(sim, whole))


def test_concatenate_edge_cases(sim, small, empty, long_wavelength):
    assert_same(Reflections.concatenate([empty, small, empty]), small)
    assert_same(Reflections.concatenate([small]), small)
    assert len(Reflections.concatenate([empty, empty])) == 0
    assert_same(Reflections.concatenate([small.subset([1]), small.subset([])]), small.subset([1]))
    with pytest.raises(ValueError, match="d_min"):
        Reflections.concatenate([small, long_wavelength[1]])
    with pytest.raises(ValueError, match="at least one"):
        Reflections.concatenate([])
    with pytest.raises(TypeError, match="sequence"):
        Reflections.concatenate(small)
    with pytest.raises(TypeError, match="item 1"):
        Reflections.concatenate([small, "x"])


# ------------------------------------------------------------------ damaged and hostile files
@pytest.mark.parametrize("suffix", [".npz", ".h5"])
def test_truncated_files(tmp_path, suffix, small):
    needs_format(suffix)
    path = tmp_path / f"c{suffix}"
    small.save(path)
    data = path.read_bytes()
    for cut in sorted({0, 1, 8, 100, len(data) // 3, len(data) // 2, len(data) - 200, len(data) - 1}):
        bad = tmp_path / f"cut{suffix}"
        bad.write_bytes(data[:cut])
        with pytest.raises(ValueError, match="cut"):
            Reflections.load(bad)


@pytest.mark.parametrize("suffix", [".npz", ".h5"])
def test_random_bytes(tmp_path, suffix):
    needs_format(suffix)
    rng = np.random.default_rng(7)
    for size in (10, 1000, 100_000):
        path = tmp_path / f"junk{suffix}"
        path.write_bytes(rng.integers(0, 256, size, dtype=np.uint8).tobytes())
        with pytest.raises(ValueError, match="junk"):
            Reflections.load(path)


def test_npz_corrupted_data_fails_the_crc(tmp_path, small):
    path = tmp_path / "c.npz"
    small.save(path)
    data = bytearray(path.read_bytes())
    rng = np.random.default_rng(3)
    for _ in range(20):
        flipped = data.copy()
        i = int(rng.integers(40, len(data) // 2))
        flipped[i] ^= 0xFF
        bad = tmp_path / "flip.npz"
        bad.write_bytes(bytes(flipped))
        try:
            loaded = Reflections.load(bad)
        except ValueError as exc:
            assert "flip.npz" in str(exc)
        else:  # a flip in zip metadata that changes nothing read (e.g. a timestamp)
            assert_same(loaded, small)


def test_npz_missing_field(tmp_path, small):
    arrays = cache_arrays(small)
    del arrays["F2"]
    write_npz(tmp_path / "c.npz", arrays)
    with pytest.raises(ValueError, match=r"c\.npz.*missing field.*'F2'"):
        Reflections.load(tmp_path / "c.npz")


def test_npz_not_an_xrdflow_file(tmp_path, small):
    arrays = cache_arrays(small)
    del arrays[VERSION_KEY]
    write_npz(tmp_path / "c.npz", arrays)
    with pytest.raises(ValueError, match="not an xrdflow Reflections file"):
        Reflections.load(tmp_path / "c.npz")


def test_npz_unsupported_version(tmp_path, small):
    arrays = cache_arrays(small)
    arrays[VERSION_KEY] = np.array(FORMAT_VERSION + 1, dtype=np.int64)
    write_npz(tmp_path / "c.npz", arrays)
    with pytest.raises(ValueError, match="version 2.*newer"):
        Reflections.load(tmp_path / "c.npz")


def test_npz_extra_entry(tmp_path, small):
    arrays = cache_arrays(small)
    arrays["extra"] = np.zeros(3)
    write_npz(tmp_path / "c.npz", arrays)
    with pytest.raises(ValueError, match="unexpected entries 'extra'"):
        Reflections.load(tmp_path / "c.npz")


@pytest.mark.parametrize("name, value, message", [
    ("hkl", lambda c: c.hkl.astype(np.int64), "'hkl' has dtype int64, expected int32"),
    ("d", lambda c: c.d.astype(np.float32), "'d' has dtype float32, expected float64"),
    ("d", lambda c: c.d.astype(">f8"), "'d' has dtype >f8"),
    ("offsets", lambda c: c.offsets.astype(np.int32), "'offsets' has dtype int32"),
    ("hkl", lambda c: c.hkl[:, :2].copy(), r"'hkl' has shape \(\d+, 2\)"),
    ("d_min", lambda c: np.atleast_1d(c.d_min), r"'d_min' has shape \(1,\)"),
    ("d", lambda c: c.d.astype("U8"), "'d' has dtype <U8"),
    ("offsets", lambda c: np.concatenate([c.offsets[:-1], [c.offsets[-1] + 1]]), "'offsets' ends at"),
    ("offsets", lambda c: np.array([0, 9, 5, 18, 22][:len(c.offsets)], dtype=np.int64), "'offsets' decreases"),
    ("offsets", lambda c: c.offsets + 1, "'offsets' must start at 0"),
    ("offsets", lambda c: np.zeros(0, dtype=np.int64), "'offsets' is empty"),
    ("F2", lambda c: c.F2[:-1].copy(), "'F2' has .* rows but d has"),
    ("lattices", lambda c: c.lattices[:-1].copy(), "'lattices' has .* rows"),
    ("cell_mass", lambda c: c.cell_mass[:-1].copy(), "'cell_mass' has .* rows"),
    ("laue_offsets", lambda c: c.laue_offsets[:-1].copy(), "'laue_offsets' has .* entries"),
    ("laue_offsets", lambda c: c.laue_offsets - np.arange(len(c.laue_offsets)), "'laue_offsets' ends at"),
    ("laue_rotations", lambda c: c.laue_rotations * 2, "'laue_rotations'.*determinant"),
    ("d_min", lambda c: np.array(-1.0), "'d_min' must be a finite number > 0"),
    ("d_min", lambda c: np.array(np.nan), "'d_min' must be a finite number > 0"),
    ("d", lambda c: np.where(np.arange(len(c.d)) == 3, np.nan, c.d), "'d' must hold finite values > 0"),
    ("d", lambda c: -c.d, "'d' must hold finite values > 0"),
    ("F2", lambda c: np.where(np.arange(len(c.F2)) == 0, np.inf, c.F2), "'F2' must hold finite"),
    ("multiplicity", lambda c: c.multiplicity * 0, "'multiplicity' must hold values >= 1"),
    ("lattices", lambda c: c.lattices * 0, "'lattices' holds a singular"),
    ("cell_mass", lambda c: -c.cell_mass, "'cell_mass' must hold finite values >= 0"),
])
@pytest.mark.parametrize("suffix", [".npz", ".h5"])
def test_invalid_fields(tmp_path, small, name, value, message, suffix):
    arrays = cache_arrays(small)
    arrays[name] = value(small)
    path = tmp_path / f"bad{suffix}"
    if suffix == ".npz":
        write_npz(path, arrays)
    else:
        h5py = pytest.importorskip("h5py")
        if arrays[name].dtype.kind == "U":
            arrays[name] = arrays[name].astype("S8")
            message = message.replace("<U8", "[|]S8")
        with h5py.File(path, "w") as f:
            f.attrs[VERSION_KEY] = arrays.pop(VERSION_KEY)
            for k, v in arrays.items():
                f[k] = v
    with pytest.raises(ValueError, match=message) as info:
        Reflections.load(path)
    assert str(path) in str(info.value)


_UNPICKLED = []


def _sprung(*args):
    _UNPICKLED.append(args)
    return 0.0


class Trap:
    """Unpickling one of these calls _sprung (a hostile file could call anything)."""

    def __reduce__(self):
        return (_sprung, ("unpickled",))


def test_pickled_object_array_is_refused(tmp_path, small):
    arrays = cache_arrays(small)
    arrays["d"] = np.array([Trap()] * len(small.d), dtype=object)
    write_npz(tmp_path / "evil.npz", arrays)
    with pytest.raises(ValueError, match=r"evil\.npz.*'d'.*Python objects"):
        Reflections.load(tmp_path / "evil.npz")
    assert _UNPICKLED == []
    # the trap is live: unpickling the entry does spring it
    with np.load(tmp_path / "evil.npz", allow_pickle=True) as z:
        z["d"]
    assert _UNPICKLED
    _UNPICKLED.clear()


def test_pickled_version_entry_is_refused(tmp_path, small):
    arrays = cache_arrays(small)
    arrays[VERSION_KEY] = np.array([Trap()], dtype=object)
    write_npz(tmp_path / "evil.npz", arrays)
    with pytest.raises(ValueError, match=r"evil\.npz"):
        Reflections.load(tmp_path / "evil.npz")
    assert _UNPICKLED == []


def test_pickle_file_renamed_to_npz(tmp_path, small):
    (tmp_path / "p.npz").write_bytes(pickle.dumps(Trap()))
    with pytest.raises(ValueError, match=r"p\.npz"):
        Reflections.load(tmp_path / "p.npz")
    assert _UNPICKLED == []


def test_npz_size_bomb_is_refused(tmp_path, small):
    """A header that claims 8 TB must be refused before anything is allocated."""
    arrays = cache_arrays(small)
    path = tmp_path / "bomb.npz"
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for k, v in arrays.items():
            buf = io.BytesIO()
            np.lib.format.write_array(buf, v, allow_pickle=False)
            data = buf.getvalue()
            if k == "d":
                header = {"descr": "<f8", "fortran_order": False, "shape": (10 ** 12,)}
                buf = io.BytesIO()
                np.lib.format.write_array_header_1_0(buf, header)
                data = buf.getvalue() + b"\0" * 64
            zf.writestr(k + ".npy", data)
    with pytest.raises(ValueError, match=r"bomb\.npz.*'d'"):
        Reflections.load(path)


def test_h5_hostile_layouts(tmp_path, small):
    h5py = pytest.importorskip("h5py")
    arrays = cache_arrays(small)
    version = arrays.pop(VERSION_KEY)

    def write(path, edit):
        with h5py.File(path, "w") as f:
            f.attrs[VERSION_KEY] = version
            for k, v in arrays.items():
                f[k] = v
            edit(f)
        return path

    def no_version(f):
        del f.attrs[VERSION_KEY]

    def missing(f):
        del f["F2"]

    def soft_link(f):
        del f["d"]
        f.create_dataset("other_d", data=arrays["d"])
        f["d"] = h5py.SoftLink("/other_d")

    def external_link(f):
        del f["d"]
        f["d"] = h5py.ExternalLink(str(tmp_path / "elsewhere.h5"), "/d")

    def external_storage(f):
        del f["d"]
        raw = tmp_path / "raw.bin"
        raw.write_bytes(arrays["d"].tobytes())
        f.create_dataset("d", shape=arrays["d"].shape, dtype="<f8", external=[(str(raw), 0, arrays["d"].nbytes)])

    def group(f):
        del f["d"]
        f.create_group("d")

    def vlen_string(f):
        del f["d"]
        f.create_dataset("d", data=np.array(["a", "b"], dtype=object), dtype=h5py.string_dtype())

    def fill_bomb(f):
        del f["d"]
        f.create_dataset("d", shape=(10 ** 11,), dtype="<f8", chunks=(1024,), fillvalue=1.0)

    def null(f):
        del f["d_min"]
        f.create_dataset("d_min", data=h5py.Empty("<f8"))

    def bad_version(f):
        f.attrs[VERSION_KEY] = "1"

    cases = {no_version: "not an xrdflow Reflections file", missing: "missing field.*'F2'",
             soft_link: "'d' is a SoftLink|unexpected members 'other_d'", external_link: "'d' is a ExternalLink",
             external_storage: "'d' refers to data outside", group: "'d' is a Group",
             vlen_string: "'d' (holds Python objects|has dtype object)", fill_bomb: "'d' claims",
             null: "'d_min' is an empty", bad_version: "must be an integer"}
    for edit, message in cases.items():
        path = write(tmp_path / f"{edit.__name__}.h5", edit)
        with pytest.raises(ValueError, match=message) as info:
            Reflections.load(path)
        assert edit.__name__ in str(info.value)


# ------------------------------------------------------------------ atomic writes
@pytest.mark.parametrize("suffix", [".npz", ".h5"])
@pytest.mark.parametrize("error", [RuntimeError, KeyboardInterrupt])
def test_failed_save_leaves_the_old_file(tmp_path, small, empty, monkeypatch, suffix, error):
    needs_format(suffix)
    path = tmp_path / f"c{suffix}"
    empty.save(path)
    before = path.read_bytes()
    writer_name = "_write_h5" if suffix == ".h5" else "_write_npz"
    real_writer = getattr(refl_mod, writer_name)
    written = []

    def failing_writer(tmp, arrays):
        real_writer(tmp, arrays)  # a complete temporary file...
        with open(tmp, "r+b") as f:  # ...half overwritten, then the failure
            f.truncate(os.path.getsize(tmp) // 2)
        written.append(tmp)
        raise error("disk on fire")

    monkeypatch.setattr(refl_mod, writer_name, failing_writer)
    with pytest.raises(error, match="disk on fire"):
        small.save(path)
    assert written and written[0].parent == tmp_path  # the temporary file was beside the target
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == [path.name]
    monkeypatch.undo()
    assert len(Reflections.load(path)) == 0


def test_failed_save_of_a_new_file_leaves_nothing(tmp_path, small, monkeypatch):
    def failing_writer(tmp, arrays):
        with open(tmp, "wb") as f:
            f.write(b"PK\x03\x04 partial")
        raise OSError("no space left on device")

    monkeypatch.setattr(refl_mod, "_write_npz", failing_writer)
    with pytest.raises(OSError, match="no space"):
        small.save(tmp_path / "new.npz")
    assert os.listdir(tmp_path) == []


def test_saved_file_mode(tmp_path, small):
    small.save(tmp_path / "c.npz")
    assert os.stat(tmp_path / "c.npz").st_mode & 0o777 == 0o644
    os.chmod(tmp_path / "c.npz", 0o600)
    small.save(tmp_path / "c.npz")
    assert os.stat(tmp_path / "c.npz").st_mode & 0o777 == 0o600
