"""Configuration of the space-group classifier: plain dataclasses, read from and written to YAML.

::

    from xrdflow.classify import load_config
    cfg = load_config("configs/classifier_small.yaml")
    cfg.model.pattern.n_points, cfg.optim.lr, cfg.run.out_dir
    sim = cfg.make_simulator()          # the 2-theta grid the classifier reads

Sections (all optional in YAML; unknown keys are refused naming the key):

``model``        :class:`ClassifierModelConfig` (pattern encoder + heads)
``data``         :class:`xrdflow.train.DataConfig` (sources, dedup, leakage check;
                 the same section as the contrastive trainer)
``simulator``    keyword arguments of :class:`xrdflow.Simulator`; ``n_points``
                 defaults to the encoder's input length and must equal it
``augmentation`` ``"realistic"``, ``"none"`` or a dict of :class:`xrdflow.Augmentation` fields
``optim``        :class:`xrdflow.train.OptimConfig`
``run``          :class:`xrdflow.train.RunConfig`

The ``data``, ``optim`` and ``run`` sections, the dict/YAML helpers and the simulator/augmentation
checks are those of :mod:`xrdflow.train.config` (reused, not copied).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from ..models import PatternEncoderConfig
from ..train.config import (DataConfig, OptimConfig, RunConfig, SimulatedRunConfig, build_dataclass, read_yaml,
                            sections_from_dict, to_plain, write_yaml)

__all__ = ["ClassifierModelConfig", "ClassifierConfig", "HEADS", "config_from_dict", "config_to_dict",
           "load_config", "save_config"]

#: The three heads, in the order of ``loss_weights``.
HEADS = ("crystal_system", "extinction_group", "space_group")
SCHEMES = ("laue", "crystal_system", "standard_setting")


@dataclass
class ClassifierModelConfig:
    """Pattern encoder (:class:`xrdflow.models.PatternEncoderConfig`) plus three linear heads.

    dropout: dropout on the pooled features before the heads.
    scheme: extinction-group scheme of :mod:`xrdflow.data.labels` ("laue": 120 classes).
    loss_weights: weights of the crystal-system, extinction-group and space-group cross entropies.
    label_smoothing: of every cross entropy (0 = none).
    init_encoder_from: optional contrastive checkpoint (``xrdflow train``) whose pattern
        encoder initialises this one (same PatternEncoderConfig required); None = random init.
    """

    pattern: PatternEncoderConfig = field(default_factory=lambda: PatternEncoderConfig(
        n_points=1024, stem_channels=16, widths=(16, 32, 64, 128), blocks=(1, 1, 1, 1), norm="batch"))
    dropout: float = 0.1
    scheme: str = "laue"
    loss_weights: tuple = (1.0, 1.0, 1.0)
    label_smoothing: float = 0.0
    init_encoder_from: Any = None

    def __post_init__(self):
        if isinstance(self.pattern, dict):
            self.pattern = build_dataclass(PatternEncoderConfig, self.pattern, "model.pattern")
        if not isinstance(self.pattern, PatternEncoderConfig):
            raise TypeError(f"model.pattern must be a PatternEncoderConfig or a mapping, got "
                            f"{type(self.pattern).__name__}")
        if isinstance(self.dropout, bool) or not isinstance(self.dropout, (int, float)) or not 0 <= self.dropout < 1:
            raise ValueError(f"model.dropout must be a number in [0, 1), got {self.dropout!r}")
        if self.scheme not in SCHEMES:
            raise ValueError(f"model.scheme must be one of {SCHEMES}, got {self.scheme!r}")
        w = tuple(self.loss_weights) if isinstance(self.loss_weights, (list, tuple)) else None
        if w is None or len(w) != 3 or not all(isinstance(x, (int, float)) and not isinstance(x, bool)
                                               and math.isfinite(x) and x >= 0 for x in w) or sum(w) <= 0:
            raise ValueError("model.loss_weights must be three numbers >= 0 (crystal system, extinction group, "
                             f"space group), not all 0; got {self.loss_weights!r}")
        self.loss_weights = tuple(float(x) for x in w)
        ls = self.label_smoothing
        if isinstance(ls, bool) or not isinstance(ls, (int, float)) or not 0 <= ls < 1:
            raise ValueError(f"model.label_smoothing must be in [0, 1), got {ls!r}")
        if self.init_encoder_from is not None and not isinstance(self.init_encoder_from, str):
            raise ValueError(f"model.init_encoder_from must be a checkpoint path or null, got "
                             f"{self.init_encoder_from!r}")


def _default_simulator() -> dict:
    return {"radiation": "CuKa", "two_theta": [5.0, 90.0], "W": 0.04}


def _default_data() -> DataConfig:
    return DataConfig(train=["bundled:train"], val=[], holdout_val=200, max_val_structures=500,
                      leakage_against=[], remove_overlaps=True, dedup=True)


@dataclass
class ClassifierConfig(SimulatedRunConfig):
    """Everything a classifier training run depends on (see the module docs); ``make_simulator`` /
    ``make_augmentation`` as :class:`xrdflow.train.config.SimulatedRunConfig` (clean-pattern undersampling
    note silenced: augmented patterns are broader, crystallite size)."""

    quiet_grid_step = True

    model: ClassifierModelConfig = field(default_factory=ClassifierModelConfig)
    data: DataConfig = field(default_factory=_default_data)
    simulator: dict = field(default_factory=_default_simulator)
    augmentation: Any = "realistic"
    scan_range: Any = None
    optim: OptimConfig = field(default_factory=lambda: OptimConfig(lr=2e-3, warmup_steps=50, epochs=10,
                                                                   batch_size=64))
    run: RunConfig = field(default_factory=lambda: RunConfig(out_dir="runs/classifier"))

    def __post_init__(self):
        if not isinstance(self.model, ClassifierModelConfig):
            raise TypeError(f"model must be a ClassifierModelConfig, got {type(self.model).__name__}")
        self._check_simulation(self.model.pattern.n_points, "the encoder", "(model.pattern.n_points)")


def config_to_dict(cfg: ClassifierConfig) -> dict:
    """Plain dicts/lists/numbers (what YAML files and checkpoints hold)."""
    return to_plain(cfg)


def config_from_dict(data: dict) -> ClassifierConfig:
    """A :class:`ClassifierConfig` from plain values; unknown keys refused, missing ones defaulted."""
    return sections_from_dict(ClassifierConfig, data, {"model": ClassifierModelConfig, "data": DataConfig,
                                                       "optim": OptimConfig, "run": RunConfig}, _default_simulator)


def load_config(path) -> ClassifierConfig:
    """Read a YAML config (``yaml.safe_load``)."""
    return read_yaml(path, config_from_dict)


def save_config(cfg: ClassifierConfig, path) -> None:
    """Write the config as YAML, atomically."""
    write_yaml(cfg, path)
