"""Classifier data: structures -> labels -> Reflections cache -> streamed augmented patterns.

Training data (:func:`prepare_data`) follows the contrastive trainer's cleaning
(:func:`xrdflow.train.data.clean_structures`: sources joined, ``max_structures``,
de-duplication, overlaps with ``leakage_against`` removed, held-out validation,
:func:`xrdflow.data.dedup.check_no_leakage`), then labels every structure with its
space group (stored labels of ``xrdflow dataset`` directories, e.g. balanced random
crystals from ``xrdflow dataset generate``; spglib otherwise, as ``dataset import``
does) and builds the :class:`xrdflow.Reflections` cache once.  With ``data.cache`` it
is kept under ``run.out_dir/cache`` (``Reflections.save`` files + ``manifest.json``
with sha256 and a key over the sources' content, the data settings and the
simulator; the manifest is written last, atomically).

Patterns are rendered per batch by :class:`xrdflow.data.PatternStream` (augmentation
re-drawn every epoch, keyed by (seed, epoch, structure)).

Test sets (:func:`load_labeled`) are read the same way; their reflections and labels
can be cached in a folder keyed by the source's content and the simulator.
"""
from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..train.config import atomic_write_bytes
from ..train.data import (SplitSizes, clean_structures, data_key_settings, read_source, sha256_file,
                          source_fingerprint, sources_fingerprint)

__all__ = ["PreparedData", "prepare_data", "space_groups_of", "load_labeled", "LabeledSet", "CACHE_VERSION"]

CACHE_VERSION = 1


@dataclass
class PreparedData(SplitSizes):
    train_ids: list
    train_reflections: object          # xrdflow.Reflections
    train_sg: np.ndarray               # (N,) int64 space-group numbers
    val_ids: list
    val_reflections: object | None
    val_sg: np.ndarray
    report: dict = field(default_factory=dict)
    from_cache: bool = False


def _stored_labels(specs) -> dict:
    """id -> space group from the ``xrdflow dataset`` directories among ``specs``."""
    from ..data.shards import ShardedDataset, is_dataset

    out = {}
    for spec in specs:
        p = Path(spec)
        if p.is_dir() and is_dataset(p):
            ds = ShardedDataset(p, verify=False)
            out.update(zip(ds.ids(), ds.labels()["space_group"].astype(np.int64).tolist()))
    return out


def space_groups_of(structures, ids=None, known: dict | None = None, progress: bool = False) -> np.ndarray:
    """Space-group numbers (spglib, symprec 1e-3 as ``xrdflow dataset import``), or ``known[id]`` when given."""
    from ..data.dedup import space_group_number
    from ..symmetry import quiet_spglib

    known = known or {}
    out = np.zeros(len(structures), dtype=np.int64)
    it = range(len(structures))
    if progress:
        from tqdm.auto import tqdm

        it = tqdm(it, desc="space groups", unit="structure", leave=False)
    with quiet_spglib():
        for j in it:
            sg = known.get(ids[j]) if ids is not None else None
            out[j] = int(sg) if sg is not None else space_group_number(structures[j])
    return out


def cache_key(cfg) -> str:
    from ..data.shards import describe_simulator

    data, seed = data_key_settings(cfg)
    blob = {"version": CACHE_VERSION, "kind": "classifier", "data": data, "seed": seed,
            "sources": sources_fingerprint(cfg.data), "simulator": describe_simulator(cfg.make_simulator()),
            "scheme": cfg.model.scheme}
    return hashlib.sha256(json.dumps(blob, sort_keys=True).encode()).hexdigest()


def _save_split_cache(cache_dir: Path, names: dict, manifest: dict) -> None:
    """``names``: split -> (ids, Reflections or None, sg); writes files, then the manifest atomically."""
    cache_dir.mkdir(parents=True, exist_ok=True)
    sha = {}
    for split, (ids, refl, sg) in names.items():
        manifest[f"{split}_ids"] = list(ids)
        manifest[f"{split}_sg"] = [int(v) for v in sg]
        if refl is None:
            continue
        rp = cache_dir / f"{split}.reflections.npz"
        refl.save(rp)
        sha[rp.name] = sha256_file(rp)
    manifest["sha256"] = sha
    atomic_write_bytes(cache_dir / "manifest.json", json.dumps(manifest).encode("utf-8"))


def _load_split_cache(cache_dir: Path, key: str, splits) -> dict | None:
    from ..reflections import Reflections

    mpath = cache_dir / "manifest.json"
    if not mpath.is_file():
        return None
    try:
        m = json.loads(mpath.read_text(encoding="utf-8"))
        if m.get("key") != key or m.get("version") != CACHE_VERSION:
            return None
        out = {"report": m.get("report", {})}
        for split in splits:
            ids, sg = m[f"{split}_ids"], np.asarray(m[f"{split}_sg"], dtype=np.int64)
            if len(ids) != len(sg):
                raise ValueError(f"{split}: {len(ids)} ids but {len(sg)} labels")
            if not ids:
                out[split] = (ids, None, sg)
                continue
            rp = cache_dir / f"{split}.reflections.npz"
            if sha256_file(rp) != m["sha256"][rp.name]:
                raise ValueError(f"{rp} does not match its sha256 in {mpath}")
            refl = Reflections.load(rp)
            if len(refl) != len(ids):
                raise ValueError(f"{split}: {len(refl)} reflections for {len(ids)} ids")
            out[split] = (ids, refl, sg)
        return out
    except (OSError, ValueError, KeyError, TypeError) as err:
        import warnings

        warnings.warn(f"ignoring the data cache in {cache_dir} ({err}); recomputing", RuntimeWarning, stacklevel=3)
        return None


def prepare_data(cfg, out_dir=None, *, progress: bool = False, log=print) -> PreparedData:
    """Training and validation data of a :class:`~xrdflow.classify.ClassifierConfig` (see module docs)."""
    cache_dir = None if out_dir is None or not cfg.data.cache else Path(out_dir) / "cache"
    key = cache_key(cfg) if cache_dir is not None else None
    if cache_dir is not None:
        got = _load_split_cache(cache_dir, key, ("train", "val"))
        if got is not None:
            data = PreparedData(*got["train"], *got["val"], report=got["report"], from_cache=True)
            log(f"data: {data.n_train} training / {data.n_val} validation structures from the cache {cache_dir}")
            return data
    ids, structs, val_ids, val_structs, report = clean_structures(cfg, progress=progress, log=log)
    known = _stored_labels(cfg.data.train + cfg.data.val)
    sg = space_groups_of(structs, ids, known, progress=progress)
    val_sg = space_groups_of(val_structs, val_ids, known, progress=progress)
    sim = cfg.make_simulator()
    refl = sim.reflections(structs)
    val_refl = sim.reflections(val_structs) if val_structs else None
    report["train_space_groups"] = int(len(np.unique(sg)))
    data = PreparedData(ids, refl, sg, val_ids, val_refl, val_sg, report=report)
    log(f"data: {data.n_train} training structures ({report['train_space_groups']} space groups) / "
        f"{data.n_val} validation")
    if cache_dir is not None:
        _save_split_cache(cache_dir, {"train": (ids, refl, sg), "val": (val_ids, val_refl, val_sg)},
                          {"version": CACHE_VERSION, "key": key, "report": report})
    return data


# ------------------------------------------------------------------ test sets
@dataclass
class LabeledSet:
    """A labelled structure source on one simulator grid."""

    spec: str
    ids: list
    structures: list
    reflections: object        # xrdflow.Reflections
    sg: np.ndarray             # (N,) int64


def load_labeled(spec: str, sim, *, cache_dir=None, limit: int | None = None, progress: bool = False) -> LabeledSet:
    """Read a source (as ``data.train`` entries), label it, build its reflections (cached in ``cache_dir``)."""
    from ..data.shards import describe_simulator

    ids, structs = read_source(spec, progress=progress)
    if limit is not None:
        ids, structs = ids[:limit], structs[:limit]
    key = None
    if cache_dir is not None:
        blob = {"version": CACHE_VERSION, "source": source_fingerprint(spec), "limit": limit,
                "simulator": describe_simulator(sim)}
        key = hashlib.sha256(json.dumps(blob, sort_keys=True).encode()).hexdigest()
        sub = Path(cache_dir) / key[:20]
        got = _load_split_cache(sub, key, ("test",))
        if got is not None and got["test"][0] == list(ids):
            _, refl, sg = got["test"]
            return LabeledSet(spec, ids, structs, refl, sg)
    sg = space_groups_of(structs, ids, _stored_labels([spec]), progress=progress)
    refl = sim.reflections(structs)
    if cache_dir is not None:
        _save_split_cache(Path(cache_dir) / key[:20], {"test": (ids, refl, sg)},
                          {"version": CACHE_VERSION, "key": key, "source": os.fspath(spec)})
    return LabeledSet(spec, ids, structs, refl, sg)
