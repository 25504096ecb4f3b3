"""Contrastive dual tower: crystal tower (equivariant ACE/MACE encoder) and pattern tower
(1D ResNet), each with a projection head into a shared, L2-normalised space
(EACNN paper sec. 2.3-2.5; CLIP, Radford et al. 2021)."""
from __future__ import annotations

import math
from dataclasses import dataclass, field, fields

import torch
import torch.nn.functional as F
from torch import nn

from .crystal_encoder import CrystalEncoder, CrystalEncoderConfig
from .graph import GraphBatch
from .loss import clip_loss
from .pattern_encoder import PatternEncoder, PatternEncoderConfig

__all__ = ["DualTowerConfig", "DualTower", "ProjectionHead", "fuse_embeddings"]


@dataclass
class DualTowerConfig:
    """crystal, pattern: tower configs (dicts are accepted and converted); embed_dim: shared
    embedding width; init_temperature: initial CLIP temperature (learnable, logit_scale =
    log(1/T)); projection_hidden: hidden width of the 2-layer projection heads (0 = linear).

    simulated_pattern_weight: w >= 0 in a structure's embedding normalize(c + w p), where c is the
    crystal tower's embedding and p the pattern tower's embedding of the structure's own clean
    simulated pattern (the model's grid and simulator); 0 (default) is the crystal tower alone, as in
    the EACNN paper.  It holds no weights, so a checkpoint can be given another w after training."""

    crystal: CrystalEncoderConfig = field(default_factory=CrystalEncoderConfig)
    pattern: PatternEncoderConfig = field(default_factory=PatternEncoderConfig)
    embed_dim: int = 384
    init_temperature: float = 0.07
    projection_hidden: int = 512
    simulated_pattern_weight: float = 0.0

    def __post_init__(self):
        if isinstance(self.crystal, dict):
            self.crystal = _from_dict(CrystalEncoderConfig, self.crystal, "crystal")
        if isinstance(self.pattern, dict):
            self.pattern = _from_dict(PatternEncoderConfig, self.pattern, "pattern")
        if not isinstance(self.crystal, CrystalEncoderConfig) or not isinstance(self.pattern, PatternEncoderConfig):
            raise TypeError("DualTowerConfig.crystal / .pattern must be CrystalEncoderConfig / PatternEncoderConfig or dicts")
        if isinstance(self.embed_dim, bool) or int(self.embed_dim) != self.embed_dim or self.embed_dim < 1:
            raise ValueError(f"embed_dim must be a positive integer, not {self.embed_dim!r}")
        if not (0.0 < float(self.init_temperature) <= 1.0):
            raise ValueError(f"init_temperature must be in (0, 1], not {self.init_temperature}")
        if int(self.projection_hidden) < 0:
            raise ValueError("projection_hidden must be >= 0")
        w = self.simulated_pattern_weight
        if isinstance(w, bool) or not isinstance(w, (int, float)) or not math.isfinite(w) or w < 0:
            raise ValueError(f"simulated_pattern_weight must be a finite number >= 0, not {w!r}")
        self.simulated_pattern_weight = float(w)


def _from_dict(cls, values: dict, name: str):
    known = {f.name for f in fields(cls)}
    unknown = set(values) - known
    if unknown:
        raise ValueError(f"unknown {name} config keys {sorted(unknown)}; known: {sorted(known)}")
    return cls(**values)


class ProjectionHead(nn.Module):
    """Linear, or Linear-SiLU-Linear when hidden > 0 (SimCLR-style head)."""

    def __init__(self, d_in: int, d_out: int, hidden: int = 0):
        super().__init__()
        if hidden > 0:
            self.net = nn.Sequential(nn.Linear(d_in, hidden), nn.SiLU(), nn.Linear(hidden, d_out))
        else:
            self.net = nn.Linear(d_in, d_out)

    def forward(self, x):
        return self.net(x)


def fuse_embeddings(crystal: torch.Tensor, simulated: torch.Tensor, weight: float) -> torch.Tensor:
    """normalize(crystal + weight * simulated) row by row: a structure's embedding from its crystal-tower
    embedding and the pattern-tower embedding of its own clean simulated pattern (both (n, d), unit rows);
    ``crystal`` itself when weight is 0."""
    if crystal.shape != simulated.shape:
        raise ValueError(f"crystal embeddings {tuple(crystal.shape)} and simulated-pattern embeddings "
                         f"{tuple(simulated.shape)} must have the same shape")
    if weight == 0:
        return crystal
    return F.normalize(crystal + weight * simulated, dim=-1)


class DualTower(nn.Module):
    """encode_crystals(GraphBatch) and encode_patterns((B, n_points)) -> L2-normalised (., embed_dim);
    encode_structures(GraphBatch, simulated_patterns) -> the structures' embeddings (the crystal tower's,
    fused with their simulated patterns' when ``cfg.simulated_pattern_weight`` > 0);
    forward(batch, patterns[, simulated_patterns]) -> (loss, stats) of :func:`clip_loss`."""

    def __init__(self, cfg: DualTowerConfig | None = None):
        super().__init__()
        cfg = DualTowerConfig() if cfg is None else cfg
        if not isinstance(cfg, DualTowerConfig):
            raise TypeError(f"DualTower needs a DualTowerConfig, not {type(cfg).__name__}")
        self.cfg = cfg
        self.crystal_encoder = CrystalEncoder(cfg.crystal)
        self.pattern_encoder = PatternEncoder(cfg.pattern)
        self.crystal_proj = ProjectionHead(self.crystal_encoder.feat_dim, cfg.embed_dim, cfg.projection_hidden)
        self.pattern_proj = ProjectionHead(self.pattern_encoder.feat_dim, cfg.embed_dim, cfg.projection_hidden)
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1.0 / cfg.init_temperature)))

    @property
    def embed_dim(self) -> int:
        return int(self.cfg.embed_dim)

    @property
    def n_points(self) -> int:
        return int(self.cfg.pattern.n_points)

    def graph_kwargs(self) -> dict:
        """cutoff_angstrom, max_neighbors and lattice_k for build_graph(s), as the crystal tower expects."""
        return self.cfg.crystal.graph_kwargs()

    def encode_crystals(self, batch: GraphBatch) -> torch.Tensor:
        return F.normalize(self.crystal_proj(self.crystal_encoder(batch)), dim=-1)

    def encode_patterns(self, patterns: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.pattern_proj(self.pattern_encoder(patterns)), dim=-1)

    @property
    def simulated_pattern_weight(self) -> float:
        return float(self.cfg.simulated_pattern_weight)

    @property
    def uses_simulated_patterns(self) -> bool:
        """Whether a structure's embedding needs its clean simulated pattern (simulated_pattern_weight > 0)."""
        return self.simulated_pattern_weight > 0

    def encode_structures(self, batch: GraphBatch, simulated_patterns: "torch.Tensor | None" = None) -> torch.Tensor:
        """The structures' embeddings: :meth:`encode_crystals`, fused by :func:`fuse_embeddings` with the
        pattern tower's embeddings of ``simulated_patterns`` ((B, n_points) clean patterns of the same
        structures, the model's grid) when :attr:`uses_simulated_patterns`."""
        c = self.encode_crystals(batch)
        if not self.uses_simulated_patterns:
            return c
        if simulated_patterns is None:
            raise ValueError(f"this model's structure embeddings use each structure's simulated pattern "
                             f"(simulated_pattern_weight = {self.simulated_pattern_weight:g}); pass "
                             "simulated_patterns, the clean patterns of the same structures")
        if simulated_patterns.shape[0] != len(batch):
            raise ValueError(f"{len(batch)} crystals but {simulated_patterns.shape[0]} simulated patterns")
        return fuse_embeddings(c, self.encode_patterns(simulated_patterns), self.simulated_pattern_weight)

    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):
        """nn.Module.load_state_dict, with a clear message when the weights were trained with(out)
        the crystal tower's lattice branch and the config says otherwise (checkpoints written
        before the branch existed have no ``lattice_features`` key, which now defaults to true)."""
        has = any(k.startswith("crystal_encoder.lattice.") for k in state_dict)
        want = bool(self.cfg.crystal.lattice_features)
        if strict and has != want:
            raise ValueError(f"the weights were trained {'with' if has else 'without'} the crystal lattice branch "
                             f"but the model config has crystal.lattice_features = {want}; set "
                             f"model.crystal.lattice_features: {'true' if has else 'false'} in the run's config "
                             "(checkpoints from before the branch existed need false)")
        return super().load_state_dict(state_dict, strict=strict, assign=assign)

    def forward(self, batch: GraphBatch, patterns: torch.Tensor, simulated_patterns: "torch.Tensor | None" = None):
        if len(batch) != patterns.shape[0]:
            raise ValueError(f"{len(batch)} crystals but {patterns.shape[0]} patterns; pairs must line up")
        return clip_loss(self.encode_structures(batch, simulated_patterns), self.encode_patterns(patterns),
                         self.logit_scale)
