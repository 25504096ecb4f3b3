"""Cached reflections: the expensive, once-per-structure result of
:meth:`xrdflow.Simulator.reflections`, as flat CSR arrays.

Rendering (instrument, sample and augmentation) re-uses this cache instead of
recomputing structure factors.
"""
from __future__ import annotations

import math
import os
import zipfile
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Sequence

import numpy as np

from ._fileio import atomic_output, fsync_directory  # fsync_directory: re-exported (xrdflow.data.shards)


@dataclass(frozen=True)
class Reflections:
    """Symmetry-unique reflections of many structures.

    The rows of structure ``i`` are ``offsets[i]:offsets[i+1]``, sorted by
    decreasing d.  ``F2`` is the Friedel-averaged |F|^2 (no LP, no
    multiplicity).  ``lattices`` and each structure's Laue group are kept so
    that later stages can recompute d from hkl under a strained metric and
    average orientation effects over symmetry-equivalent reflections;
    ``cell_mass`` (daltons) and the cell volume give weight fractions of
    mixtures.  ``d_min`` (angstrom) is the resolution the cache was computed to.
    """

    offsets: np.ndarray         # (B + 1,) int64
    hkl: np.ndarray             # (R, 3) int32
    d: np.ndarray               # (R,) float64, angstrom
    F2: np.ndarray              # (R,) float64
    multiplicity: np.ndarray    # (R,) int32
    lattices: np.ndarray        # (B, 3, 3) float64, angstrom, rows a, b, c
    laue_offsets: np.ndarray    # (B + 1,) int64
    laue_rotations: np.ndarray  # (L, 3, 3) int32, on fractional coordinates
    cell_mass: np.ndarray       # (B,) float64, daltons
    d_min: np.ndarray           # () float64, angstrom

    def __len__(self) -> int:
        return len(self.offsets) - 1

    @property
    def n_reflections(self) -> int:
        return len(self.d)

    @property
    def volumes(self) -> np.ndarray:
        """Cell volumes in angstrom^3."""
        return np.abs(np.linalg.det(self.lattices))

    @property
    def nbytes(self) -> int:
        return sum(getattr(self, f.name).nbytes for f in fields(self))

    def rows(self, i: int) -> slice:
        """Slice of the flat reflection arrays that belongs to structure ``i``."""
        if not 0 <= i < len(self):
            raise IndexError(f"structure index {i} out of range for {len(self)} structures")
        return slice(int(self.offsets[i]), int(self.offsets[i + 1]))

    # ------------------------------------------------------------ selection
    def subset(self, indices) -> "Reflections":
        """A new cache holding only the structures ``indices``, in that order.

        ``indices`` is a 1-D sequence of integers (negative values count from
        the end, repeats are allowed).  Vectorized: the rows to keep are built
        with ``np.repeat``/``cumsum``, with no Python loop over structures.
        """
        idx = _index_array(indices, len(self))
        offsets, rows = _gather_ranges(self.offsets, idx)
        laue_offsets, laue_rows = _gather_ranges(self.laue_offsets, idx)
        return Reflections(offsets=offsets, hkl=self.hkl[rows], d=self.d[rows], F2=self.F2[rows],
                           multiplicity=self.multiplicity[rows], lattices=self.lattices[idx],
                           laue_offsets=laue_offsets, laue_rotations=self.laue_rotations[laue_rows],
                           cell_mass=self.cell_mass[idx], d_min=np.array(self.d_min, dtype=np.float64))

    @staticmethod
    def concatenate(parts: "Sequence[Reflections]") -> "Reflections":
        """Join caches computed separately (same ``d_min``) into one, in order."""
        if isinstance(parts, Reflections):
            raise TypeError("concatenate() takes a sequence of Reflections, e.g. Reflections.concatenate([a, b])")
        parts = list(parts)
        if not parts:
            raise ValueError("concatenate() needs at least one Reflections (an empty list has no d_min)")
        for i, p in enumerate(parts):
            if not isinstance(p, Reflections):
                raise TypeError(f"concatenate(): item {i} is a {type(p).__name__}, expected Reflections")
        d_min = float(parts[0].d_min)
        for i, p in enumerate(parts[1:], 1):
            if float(p.d_min) != d_min:
                raise ValueError(f"concatenate(): item {i} was computed to d_min = {float(p.d_min)!r} A but item 0 "
                                 f"to d_min = {d_min!r} A; caches of different resolution cannot be joined "
                                 "(compute them with the same Simulator)")

        def shifted(name: str, length: str) -> np.ndarray:
            starts = np.cumsum([0] + [len(getattr(p, length)) for p in parts[:-1]])
            pieces = [np.asarray(getattr(parts[0], name))[:1]]
            pieces += [np.asarray(getattr(p, name))[1:] + s for p, s in zip(parts, starts)]
            return np.concatenate(pieces).astype(np.int64, copy=False)

        def joined(name: str) -> np.ndarray:
            return np.concatenate([getattr(p, name) for p in parts])

        return Reflections(offsets=shifted("offsets", "d"), hkl=joined("hkl"), d=joined("d"), F2=joined("F2"),
                           multiplicity=joined("multiplicity"), lattices=joined("lattices"),
                           laue_offsets=shifted("laue_offsets", "laue_rotations"),
                           laue_rotations=joined("laue_rotations"), cell_mass=joined("cell_mass"),
                           d_min=np.array(d_min, dtype=np.float64))

    # ------------------------------------------------------------ files
    def save(self, path: "str | os.PathLike") -> None:
        """Write the cache to ``path``; the format follows the suffix.

        ``.npz``: NumPy zip archive, deflate-compressed, one ``<field>.npy``
        entry per dataclass field plus ``xrdflow_reflections_version.npy``.
        ``.h5`` / ``.hdf5``: HDF5 via h5py (optional dependency), one dataset
        per field (gzip level 4 + shuffle), the root attribute
        ``xrdflow_reflections_version``.  No pickled objects in either.

        The file is written atomically: to a temporary file in the same
        directory, flushed and fsync'ed, then renamed over ``path``
        (``os.replace``).  On any error or Ctrl-C the temporary file is
        removed and an existing ``path`` is left untouched.  The cache is
        checked first, so ``save`` never writes a file :meth:`load` refuses.
        """
        path = _as_path(path)
        fmt = _format_of(path)
        arrays = {f.name: getattr(self, f.name) for f in fields(self)}
        _check_arrays(arrays, f"Reflections.save({str(path)!r})")
        arrays = {name: _c_order(a) for name, a in arrays.items()}
        if fmt == "h5":
            _h5py()  # fail before creating any file
        writer = _write_h5 if fmt == "h5" else _write_npz
        _atomic_write(path, lambda tmp: writer(tmp, arrays))

    @classmethod
    def load(cls, path: "str | os.PathLike") -> "Reflections":
        """Read a cache written by :meth:`save` (``.npz``, ``.h5`` or ``.hdf5``).

        Everything in the file is validated before it is used: the format
        marker and version, every field present with exactly the dtype and
        number of dimensions that :meth:`save` writes (nothing else in the
        file), declared sizes against stored sizes (no decompression bombs),
        and the CSR invariants.  Object arrays are refused without being
        unpickled; HDF5 external links, external storage and virtual datasets
        are refused.  Any problem raises ``ValueError`` naming the file and
        the field.  The returned arrays are read-only.
        """
        path = _as_path(path)
        fmt = _format_of(path)
        if not path.exists():
            raise FileNotFoundError(f"no such Reflections file: {str(path)!r}")
        if not path.is_file():
            raise ValueError(f"{str(path)!r} is not a regular file")
        reader = _read_h5 if fmt == "h5" else _read_npz
        try:
            arrays = reader(path)
        except (_InvalidFile, MemoryError, PermissionError):
            raise
        except Exception as exc:  # h5py / zipfile / zlib / OSError on damaged files
            raise ValueError(f"{str(path)!r}: cannot read it as a Reflections {fmt} file "
                             f"(truncated or corrupted?): {type(exc).__name__}: {exc}") from exc
        _check_arrays(arrays, repr(str(path)))
        for name, a in arrays.items():
            if name in _SCHEMA:
                # The canonical dtype object: h5py hands back equal but distinct dtype
                # instances, which the core's identity check on dtypes rejects.
                a = arrays[name] = a.view(_SCHEMA[name][0])
            a.flags.writeable = False
        return cls(**arrays)


# ---------------------------------------------------------------- file format
#: Version of the on-disk layout, stored as ``xrdflow_reflections_version``.
FORMAT_VERSION = 1
VERSION_KEY = "xrdflow_reflections_version"
_SUFFIXES = {".npz": "npz", ".h5": "h5", ".hdf5": "h5"}
# A deflate stream expands at most ~1032x; anything claiming more is a bomb.
_MAX_EXPANSION = 1100
_SLACK_BYTES = 1 << 16

# Exact dtype and shape of each field (None: any length).  A field added to the
# dataclass without an entry here is still saved and loaded (any numeric dtype,
# no shape checks); tests/test_cache.py asserts that every field has one.
_SCHEMA: dict[str, tuple[np.dtype, tuple]] = {
    "offsets": (np.dtype(np.int64), (None,)),
    "hkl": (np.dtype(np.int32), (None, 3)),
    "d": (np.dtype(np.float64), (None,)),
    "F2": (np.dtype(np.float64), (None,)),
    "multiplicity": (np.dtype(np.int32), (None,)),
    "lattices": (np.dtype(np.float64), (None, 3, 3)),
    "laue_offsets": (np.dtype(np.int64), (None,)),
    "laue_rotations": (np.dtype(np.int32), (None, 3, 3)),
    "cell_mass": (np.dtype(np.float64), (None,)),
    "d_min": (np.dtype(np.float64), ()),
}


def _field_names() -> list[str]:
    return [f.name for f in fields(Reflections)]


def _as_path(path) -> Path:
    if isinstance(path, bytes) or not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"path must be a str or os.PathLike, got {type(path).__name__}")
    return Path(path)


def _format_of(path: Path) -> str:
    fmt = _SUFFIXES.get(path.suffix.lower())
    if fmt is None:
        raise ValueError(f"{str(path)!r}: unknown Reflections file type {path.suffix!r}; "
                         "use a name ending in .npz, .h5 or .hdf5")
    return fmt


def _h5py():
    try:
        import h5py
    except ImportError as exc:
        raise ImportError("reading or writing .h5/.hdf5 Reflections files needs h5py: pip install h5py "
                          "(or save to a .npz file, which needs only NumPy)") from exc
    return h5py


def _c_order(a: np.ndarray) -> np.ndarray:
    """C-contiguous, keeping 0-d arrays 0-d (np.ascontiguousarray makes them 1-d)."""
    return a if a.flags.c_contiguous else a.copy(order="C")


def _index_array(indices, n: int) -> np.ndarray:
    idx = np.asarray(indices)
    if idx.ndim != 1:
        raise ValueError(f"subset() takes a 1-D sequence of structure indices, got an array of shape {idx.shape}")
    if idx.dtype == bool:
        raise TypeError("subset() takes integer indices, not a boolean mask; use np.flatnonzero(mask)")
    if idx.size == 0:
        return np.zeros(0, dtype=np.int64)
    if idx.dtype.kind not in "iu":
        raise TypeError(f"subset() takes integer indices, got dtype {idx.dtype}")
    idx = idx.astype(np.int64)
    bad = (idx < -n) | (idx >= n)
    if bad.any():
        raise IndexError(f"structure index {int(idx[np.argmax(bad)])} out of range for {n} structures")
    return np.where(idx < 0, idx + n, idx)


def _gather_ranges(offsets: np.ndarray, idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """New CSR offsets and the flat row numbers of ranges ``idx`` of ``offsets``."""
    starts = offsets[idx].astype(np.int64)
    counts = offsets[idx + 1].astype(np.int64) - starts
    new_offsets = np.zeros(len(idx) + 1, dtype=np.int64)
    np.cumsum(counts, out=new_offsets[1:])
    rows = np.arange(int(new_offsets[-1]), dtype=np.int64) + np.repeat(starts - new_offsets[:-1], counts)
    return new_offsets, rows


# ---------------------------------------------------------------- validation
class _InvalidFile(ValueError):
    """A ValueError raised by the checks here; the message already names the file."""


def _bad(source: str, message: str) -> ValueError:
    return _InvalidFile(f"{source}: {message}")


def _check_header(source: str, name: str, dtype: np.dtype, shape: tuple) -> None:
    """Dtype and dimensions of one stored field, before its data is read."""
    if dtype.hasobject:
        raise _bad(source, f"field {name!r} holds Python objects (dtype {dtype}); refusing to unpickle it")
    if any(s < 0 for s in shape):
        raise _bad(source, f"field {name!r} has a negative dimension in shape {tuple(shape)}")
    expected = _SCHEMA.get(name)
    if expected is None:
        if dtype.kind not in "biufc" or dtype.fields is not None or dtype.subdtype is not None:
            raise _bad(source, f"field {name!r} has non-numeric dtype {dtype}")
        return
    want_dtype, want_shape = expected
    if dtype != want_dtype:
        raise _bad(source, f"field {name!r} has dtype {dtype}, expected {want_dtype}")
    if len(shape) != len(want_shape) or any(w is not None and s != w for s, w in zip(shape, want_shape)):
        dims = ["n" if w is None else str(w) for w in want_shape]
        pretty = "(" + ", ".join(dims) + ("," if len(dims) == 1 else "") + ")"
        raise _bad(source, f"field {name!r} has shape {tuple(shape)}, expected {pretty}")


def _check_offsets(source: str, name: str, offsets: np.ndarray, total: int, what: str) -> None:
    if len(offsets) == 0:
        raise _bad(source, f"field {name!r} is empty; it must hold at least one value (0)")
    if offsets[0] != 0:
        raise _bad(source, f"field {name!r} must start at 0, starts at {int(offsets[0])}")
    if len(offsets) > 1 and np.any(np.diff(offsets) < 0):
        i = int(np.argmax(np.diff(offsets) < 0))
        raise _bad(source, f"field {name!r} decreases at structure {i} ({int(offsets[i])} -> {int(offsets[i + 1])})")
    if offsets[-1] != total:
        raise _bad(source, f"field {name!r} ends at {int(offsets[-1])} but there are {total} {what}")


def _check_arrays(arrays: dict, source: str) -> None:
    """Every field present, exact dtypes and shapes, CSR invariants, finite values."""
    names = _field_names()
    missing = [n for n in names if n not in arrays]
    if missing:
        raise _bad(source, f"missing field(s) {', '.join(map(repr, missing))}")
    for name in names:
        a = arrays[name]
        if not isinstance(a, np.ndarray):
            raise TypeError(f"{source}: field {name!r} must be a numpy array, got {type(a).__name__}")
        _check_header(source, name, a.dtype, a.shape)

    offsets, d, n_refl = arrays["offsets"], arrays["d"], len(arrays["d"])
    _check_offsets(source, "offsets", offsets, n_refl, "reflections (len(d))")
    n = len(offsets) - 1
    for name in ("hkl", "F2", "multiplicity"):
        if len(arrays[name]) != n_refl:
            raise _bad(source, f"field {name!r} has {len(arrays[name])} rows but d has {n_refl}")
    for name in ("lattices", "cell_mass"):
        if len(arrays[name]) != n:
            raise _bad(source, f"field {name!r} has {len(arrays[name])} rows but offsets describe {n} structures")
    laue_offsets, rotations = arrays["laue_offsets"], arrays["laue_rotations"]
    if len(laue_offsets) != n + 1:
        raise _bad(source, f"field 'laue_offsets' has {len(laue_offsets)} entries, expected {n + 1} "
                           f"(one more than the {n} structures)")
    _check_offsets(source, "laue_offsets", laue_offsets, len(rotations), "rotations (len(laue_rotations))")

    d_min = arrays["d_min"]
    if not (np.isfinite(d_min) and d_min > 0):
        raise _bad(source, f"field 'd_min' must be a finite number > 0 (angstrom), got {d_min!r}")
    if not np.all(np.isfinite(d) & (d > 0)):
        raise _bad(source, "field 'd' must hold finite values > 0 (angstrom)")
    if not np.all(np.isfinite(arrays["F2"]) & (arrays["F2"] >= 0)):
        raise _bad(source, "field 'F2' must hold finite values >= 0")
    if not np.all(arrays["multiplicity"] >= 1):
        raise _bad(source, "field 'multiplicity' must hold values >= 1")
    lattices = arrays["lattices"]
    if not np.all(np.isfinite(lattices)):
        raise _bad(source, "field 'lattices' must hold finite values")
    if n and not np.all(np.abs(np.linalg.det(lattices)) > 0):
        raise _bad(source, "field 'lattices' holds a singular (zero-volume) cell")
    if len(rotations) and not np.all(np.abs(np.rint(np.linalg.det(rotations.astype(np.float64)))) == 1):
        raise _bad(source, "field 'laue_rotations' holds a matrix whose determinant is not +-1")
    if not np.all(np.isfinite(arrays["cell_mass"]) & (arrays["cell_mass"] >= 0)):
        raise _bad(source, "field 'cell_mass' must hold finite values >= 0 (daltons)")
    for name in names:
        a = arrays[name]
        if name not in _SCHEMA and a.dtype.kind in "fc" and not np.all(np.isfinite(a)):
            raise _bad(source, f"field {name!r} must hold finite values")


def _check_version(source: str, value) -> None:
    v = np.asarray(value)
    if v.shape != () or v.dtype.kind not in "iu":
        raise _bad(source, f"{VERSION_KEY} must be an integer, got {value!r}")
    if int(v) != FORMAT_VERSION:
        newer = " (written by a newer xrdflow?)" if int(v) > FORMAT_VERSION else ""
        raise _bad(source, f"unsupported Reflections format version {int(v)}{newer}; this xrdflow reads "
                           f"version {FORMAT_VERSION}")


def _check_size(source: str, name: str, nbytes: int, stored: int) -> None:
    if nbytes > _MAX_EXPANSION * stored + _SLACK_BYTES:
        raise _bad(source, f"field {name!r} claims {nbytes} bytes from {stored} stored bytes; "
                           "refusing it (corrupted file or decompression bomb)")


# ---------------------------------------------------------------- npz
def _write_npz(tmp: Path, arrays: dict) -> None:
    """A standard .npz (np.load reads it) written with allow_pickle=False."""
    entries = dict(arrays)
    entries[VERSION_KEY] = np.array(FORMAT_VERSION, dtype=np.int64)
    with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED, allowZip64=True) as zf:
        for name, a in entries.items():
            info = zipfile.ZipInfo(name + ".npy", date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            with zf.open(info, "w", force_zip64=True) as member:
                np.lib.format.write_array(member, a, allow_pickle=False)


def _read_npy_member(zf: zipfile.ZipFile, info: zipfile.ZipInfo, name: str, source: str) -> np.ndarray:
    if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
        raise _bad(source, f"entry {info.filename!r} uses an unsupported compression method {info.compress_type}")
    if info.flag_bits & 0x1:
        raise _bad(source, f"entry {info.filename!r} is encrypted")
    _check_size(source, name, info.file_size, info.compress_size)
    with zf.open(info) as member:
        version = np.lib.format.read_magic(member)
        if version == (1, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_1_0(member)
        elif version == (2, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_2_0(member)
        else:
            raise _bad(source, f"entry {info.filename!r} has unsupported .npy format version {version}")
        _check_header(source, name, dtype, shape)
        nbytes = math.prod(shape) * dtype.itemsize
        if nbytes > info.file_size:
            raise _bad(source, f"field {name!r} declares shape {shape} ({nbytes} bytes) but its entry holds "
                               f"only {info.file_size} bytes")
        data = member.read(nbytes)
        if len(data) != nbytes:
            raise _bad(source, f"field {name!r} is truncated ({len(data)} of {nbytes} bytes)")
        if member.read(1):  # also makes zipfile check the CRC
            raise _bad(source, f"field {name!r} has trailing bytes after its data")
    a = np.frombuffer(data, dtype=dtype).reshape(shape, order="F" if fortran else "C")
    return _c_order(a)


def _read_npz(path: Path) -> dict:
    source = repr(str(path))
    with zipfile.ZipFile(path) as zf:
        infos = zf.infolist()
        seen: dict[str, zipfile.ZipInfo] = {}
        for info in infos:
            name = info.filename[:-4] if info.filename.endswith(".npy") else None
            if name is None or "/" in name or "\\" in name:
                raise _bad(source, f"unexpected entry {info.filename!r} (not an xrdflow Reflections .npz)")
            if name in seen:
                raise _bad(source, f"entry {info.filename!r} appears twice")
            seen[name] = info
        if VERSION_KEY not in seen:
            raise _bad(source, f"not an xrdflow Reflections file (no {VERSION_KEY} entry)")
        version_info = seen.pop(VERSION_KEY)
        if version_info.file_size > _SLACK_BYTES:
            raise _bad(source, f"entry {VERSION_KEY!r} is too large")
        with zf.open(version_info) as member:
            _check_version(source, np.lib.format.read_array(member, allow_pickle=False))
        names = _field_names()
        _check_members(source, seen, names, "entries")
        return {name: _read_npy_member(zf, seen[name], name, source) for name in names}


def _check_members(source: str, present, names: list[str], what: str) -> None:
    """Every field stored, nothing else."""
    missing = [n for n in names if n not in present]
    if missing:
        raise _bad(source, f"missing field(s) {', '.join(map(repr, missing))}")
    extra = sorted(set(present) - set(names))
    if extra:
        raise _bad(source, f"unexpected {what} {', '.join(map(repr, extra))} (not fields of Reflections)")


# ---------------------------------------------------------------- HDF5
def _write_h5(tmp: Path, arrays: dict) -> None:
    h5py = _h5py()
    with h5py.File(tmp, "w") as f:
        f.attrs[VERSION_KEY] = np.int64(FORMAT_VERSION)
        for name, a in arrays.items():
            options = dict(compression="gzip", compression_opts=4, shuffle=True) if a.ndim and a.size else {}
            f.create_dataset(name, data=a, track_times=False, **options)


def _read_h5(path: Path) -> dict:
    h5py = _h5py()
    source = repr(str(path))
    with h5py.File(path, "r") as f:
        if VERSION_KEY not in f.attrs:
            raise _bad(source, f"not an xrdflow Reflections file (no {VERSION_KEY} attribute)")
        _check_version(source, f.attrs[VERSION_KEY])
        names = _field_names()
        _check_members(source, list(f.keys()), names, "members")
        out = {}
        for name in names:
            link = f.get(name, getlink=True)
            if not isinstance(link, h5py.HardLink):
                raise _bad(source, f"field {name!r} is a {type(link).__name__}; only plain datasets are read")
            ds = f[name]
            if not isinstance(ds, h5py.Dataset):
                raise _bad(source, f"field {name!r} is a {type(ds).__name__}, not a dataset")
            if ds.shape is None:
                raise _bad(source, f"field {name!r} is an empty (null) dataset")
            if ds.is_virtual or ds.external:
                raise _bad(source, f"field {name!r} refers to data outside this file (virtual/external storage)")
            _check_header(source, name, ds.dtype, ds.shape)
            nbytes = math.prod(ds.shape) * ds.dtype.itemsize
            _check_size(source, name, nbytes, ds.id.get_storage_size())
            out[name] = _c_order(np.asarray(ds[()], dtype=ds.dtype))
            if out[name].shape != ds.shape:
                raise _bad(source, f"field {name!r} read back with shape {out[name].shape}, expected {ds.shape}")
    return out


# ---------------------------------------------------------------- atomic write
def _atomic_write(path: Path, write) -> None:
    """``write(tmp)`` into a temporary file beside ``path``, then fsync and
    ``os.replace`` (:func:`xrdflow._fileio.atomic_output`): ``path`` is either
    its old self or the complete new file, and the new file keeps the mode of
    the file it replaces (a new one gets 0o666 & ~umask)."""
    with atomic_output(path) as tmp:
        write(Path(tmp))
