"""Stages shared by the trainers fed by a :class:`xrdflow.data.PatternStream`.

:class:`StreamTrainer` is the base of the contrastive :class:`xrdflow.train.Trainer`
and of :class:`xrdflow.classify.ClassifierTrainer`.  It holds what the two runs do
the same way:

* the run directory: ``last.pt`` read and checked on resume (only the ``run``
  section of the config may change), refused without ``resume``, ``config.yaml``
  written (:meth:`StreamTrainer._open_run`);
* the stream and its DataLoader, AdamW + warmup/cosine schedule + GradScaler
  (:meth:`_build_stream`, :meth:`_build_optimization`);
* the resume bookkeeping: counters, best validation value, optimizer/schedule
  states, ``metrics.csv`` rows after the resumed step dropped
  (:meth:`_restore`, :meth:`_start_metrics`);
* one optimizer step after the loss (:meth:`_optimize`);
* ``last.pt``/``best.pt`` writing (:meth:`save`) and the epoch loop with its
  logging, validation and checkpoint cadence (:meth:`run`).

A subclass provides ``setup()`` (calling these stages), ``step(batch)``,
``validate(epoch)``, ``_payload()`` (its entries besides :meth:`_state`) and the
small hooks marked below.
"""
from __future__ import annotations

import math
import os
import random
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

from . import distributed as dist_util
from .checkpoint import FORMAT, VERSION, save_checkpoint
from .config import to_plain, write_yaml
from .metrics import COLUMNS, MetricsLog
from .schedule import make_scheduler

__all__ = ["StreamTrainer", "LAST", "BEST", "RESUME_SECTIONS", "progress_enabled", "diff_keys", "resolve_device",
           "amp_setup", "seed_everything", "build_optimizer", "tqdm_safe_print"]

LAST, BEST = "last.pt", "best.pt"
#: config sections a resumed run must share with the checkpoint (``run`` may differ).
RESUME_SECTIONS = ("model", "data", "simulator", "augmentation", "scan_range", "init_from", "hard_negatives", "optim")


# ------------------------------------------------------------------ small stages
def progress_enabled(setting) -> bool:
    """``run.progress``: True/False as given; None = only when stderr is a terminal."""
    if setting is not None:
        return setting
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):
        return False


def diff_keys(a, b, prefix="") -> list[str]:
    """Dotted paths where two nested dicts differ (a key missing on one side counts)."""
    if isinstance(a, dict) and isinstance(b, dict):
        out = []
        for k in sorted(set(a) | set(b)):
            out += diff_keys(a.get(k, "<missing>"), b.get(k, "<missing>"), f"{prefix}.{k}" if prefix else k)
        return out
    return [] if a == b else [prefix]


def tqdm_safe_print(msg: str) -> None:
    """A line on stderr that does not break an active progress bar."""
    from tqdm.auto import tqdm

    tqdm.write(msg, file=sys.stderr)


def resolve_device(spec: str, local_rank: int = 0) -> torch.device:
    """"auto" -> cuda (this rank's GPU) if available, else cpu; checks that an explicit device exists."""
    if spec == "auto":
        spec = "cuda" if torch.cuda.is_available() else "cpu"
    if spec.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ValueError(f"device {spec!r} requested but CUDA is not available (use device: cpu or auto)")
        return torch.device(f"cuda:{local_rank}") if spec == "cuda" else torch.device(spec)
    if spec == "mps":
        if not (hasattr(torch.backends, "mps") and torch.backends.mps.is_available()):
            raise ValueError("device 'mps' requested but it is not available (use device: cpu or auto)")
    return torch.device(spec)


def amp_setup(mode: str, device: torch.device) -> tuple[torch.dtype | None, bool]:
    """``(autocast dtype or None, use a GradScaler)``: mixed precision only on CUDA."""
    if device.type != "cuda" or mode == "none":
        return None, False
    if mode == "bf16" or (mode == "auto" and torch.cuda.is_bf16_supported()):
        return torch.bfloat16, False
    return torch.float16, True


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2 ** 32)
    torch.manual_seed(seed)


def build_optimizer(model: nn.Module, cfg) -> torch.optim.AdamW:
    """AdamW (``cfg.optim``); biases, normalisation weights (1-D tensors) and the temperature get no weight
    decay."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (no_decay if p.ndim <= 1 else decay).append(p)
    o = cfg.optim
    groups = [{"params": decay, "weight_decay": o.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=o.lr, betas=o.betas, eps=o.eps)


# ------------------------------------------------------------------ base trainer
class StreamTrainer:
    """Shared stages of a stream-fed training run (see the module docs); subclass hooks below."""

    #: checkpoint ``format`` / ``version`` (:func:`xrdflow.train.checkpoint.save_checkpoint`).
    checkpoint_format, checkpoint_version = FORMAT, VERSION
    #: metrics.csv header.
    columns = COLUMNS
    #: train statistics averaged over the rows of metrics.csv (the others are the last step's).
    window_keys = ("loss",)
    #: key of the validation result that picks best.pt (stored as ``best["val_" + key]``).
    best_key = "top1"
    #: validate and write last.pt at every epoch end even when run.val_every / run.checkpoint_every are
    #: set (True: the contrastive trainer; False: only when they are 0, as the classifier does).
    always_at_epoch_end = True
    progress_desc = "train"

    def __init__(self, cfg, *, resume: bool = False, log=None):
        self.cfg = cfg
        self.resume = resume
        self._log = log if log is not None else tqdm_safe_print
        self.dist = dist_util.DistInfo()
        self._t0 = time.perf_counter()  # run() restarts it; validate() may also be called before run()

    def log(self, msg: str) -> None:
        if self.dist.is_main:
            self._log(msg)

    # ---------------------------------------------------------- hooks of a subclass
    def step(self, batch: dict) -> dict:  # pragma: no cover - abstract
        """One optimizer step; floats including ``lr``, ``grad_norm`` and :attr:`window_keys`."""
        raise NotImplementedError

    def validate(self, epoch: int | None = None) -> dict | None:  # pragma: no cover - abstract
        raise NotImplementedError

    def _payload(self) -> dict:  # pragma: no cover - abstract
        raise NotImplementedError

    def _row_extras(self, stats: dict) -> dict:
        """Extra metrics.csv cells of a train row (besides the window means, lr, grad_norm, rate)."""
        return {}

    def _postfix(self, means: dict, stats: dict, rate: float) -> dict:
        return {"loss": f"{means['loss']:.3f}", "pat_s": f"{rate:.0f}"}

    def _val_message(self, val: dict) -> str:
        return f"step {self.step_count}: validation {self.best_key} {val[self.best_key]:.4f}"

    def _result(self, steps_per_s: float):  # pragma: no cover - abstract
        """The subclass's TrainResult, usually ``TrainResult(**self._summary(steps_per_s), best_...=self.best)``."""
        raise NotImplementedError

    def _summary(self, steps_per_s: float) -> dict:
        """Where the run stands and what it wrote (the fields both trainers' TrainResult share)."""
        best = self.out_dir / BEST
        return {"out_dir": os.fspath(self.out_dir), "step": self.step_count, "epoch": self.epoch,
                "last_checkpoint": os.fspath(self.out_dir / LAST),
                "best_checkpoint": os.fspath(best) if best.exists() else None, "last_val": self.last_val,
                "steps_per_s": steps_per_s}

    # ---------------------------------------------------------- setup stages
    def _open_run(self, read_checkpoint) -> dict | None:
        """``run.out_dir``; the checked ``last.pt`` when resuming (None otherwise); config.yaml written."""
        self.out_dir = Path(self.cfg.run.out_dir)
        last = self.out_dir / LAST
        ckpt = None
        if self.resume:
            if not last.is_file():
                raise FileNotFoundError(f"--resume: no checkpoint {os.fspath(last)!r} to resume from")
            ckpt = read_checkpoint(last, map_location="cpu")
            self._check_resumable(ckpt)
        elif last.exists():
            raise ValueError(f"{os.fspath(last)} exists: resume it with --resume, or choose another run.out_dir")
        if self.dist.is_main:
            self.out_dir.mkdir(parents=True, exist_ok=True)
            write_yaml(self.cfg, self.out_dir / "config.yaml")
        return ckpt

    def _check_resumable(self, ckpt: dict) -> None:
        saved, now = ckpt["config"], to_plain(self.cfg)
        diff = [k for s in RESUME_SECTIONS for k in diff_keys(saved.get(s), now.get(s), s)]
        if diff:
            raise ValueError("cannot resume: the config differs from the checkpoint's in "
                             f"{', '.join(diff[:10])}{' ...' if len(diff) > 10 else ''} "
                             "(only the run section may change between a run and its resumption)")

    def _build_stream(self, reflections, n_train: int, similarity_keys=None, group_size: int = 32) -> None:
        """The shuffled, augmented :class:`~xrdflow.data.PatternStream` of this rank and its DataLoader
        (with hard-negative batches when ``similarity_keys`` are given)."""
        from ..data import PatternStream

        cfg = self.cfg
        threads = cfg.run.render_threads
        if threads is None and cfg.run.num_workers > 0:
            threads = 1
        self.stream = PatternStream(reflections, self.sim, self.augmentation, batch_size=cfg.optim.batch_size,
                                    seed=cfg.run.seed, shuffle=True, drop_last=True, threads=threads,
                                    rank=self.dist.rank, world_size=self.dist.world_size,
                                    scan_range=cfg.make_scan_range(), similarity_keys=similarity_keys,
                                    group_size=group_size)
        self.steps_per_epoch = self.stream.num_batches(self.dist.world_size, cfg.run.num_workers, self.dist.rank)
        if self.steps_per_epoch == 0:
            raise ValueError(f"{n_train} training structures give no full batch of {cfg.optim.batch_size} "
                             f"per process ({self.dist.world_size} processes x {max(1, cfg.run.num_workers)} "
                             "workers): lower optim.batch_size or run.num_workers")
        # The loader draws its workers' base seed from its own generator (re-seeded every epoch), not
        # from the global torch RNG, so starting an epoch's iterator leaves the model's RNG untouched
        # (a resumed run restarts the current epoch's iterator once more than an uninterrupted one).
        self._loader_rng = torch.Generator()
        self.loader = torch.utils.data.DataLoader(
            self.stream, batch_size=None, num_workers=cfg.run.num_workers, generator=self._loader_rng,
            persistent_workers=cfg.run.num_workers > 0, pin_memory=self.device.type == "cuda")

    def _build_optimization(self) -> None:
        """AdamW over ``self.model``, autocast/GradScaler, the schedule over the run; counters at 0."""
        cfg = self.cfg
        self.optimizer = build_optimizer(self.model, cfg)
        self.autocast_dtype, use_scaler = amp_setup(cfg.optim.amp, self.device)
        self.scaler = torch.amp.GradScaler("cuda", enabled=True) if use_scaler else None
        self.total_steps = (cfg.optim.max_steps if cfg.optim.max_steps is not None
                            else cfg.optim.epochs * self.steps_per_epoch)
        self.scheduler = make_scheduler(self.optimizer, cfg.optim.warmup_steps, self.total_steps,
                                        cfg.optim.min_lr_ratio)
        self.step_count, self.epoch, self.batch_in_epoch = 0, 0, 0
        self.best, self.best_step, self.last_val = None, None, None

    def _start_metrics(self, ckpt: dict | None) -> None:
        """metrics.csv (+ TensorBoard); restores ``ckpt`` and drops the rows logged after its step."""
        self.metrics = MetricsLog(self.out_dir, columns=self.columns, tensorboard=self.cfg.run.tensorboard,
                                  enabled=self.dist.is_main)
        if self.metrics.tensorboard_note:
            self.log(self.metrics.tensorboard_note)
        if ckpt is None:
            self.metrics.truncate_after(0)  # rows of an earlier attempt that crashed before its first checkpoint
            return
        self._restore(ckpt)
        dropped = self.metrics.truncate_after(self.step_count)
        self.log(f"resumed from {self.out_dir / LAST} at step {self.step_count} (epoch {self.epoch}, batch "
                 f"{self.batch_in_epoch}/{self.steps_per_epoch})"
                 + (f"; dropped {dropped} metrics rows logged after that step" if dropped else ""))

    def _restore(self, ckpt: dict) -> None:
        """Model, optimizer, schedule, scaler, counters and best value of ``ckpt`` (a subclass adds the RNG)."""
        self.model.load_state_dict(ckpt["model"])
        self.optimizer.load_state_dict(ckpt["optimizer"])
        self.scheduler.load_state_dict(ckpt["scheduler"])
        if self.scaler is not None and ckpt.get("scaler"):
            self.scaler.load_state_dict(ckpt["scaler"])
        self.step_count, self.epoch = int(ckpt["step"]), int(ckpt["epoch"])
        self.batch_in_epoch = int(ckpt["batch_in_epoch"])
        best = ckpt.get("best") or {}
        self.best, self.best_step = best.get(f"val_{self.best_key}"), best.get("step")

    def _state(self) -> dict:
        """The checkpoint entries every trainer writes (a subclass's :meth:`_payload` adds to them)."""
        return {"config": to_plain(self.cfg), "model": self.model.state_dict(),
                "optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict(),
                "scaler": self.scaler.state_dict() if self.scaler is not None else None,
                "step": self.step_count, "epoch": self.epoch, "batch_in_epoch": self.batch_in_epoch,
                "total_steps": self.total_steps, "best": {f"val_{self.best_key}": self.best, "step": self.best_step},
                "last_val": self.last_val, "torch_version": str(torch.__version__)}

    # ---------------------------------------------------------- one step
    def _autocast(self):
        if self.autocast_dtype is None:
            return torch.autocast("cpu", enabled=False)
        return torch.autocast("cuda", dtype=self.autocast_dtype)

    def _optimize(self, loss: torch.Tensor, value: float) -> tuple[float, float]:
        """Backward (scaled for fp16), gradient clipping, AdamW, schedule; ``(grad_norm, lr)``.
        ``value``: the loss as a float, refused when not finite."""
        if not math.isfinite(value):
            raise FloatingPointError(f"the loss is {value} at step {self.step_count}; lower optim.lr or "
                                     "use optim.amp: none")
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
        return grad_norm, lr

    # ---------------------------------------------------------- checkpoints
    def save(self, val: dict | None = None) -> None:
        """Write last.pt, and best.pt when ``val`` is a new best (all ranks call; rank 0 writes)."""
        new_best = val is not None and (self.best is None or val[self.best_key] > self.best)
        if new_best:
            self.best, self.best_step = val[self.best_key], self.step_count
        payload = self._payload()  # collective under DDP (rng of every rank)
        if self.dist.is_main:
            fmt = {"format": self.checkpoint_format, "version": self.checkpoint_version}
            save_checkpoint(self.out_dir / LAST, payload, **fmt)
            if new_best:
                save_checkpoint(self.out_dir / BEST, payload, **fmt)
        dist_util.barrier(self.dist)

    # ---------------------------------------------------------- loop
    def _elapsed(self) -> float:
        return time.perf_counter() - self._t0

    def _due(self, every: int, epoch_done: bool) -> bool:
        """At every ``every`` steps, and at an epoch end when :attr:`always_at_epoch_end` or ``every`` is 0."""
        return bool((every and self.step_count % every == 0)
                    or (epoch_done and (self.always_at_epoch_end or not every)))

    def _log_train(self, window: dict, n: int, stats: dict, rate: float, bar) -> None:
        means = {k: window[k] / n for k in self.window_keys}
        self.metrics.log(step=self.step_count, epoch=self.epoch, split="train", **means,
                         **self._row_extras(stats), lr=stats["lr"], grad_norm=stats["grad_norm"],
                         patterns_per_s=round(rate, 2), elapsed_s=round(self._elapsed(), 3))
        bar.set_postfix(**self._postfix(means, stats, rate))

    def run(self, stop_at_step: int | None = None):
        """Train to the end of the schedule, or stop (with a checkpoint) after ``stop_at_step`` steps."""
        from tqdm.auto import tqdm

        cfg = self.cfg
        self._t0 = time.perf_counter()
        end = self.total_steps if stop_at_step is None else min(self.total_steps, stop_at_step)
        bar = tqdm(total=self.total_steps, initial=self.step_count, unit="step", dynamic_ncols=True,
                   disable=not (progress_enabled(cfg.run.progress) and self.dist.is_main), desc=self.progress_desc)
        window, window_n, window_t = dict.fromkeys(self.window_keys, 0.0), 0, time.perf_counter()
        start_step, t_start = self.step_count, time.perf_counter()
        global_batch = cfg.optim.batch_size * self.dist.world_size
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
                    for k in self.window_keys:
                        window[k] += stats[k]
                    window_n += 1
                    if self.step_count % cfg.run.log_every == 0 or self.step_count == end:
                        now = time.perf_counter()
                        self._log_train(window, window_n, stats, window_n * global_batch / max(now - window_t, 1e-9),
                                        bar)
                        window, window_n, window_t = dict.fromkeys(self.window_keys, 0.0), 0, now
                    bar.update(1)
                    epoch_done = self.batch_in_epoch >= self.steps_per_epoch
                    step_epoch = self.epoch
                    if epoch_done:
                        self.epoch += 1
                        self.batch_in_epoch = 0
                    finished = self.step_count >= end
                    val = None
                    if finished or self._due(cfg.run.val_every, epoch_done):
                        val = self.validate(step_epoch)
                        if val is not None:
                            self.log(self._val_message(val))
                    if finished or val is not None or self._due(cfg.run.checkpoint_every, epoch_done):
                        self.save(val)
                    if finished or epoch_done:
                        break
                else:
                    raise RuntimeError(f"the stream ended after {self.batch_in_epoch} of {self.steps_per_epoch} "
                                       f"batches of epoch {self.epoch}")
        finally:
            bar.close()
            self.metrics.close()
        took = time.perf_counter() - t_start
        return self._result((self.step_count - start_step) / took if took > 0 else 0.0)

    def close(self) -> None:
        dist_util.shutdown(self.dist)
