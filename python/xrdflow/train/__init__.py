"""Training of the contrastive dual-tower model (issue 5; EACNN, Zhang et al. 2025, sec. 2.3-3).

::

    from xrdflow.train import load_config, train, load_model
    cfg = load_config("configs/contrastive_tiny.yaml")
    result = train(cfg)                          # or: xrdflow train --config configs/contrastive_tiny.yaml
    model, cfg = load_model(result.last_checkpoint, map_location="cpu")   # DualTower in eval mode
    sim = cfg.make_simulator()                   # the pattern grid the model was trained on

Modules: :mod:`~xrdflow.train.config` (dataclasses, YAML),
:mod:`~xrdflow.train.data` (load, de-duplicate, leakage check, cache),
:mod:`~xrdflow.train.schedule` (warmup + cosine),
:mod:`~xrdflow.train.checkpoint` (atomic save, weights_only load),
:mod:`~xrdflow.train.metrics` (metrics.csv, TensorBoard),
:mod:`~xrdflow.train.distributed` (torchrun / DDP),
:mod:`~xrdflow.train.contrastive` (the loop), :mod:`~xrdflow.train.cli`.
"""
from .config import (DataConfig, OptimConfig, RunConfig, TrainConfig, config_from_dict, config_to_dict, load_config,
                     save_config)
from .checkpoint import load_model, read_checkpoint, save_checkpoint
from .contrastive import TrainResult, Trainer, train
from .data import PreparedData, prepare_data
from .schedule import WarmupCosine

__all__ = ["DataConfig", "OptimConfig", "PreparedData", "RunConfig", "TrainConfig", "TrainResult", "Trainer",
           "WarmupCosine", "config_from_dict", "config_to_dict", "load_config", "load_model", "prepare_data",
           "read_checkpoint", "save_checkpoint", "save_config", "train"]
