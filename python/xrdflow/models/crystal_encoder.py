"""Equivariant crystal encoder: MACE-style message passing with an ACE symmetric product.

Per layer t (Batatia et al., MACE, NeurIPS 2022, eqs. 8-11; the EACNN paper eq. 3):

* A-basis (one neighbour sum): A_i = 1/avg_nb * sum_j w_j R(r_ij) [h_j (x) Y(r_ij)]  - channel-wise
  ("uvu") tensor product whose path weights come from an MLP on a Bessel radial basis;
* B-basis (ACE product, correlation order nu): B^(1) = A, B^(k) = B^(k-1) (x) A channel-wise
  ("uuu", learnable weight per channel and coupling path: the expansion coefficients c of eq. 2),
  so B^(k) holds k-body symmetric products of the A features of one channel;
* message m_i = sum_k Linear_k(B^(k)) (eq. 3: u_1 + u_2 + ... + u_nu), h_i <- m_i + Linear(h_i).

Readout: an invariant (0e) linear readout of every layer, summed, through an MLP,
then the site-weighted mean over sites of each crystal (invariant to the choice of
unit cell: primitive, conventional or supercell give the same mean).

Lattice branch (``lattice_features``, default on): a powder pattern's peak positions
are set by the lattice (Q = 2 pi / d), which a 5 A local encoder sees only implicitly.
:class:`LatticeBranch` maps each graph's lattice descriptor (the K smallest plane
spacings Q of the primitive lattice, sorted, and the volume per atom; see
:func:`xrdflow.models.graph.lattice_descriptor`) through an MLP; its output is
concatenated with the pooled site features and mixed by a small MLP into feat_dim.
With ``lattice_features: false`` the encoder is exactly the local model.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn
from e3nn import o3

from .graph import DEFAULT_LATTICE_K, GraphBatch

__all__ = ["CrystalEncoderConfig", "CrystalEncoder", "BesselBasis", "PolynomialCutoff",
           "RadialEmbedding", "SpeciesEmbedding", "InteractionBlock", "SymmetricProduct",
           "LatticeBranch", "scatter_sum"]

_N_ELEMENTS = 119  # atomic numbers 1-118 (index 0 unused)


def _as_tuple(value, name):
    if isinstance(value, (list, tuple)):
        return tuple(int(v) for v in value)
    raise TypeError(f"{name} must be a list or tuple of integers, not {type(value).__name__}")


@dataclass
class CrystalEncoderConfig:
    """Settings of :class:`CrystalEncoder` (plain numbers/strings/tuples, YAML-friendly).

    hidden_irreps: node features between layers (e3nn irreps string).
    lmax: max degree of the edge spherical harmonics (and of the product basis).
    product_channels: channels K of the A/B bases, irreps K x (0e + 1o + ... lmax).
    correlation: ACE correlation order nu in 1..3 (1 = no symmetric product, the ablation).
    num_interactions: message-passing layers.
    num_bessel, envelope_p: radial basis size and polynomial cutoff exponent (DimeNet).
    cutoff_angstrom, max_neighbors: graph settings (use :meth:`graph_kwargs` with build_graph).
    radial_hidden: hidden widths of the radial MLP.
    avg_num_neighbors: constant message normaliser (a fixed number, so outputs do not depend
        on the batch or the cell choice).
    readout_dim: width of the invariant per-site readout; feat_dim: pooled output width.
    lattice_features: add the global lattice branch (:class:`LatticeBranch`); False = the local
        model alone (ablation; the same parameters and outputs as before the branch existed).
    lattice_k: plane spacings in the lattice descriptor (graphs must be built with the same value:
        use :meth:`graph_kwargs`); lattice_hidden: width of the lattice MLP.
    """

    hidden_irreps: str = "32x0e+16x1o+8x2e"
    lmax: int = 2
    product_channels: int = 16
    correlation: int = 2
    num_interactions: int = 2
    num_bessel: int = 8
    envelope_p: int = 6
    cutoff_angstrom: float = 5.0
    max_neighbors: int = 16
    radial_hidden: tuple = (32,)
    avg_num_neighbors: float = 16.0
    readout_dim: int = 64
    feat_dim: int = 128
    lattice_features: bool = True
    lattice_k: int = DEFAULT_LATTICE_K
    lattice_hidden: int = 64

    def __post_init__(self):
        self.radial_hidden = _as_tuple(self.radial_hidden, "radial_hidden")
        irreps = o3.Irreps(self.hidden_irreps)  # raises on a bad string
        if not any(ir == o3.Irrep("0e") for _, ir in irreps):
            raise ValueError(f"hidden_irreps {self.hidden_irreps!r} needs scalars (0e) for the readout")
        if not 1 <= int(self.correlation) <= 3:
            raise ValueError(f"correlation must be 1, 2 or 3 (1 = no ACE product), not {self.correlation}")
        for name in ("lmax", "product_channels", "num_interactions", "num_bessel", "envelope_p",
                     "max_neighbors", "readout_dim", "feat_dim", "lattice_k", "lattice_hidden"):
            v = getattr(self, name)
            if isinstance(v, bool) or int(v) != v or v < (0 if name == "lmax" else 1):
                raise ValueError(f"{name} must be a positive integer, not {v!r}")
        if not isinstance(self.lattice_features, bool):
            raise TypeError(f"lattice_features must be true or false, not {self.lattice_features!r}")
        if not 0 <= self.lmax <= 4:
            raise ValueError(f"lmax must be in 0..4, not {self.lmax}")
        if not (0.5 <= float(self.cutoff_angstrom) <= 20.0):
            raise ValueError(f"cutoff_angstrom = {self.cutoff_angstrom} is outside [0.5, 20]")
        if not float(self.avg_num_neighbors) > 0:
            raise ValueError("avg_num_neighbors must be > 0")

    def graph_kwargs(self) -> dict:
        """Arguments for build_graph / build_graphs matching this encoder."""
        return {"cutoff_angstrom": float(self.cutoff_angstrom), "max_neighbors": int(self.max_neighbors),
                "lattice_k": int(self.lattice_k)}


def scatter_sum(src: torch.Tensor, index: torch.Tensor, dim_size: int) -> torch.Tensor:
    """Sum rows of ``src`` into ``dim_size`` buckets given by ``index``."""
    out = src.new_zeros((dim_size,) + tuple(src.shape[1:]))
    return out.index_add_(0, index, src)


class BesselBasis(nn.Module):
    """sqrt(2/c) sin(n pi r / c) / r, n = 1..N (DimeNet, Gasteiger et al. 2020, eq. 7)."""

    def __init__(self, r_max: float, num_basis: int = 8):
        super().__init__()
        self.r_max = float(r_max)
        self.register_buffer("freq", torch.arange(1, num_basis + 1, dtype=torch.get_default_dtype()) * math.pi / self.r_max)
        self.prefactor = math.sqrt(2.0 / self.r_max)

    def forward(self, r: torch.Tensor) -> torch.Tensor:  # (E, 1) -> (E, N)
        return self.prefactor * torch.sin(self.freq * r) / r


class PolynomialCutoff(nn.Module):
    """Smooth envelope 1 - (p+1)(p+2)/2 x^p + p(p+2) x^(p+1) - p(p+1)/2 x^(p+2), x = r/c
    (DimeNet eq. 8, as in MACE); zero with two vanishing derivatives at the cutoff."""

    def __init__(self, r_max: float, p: int = 6):
        super().__init__()
        self.r_max = float(r_max)
        self.p = float(p)

    def forward(self, r: torch.Tensor) -> torch.Tensor:
        p = self.p
        x = r / self.r_max
        env = (1.0 - (p + 1.0) * (p + 2.0) / 2.0 * x ** p + p * (p + 2.0) * x ** (p + 1.0)
               - p * (p + 1.0) / 2.0 * x ** (p + 2.0))
        return env * (x < 1.0)


class RadialEmbedding(nn.Module):
    """Bessel basis times the polynomial envelope; irreps_out = num_basis x 0e."""

    def __init__(self, r_max: float, num_basis: int = 8, p: int = 6):
        super().__init__()
        self.bessel = BesselBasis(r_max, num_basis)
        self.cutoff = PolynomialCutoff(r_max, p)
        self.irreps_out = o3.Irreps(f"{num_basis}x0e")

    def forward(self, r: torch.Tensor) -> torch.Tensor:
        return self.bessel(r) * self.cutoff(r)


class SpeciesEmbedding(nn.Module):
    """Learned embedding per element, averaged over the atoms of a site with their
    occupancy fractions (substitutional disorder as a virtual crystal)."""

    def __init__(self, channels: int):
        super().__init__()
        self.embed = nn.Embedding(_N_ELEMENTS, channels)
        self.irreps_out = o3.Irreps(f"{channels}x0e")

    def forward(self, numbers, atom_site, atom_weight, n_sites):
        return scatter_sum(self.embed(numbers) * atom_weight[:, None], atom_site, n_sites)


def _tp_out_irreps_with_instructions(irreps1: o3.Irreps, irreps2: o3.Irreps, target: o3.Irreps):
    """uvu instructions irreps1 (x) irreps2 -> outputs whose irrep is in target (as MACE)."""
    wanted = {ir for _, ir in target}
    out, instructions = [], []
    for i, (mul, ir1) in enumerate(irreps1):
        for j, (_, ir2) in enumerate(irreps2):
            for ir in ir1 * ir2:
                if ir in wanted:
                    instructions.append((i, j, len(out), "uvu", True))
                    out.append((mul, ir))
    irreps_out = o3.Irreps(out)
    irreps_out, perm, _ = irreps_out.sort()
    instructions = [(i, j, perm[k], mode, train) for i, j, k, mode, train in instructions]
    return irreps_out, instructions


class InteractionBlock(nn.Module):
    """A-basis: A_i = Linear( 1/avg * sum_j w_j TP_uvu(Linear(h_j), Y(r_ij); MLP(R(r_ij))) ).

    irreps_in: node features h; irreps_out: the A-basis irreps K x (0e + 1o + 2e ...).
    """

    def __init__(self, irreps_in, irreps_sh, irreps_out, radial_dim: int, radial_hidden,
                 avg_num_neighbors: float):
        super().__init__()
        self.irreps_in = o3.Irreps(irreps_in)
        self.irreps_sh = o3.Irreps(irreps_sh)
        self.irreps_out = o3.Irreps(irreps_out)
        self.linear_up = o3.Linear(self.irreps_in, self.irreps_in)
        irreps_mid, instructions = _tp_out_irreps_with_instructions(self.irreps_in, self.irreps_sh, self.irreps_out)
        self.conv_tp = o3.TensorProduct(self.irreps_in, self.irreps_sh, irreps_mid, instructions,
                                        shared_weights=False, internal_weights=False)
        layers, width = [], radial_dim
        for h in radial_hidden:
            layers += [nn.Linear(width, h), nn.SiLU()]
            width = h
        layers.append(nn.Linear(width, self.conv_tp.weight_numel))
        self.radial_mlp = nn.Sequential(*layers)
        self.linear = o3.Linear(irreps_mid, self.irreps_out)
        self.inv_avg = 1.0 / float(avg_num_neighbors)

    def forward(self, h, edge_sh, edge_radial, edge_index, sender_weight):
        sender, receiver = edge_index[0], edge_index[1]
        # the tensor product is linear in h: weigh the S sites by their occupancy before gathering
        # them onto the E edges (E ~ 13 S) rather than weighing every message
        h = self.linear_up(h) * sender_weight[:, None]
        weights = self.radial_mlp(edge_radial)
        msg = self.conv_tp(h[sender], edge_sh, weights)
        return self.linear(scatter_sum(msg, receiver, h.shape[0]) * self.inv_avg)


def _uuu_instructions(irreps1: o3.Irreps, irreps2: o3.Irreps, target: o3.Irreps, symmetric: bool):
    instructions = []
    for i, (_, ir1) in enumerate(irreps1):
        for j, (_, ir2) in enumerate(irreps2):
            if symmetric and j < i:
                continue
            for k, (_, ir) in enumerate(target):
                if ir in ir1 * ir2:
                    instructions.append((i, j, k, "uuu", True))
    return instructions


class SymmetricProduct(nn.Module):
    """ACE product basis up to correlation order nu, channel by channel.

    B^(1) = A; B^(k) = TP_uuu(B^(k-1), A) restricted to the irreps of A, with one learnable
    weight per channel and coupling path; out = sum_k Linear_k(B^(k)).  The iterated
    coupling spans the symmetric k-fold products of A used by MACE's SymmetricContraction
    (written with plain e3nn tensor products; no species-dependent weights).
    """

    def __init__(self, irreps_in, irreps_out, correlation: int):
        super().__init__()
        self.irreps_in = o3.Irreps(irreps_in)
        self.irreps_out = o3.Irreps(irreps_out)
        muls = {mul for mul, _ in self.irreps_in}
        if len(muls) != 1:
            raise ValueError(f"SymmetricProduct needs equal channels per irrep, got {self.irreps_in}")
        self.correlation = int(correlation)
        self.products = nn.ModuleList()
        for k in range(2, self.correlation + 1):
            instr = _uuu_instructions(self.irreps_in, self.irreps_in, self.irreps_in, symmetric=(k == 2))
            self.products.append(o3.TensorProduct(self.irreps_in, self.irreps_in, self.irreps_in, instr,
                                                  internal_weights=True, shared_weights=True))
        self.linears = nn.ModuleList(o3.Linear(self.irreps_in, self.irreps_out)
                                     for _ in range(self.correlation))

    def forward(self, a):
        b = a
        out = self.linears[0](b)
        for tp, lin in zip(self.products, self.linears[1:]):
            b = tp(b, a)
            out = out + lin(b)
        return out


class LatticeBranch(nn.Module):
    """MLP on a lattice descriptor (n_graphs, K + 1): K ascending plane spacings Q (1/angstrom)
    and the volume per atom (angstrom^3) -> (n_graphs, hidden).

    Input: the sorted Q vector itself, scaled to ~[0, 1] by a fixed 1 / (8 1/angstrom), and
    log(volume per atom / 15 angstrom^3). Sorting fixes the order of the entries, so a plain
    MLP is invariant to how the planes were enumerated, and the sorted vector is a
    continuous function of the lattice (it only loses smoothness where two spacings cross).
    It keeps every Q exactly, where a Gaussian expansion on a grid would blur peak
    positions to the grid spacing; fixed scalings (no LayerNorm) keep the absolute scale,
    which sets the peak positions. A stretched cell (Q smaller) is thus a different input.
    """

    Q_SCALE = 1.0 / 8.0        # angstrom: Q of MP-20 primitive cells is ~0.5-6 1/angstrom
    VOLUME_REF = 15.0          # angstrom^3 per atom, typical of inorganic solids

    def __init__(self, k: int, hidden: int):
        super().__init__()
        self.k = int(k)
        self.net = nn.Sequential(nn.Linear(self.k + 1, hidden), nn.SiLU(), nn.Linear(hidden, hidden), nn.SiLU())

    def forward(self, descriptor: torch.Tensor) -> torch.Tensor:
        if descriptor.dim() != 2 or descriptor.shape[1] != self.k + 1:
            raise ValueError(f"lattice descriptor has shape {tuple(descriptor.shape)}, the encoder expects "
                             f"(n_graphs, {self.k + 1}) (lattice_k = {self.k}); build the graphs with the "
                             "model's graph_kwargs()")
        q = descriptor[:, :self.k] * self.Q_SCALE
        vol = torch.log(descriptor[:, self.k:].clamp_min(1e-3) / self.VOLUME_REF)
        return self.net(torch.cat([q, vol], dim=1))


class CrystalEncoder(nn.Module):
    """Invariant crystal embedding from a :class:`GraphBatch`.

    forward(batch) -> (n_graphs, feat_dim) features (before any projection head);
    forward_nodes(batch) -> (n_sites, hidden_irreps.dim) equivariant node features of the last layer.
    """

    def __init__(self, cfg: CrystalEncoderConfig | None = None):
        super().__init__()
        cfg = CrystalEncoderConfig() if cfg is None else cfg
        if not isinstance(cfg, CrystalEncoderConfig):
            raise TypeError(f"CrystalEncoder needs a CrystalEncoderConfig, not {type(cfg).__name__}")
        self.cfg = cfg
        hidden = o3.Irreps(cfg.hidden_irreps).simplify()
        self.irreps_hidden = hidden
        self.irreps_sh = o3.Irreps.spherical_harmonics(cfg.lmax)
        irreps_a = (o3.Irreps([(cfg.product_channels, ir) for _, ir in self.irreps_sh])).simplify()
        n_scalar = sum(mul for mul, ir in hidden if ir == o3.Irrep("0e"))
        self.embedding = SpeciesEmbedding(n_scalar)
        self.radial = RadialEmbedding(cfg.cutoff_angstrom, cfg.num_bessel, cfg.envelope_p)
        self.spherical_harmonics = o3.SphericalHarmonics(self.irreps_sh, normalize=True, normalization="component")
        self.interactions = nn.ModuleList()
        self.products = nn.ModuleList()
        self.skips = nn.ModuleList()
        self.readouts = nn.ModuleList()
        irreps_in = self.embedding.irreps_out
        for _ in range(cfg.num_interactions):
            self.interactions.append(InteractionBlock(irreps_in, self.irreps_sh, irreps_a, cfg.num_bessel,
                                                      cfg.radial_hidden, cfg.avg_num_neighbors))
            self.products.append(SymmetricProduct(irreps_a, hidden, cfg.correlation))
            self.skips.append(o3.Linear(irreps_in, hidden))
            self.readouts.append(o3.Linear(hidden, o3.Irreps(f"{cfg.readout_dim}x0e")))
            irreps_in = hidden
        self.irreps_in = o3.Irreps("1o")  # edge vectors
        self.irreps_out = hidden
        self.mlp = nn.Sequential(nn.SiLU(), nn.Linear(cfg.readout_dim, cfg.feat_dim), nn.SiLU(),
                                 nn.Linear(cfg.feat_dim, cfg.feat_dim))
        self.feat_dim = int(cfg.feat_dim)
        if cfg.lattice_features:
            self.lattice = LatticeBranch(cfg.lattice_k, cfg.lattice_hidden)
            self.fuse = nn.Sequential(nn.Linear(cfg.feat_dim + cfg.lattice_hidden, cfg.feat_dim), nn.SiLU(),
                                      nn.Linear(cfg.feat_dim, cfg.feat_dim))

    def _run(self, batch: GraphBatch):
        if not isinstance(batch, GraphBatch):
            raise TypeError(f"CrystalEncoder needs a GraphBatch (collate_graphs), not {type(batch).__name__}")
        n_sites = batch.n_sites
        h = self.embedding(batch.numbers, batch.atom_site, batch.atom_weight, n_sites)
        vec = batch.edge_vec
        r = torch.linalg.norm(vec, dim=-1, keepdim=True)
        edge_radial = self.radial(r)
        edge_sh = self.spherical_harmonics(vec)
        readout = 0.0
        for inter, prod, skip, ro in zip(self.interactions, self.products, self.skips, self.readouts):
            a = inter(h, edge_sh, edge_radial, batch.edge_index, batch.site_weight)
            h = prod(a) + skip(h)
            readout = readout + ro(h)
        return h, readout

    def forward_nodes(self, batch: GraphBatch) -> torch.Tensor:
        """Equivariant per-site features (irreps ``self.irreps_out``) of the last layer."""
        return self._run(batch)[0]

    def forward(self, batch: GraphBatch) -> torch.Tensor:
        _, readout = self._run(batch)
        node = self.mlp(readout)
        w = batch.site_weight[:, None]
        total = scatter_sum(node * w, batch.site_graph, batch.n_graphs)
        norm = scatter_sum(w, batch.site_graph, batch.n_graphs)
        pooled = total / norm
        if not self.cfg.lattice_features:
            return pooled
        lat = self.lattice(batch.lattice_descriptor.to(pooled.dtype))
        return self.fuse(torch.cat([pooled, lat], dim=1))
