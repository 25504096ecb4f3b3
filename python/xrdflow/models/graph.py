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

Lattice descriptor. The peak positions of a powder pattern are set by the
lattice alone (Bragg: Q = 2 pi / d), which a 5 A message-passing encoder sees
only implicitly. Every graph therefore also stores :func:`lattice_descriptor`:
the K smallest lattice-plane spacings Q = 2 pi / d of the primitive cell and
the volume per atom, invariant to rotation, translation, atom order and the
choice of cell.
"""
from __future__ import annotations

import os
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, fields

import numpy as np

__all__ = ["CrystalGraph", "GraphBatch", "build_graph", "build_graphs", "collate_graphs",
           "save_graphs", "load_graphs", "lattice_descriptor", "plane_q_values", "primitive_lattice",
           "DEFAULT_LATTICE_K", "LATTICE_SYMPREC"]

_GRAPH_ARRAYS = ("numbers", "atom_site", "atom_weight", "site_weight", "positions",
                 "edge_index", "edge_shift", "edge_vec", "lattice", "lattice_descriptor")

DEFAULT_LATTICE_K = 32
LATTICE_SYMPREC = 1e-3  # angstrom, the project's default (xrdflow.symmetry)


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
    lattice_descriptor: (K + 1,) float32 :func:`lattice_descriptor`: the K smallest plane
        spacings Q = 2 pi / d (1/angstrom, ascending) of the primitive lattice, then the volume
        per atom (angstrom^3).
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
    lattice_descriptor: np.ndarray
    cutoff_angstrom: float
    max_neighbors: int
    label: str = ""

    @property
    def n_sites(self) -> int:
        return int(self.site_weight.shape[0])

    @property
    def lattice_k(self) -> int:
        return int(self.lattice_descriptor.shape[0]) - 1

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


def _check_lattice_k(lattice_k):
    if isinstance(lattice_k, bool) or not isinstance(lattice_k, (int, np.integer)) or not 1 <= lattice_k <= 4096:
        raise ValueError(f"lattice_k must be an integer in 1..4096 (the number of plane spacings kept), "
                         f"not {lattice_k!r}")


def plane_q_values(lattice, k: int = DEFAULT_LATTICE_K) -> np.ndarray:
    """The ``k`` smallest plane spacings Q = 2 pi / d (1/angstrom) of a lattice, ascending.

    Over all integer hkl != 0 with +h and -h counted once (ties kept, so a cubic (100)
    family gives three equal values); pure lattice geometry, no structure factors.
    d = 1 / sqrt(h^T G* h), G* = inverse of the metric G = A A^T (International Tables
    for Crystallography Vol. B, sec. 1.1.2), so Q = 2 pi sqrt(h^T G* h).

    The result does not depend on the basis chosen for the same lattice (it is a set of
    lengths of reciprocal-lattice vectors); it does depend on which lattice is given
    (a supercell has more planes), which :func:`lattice_descriptor` removes by using the
    primitive cell. Raises ValueError for a non-finite or degenerate lattice.
    """
    lat = np.asarray(lattice, dtype=np.float64)
    if lat.shape != (3, 3):
        raise ValueError(f"lattice must be a (3, 3) array of row vectors a, b, c, not shape {lat.shape}")
    if not np.all(np.isfinite(lat)):
        raise ValueError("lattice contains NaN or infinite values; give three finite lattice vectors")
    _check_lattice_k(k)
    lengths = np.linalg.norm(lat, axis=1)
    volume = abs(float(np.linalg.det(lat)))
    if not (lengths.min() > 1e-6 and volume > 1e-6 * float(np.prod(lengths))):
        raise ValueError(f"lattice is degenerate (volume {volume:.3g} angstrom^3 for vector lengths "
                         f"{np.round(lengths, 4).tolist()} angstrom); the three lattice vectors must span 3D")
    recip = 2.0 * np.pi * np.linalg.inv(lat).T  # rows b1, b2, b3 with a_i . b_j = 2 pi delta_ij
    # |h_i| = |Q . a_i| / (2 pi) <= Q |a_i| / (2 pi): a box n_i = ceil(q_max |a_i| / 2 pi) holds every
    # plane with Q <= q_max. Grow q_max until at least k planes (counting +-h once) lie within it.
    # about (4/3 pi q^3) / (2 (2 pi)^3 / V) planes have Q <= q: start where that reaches 1.2 k
    q_max = (1.2 * k * 6.0 * np.pi ** 2 / volume) ** (1.0 / 3.0)
    while True:
        n = np.ceil(q_max * lengths / (2.0 * np.pi)).astype(np.int64)
        if np.prod(2 * n + 1) > 50_000_000:
            raise ValueError(f"lattice needs an hkl box of {(2 * n + 1).tolist()} to find {k} planes; "
                             "the cell is far too oblique - Niggli-reduce it first")
        axes = [np.arange(-m, m + 1) for m in n]
        hkl = np.stack(np.meshgrid(*axes, indexing="ij"), axis=-1).reshape(-1, 3)
        # +h and -h once: keep hkl whose first non-zero index is positive
        first = np.where(hkl[:, 0] != 0, hkl[:, 0], np.where(hkl[:, 1] != 0, hkl[:, 1], hkl[:, 2]))
        hkl = hkl[first > 0]
        q = np.linalg.norm(hkl @ recip, axis=1)
        inside = np.sort(q[q <= q_max])
        if inside.size >= k:
            return inside[:k]
        q_max *= 1.5


def primitive_lattice(structure, symprec: float = LATTICE_SYMPREC) -> tuple[np.ndarray, bool]:
    """``(lattice, found)``: the primitive lattice of ``structure`` found by spglib (Niggli-reduced).

    spglib.standardize_cell(to_primitive=True, no_idealize=True) on the structure's sites
    (co-located atoms of a mixed / partly vacant site merged into one site type, as in
    :mod:`xrdflow.symmetry`), ``symprec`` in angstrom. If spglib fails (``found`` False),
    the structure's own cell is returned, Niggli-reduced with spglib.niggli_reduce (or as
    given if that fails too): then a supercell and its primitive cell would get different
    descriptors, since the cell is not reduced to its primitive.
    """
    import spglib
    from ..symmetry import _sites, quiet_spglib

    lattice = np.asarray(structure.lattice, dtype=np.float64)
    frac, types = _sites(structure)
    prim = None
    with quiet_spglib():
        try:
            cell = spglib.standardize_cell((lattice, frac, types), to_primitive=True, no_idealize=True,
                                           symprec=float(symprec))
            if cell is not None:
                prim = np.asarray(cell[0], dtype=np.float64)
        except Exception:  # spglib >= 2.5 may raise SpglibError instead of returning None
            prim = None
        if prim is not None and prim.shape == (3, 3) and np.all(np.isfinite(prim)):
            try:  # a reduced basis of the same lattice keeps the hkl box of plane_q_values small
                reduced = spglib.niggli_reduce(prim)
            except Exception:
                reduced = None
            if reduced is not None and np.all(np.isfinite(reduced)):
                prim = np.asarray(reduced, dtype=np.float64)
            return prim, True
        try:
            reduced = spglib.niggli_reduce(lattice)
        except Exception:
            reduced = None
    if reduced is not None and np.all(np.isfinite(reduced)):
        return np.asarray(reduced, dtype=np.float64), False
    return lattice.copy(), False


def lattice_descriptor(structure, k: int = DEFAULT_LATTICE_K, symprec: float = LATTICE_SYMPREC) -> np.ndarray:
    """(k + 1,) float32: the k smallest plane spacings Q = 2 pi / d (1/angstrom, ascending) of the
    primitive lattice (:func:`primitive_lattice`, :func:`plane_q_values`), then the volume per atom
    |det A| / sum(occupancy) in angstrom^3 (of the cell as given: the same for any cell choice).

    Invariant to rotation, translation, atom permutation and the choice of cell (primitive,
    conventional, supercell) whenever spglib finds the primitive cell.
    """
    from ..structure import Structure

    if not isinstance(structure, Structure):
        raise TypeError(f"lattice_descriptor needs an xrdflow.Structure, not {type(structure).__name__}")
    _check_lattice_k(k)
    prim, _ = primitive_lattice(structure, symprec)
    q = plane_q_values(prim, k)
    lattice = np.asarray(structure.lattice, dtype=np.float64)
    vol_per_atom = abs(float(np.linalg.det(lattice))) / float(np.sum(structure.occupancy))
    return np.concatenate([q, [vol_per_atom]]).astype(np.float32)


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
                lattice_k: int = DEFAULT_LATTICE_K,
                site_tolerance_angstrom: float = 0.05,
                shell_tolerance_angstrom: float = 1e-3) -> CrystalGraph:
    """Periodic neighbour graph of an :class:`xrdflow.Structure` (see module docstring), with
    its :func:`lattice_descriptor` of ``lattice_k`` plane spacings.

    A site with no neighbour within the cutoff (an isolated atom in a large box)
    is a node without edges; the encoder then sees only its species.
    """
    import vesin
    from ..structure import Structure

    if not isinstance(structure, Structure):
        raise TypeError(f"build_graph needs an xrdflow.Structure, not {type(structure).__name__}; "
                        "convert with Structure.from_pymatgen / from_ase / from_cif")
    _check_settings(cutoff_angstrom, max_neighbors)
    _check_lattice_k(lattice_k)
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
        lattice_descriptor=lattice_descriptor(structure, int(lattice_k)),
        cutoff_angstrom=float(cutoff_angstrom),
        max_neighbors=int(max_neighbors),
        label=str(structure.label),
    )


def _build_chunk(args):
    structures, cutoff_angstrom, max_neighbors, lattice_k = args
    return [build_graph(s, cutoff_angstrom, max_neighbors, lattice_k=lattice_k) for s in structures]


def build_graphs(structures, cutoff_angstrom: float = 5.0, max_neighbors: int = 16,
                 workers: int | None = None, *, progress: bool = True,
                 chunk_size: int = 256, lattice_k: int = DEFAULT_LATTICE_K) -> list[CrystalGraph]:
    """:func:`build_graph` for many structures, in order, with a tqdm bar.

    workers: processes to use; None or 1 builds in this process (graphs take
    ~1 ms each, so processes pay off only for tens of thousands of structures).
    """
    from tqdm.auto import tqdm

    structures = list(structures)
    _check_settings(cutoff_angstrom, max_neighbors)
    _check_lattice_k(lattice_k)
    if workers is not None and (not isinstance(workers, int) or workers < 1):
        raise ValueError(f"workers must be None or a positive integer, not {workers!r}")
    if workers is None or workers == 1 or len(structures) <= chunk_size:
        return [build_graph(s, cutoff_angstrom, max_neighbors, lattice_k=lattice_k)
                for s in tqdm(structures, desc="graphs", unit="struct", disable=not progress)]
    chunks = [(structures[k:k + chunk_size], cutoff_angstrom, max_neighbors, lattice_k)
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
    edge_index (2, E) long (sender, receiver; global site indices, sorted by receiver);
    edge_vec (E, 3) float; lattice_descriptor (n_graphs, K + 1) float; n_graphs: int.
    """

    numbers: "torch.Tensor"
    atom_site: "torch.Tensor"
    atom_weight: "torch.Tensor"
    site_weight: "torch.Tensor"
    site_graph: "torch.Tensor"
    edge_index: "torch.Tensor"
    edge_vec: "torch.Tensor"
    lattice_descriptor: "torch.Tensor"
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
    ks = {g.lattice_k for g in graphs}
    if len(ks) != 1:
        raise ValueError(f"graphs with different lattice_k {sorted(ks)} cannot be batched; build them all "
                         "with the same lattice_k (model.graph_kwargs())")
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
        lattice_descriptor=torch.from_numpy(np.stack([g.lattice_descriptor for g in graphs]).astype(np.float32)),
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
    from .._fileio import atomic_output

    with atomic_output(path) as tmp:
        with open(tmp, "wb") as fh:
            np.savez(fh, **arrays)


def load_graphs(path) -> list[CrystalGraph]:
    """Read graphs written by :func:`save_graphs`."""
    with np.load(os.fspath(path), allow_pickle=False) as data:
        missing = [n for n in _GRAPH_ARRAYS if n not in data.files]
        if missing:
            raise ValueError(f"{os.fspath(path)} lacks {missing}: it was written by an older xrdflow; "
                             "rebuild the graphs with build_graphs and save_graphs")
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
