"""Training configuration: plain dataclasses, read from and written to YAML.

::

    from xrdflow.train import TrainConfig, load_config, save_config
    cfg = load_config("configs/contrastive_small.yaml")
    cfg.optim.lr, cfg.model.embed_dim, cfg.run.out_dir
    sim = cfg.make_simulator()            # the xf.Simulator the patterns are rendered with
    save_config(cfg, "copy.yaml")         # atomic write; load_config(copy) == cfg

Every section is optional in the YAML file (defaults below).  Unknown keys
are refused with a ValueError naming the key and where it is
(``optim.learning_rate``), so a typo never silently falls back to a default.
Relative paths (data sources, ``run.out_dir``) are taken relative to the
current working directory: run ``xrdflow train`` from the repository root
for the shipped ``configs/``.
"""
from __future__ import annotations

import dataclasses
import math
import os
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Union

from .._fileio import atomic_write_bytes as _atomic_write_bytes
from .._fileio import fsync_directory

__all__ = ["DataConfig", "OptimConfig", "RunConfig", "TrainConfig", "config_from_dict", "config_to_dict",
           "load_config", "save_config", "AMP_MODES", "DEVICES", "build_dataclass", "to_plain", "tuplify",
           "sections_from_dict", "read_yaml", "write_yaml", "fixed_grid_simulator", "check_augmentation",
           "augmentation_from_spec", "scan_range_from_spec"]

AMP_MODES = ("auto", "bf16", "fp16", "none")
DEVICES = ("auto", "cpu", "cuda", "mps")
AUGMENTATIONS = ("realistic", "none")


def _model_config_type():
    from ..models import DualTowerConfig

    return DualTowerConfig


def _default_model_config():
    return _model_config_type()()


# ------------------------------------------------------------------ sections
@dataclass
class DataConfig:
    """Where the structures come from and how the training set is cleaned.

    train: sources joined into the training pool, each a CSV(.gz) table with a
        ``cif`` column, a folder of CIF files, a CIF file, an extxyz file, a data
        set directory (``xrdflow dataset import``), or ``"bundled:train"`` /
        ``"bundled:val"`` / ``"bundled:test"`` (the MP-20 subset in the package).
    val: held-out sources for the retrieval check after each epoch (may be empty).
    holdout_val: structures moved from the (cleaned) training pool into the
        validation set, chosen with ``holdout_seed`` (0 = none).
    holdout_seed: seed of that choice (None = ``run.seed``).  Set it when a
        second training stage (``init_from``) runs with another ``run.seed``
        (fresh augmentation draws), so that it holds out the same structures.
    max_val_structures: validation set size cap (the first N; None = all).
    leakage_against: test sets that must not leak into training (e.g. the
        retrieval gallery).  The training pool (and the validation set) are
        compared with each by id and by structure
        (:func:`xrdflow.data.dedup.check_no_leakage`).
    remove_overlaps: drop training/validation structures that duplicate a
        ``leakage_against`` structure before the check.  With False a leaking
        training set is refused (ValueError naming the structures).
    dedup: remove duplicate structures inside the training pool
        (:func:`xrdflow.data.dedup.find_duplicates`), and validation structures
        that duplicate a training one.
    max_structures: use at most this many training structures (the first N of
        the pool, before cleaning; None = all).
    cache: keep the prepared data (ids, reflections, graphs) under
        ``run.out_dir/cache`` so a resumed or repeated run reuses it.
    val_distractors: training crystals (a fixed random choice, seeded by the
        holdout seed) added to the validation gallery as wrong answers, so that
        validation approaches the difficulty of a gallery of thousands (0 =
        none).  When set, validation also reports ``top1_distractors`` /
        ``top5_distractors`` and best.pt is chosen by ``top1_distractors``.
    """

    train: list = field(default_factory=lambda: ["bundled:train"])
    val: list = field(default_factory=lambda: ["bundled:val"])
    holdout_val: int = 0
    holdout_seed: Optional[int] = None
    max_val_structures: Optional[int] = 300
    leakage_against: list = field(default_factory=lambda: ["bundled:test"])
    remove_overlaps: bool = False
    dedup: bool = True
    max_structures: Optional[int] = None
    cache: bool = True
    val_distractors: int = 0

    def __post_init__(self):
        for name in ("train", "val", "leakage_against"):
            value = getattr(self, name)
            if isinstance(value, (str, os.PathLike)):
                value = [value]
            if not isinstance(value, (list, tuple)) or not all(isinstance(v, (str, os.PathLike)) for v in value):
                raise ValueError(f"data.{name} must be a list of paths or 'bundled:SPLIT' names, got {value!r}")
            setattr(self, name, [os.fspath(v) for v in value])
        if not self.train:
            raise ValueError("data.train is empty: give at least one source (e.g. ['bundled:train'])")
        _check_int("data.holdout_val", self.holdout_val, minimum=0)
        _check_int("data.holdout_seed", self.holdout_seed, minimum=0, allow_none=True)
        _check_int("data.max_val_structures", self.max_val_structures, minimum=1, allow_none=True)
        _check_int("data.max_structures", self.max_structures, minimum=2, allow_none=True)
        _check_int("data.val_distractors", self.val_distractors, minimum=0)
        for name in ("remove_overlaps", "dedup", "cache"):
            _check_bool(f"data.{name}", getattr(self, name))


@dataclass
class OptimConfig:
    """AdamW with linear warmup and cosine decay (see :mod:`xrdflow.train.schedule`).

    lr: peak learning rate after warmup.  min_lr_ratio: final lr / peak lr.
    epochs: passes over the training set; max_steps: optimizer steps instead
        (when set it decides the schedule length and the end of the run).
    batch_size: structures per step and per process (the InfoNCE uses the
        global batch: batch_size x world_size).
    grad_clip: max global gradient norm (0 = no clipping).
    amp: mixed precision on CUDA: "auto" (bf16 where supported, else fp16),
        "bf16", "fp16" (with a GradScaler) or "none".  Ignored off CUDA.
    """

    lr: float = 1e-3
    weight_decay: float = 0.05
    betas: tuple = (0.9, 0.999)
    eps: float = 1e-8
    warmup_steps: int = 100
    min_lr_ratio: float = 0.0
    epochs: int = 10
    max_steps: Optional[int] = None
    batch_size: int = 64
    grad_clip: float = 1.0
    amp: str = "auto"

    def __post_init__(self):
        _check_float("optim.lr", self.lr, positive=True)
        _check_float("optim.weight_decay", self.weight_decay, minimum=0.0)
        betas = tuple(self.betas) if isinstance(self.betas, (list, tuple)) else None
        if betas is None or len(betas) != 2 or not all(isinstance(b, (int, float)) and 0 <= b < 1 for b in betas):
            raise ValueError(f"optim.betas must be two numbers in [0, 1), got {self.betas!r}")
        self.betas = tuple(float(b) for b in betas)
        _check_float("optim.eps", self.eps, positive=True)
        _check_int("optim.warmup_steps", self.warmup_steps, minimum=0)
        _check_float("optim.min_lr_ratio", self.min_lr_ratio, minimum=0.0)
        if self.min_lr_ratio > 1:
            raise ValueError(f"optim.min_lr_ratio is final lr / peak lr and must be in [0, 1], got {self.min_lr_ratio}")
        _check_int("optim.epochs", self.epochs, minimum=1)
        _check_int("optim.max_steps", self.max_steps, minimum=1, allow_none=True)
        _check_int("optim.batch_size", self.batch_size, minimum=2)
        _check_float("optim.grad_clip", self.grad_clip, minimum=0.0)
        if self.amp not in AMP_MODES:
            raise ValueError(f"optim.amp must be one of {AMP_MODES}, got {self.amp!r}")


@dataclass
class RunConfig:
    """Where and how the run executes (these may change between a run and its resumption).

    out_dir: checkpoints (last.pt, best.pt), metrics.csv, config.yaml, cache/.
    seed: model initialisation, shuffling and augmentation draws.
    device: "auto" (cuda if available, else cpu), "cpu", "cuda", "cuda:1", "mps".
    num_workers: DataLoader workers rendering patterns (0 = in the training
        process, rendering with ``render_threads``).
    render_threads: C++ threads per render call (None: all cores with
        num_workers=0, 1 per worker otherwise).
    torch_threads: ``torch.set_num_threads`` for the training process (None:
        torch's default, one per core).  On a CPU shared with other jobs 1 is
        much faster: measured 1.6 against 0.25 steps/s for contrastive_small
        on 2 busy cores, where spinning OpenMP threads wait for each other.
    log_every: steps between metrics.csv rows.
    val_every: steps between validations (0 = only at the end of each epoch
        and of the run).
    checkpoint_every: steps between writes of last.pt (0 = at the end of each
        epoch and of the run).
    val_augmentation_seed: seed of the fixed augmented validation patterns.
    progress: tqdm bar; None = only on a terminal.
    tensorboard: also write TensorBoard events under out_dir/tb when the
        ``tensorboard`` package is installed.
    """

    out_dir: str = "runs/contrastive"
    seed: int = 0
    device: str = "auto"
    num_workers: int = 0
    render_threads: Optional[int] = None
    torch_threads: Optional[int] = None
    log_every: int = 10
    val_every: int = 0
    checkpoint_every: int = 0
    val_augmentation_seed: int = 12345
    progress: Optional[bool] = None
    tensorboard: bool = True

    def __post_init__(self):
        if not isinstance(self.out_dir, (str, os.PathLike)) or not os.fspath(self.out_dir):
            raise ValueError(f"run.out_dir must be a non-empty path, got {self.out_dir!r}")
        self.out_dir = os.fspath(self.out_dir)
        _check_int("run.seed", self.seed, minimum=0)
        if not isinstance(self.device, str) or not (self.device in DEVICES or self.device.startswith("cuda:")):
            raise ValueError(f"run.device must be one of {DEVICES} or 'cuda:N', got {self.device!r}")
        _check_int("run.num_workers", self.num_workers, minimum=0)
        _check_int("run.render_threads", self.render_threads, minimum=1, allow_none=True)
        _check_int("run.torch_threads", self.torch_threads, minimum=1, allow_none=True)
        _check_int("run.log_every", self.log_every, minimum=1)
        _check_int("run.val_every", self.val_every, minimum=0)
        _check_int("run.checkpoint_every", self.checkpoint_every, minimum=0)
        _check_int("run.val_augmentation_seed", self.val_augmentation_seed, minimum=0)
        if self.progress is not None:
            _check_bool("run.progress", self.progress)
        _check_bool("run.tensorboard", self.tensorboard)


def _default_simulator() -> dict:
    return {"radiation": "CuKa", "two_theta": [5.0, 90.0]}


class SimulatedRunConfig:
    """The ``simulator`` and ``augmentation`` sections a training config shares (base of :class:`TrainConfig`
    and :class:`xrdflow.classify.ClassifierConfig`): checked and fixed to the encoder's grid by
    :meth:`_check_simulation`, turned into objects by :meth:`make_simulator` / :meth:`make_augmentation`."""

    #: silence the Simulator's "grid step" undersampling note (the classifier's augmented patterns are broader).
    quiet_grid_step = False

    def _check_simulation(self, n_points: int, what: str, where: str) -> None:
        if not isinstance(self.simulator, dict):
            raise ValueError(f"simulator must be a mapping of xrdflow.Simulator arguments, got {self.simulator!r}")
        self.simulator = fixed_grid_simulator(self.simulator, n_points, what, where)
        check_augmentation(self.augmentation)
        self.make_augmentation()  # validates the fields now, not at the first batch
        self.make_scan_range()

    @property
    def simulator_kwargs(self) -> dict:
        """Keyword arguments for :class:`xrdflow.Simulator` (ranges as tuples)."""
        return {k: (tuple(v) if isinstance(v, list) else v) for k, v in self.simulator.items()}

    def make_simulator(self):
        """The :class:`xrdflow.Simulator` of this run (the pattern grid the model reads)."""
        import warnings

        import xrdflow as xf

        try:
            with warnings.catch_warnings():
                if self.quiet_grid_step:
                    warnings.filterwarnings("ignore", message="grid step", category=RuntimeWarning)
                return xf.Simulator(**self.simulator_kwargs)
        except TypeError as err:
            raise ValueError(f"simulator: {err}") from None

    def make_augmentation(self):
        """The :class:`xrdflow.Augmentation` of the training patterns."""
        return augmentation_from_spec(self.augmentation)

    def make_scan_range(self):
        """The :class:`xrdflow.ScanRange` of the training patterns (None: every pattern spans the grid)."""
        return scan_range_from_spec(self.scan_range)


@dataclass
class TrainConfig(SimulatedRunConfig):
    """Everything a contrastive training run depends on.

    model: :class:`xrdflow.models.DualTowerConfig`.
    data: :class:`DataConfig`.
    simulator: keyword arguments of :class:`xrdflow.Simulator` (lists for
        ranges).  ``n_points`` defaults to the pattern encoder's input length
        and must equal it when given.
    augmentation: "realistic" (:meth:`xrdflow.Augmentation.realistic`),
        "none", or a dict of :class:`xrdflow.Augmentation` fields.
    scan_range: null, or a dict of :class:`xrdflow.ScanRange` fields: training
        patterns cut to partial scans (validation patterns are not).
    init_from: null, or a contrastive checkpoint (``xrdflow train``'s last.pt /
        best.pt, or ``pretrained:NAME``) whose weights (both towers and the
        temperature) start this run; its ``model`` section must equal this
        config's.  Optimizer, schedule, step and RNG start afresh: a second
        training stage (fine-tuning, a new cosine cycle, another batch size).
        A resumed run takes its weights from last.pt instead.
    hard_negatives: null, or ``{group_size: N}`` (N >= 2): batches made of
        groups of N or fewer training structures that the ``init_from`` model
        embeds close together (:func:`xrdflow.data.similarity_groups` on its
        crystal embeddings, regrouped every epoch), so that the in-batch
        negatives include look-alikes.  Needs ``init_from``.
    optim: :class:`OptimConfig`.  run: :class:`RunConfig`.
    """

    model: Any = field(default_factory=_default_model_config)
    data: DataConfig = field(default_factory=DataConfig)
    simulator: dict = field(default_factory=_default_simulator)
    augmentation: Any = "realistic"
    scan_range: Any = None
    init_from: Optional[str] = None
    hard_negatives: Optional[dict] = None
    optim: OptimConfig = field(default_factory=OptimConfig)
    run: RunConfig = field(default_factory=RunConfig)

    def __post_init__(self):
        if not isinstance(self.model, _model_config_type()):
            raise TypeError(f"model must be an xrdflow.models.DualTowerConfig, got {type(self.model).__name__}")
        if self.init_from is not None:
            if not isinstance(self.init_from, (str, os.PathLike)) or not os.fspath(self.init_from):
                raise ValueError(f"init_from must be a checkpoint path, pretrained:NAME or null, got "
                                 f"{self.init_from!r}")
            self.init_from = os.fspath(self.init_from)
        if self.hard_negatives is not None:
            spec = self.hard_negatives
            if not isinstance(spec, dict) or set(spec) - {"group_size"}:
                raise ValueError(f"hard_negatives must be null or {{group_size: N}}, got {spec!r}")
            _check_int("hard_negatives.group_size", spec.get("group_size", 32), minimum=2)
            if self.init_from is None:
                raise ValueError("hard_negatives groups structures by the crystal embeddings of the init_from "
                                 "model: set init_from (e.g. pretrained:contrastive) or hard_negatives: null")
            self.hard_negatives = {"group_size": int(spec.get("group_size", 32))}
        self._check_simulation(pattern_length(self.model), "the pattern encoder", "(model.pattern)")


def fixed_grid_simulator(simulator: dict, n_points: int, what: str, where: str = "") -> dict:
    """``simulator`` with ``n_points`` set to the encoder's input length ``n_points`` (ValueError when it
    is given and differs, or when a ``step`` is given instead)."""
    n_sim = simulator.get("n_points")
    if n_sim is None:
        if "step" in simulator:
            raise ValueError(f"simulator.step is not allowed: {what} needs a fixed n_points "
                             f"({n_points}); give simulator.n_points instead")
        return {**simulator, "n_points": n_points}
    if n_sim != n_points:
        raise ValueError(f"simulator.n_points = {n_sim} but {what} takes {n_points} points"
                         f"{' ' + where if where else ''}; make them equal")
    return simulator


def check_augmentation(spec) -> None:
    """ValueError unless ``spec`` is one of :data:`AUGMENTATIONS` or a dict of Augmentation fields
    (the fields themselves are checked by :func:`augmentation_from_spec`)."""
    if (isinstance(spec, str) and spec not in AUGMENTATIONS) or not isinstance(spec, (str, dict)):
        raise ValueError(f"augmentation must be one of {AUGMENTATIONS} or a dict of xrdflow.Augmentation "
                         f"fields, got {spec!r}")


def augmentation_from_spec(spec):
    """The :class:`xrdflow.Augmentation` of an ``augmentation`` config entry ("realistic", "none" or a dict
    of its fields; an unknown field is refused naming it)."""
    import xrdflow as xf

    if spec == "realistic":
        return xf.Augmentation.realistic()
    if spec == "none":
        return xf.Augmentation.none()
    known = {f.name for f in dataclasses.fields(xf.Augmentation)}
    for key in spec:
        if key not in known:
            raise ValueError(f"unknown key 'augmentation.{key}'; xrdflow.Augmentation fields are: "
                             f"{', '.join(sorted(known))}")
    return xf.Augmentation(**{k: (tuplify(v) if isinstance(v, list) else v) for k, v in spec.items()})


def scan_range_from_spec(spec):
    """The :class:`xrdflow.ScanRange` of a ``scan_range`` config entry (null or a mapping of its fields,
    built by :func:`build_dataclass`: an unknown field is refused naming it), or None."""
    import xrdflow as xf

    return None if spec is None else build_dataclass(xf.ScanRange, spec, "scan_range")


def pattern_length(model_cfg) -> int:
    """Input length of the pattern encoder of a DualTowerConfig."""
    pattern = getattr(model_cfg, "pattern", None)
    for name in ("n_points", "input_length", "length"):
        if hasattr(pattern, name):
            return int(getattr(pattern, name))
    raise TypeError("cannot find the pattern encoder's input length in the model config "
                    "(expected model.pattern.n_points)")


# ------------------------------------------------------------------ checks
def _check_int(name, value, *, minimum, allow_none=False):
    if value is None and allow_none:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        extra = " or null" if allow_none else ""
        raise ValueError(f"{name} must be an integer >= {minimum}{extra}, got {value!r}")


def _check_float(name, value, *, positive=False, minimum=None):
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number, got {value!r}")
    if positive and not value > 0:
        raise ValueError(f"{name} must be > 0, got {value!r}")
    if minimum is not None and value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value!r}")


def _check_bool(name, value):
    if not isinstance(value, bool):
        raise ValueError(f"{name} must be true or false, got {value!r}")


def tuplify(value):
    """Nested lists -> nested tuples (YAML has no tuples)."""
    return tuple(tuplify(v) if isinstance(v, list) else v for v in value)


# ------------------------------------------------------------------ dict <-> dataclass
def to_plain(obj):
    """Dataclasses -> dicts, tuples -> lists, recursively (YAML-safe and weights_only-safe)."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: to_plain(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, dict):
        return {str(k): to_plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_plain(v) for v in obj]
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    return obj


def config_to_dict(cfg: TrainConfig) -> dict:
    """The config as plain dicts/lists/numbers/strings (what save_config writes and checkpoints hold)."""
    return to_plain(cfg)


def _unwrap_optional(hint):
    origin = typing.get_origin(hint)
    if origin is Union or (hasattr(types, "UnionType") and origin is types.UnionType):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        if len(args) == 1:
            return args[0]
    return hint


def build_dataclass(cls, data, where: str = ""):
    """Dataclass ``cls`` from a mapping (None = all defaults), refusing unknown keys with a ValueError naming
    them as ``where.key``; nested dataclass fields are built the same way, lists become tuples for tuple
    fields, and a TypeError/ValueError of the constructor is reported as a ValueError naming ``where``."""
    if isinstance(data, cls):
        return data
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ValueError(f"{where or 'the config'} must be a mapping of keys to values, got {data!r}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls) if f.init]
    kwargs = {}
    for key, value in data.items():
        path = f"{where}.{key}" if where else str(key)
        if key not in names:
            raise ValueError(f"unknown key '{path}' in the config; known keys{' of ' + where if where else ''}: "
                             f"{', '.join(names)}")
        hint = _unwrap_optional(hints.get(key, Any))
        if dataclasses.is_dataclass(hint) and isinstance(hint, type):
            value = build_dataclass(hint, value, path)
        elif (hint is tuple or typing.get_origin(hint) is tuple) and isinstance(value, list):
            value = tuplify(value)
        kwargs[key] = value
    try:
        return cls(**kwargs)
    except TypeError as err:
        raise ValueError(f"{where or 'config'}: {err}") from None


def sections_from_dict(cls, data, sections: dict, default_simulator) -> Any:
    """Top-level config dataclass ``cls`` from plain values: each key a field of ``cls`` (unknown ones refused),
    ``sections`` maps field names to the dataclass they are built as (:func:`build_dataclass`),
    ``simulator`` is merged over ``default_simulator()``, anything else is passed as it is."""
    if data is None:
        data = {}
    known = [f.name for f in dataclasses.fields(cls)]
    if not isinstance(data, dict):
        raise ValueError(f"the config must be a mapping with sections {', '.join(known)}; got {type(data).__name__}")
    for key in data:
        if key not in known:
            raise ValueError(f"unknown key '{key}' in the config; known sections: {', '.join(known)}")
    kwargs = {}
    for name, value in data.items():
        if name in sections:
            value = build_dataclass(sections[name], value, name)
        elif name == "simulator":
            if value is None:
                value = {}
            if not isinstance(value, dict):
                raise ValueError(f"simulator must be a mapping of xrdflow.Simulator arguments, got {value!r}")
            value = {**default_simulator(), **value}
        kwargs[name] = value
    return cls(**kwargs)


def config_from_dict(data: dict) -> TrainConfig:
    """A :class:`TrainConfig` from plain values (as read from YAML or a checkpoint); unknown keys refused."""
    return sections_from_dict(TrainConfig, data, {"model": _model_config_type(), "data": DataConfig,
                                                  "optim": OptimConfig, "run": RunConfig}, _default_simulator)


def read_yaml(path, from_dict):
    """``from_dict(yaml.safe_load(path))``; a missing file is a FileNotFoundError, bad YAML or a bad config a
    ValueError starting with the path."""
    import yaml

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no such config file: {os.fspath(path)!r}")
    with open(path, encoding="utf-8") as fh:
        try:
            data = yaml.safe_load(fh)
        except yaml.YAMLError as err:
            raise ValueError(f"{os.fspath(path)} is not valid YAML: {err}") from None
    try:
        return from_dict(data)
    except ValueError as err:
        raise ValueError(f"{os.fspath(path)}: {err}") from None


def load_config(path) -> TrainConfig:
    """Read a YAML config (``yaml.safe_load``); missing sections/keys take the defaults."""
    return read_yaml(path, config_from_dict)


def atomic_write_bytes(path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically, creating missing parent folders
    (:func:`xrdflow._fileio.atomic_output`: temp file in the same folder, fsync, os.replace, fsync folder)."""
    _atomic_write_bytes(path, data, make_parents=True)


fsync_dir = fsync_directory  # the old name, still imported by others


def write_yaml(cfg, path) -> None:
    """Write a config dataclass as YAML (``yaml.safe_dump`` of :func:`to_plain`), atomically."""
    import yaml

    text = yaml.safe_dump(to_plain(cfg), sort_keys=False, default_flow_style=None)
    atomic_write_bytes(path, text.encode("utf-8"))


def save_config(cfg: TrainConfig, path) -> None:
    """Write the config as YAML (``yaml.safe_dump``), atomically."""
    write_yaml(cfg, path)


# the old private names (kept for code outside the package that imported them)
_build, _plain, _tuplify = build_dataclass, to_plain, tuplify
