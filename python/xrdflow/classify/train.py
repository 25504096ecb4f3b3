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
"""
from __future__ import annotations

import csv
import io
import math
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..train.checkpoint import rng_state, save_checkpoint, set_rng_state
from ..train.config import atomic_write_bytes
from ..train.contrastive import _diff_keys, _progress_enabled, amp_setup, build_optimizer, resolve_device, \
    seed_everything
from ..train.schedule import make_scheduler
from .config import HEADS, ClassifierConfig, config_from_dict, config_to_dict, save_config
from .data import PreparedData, prepare_data
from .model import SpaceGroupClassifier, topk_accuracy

__all__ = ["FORMAT", "VERSION", "ClassifierTrainer", "TrainResult", "train", "read_checkpoint", "load_classifier",
           "MetricsCSV", "COLUMNS"]

FORMAT = "xrdflow-classifier"
VERSION = 1
LAST, BEST = "last.pt", "best.pt"
RESUME_SECTIONS = ("model", "data", "simulator", "augmentation", "optim")
_SHORT = {"crystal_system": "cs", "extinction_group": "eg", "space_group": "sg"}

COLUMNS = ("step", "epoch", "split", "loss", "loss_cs", "loss_eg", "loss_sg", "acc_cs", "acc_eg", "acc_sg", "lr",
           "grad_norm", "patterns_per_s", "val_cs_top1", "val_eg_top1", "val_sg_top1", "val_sg_top5",
           "val_sg_as_eg_top1", "val_n", "elapsed_s")


# ------------------------------------------------------------------ metrics
class MetricsCSV:
    """Append-only ``metrics.csv`` with the classifier's columns (each row one O_APPEND write + fsync).

    (xrdflow.train.MetricsLog has the contrastive columns fixed; this is the same scheme.)
    """

    def __init__(self, out_dir):
        self.path = Path(out_dir) / "metrics.csv"
        if self.path.exists():
            with open(self.path, newline="", encoding="utf-8") as fh:
                header = next(csv.reader(fh), None)
            if header is not None and tuple(header) != COLUMNS:
                raise ValueError(f"{self.path} has columns {header}, expected {list(COLUMNS)}; move it away or use "
                                 "another run.out_dir")
            if header is None:
                atomic_write_bytes(self.path, self._line(COLUMNS))
        else:
            atomic_write_bytes(self.path, self._line(COLUMNS))

    @staticmethod
    def _line(cells) -> bytes:
        buf = io.StringIO()
        csv.writer(buf, lineterminator="\n").writerow(["" if c is None else c for c in cells])
        return buf.getvalue().encode("utf-8")

    def log(self, **values) -> None:
        unknown = set(values) - set(COLUMNS)
        if unknown:
            raise ValueError(f"unknown metrics {sorted(unknown)}; columns are {list(COLUMNS)}")
        data = self._line([values.get(c) for c in COLUMNS])
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)

    def rows(self) -> list[dict]:
        with open(self.path, newline="", encoding="utf-8") as fh:
            return list(csv.DictReader(fh))

    def truncate_after(self, step: int) -> int:
        with open(self.path, newline="", encoding="utf-8") as fh:
            rows = list(csv.reader(fh))
        header, body = rows[0], rows[1:]
        keep = [r for r in body if r and int(r[0]) <= step]
        if len(keep) != len(body):
            atomic_write_bytes(self.path, b"".join(self._line(r) for r in [header] + keep))
        return len(body) - len(keep)


# ------------------------------------------------------------------ checkpoints
def read_checkpoint(path, map_location="cpu") -> dict:
    """A classifier checkpoint dict, loaded with ``weights_only=True`` and checked."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no such checkpoint: {os.fspath(path)!r}")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # unpickling errors, truncated zip, ...
        raise ValueError(f"{os.fspath(path)} is not a readable checkpoint ({type(err).__name__}: {err})") from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        got = ckpt.get("format") if isinstance(ckpt, dict) else type(ckpt).__name__
        raise ValueError(f"{os.fspath(path)} is not an xrdflow classifier checkpoint (format {got!r}, expected "
                         f"{FORMAT!r}; train one with 'xrdflow classifier train')")
    if ckpt.get("version") != VERSION:
        raise ValueError(f"{os.fspath(path)} has classifier checkpoint version {ckpt.get('version')!r}; this xrdflow "
                         f"reads version {VERSION}")
    for key in ("config", "model", "step"):
        if key not in ckpt:
            raise ValueError(f"{os.fspath(path)} lacks the {key!r} entry")
    return ckpt


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
class ClassifierTrainer:
    """One run; :meth:`setup` then :meth:`run` (until the schedule ends or ``stop_at_step``)."""

    def __init__(self, cfg: ClassifierConfig, *, resume: bool = False, log=None):
        if not isinstance(cfg, ClassifierConfig):
            raise TypeError(f"ClassifierTrainer needs a ClassifierConfig, got {type(cfg).__name__}")
        self.cfg, self.resume = cfg, resume
        self.log = log if log is not None else (lambda msg: print(msg, file=sys.stderr, flush=True))

    # ---------------------------------------------------------- stages
    def setup(self) -> None:
        cfg = self.cfg
        if getattr(cfg.run, "torch_threads", None) is not None:
            torch.set_num_threads(cfg.run.torch_threads)   # 1 on a shared CPU (see xrdflow.train.RunConfig)
        self.device = resolve_device(cfg.run.device)
        self.out_dir = Path(cfg.run.out_dir)
        last = self.out_dir / LAST
        ckpt = None
        if self.resume:
            if not last.is_file():
                raise FileNotFoundError(f"--resume: no checkpoint {os.fspath(last)!r} to resume from")
            ckpt = read_checkpoint(last)
            saved, now = ckpt["config"], config_to_dict(cfg)
            diff = [k for s in RESUME_SECTIONS for k in _diff_keys(saved.get(s), now.get(s), s)]
            if diff:
                raise ValueError("cannot resume: the config differs from the checkpoint's in "
                                 f"{', '.join(diff[:10])} (only the run section may change)")
        elif last.exists():
            raise ValueError(f"{os.fspath(last)} exists: resume it with --resume, or choose another run.out_dir")
        self.out_dir.mkdir(parents=True, exist_ok=True)
        save_config(cfg, self.out_dir / "config.yaml")
        self.progress = _progress_enabled(cfg.run.progress)
        self.data: PreparedData = prepare_data(cfg, self.out_dir, progress=self.progress, log=self.log)
        self.sim = cfg.make_simulator()
        self.augmentation = cfg.make_augmentation()

        seed_everything(cfg.run.seed)
        self.model = SpaceGroupClassifier(cfg.model).to(self.device)
        if cfg.model.init_encoder_from and ckpt is None:
            self.model.load_contrastive_encoder(cfg.model.init_encoder_from)
            self.log(f"encoder initialised from {cfg.model.init_encoder_from}")
        self.optimizer = build_optimizer(self.model, cfg)
        self.autocast_dtype, use_scaler = amp_setup(cfg.optim.amp, self.device)
        self.scaler = torch.amp.GradScaler("cuda") if use_scaler else None
        self.train_sg = torch.from_numpy(np.asarray(self.data.train_sg, dtype=np.int64))
        self._build_stream()
        self.total_steps = (cfg.optim.max_steps if cfg.optim.max_steps is not None
                            else cfg.optim.epochs * self.steps_per_epoch)
        self.scheduler = make_scheduler(self.optimizer, cfg.optim.warmup_steps, self.total_steps,
                                        cfg.optim.min_lr_ratio)
        self.step_count, self.epoch, self.batch_in_epoch = 0, 0, 0
        self.best, self.best_step, self.last_val = None, None, None
        self._val = None
        self.metrics = MetricsCSV(self.out_dir)
        if ckpt is not None:
            self._restore(ckpt)
            dropped = self.metrics.truncate_after(self.step_count)
            self.log(f"resumed from {last} at step {self.step_count} (epoch {self.epoch}, batch "
                     f"{self.batch_in_epoch}/{self.steps_per_epoch})"
                     + (f"; dropped {dropped} metrics rows logged after it" if dropped else ""))
        n_params = sum(p.numel() for p in self.model.parameters())
        self.log(f"model: {n_params:,} parameters on {self.device}; {self.data.n_train} training structures, "
                 f"{self.steps_per_epoch} steps per epoch, {self.total_steps} steps in all")

    def _build_stream(self) -> None:
        from ..data import PatternStream

        cfg = self.cfg
        threads = cfg.run.render_threads
        if threads is None and cfg.run.num_workers > 0:
            threads = 1
        self.stream = PatternStream(self.data.train_reflections, self.sim, self.augmentation,
                                    batch_size=cfg.optim.batch_size, seed=cfg.run.seed, shuffle=True,
                                    drop_last=True, threads=threads, rank=0, world_size=1)
        self.steps_per_epoch = self.stream.num_batches(1, cfg.run.num_workers)
        if self.steps_per_epoch == 0:
            raise ValueError(f"{self.data.n_train} training structures give no full batch of "
                             f"{cfg.optim.batch_size}: lower optim.batch_size")
        self._loader_rng = torch.Generator()
        self.loader = torch.utils.data.DataLoader(self.stream, batch_size=None, num_workers=cfg.run.num_workers,
                                                  generator=self._loader_rng,
                                                  persistent_workers=cfg.run.num_workers > 0)

    def _restore(self, ckpt: dict) -> None:
        self.model.load_state_dict(ckpt["model"])
        self.optimizer.load_state_dict(ckpt["optimizer"])
        self.scheduler.load_state_dict(ckpt["scheduler"])
        if self.scaler is not None and ckpt.get("scaler"):
            self.scaler.load_state_dict(ckpt["scaler"])
        self.step_count, self.epoch = int(ckpt["step"]), int(ckpt["epoch"])
        self.batch_in_epoch = int(ckpt["batch_in_epoch"])
        best = ckpt.get("best") or {}
        self.best, self.best_step = best.get("val_sg_top1"), best.get("step")
        self.last_val = ckpt.get("last_val")
        set_rng_state(ckpt["rng"])

    def _autocast(self):
        if self.autocast_dtype is None:
            return torch.autocast("cpu", enabled=False)
        return torch.autocast("cuda", dtype=self.autocast_dtype)

    def step(self, batch: dict) -> dict:
        """One optimizer step on a stream batch; floats (losses, accuracies per head, lr, grad_norm)."""
        self.model.train()
        y = batch["pattern"].to(self.device, non_blocking=True)
        targets = self.model.targets_from_sg(self.train_sg[batch["index"]].to(self.device))
        with self._autocast():
            logits = self.model(y)
        loss, parts = self.model.loss(logits, targets)
        value = float(loss.detach())
        if not math.isfinite(value):
            raise FloatingPointError(f"the loss is {value} at step {self.step_count}; lower optim.lr or use "
                                     "optim.amp: none")
        self.optimizer.zero_grad(set_to_none=True)
        if self.scaler is not None:
            self.scaler.scale(loss).backward()
            self.scaler.unscale_(self.optimizer)
        else:
            loss.backward()
        clip = self.cfg.optim.grad_clip if self.cfg.optim.grad_clip > 0 else math.inf
        grad_norm = float(torch.nn.utils.clip_grad_norm_(self.model.parameters(), clip))
        lr = self.optimizer.param_groups[0]["lr"]
        if self.scaler is not None:
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            self.optimizer.step()
        self.scheduler.step()
        out = {"loss": value, "lr": lr, "grad_norm": grad_norm}
        with torch.no_grad():
            for h in HEADS:
                out[f"loss_{_SHORT[h]}"] = float(parts[h].detach())
                out[f"acc_{_SHORT[h]}"] = float((logits[h].argmax(-1) == targets[h]).float().mean())
        return out

    # ---------------------------------------------------------- validation
    def validate(self) -> dict | None:
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
        self.metrics.log(step=self.step_count, epoch=self.epoch, split="val", val_cs_top1=v["cs_top1"],
                         val_eg_top1=v["eg_top1"], val_sg_top1=v["sg_top1"], val_sg_top5=v["sg_top5"],
                         val_sg_as_eg_top1=v["sg_as_eg_top1"], val_n=v["n"], elapsed_s=round(self._elapsed(), 3))
        return v

    # ---------------------------------------------------------- checkpoints
    def _payload(self) -> dict:
        return {"format": FORMAT, "version": VERSION, "config": config_to_dict(self.cfg),
                "model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(),
                "scaler": self.scaler.state_dict() if self.scaler is not None else None,
                "step": self.step_count, "epoch": self.epoch, "batch_in_epoch": self.batch_in_epoch,
                "total_steps": self.total_steps, "rng": rng_state(),
                "best": {"val_sg_top1": self.best, "step": self.best_step}, "last_val": self.last_val,
                "n_train": self.data.n_train, "train_ids_sha256": _ids_hash(self.data.train_ids),
                "torch_version": str(torch.__version__)}

    def save(self, val: dict | None = None) -> None:
        new_best = val is not None and (self.best is None or val["sg_top1"] > self.best)
        if new_best:
            self.best, self.best_step = val["sg_top1"], self.step_count
        payload = self._payload()
        save_checkpoint(self.out_dir / LAST, payload)   # format/version of the payload win (see its code)
        if new_best:
            save_checkpoint(self.out_dir / BEST, payload)

    def _elapsed(self) -> float:
        return time.perf_counter() - self._t0

    def run(self, stop_at_step: int | None = None) -> TrainResult:
        from tqdm.auto import tqdm

        cfg = self.cfg
        self._t0 = time.perf_counter()
        end = self.total_steps if stop_at_step is None else min(self.total_steps, stop_at_step)
        bar = tqdm(total=self.total_steps, initial=self.step_count, unit="step", dynamic_ncols=True,
                   disable=not self.progress, desc="classifier")
        keys = ("loss", "loss_cs", "loss_eg", "loss_sg", "acc_cs", "acc_eg", "acc_sg")
        window = dict.fromkeys(keys, 0.0)
        window_n, window_t = 0, time.perf_counter()
        start_step, t_start = self.step_count, time.perf_counter()
        try:
            while self.step_count < end:
                self.stream.set_epoch(self.epoch)
                self._loader_rng.manual_seed(cfg.run.seed * 1_000_003 + self.epoch)
                batches = iter(self.loader)
                for _ in range(self.batch_in_epoch):  # resumed mid-epoch: skip the batches already used
                    next(batches)
                for batch in batches:
                    stats = self.step(batch)
                    self.step_count += 1
                    self.batch_in_epoch += 1
                    for k in keys:
                        window[k] += stats[k]
                    window_n += 1
                    if self.step_count % cfg.run.log_every == 0 or self.step_count == end:
                        now = time.perf_counter()
                        rate = window_n * cfg.optim.batch_size / max(now - window_t, 1e-9)
                        means = {k: window[k] / window_n for k in keys}
                        self.metrics.log(step=self.step_count, epoch=self.epoch, split="train", lr=stats["lr"],
                                         grad_norm=stats["grad_norm"], patterns_per_s=round(rate, 2),
                                         elapsed_s=round(self._elapsed(), 3), **means)
                        bar.set_postfix(loss=f"{means['loss']:.3f}", sg=f"{means['acc_sg']:.3f}",
                                        pat_s=f"{rate:.0f}",
                                        val_sg=None if self.last_val is None else f"{self.last_val['sg_top1']:.3f}")
                        window = dict.fromkeys(keys, 0.0)
                        window_n, window_t = 0, now
                    bar.update(1)
                    epoch_done = self.batch_in_epoch >= self.steps_per_epoch
                    if epoch_done:
                        self.epoch += 1
                        self.batch_in_epoch = 0
                    finished = self.step_count >= end
                    val = None
                    if (cfg.run.val_every and self.step_count % cfg.run.val_every == 0) or finished or \
                            (epoch_done and not cfg.run.val_every):
                        val = self.validate()
                        if val is not None:
                            self.log(f"step {self.step_count}: validation top-1 crystal system {val['cs_top1']:.3f}, "
                                     f"extinction group {val['eg_top1']:.3f}, space group {val['sg_top1']:.3f} "
                                     f"({val['n']} structures)")
                    if (epoch_done and not cfg.run.checkpoint_every) or finished or val is not None or \
                            (cfg.run.checkpoint_every and self.step_count % cfg.run.checkpoint_every == 0):
                        self.save(val)
                    if finished or epoch_done:
                        break
                else:
                    raise RuntimeError(f"the stream ended after {self.batch_in_epoch} of {self.steps_per_epoch} "
                                       f"batches of epoch {self.epoch}")
        finally:
            bar.close()
        took = time.perf_counter() - t_start
        return TrainResult(out_dir=os.fspath(self.out_dir), step=self.step_count, epoch=self.epoch,
                           last_checkpoint=os.fspath(self.out_dir / LAST),
                           best_checkpoint=os.fspath(self.out_dir / BEST) if (self.out_dir / BEST).exists() else None,
                           best_val_sg_top1=self.best, last_val=self.last_val,
                           steps_per_s=(self.step_count - start_step) / took if took > 0 else 0.0,
                           n_train=self.data.n_train)


def _ids_hash(ids) -> str:
    import hashlib

    return hashlib.sha256("\n".join(map(str, ids)).encode()).hexdigest()


def train(cfg: ClassifierConfig, *, resume: bool = False, stop_at_step: int | None = None, log=None) -> TrainResult:
    """Train the classifier of ``cfg``; ``resume`` continues ``run.out_dir/last.pt``; ``stop_at_step``
    stops early with a checkpoint (as an interruption would), without changing the schedule."""
    trainer = ClassifierTrainer(cfg, resume=resume, log=log)
    trainer.setup()
    return trainer.run(stop_at_step=stop_at_step)
