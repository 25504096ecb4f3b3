"""Learning stack: crystal graphs, equivariant crystal encoder (MACE/ACE-style, e3nn),
1D-ResNet pattern encoder, contrastive dual tower and CLIP loss.

Needs the ``ml`` extra (torch, e3nn, vesin)::

    from xrdflow.models import DualTower, DualTowerConfig, build_graphs, collate_graphs, clip_loss
    model = DualTower(DualTowerConfig())
    graphs = build_graphs(structures, **model.graph_kwargs())
    loss, stats = model(collate_graphs(graphs), torch.from_numpy(Y))
"""
from .graph import (CrystalGraph, GraphBatch, build_graph, build_graphs, collate_graphs, save_graphs, load_graphs,
                    lattice_descriptor, plane_q_values)
from .crystal_encoder import CrystalEncoderConfig, CrystalEncoder
from .pattern_encoder import PatternEncoderConfig, PatternEncoder, normalize_patterns
from .loss import clip_loss
from .dual_tower import DualTowerConfig, DualTower, ProjectionHead, fuse_embeddings

__all__ = ["CrystalEncoderConfig", "PatternEncoderConfig", "DualTowerConfig",
           "CrystalGraph", "GraphBatch", "build_graph", "build_graphs", "collate_graphs",
           "save_graphs", "load_graphs", "lattice_descriptor", "plane_q_values",
           "CrystalEncoder", "PatternEncoder", "DualTower", "clip_loss", "normalize_patterns",
           "ProjectionHead", "fuse_embeddings"]
