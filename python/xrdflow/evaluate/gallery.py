"""The gallery: structures to search, their labels, and their cached embeddings.

:func:`load_gallery` reads anything :func:`xrdflow.data.load_structures` reads
(CSV(.gz) with a ``cif`` column, a CIF folder or file, extxyz) or a sharded
data set directory, keeps the entries that failed with their reasons, and
labels every structure with its space group (the data set's stored labels, or
:func:`xrdflow.data.dedup.space_group_number`, the same function the data
sets use) and crystal system.

:func:`gallery_embeddings` encodes the gallery's structures once per
(checkpoint, gallery) pair (the crystal tower's embeddings, and, for a model
with ``simulated_pattern_weight`` > 0, their fusion with the pattern tower's
embeddings of the structures' clean simulated patterns) and keeps them in an
``.npz`` file named by
``sha256(checkpoint bytes)`` and ``sha256(gallery content)``.  The file is
written atomically and read with ``np.load(allow_pickle=False)``; on load the
stored hashes, ids, shape, dtype and finiteness are checked, and a file that
fails any check is recomputed (never trusted).

:func:`gallery_reflections` does the same for the gallery's reflections
(what :class:`~xrdflow.evaluate.baselines.PeakFOM` needs, e.g. for
``xrdflow search --rerank peak_fom``): a :class:`~xrdflow.Reflections`
``.npz`` in the same folder, named by a hash of the simulator's reflection
options (d_min, probe, ...) and the xrdflow version, and by the gallery's
content hash; loaded with :meth:`~xrdflow.Reflections.load` (validated), its
length and d_min checked.
"""
from __future__ import annotations

import hashlib
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from .._fileio import sha256_file

CACHE_VERSION = 1
#: embedding files: 2 = structure and crystal-tower embeddings both stored
EMBEDDING_CACHE_VERSION = 2
ENV_CACHE_DIR = "XRDFLOW_CACHE_DIR"


@dataclass
class Gallery:
    """Structures to search with their ids and labels (aligned lists / arrays)."""

    ids: list
    structures: list
    space_groups: np.ndarray          # (n,) int64
    failures: list = field(default_factory=list)   # (id, reason) of entries that could not be read
    source: str = ""

    def __len__(self) -> int:
        return len(self.structures)

    @property
    def formulas(self) -> list[str]:
        return [s.formula for s in self.structures]

    @property
    def crystal_systems(self) -> np.ndarray:
        from ..data.labels import crystal_system

        return np.array([crystal_system(int(sg)) for sg in self.space_groups], dtype="<U12")

    def content_hash(self) -> str:
        return content_hash(self.ids, self.structures)


def content_hash(ids: Sequence[str], structures) -> str:
    """sha256 over every id and every structure array, in order."""
    h = hashlib.sha256()
    h.update(f"xrdflow-gallery-v{CACHE_VERSION}\0{len(structures)}\0".encode())
    for ident, s in zip(ids, structures):
        h.update(str(ident).encode("utf-8", "surrogatepass") + b"\0")
        for name in ("lattice", "frac", "numbers", "charges", "occupancy", "b_iso"):
            a = np.ascontiguousarray(getattr(s, name))
            h.update(f"{a.dtype.str}{a.shape}".encode())
            h.update(a.tobytes())
    return h.hexdigest()


file_hash = sha256_file  # sha256 of a file's bytes


def space_groups_of(structures, *, progress: bool = False) -> np.ndarray:
    from ..data.dedup import space_group_number
    from ..symmetry import quiet_spglib

    it = structures
    if progress:
        from tqdm.auto import tqdm

        it = tqdm(structures, desc="space groups", leave=False)
    with quiet_spglib():
        return np.array([space_group_number(s) for s in it], dtype=np.int64)


def load_gallery(path, *, progress: bool = False, workers=None) -> Gallery:
    """Read a gallery (see the module docs).  Raises FileNotFoundError for a
    missing path and ValueError when no structure could be read."""
    from ..data.readers import load_structures
    from ..data.shards import ShardedDataset, is_dataset

    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"gallery: no such file or folder: {path!r}")
    if is_dataset(path):
        ds = ShardedDataset(path)
        ids, structures = ds.ids(), ds.structures()
        sg = np.asarray(ds.labels()["space_group"], dtype=np.int64) if len(ds) else np.zeros(0, np.int64)
        failures = []
    else:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", category=RuntimeWarning, message=r".*could not be read")
            res = load_structures(path, workers=workers, progress=progress)
        ids, structures, failures = list(res.ids), list(res.structures), list(res.failures)
        sg = space_groups_of(structures, progress=progress)
    if not structures:
        why = f" ({len(failures)} entries failed, first: {failures[0][0]}: {failures[0][1]})" if failures else ""
        raise ValueError(f"the gallery {path!r} holds no readable structure{why}; give a CSV with a cif column, "
                         "a CIF folder or a data set directory with at least one structure")
    return Gallery(ids=ids, structures=structures, space_groups=sg, failures=failures, source=path)


def gallery_from_structures(structures, ids=None) -> Gallery:
    """A :class:`Gallery` from in-memory structures (ids default to their labels or indices)."""
    structures = list(structures)
    if not structures:
        raise ValueError("the gallery is empty: give at least one structure")
    if ids is None:
        ids = [s.label or str(i) for i, s in enumerate(structures)]
    if len(ids) != len(structures):
        raise ValueError(f"{len(ids)} ids for {len(structures)} structures")
    return Gallery(ids=list(ids), structures=structures, space_groups=space_groups_of(structures))


def space_group_counts(space_groups) -> dict[int, int]:
    values, counts = np.unique(np.asarray(space_groups, dtype=np.int64), return_counts=True)
    return {int(v): int(c) for v, c in zip(values, counts)}


# ------------------------------------------------------------------ embeddings
def default_cache_dir() -> Path:
    env = os.environ.get(ENV_CACHE_DIR)
    if env:
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "xrdflow" / "gallery"


def cache_path(cache_dir, checkpoint_sha256: str, gallery_sha256: str, scan_deg=None) -> Path:
    scan = "" if scan_deg is None else "_scan{:.3f}-{:.3f}".format(*(float(v) for v in scan_deg))
    return Path(cache_dir) / f"emb_{checkpoint_sha256[:16]}_{gallery_sha256[:16]}{scan}.npz"


def _device_of(model):
    import torch

    try:
        return next(model.parameters()).device
    except StopIteration:
        return torch.device("cpu")


def encode_structures(model, structures, *, batch_size: int = 64, progress: bool = False) -> np.ndarray:
    """(n, embed_dim) float32 crystal embeddings (model in eval mode, no gradients)."""
    from ..models import build_graphs

    graphs = build_graphs(structures, **model.graph_kwargs(), progress=progress)
    return encode_graphs(model, graphs, batch_size=batch_size, progress=progress)


def encode_graphs(model, graphs, *, batch_size: int = 64, progress: bool = False,
                  desc: str = "embedding gallery") -> np.ndarray:
    """(n, embed_dim) float32 crystal embeddings of prepared crystal graphs (model in eval mode, no
    gradients; its training mode is restored after)."""
    import torch

    from ..models import collate_graphs

    device = _device_of(model)
    out = []
    starts = range(0, len(graphs), batch_size)
    if progress:
        from tqdm.auto import tqdm

        starts = tqdm(starts, desc=desc, leave=False)
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            for s in starts:
                batch = collate_graphs(graphs[s:s + batch_size]).to(device)
                out.append(model.encode_crystals(batch).float().cpu().numpy())
    finally:
        model.train(was_training)
    return np.concatenate(out) if out else np.zeros((0, model.embed_dim), np.float32)


def structure_embeddings(model, crystal_embeddings, simulated_patterns, *, weight: "float | None" = None,
                         batch_size: int = 256) -> np.ndarray:
    """(n, embed_dim) float32 structure embeddings: the crystal-tower embeddings fused with the pattern
    tower's embeddings of the same structures' clean simulated patterns (n, n_points), by
    :func:`xrdflow.models.fuse_embeddings` with ``weight`` (default: the model's
    ``simulated_pattern_weight``)."""
    import torch

    from ..models import fuse_embeddings

    w = model.simulated_pattern_weight if weight is None else float(weight)
    c = np.asarray(crystal_embeddings, dtype=np.float32)
    if w == 0:
        return c
    if len(simulated_patterns) != len(c):
        raise ValueError(f"{len(c)} crystal embeddings but {len(simulated_patterns)} simulated patterns")
    p = encode_patterns(model, simulated_patterns, batch_size=batch_size)
    return fuse_embeddings(torch.from_numpy(c), torch.from_numpy(p), w).numpy()


def encode_patterns(model, Y, *, batch_size: int = 256) -> np.ndarray:
    """(n, embed_dim) float32 pattern embeddings of (n, n_points) patterns."""
    import torch

    Y = np.asarray(Y, dtype=np.float32)
    if Y.ndim != 2 or Y.shape[1] != model.n_points:
        raise ValueError(f"patterns must be (n, {model.n_points}) on the model's grid, got shape {Y.shape}")
    device = _device_of(model)
    out = []
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            for s in range(0, len(Y), batch_size):
                x = torch.from_numpy(np.ascontiguousarray(Y[s:s + batch_size])).to(device)
                out.append(model.encode_patterns(x).float().cpu().numpy())
    finally:
        model.train(was_training)
    return np.concatenate(out) if out else np.zeros((0, model.embed_dim), np.float32)


def _scan_array(scan_deg) -> np.ndarray:
    return np.zeros(0) if scan_deg is None else np.asarray([float(v) for v in scan_deg], dtype=np.float64)


def _read_cache(path: Path, checkpoint_sha256: str, gallery_sha256: str, ids, embed_dim: int, scan_deg=None):
    """The cached (structure, crystal-tower) embeddings, or (None, reason) when the file is missing or does not
    match."""
    if not path.is_file():
        return None, "no cache file"
    try:
        with np.load(path, allow_pickle=False) as z:
            data = {k: z[k] for k in z.files}
    except Exception as err:  # noqa: BLE001 - any unreadable file is recomputed
        return None, f"unreadable ({type(err).__name__}: {err})"
    need = ("version", "checkpoint_sha256", "gallery_sha256", "ids", "embeddings", "crystal_embeddings", "scan_deg")
    missing = [k for k in need if k not in data]
    if missing:
        return None, f"lacks {missing}"
    if int(data["version"]) != EMBEDDING_CACHE_VERSION:
        return None, f"version {int(data['version'])} != {EMBEDDING_CACHE_VERSION}"
    if str(data["checkpoint_sha256"]) != checkpoint_sha256:
        return None, "made with another checkpoint"
    if str(data["gallery_sha256"]) != gallery_sha256:
        return None, "made for another gallery"
    if data["scan_deg"].shape != _scan_array(scan_deg).shape or not np.allclose(data["scan_deg"], _scan_array(scan_deg)):
        return None, "made for another scan range"
    for key in ("embeddings", "crystal_embeddings"):
        emb = data[key]
        if emb.dtype != np.float32 or emb.shape != (len(ids), embed_dim):
            return None, f"{key} {emb.dtype} {emb.shape}, expected float32 {(len(ids), embed_dim)}"
        if not np.all(np.isfinite(emb)):
            return None, f"{key} contain NaN/inf"
    if data["ids"].shape != (len(ids),) or [str(x) for x in data["ids"].tolist()] != [str(x) for x in ids]:
        return None, "ids differ"
    return (data["embeddings"], data["crystal_embeddings"]), "ok"


def _write_cache(path: Path, checkpoint_sha256: str, gallery_sha256: str, ids, emb: np.ndarray,
                 crystal_emb: np.ndarray, scan_deg=None) -> None:
    from .._fileio import atomic_output

    with atomic_output(path, make_parents=True) as tmp:
        with open(tmp, "wb") as fh:
            np.savez(fh, version=np.int64(EMBEDDING_CACHE_VERSION), checkpoint_sha256=np.str_(checkpoint_sha256),
                     gallery_sha256=np.str_(gallery_sha256), ids=np.array([str(i) for i in ids], dtype=np.str_),
                     embeddings=np.ascontiguousarray(emb, dtype=np.float32),
                     crystal_embeddings=np.ascontiguousarray(crystal_emb, dtype=np.float32),
                     scan_deg=_scan_array(scan_deg))


@dataclass
class CachedEmbeddings:
    embeddings: np.ndarray          # (n, embed_dim) float32, L2-normalized: the structure embeddings searched
    path: "Path | None"
    reused: bool
    reason: str                     # why it was (re)computed, or "ok"
    crystal_embeddings: "np.ndarray | None" = None   # the crystal tower's alone (= embeddings when w = 0)


def gallery_embeddings(model, gallery: Gallery, checkpoint_path, *, simulator=None, reflections=None,
                       scan_deg=None, cache_dir=None, use_cache: bool = True, batch_size: int = 64,
                       progress: bool = False) -> CachedEmbeddings:
    """Structure embeddings of the gallery, from the cache when it matches, else computed and cached.

    A model with ``simulated_pattern_weight`` > 0 fuses each structure's crystal embedding with the pattern
    tower's embedding of its clean pattern: then ``simulator`` (the checkpoint's, ``cfg.make_simulator()``)
    is required, and ``reflections`` (the gallery's under it) are used when given, else
    :func:`gallery_reflections` (cached in the same folder).

    scan_deg: (start, end) degrees 2-theta of a partial scan to match: the simulated patterns are cut to it
    as the queries are (:func:`~xrdflow.evaluate.evaluation.cut_queries`), because the pattern tower embeds a
    short scan and the whole pattern differently (cached per range; ignored by a crystal-tower-only model)."""
    if len(gallery) == 0:
        raise ValueError("the gallery is empty: nothing to embed")
    if model.uses_simulated_patterns and simulator is None:
        raise ValueError(f"this checkpoint embeds each gallery structure with its simulated pattern "
                         f"(simulated_pattern_weight = {model.simulated_pattern_weight:g}); pass simulator= "
                         "(the checkpoint's: load_model(...)[1].make_simulator())")
    ck = file_hash(checkpoint_path)
    gh = gallery.content_hash()
    root = cache_dir if cache_dir is not None else default_cache_dir()
    if not model.uses_simulated_patterns:
        scan_deg = None
    path = cache_path(root, ck, gh, scan_deg)
    reason = "cache disabled"
    if use_cache:
        both, reason = _read_cache(path, ck, gh, gallery.ids, model.embed_dim, scan_deg)
        if both is not None:
            return CachedEmbeddings(both[0], path, True, "ok", crystal_embeddings=both[1])
    if scan_deg is not None:
        # the crystal tower does not depend on the scan range: take its embeddings from the whole-range
        # entry (computed and cached once) instead of running it again for every range
        whole = gallery_embeddings(model, gallery, checkpoint_path, simulator=simulator, reflections=reflections,
                                   cache_dir=root, use_cache=use_cache, batch_size=batch_size, progress=progress)
        crystal = whole.crystal_embeddings
    else:
        crystal = encode_structures(model, gallery.structures, batch_size=batch_size, progress=progress)
    emb = crystal
    if model.uses_simulated_patterns:
        if simulator.n_points != model.n_points:
            raise ValueError(f"the simulator has {simulator.n_points} points but the model takes {model.n_points}")
        if reflections is None:
            reflections = gallery_reflections(simulator, gallery, cache_dir=root, use_cache=use_cache).reflections
        if len(reflections) != len(gallery):
            raise ValueError(f"{len(reflections)} reflection sets for a gallery of {len(gallery)}")
        clean = simulator.render(reflections)[0]
        if scan_deg is not None:
            from .evaluation import cut_queries

            clean = cut_queries(clean, simulator.two_theta_deg, scan_deg)
        emb = structure_embeddings(model, crystal, clean)
    if use_cache:
        _write_cache(path, ck, gh, gallery.ids, emb, crystal, scan_deg)
    return CachedEmbeddings(emb, path if use_cache else None, False, reason, crystal_embeddings=crystal)


# ------------------------------------------------------------------ reflections cache
def reflections_cache_path(cache_dir, sim, gallery_sha256: str) -> Path:
    """``refl_<options>_<gallery>.npz``: options = sha256 of the simulator's reflection options and version."""
    import json

    from .. import __version__

    opts = {k: (float(v) if isinstance(v, (float, np.floating)) else v) for k, v in sim._reflection_options().items()}
    key = hashlib.sha256(json.dumps({"xrdflow": __version__, "cache": CACHE_VERSION, **opts},
                                    sort_keys=True).encode()).hexdigest()
    return Path(cache_dir) / f"refl_{key[:16]}_{gallery_sha256[:16]}.npz"


@dataclass
class CachedReflections:
    reflections: object       # xrdflow.Reflections, one entry per gallery structure
    path: "Path | None"
    reused: bool
    reason: str               # why it was (re)computed, or "ok"


def gallery_reflections(sim, gallery: Gallery, *, cache_dir=None, use_cache: bool = True) -> CachedReflections:
    """The gallery's reflections under ``sim``, from the cache when it matches, else computed and cached."""
    from ..reflections import Reflections

    if len(gallery) == 0:
        raise ValueError("the gallery is empty: no reflections to compute")
    path = reflections_cache_path(cache_dir if cache_dir is not None else default_cache_dir(), sim,
                                  gallery.content_hash())
    reason = "cache disabled"
    if use_cache:
        if not path.is_file():
            reason = "no cache file"
        else:
            try:
                refl = Reflections.load(path)
            except (ValueError, OSError) as err:
                reason = f"unreadable ({type(err).__name__}: {err})"
            else:
                if len(refl) != len(gallery):
                    reason = f"{len(refl)} structures, the gallery has {len(gallery)}"
                elif not np.isclose(float(refl.d_min), float(sim.d_min), rtol=1e-12, atol=0):
                    reason = f"d_min {float(refl.d_min):g} != {float(sim.d_min):g}"
                else:
                    return CachedReflections(refl, path, True, "ok")
    refl = sim.reflections(gallery.structures)
    if use_cache:
        path.parent.mkdir(parents=True, exist_ok=True)
        refl.save(path)
    return CachedReflections(refl, path if use_cache else None, False, reason)
