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
:mod:`~xrdflow.train.loop` (stages shared with the classifier: :class:`StreamTrainer`),
:mod:`~xrdflow.train.contrastive` (the contrastive trainer), :mod:`~xrdflow.train.cli`.
"""
from .config import (DataConfig, OptimConfig, RunConfig, TrainConfig, build_dataclass, config_from_dict, config_to_dict,
                     load_config, save_config, to_plain)
from .checkpoint import load_model, read_checkpoint, rng_state, save_checkpoint, set_rng_state
from .contrastive import TrainResult, Trainer, train
from .data import PreparedData, prepare_data, read_sources, sha256_file, source_fingerprint
from .loop import StreamTrainer, progress_enabled
from .metrics import MetricsLog
from .schedule import WarmupCosine

__all__ = ["DataConfig", "MetricsLog", "OptimConfig", "PreparedData", "RunConfig", "StreamTrainer", "TrainConfig",
           "TrainResult", "Trainer", "WarmupCosine", "build_dataclass", "config_from_dict", "config_to_dict",
           "load_config", "load_model", "prepare_data", "progress_enabled", "read_checkpoint", "read_sources",
           "rng_state", "save_checkpoint", "save_config", "set_rng_state", "sha256_file", "source_fingerprint",
           "to_plain", "train"]
