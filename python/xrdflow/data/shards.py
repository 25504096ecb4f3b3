"""Sharded HDF5 data sets: structures, labels and (optionally) cached
reflections and rendered patterns, written atomically and resumably.

A data set is a directory::

    DIR/manifest.json      what the data set is and which shards are complete
    DIR/shard-00000.h5     items [0, shard_size)
    DIR/shard-00001.h5     items [shard_size, 2 * shard_size)
    ...
    DIR/.lock              held (flock) by the one process writing DIR

Write one with :func:`write_dataset`, read it with :class:`ShardedDataset`::

    from xrdflow.data.shards import write_dataset, ShardedDataset

    write_dataset("mp20", structures, shard_size=1000, params={"kind": "import"})
    ds = ShardedDataset("mp20")            # checks every shard's sha256
    len(ds), ds.ids()[:3], ds.labels()["space_group"][:3]
    for s in ds: ...                       # xrdflow.Structure, label = id

``manifest.json``
-----------------
A JSON object::

    {"format": "xrdflow-sharded-dataset", "format_version": 1,
     "created_with": "xrdflow 0.1.0",
     "complete": true,              # false while being written (or interrupted)
     "n_items": 300,                # null while a streamed source is being written
     "shard_size": 100,
     "params": {...},               # what the data set is: the caller's description
                                    # (kind, source, seed, n, space-group weights, ...)
     "contents": {"reflections": false, "patterns": false,
                  "label_scheme": "laue", "simulator": null},
     "shards": [{"file": "shard-00000.h5", "start": 0, "stop": 100,
                 "n_items": 100, "sha256": "...", "bytes": 123456}, ...]}

Shard ``k`` holds the items ``[k * shard_size, min((k + 1) * shard_size, n))``.
Only shards that were completely written and fsync'ed are listed.

Shard files
-----------
HDF5 (h5py), no pickled objects anywhere; root attributes
``xrdflow_shard_version`` (1), ``start``, ``stop``, ``n_items``::

    ids                          (n,)   variable-length UTF-8 strings
    structures/atom_offsets      (n+1,) int64, CSR: atoms of item i are
                                        atom_offsets[i]:atom_offsets[i+1]
    structures/lattice           (n,3,3) float64, angstrom, rows a, b, c
    structures/frac              (A,3)  float64
    structures/numbers           (A,)   int32
    structures/charges           (A,)   int32
    structures/occupancy         (A,)   float64
    structures/b_iso             (A,)   float64, angstrom^2
    labels/space_group           (n,)   int32, 1..230
    labels/crystal_system        (n,)   int32, index into CRYSTAL_SYSTEMS
    labels/extinction_group      (n,)   int32, under contents.label_scheme
    labels/laue_class            (n,)   variable-length UTF-8 strings
    reflections/<field>          every field of xrdflow.Reflections (optional)
    patterns/intensity           (n, P) float32 (optional)
    patterns/axis                (P,)   float64; attribute axis_name

Structures read back are labelled with their ids.

Atomicity and resuming
----------------------
A shard is written to ``shard-XXXXX.h5.tmp-<pid>``, fsync'ed, hashed and
renamed onto ``shard-XXXXX.h5`` (``os.replace``); only then is the manifest,
with the new shard listed, written the same way (``manifest.json.tmp-<pid>``,
fsync, ``os.replace``, fsync of the directory).  A write interrupted at any
point -- Ctrl-C, ``kill -9``, power loss -- therefore leaves a manifest that
lists complete shards only, plus perhaps a temporary file or an unlisted shard,
which the next ``resume=True`` run removes or rewrites.  (A fresh run that
fails or is stopped -- but not killed -- before its first shard removes its
manifest again, so that the same command can simply be run again.)

With ``resume=True`` the listed shards are checked against their sha256 and
kept; a shard that fails is rewritten (with a warning); only the missing item
ranges are produced again.  The run must describe the same data set: the same
``params``, ``shard_size`` and contents (else ``ValueError``), so the result
is exactly what one uninterrupted run gives -- provided the producer is
deterministic for a given item range, as :func:`make_shard`-style producers
built on a fixed source or a seeded generator are.

Checksums when reading
----------------------
``ShardedDataset(path, verify=True)`` hashes every shard when it is opened
and raises ``ValueError`` naming every damaged or missing shard, so a damaged
data set is found before a training run starts rather than hours into it.
Hashing reads every byte once (about 1 GB/s); for very large data sets
``verify="lazy"`` hashes each shard the first time it is read, and
``verify=False`` checks only that the shard files exist with the listed size.
Whatever the mode, every array is checked for dtype, shape and consistency
when it is read (the same checks :meth:`xrdflow.Reflections.load` makes, and
Structure's own validation).
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import re
import warnings
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator, Sequence

import numpy as np

from .._fileio import atomic_output
from ..reflections import Reflections
from ..reflections import _check_arrays as _check_reflection_arrays
from ..reflections import _check_header as _check_reflection_header
from ..reflections import _check_offsets, _check_size, _field_names as _reflection_fields
from ..reflections import _InvalidFile, _SCHEMA as _REFLECTION_SCHEMA
from ..structure import Structure
from ..symmetry import quiet_spglib
from .dedup import space_group_number

__all__ = ["Batch", "FORMAT", "FORMAT_VERSION", "Item", "MANIFEST", "ShardData", "ShardedDataset", "WriteResult",
           "describe_simulator", "is_dataset", "shard_name", "write_dataset"]

FORMAT = "xrdflow-sharded-dataset"
#: Version of the manifest and shard layout.
FORMAT_VERSION = 1
SHARD_VERSION_KEY = "xrdflow_shard_version"
MANIFEST = "manifest.json"
LOCK = ".lock"
DEFAULT_SHARD_SIZE = 1000

_SHARD_RE = re.compile(r"^shard-(\d{5,})\.h5$")
_TEMP_RE = re.compile(r"^(?:shard-\d{5,}\.h5|manifest\.json)\.tmp-\d+$")

_STRUCTURE_SCHEMA: dict[str, tuple[np.dtype, tuple]] = {
    "atom_offsets": (np.dtype(np.int64), (None,)),
    "lattice": (np.dtype(np.float64), (None, 3, 3)),
    "frac": (np.dtype(np.float64), (None, 3)),
    "numbers": (np.dtype(np.int32), (None,)),
    "charges": (np.dtype(np.int32), (None,)),
    "occupancy": (np.dtype(np.float64), (None,)),
    "b_iso": (np.dtype(np.float64), (None,)),
}
_LABEL_INTS = ("space_group", "crystal_system", "extinction_group")
_LABEL_SCHEMA = {name: (np.dtype(np.int32), (None,)) for name in _LABEL_INTS}
_PATTERN_SCHEMA = {"intensity": (np.dtype(np.float32), (None, None)), "axis": (np.dtype(np.float64), (None,))}
_GROUPS = ("ids", "structures", "labels", "reflections", "patterns")


def shard_name(k: int) -> str:
    """File name of shard ``k``: ``shard-00000.h5``."""
    return f"shard-{k:05d}.h5"


def is_dataset(path) -> bool:
    """Whether ``path`` is a directory holding a ``manifest.json``."""
    p = Path(path)
    return p.is_dir() and (p / MANIFEST).is_file()


# ============================================================== items
@dataclass(frozen=True)
class Item:
    """One structure to store: its id and, when known, its space-group number
    (else :func:`xrdflow.space_group` finds it)."""

    id: str
    structure: Structure
    space_group: int | None = None


@dataclass
class Batch:
    """The items of one shard, with anything already computed for them.

    ``space_groups`` (n,) ints, ``reflections`` (a Reflections of the n
    structures, in order) and ``patterns`` ((n, P) float32, on
    ``pattern_axis``) are optional: what is missing is computed by
    :func:`write_dataset` (space groups with :func:`xrdflow.space_group`,
    reflections and patterns with its ``simulator``).
    """

    ids: list[str]
    structures: list[Structure]
    space_groups: Sequence[int] | np.ndarray | None = None
    reflections: Reflections | None = None
    patterns: np.ndarray | None = None
    pattern_axis: np.ndarray | None = None
    pattern_axis_name: str | None = None

    def __len__(self) -> int:
        return len(self.structures)


def _to_batch(produced, start: int) -> Batch:
    """A Batch from what a producer returned: a Batch, or a sequence of
    Item / (id, Structure[, space_group]) / Structure."""
    if isinstance(produced, Batch):
        if len(produced.ids) != len(produced.structures):
            raise ValueError(f"Batch has {len(produced.ids)} ids for {len(produced.structures)} structures")
        return produced
    if isinstance(produced, (str, bytes, Structure)) or not isinstance(produced, Iterable):
        raise TypeError(f"a shard producer must return a list of items or a Batch, got {type(produced).__name__}")
    ids, structures, groups = [], [], []
    for j, item in enumerate(produced):
        sg = None
        if isinstance(item, Item):
            ident, s, sg = item.id, item.structure, item.space_group
        elif isinstance(item, Structure):
            ident, s = (item.label or str(start + j)), item
        elif isinstance(item, tuple) and len(item) in (2, 3):
            ident, s = item[0], item[1]
            sg = item[2] if len(item) == 3 else None
        else:
            raise TypeError(f"item {start + j} is a {type(item).__name__}; expected an xrdflow.Structure, "
                            "an Item or an (id, Structure[, space_group]) tuple")
        if not isinstance(s, Structure):
            raise TypeError(f"item {start + j}: expected an xrdflow.Structure, got {type(s).__name__}")
        ids.append(ident)
        structures.append(s)
        groups.append(sg)
    if not groups or all(g is None for g in groups):
        return Batch(ids, structures)
    if any(g is None for g in groups):  # some known: find the others
        import xrdflow as xf

        with quiet_spglib():
            groups = [space_group_number(s) if g is None else g for s, g in zip(structures, groups)]
    return Batch(ids, structures, space_groups=groups)


# ============================================================== simulator description
def describe_simulator(sim) -> dict:
    """The parts of a Simulator that the stored reflections/patterns depend on (JSON-able)."""
    axis = np.asarray(sim.axis)
    return {
        "radiation": sim.radiation.name,
        "wavelengths": [float(w) for w in sim.radiation.wavelengths],
        "weights": [float(w) for w in sim.radiation.weights],
        "probe": sim.probe,
        "d_min": float(sim.d_min),
        "axis_name": sim.axis_name,
        "axis_start": float(axis[0]),
        "axis_stop": float(axis[-1]),
        "n_points": int(len(axis)),
        "normalization": sim.normalization,
        "profile": {k: float(v) for k, v in sim._profile_args().items()},
    }


# ============================================================== small file helpers


def _sha256(path: Path) -> tuple[str, int]:
    """(hex sha256, size in bytes) of a file."""
    h = hashlib.sha256()
    size = 0
    with open(path, "rb") as fh:
        while True:
            block = fh.read(1 << 20)
            if not block:
                break
            h.update(block)
            size += len(block)
    return h.hexdigest(), size


def _write_json_atomic(path: Path, obj) -> None:
    """JSON to ``path`` via ``path.tmp-<pid>`` (:func:`xrdflow._fileio.atomic_output`: fsync,
    ``os.replace``, fsync of the directory)."""
    text = json.dumps(obj, indent=1, ensure_ascii=False) + "\n"
    with atomic_output(path, temp_name=_temp_name(path.name)) as tmp:
        with open(tmp, "w", encoding="utf-8") as fh:
            fh.write(text)


def _temp_name(name: str) -> str:
    """``<name>.tmp-<pid>``: the temporary names :data:`_TEMP_RE` recognises as leftovers."""
    return f"{name}.tmp-{os.getpid()}"


def write_json(path, obj) -> None:
    """Write a JSON file atomically (any name; used for side files such as failures.json)."""
    _write_json_atomic(Path(path), obj)


def _h5py():
    try:
        import h5py
    except ImportError as exc:
        raise ImportError("sharded data sets are HDF5 files and need h5py: pip install h5py") from exc
    return h5py


@contextlib.contextmanager
def _locked(directory: Path):
    """Hold an exclusive flock on DIR/.lock (released by the OS even after kill -9)."""
    try:
        import fcntl
    except ImportError:  # not POSIX: no lock
        yield
        return
    fd = os.open(directory / LOCK, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            raise ValueError(f"{str(directory)!r} is being written by another process (its {LOCK} is locked); "
                             "wait for it to finish") from None
        yield
    finally:
        os.close(fd)


# ============================================================== manifest
def _bad_manifest(path: Path, message: str) -> ValueError:
    return ValueError(f"{str(path)!r}: {message}")


def _read_manifest(directory: Path) -> dict:
    """Parse and check manifest.json (structure, types, shard names and ranges)."""
    path = directory / MANIFEST
    if not directory.exists():
        raise FileNotFoundError(f"no such data set directory: {str(directory)!r}")
    if not directory.is_dir():
        raise ValueError(f"{str(directory)!r} is not a directory (a data set is a directory with a {MANIFEST})")
    if not path.is_file():
        raise FileNotFoundError(f"{str(directory)!r} is not an xrdflow data set: it has no {MANIFEST}")
    try:
        with open(path, "rb") as fh:
            raw = fh.read(64 << 20)
            if fh.read(1):
                raise _bad_manifest(path, "is larger than 64 MiB; refusing it")
        m = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise _bad_manifest(path, f"is not valid JSON (damaged?): {exc}") from None
    if not isinstance(m, dict) or m.get("format") != FORMAT:
        raise _bad_manifest(path, f"is not an xrdflow data set manifest (no \"format\": \"{FORMAT}\")")
    version = m.get("format_version")
    if not isinstance(version, int) or isinstance(version, bool):
        raise _bad_manifest(path, f"format_version must be an integer, got {version!r}")
    if version != FORMAT_VERSION:
        newer = " (written by a newer xrdflow?)" if version > FORMAT_VERSION else ""
        raise _bad_manifest(path, f"unsupported data set format version {version}{newer}; this xrdflow reads "
                                  f"version {FORMAT_VERSION}")

    def need(key, types, what):
        value = m.get(key)
        if not isinstance(value, types) or (isinstance(value, bool) and types is not bool):
            raise _bad_manifest(path, f"field {key!r} must be {what}, got {value!r}")
        return value

    need("complete", bool, "true or false")
    size = need("shard_size", int, "a positive integer")
    if size < 1:
        raise _bad_manifest(path, f"field 'shard_size' must be a positive integer, got {size}")
    n = m.get("n_items")
    if n is not None and (not isinstance(n, int) or isinstance(n, bool) or n < 0):
        raise _bad_manifest(path, f"field 'n_items' must be a non-negative integer or null, got {n!r}")
    if m["complete"] and n is None:
        raise _bad_manifest(path, "a complete data set must give n_items")
    need("params", dict, "an object")
    contents = need("contents", dict, "an object")
    for key in ("reflections", "patterns"):
        if not isinstance(contents.get(key), bool):
            raise _bad_manifest(path, f"contents.{key} must be true or false, got {contents.get(key)!r}")
    shards = need("shards", list, "a list")
    seen = set()
    for i, e in enumerate(shards):
        if not isinstance(e, dict):
            raise _bad_manifest(path, f"shards[{i}] must be an object")
        name = e.get("file")
        match = _SHARD_RE.match(name) if isinstance(name, str) else None
        if match is None:  # also refuses paths ('../x', '/etc/...')
            raise _bad_manifest(path, f"shards[{i}].file must be a name like 'shard-00000.h5', got {name!r}")
        for key in ("start", "stop", "n_items", "bytes"):
            v = e.get(key)
            if not isinstance(v, int) or isinstance(v, bool) or v < 0:
                raise _bad_manifest(path, f"shards[{i}].{key} must be a non-negative integer, got {v!r}")
        sha = e.get("sha256")
        if not isinstance(sha, str) or not re.fullmatch(r"[0-9a-f]{64}", sha):
            raise _bad_manifest(path, f"shards[{i}].sha256 must be 64 hex digits, got {sha!r}")
        k = int(match.group(1))
        want_start = k * size
        if e["start"] != want_start or not e["start"] < e["stop"] <= want_start + size \
                or e["n_items"] != e["stop"] - e["start"]:
            raise _bad_manifest(path, f"shards[{i}] ({name}) has the range [{e['start']}, {e['stop']}) with "
                                      f"n_items {e['n_items']}, which does not fit shard {k} of size {size}")
        if n is not None and e["stop"] > n:
            raise _bad_manifest(path, f"shards[{i}] ({name}) ends at item {e['stop']} beyond n_items = {n}")
        if k in seen:
            raise _bad_manifest(path, f"shard {name} is listed twice")
        seen.add(k)
    m["shards"] = sorted(shards, key=lambda e: e["start"])
    if m["complete"]:
        expected = math.ceil(n / size)
        missing = sorted(set(range(expected)) - seen)
        if missing:
            raise _bad_manifest(path, f"is marked complete with {n} items but does not list "
                                      f"{', '.join(shard_name(k) for k in missing[:5])}"
                                      + (f" and {len(missing) - 5} more" if len(missing) > 5 else ""))
        extra = sorted(seen - set(range(expected)))
        short = [e["file"] for e in m["shards"] if e["stop"] != min(e["start"] + size, n)]
        if extra or short:
            raise _bad_manifest(path, f"is marked complete with {n} items in shards of {size} but lists "
                                      f"{(extra and shard_name(extra[0])) or short[0]} with an inconsistent range")
    return m


def _new_manifest(n_items, shard_size, params, contents) -> dict:
    from .. import __version__

    return {"format": FORMAT, "format_version": FORMAT_VERSION, "created_with": f"xrdflow {__version__}",
            "complete": False, "n_items": n_items, "shard_size": shard_size, "params": params,
            "contents": contents, "shards": []}


def _jsonable(obj, what: str):
    """``obj`` after a JSON round trip (so that comparisons with a stored manifest are fair)."""
    try:
        return json.loads(json.dumps(obj))
    except (TypeError, ValueError) as exc:
        raise TypeError(f"{what} must be JSON-serializable (numbers, strings, lists, dicts): {exc}") from None


# ============================================================== writing shards
def _labels_of(space_groups: np.ndarray, scheme: str) -> dict:
    from .labels import labels_for

    cache: dict[int, dict] = {}
    out = {name: np.empty(len(space_groups), dtype=np.int32) for name in _LABEL_INTS}
    laue = []
    for i, sg in enumerate(space_groups):
        lab = cache.get(int(sg))
        if lab is None:
            with quiet_spglib():
                lab = cache[int(sg)] = labels_for(int(sg), scheme)
        for name in _LABEL_INTS:
            out[name][i] = lab[name]
        laue.append(lab["laue_class"])
    out["laue_class"] = laue
    return out


def _structure_arrays(structures: Sequence[Structure]) -> dict:
    n_atoms = np.array([s.n_atoms for s in structures], dtype=np.int64)
    offsets = np.zeros(len(structures) + 1, dtype=np.int64)
    np.cumsum(n_atoms, out=offsets[1:])
    out = {"atom_offsets": offsets,
           "lattice": np.stack([s.lattice for s in structures]).astype(np.float64, copy=False)}
    for name in ("frac", "numbers", "charges", "occupancy", "b_iso"):
        dtype = _STRUCTURE_SCHEMA[name][0]
        out[name] = np.ascontiguousarray(np.concatenate([getattr(s, name) for s in structures]), dtype=dtype)
    return out


def _dataset(group, name, data):
    a = np.asarray(data)
    opts = dict(compression="gzip", compression_opts=4, shuffle=True) if a.ndim and a.size else {}
    if a.ndim >= 2 and a.size:
        opts["chunks"] = (max(1, min(a.shape[0], (1 << 20) // max(1, a[0].nbytes))),) + a.shape[1:]
    group.create_dataset(name, data=a, track_times=False, **opts)


def _write_shard_file(tmp: Path, start: int, batch: Batch, labels: dict, reflections, patterns) -> None:
    h5py = _h5py()
    strings = h5py.string_dtype("utf-8")
    n = len(batch)
    with h5py.File(tmp, "w") as f:
        f.attrs[SHARD_VERSION_KEY] = np.int64(FORMAT_VERSION)
        f.attrs["start"] = np.int64(start)
        f.attrs["stop"] = np.int64(start + n)
        f.attrs["n_items"] = np.int64(n)
        f.create_dataset("ids", data=np.array(batch.ids, dtype=object), dtype=strings, track_times=False)
        g = f.create_group("structures")
        for name, a in _structure_arrays(batch.structures).items():
            _dataset(g, name, a)
        g = f.create_group("labels")
        for name in _LABEL_INTS:
            _dataset(g, name, labels[name])
        g.create_dataset("laue_class", data=np.array(labels["laue_class"], dtype=object), dtype=strings,
                         track_times=False)
        if reflections is not None:
            g = f.create_group("reflections")
            for name in _reflection_fields():
                _dataset(g, name, np.asarray(getattr(reflections, name)))
        if patterns is not None:
            y, axis, axis_name = patterns
            g = f.create_group("patterns")
            g.attrs["axis_name"] = axis_name
            _dataset(g, "intensity", np.ascontiguousarray(y, dtype=np.float32))
            _dataset(g, "axis", np.ascontiguousarray(axis, dtype=np.float64))


def _check_batch_ids(batch: Batch, start: int) -> None:
    for j, ident in enumerate(batch.ids):
        if not isinstance(ident, str):
            raise TypeError(f"item {start + j}: id must be a str, got {type(ident).__name__}")
        try:
            ident.encode("utf-8")
        except UnicodeEncodeError:
            raise ValueError(f"item {start + j}: id {ident!r} cannot be encoded as UTF-8") from None


def _prepare(batch: Batch, start: int, stop: int | None, *, contents: dict, simulator) -> tuple:
    """Labels, reflections and patterns of a batch (computed where missing), checked."""
    n = len(batch)
    if stop is not None and n != stop - start:
        raise ValueError(f"the producer returned {n} items for the range [{start}, {stop}) "
                         f"({stop - start} expected)")
    for j, s in enumerate(batch.structures):
        if not isinstance(s, Structure):
            raise TypeError(f"item {start + j}: expected an xrdflow.Structure, got {type(s).__name__}")
    _check_batch_ids(batch, start)
    if batch.space_groups is None:
        import xrdflow as xf

        with quiet_spglib():
            sgs = np.array([space_group_number(s) for s in batch.structures], dtype=np.int64)
    else:
        sgs = np.asarray(batch.space_groups)
        if sgs.shape != (n,) or (n and sgs.dtype.kind not in "iu"):
            raise ValueError(f"space_groups of items [{start}, {start + n}) must be {n} integers")
    if n and (sgs.min() < 1 or sgs.max() > 230):
        raise ValueError(f"space-group numbers must be in 1..230 (items [{start}, {start + n}))")
    labels = _labels_of(sgs, contents["label_scheme"])

    reflections = None
    if contents["reflections"]:
        reflections = batch.reflections
        if reflections is None:
            if simulator is None:
                raise ValueError("this data set stores reflections: pass simulator= or give Batch.reflections")
            reflections = simulator.reflections(batch.structures)
        if not isinstance(reflections, Reflections) or len(reflections) != n:
            raise ValueError(f"the reflections of items [{start}, {start + n}) must be a Reflections of {n} "
                             "structures")
        want = contents.get("d_min")
        if want is not None and float(reflections.d_min) != want:
            raise ValueError(f"reflections of items [{start}, {start + n}) have d_min = "
                             f"{float(reflections.d_min)!r}, the data set {want!r}")
    patterns = None
    if contents["patterns"]:
        if batch.patterns is not None:
            y = np.asarray(batch.patterns)
            axis = batch.pattern_axis
            name = batch.pattern_axis_name or "axis"
            if axis is None:
                raise ValueError("Batch.patterns needs Batch.pattern_axis")
        else:
            if simulator is None:
                raise ValueError("this data set stores patterns: pass simulator= or give Batch.patterns")
            y = simulator.render(reflections)[0] if reflections is not None \
                else simulator.patterns(batch.structures)
            axis, name = simulator.axis, simulator.axis_name
        axis = np.asarray(axis, dtype=np.float64)
        if y.ndim != 2 or y.shape != (n, len(axis)):
            raise ValueError(f"patterns of items [{start}, {start + n}) have shape {y.shape}, expected "
                             f"({n}, {len(axis)})")
        patterns = (y, axis, name)
    return labels, reflections, patterns


def _write_shard(directory: Path, k: int, start: int, batch: Batch, prepared) -> dict:
    """Write shard k atomically; returns its manifest entry."""
    name = shard_name(k)
    path = directory / name
    with atomic_output(path, temp_name=_temp_name(name)) as tmp:
        _write_shard_file(Path(tmp), start, batch, *prepared)
        sha, size = _sha256(Path(tmp))
    return {"file": name, "start": start, "stop": start + len(batch), "n_items": len(batch),
            "sha256": sha, "bytes": size}


# ============================================================== write_dataset
@dataclass(frozen=True)
class WriteResult:
    """What :func:`write_dataset` did."""

    path: str
    n_items: int
    n_shards: int
    written: int      # shards written by this call
    reused: int       # complete shards kept from an earlier (interrupted) run
    rewritten: int    # listed shards that failed their checksum and were written again

    def summary(self) -> str:
        text = f"{self.n_items} items in {self.n_shards} shard(s) at {self.path}: {self.written} written"
        if self.reused:
            text += f", {self.reused} kept from an earlier run"
        if self.rewritten:
            text += f" ({self.rewritten} rewritten after failing their checksum)"
        return text


def _clean_temporaries(directory: Path) -> None:
    for p in directory.iterdir():
        if _TEMP_RE.match(p.name) and p.is_file():
            with contextlib.suppress(OSError):
                p.unlink()


def check_output(out_dir, *, resume: bool) -> Path:
    """Check that ``out_dir`` can receive a new data set (or, with ``resume``, an
    existing one to finish); raises ValueError/FileNotFoundError otherwise."""
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise ValueError(f"{str(out)!r} exists and is not a directory")
    parent = out.parent if str(out.parent) else Path(".")
    if not out.exists() and not parent.is_dir():
        raise FileNotFoundError(f"cannot create {str(out)!r}: directory {str(parent)!r} does not exist")
    if out.is_dir() and not resume:
        existing = [p.name for p in out.iterdir() if p.name == MANIFEST or _SHARD_RE.match(p.name)]
        if existing:
            raise ValueError(f"{str(out)!r} already holds a data set ({existing[0]}); resume it (--resume / "
                             "resume=True) with the same options, or choose a new directory")
    return out


def write_dataset(out_dir, source, *, n_items: int | None = None, shard_size: int = DEFAULT_SHARD_SIZE,
                  resume: bool = False, params: dict | None = None, simulator=None,
                  with_reflections: bool = False, with_patterns: bool = False, simulator_info: dict | None = None,
                  label_scheme: str | None = None, progress: bool = True, desc: str = "writing") -> WriteResult:
    """Write (or finish) a sharded data set in ``out_dir``.

    source: what to store, in one of three forms:

    * a callable ``make_shard(start, stop)`` returning the items
      ``[start, stop)`` -- called only for the shards still missing, which
      is what makes a resumed generation cheap (``n_items`` required);
    * a sequence (list, tuple; ``len`` and slicing), sliced per shard;
    * any other iterable (e.g. a generator) of items, or of lists of items
      (chunks of any size, regrouped into shards), read in order; the items
      of shards already complete are read and discarded.

      An item is an :class:`Item`, an ``(id, Structure[, space_group])``
      tuple or a bare Structure (id: its label, else its index).  A producer
      may also return a :class:`Batch` holding precomputed space groups,
      reflections or patterns.

    shard_size: items per shard file.
    resume: keep the shards an earlier run of the same data set completed
        (checked against their sha256; a damaged one is rewritten) and
        produce only the missing ones.  Without ``resume`` the directory must
        not hold a data set yet.  Resuming a directory with no manifest
        starts from scratch.
    params: JSON-able description of the data set, stored in the manifest
        (source, seed, n, space-group weights...); a resumed run must pass the
        same ``params``.
    simulator: an :class:`xrdflow.Simulator` to compute the reflections
        (``with_reflections``) and render the patterns (``with_patterns``)
        of each shard.  Its settings go into the manifest (``simulator_info``
        overrides them, e.g. when copying precomputed arrays).
    label_scheme: extinction-group scheme of the labels (default: labels.DEFAULT_SCHEME).
    progress: show a tqdm bar (on a terminal).

    Returns a :class:`WriteResult`.  Every file is written atomically (see the
    module docs): after an interruption the directory holds a valid,
    incomplete data set that ``resume=True`` finishes.
    """
    from .labels import DEFAULT_SCHEME, SCHEMES

    if isinstance(shard_size, bool) or not isinstance(shard_size, (int, np.integer)) or shard_size < 1:
        raise ValueError(f"shard_size must be a positive integer, got {shard_size!r}")
    shard_size = int(shard_size)
    scheme = DEFAULT_SCHEME if label_scheme is None else label_scheme
    if scheme not in SCHEMES:
        raise ValueError(f"label_scheme must be one of {SCHEMES}, got {scheme!r}")
    if (with_reflections or with_patterns) and simulator is None and simulator_info is None:
        raise ValueError("with_reflections / with_patterns need a simulator (or precomputed arrays in Batches "
                         "and simulator_info)")
    _h5py()

    # The producer and the total.
    streaming = False
    if callable(source) and not isinstance(source, Sequence):
        if n_items is None:
            raise ValueError("write_dataset(make_shard, ...) needs n_items=")
        make_shard = source
    elif isinstance(source, Sequence) and not isinstance(source, (str, bytes)):
        if n_items is not None and n_items != len(source):
            raise ValueError(f"n_items = {n_items} but the source holds {len(source)} items")
        n_items = len(source)

        def make_shard(start, stop, _src=source):
            return _src[start:stop]
    elif isinstance(source, Iterable):
        streaming = True
        make_shard = None
    else:
        raise TypeError(f"source must be a callable make_shard(start, stop), a sequence or an iterable of items, "
                        f"got {type(source).__name__}")
    if n_items is not None and (isinstance(n_items, bool) or not isinstance(n_items, (int, np.integer))
                                or n_items < 0):
        raise ValueError(f"n_items must be a non-negative integer, got {n_items!r}")
    n_items = None if n_items is None else int(n_items)

    params = _jsonable(params or {}, "params")
    sim_info = simulator_info if simulator_info is not None else (
        describe_simulator(simulator) if simulator is not None and (with_reflections or with_patterns) else None)
    contents = _jsonable({"reflections": bool(with_reflections), "patterns": bool(with_patterns),
                          "label_scheme": scheme, "simulator": sim_info,
                          "d_min": None if not with_reflections or sim_info is None else sim_info.get("d_min")},
                         "simulator_info")

    out = check_output(out_dir, resume=resume)
    created_dir = not out.exists()
    out.mkdir(exist_ok=True)
    with _locked(out):
        _clean_temporaries(out)
        manifest, keep, rewritten = None, {}, 0
        if resume and (out / MANIFEST).exists():
            manifest = _read_manifest(out)
            _check_resumable(out, manifest, shard_size=shard_size, params=params, contents=contents,
                             n_items=n_items)
            for e in manifest["shards"]:
                k = e["start"] // shard_size
                problem = _shard_problem(out, e, hash_it=True)
                if problem is None:
                    keep[k] = e
                else:
                    rewritten += 1
                    warnings.warn(f"{problem}; writing it again", RuntimeWarning, stacklevel=2)
            if len(keep) != len(manifest["shards"]):  # unlist damaged shards before touching them
                manifest["shards"] = [keep[k] for k in sorted(keep)]
                manifest["complete"] = False
                _write_json_atomic(out / MANIFEST, manifest)
            if n_items is not None and manifest["n_items"] is None:
                manifest["n_items"] = n_items
        fresh = manifest is None
        if fresh:
            manifest = _new_manifest(n_items, shard_size, params, contents)
            _write_json_atomic(out / MANIFEST, manifest)

        bar = _progress(progress, n_items, desc)
        written = 0
        try:
            if bar is not None:
                bar.update(sum(e["n_items"] for e in keep.values()))
            if streaming:
                tasks = _stream_tasks(source, shard_size)
            else:
                n_shards = math.ceil(n_items / shard_size)
                tasks = ((k, k * shard_size, min((k + 1) * shard_size, n_items), None) for k in range(n_shards))
            total = 0
            last_k = -1
            for k, start, stop, chunk in tasks:
                last_k = k
                total = stop
                if k in keep:
                    if keep[k]["stop"] != stop:
                        raise ValueError(f"cannot resume: {shard_name(k)} holds items [{keep[k]['start']}, "
                                         f"{keep[k]['stop']}) but the source gives [{start}, {stop}) for it")
                    continue
                produced = chunk if chunk is not None else make_shard(start, stop)
                batch = _to_batch(produced, start)
                prepared = _prepare(batch, start, stop, contents=contents, simulator=simulator)
                entry = _write_shard(out, k, start, batch, prepared)
                keep[k] = entry
                manifest["shards"] = [keep[j] for j in sorted(keep)]
                _write_json_atomic(out / MANIFEST, manifest)
                written += 1
                if bar is not None:
                    bar.update(len(batch))
            stray = [k for k in keep if k > last_k]
            if stray:
                raise ValueError(f"cannot resume: the data set lists {shard_name(min(stray))} but the source "
                                 f"ends at item {total}")
        except BaseException:
            if fresh and not keep:  # nothing written: leave no data set behind (a rerun needs no --resume)
                with contextlib.suppress(OSError):
                    (out / MANIFEST).unlink()
                    if created_dir:
                        (out / LOCK).unlink()
                        out.rmdir()
            raise
        finally:
            if bar is not None:
                bar.close()
        n_total = n_items if n_items is not None else manifest["n_items"]
        if streaming and n_total is not None and total != n_total:
            raise ValueError(f"the source gave {total} items but the data set is declared with {n_total} "
                             "(n_items, or an earlier run)")
        n_total = total if n_total is None else n_total
        manifest["n_items"] = n_total
        manifest["complete"] = True
        manifest["shards"] = [keep[k] for k in sorted(keep)]
        _write_json_atomic(out / MANIFEST, manifest)
        listed = {e["file"] for e in manifest["shards"]}
        for p in out.iterdir():  # shards an earlier, different run left unlisted
            if _SHARD_RE.match(p.name) and p.name not in listed:
                with contextlib.suppress(OSError):
                    p.unlink()
    return WriteResult(str(out), n_total, len(manifest["shards"]), written, len(keep) - written, rewritten)


def _flatten_chunks(source: Iterable):
    """Items of ``source``, whose elements are items or lists of items (chunks of any size)."""
    for element in source:
        if isinstance(element, list):
            yield from element
        else:
            yield element


def _stream_tasks(source: Iterable, shard_size: int):
    it = _flatten_chunks(source)
    k = 0
    while True:
        chunk = []
        for item in it:
            chunk.append(item)
            if len(chunk) == shard_size:
                break
        if not chunk:
            return
        yield k, k * shard_size, k * shard_size + len(chunk), chunk
        if len(chunk) < shard_size:
            return
        k += 1


def _check_resumable(out: Path, m: dict, *, shard_size, params, contents, n_items) -> None:
    where = f"cannot resume {str(out)!r}"
    if m["shard_size"] != shard_size:
        raise ValueError(f"{where}: it was written with shard size {m['shard_size']}, this run asks for "
                         f"{shard_size}; repeat the original options or choose a new directory")
    if m["params"] != params:
        diff = sorted(k for k in set(m["params"]) | set(params) if m["params"].get(k) != params.get(k))
        shown = ", ".join(f"{k}: {m['params'].get(k)!r} there, {params.get(k)!r} now" for k in diff[:4])
        raise ValueError(f"{where}: it holds a different data set ({shown}); repeat the original options "
                         "or choose a new directory")
    if m["contents"] != contents:
        diff = sorted(k for k in set(m["contents"]) | set(contents) if m["contents"].get(k) != contents.get(k))
        raise ValueError(f"{where}: it was written with different contents ({', '.join(diff)} differ, e.g. "
                         "--with-reflections or the simulator); repeat the original options or choose a new "
                         "directory")
    if n_items is not None and m["n_items"] is not None and m["n_items"] != n_items:
        raise ValueError(f"{where}: it holds {m['n_items']} items, this run {n_items}")


def _progress(progress, total, desc):
    if not progress:
        return None
    try:
        from tqdm.auto import tqdm
    except ImportError:
        return None
    return tqdm(total=total, desc=desc, unit=" items", dynamic_ncols=True, disable=None)


def _shard_problem(directory: Path, entry: dict, *, hash_it: bool) -> str | None:
    """None if the shard file exists with the listed size (and sha256), else what is wrong."""
    path = directory / entry["file"]
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        return f"shard {entry['file']} listed in {MANIFEST} is missing from {str(directory)!r}"
    except OSError as exc:
        return f"shard {str(path)!r} cannot be read: {exc}"
    if size != entry["bytes"]:
        return (f"shard {str(path)!r} is damaged: {size} bytes where {MANIFEST} lists {entry['bytes']} "
                "(truncated or overwritten?)")
    if hash_it:
        try:
            sha, _ = _sha256(path)
        except OSError as exc:
            return f"shard {str(path)!r} cannot be read: {exc}"
        if sha != entry["sha256"]:
            return f"shard {str(path)!r} is damaged: its sha256 does not match {MANIFEST}"
    return None


# ============================================================== reading
@dataclass
class ShardData:
    """The contents of one shard (the groups that were asked for; others None)."""

    start: int
    stop: int
    ids: list[str] | None = None
    structures: list[Structure] | None = None
    labels: dict | None = None
    reflections: Reflections | None = None
    patterns: np.ndarray | None = None
    axis: np.ndarray | None = None
    axis_name: str | None = None


def _check_header(source: str, name: str, dtype, shape, schema: dict) -> None:
    want_dtype, want_shape = schema[name]
    if dtype.hasobject:
        raise _InvalidFile(f"{source}: field {name!r} holds Python objects; refusing it")
    if dtype != want_dtype:
        raise _InvalidFile(f"{source}: field {name!r} has dtype {dtype}, expected {want_dtype}")
    if len(shape) != len(want_shape) or any(w is not None and s != w for s, w in zip(shape, want_shape)):
        dims = ["n" if w is None else str(w) for w in want_shape]
        raise _InvalidFile(f"{source}: field {name!r} has shape {tuple(shape)}, expected ({', '.join(dims)})")


def _plain_dataset(h5py, group, name: str, source: str):
    link = group.get(name, getlink=True)
    if link is None:
        raise _InvalidFile(f"{source}: missing field {name!r}")
    if not isinstance(link, h5py.HardLink):
        raise _InvalidFile(f"{source}: field {name!r} is a {type(link).__name__}; only plain datasets are read")
    ds = group[name]
    if not isinstance(ds, h5py.Dataset):
        raise _InvalidFile(f"{source}: field {name!r} is a {type(ds).__name__}, not a dataset")
    if ds.shape is None:
        raise _InvalidFile(f"{source}: field {name!r} is an empty (null) dataset")
    if ds.is_virtual or ds.external:
        raise _InvalidFile(f"{source}: field {name!r} refers to data outside this file")
    return ds


def _read_numeric(h5py, group, names, schema, source: str, check_header=None, others=()) -> dict:
    """Plain numeric datasets ``names`` of ``group`` (nothing else but ``others``), checked."""
    members = set(group.keys()) - set(others)
    missing = [n for n in names if n not in members]
    if missing:
        raise _InvalidFile(f"{source}: missing field(s) {', '.join(map(repr, missing))}")
    extra = sorted(members - set(names))
    if extra:
        raise _InvalidFile(f"{source}: unexpected member(s) {', '.join(map(repr, extra))}")
    out = {}
    for name in names:
        ds = _plain_dataset(h5py, group, name, source)
        if check_header is not None:
            check_header(source, name, ds.dtype, ds.shape)
        else:
            _check_header(source, name, ds.dtype, ds.shape, schema)
        nbytes = math.prod(ds.shape) * ds.dtype.itemsize
        _check_size(source, name, nbytes, ds.id.get_storage_size())
        a = np.asarray(ds[()], dtype=ds.dtype)
        if a.shape != ds.shape:
            raise _InvalidFile(f"{source}: field {name!r} read back with shape {a.shape}, expected {ds.shape}")
        a = np.ascontiguousarray(a).view(schema[name][0]) if a.ndim else a.astype(schema[name][0])
        out[name] = a
    return out


def _read_strings(h5py, group, name: str, n: int, source: str) -> list[str]:
    ds = _plain_dataset(h5py, group, name, source)
    info = h5py.check_string_dtype(ds.dtype)
    if info is None or info.length is not None or info.encoding != "utf-8":
        raise _InvalidFile(f"{source}: field {name!r} must hold variable-length UTF-8 strings, has dtype {ds.dtype}")
    if ds.shape != (n,):
        raise _InvalidFile(f"{source}: field {name!r} has shape {ds.shape}, expected ({n},)")
    try:
        values = ds.asstr()[()]
    except UnicodeDecodeError as exc:
        raise _InvalidFile(f"{source}: field {name!r} holds invalid UTF-8 ({exc})") from None
    return [str(v) for v in values]


class ShardedDataset:
    """A sharded data set written by :func:`write_dataset` (or ``xrdflow dataset``).

    path: the data set directory.
    verify: ``True`` (default) hashes every shard now and raises ValueError
        naming every damaged or missing shard; ``"lazy"`` hashes each shard
        the first time it is read; ``False`` only checks that the listed shard
        files exist with the listed sizes.
    allow_incomplete: open a data set whose writing was interrupted (its
        complete shards only); by default that raises ValueError.

    Items are numbered 0..len-1 across shards.  ``structures(k)`` reads shard
    ``k``; iteration yields every Structure in order (label = id); ``ids()``,
    ``labels()``, ``reflections()`` and ``patterns()`` read only the group
    they need from every shard.
    """

    def __init__(self, path, verify: "bool | str" = True, *, allow_incomplete: bool = False):
        if verify not in (True, False, "lazy"):
            raise ValueError(f"verify must be True, False or 'lazy', got {verify!r}")
        _h5py()
        self.path = Path(path)
        m = _read_manifest(self.path)
        self.manifest = m
        self.complete: bool = m["complete"]
        if not self.complete and not allow_incomplete:
            expected = "?" if m["n_items"] is None else math.ceil(m["n_items"] / m["shard_size"])
            raise ValueError(f"the data set {str(self.path)!r} is incomplete: {len(m['shards'])} of {expected} "
                             "shards written (an interrupted import or generation?); finish it by running the "
                             "same command again with --resume")
        self.shard_size: int = m["shard_size"]
        self.params: dict = m["params"]
        self.contents: dict = m["contents"]
        self._entries: list[dict] = m["shards"]
        self._starts = np.array([0] + list(np.cumsum([e["n_items"] for e in self._entries])), dtype=np.int64)
        self._verified = [False] * len(self._entries)
        self._cache: tuple[int, ShardData] | None = None
        self.verify_mode = verify
        self.checksums_verified = False
        problems = [p for e in self._entries if (p := _shard_problem(self.path, e, hash_it=False))]
        if problems:
            raise ValueError(_problems_message(self.path, problems))
        if verify is True:
            self.verify()

    # ---------------------------------------------------------- basics
    def __len__(self) -> int:
        return int(self._starts[-1])

    @property
    def n_shards(self) -> int:
        return len(self._entries)

    @property
    def shards(self) -> list[dict]:
        """Manifest entries of the shards (file, start, stop, n_items, sha256, bytes)."""
        return [dict(e) for e in self._entries]

    def shard_path(self, k: int) -> Path:
        return self.path / self._entries[k]["file"]

    def __repr__(self) -> str:
        return (f"ShardedDataset({str(self.path)!r}, n_items={len(self)}, n_shards={self.n_shards}, "
                f"reflections={self.contents['reflections']}, patterns={self.contents['patterns']})")

    def verify(self) -> None:
        """Hash every shard; ValueError naming every damaged or missing one."""
        problems = []
        for k, e in enumerate(self._entries):
            p = _shard_problem(self.path, e, hash_it=True)
            if p is None:
                self._verified[k] = True
            else:
                problems.append(p)
        if problems:
            raise ValueError(_problems_message(self.path, problems))
        self.checksums_verified = True

    # ---------------------------------------------------------- reading one shard
    def _check_index(self, k) -> int:
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)):
            raise TypeError(f"shard index must be an integer, got {k!r}")
        if not -self.n_shards <= k < self.n_shards:
            raise IndexError(f"shard index {k} out of range for {self.n_shards} shards")
        return int(k) % self.n_shards

    def read_shard(self, k: int, parts: Iterable[str] = _GROUPS) -> ShardData:
        """Read shard ``k``: the groups in ``parts`` (ids, structures, labels, reflections, patterns)."""
        k = self._check_index(k)
        parts = set(parts)
        unknown = parts - set(_GROUPS)
        if unknown:
            raise ValueError(f"unknown part(s) {sorted(unknown)}; choose from {_GROUPS}")
        e = self._entries[k]
        path = self.shard_path(k)
        if self.verify_mode == "lazy" and not self._verified[k]:
            p = _shard_problem(self.path, e, hash_it=True)
            if p is not None:
                raise ValueError(p)
            self._verified[k] = True
        source = repr(str(path))
        h5py = _h5py()
        try:
            with h5py.File(path, "r") as f:
                return self._read_open_shard(h5py, f, e, parts, source)
        except (_InvalidFile, MemoryError, PermissionError):
            raise
        except ValueError as exc:  # StructureError and friends: name the file
            raise ValueError(f"{source}: {exc}") from exc
        except Exception as exc:  # h5py / OSError on damaged files
            raise ValueError(f"{source}: cannot read this shard (truncated or corrupted?): "
                             f"{type(exc).__name__}: {exc}") from exc

    def _read_open_shard(self, h5py, f, e: dict, parts: set, source: str) -> ShardData:
        v = f.attrs.get(SHARD_VERSION_KEY)
        if v is None or np.asarray(v).shape != () or int(v) != FORMAT_VERSION:
            raise _InvalidFile(f"{source}: not an xrdflow shard of format version {FORMAT_VERSION} "
                               f"({SHARD_VERSION_KEY} = {v!r})")
        start, stop, n = e["start"], e["stop"], e["n_items"]
        for key, want in (("start", start), ("stop", stop), ("n_items", n)):
            got = f.attrs.get(key)
            if got is None or np.asarray(got).shape != () or int(got) != want:
                raise _InvalidFile(f"{source}: attribute {key!r} is {got!r} but {MANIFEST} says {want} "
                                   "(a shard file from another data set?)")
        expected = {"ids", "structures", "labels"}
        if self.contents["reflections"]:
            expected.add("reflections")
        if self.contents["patterns"]:
            expected.add("patterns")
        if set(f.keys()) != expected:
            raise _InvalidFile(f"{source}: holds the groups {sorted(f.keys())}, expected {sorted(expected)}")
        out = ShardData(start=start, stop=stop)
        ids = None
        if "ids" in parts or "structures" in parts:
            ids = _read_strings(h5py, f, "ids", n, source)
            out.ids = ids
        if "structures" in parts:
            out.structures = _read_structures(h5py, f["structures"], ids, source)
        if "labels" in parts:
            g = f["labels"]
            names = list(_LABEL_INTS)
            labels = _read_numeric(h5py, g, names, _LABEL_SCHEMA, source + " labels", others=("laue_class",))
            for name, a in labels.items():
                if a.shape != (n,):
                    raise _InvalidFile(f"{source}: labels/{name} has {len(a)} entries for {n} items")
            if n and (labels["space_group"].min() < 1 or labels["space_group"].max() > 230):
                raise _InvalidFile(f"{source}: labels/space_group holds numbers outside 1..230")
            if n and (labels["crystal_system"].min() < 0 or labels["crystal_system"].max() > 6):
                raise _InvalidFile(f"{source}: labels/crystal_system holds indices outside 0..6")
            if n and labels["extinction_group"].min() < 0:
                raise _InvalidFile(f"{source}: labels/extinction_group holds negative ids")
            from .labels import LAUE_CLASSES

            laue = _read_strings(h5py, g, "laue_class", n, source + " labels")
            bad = [c for c in laue if c not in LAUE_CLASSES]
            if bad:
                raise _InvalidFile(f"{source}: labels/laue_class holds {bad[0]!r}, not a Laue class")
            labels["laue_class"] = np.array(laue, dtype=str) if laue else np.zeros(0, dtype="<U5")
            out.labels = labels
        if "reflections" in parts and self.contents["reflections"]:
            names = _reflection_fields()
            arrays = _read_numeric(h5py, f["reflections"], names, _REFLECTION_SCHEMA, source + " reflections",
                                   check_header=_check_reflection_header)
            _check_reflection_arrays(arrays, source + " reflections")
            if len(arrays["offsets"]) - 1 != n:
                raise _InvalidFile(f"{source}: reflections describe {len(arrays['offsets']) - 1} structures "
                                   f"for {n} items")
            for a in arrays.values():
                a.flags.writeable = False
            out.reflections = Reflections(**arrays)
        if "patterns" in parts and self.contents["patterns"]:
            g = f["patterns"]
            arrays = _read_numeric(h5py, g, ["intensity", "axis"], _PATTERN_SCHEMA, source + " patterns")
            y, axis = arrays["intensity"], arrays["axis"]
            if y.shape != (n, len(axis)):
                raise _InvalidFile(f"{source}: patterns/intensity has shape {y.shape}, expected ({n}, {len(axis)})")
            if not np.all(np.isfinite(axis)) or not np.all(np.isfinite(y)):
                raise _InvalidFile(f"{source}: patterns hold non-finite values")
            name = g.attrs.get("axis_name", "axis")
            out.patterns, out.axis = y, axis
            out.axis_name = name.decode() if isinstance(name, bytes) else str(name)
        return out

    def _shard(self, k: int) -> ShardData:
        if self._cache is None or self._cache[0] != k:
            self._cache = (k, self.read_shard(k, ("ids", "structures")))
        return self._cache[1]

    # ---------------------------------------------------------- items
    def structures(self, shard_index: int | None = None) -> list[Structure]:
        """Structures of shard ``shard_index`` (all shards when None), labelled with their ids."""
        if shard_index is None:
            return [s for k in range(self.n_shards) for s in self._shard(k).structures]
        return list(self._shard(self._check_index(shard_index)).structures)

    def __iter__(self) -> Iterator[Structure]:
        for k in range(self.n_shards):
            yield from self._shard(k).structures

    def items(self) -> Iterator[tuple[str, Structure]]:
        """(id, Structure) for every item in order."""
        for k in range(self.n_shards):
            d = self._shard(k)
            yield from zip(d.ids, d.structures)

    def __getitem__(self, i: int) -> Structure:
        if isinstance(i, bool) or not isinstance(i, (int, np.integer)):
            raise TypeError(f"item index must be an integer, got {i!r}")
        n = len(self)
        if not -n <= i < n:
            raise IndexError(f"item index {i} out of range for {n} items")
        i = int(i) % n
        k = int(np.searchsorted(self._starts, i, side="right") - 1)
        return self._shard(k).structures[i - int(self._starts[k])]

    def ids(self) -> list[str]:
        return [i for k in range(self.n_shards) for i in self.read_shard(k, ("ids",)).ids]

    def labels(self) -> dict[str, np.ndarray]:
        """``{"space_group", "crystal_system", "extinction_group": int32 arrays,
        "laue_class": str array}`` over all items."""
        parts = [self.read_shard(k, ("labels",)).labels for k in range(self.n_shards)]
        out = {}
        for name in _LABEL_INTS:
            out[name] = np.concatenate([p[name] for p in parts]) if parts else np.zeros(0, dtype=np.int32)
        out["laue_class"] = np.concatenate([p["laue_class"] for p in parts]) if parts else np.zeros(0, dtype="<U5")
        return out

    def reflections(self) -> Reflections:
        """The cached reflections of all items (one Reflections, in item order)."""
        if not self.contents["reflections"]:
            raise ValueError(f"the data set {str(self.path)!r} was written without reflections "
                             "(--with-reflections)")
        if not self.n_shards:
            raise ValueError(f"the data set {str(self.path)!r} is empty")
        return Reflections.concatenate([self.read_shard(k, ("reflections",)).reflections
                                        for k in range(self.n_shards)])

    def patterns(self) -> tuple[np.ndarray, np.ndarray]:
        """(Y (n, P) float32, axis (P,)) of all items."""
        if not self.contents["patterns"]:
            raise ValueError(f"the data set {str(self.path)!r} was written without patterns")
        if not self.n_shards:
            raise ValueError(f"the data set {str(self.path)!r} is empty")
        parts = [self.read_shard(k, ("patterns",)) for k in range(self.n_shards)]
        axis = parts[0].axis
        for p in parts[1:]:
            if not np.array_equal(p.axis, axis):
                raise ValueError(f"{str(self.path)!r}: shards hold patterns on different axes")
        return np.concatenate([p.patterns for p in parts]), axis

    # ---------------------------------------------------------- summary
    def info(self, top: int = 10) -> dict:
        """Everything ``xrdflow dataset info`` shows, JSON-able."""
        from .labels import CRYSTAL_SYSTEMS, space_group_symbol

        labels = self.labels()
        with quiet_spglib():
            symbols = {g: space_group_symbol(g) for g in set(int(g) for g in labels["space_group"])}
        sg_counts = Counter(int(g) for g in labels["space_group"])
        cs_counts = Counter(int(c) for c in labels["crystal_system"])
        ids = self.ids()
        m = self.manifest
        expected = None if m["n_items"] is None else math.ceil(m["n_items"] / m["shard_size"])
        return {
            "path": str(self.path),
            "format_version": m["format_version"],
            "created_with": m.get("created_with"),
            "complete": self.complete,
            "n_items": len(self),
            "n_items_planned": m["n_items"],
            "n_shards": self.n_shards,
            "n_shards_planned": expected,
            "shard_size": self.shard_size,
            "bytes": int(sum(e["bytes"] for e in self._entries)),
            "checksums": "ok" if self.checksums_verified else "not verified",
            "unique_ids": len(set(ids)),
            "params": self.params,
            "contents": self.contents,
            "space_groups": [{"number": g, "symbol": symbols[g], "count": c}
                             for g, c in sorted(sg_counts.items(), key=lambda t: (-t[1], t[0]))[:top]],
            "n_space_groups": len(sg_counts),
            "crystal_systems": {name: cs_counts.get(i, 0) for i, name in enumerate(CRYSTAL_SYSTEMS)},
            "shards": self.shards,
        }


def _read_structures(h5py, g, ids: list[str], source: str) -> list[Structure]:
    names = list(_STRUCTURE_SCHEMA)
    a = _read_numeric(h5py, g, names, _STRUCTURE_SCHEMA, source + " structures")
    n = len(ids)
    offsets = a["atom_offsets"]
    if len(offsets) != n + 1:
        raise _InvalidFile(f"{source}: structures/atom_offsets has {len(offsets)} entries for {n} items")
    n_atoms = len(a["frac"])
    _check_offsets(source, "structures/atom_offsets", offsets, n_atoms, "atoms")
    if len(a["lattice"]) != n:
        raise _InvalidFile(f"{source}: structures/lattice has {len(a['lattice'])} rows for {n} items")
    for name in ("numbers", "charges", "occupancy", "b_iso"):
        if len(a[name]) != n_atoms:
            raise _InvalidFile(f"{source}: structures/{name} has {len(a[name])} rows but frac has {n_atoms}")
    out = []
    for i in range(n):
        lo, hi = int(offsets[i]), int(offsets[i + 1])
        try:
            out.append(Structure(a["lattice"][i], a["frac"][lo:hi], a["numbers"][lo:hi], a["charges"][lo:hi],
                                 a["occupancy"][lo:hi], a["b_iso"][lo:hi], label=ids[i]))
        except ValueError as exc:
            raise _InvalidFile(f"{source}: item {ids[i]!r} is not a valid structure: {exc}") from None
    return out


def _problems_message(directory: Path, problems: list[str]) -> str:
    if len(problems) == 1:
        return problems[0]
    return (f"{len(problems)} shards of {str(directory)!r} are damaged or missing: " + "; ".join(problems[:5])
            + (f"; and {len(problems) - 5} more" if len(problems) > 5 else ""))
