"""Training of the space-group classifier (issue 6), in stages.

1. :func:`~xrdflow.classify.data.prepare_data`: structures -> cleaned, leakage-checked,
   labelled training/validation sets -> Reflections cache (kept under ``run.out_dir/cache``);
2. model (:class:`~xrdflow.classify.SpaceGroupClassifier`), AdamW, warmup + cosine schedule
   (the contrastive trainer's helpers);
3. loop: :class:`xrdflow.data.PatternStream` renders augmented patterns per batch (new draws
   every epoch); weighted cross entropy of the three heads; tqdm bar; rows in ``metrics.csv``;
   validation on fixed augmented patterns of the validation structures; ``last.pt`` (and
   ``best.pt``, best validation space-group top-1) written atomically;
4. ``resume=True`` continues from ``last.pt`` exactly (model, optimizer, schedule, epoch,
   batch within the epoch, RNG states; the stream is keyed by (seed, epoch)).

Single process (CPU or one GPU); the contrastive trainer (:mod:`xrdflow.train`) has the DDP path.
The stages both trainers share (run directory and resume checks, stream, optimizer and schedule,
resume bookkeeping, the loop with its logging/validation/checkpoint cadence, checkpoint and
``metrics.csv`` writing) are those of :class:`xrdflow.train.loop.StreamTrainer`; this module adds
the classifier's step, validation, columns and checkpoint format.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ..train import checkpoint as _ckpt
from ..train.checkpoint import rng_state, set_rng_state
from ..train.loop import StreamTrainer, progress_enabled, resolve_device, seed_everything
from .config import HEADS, ClassifierConfig, config_from_dict
from .data import PreparedData, prepare_data
from .model import SpaceGroupClassifier, topk_accuracy

__all__ = ["FORMAT", "VERSION", "ClassifierTrainer", "TrainResult", "train", "read_checkpoint", "load_classifier",
           "COLUMNS"]

FORMAT = "xrdflow-classifier"
VERSION = 1
_SHORT = {"crystal_system": "cs", "extinction_group": "eg", "space_group": "sg"}

COLUMNS = ("step", "epoch", "split", "loss", "loss_cs", "loss_eg", "loss_sg", "acc_cs", "acc_eg", "acc_sg", "lr",
           "grad_norm", "patterns_per_s", "val_cs_top1", "val_eg_top1", "val_sg_top1", "val_sg_top5",
           "val_sg_as_eg_top1", "val_n", "elapsed_s")


# ------------------------------------------------------------------ checkpoints
def read_checkpoint(path, map_location="cpu") -> dict:
    """A classifier checkpoint dict, loaded with ``weights_only=True`` and checked
    (:func:`xrdflow.train.checkpoint.read_checkpoint` with :data:`FORMAT`)."""
    from .. import pretrained

    return _ckpt.read_checkpoint(pretrained.resolve(path), map_location, format=FORMAT, version=VERSION,
                                 kind="classifier", hint="train one with 'xrdflow classifier train'")


def load_classifier(path, map_location="cpu"):
    """``(model, cfg)``: the classifier of a checkpoint in eval mode and its :class:`ClassifierConfig`."""
    ckpt = read_checkpoint(path, map_location=map_location)
    cfg = config_from_dict(ckpt["config"])
    model = SpaceGroupClassifier(cfg.model)
    model.load_state_dict(ckpt["model"])
    if isinstance(map_location, (str, torch.device)):
        model.to(map_location)
    model.eval()
    return model, cfg


@dataclass
class TrainResult:
    out_dir: str
    step: int
    epoch: int
    last_checkpoint: str
    best_checkpoint: str | None
    best_val_sg_top1: float | None
    last_val: dict | None
    steps_per_s: float
    n_train: int


# ------------------------------------------------------------------ trainer
class ClassifierTrainer(StreamTrainer):
    """One run; :meth:`setup` then :meth:`run` (until the schedule ends or ``stop_at_step``)."""

    checkpoint_format, checkpoint_version = FORMAT, VERSION
    columns = COLUMNS
    window_keys = ("loss", "loss_cs", "loss_eg", "loss_sg", "acc_cs", "acc_eg", "acc_sg")
    best_key = "sg_top1"
    always_at_epoch_end = False   # with run.val_every / checkpoint_every set, only at those steps
    progress_desc = "classifier"

    def __init__(self, cfg: ClassifierConfig, *, resume: bool = False, log=None):
        if not isinstance(cfg, ClassifierConfig):
            raise TypeError(f"ClassifierTrainer needs a ClassifierConfig, got {type(cfg).__name__}")
        super().__init__(cfg, resume=resume, log=log)

    # ---------------------------------------------------------- stages
    def setup(self) -> None:
        cfg = self.cfg
        if cfg.run.torch_threads is not None:
            torch.set_num_threads(cfg.run.torch_threads)   # 1 on a shared CPU (see xrdflow.train.RunConfig)
        self.device = resolve_device(cfg.run.device)
        ckpt = self._open_run(read_checkpoint)
        self.progress = progress_enabled(cfg.run.progress)
        self.data: PreparedData = prepare_data(cfg, self.out_dir, progress=self.progress, log=self.log)
        self.sim = cfg.make_simulator()
        self.augmentation = cfg.make_augmentation()

        seed_everything(cfg.run.seed)
        self.model = SpaceGroupClassifier(cfg.model).to(self.device)
        if cfg.model.init_encoder_from and ckpt is None:
            self.model.load_contrastive_encoder(cfg.model.init_encoder_from)
            self.log(f"encoder initialised from {cfg.model.init_encoder_from}")
        self.train_sg = torch.from_numpy(np.asarray(self.data.train_sg, dtype=np.int64))
        self._build_stream(self.data.train_reflections, self.data.n_train)
        self._build_optimization()
        self._val = None
        self._start_metrics(ckpt)
        n_params = sum(p.numel() for p in self.model.parameters())
        self.log(f"model: {n_params:,} parameters on {self.device}; {self.data.n_train} training structures, "
                 f"{self.steps_per_epoch} steps per epoch, {self.total_steps} steps in all")

    def _restore(self, ckpt: dict) -> None:
        super()._restore(ckpt)
        self.last_val = ckpt.get("last_val")
        set_rng_state(ckpt["rng"])

    def step(self, batch: dict) -> dict:
        """One optimizer step on a stream batch; floats (losses, accuracies per head, lr, grad_norm)."""
        self.model.train()
        y = batch["pattern"].to(self.device, non_blocking=True)
        targets = self.model.targets_from_sg(self.train_sg[batch["index"]].to(self.device))
        with self._autocast():
            logits = self.model(y)
        loss, parts = self.model.loss(logits, targets)
        value = float(loss.detach())
        grad_norm, lr = self._optimize(loss, value)
        out = {"loss": value, "lr": lr, "grad_norm": grad_norm}
        with torch.no_grad():
            for h in HEADS:
                out[f"loss_{_SHORT[h]}"] = float(parts[h].detach())
                out[f"acc_{_SHORT[h]}"] = float((logits[h].argmax(-1) == targets[h]).float().mean())
        return out

    # ---------------------------------------------------------- validation
    def validate(self, epoch: int | None = None) -> dict | None:
        """Top-1 of every head (and space-group top-5, space group mapped to extinction group) on the
        validation structures' fixed augmented patterns."""
        if self.data.n_val == 0:
            return None
        if self._val is None:
            y, _ = self.sim.render(self.data.val_reflections, augmentation=self.augmentation,
                                   seed=self.cfg.run.val_augmentation_seed, epoch=0)
            self._val = torch.from_numpy(y)
        from .evaluate import predict, score

        probs = predict(self.model, self._val, device=self.device)
        s = score(probs, self.data.val_sg, self.model)
        self.model.train()
        self.last_val = {"cs_top1": s["crystal_system"]["top1"], "eg_top1": s["extinction_group"]["top1"],
                         "sg_top1": s["space_group"]["top1"], "sg_top5": s["space_group"]["top5"],
                         "sg_as_eg_top1": s["space_group_as_extinction_group"]["top1"], "n": s["n"]}
        v = self.last_val
        self.metrics.log(step=self.step_count, epoch=self.epoch if epoch is None else epoch, split="val",
                         val_cs_top1=v["cs_top1"],
                         val_eg_top1=v["eg_top1"], val_sg_top1=v["sg_top1"], val_sg_top5=v["sg_top5"],
                         val_sg_as_eg_top1=v["sg_as_eg_top1"], val_n=v["n"], elapsed_s=round(self._elapsed(), 3))
        return v

    # ---------------------------------------------------------- checkpoints
    def _payload(self) -> dict:
        return {**self._state(), "rng": rng_state(), "n_train": self.data.n_train,
                "train_ids_sha256": _ids_hash(self.data.train_ids)}

    # ---------------------------------------------------------- loop hooks
    def _postfix(self, means: dict, stats: dict, rate: float) -> dict:
        return {"loss": f"{means['loss']:.3f}", "sg": f"{means['acc_sg']:.3f}", "pat_s": f"{rate:.0f}",
                "val_sg": None if self.last_val is None else f"{self.last_val['sg_top1']:.3f}"}

    def _val_message(self, val: dict) -> str:
        return (f"step {self.step_count}: validation top-1 crystal system {val['cs_top1']:.3f}, extinction group "
                f"{val['eg_top1']:.3f}, space group {val['sg_top1']:.3f} ({val['n']} structures)")

    def _result(self, steps_per_s: float) -> TrainResult:
        return TrainResult(**self._summary(steps_per_s), best_val_sg_top1=self.best, n_train=self.data.n_train)


def _ids_hash(ids) -> str:
    import hashlib

    return hashlib.sha256("\n".join(map(str, ids)).encode()).hexdigest()


def train(cfg: ClassifierConfig, *, resume: bool = False, stop_at_step: int | None = None, log=None) -> TrainResult:
    """Train the classifier of ``cfg``; ``resume`` continues ``run.out_dir/last.pt``; ``stop_at_step``
    stops early with a checkpoint (as an interruption would), without changing the schedule."""
    trainer = ClassifierTrainer(cfg, resume=resume, log=log)
    trainer.setup()
    return trainer.run(stop_at_step=stop_at_step)
