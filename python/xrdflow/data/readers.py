"""Read many crystal structures at once: CSV tables of CIFs, CIF folders, extxyz.

:func:`load_structures` turns a data set on disk into :class:`xrdflow.Structure`
objects, in parallel, without losing track of the entries it could not read::

    from xrdflow.data.readers import load_structures, bundled_dataset

    res = load_structures("mp20_biternary_val.csv.gz")     # or a folder, a .cif, an .xyz
    res.ids[0], res.structures[0]                          # 'mp-865981', Structure(...)
    res.columns["spacegroup.number"][0]                    # '225' (other CSV columns, as text)
    res.failures                                           # [(id, reason), ...]
    print(res.summary())

    train = bundled_dataset("train")                       # the MP-20 subset inside the package

Sources (chosen from the path):

* **CSV table** (``.csv`` or ``.csv.gz``; gzip is detected from the content)
  with a ``cif`` column holding CIF text, the layout of the MP-20 / CDVAE
  benchmark files.  Ids come from the ``material_id`` column when there is
  one, else from the first column with no name (a pandas index), else they
  are the 0-based row numbers.  Every other column is kept, as text, in
  :attr:`LoadResult.columns`, aligned with the loaded structures.
* **Folder** of CIF files (``*.cif`` and ``*.cif.gz``, not recursive, in
  sorted name order).  Ids are the file names without the extension; a file
  with several data blocks that hold atoms gives one structure per block,
  with ids ``stem:block``.
* **One CIF file**: ids as for a file in a folder.
* **extxyz** (``.xyz``, ``.extxyz``, optionally compressed) through ASE
  (``ase.io.iread``), when ASE is installed; ids are the frame numbers
  ``'0'``, ``'1'``, ...

Every structure's :attr:`~xrdflow.Structure.label` is its id.

Failures
--------
An entry that cannot be turned into a Structure (malformed or empty CIF,
invalid cell, unknown element, a short CSV row, ...) is never dropped
silently: it goes to :attr:`LoadResult.failures` as ``(id, reason)``, the
rest of the data set is still loaded, and one :class:`RuntimeWarning` gives
the count.  Warnings raised while parsing an entry (e.g. zero-occupancy sites
dropped) are collected in :attr:`LoadResult.warnings` the same way, so the
outcome does not depend on whether the entry was parsed in this process or
in a worker.

Parallelism
-----------
Entries are read lazily from the source and sent in chunks of
``CHUNK_SIZE`` to a :class:`concurrent.futures.ProcessPoolExecutor`, with at
most two chunks per worker in flight, so memory stays bounded for large
files; results come back in source order whatever the number of workers.
Workers send their structures back as a few concatenated arrays per chunk
(the fields Structure's constructor validated in the worker), which this
process turns into Structures without validating them again, so the work
left in this process (reading the file, a few microseconds per structure)
stays well below the parsing.  ``workers=1`` parses in this process.
``workers=None`` uses one worker per available CPU
(:func:`os.sched_getaffinity` where the platform has it, else
:func:`os.cpu_count`), but parses in this process when the source has fewer
than ``AUTO_SERIAL_BELOW`` entries or fewer than 3 CPUs are available: a P1
CIF of MP-20 parses in about 0.1 ms (7,140 rows in 0.85 s on one core) and a
pool can take a second or more to start, so it only pays off for large
inputs.

Workers are started with the ``forkserver`` method where the platform has
it, else ``spawn``, never ``fork``: forking a process that runs threads
(numpy's BLAS pool, PyTorch, the xrdflow core's thread pool) can deadlock,
which is why Python 3.14 stopped using fork by default.  Each worker then
imports xrdflow.  As with any spawn-based multiprocessing, a script that calls
:func:`load_structures` with workers must guard its top level with
``if __name__ == "__main__":``.
"""
from __future__ import annotations

import collections
import csv
import gzip
import itertools
import json
import multiprocessing
import os
import re
import warnings
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..structure import Structure

__all__ = [
    "LoadResult",
    "load_structures",
    "bundled_path",
    "bundled_splits",
    "bundled_dataset",
]

#: Entries per task sent to a worker process.
CHUNK_SIZE = 128
#: With ``workers=None``, sources with fewer entries than this are parsed in-process.
AUTO_SERIAL_BELOW = 10_000

_CIF_SUFFIXES = (".cif", ".cif.gz")
_CSV_SUFFIXES = (".csv", ".csv.gz")
_XYZ_SUFFIXES = tuple(base + comp for base in (".xyz", ".extxyz")
                      for comp in ("", ".gz", ".bz2", ".xz"))
_UNNAMED_RE = re.compile(r"^(?:|Unnamed: \d+)$")  # '' (csv) or 'Unnamed: 0' (pandas re-export)

_BUNDLED_DIR = Path(__file__).resolve().parent / "bundled"
_BUNDLED_CSV = "mp20_subset.csv.gz"
_BUNDLED_SPLITS = "splits.json"
SPLITS = ("train", "val", "test")


# ----------------------------------------------------------------------------
# result
# ----------------------------------------------------------------------------


@dataclass(frozen=True, eq=False, repr=False)
class LoadResult:
    """Structures read from one source, with the entries that failed.

    ids: one id per loaded structure (also each structure's label).
    structures: the loaded :class:`xrdflow.Structure` objects, in source order.
    failures: ``(id, reason)`` for every entry that could not be read.
    columns: other CSV columns, ``{name: [value per loaded structure]}`` as
        text, aligned with ``ids`` (empty for CIF and extxyz sources).
    warnings: ``(id, message)`` for warnings raised while parsing entries that
        were loaded (e.g. zero-occupancy sites dropped).
    source: the path that was read.
    """

    ids: list[str]
    structures: list[Structure]
    failures: list[tuple[str, str]] = field(default_factory=list)
    columns: dict[str, list[str]] = field(default_factory=dict)
    warnings: list[tuple[str, str]] = field(default_factory=list)
    source: str = ""

    def __len__(self) -> int:
        return len(self.structures)

    def summary(self, max_failures: int = 5) -> str:
        """Counts, and the first ``max_failures`` failures with their reasons."""
        total = len(self.structures) + len(self.failures)
        where = f" from {self.source}" if self.source else ""
        lines = [f"loaded {len(self.structures)} of {total} structures{where}; "
                 f"{len(self.failures)} failed"
                 + (f", {len(self.warnings)} with warnings" if self.warnings else "")]
        for ident, reason in self.failures[:max_failures]:
            lines.append(f"  {ident}: {reason}")
        if len(self.failures) > max_failures:
            lines.append(f"  ... and {len(self.failures) - max_failures} more (see .failures)")
        return "\n".join(lines)

    def __repr__(self) -> str:
        return (f"LoadResult(source={self.source!r}, structures={len(self.structures)}, "
                f"failures={len(self.failures)}, columns={list(self.columns)})")


# ----------------------------------------------------------------------------
# parsing one chunk (runs in workers; must stay importable and picklable)
# ----------------------------------------------------------------------------


def _reason(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _relabel(s: Structure, label: str) -> Structure:
    if s.label == label:
        return s
    return Structure(s.lattice, s.frac, s.numbers, s.charges, s.occupancy, s.b_iso, label)


def _parse_cif_text(ident, text):
    if not isinstance(text, str) or not text.strip():
        raise ValueError("empty cif field")
    if "\n" not in text:
        text += "\n"  # always CIF text, never mistaken for a file name
    return [(ident, Structure.from_cif(text, label=ident))]


def _parse_cif_file(stem, path):
    """[(id, Structure)] for one file; per-block failures as (id, None, reason)."""
    try:
        structures = Structure.all_from_cif(path)
    except Exception as exc:  # noqa: BLE001 - reported per block below, or for the file
        # Several blocks with atoms: find which ones fail, keep the others.
        import gemmi

        try:
            doc = gemmi.cif.read(path)
        except Exception:  # noqa: BLE001 - the file itself is unreadable
            raise exc from None
        blocks = [b for b in doc if b.find_values("_atom_site_fract_x")
                  or b.find_values("_atom_site.fract_x")]
        if len(blocks) <= 1:
            raise
        out = []
        for b in blocks:
            ident = f"{stem}:{b.name}"
            try:
                out.append((ident, Structure.from_cif(b.as_string(), label=ident)))
            except Exception as block_exc:  # noqa: BLE001
                out.append((ident, None, _reason(block_exc)))
        return out
    if len(structures) == 1:
        return [(stem, _relabel(structures[0], stem))]
    return [(f"{stem}:{s.label}", _relabel(s, f"{stem}:{s.label}")) for s in structures]


def _parse_atoms(ident, atoms):
    return [(ident, Structure.from_ase(atoms, label=ident))]


_PARSERS = {"cif_text": _parse_cif_text, "cif_file": _parse_cif_file, "ase": _parse_atoms}

# Structure's array fields, in the order Structure._from_validated takes them.
_ARRAY_FIELDS = ("lattice", "frac", "numbers", "charges", "occupancy", "b_iso")


def _parse_chunk(kind, items, pack=False):
    """Parse a chunk of (id, payload) items.

    Returns ``(records, packed)``: for each item a list of
    ``(id, Structure | int | None, reason | None, [warning messages])``.  With
    ``pack=False`` successes carry the Structure itself; with ``pack=True``
    (worker processes) they carry their index into ``packed``, the fields of
    every structure of the chunk concatenated into a few arrays, which pickle
    far faster than thousands of small objects.
    """
    parse = _PARSERS[kind]
    out, done = [], []
    for ident, payload in items:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                if isinstance(payload, _Failed):
                    raise ValueError(payload.reason)
                records = parse(ident, payload)
            except Exception as exc:  # noqa: BLE001 - every failure is reported, none raised
                records = [(ident, None, _reason(exc))]
        messages = [str(w.message) for w in caught]
        item = []
        for r in records:
            structure = r[1]
            if structure is not None and pack:
                done.append(structure)
                structure = len(done) - 1
            item.append((r[0], structure, r[2] if len(r) > 2 else None, messages))
        out.append(item)
    if not pack:
        return out, None
    packed = {"n_atoms": np.array([s.n_atoms for s in done], dtype=np.int64),
              "label": [s.label for s in done]}
    for name in _ARRAY_FIELDS:
        arrays = [getattr(s, name) for s in done]
        packed[name] = (np.stack(arrays) if name == "lattice" else np.concatenate(arrays)) \
            if arrays else np.empty(0)
    return out, packed


def _unpack(packed):
    """Structures from ``_parse_chunk(..., pack=True)``'s arrays, without re-validating.

    The fields were validated by Structure's constructor in the worker and are
    shipped unchanged, so Structure._from_validated rebuilds them as read-only
    views; a returned structure costs microseconds instead of a full validation.
    """
    n_atoms = packed["n_atoms"]
    starts = np.concatenate(([0], np.cumsum(n_atoms)))
    out = []
    for k, label in enumerate(packed["label"]):
        lo, hi = int(starts[k]), int(starts[k + 1])
        values = [packed["lattice"][k]] + [packed[name][lo:hi] for name in _ARRAY_FIELDS[1:]]
        out.append(Structure._from_validated(*values, label))
    return out


@dataclass(frozen=True)
class _Failed:
    """Payload for an entry already known to be broken (e.g. a short CSV row)."""

    reason: str


# ----------------------------------------------------------------------------
# sources: each yields (id, payload, extra column values)
# ----------------------------------------------------------------------------


def _strip_suffix(name: str, suffixes) -> str:
    lower = name.lower()
    for suffix in sorted(suffixes, key=len, reverse=True):
        if lower.endswith(suffix):
            return name[: -len(suffix)]
    return name


def _open_text(path: Path):
    with open(path, "rb") as fh:
        magic = fh.read(2)
    if magic == b"\x1f\x8b":
        return gzip.open(path, "rt", encoding="utf-8", newline="")
    return open(path, encoding="utf-8", newline="")


def _csv_source(fh, path: Path, keep):
    """(other column names, generator of entries) for an open CSV with a ``cif`` column."""
    # A CIF in one field easily exceeds csv's default 128 kB field limit.
    limit = 2**31 - 1
    if csv.field_size_limit() < limit:
        csv.field_size_limit(limit)
    reader = csv.reader(fh)
    header = next(reader, None)
    if header is None:
        raise ValueError(f"{path} is empty: expected a CSV header with a 'cif' column")
    if "cif" not in header:
        found = ", ".join(repr(h) for h in header)
        raise ValueError(
            f"{path} has no 'cif' column (columns found: {found}); the column "
            "with the CIF text must be named 'cif'"
        )
    cif_col = header.index("cif")
    if "material_id" in header:
        id_col = header.index("material_id")
    else:
        id_col = next((i for i, h in enumerate(header) if _UNNAMED_RE.match(h)), None)
    extra_cols = [i for i in range(len(header)) if i not in (cif_col, id_col)]

    def entries():
        for row_number, row in enumerate(reader):
            if not row:
                continue  # blank line
            if id_col is None:
                ident = str(row_number)
            elif id_col < len(row):
                ident = row[id_col]
            else:
                ident = f"row {row_number}"
            if keep is not None and ident not in keep:
                continue
            extras = tuple(row[i] if i < len(row) else "" for i in extra_cols)
            if len(row) != len(header):
                payload = _Failed(f"row {row_number} has {len(row)} fields, the header "
                                  f"has {len(header)}")
            else:
                payload = row[cif_col]
            yield ident, payload, extras

    return [header[i] for i in extra_cols], entries()


def _cif_files(folder: Path) -> list[Path]:
    files = sorted(p for p in folder.iterdir()
                   if p.is_file() and p.name.lower().endswith(_CIF_SUFFIXES))
    if not files:
        raise ValueError(f"folder {folder} holds no CIF files (*.cif or *.cif.gz)")
    return files


def _file_entries(files):
    for p in files:
        yield _strip_suffix(p.name, _CIF_SUFFIXES), os.fspath(p), ()


def _ase_entries(path: Path):
    try:
        import ase.io
    except ImportError:
        raise ImportError(f"reading {path} needs ASE: pip install ase") from None

    def entries():
        count = 0
        try:
            for atoms in ase.io.iread(os.fspath(path), index=":", format="extxyz"):
                yield str(count), atoms, ()
                count += 1
        except Exception as exc:  # noqa: BLE001 - a malformed frame ends the file
            # iread cannot resume after a broken frame: report it and stop there.
            yield str(count), _Failed(f"could not read frame {count} (reading stopped "
                                      f"there): {_reason(exc)}"), ()

    return entries()


# ----------------------------------------------------------------------------
# driver
# ----------------------------------------------------------------------------


def _chunks(entries, size):
    it = iter(entries)
    while True:
        chunk = list(itertools.islice(it, size))
        if not chunk:
            return
        yield chunk


def _available_cpus():
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def _mp_context():
    """forkserver where the platform has it, else spawn (never fork: see the module docs)."""
    methods = multiprocessing.get_all_start_methods()
    return multiprocessing.get_context("forkserver" if "forkserver" in methods else "spawn")


def _run_chunks(kind, chunks, n_workers):
    """Yield (chunk, records) in source order; a process pool when n_workers > 1."""
    if n_workers <= 1:
        for chunk in chunks:
            yield chunk, _parse_chunk(kind, [(e[0], e[1]) for e in chunk])[0]
        return

    def unpacked(future):
        records, packed = future.result()
        structures = _unpack(packed)
        return [[(r[0], r[1] if r[1] is None else structures[r[1]], r[2], r[3]) for r in item]
                for item in records]

    executor = ProcessPoolExecutor(max_workers=n_workers, mp_context=_mp_context())
    pending = collections.deque()
    try:
        for chunk in chunks:
            pending.append((chunk, executor.submit(_parse_chunk, kind,
                                                   [(e[0], e[1]) for e in chunk], True)))
            if len(pending) >= 2 * n_workers:
                chunk_done, future = pending.popleft()
                yield chunk_done, unpacked(future)
        while pending:
            chunk_done, future = pending.popleft()
            yield chunk_done, unpacked(future)
    finally:
        executor.shutdown(wait=True, cancel_futures=True)


def _progress_bar(progress, total, desc):
    if not progress:
        return None
    try:
        from tqdm.auto import tqdm
    except ImportError:  # the bar is cosmetic
        return None
    return tqdm(total=total, desc=desc, unit=" structures", dynamic_ncols=True)


def _load(kind, entries, *, source, extra_names, workers, progress, limit, total):
    if limit is not None:
        entries = itertools.islice(entries, limit)
        total = limit if total is None else min(total, limit)
    entries = iter(entries)
    if workers is None:
        head = list(itertools.islice(entries, AUTO_SERIAL_BELOW))
        n_cpus = _available_cpus()
        n_workers = n_cpus if len(head) == AUTO_SERIAL_BELOW and n_cpus >= 3 else 1
        entries = itertools.chain(head, entries)
    else:
        n_workers = workers

    ids, structures, failures, notes = [], [], [], []
    columns = {name: [] for name in extra_names}
    column_lists = [columns[name] for name in extra_names]
    bar = _progress_bar(progress, total, Path(source).name)
    try:
        done = False
        for chunk, parsed in _run_chunks(kind, _chunks(entries, CHUNK_SIZE), n_workers):
            for entry, records in zip(chunk, parsed):
                for ident, structure, reason, messages in records:
                    if limit is not None and len(ids) + len(failures) >= limit:
                        done = True
                        break
                    if structure is None:
                        failures.append((ident, reason))
                        continue
                    ids.append(ident)
                    structures.append(structure)
                    for values, value in zip(column_lists, entry[2]):
                        values.append(value)
                    notes.extend((ident, m) for m in messages)
                if done:
                    break
            if bar is not None:
                bar.update(len(chunk))
            if done:
                break
    finally:
        if bar is not None:
            bar.close()
    result = LoadResult(ids, structures, failures, columns, notes, source)
    if failures:
        first = "; ".join(f"{i}: {r}" for i, r in failures[:3])
        warnings.warn(
            f"{len(failures)} of {len(structures) + len(failures)} entries of {source} "
            f"could not be read and were skipped (see LoadResult.failures), e.g. {first}",
            RuntimeWarning,
            stacklevel=4,
        )
    return result


def load_structures(path, *, workers=None, progress=True, limit=None) -> LoadResult:
    """Read every structure of a CSV table, CIF folder, CIF file or extxyz file.

    path: a ``.csv``/``.csv.gz`` table with a ``cif`` column, a folder of
        ``*.cif``/``*.cif.gz`` files, one CIF file, or an ``.xyz``/``.extxyz``
        file (needs ASE).  See the module docs for how ids are chosen.
    workers: worker processes; 1 parses in this process; None uses one per
        available CPU for large sources and this process for small ones.
        The result is the same, in the same order, for any value.
    progress: show a tqdm progress bar.
    limit: read at most this many entries (CSV rows, files or frames); the
        result holds at most ``limit`` structures plus failures (a CIF file
        with several blocks counts one per block).

    Entries that fail are listed in :attr:`LoadResult.failures` with the
    reason, and a single RuntimeWarning gives their count.  Raises
    FileNotFoundError for a missing path and ValueError for a CSV without a
    ``cif`` column, an empty folder or an unrecognised file type.
    """
    return _load_structures(path, workers=workers, progress=progress, limit=limit)


def _load_structures(path, *, workers, progress, limit, keep=None):
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"path must be a str or os.PathLike, not {type(path).__name__}")
    if workers is not None and (isinstance(workers, bool) or not isinstance(workers, int)
                                or workers < 1):
        raise ValueError(f"workers must be a positive integer or None, not {workers!r}")
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int)
                              or limit < 0):
        raise ValueError(f"limit must be a non-negative integer or None, not {limit!r}")
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no such file or folder: {os.fspath(path)!r}")
    source = os.fspath(path)
    common = dict(source=source, workers=workers, progress=progress, limit=limit)
    name = path.name.lower()
    if path.is_dir():
        files = _cif_files(path)
        return _load("cif_file", _file_entries(files), extra_names=[], total=len(files),
                     **common)
    if name.endswith(_CSV_SUFFIXES):
        with _open_text(path) as fh:
            extra_names, entries = _csv_source(fh, path, keep)
            return _load("cif_text", entries, extra_names=extra_names,
                         total=None if keep is None else len(keep), **common)
    if name.endswith(_CIF_SUFFIXES):
        return _load("cif_file", _file_entries([path]), extra_names=[], total=1, **common)
    if name.endswith(_XYZ_SUFFIXES):
        return _load("ase", _ase_entries(path), extra_names=[], total=None, **common)
    raise ValueError(
        f"cannot tell the format of {source!r}: expected a folder of CIF files, "
        f"a CSV table ({', '.join(_CSV_SUFFIXES)}) with a 'cif' column, a CIF file "
        f"({', '.join(_CIF_SUFFIXES)}) or an extxyz file (.xyz, .extxyz)"
    )


# ----------------------------------------------------------------------------
# bundled data
# ----------------------------------------------------------------------------


def bundled_path() -> Path:
    """Path of the MP-20 subset shipped inside the package (``mp20_subset.csv.gz``).

    About 3000 binary and ternary Materials Project structures (CC BY 4.0) from
    the MP-20 benchmark, with columns material_id, pretty_formula,
    spacegroup.number and cif; see ``bundled/README.md`` for the source,
    licence and how it was made (``scripts/make_bundled_dataset.py``).
    """
    return _BUNDLED_DIR / _BUNDLED_CSV


def bundled_splits() -> dict[str, list[str]]:
    """The fixed split of the bundled data: ``{"train": [ids], "val": [...], "test": [...]}``.

    train and val come from MP-20's validation split, test only from MP-20's
    test split; sizes 2400 / 300 / 300 (see ``bundled/README.md``).
    """
    with open(_BUNDLED_DIR / _BUNDLED_SPLITS, encoding="utf-8") as fh:
        data = json.load(fh)
    return {name: list(data[name]) for name in SPLITS}


def bundled_dataset(split=None, *, workers=None, progress=False, limit=None) -> LoadResult:
    """The bundled MP-20 subset as a :class:`LoadResult` (offline, no download).

    split: None for all structures, or "train", "val" or "test" (the fixed
        split of :func:`bundled_splits`).
    workers, progress, limit: as for :func:`load_structures`.
    """
    if split is not None and split not in SPLITS:
        raise ValueError(f"split must be None or one of {SPLITS}, not {split!r}")
    keep = None if split is None else set(bundled_splits()[split])
    return _load_structures(bundled_path(), workers=workers, progress=progress, limit=limit,
                            keep=keep)
