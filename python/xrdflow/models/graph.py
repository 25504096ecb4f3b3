"""Periodic neighbour graphs of crystal structures for the crystal encoder.

A :class:`CrystalGraph` holds plain numpy arrays only (no Python objects), so
graphs can be built once (in worker processes) and saved with ``np.savez``.

Partial occupancy. ``xrdflow.Structure`` expands a mixed or partly vacant site
into several atoms at the same position, each with its own occupancy. The graph
merges atoms closer than ``site_tolerance_angstrom`` into one *site* (node):

* the node's species embedding is the occupancy-weighted average of its atoms'
  embeddings (``atom_weight`` = occupancy / site occupancy, summing to 1 per
  site): a virtual-crystal / mean-field treatment of substitutional disorder;
* ``site_weight`` = total site occupancy (clipped to 1) multiplies every
  message a site sends and its weight in the mean pooling, so a half-vacant
  site counts half.

For an ordered structure every atom is its own site with weight 1.

Neighbour cap. Each site keeps its ``max_neighbors`` nearest neighbours within
``cutoff_angstrom`` plus every further neighbour whose distance ties the last
kept one within ``shell_tolerance_angstrom``: a coordination shell is never
split, so which neighbours survive does not depend on atom order, rotation or
the choice of cell (a split shell would make the embedding depend on them).
"""
from __future__ import annotations

import os
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, fields

import numpy as np

__all__ = ["CrystalGraph", "GraphBatch", "build_graph", "build_graphs", "collate_graphs",
           "save_graphs", "load_graphs"]

_GRAPH_ARRAYS = ("numbers", "atom_site", "atom_weight", "site_weight", "positions",
                 "edge_index", "edge_shift", "edge_vec", "lattice")


@dataclass(frozen=True, eq=False)
class CrystalGraph:
    """Periodic neighbour graph of one structure (all numpy arrays).

    numbers: (A,) int64 atomic number of every atom (species entry).
    atom_site: (A,) int64 site (node) index of every atom.
    atom_weight: (A,) float32 occupancy fraction of the atom within its site (sums to 1 per site).
    site_weight: (S,) float32 total occupancy of each site, in (0, 1].
    positions: (S, 3) float64 Cartesian site positions in angstrom.
    edge_index: (2, E) int64 rows (sender j, receiver i); edges point from neighbour to centre.
    edge_shift: (E, 3) int32 lattice translation of the sender image.
    edge_vec: (E, 3) float32 r_j + shift @ lattice - r_i in angstrom.
    lattice: (3, 3) float64 rows a, b, c in angstrom.
    cutoff_angstrom, max_neighbors: the settings used to build it.
    label: the structure's label.
    """

    numbers: np.ndarray
    atom_site: np.ndarray
    atom_weight: np.ndarray
    site_weight: np.ndarray
    positions: np.ndarray
    edge_index: np.ndarray
    edge_shift: np.ndarray
    edge_vec: np.ndarray
    lattice: np.ndarray
    cutoff_angstrom: float
    max_neighbors: int
    label: str = ""

    @property
    def n_sites(self) -> int:
        return int(self.site_weight.shape[0])

    @property
    def n_atoms(self) -> int:
        return int(self.numbers.shape[0])

    @property
    def n_edges(self) -> int:
        return int(self.edge_index.shape[1])

    def __repr__(self) -> str:
        return (f"CrystalGraph({self.label!r}, sites={self.n_sites}, atoms={self.n_atoms}, "
                f"edges={self.n_edges}, cutoff={self.cutoff_angstrom} A)")


def _check_settings(cutoff_angstrom, max_neighbors):
    if isinstance(cutoff_angstrom, bool) or not isinstance(cutoff_angstrom, (int, float, np.floating, np.integer)):
        raise TypeError(f"cutoff_angstrom must be a number, not {type(cutoff_angstrom).__name__}")
    if not (np.isfinite(cutoff_angstrom) and 0.5 <= cutoff_angstrom <= 20.0):
        raise ValueError(f"cutoff_angstrom = {cutoff_angstrom} is outside [0.5, 20] angstrom; "
                         "typical values are 4-6 angstrom")
    if isinstance(max_neighbors, bool) or not isinstance(max_neighbors, (int, np.integer)) or max_neighbors < 1:
        raise ValueError(f"max_neighbors must be a positive integer, not {max_neighbors!r}")


def _union_find_sites(n_atoms, i, j):
    parent = np.arange(n_atoms)

    def root(a):
        while parent[a] != a:
            parent[a] = parent[parent[a]]
            a = parent[a]
        return a

    for a, b in zip(i.tolist(), j.tolist()):
        ra, rb = root(a), root(b)
        if ra != rb:
            parent[max(ra, rb)] = min(ra, rb)
    roots = np.array([root(a) for a in range(n_atoms)])
    _, site = np.unique(roots, return_inverse=True)  # sites numbered by first atom
    return site.astype(np.int64)


def build_graph(structure, cutoff_angstrom: float = 5.0, max_neighbors: int = 16, *,
                site_tolerance_angstrom: float = 0.05,
                shell_tolerance_angstrom: float = 1e-3) -> CrystalGraph:
    """Periodic neighbour graph of an :class:`xrdflow.Structure` (see module docstring).

    A site with no neighbour within the cutoff (an isolated atom in a large box)
    is a node without edges; the encoder then sees only its species.
    """
    import vesin
    from ..structure import Structure

    if not isinstance(structure, Structure):
        raise TypeError(f"build_graph needs an xrdflow.Structure, not {type(structure).__name__}; "
                        "convert with Structure.from_pymatgen / from_ase / from_cif")
    _check_settings(cutoff_angstrom, max_neighbors)
    lattice = np.asarray(structure.lattice, dtype=np.float64)
    cart = np.asarray(structure.frac, dtype=np.float64) @ lattice
    n_atoms = cart.shape[0]
    if n_atoms == 0:
        raise ValueError("the structure has no atoms; a graph needs at least one atom")
    occ = np.asarray(structure.occupancy, dtype=np.float64)

    # 1. merge atoms sharing a position (mixed / partly vacant sites) into sites
    site = np.arange(n_atoms, dtype=np.int64)
    if n_atoms > 1 and np.any(occ < 1.0):
        # vesin's cell list gets slow for tiny cutoffs: search 1 A and filter
        nl0 = vesin.NeighborList(cutoff=max(1.0, site_tolerance_angstrom), full_list=False)
        i0, j0, d0 = nl0.compute(cart, lattice, True, "ijd")
        close = np.asarray(d0) < site_tolerance_angstrom
        if close.any():
            site = _union_find_sites(n_atoms, np.asarray(i0)[close], np.asarray(j0)[close])
    n_sites = int(site.max()) + 1
    site_occ = np.bincount(site, weights=occ, minlength=n_sites)
    atom_weight = occ / site_occ[site]
    site_weight = np.minimum(site_occ, 1.0)
    first = np.full(n_sites, n_atoms, dtype=np.int64)
    np.minimum.at(first, site, np.arange(n_atoms))
    positions = cart[first]

    # 2. neighbour list between sites (full list: every pair in both directions)
    nl = vesin.NeighborList(cutoff=float(cutoff_angstrom), full_list=True)
    i, j, shift, d = nl.compute(positions, lattice, True, "ijSd")
    i = np.asarray(i, dtype=np.int64)
    j = np.asarray(j, dtype=np.int64)
    shift = np.asarray(shift, dtype=np.int64)
    d = np.asarray(d, dtype=np.float64)
    keep = d > site_tolerance_angstrom  # never an edge between an atom and itself
    i, j, shift, d = i[keep], j[keep], shift[keep], d[keep]

    # 3. cap: nearest first per centre, never splitting a shell
    order = np.lexsort((d, i))
    i, j, shift, d = i[order], j[order], shift[order], d[order]
    if len(i):
        starts = np.searchsorted(i, np.arange(n_sites))
        rank = np.arange(len(i)) - starts[i]
        counts = np.bincount(i, minlength=n_sites)
        last = starts + np.minimum(counts, max_neighbors) - 1  # index of k-th nearest
        d_k = np.where(counts > 0, d[np.clip(last, 0, len(d) - 1)], np.inf)
        keep = (rank < max_neighbors) | (d <= d_k[i] + shell_tolerance_angstrom)
        i, j, shift, d = i[keep], j[keep], shift[keep], d[keep]

    vec = positions[j] + shift @ lattice - positions[i]
    return CrystalGraph(
        numbers=np.asarray(structure.numbers, dtype=np.int64),
        atom_site=site,
        atom_weight=atom_weight.astype(np.float32),
        site_weight=site_weight.astype(np.float32),
        positions=positions,
        edge_index=np.stack([j, i]).astype(np.int64).reshape(2, -1),
        edge_shift=shift.astype(np.int32).reshape(-1, 3),
        edge_vec=vec.astype(np.float32).reshape(-1, 3),
        lattice=lattice.copy(),
        cutoff_angstrom=float(cutoff_angstrom),
        max_neighbors=int(max_neighbors),
        label=str(structure.label),
    )


def _build_chunk(args):
    structures, cutoff_angstrom, max_neighbors = args
    return [build_graph(s, cutoff_angstrom, max_neighbors) for s in structures]


def build_graphs(structures, cutoff_angstrom: float = 5.0, max_neighbors: int = 16,
                 workers: int | None = None, *, progress: bool = True,
                 chunk_size: int = 256) -> list[CrystalGraph]:
    """:func:`build_graph` for many structures, in order, with a tqdm bar.

    workers: processes to use; None or 1 builds in this process (graphs take
    ~1 ms each, so processes pay off only for tens of thousands of structures).
    """
    from tqdm.auto import tqdm

    structures = list(structures)
    _check_settings(cutoff_angstrom, max_neighbors)
    if workers is not None and (not isinstance(workers, int) or workers < 1):
        raise ValueError(f"workers must be None or a positive integer, not {workers!r}")
    if workers is None or workers == 1 or len(structures) <= chunk_size:
        return [build_graph(s, cutoff_angstrom, max_neighbors)
                for s in tqdm(structures, desc="graphs", unit="struct", disable=not progress)]
    chunks = [(structures[k:k + chunk_size], cutoff_angstrom, max_neighbors)
              for k in range(0, len(structures), chunk_size)]
    out: list[CrystalGraph] = []
    with ProcessPoolExecutor(max_workers=min(workers, os.cpu_count() or 1)) as pool, \
            tqdm(total=len(structures), desc="graphs", unit="struct", disable=not progress) as bar:
        for part in pool.map(_build_chunk, chunks):
            out.extend(part)
            bar.update(len(part))
    return out


@dataclass(eq=False)
class GraphBatch:
    """Several :class:`CrystalGraph` concatenated into torch tensors.

    numbers (A,) long; atom_site (A,) long (global site index); atom_weight (A,) float;
    site_weight (S,) float; site_graph (S,) long graph index of every site;
    edge_index (2, E) long (sender, receiver; global site indices); edge_vec (E, 3) float;
    n_graphs: int.
    """

    numbers: "torch.Tensor"
    atom_site: "torch.Tensor"
    atom_weight: "torch.Tensor"
    site_weight: "torch.Tensor"
    site_graph: "torch.Tensor"
    edge_index: "torch.Tensor"
    edge_vec: "torch.Tensor"
    n_graphs: int

    def to(self, device=None, dtype=None, non_blocking: bool = False) -> "GraphBatch":
        """Copy to a device; ``dtype`` (a floating type) applies to the float tensors."""
        moved = {}
        for f in fields(self):
            v = getattr(self, f.name)
            if hasattr(v, "to"):
                if v.is_floating_point() and dtype is not None:
                    v = v.to(device=device, dtype=dtype, non_blocking=non_blocking)
                else:
                    v = v.to(device=device, non_blocking=non_blocking)
            moved[f.name] = v
        return GraphBatch(**moved)

    @property
    def device(self):
        return self.edge_vec.device

    @property
    def n_sites(self) -> int:
        return int(self.site_weight.shape[0])

    def __len__(self) -> int:
        return self.n_graphs


def collate_graphs(graphs) -> GraphBatch:
    """Concatenate graphs into one :class:`GraphBatch` (indices offset per graph)."""
    import torch

    graphs = list(graphs)
    if not graphs:
        raise ValueError("collate_graphs got no graphs; give at least one CrystalGraph")
    for g in graphs:
        if not isinstance(g, CrystalGraph):
            raise TypeError(f"collate_graphs needs CrystalGraph objects (from build_graph), "
                            f"not {type(g).__name__}")
    n_sites = np.array([g.n_sites for g in graphs])
    site_offset = np.concatenate([[0], np.cumsum(n_sites)[:-1]])
    atom_site = np.concatenate([g.atom_site + o for g, o in zip(graphs, site_offset)])
    edge_index = np.concatenate([g.edge_index + o for g, o in zip(graphs, site_offset)], axis=1)
    return GraphBatch(
        numbers=torch.from_numpy(np.concatenate([g.numbers for g in graphs]).astype(np.int64)),
        atom_site=torch.from_numpy(atom_site.astype(np.int64)),
        atom_weight=torch.from_numpy(np.concatenate([g.atom_weight for g in graphs]).astype(np.float32)),
        site_weight=torch.from_numpy(np.concatenate([g.site_weight for g in graphs]).astype(np.float32)),
        site_graph=torch.from_numpy(np.repeat(np.arange(len(graphs)), n_sites).astype(np.int64)),
        edge_index=torch.from_numpy(edge_index.astype(np.int64)),
        edge_vec=torch.from_numpy(np.concatenate([g.edge_vec for g in graphs]).astype(np.float32)),
        n_graphs=len(graphs),
    )


def save_graphs(path, graphs) -> None:
    """Write graphs to one ``.npz`` (plain arrays, no pickle), atomically."""
    graphs = list(graphs)
    path = os.fspath(path)
    if not path.endswith(".npz"):
        raise ValueError(f"graph files end in .npz; got {path!r}")
    arrays = {}
    for name in _GRAPH_ARRAYS:
        parts = [getattr(g, name) for g in graphs]
        axis = 1 if name == "edge_index" else 0
        arrays[name] = np.concatenate(parts, axis=axis) if parts else np.zeros((0,))
        counts = [p.shape[axis] for p in parts]
        arrays[name + "__count"] = np.asarray(counts, dtype=np.int64)
    arrays["cutoff_angstrom"] = np.asarray([g.cutoff_angstrom for g in graphs], dtype=np.float64)
    arrays["max_neighbors"] = np.asarray([g.max_neighbors for g in graphs], dtype=np.int64)
    arrays["label"] = np.asarray([g.label for g in graphs], dtype=np.str_)
    directory = os.path.dirname(os.path.abspath(path))
    tmp = os.path.join(directory, f".{os.path.basename(path)}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as fh:
            np.savez(fh, **arrays)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def load_graphs(path) -> list[CrystalGraph]:
    """Read graphs written by :func:`save_graphs`."""
    with np.load(os.fspath(path), allow_pickle=False) as data:
        split = {}
        for name in _GRAPH_ARRAYS:
            axis = 1 if name == "edge_index" else 0
            counts = data[name + "__count"]
            split[name] = np.split(data[name], np.cumsum(counts)[:-1], axis=axis) if len(counts) else []
        cut = data["cutoff_angstrom"]
        cap = data["max_neighbors"]
        labels = data["label"]
    return [CrystalGraph(**{n: split[n][k] for n in _GRAPH_ARRAYS},
                         cutoff_angstrom=float(cut[k]), max_neighbors=int(cap[k]),
                         label=str(labels[k])) for k in range(len(cut))]
