"""The contrastive training loop (EACNN, Zhang et al., Appl. Sci. 15, 5851 (2025), sec. 2.3-2.5).

Stages, each a small function or method of :class:`Trainer` (those shared with the classifier
live in :mod:`xrdflow.train.loop`, the base class :class:`~xrdflow.train.loop.StreamTrainer`):

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

import os
import warnings
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from .._fileio import sha256_file
from . import distributed as dist_util
from .checkpoint import read_checkpoint, rng_state, set_rng_state
from .config import TrainConfig, config_from_dict, to_plain
from .data import PreparedData, prepare_data
from .loop import (BEST, LAST, RESUME_SECTIONS, StreamTrainer, amp_setup, build_optimizer, diff_keys,
                   progress_enabled, resolve_device, seed_everything)

__all__ = ["Trainer", "TrainResult", "train", "resolve_device", "amp_setup", "build_model", "build_optimizer",
           "retrieval_accuracy", "init_weights", "LAST", "BEST", "RESUME_SECTIONS"]


# ------------------------------------------------------------------ small stages
def build_model(cfg: TrainConfig, device: torch.device):
    """A :class:`~xrdflow.models.DualTower` initialised from ``run.seed``."""
    from ..models import DualTower

    seed_everything(cfg.run.seed)
    return DualTower(cfg.model).to(device)


def init_weights(model, cfg: TrainConfig) -> str:
    """Load ``cfg.init_from``'s weights into ``model`` (the start of a second training stage); returns the
    checkpoint's path and sha256.  ValueError when its model config differs from ``cfg.model``."""
    from ..pretrained import resolve

    path = resolve(cfg.init_from)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"init_from: no such checkpoint {path!r}")
    ckpt = read_checkpoint(path, map_location="cpu")
    # the simulated-pattern weight holds no parameters: a stage may start to use it (or change it)
    diff = [k for k in diff_keys(to_plain(config_from_dict(ckpt["config"]).model), to_plain(cfg.model), "model")
            if k != "model.simulated_pattern_weight"]
    if diff:
        raise ValueError(f"init_from: the checkpoint {path} has another model config ({', '.join(diff[:6])}"
                         f"{' ...' if len(diff) > 6 else ''}); copy its model section into this config")
    model.load_state_dict(ckpt["model"])
    return f"{path} (sha256 {sha256_file(path)[:12]}, step {ckpt.get('step')})"


class _Towers(nn.Module):
    """Both towers behind one ``forward`` (what DistributedDataParallel wraps)."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, graphs, patterns, simulated_patterns=None):
        return (self.model.encode_structures(graphs, simulated_patterns), self.model.encode_patterns(patterns),
                self.model.logit_scale)


@torch.no_grad()
def retrieval_accuracy(crystal: torch.Tensor, pattern: torch.Tensor, ks=(1, 5)) -> dict:
    """Top-k accuracy of ranking all crystals for every pattern (row i of each is the same structure)."""
    sims = pattern.float() @ crystal.float().T
    target = sims.diagonal().unsqueeze(1)
    rank = (sims > target).sum(dim=1)  # crystals strictly more similar than the right one
    return {f"top{k}": float((rank < k).float().mean()) for k in ks}


@dataclass
class TrainResult:
    """Where a run stands.  ``best_val_top1``: the best validation top-1 that picked best.pt (with
    ``data.val_distractors``, the top-1 among validation crystals plus distractors)."""

    out_dir: str
    step: int
    epoch: int
    last_checkpoint: str
    best_checkpoint: str | None
    best_val_top1: float | None
    last_val: dict | None
    steps_per_s: float


# ------------------------------------------------------------------ trainer
class Trainer(StreamTrainer):
    """One training run; :meth:`run` trains until the schedule ends (or ``stop_at_step``).

    The stages shared with the classifier (run directory, resume, stream, optimizer, the loop and its
    cadence) are those of :class:`xrdflow.train.loop.StreamTrainer`."""

    window_keys = ("loss", "acc")
    best_key = "top1"

    def __init__(self, cfg: TrainConfig, *, resume: bool = False, log=None):
        if not isinstance(cfg, TrainConfig):
            raise TypeError(f"Trainer needs a TrainConfig, got {type(cfg).__name__}")
        super().__init__(cfg, resume=resume, log=log)

    @property
    def best_top1(self):
        """Best validation top-1 so far (the old name of ``best``)."""
        return self.best

    # ---------------------------------------------------------- setup
    def setup(self) -> None:
        cfg = self.cfg
        if cfg.run.torch_threads is not None:
            torch.set_num_threads(cfg.run.torch_threads)
        want = cfg.run.device
        self.dist = dist_util.init("cuda" if (want.startswith("cuda") or (want == "auto" and torch.cuda.is_available()))
                                   else "cpu")
        self.device = resolve_device(want, self.dist.local_rank)
        ckpt = self._open_run(read_checkpoint)

        # data: rank 0 prepares (and caches), the other ranks read its cache
        progress = progress_enabled(cfg.run.progress) and self.dist.is_main
        if self.dist.is_main or not cfg.data.cache:
            self.data: PreparedData = prepare_data(cfg, self.out_dir, progress=progress, log=self.log)
        dist_util.barrier(self.dist)
        if not self.dist.is_main and cfg.data.cache:
            self.data = prepare_data(cfg, self.out_dir, progress=False, log=lambda m: None, cache_only=True)

        self.sim = cfg.make_simulator()
        self.augmentation = cfg.make_augmentation()
        self.model = build_model(cfg, self.device)
        if cfg.init_from is not None and ckpt is None:
            self.log(f"weights initialised from {init_weights(self.model, cfg)}")
        self.towers = _Towers(self.model)
        if self.dist.enabled:
            from torch.nn.parallel import DistributedDataParallel as DDP

            ids = [self.device.index] if self.device.type == "cuda" else None
            self.towers = DDP(self.towers, device_ids=ids, output_device=self.device.index if ids else None)
        keys, group_size = None, 32
        if cfg.hard_negatives is not None:
            keys, group_size = self.init_crystal_embeddings(), cfg.hard_negatives["group_size"]
            self.log(f"hard-negative batches: groups of <= {group_size} look-alikes by the init_from "
                     "model's crystal embeddings")
        self._build_stream(self.data.train_reflections, self.data.n_train, keys, group_size)
        self._build_optimization()
        self._val_patterns = None
        self._choose_distractors()
        self._start_metrics(ckpt)
        n_params = sum(p.numel() for p in self.model.parameters())
        self.log(f"model: {n_params:,} parameters on {self.device}"
                 + (f", autocast {self.autocast_dtype}" if self.autocast_dtype else "")
                 + (f"; {self.dist.world_size} processes" if self.dist.enabled else "")
                 + f"; {self.steps_per_epoch} steps per epoch, {self.total_steps} steps in all")

    def _choose_distractors(self) -> None:
        """``data.val_distractors`` training structures (fixed by the holdout seed) that validation adds to
        its gallery; with them best.pt follows ``top1_distractors``."""
        from .data import validation_distractors
        from .metrics import COLUMNS

        n = min(self.cfg.data.val_distractors, self.data.n_train)
        self.distractors = np.zeros(0, dtype=np.int64)
        if n == 0 or self.data.n_val < 2:
            return
        self.distractors = validation_distractors(self.cfg, self.data.n_train, n)
        self.columns = COLUMNS + ("val_top1_distractors", "val_top5_distractors")
        self.best_key = "top1_distractors"

    def init_crystal_embeddings(self, chunk: int = 256) -> np.ndarray:
        """(n_train, embed_dim) float32 crystal embeddings of the training structures by the ``init_from``
        model (not the weights being trained: a resumed run regroups exactly as the uninterrupted one), fused
        with their clean patterns when this config's model uses them."""
        from ..models import DualTower

        state = torch.random.get_rng_state()  # building a model draws initial weights: keep the run's RNG
        try:
            model = DualTower(self.cfg.model)
        finally:
            torch.random.set_rng_state(state)
        init_weights(model, self.cfg)
        # this config's simulated_pattern_weight: the look-alikes of its own structure embeddings
        return self._structure_embeddings(model.to(self.device), self.data.train_graphs, self.data.train_reflections,
                                          chunk=chunk, desc="hard negatives: embedding", autocast=False,
                                          progress=progress_enabled(self.cfg.run.progress) and self.dist.is_main)

    def _structure_embeddings(self, model, graphs, reflections, index=None, *, chunk: int = 256,
                              progress: bool = False, desc: str = "embedding", autocast: bool = True) -> np.ndarray:
        """(n, embed_dim) float32 structure embeddings by ``model`` (eval mode; the run's autocast unless
        ``autocast`` is false, as before the optimizer is set up) of ``graphs``, the structures ``index``
        (default all) of ``reflections``: the crystal tower's, fused with their clean patterns when the model
        uses them (:func:`xrdflow.evaluate.gallery.structure_embeddings`)."""
        import contextlib

        from ..evaluate.gallery import encode_graphs, structure_embeddings

        with self._autocast() if autocast else contextlib.nullcontext():
            emb = encode_graphs(model, graphs, batch_size=chunk, progress=progress, desc=desc)
            if model.uses_simulated_patterns:
                idx = None if index is None else np.asarray(index, dtype=np.int64)
                clean, _ = self.sim.render(reflections, indices=idx, threads=self.cfg.run.render_threads)
                emb = structure_embeddings(model, emb, clean, batch_size=chunk)
        return emb

    def _restore(self, ckpt: dict) -> None:
        super()._restore(ckpt)
        layout = ckpt.get("layout", {})
        now = {"world_size": self.dist.world_size, "num_workers": self.cfg.run.num_workers}
        if layout and layout != now:
            warnings.warn(f"resuming with {now} instead of {layout}: the order of the current epoch differs from "
                          "an uninterrupted run", RuntimeWarning, stacklevel=4)
        rng = ckpt["rng"]
        set_rng_state(rng[self.dist.rank] if self.dist.rank < len(rng) else rng[0])

    # ---------------------------------------------------------- one step
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
        simulated = self._simulated_patterns(self.data.train_reflections, batch["index"])
        with self._autocast():
            c, x, logit_scale = self.towers(graphs, patterns, simulated)
        c = dist_util.gather(c.float(), self.dist)
        x = dist_util.gather(x.float(), self.dist)
        loss, stats = clip_loss(c, x, logit_scale.float())
        grad_norm, lr = self._optimize(loss, stats["loss"])
        return {"loss": stats["loss"], "acc": stats["acc"], "temperature": stats["temperature"], "lr": lr,
                "grad_norm": grad_norm}

    def _simulated_patterns(self, reflections, index) -> "torch.Tensor | None":
        """Clean patterns of the structures ``index`` (whole scans, the run's simulator) on the device, when the
        model's structure embeddings use them (``model.simulated_pattern_weight`` > 0); else None."""
        if not self.model.uses_simulated_patterns:
            return None
        index = np.asarray(index, dtype=np.int64)
        y, _ = self.sim.render(reflections, indices=index, threads=self.cfg.run.render_threads)
        return torch.from_numpy(y).to(self.device, non_blocking=True)

    # ---------------------------------------------------------- validation
    def _validation_patterns(self) -> torch.Tensor:
        if self._val_patterns is None:
            y, _ = self.sim.render(self.data.val_reflections, augmentation=self.augmentation,
                                   seed=self.cfg.run.val_augmentation_seed, epoch=0)
            self._val_patterns = torch.from_numpy(y)
        return self._val_patterns

    @torch.no_grad()
    def embed_validation(self, chunk: int = 256) -> tuple[torch.Tensor, torch.Tensor]:
        """(structure embeddings, pattern embeddings) of the validation set, row i the same structure."""
        from ..evaluate.gallery import encode_patterns

        c = self._structure_embeddings(self.model, self.data.val_graphs, self.data.val_reflections, chunk=chunk)
        with self._autocast():
            x = encode_patterns(self.model, self._validation_patterns().numpy(), batch_size=chunk)
        return torch.from_numpy(c), torch.from_numpy(x)

    def embed_train_crystals(self, index, chunk: int = 256) -> torch.Tensor:
        """Structure embeddings of the training structures ``index`` by the model being trained (eval mode, the
        validation's autocast; fused with their clean patterns when the model uses them)."""
        return torch.from_numpy(self._structure_embeddings(self.model, [self.data.train_graphs[i] for i in index],
                                                           self.data.train_reflections, index, chunk=chunk))

    def validate(self, epoch: int | None = None) -> dict | None:
        """Retrieval top-1/top-5 of validation patterns among validation crystals (rank 0), or None; with
        ``data.val_distractors`` also among validation crystals plus the distractors."""
        if self.data.n_val < 2:
            return None
        result = None
        if self.dist.is_main:
            c, x = self.embed_validation()
            result = retrieval_accuracy(c, x)
            result["n"] = self.data.n_val
            extra = {}
            if len(self.distractors):
                wrong = self.embed_train_crystals(self.distractors)
                hard = retrieval_accuracy(torch.cat([c, wrong]), x)
                result.update(top1_distractors=hard["top1"], top5_distractors=hard["top5"],
                              n_distractors=len(self.distractors))
                extra = {"val_top1_distractors": hard["top1"], "val_top5_distractors": hard["top5"]}
            self.last_val = result
            self.metrics.log(step=self.step_count, epoch=self.epoch if epoch is None else epoch, split="val",
                             val_top1=result["top1"], val_top5=result["top5"], val_n=result["n"], **extra,
                             elapsed_s=round(self._elapsed(), 3))
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
        return {**self._state(), "rng": rng,
                "layout": {"world_size": self.dist.world_size, "num_workers": self.cfg.run.num_workers}}

    # ---------------------------------------------------------- loop hooks
    def _row_extras(self, stats: dict) -> dict:
        return {"temperature": stats["temperature"]}

    def _postfix(self, means: dict, stats: dict, rate: float) -> dict:
        return {"loss": f"{means['loss']:.3f}", "T": f"{stats['temperature']:.4f}", "pat_s": f"{rate:.0f}",
                "top1": None if self.last_val is None else f"{self.last_val['top1']:.3f}"}

    def _val_message(self, val: dict) -> str:
        msg = (f"step {self.step_count}: validation top-1 {val['top1']:.4f}, top-5 {val['top5']:.4f} "
               f"({val['n']} structures)")
        if "top1_distractors" in val:
            msg += (f"; with {val['n_distractors']} distractors top-1 {val['top1_distractors']:.4f}, "
                    f"top-5 {val['top5_distractors']:.4f}")
        return msg

    def _result(self, steps_per_s: float) -> TrainResult:
        return TrainResult(**self._summary(steps_per_s), best_val_top1=self.best)


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
