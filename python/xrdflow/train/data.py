"""Training data: load, de-duplicate, refuse leakage, cache reflections and graphs.

:func:`prepare_data` turns the ``data`` section of a
:class:`~xrdflow.train.TrainConfig` into :class:`PreparedData`:

1. read every ``data.train`` source (``bundled:SPLIT``, CSV(.gz), CIF folder or
   file, extxyz, ``xrdflow dataset`` directory) into one pool; keep the first
   ``max_structures``;
2. ``dedup``: keep one structure of each duplicate group of the pool
   (:func:`xrdflow.data.dedup.find_duplicates`, ids included);
3. ``remove_overlaps``: drop pool and validation structures that duplicate a
   ``leakage_against`` structure (by id or by structure);
4. validation: ``data.val`` sources (minus structures duplicating a training
   one when ``dedup``), plus ``holdout_val`` structures moved out of the pool
   (seeded by ``data.holdout_seed``, by default ``run.seed``), capped at ``max_val_structures``;
5. :func:`xrdflow.data.dedup.check_no_leakage` of the training set against
   every ``leakage_against`` set: a ValueError naming the leaking test
   structures refuses the run;
6. reflections (:meth:`xrdflow.Simulator.reflections`) and crystal graphs
   (:func:`xrdflow.models.build_graphs`) of both sets.

With ``data.cache`` the result is written under ``OUT_DIR/cache``
(``Reflections.save`` .npz files, graph .npz files, ``manifest.json`` with
the ids, counts, sha256 of every file and a key hashing the sources' content,
the data settings, the simulator and the graph settings; the manifest is
written last, atomically).  A later run with the same key (a resumed run)
reads the cache instead, after checking every sha256 and the files
themselves (``Reflections.load`` validates its file); anything that does
not match is recomputed.
"""
from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .._fileio import sha256_file
from .config import TrainConfig, atomic_write_bytes, config_to_dict

__all__ = ["PreparedData", "prepare_data", "read_source", "read_sources", "source_fingerprint",
           "sources_fingerprint", "sha256_file", "graph_settings", "holdout_seed", "validation_distractors",
           "data_key_settings", "CACHE_VERSION"]

CACHE_VERSION = 2  # 2: graphs carry the lattice descriptor (lattice_k in the key)
BUNDLED_PREFIX = "bundled:"


class SplitSizes:
    """``n_train`` / ``n_val`` of a prepared-data dataclass with ``train_ids`` and ``val_ids``."""

    @property
    def n_train(self) -> int:
        return len(self.train_ids)

    @property
    def n_val(self) -> int:
        return len(self.val_ids)


@dataclass
class PreparedData(SplitSizes):
    train_ids: list
    train_reflections: object      # xrdflow.Reflections
    train_graphs: list             # CrystalGraph per structure, same order
    val_ids: list
    val_reflections: object | None
    val_graphs: list
    report: dict = field(default_factory=dict)
    from_cache: bool = False


# ------------------------------------------------------------------ sources
def read_source(spec: str, *, progress: bool = False) -> tuple[list, list]:
    """``(ids, structures)`` of one source (see the module docs for what a source can be)."""
    from ..data import bundled_dataset, load_structures
    from ..data.shards import ShardedDataset, is_dataset

    spec = os.fspath(spec)
    if spec.startswith(BUNDLED_PREFIX):
        split = spec[len(BUNDLED_PREFIX):]
        if split not in ("train", "val", "test", "all"):
            raise ValueError(f"unknown bundled split {spec!r}; use bundled:train, bundled:val, bundled:test or "
                             "bundled:all")
        res = bundled_dataset(None if split == "all" else split, progress=progress)
        return list(res.ids), list(res.structures)
    path = Path(spec)
    if not path.exists():
        raise FileNotFoundError(f"data source {spec!r} does not exist (relative paths are taken from the current "
                                f"directory {os.getcwd()!r})")
    if path.is_dir() and is_dataset(path):
        ds = ShardedDataset(path)
        items = list(ds.items())
        return [i for i, _ in items], [s for _, s in items]
    res = load_structures(path, progress=progress)
    if len(res) == 0:
        raise ValueError(f"no structure could be read from {spec!r}:\n{res.summary()}")
    return list(res.ids), list(res.structures)




def source_fingerprint(spec: str) -> str:
    """Changes when the source's content changes (files hashed; CIF folders by name, size and mtime)."""
    from ..data import bundled_path
    from ..data.shards import is_dataset

    if spec.startswith(BUNDLED_PREFIX):
        return f"{spec}:{sha256_file(bundled_path())}:{sha256_file(bundled_path().parent / 'splits.json')}"
    path = Path(spec)
    if not path.exists():
        raise FileNotFoundError(f"data source {spec!r} does not exist (relative paths are taken from the current "
                                f"directory {os.getcwd()!r})")
    if path.is_file():
        return f"file:{sha256_file(path)}"
    if is_dataset(path):
        return f"dataset:{sha256_file(path / 'manifest.json')}"
    h = hashlib.sha256()
    for p in sorted(path.rglob("*")):
        if p.is_file():
            st = p.stat()
            h.update(f"{p.relative_to(path)}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return f"folder:{h.hexdigest()}"


def sources_fingerprint(data_cfg) -> dict:
    """``{spec: source_fingerprint(spec)}`` of every source a :class:`DataConfig` reads (train, val, leakage)."""
    return {spec: source_fingerprint(spec)
            for spec in dict.fromkeys(data_cfg.train + data_cfg.val + data_cfg.leakage_against)}


def graph_settings(cfg: TrainConfig) -> dict:
    """cutoff_angstrom, max_neighbors and lattice_k (plane spacings in the lattice descriptor, built
    with symprec LATTICE_SYMPREC) of the crystal encoder's graphs."""
    from ..models.graph import DEFAULT_LATTICE_K, LATTICE_SYMPREC

    crystal = cfg.model.crystal
    return {"cutoff_angstrom": float(getattr(crystal, "cutoff_angstrom", 5.0)),
            "max_neighbors": int(getattr(crystal, "max_neighbors", 16)),
            "lattice_k": int(getattr(crystal, "lattice_k", DEFAULT_LATTICE_K)),
            "lattice_symprec": float(LATTICE_SYMPREC)}


def holdout_seed(cfg) -> int:
    """The seed that picks the held-out validation structures: ``data.holdout_seed``, else ``run.seed``."""
    return cfg.run.seed if cfg.data.holdout_seed is None else cfg.data.holdout_seed


def validation_distractors(cfg, n_train: int, n: int) -> np.ndarray:
    """The sorted indices of the ``n`` training structures that validation adds to its gallery as wrong
    answers (``data.val_distractors``), fixed by the holdout seed."""
    rng = np.random.Generator(np.random.PCG64([holdout_seed(cfg), 0xD157]))
    return np.sort(rng.choice(n_train, n, replace=False))


def data_key_settings(cfg) -> tuple[dict, int]:
    """(data section without ``cache``, ``holdout_seed`` and ``val_distractors``, the effective holdout seed):
    what the prepared data depend on, so a run that only moves the seed into ``data.holdout_seed`` keeps its
    cache key."""
    data = config_to_dict(cfg.data)
    data.pop("cache", None)
    data.pop("holdout_seed", None)
    data.pop("val_distractors", None)   # chosen from the prepared training set, not part of it
    return data, holdout_seed(cfg)


def cache_key(cfg: TrainConfig) -> str:
    from ..data.shards import describe_simulator

    data, seed = data_key_settings(cfg)
    blob = {"version": CACHE_VERSION, "data": data, "seed": seed,
            "sources": sources_fingerprint(cfg.data),
            "simulator": describe_simulator(cfg.make_simulator()), "graphs": graph_settings(cfg)}
    return hashlib.sha256(json.dumps(blob, sort_keys=True).encode()).hexdigest()


# ------------------------------------------------------------------ cleaning
def read_sources(specs, progress: bool = False) -> tuple[list, list]:
    """``(ids, structures)`` of several sources joined in order (:func:`read_source` each)."""
    ids, structs = [], []
    for spec in specs:
        i, s = read_source(spec, progress=progress)
        ids += i
        structs += s
    return ids, structs


def _overlapping(ref_ids, ref_structs, ids, structs, *, progress) -> set:
    """Indices into ``structs`` that duplicate a reference structure (same id, or same structure)."""
    from ..data.dedup import cross_duplicates

    ref_set = set(ref_ids)
    hit = {j for j, i in enumerate(ids) if i in ref_set}
    if ref_structs and structs:
        hit |= {j for _, j in cross_duplicates(ref_structs, structs, progress=progress)}
    return hit


def _select(ids, structs, drop):
    keep = [j for j in range(len(ids)) if j not in drop]
    return [ids[j] for j in keep], [structs[j] for j in keep]


def clean_structures(cfg: TrainConfig, *, progress: bool = False, log=print):
    """Steps 1-5 of the module docs: ``(train_ids, train_structs, val_ids, val_structs, report)``."""
    from ..data.dedup import check_no_leakage, find_duplicates

    d = cfg.data
    report = {}
    ids, structs = read_sources(d.train, progress)
    report["train_read"] = len(ids)
    if d.max_structures is not None:
        ids, structs = ids[:d.max_structures], structs[:d.max_structures]
    if d.dedup:
        rep = find_duplicates(structs, ids=ids, progress=progress)
        report["train_duplicates_removed"] = rep.n_duplicates
        ids, structs = [ids[k] for k in rep.kept], [structs[k] for k in rep.kept]
        log(f"dedup: {rep.n_duplicates} duplicates removed from the training pool, {len(ids)} left")
    tests = [(spec, *read_source(spec, progress=progress)) for spec in d.leakage_against]
    val_ids, val_structs = read_sources(d.val, progress)
    report["val_read"] = len(val_ids)
    if d.remove_overlaps:
        for spec, t_ids, t_structs in tests:
            drop = _overlapping(t_ids, t_structs, ids, structs, progress=progress)
            ids, structs = _select(ids, structs, drop)
            vdrop = _overlapping(t_ids, t_structs, val_ids, val_structs, progress=progress)
            val_ids, val_structs = _select(val_ids, val_structs, vdrop)
            report.setdefault("overlaps_removed", {})[spec] = {"train": len(drop), "val": len(vdrop)}
            log(f"leakage: removed {len(drop)} training and {len(vdrop)} validation structures that duplicate "
                f"{spec}")
    if d.dedup and val_ids:
        vdrop = _overlapping(ids, structs, val_ids, val_structs, progress=progress)
        val_ids, val_structs = _select(val_ids, val_structs, vdrop)
        report["val_duplicates_of_train_removed"] = len(vdrop)
    if d.holdout_val:
        if d.holdout_val >= len(ids) - 1:
            raise ValueError(f"data.holdout_val = {d.holdout_val} leaves fewer than 2 of {len(ids)} training "
                             "structures")
        perm = np.random.Generator(np.random.PCG64([holdout_seed(cfg), 0x5EED])).permutation(len(ids))
        out = set(perm[:d.holdout_val].tolist())
        val_ids += [ids[k] for k in sorted(out)]
        val_structs += [structs[k] for k in sorted(out)]
        ids, structs = _select(ids, structs, out)
    if d.max_val_structures is not None:
        val_ids, val_structs = val_ids[:d.max_val_structures], val_structs[:d.max_val_structures]
    for spec, t_ids, t_structs in tests:
        try:
            check_no_leakage(structs, t_structs, train_ids=ids, test_ids=t_ids, progress=progress)
        except ValueError as err:
            raise ValueError(f"refusing to train: the training set contains structures of {spec} "
                             f"(set data.remove_overlaps: true to drop them): {err}") from None
    if tests:
        log(f"leakage check passed: no structure of {', '.join(s for s, _, _ in tests)} in the training set")
    report["n_train"], report["n_val"] = len(ids), len(val_ids)
    if len(ids) < cfg.optim.batch_size:
        raise ValueError(f"only {len(ids)} training structures, fewer than optim.batch_size = "
                         f"{cfg.optim.batch_size}")
    return ids, structs, val_ids, val_structs, report


# ------------------------------------------------------------------ cache
_FILES = ("train.reflections.npz", "train.graphs.npz", "val.reflections.npz", "val.graphs.npz")


def _load_cache(cache_dir: Path, key: str, settings: dict) -> PreparedData | None:
    from ..models import load_graphs
    from ..reflections import Reflections

    manifest = cache_dir / "manifest.json"
    if not manifest.is_file():
        return None
    try:
        m = json.loads(manifest.read_text(encoding="utf-8"))
        if m.get("key") != key or m.get("version") != CACHE_VERSION:
            return None
        parts = {}
        for split in ("train", "val"):
            ids = m[f"{split}_ids"]
            if not ids:
                parts[split] = (ids, None, [])
                continue
            files = {kind: cache_dir / f"{split}.{kind}.npz" for kind in ("reflections", "graphs")}
            for p in files.values():
                if sha256_file(p) != m["sha256"][p.name]:
                    raise ValueError(f"{p} does not match its sha256 in {manifest}")
            refl = Reflections.load(files["reflections"])
            graphs = load_graphs(files["graphs"])
            if len(refl) != len(ids) or len(graphs) != len(ids):
                raise ValueError(f"{split}: {len(refl)} reflections / {len(graphs)} graphs for {len(ids)} ids")
            for g in graphs[:1] + graphs[-1:]:
                if (g.cutoff_angstrom, g.max_neighbors, g.lattice_k) != (
                        settings["cutoff_angstrom"], settings["max_neighbors"], settings["lattice_k"]):
                    raise ValueError("graph settings differ from the model's")
            parts[split] = (ids, refl, graphs)
        return PreparedData(*parts["train"], *parts["val"], report=m.get("report", {}), from_cache=True)
    except (OSError, ValueError, KeyError, TypeError) as err:
        import warnings

        warnings.warn(f"ignoring the data cache in {cache_dir} ({err}); recomputing", RuntimeWarning, stacklevel=3)
        return None


def _save_cache(cache_dir: Path, key: str, data: PreparedData) -> None:
    from ..models import save_graphs

    cache_dir.mkdir(parents=True, exist_ok=True)
    sha = {}
    for split, refl, graphs in (("train", data.train_reflections, data.train_graphs),
                                ("val", data.val_reflections, data.val_graphs)):
        if refl is None:
            continue
        rp, gp = cache_dir / f"{split}.reflections.npz", cache_dir / f"{split}.graphs.npz"
        refl.save(rp)
        save_graphs(gp, graphs)
        sha[rp.name], sha[gp.name] = sha256_file(rp), sha256_file(gp)
    manifest = {"version": CACHE_VERSION, "key": key, "sha256": sha, "train_ids": data.train_ids,
                "val_ids": data.val_ids, "report": data.report}
    atomic_write_bytes(cache_dir / "manifest.json", json.dumps(manifest).encode("utf-8"))


def _graph_workers(n: int) -> int | None:
    """Processes for build_graphs: one per available core for large sets (~1-20 ms per graph)."""
    if n < 4000:
        return None
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        cores = os.cpu_count() or 1
    return max(1, cores)


def prepare_data(cfg: TrainConfig, out_dir=None, *, progress: bool = False, log=print,
                 cache_only: bool = False) -> PreparedData:
    """The training and validation data of ``cfg`` (cached under ``out_dir/cache`` when ``data.cache``).

    cache_only: read the cache or fail (other DDP ranks, after rank 0 wrote it).
    """
    from ..models import build_graphs

    settings = graph_settings(cfg)
    cache_dir = None if out_dir is None or not cfg.data.cache else Path(out_dir) / "cache"
    key = cache_key(cfg) if cache_dir is not None else None
    if cache_dir is not None:
        got = _load_cache(cache_dir, key, settings)
        if got is not None:
            log(f"data: {got.n_train} training / {got.n_val} validation structures from the cache {cache_dir}")
            return got
    if cache_only:
        raise RuntimeError(f"no valid data cache in {cache_dir}")
    ids, structs, val_ids, val_structs, report = clean_structures(cfg, progress=progress, log=log)
    sim = cfg.make_simulator()
    refl = sim.reflections(structs)
    graphs = build_graphs(structs, settings["cutoff_angstrom"], settings["max_neighbors"],
                          lattice_k=settings["lattice_k"], workers=_graph_workers(len(structs)), progress=progress)
    val_refl = sim.reflections(val_structs) if val_structs else None
    val_graphs = (build_graphs(val_structs, settings["cutoff_angstrom"], settings["max_neighbors"],
                               lattice_k=settings["lattice_k"], workers=_graph_workers(len(val_structs)), progress=progress) if val_structs else [])
    data = PreparedData(ids, refl, graphs, val_ids, val_refl, val_graphs, report=report)
    log(f"data: {data.n_train} training / {data.n_val} validation structures")
    if cache_dir is not None:
        _save_cache(cache_dir, key, data)
    return data


# the old private names
_sha256_file, _source_fingerprint, _read_all = sha256_file, source_fingerprint, read_sources
