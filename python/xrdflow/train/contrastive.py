"""The contrastive training loop (EACNN, Zhang et al., Appl. Sci. 15, 5851 (2025), sec. 2.3-2.5).

Stages, each a small function or method of :class:`Trainer`:

* :func:`resolve_device`, :func:`amp_setup` -- where and in which precision
  (``torch.autocast`` bf16/fp16 only on CUDA, a GradScaler for fp16);
* :func:`build_model`, :func:`build_optimizer` -- a seeded
  :class:`~xrdflow.models.DualTower`; AdamW without weight decay on biases,
  norms and the temperature; warmup + cosine schedule
  (:mod:`xrdflow.train.schedule`);
* :meth:`Trainer.setup` -- data (:func:`xrdflow.train.data.prepare_data`),
  the pattern stream (:class:`xrdflow.data.PatternStream` over the cached
  reflections with ``cfg.augmentation``; the crystal tower sees the clean
  structure's graph, gathered by the stream's ``index``), DDP, resume;
* :meth:`Trainer.step` -- one optimizer step: embeddings of both towers,
  gathered over ranks (global-batch InfoNCE, :func:`xrdflow.models.clip_loss`),
  backward, gradient clipping, AdamW, schedule;
* :meth:`Trainer.validate` -- retrieval on the held-out set: every
  validation pattern (augmented like the training ones, with fixed draws:
  ``run.val_augmentation_seed``, epoch 0) ranks all validation crystals;
  top-1 and top-5 accuracy;
* :meth:`Trainer.save` -- ``last.pt`` (and ``best.pt`` at a new best top-1),
  atomically (:mod:`xrdflow.train.checkpoint`).

Exact resumption: a checkpoint holds the step, the epoch, how many batches
of that epoch were used, the model, optimizer, scheduler and scaler states
and every random generator.  The stream's order and augmentation draws are
functions of (seed, epoch, structure index), so a resumed run re-creates the
epoch and skips the batches already used; on CPU, N steps in one go and
N/2 + N/2 with a resume in between give bit-identical parameters
(tests/test_train.py).  On CUDA some kernels (index_add_, atomics) are not
deterministic, so a resumed GPU run matches only to rounding.
"""
from __future__ import annotations

import dataclasses
import math
import os
import random
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from . import distributed as dist_util
from .checkpoint import read_checkpoint, rng_state, save_checkpoint, set_rng_state
from .config import TrainConfig, config_to_dict, save_config
from .data import PreparedData, prepare_data
from .metrics import MetricsLog
from .schedule import make_scheduler

__all__ = ["Trainer", "TrainResult", "train", "resolve_device", "amp_setup", "build_model", "build_optimizer",
           "retrieval_accuracy"]

LAST, BEST = "last.pt", "best.pt"
#: config sections a resumed run must share with the checkpoint (``run`` may differ).
RESUME_SECTIONS = ("model", "data", "simulator", "augmentation", "optim")


# ------------------------------------------------------------------ small stages
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


def build_model(cfg: TrainConfig, device: torch.device):
    """A :class:`~xrdflow.models.DualTower` initialised from ``run.seed``."""
    from ..models import DualTower

    seed_everything(cfg.run.seed)
    return DualTower(cfg.model).to(device)


def build_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.AdamW:
    """AdamW; biases, normalisation weights (1-D tensors) and the temperature get no weight decay."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (no_decay if p.ndim <= 1 else decay).append(p)
    o = cfg.optim
    groups = [{"params": decay, "weight_decay": o.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=o.lr, betas=o.betas, eps=o.eps)


class _Towers(nn.Module):
    """Both towers behind one ``forward`` (what DistributedDataParallel wraps)."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, graphs, patterns):
        return self.model.encode_crystals(graphs), self.model.encode_patterns(patterns), self.model.logit_scale


@torch.no_grad()
def retrieval_accuracy(crystal: torch.Tensor, pattern: torch.Tensor, ks=(1, 5)) -> dict:
    """Top-k accuracy of ranking all crystals for every pattern (row i of each is the same structure)."""
    sims = pattern.float() @ crystal.float().T
    target = sims.diagonal().unsqueeze(1)
    rank = (sims > target).sum(dim=1)  # crystals strictly more similar than the right one
    return {f"top{k}": float((rank < k).float().mean()) for k in ks}


@dataclass
class TrainResult:
    out_dir: str
    step: int
    epoch: int
    last_checkpoint: str
    best_checkpoint: str | None
    best_val_top1: float | None
    last_val: dict | None
    steps_per_s: float


def _diff_keys(a, b, prefix="") -> list[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        out = []
        for k in sorted(set(a) | set(b)):
            out += _diff_keys(a.get(k, "<missing>"), b.get(k, "<missing>"), f"{prefix}.{k}" if prefix else k)
        return out
    return [] if a == b else [prefix]


def _progress_enabled(setting) -> bool:
    if setting is not None:
        return setting
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):
        return False


def _tqdm_safe_print(msg: str) -> None:
    """A line on stderr that does not break an active progress bar."""
    from tqdm.auto import tqdm

    tqdm.write(msg, file=sys.stderr)


# ------------------------------------------------------------------ trainer
class Trainer:
    """One training run; :meth:`run` trains until the schedule ends (or ``stop_at_step``)."""

    def __init__(self, cfg: TrainConfig, *, resume: bool = False, log=None):
        if not isinstance(cfg, TrainConfig):
            raise TypeError(f"Trainer needs a TrainConfig, got {type(cfg).__name__}")
        self.cfg = cfg
        self.resume = resume
        self._log = log if log is not None else _tqdm_safe_print

    def log(self, msg: str) -> None:
        if self.dist.is_main:
            self._log(msg)

    # ---------------------------------------------------------- setup
    def setup(self) -> None:
        cfg = self.cfg
        if cfg.run.torch_threads is not None:
            torch.set_num_threads(cfg.run.torch_threads)
        want = cfg.run.device
        self.dist = dist_util.init("cuda" if (want.startswith("cuda") or (want == "auto" and torch.cuda.is_available()))
                                   else "cpu")
        self.device = resolve_device(want, self.dist.local_rank)
        self.out_dir = Path(cfg.run.out_dir)
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
            save_config(cfg, self.out_dir / "config.yaml")

        # data: rank 0 prepares (and caches), the other ranks read its cache
        progress = _progress_enabled(cfg.run.progress) and self.dist.is_main
        if self.dist.is_main or not cfg.data.cache:
            self.data: PreparedData = prepare_data(cfg, self.out_dir, progress=progress, log=self.log)
        dist_util.barrier(self.dist)
        if not self.dist.is_main and cfg.data.cache:
            self.data = prepare_data(cfg, self.out_dir, progress=False, log=lambda m: None, cache_only=True)

        self.sim = cfg.make_simulator()
        self.augmentation = cfg.make_augmentation()
        self.model = build_model(cfg, self.device)
        self.towers = _Towers(self.model)
        if self.dist.enabled:
            from torch.nn.parallel import DistributedDataParallel as DDP

            ids = [self.device.index] if self.device.type == "cuda" else None
            self.towers = DDP(self.towers, device_ids=ids, output_device=self.device.index if ids else None)
        self.optimizer = build_optimizer(self.model, cfg)
        self.autocast_dtype, use_scaler = amp_setup(cfg.optim.amp, self.device)
        self.scaler = torch.amp.GradScaler("cuda", enabled=True) if use_scaler else None

        self._build_stream()
        self.total_steps = (cfg.optim.max_steps if cfg.optim.max_steps is not None
                            else cfg.optim.epochs * self.steps_per_epoch)
        self.scheduler = make_scheduler(self.optimizer, cfg.optim.warmup_steps, self.total_steps,
                                        cfg.optim.min_lr_ratio)
        self.step_count, self.epoch, self.batch_in_epoch = 0, 0, 0
        self.best_top1, self.best_step, self.last_val = None, None, None
        self._val_patterns = None
        self.metrics = MetricsLog(self.out_dir, tensorboard=cfg.run.tensorboard, enabled=self.dist.is_main)
        if self.metrics.tensorboard_note:
            self.log(self.metrics.tensorboard_note)
        if ckpt is None:
            self.metrics.truncate_after(0)  # rows of an earlier attempt that crashed before its first checkpoint
        else:
            self._restore(ckpt)
            dropped = self.metrics.truncate_after(self.step_count)
            self.log(f"resumed from {last} at step {self.step_count} (epoch {self.epoch}, batch "
                     f"{self.batch_in_epoch}/{self.steps_per_epoch})"
                     + (f"; dropped {dropped} metrics rows logged after that step" if dropped else ""))
        n_params = sum(p.numel() for p in self.model.parameters())
        self.log(f"model: {n_params:,} parameters on {self.device}"
                 + (f", autocast {self.autocast_dtype}" if self.autocast_dtype else "")
                 + (f"; {self.dist.world_size} processes" if self.dist.enabled else "")
                 + f"; {self.steps_per_epoch} steps per epoch, {self.total_steps} steps in all")

    def _build_stream(self) -> None:
        from ..data import PatternStream

        cfg = self.cfg
        threads = cfg.run.render_threads
        if threads is None and cfg.run.num_workers > 0:
            threads = 1
        self.stream = PatternStream(self.data.train_reflections, self.sim, self.augmentation,
                                    batch_size=cfg.optim.batch_size, seed=cfg.run.seed, shuffle=True, drop_last=True,
                                    threads=threads, rank=self.dist.rank, world_size=self.dist.world_size)
        self.steps_per_epoch = self.stream.num_batches(self.dist.world_size, cfg.run.num_workers, self.dist.rank)
        if self.steps_per_epoch == 0:
            raise ValueError(f"{self.data.n_train} training structures give no full batch of {cfg.optim.batch_size} "
                             f"per process ({self.dist.world_size} processes x {max(1, cfg.run.num_workers)} "
                             "workers): lower optim.batch_size or run.num_workers")
        # The loader draws its workers' base seed from its own generator (re-seeded every epoch), not
        # from the global torch RNG, so starting an epoch's iterator leaves the model's RNG untouched
        # (a resumed run restarts the current epoch's iterator once more than an uninterrupted one).
        self._loader_rng = torch.Generator()
        self.loader = torch.utils.data.DataLoader(
            self.stream, batch_size=None, num_workers=cfg.run.num_workers, generator=self._loader_rng,
            persistent_workers=cfg.run.num_workers > 0, pin_memory=self.device.type == "cuda")

    def _check_resumable(self, ckpt: dict) -> None:
        saved, now = ckpt["config"], config_to_dict(self.cfg)
        diff = [k for s in RESUME_SECTIONS for k in _diff_keys(saved.get(s), now.get(s), s)]
        if diff:
            raise ValueError("cannot resume: the config differs from the checkpoint's in "
                             f"{', '.join(diff[:10])}{' ...' if len(diff) > 10 else ''} "
                             "(only the run section may change between a run and its resumption)")

    def _restore(self, ckpt: dict) -> None:
        self.model.load_state_dict(ckpt["model"])
        self.optimizer.load_state_dict(ckpt["optimizer"])
        self.scheduler.load_state_dict(ckpt["scheduler"])
        if self.scaler is not None and ckpt.get("scaler"):
            self.scaler.load_state_dict(ckpt["scaler"])
        self.step_count, self.epoch, self.batch_in_epoch = int(ckpt["step"]), int(ckpt["epoch"]), \
            int(ckpt["batch_in_epoch"])
        best = ckpt.get("best") or {}
        self.best_top1, self.best_step = best.get("val_top1"), best.get("step")
        layout = ckpt.get("layout", {})
        now = {"world_size": self.dist.world_size, "num_workers": self.cfg.run.num_workers}
        if layout and layout != now:
            warnings.warn(f"resuming with {now} instead of {layout}: the order of the current epoch differs from "
                          "an uninterrupted run", RuntimeWarning, stacklevel=3)
        rng = ckpt["rng"]
        set_rng_state(rng[self.dist.rank] if self.dist.rank < len(rng) else rng[0])

    # ---------------------------------------------------------- one step
    def _autocast(self):
        if self.autocast_dtype is None:
            return torch.autocast("cpu", enabled=False)
        return torch.autocast("cuda", dtype=self.autocast_dtype)

    def _graph_batch(self, index: torch.Tensor):
        from ..models import collate_graphs

        graphs = self.data.train_graphs
        return collate_graphs([graphs[i] for i in index.tolist()]).to(self.device, non_blocking=True)

    def step(self, batch: dict) -> dict:
        """One optimizer step on a stream batch; returns floats (loss, acc, temperature, lr, grad_norm)."""
        from ..models import clip_loss

        self.towers.train()
        patterns = batch["pattern"].to(self.device, non_blocking=True)
        graphs = self._graph_batch(batch["index"])
        with self._autocast():
            c, x, logit_scale = self.towers(graphs, patterns)
        c = dist_util.gather(c.float(), self.dist)
        x = dist_util.gather(x.float(), self.dist)
        loss, stats = clip_loss(c, x, logit_scale.float())
        if not math.isfinite(stats["loss"]):
            raise FloatingPointError(f"the loss is {stats['loss']} at step {self.step_count}; lower optim.lr or "
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
        return {"loss": stats["loss"], "acc": stats["acc"], "temperature": stats["temperature"], "lr": lr,
                "grad_norm": grad_norm}

    # ---------------------------------------------------------- validation
    def _validation_patterns(self) -> torch.Tensor:
        if self._val_patterns is None:
            y, _ = self.sim.render(self.data.val_reflections, augmentation=self.augmentation,
                                   seed=self.cfg.run.val_augmentation_seed, epoch=0)
            self._val_patterns = torch.from_numpy(y)
        return self._val_patterns

    @torch.no_grad()
    def embed_validation(self, chunk: int = 256) -> tuple[torch.Tensor, torch.Tensor]:
        from ..models import collate_graphs

        self.model.eval()
        try:
            ys = self._validation_patterns()
            cs, xs = [], []
            for start in range(0, self.data.n_val, chunk):
                g = collate_graphs(self.data.val_graphs[start:start + chunk]).to(self.device)
                with self._autocast():
                    cs.append(self.model.encode_crystals(g).float().cpu())
                    xs.append(self.model.encode_patterns(ys[start:start + chunk].to(self.device)).float().cpu())
            return torch.cat(cs), torch.cat(xs)
        finally:
            self.model.train()

    def validate(self, epoch: int | None = None) -> dict | None:
        """Retrieval top-1/top-5 of validation patterns among validation crystals (rank 0), or None."""
        if self.data.n_val < 2:
            return None
        result = None
        if self.dist.is_main:
            c, x = self.embed_validation()
            result = retrieval_accuracy(c, x)
            result["n"] = self.data.n_val
            self.last_val = result
            self.metrics.log(step=self.step_count, epoch=self.epoch if epoch is None else epoch, split="val", val_top1=result["top1"],
                             val_top5=result["top5"], val_n=result["n"], elapsed_s=round(self._elapsed(), 3))
        dist_util.barrier(self.dist)
        return result

    # ---------------------------------------------------------- checkpoints
    def _payload(self) -> dict:
        rng = rng_state()
        if self.dist.enabled:
            gathered = [None] * self.dist.world_size
            torch.distributed.all_gather_object(gathered, rng)
            rng = gathered
        else:
            rng = [rng]
        return {"config": config_to_dict(self.cfg), "model": self.model.state_dict(),
                "optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict(),
                "scaler": self.scaler.state_dict() if self.scaler is not None else None,
                "step": self.step_count, "epoch": self.epoch, "batch_in_epoch": self.batch_in_epoch,
                "total_steps": self.total_steps, "rng": rng,
                "layout": {"world_size": self.dist.world_size, "num_workers": self.cfg.run.num_workers},
                "best": {"val_top1": self.best_top1, "step": self.best_step},
                "last_val": self.last_val, "torch_version": str(torch.__version__)}

    def save(self, val: dict | None = None) -> None:
        """Write last.pt, and best.pt when ``val`` is a new best top-1 (all ranks call; rank 0 writes)."""
        new_best = val is not None and (self.best_top1 is None or val["top1"] > self.best_top1)
        if new_best:
            self.best_top1, self.best_step = val["top1"], self.step_count
        payload = self._payload()  # collective under DDP (rng of every rank)
        if self.dist.is_main:
            save_checkpoint(self.out_dir / LAST, payload)
            if new_best:
                save_checkpoint(self.out_dir / BEST, payload)
        dist_util.barrier(self.dist)

    # ---------------------------------------------------------- loop
    def _elapsed(self) -> float:
        return time.perf_counter() - self._t0

    def run(self, stop_at_step: int | None = None) -> TrainResult:
        """Train to the end of the schedule, or stop (with a checkpoint) after ``stop_at_step`` steps."""
        from tqdm.auto import tqdm

        cfg = self.cfg
        self._t0 = time.perf_counter()
        end = self.total_steps if stop_at_step is None else min(self.total_steps, stop_at_step)
        bar = tqdm(total=self.total_steps, initial=self.step_count, unit="step", dynamic_ncols=True,
                   disable=not (_progress_enabled(cfg.run.progress) and self.dist.is_main), desc="train")
        window = {"loss": 0.0, "acc": 0.0, "n": 0, "t": time.perf_counter()}
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
                    window["loss"] += stats["loss"]
                    window["acc"] += stats["acc"]
                    window["n"] += 1
                    if self.step_count % cfg.run.log_every == 0 or self.step_count == end:
                        now = time.perf_counter()
                        rate = window["n"] * global_batch / max(now - window["t"], 1e-9)
                        n = window["n"]
                        self.metrics.log(step=self.step_count, epoch=self.epoch, split="train",
                                         loss=window["loss"] / n, acc=window["acc"] / n,
                                         temperature=stats["temperature"], lr=stats["lr"],
                                         grad_norm=stats["grad_norm"], patterns_per_s=round(rate, 2),
                                         elapsed_s=round(self._elapsed(), 3))
                        bar.set_postfix(loss=f"{window['loss'] / n:.3f}", T=f"{stats['temperature']:.4f}",
                                        pat_s=f"{rate:.0f}",
                                        top1=None if self.last_val is None else f"{self.last_val['top1']:.3f}")
                        window = {"loss": 0.0, "acc": 0.0, "n": 0, "t": now}
                    bar.update(1)
                    epoch_done = self.batch_in_epoch >= self.steps_per_epoch
                    step_epoch = self.epoch
                    if epoch_done:
                        self.epoch += 1
                        self.batch_in_epoch = 0
                    finished = self.step_count >= end
                    val = None
                    if epoch_done or (cfg.run.val_every and self.step_count % cfg.run.val_every == 0) or finished:
                        val = self.validate(step_epoch)
                        if val is not None:
                            self.log(f"step {self.step_count}: validation top-1 {val['top1']:.4f}, "
                                     f"top-5 {val['top5']:.4f} ({val['n']} structures)")
                    if (epoch_done or finished or val is not None
                            or (cfg.run.checkpoint_every and self.step_count % cfg.run.checkpoint_every == 0)):
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
        steps_per_s = (self.step_count - start_step) / took if took > 0 else 0.0
        return TrainResult(out_dir=os.fspath(self.out_dir), step=self.step_count, epoch=self.epoch,
                           last_checkpoint=os.fspath(self.out_dir / LAST),
                           best_checkpoint=os.fspath(self.out_dir / BEST) if (self.out_dir / BEST).exists() else None,
                           best_val_top1=self.best_top1, last_val=self.last_val, steps_per_s=steps_per_s)

    def close(self) -> None:
        dist_util.shutdown(self.dist)


def train(cfg: TrainConfig, *, resume: bool = False, stop_at_step: int | None = None, log=None) -> TrainResult:
    """Train the dual tower of ``cfg`` (see the module docs); returns where things were written.

    resume: continue from ``run.out_dir/last.pt`` exactly where it stopped.
    stop_at_step: stop (writing last.pt) once this many steps are done, without
        changing the schedule (an interruption; resume later with ``resume=True``).
    """
    trainer = Trainer(cfg, resume=resume, log=log)
    try:
        trainer.setup()
        return trainer.run(stop_at_step=stop_at_step)
    finally:
        if hasattr(trainer, "dist"):
            trainer.close()
