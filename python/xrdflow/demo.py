"""``xrdflow demo``: the whole pipeline on the bundled data, in about ten minutes on a laptop CPU.

::

    xrdflow demo                      # fine-tunes the shipped model (xrdflow.pretrained) when there is one
    xrdflow demo --from-scratch       # trains a tiny model from scratch instead
    xrdflow demo --resume             # after Ctrl-C: reuse finished stages, resume training from OUT/train/last.pt

Stages (each timed, each with a progress bar):

1. ``data``     -- the bundled MP-20 subset (train / val / test = 2400 / 300 / 300) and its reflection cache
                   (symmetry, hkl, |F|^2 once per structure; bytes per structure);
2. ``stream``   -- one epoch of realistically augmented patterns through :class:`xrdflow.data.PatternStream`
                   and a torch DataLoader; ``stream_augmentation.png``: a clean pattern and three draws;
3. ``train``    -- fine-tune the shipped checkpoint (or train a tiny model from scratch) for ``--steps``
                   steps with :class:`xrdflow.train.Trainer`, run in ``OUT/train`` (resumable);
4. ``evaluate`` -- :func:`xrdflow.evaluate.evaluate` on the 300 bundled test structures with clean and
                   realistic queries, both baselines, ``tsne.png`` and ``retrieval.png``;
5. ``fit``      -- :func:`xrdflow.fit.fit_pattern` of a simulated noisy RuO2 pattern with known cell and
                   zero shift, ``fit.png``;
6. ``summary``  -- ``summary.md`` and ``summary.json`` (rewritten after every stage, so an interrupted run
                   still leaves a consistent summary of the stages it finished).

Every file is written atomically (temporary file in the same folder, fsync, rename).  ``demo_state.json``
records each finished stage with the settings it ran with; ``--resume`` reuses a finished ``train``,
``evaluate`` or ``fit`` stage when its settings (and for ``evaluate`` the checkpoint's sha256) match, and
continues an interrupted training exactly (the trainer's own resume).  ``data`` and ``stream`` take seconds
and always run again.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ._fileio import atomic_write_text, sha256_file

__all__ = ["DemoConfig", "run_demo", "add_demo_parser", "tiny_train_config", "DEFAULT_STEPS_FINETUNE",
           "DEFAULT_STEPS_SCRATCH"]

STATE_FILE = "demo_state.json"
STATE_VERSION = 1
#: Default optimizer steps: chosen so the whole demo takes about ten minutes on a 2-core CPU (README).
DEFAULT_STEPS_FINETUNE = 300
DEFAULT_STEPS_SCRATCH = 10000
#: Realistic queries whose hybrid top-10 the demo re-ranks by whole-pattern fits (~1-3 s each on 2 cores).
DEFAULT_FIT_QUERIES = 50
STAGES = ("data", "stream", "train", "evaluate", "fit", "summary")


@dataclass
class DemoConfig:
    """What ``xrdflow demo`` does (the command-line options, one field each).

    out: output folder.  steps: optimizer steps (None: DEFAULT_STEPS_FINETUNE when a shipped model is
    fine-tuned, DEFAULT_STEPS_SCRATCH from scratch).  from_scratch: ignore the shipped model.
    checkpoint: a checkpoint to fine-tune instead of the shipped one (path or ``pretrained:NAME``).
    resume: reuse finished stages and resume training.  fit: run the fitting stage.
    limit: use only the first N structures of each split (tests; None = all).
    fit_queries: realistic queries whose hybrid top-10 the evaluation re-ranks by whole-pattern fits
        (``evaluate --fit-rerank``; ~1-3 s each; 0 = none).
    seed: training seed, augmentation draws and t-SNE.  progress: tqdm bars (None: on a terminal).
    """

    out: str = "xrdflow-demo"
    steps: int | None = None
    from_scratch: bool = False
    checkpoint: str | None = None
    resume: bool = False
    fit: bool = True
    limit: int | None = None
    fit_queries: int = DEFAULT_FIT_QUERIES
    seed: int = 0
    progress: bool | None = None

    def __post_init__(self):
        if self.steps is not None and (isinstance(self.steps, bool) or not isinstance(self.steps, int)
                                       or self.steps < 1):
            raise ValueError(f"steps must be a positive integer, got {self.steps!r}")
        if self.limit is not None and (isinstance(self.limit, bool) or not isinstance(self.limit, int)
                                       or self.limit < 8):
            raise ValueError(f"limit must be an integer >= 8 (structures per split), got {self.limit!r}")
        if isinstance(self.fit_queries, bool) or not isinstance(self.fit_queries, int) or self.fit_queries < 0:
            raise ValueError(f"fit_queries must be a non-negative integer, got {self.fit_queries!r}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise ValueError(f"seed must be a non-negative integer, got {self.seed!r}")
        if self.from_scratch and self.checkpoint is not None:
            raise ValueError("give either --from-scratch or --checkpoint, not both")


# ------------------------------------------------------------------ small helpers
def _atomic_json(path: Path, obj) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, default=_json_default) + "\n")


def _json_default(o):
    if isinstance(o, np.integer):
        return int(o)
    if isinstance(o, np.floating):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return os.fspath(o)
    raise TypeError(f"not JSON serializable: {type(o).__name__}")


def _progress_default(setting) -> bool:
    if setting is not None:
        return bool(setting)
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):
        return False


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _loadavg():
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except (AttributeError, OSError):
        return None


def tiny_train_config(out_dir, *, steps: int, seed: int = 0, limit: int | None = None):
    """The from-scratch model: ``configs/contrastive_tiny.yaml``'s model, grid and optimizer, built in code
    (the configs folder is not part of the installed package), on all 2,400 bundled training structures."""
    from .train import config_from_dict

    return config_from_dict({
        "model": {
            "crystal": {"hidden_irreps": "16x0e+8x1o", "lmax": 1, "product_channels": 8, "correlation": 2,
                        "num_interactions": 1, "radial_hidden": [16], "cutoff_angstrom": 4.0, "max_neighbors": 12,
                        "readout_dim": 32, "feat_dim": 32},
            "pattern": {"n_points": 1024, "stem_channels": 8, "widths": [8, 16, 32], "blocks": [1, 1, 1],
                        "norm": "group"},
            "embed_dim": 32, "projection_hidden": 0, "init_temperature": 0.07},
        "data": _data_section(limit),
        "simulator": {"radiation": "CuKa", "two_theta": [5.0, 90.0], "n_points": 1024, "W": 0.04},
        "augmentation": "realistic",
        "optim": {"lr": 0.002, "weight_decay": 0.05, "warmup_steps": min(20, max(1, steps // 10)),
                  "max_steps": steps, "batch_size": 32, "grad_clip": 1.0, "amp": "auto"},
        "run": _run_section(out_dir, steps, seed),
    })


def _data_section(limit: int | None) -> dict:
    """The bundled splits (at most 300 validation structures), test held out for leakage checks."""
    return {"train": ["bundled:train"], "val": ["bundled:val"], "max_structures": limit,
            "max_val_structures": 300 if limit is None else min(300, limit), "leakage_against": ["bundled:test"],
            "remove_overlaps": False, "dedup": True}


def _run_section(out_dir, steps: int, seed: int) -> dict:
    cores = os.cpu_count() or 1
    return {"out_dir": os.fspath(out_dir), "seed": seed, "device": "cpu", "num_workers": 0,
            # one torch thread on small (often shared) CPUs: 1.6 vs 0.25 steps/s measured (README)
            "torch_threads": 1 if cores <= 2 else None,
            "log_every": max(1, min(10, steps)), "val_every": 0,
            "checkpoint_every": max(5, min(100, steps // 10)), "progress": None, "tensorboard": False}


def finetune_config(base_config: dict, out_dir, *, steps: int, seed: int = 0, limit: int | None = None):
    """The shipped checkpoint's own config (model, grid, augmentation) with the bundled training split, a
    short schedule at a tenth of its learning rate, and the demo's run section."""
    from .train import config_from_dict

    data = dict(base_config)
    optim = dict(data.get("optim") or {})
    optim.update({"lr": float(optim.get("lr", 1e-3)) * 0.1, "warmup_steps": min(10, max(1, steps // 10)),
                  "max_steps": steps, "epochs": 1, "min_lr_ratio": 0.1})
    data.update({
        "data": _data_section(limit),
        "optim": optim,
        "run": _run_section(out_dir, steps, seed),
        # the demo loads the shipped weights itself; a second-stage checkpoint's init_from names a file of
        # the run that made it (runs/...), which a fresh clone does not have; hard-negative batches are
        # grouped by the init_from model's embeddings, so they go with it
        "init_from": None,
        "hard_negatives": None,
    })
    return config_from_dict(data)


# ------------------------------------------------------------------ stage bookkeeping
class _State:
    """``OUT/demo_state.json``: finished stages with the settings (key) they ran with."""

    def __init__(self, out: Path, resume: bool):
        self.path = out / STATE_FILE
        self.stages: dict = {}
        if resume and self.path.is_file():
            try:
                with open(self.path, encoding="utf-8") as fh:
                    data = json.load(fh)
                if data.get("version") == STATE_VERSION and isinstance(data.get("stages"), dict):
                    self.stages = data["stages"]
            except (OSError, ValueError):
                self.stages = {}

    def finished(self, name: str, key: dict, files=()) -> dict | None:
        rec = self.stages.get(name)
        if not rec or rec.get("key") != key:
            return None
        if not all(Path(f).is_file() for f in files):
            return None
        return rec

    def record(self, name: str, key: dict, result: dict, seconds: float) -> None:
        self.stages[name] = {"key": key, "result": result, "seconds": round(seconds, 3),
                             "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
        self.save()

    def save(self) -> None:
        _atomic_json(self.path, {"version": STATE_VERSION, "stages": self.stages})


class _Demo:
    def __init__(self, cfg: DemoConfig):
        self.cfg = cfg
        self.out = Path(cfg.out)
        self.progress = _progress_default(cfg.progress)
        self.timings: dict[str, float] = {}
        self.reused: dict[str, bool] = {}
        self.results: dict = {}
        self.t_start = time.perf_counter()
        self.load_start = _loadavg()

    def log(self, msg: str) -> None:
        from .train.loop import tqdm_safe_print

        tqdm_safe_print(msg)

    def _stage(self, i: int, name: str, title: str):
        self.log(f"[{i}/{len(STAGES)}] {name}: {title}")
        return time.perf_counter()

    def _done(self, name: str, t0: float, reused: bool = False) -> None:
        dt = time.perf_counter() - t0
        self.timings[name] = round(dt, 3)
        self.reused[name] = reused
        self.log(f"      {name}: {'reused from the previous run, ' if reused else ''}{dt:.1f} s")
        self.write_summary(complete=False)

    # ---------------------------------------------------------- 0: folder, model choice
    def prepare(self) -> None:
        cfg = self.cfg
        self.out.mkdir(parents=True, exist_ok=True)
        state_path = self.out / STATE_FILE
        train_dir = self.out / "train"
        if not cfg.resume and train_dir.exists():
            if not state_path.is_file():
                raise ValueError(f"{os.fspath(train_dir)} exists but {os.fspath(self.out)} was not written by "
                                 "`xrdflow demo`; choose another --out")
            shutil.rmtree(train_dir)  # a fresh run of our own folder: the old training goes
        self.state = _State(self.out, cfg.resume)
        self.state.save()  # marks the folder as the demo's at once (an interrupted first run can be rerun)
        from . import pretrained

        self.base_checkpoint = None
        self.base_note = ""
        if cfg.checkpoint is not None:
            self.base_checkpoint = pretrained.resolve(cfg.checkpoint)
            if not os.path.isfile(self.base_checkpoint):
                raise FileNotFoundError(f"--checkpoint: no such file: {self.base_checkpoint!r}")
            self.base_note = f"fine-tuning {self.base_checkpoint}"
        elif not cfg.from_scratch:
            try:
                self.base_checkpoint = os.fspath(pretrained.path("contrastive"))
                self.base_note = f"fine-tuning the shipped model {self.base_checkpoint}"
            except FileNotFoundError:
                self.base_note = ("no shipped model in this installation (xrdflow/pretrained/contrastive.pt is "
                                  "absent): training a tiny model from scratch instead (as --from-scratch)")
        else:
            self.base_note = "--from-scratch: training a tiny model from scratch"
        self.mode = "scratch" if self.base_checkpoint is None else "finetune"
        self.steps = cfg.steps if cfg.steps is not None else (
            DEFAULT_STEPS_SCRATCH if self.mode == "scratch" else DEFAULT_STEPS_FINETUNE)
        if self.mode == "scratch":
            self.train_cfg = tiny_train_config(train_dir, steps=self.steps, seed=cfg.seed, limit=cfg.limit)
            self.base_sha = None
        else:
            from .train import read_checkpoint

            ckpt = read_checkpoint(self.base_checkpoint, map_location="cpu")
            self.train_cfg = finetune_config(ckpt["config"], train_dir, steps=self.steps, seed=cfg.seed,
                                             limit=cfg.limit)
            self.base_sha = sha256_file(self.base_checkpoint)
        self.train_cfg.run.progress = self.progress
        self.log(f"xrdflow demo -> {os.fspath(self.out)}: {self.base_note}; {self.steps} steps")

    # ---------------------------------------------------------- 1: data
    def stage_data(self) -> None:
        import xrdflow as xf
        from .data import bundled_dataset, bundled_splits

        t0 = self._stage(1, "data", "bundled MP-20 subset and its reflection cache")
        lim = self.cfg.limit
        sizes = {k: len(v) for k, v in bundled_splits().items()}
        t = time.perf_counter()
        self.splits = {}
        for split in ("train", "val", "test"):
            res = bundled_dataset(split, progress=self.progress)
            n = len(res) if lim is None else min(lim, len(res))
            self.splits[split] = (list(res.ids[:n]), list(res.structures[:n]), len(res.failures))
        load_s = time.perf_counter() - t
        self.sim = self.train_cfg.make_simulator()
        train_structures = self.splits["train"][1]
        t = time.perf_counter()
        self.train_cache = self.sim.reflections(train_structures)
        cache_s = time.perf_counter() - t
        n = len(self.train_cache)
        self.results["data"] = {
            "bundled_split_sizes": sizes,
            "used": {k: len(v[0]) for k, v in self.splits.items()},
            "failed_to_read": {k: v[2] for k, v in self.splits.items()},
            "load_s": round(load_s, 3),
            "reflection_cache": {
                "structures": n, "seconds": round(cache_s, 3),
                "structures_per_s": round(n / max(cache_s, 1e-9), 1),
                "unique_reflections_per_structure": round(self.train_cache.n_reflections / max(n, 1), 1),
                "bytes_per_structure_in_memory": round(self.train_cache.nbytes / max(n, 1), 1),
                "simulator": {k: (list(v) if isinstance(v, tuple) else v)
                              for k, v in self.train_cfg.simulator_kwargs.items()},
            },
        }
        rc = self.results["data"]["reflection_cache"]
        self.log(f"      {sum(len(v[0]) for v in self.splits.values())} structures read in {load_s:.2f} s; "
                 f"reflections of {n} training structures in {cache_s:.2f} s ({rc['structures_per_s']:.0f}/s, "
                 f"{rc['unique_reflections_per_structure']:.0f} unique hkl and "
                 f"{rc['bytes_per_structure_in_memory']:.0f} bytes per structure)")
        self._done("data", t0)

    # ---------------------------------------------------------- 2: stream
    def stage_stream(self) -> None:
        import torch
        from tqdm.auto import tqdm

        from .data import PatternStream

        t0 = self._stage(2, "stream", "augmented patterns through PatternStream + DataLoader")
        aug = self.train_cfg.make_augmentation()
        batch = 64
        stream = PatternStream(self.train_cache, self.sim, aug, batch_size=batch, seed=self.cfg.seed,
                               threads=None)
        loader = torch.utils.data.DataLoader(stream, batch_size=None, num_workers=0)
        stream.set_epoch(0)
        pick = _pick_structure(self.train_cache)
        n_pat, first_batch_s, streamed = 0, None, None
        t = time.perf_counter()
        for b in tqdm(loader, total=stream.num_batches(), desc="stream epoch 0", unit="batch",
                      disable=not self.progress, leave=False):
            if first_batch_s is None:
                first_batch_s = time.perf_counter() - t
            n_pat += int(b["pattern"].shape[0])
            hit = np.flatnonzero(b["index"].numpy() == pick)
            if hit.size:
                streamed = b["pattern"][int(hit[0])].numpy().copy()
        epoch_s = time.perf_counter() - t
        # The picture's epoch-0 draw is rendered again by key (seed, epoch, index): it must be the stream's bytes.
        again = self.sim.render(self.train_cache, indices=[pick], augmentation=aug, seed=self.cfg.seed, epoch=0)[0][0]
        if streamed is None or not np.array_equal(streamed, again):
            raise RuntimeError("the stream's pattern of the picture's structure differs from a render with the same "
                               "(seed, epoch, index) key; the augmentation is not reproducible")
        path = self.out / "stream_augmentation.png"
        draws = _augmentation_figure(self.sim, self.train_cache, aug, pick, self.splits["train"], self.cfg.seed,
                                     path)
        self.results["stream"] = {
            "patterns": n_pat, "batch_size": batch, "seconds": round(epoch_s, 3),
            "patterns_per_s": round(n_pat / max(epoch_s, 1e-9), 1),
            "first_batch_ms": round(1000 * (first_batch_s or 0.0), 1),
            "n_points": int(self.sim.n_points), "num_workers": 0, "render_threads": "all cores",
            "augmentation": self.train_cfg.augmentation if isinstance(self.train_cfg.augmentation, str)
            else "custom",
            "figure": os.fspath(path), "figure_structure": self.splits["train"][0][pick],
            "figure_draws": draws,
        }
        self.log(f"      one epoch: {n_pat} patterns of {self.sim.n_points} points in {epoch_s:.2f} s "
                 f"({n_pat / max(epoch_s, 1e-9):,.0f} patterns/s); wrote {path}")
        self._done("stream", t0)

    # ---------------------------------------------------------- 3: train
    def stage_train(self) -> None:
        import torch

        from .train import Trainer, config_to_dict, read_checkpoint

        t0 = self._stage(3, "train", ("fine-tune " if self.mode == "finetune" else "train from scratch, ")
                         + f"{self.steps} steps in {os.fspath(self.out / 'train')}")
        key = {"mode": self.mode, "base_sha256": self.base_sha, "steps": self.steps, "seed": self.cfg.seed,
               "limit": self.cfg.limit}
        last = self.out / "train" / "last.pt"
        rec = self.state.finished("train", key, files=[last])
        if rec is not None:
            self.results["train"] = rec["result"]
            self.checkpoint = rec["result"]["checkpoint"]
            if os.path.isfile(self.checkpoint):
                self._done("train", t0, reused=True)
                return
        resume = self.cfg.resume and last.is_file()
        if resume:
            saved = read_checkpoint(last, map_location="cpu")
            wanted = config_to_dict(self.train_cfg)
            if any(saved["config"].get(k) != wanted.get(k) for k in ("optim", "model")):
                raise ValueError(f"--resume: {os.fspath(last)} was trained with other settings (--steps, "
                                 "--from-scratch or --checkpoint changed); rerun without --resume to start over, "
                                 "or with the earlier options")
            self.log(f"      resuming the training in {os.fspath(last)} at step {int(saved['step'])}")
        elif last.exists():
            shutil.rmtree(self.out / "train")
        trainer = Trainer(self.train_cfg, resume=resume, log=self.log)
        try:
            trainer.setup()
            if not resume and self.base_checkpoint is not None:
                ckpt = read_checkpoint(self.base_checkpoint, map_location="cpu")
                trainer.model.load_state_dict(ckpt["model"])  # fine-tune: start from the shipped weights
                del ckpt
            n_params = sum(p.numel() for p in trainer.model.parameters())
            val0 = None
            if not resume and trainer.data.n_val >= 2:
                from .train.contrastive import retrieval_accuracy

                val0 = {**retrieval_accuracy(*trainer.embed_validation()), "n": trainer.data.n_val}
            result = trainer.run()
        finally:
            trainer.close()
        ckpt_path = result.best_checkpoint or result.last_checkpoint
        self.checkpoint = ckpt_path
        self.results["train"] = {
            "mode": self.mode, "base_checkpoint": self.base_checkpoint, "steps": result.step,
            "epochs_completed": result.epoch, "batch_size": self.train_cfg.optim.batch_size,
            "lr": self.train_cfg.optim.lr, "parameters": n_params,
            "train_structures": trainer.data.n_train, "val_structures": trainer.data.n_val,
            "steps_per_s_this_run": round(result.steps_per_s, 3), "resumed": resume,
            "val_before": val0, "val_after": result.last_val, "best_val_top1": result.best_val_top1,
            "checkpoint": ckpt_path, "checkpoint_kind": "best validation top-1 of this run"
            if result.best_checkpoint else "the last step",
            "torch_threads": torch.get_num_threads(), "run_dir": os.fspath(self.out / "train"),
        }
        if result.last_val is not None:
            self.log(f"      validation top-1 {result.last_val['top1']:.3f}, top-5 {result.last_val['top5']:.3f} "
                     f"on {result.last_val['n']} structures (chance {1 / max(result.last_val['n'], 1):.3f})")
        self.state.record("train", key, self.results["train"], time.perf_counter() - t0)
        self._done("train", t0)

    # ---------------------------------------------------------- 4: evaluate
    def stage_evaluate(self) -> None:
        from .evaluate import gallery_from_structures
        from .evaluate.evaluation import evaluate

        t0 = self._stage(4, "evaluate", "retrieval on the bundled test split, clean and realistic queries")
        sha = sha256_file(self.checkpoint)
        key = {"checkpoint_sha256": sha, "seed": self.cfg.seed, "limit": self.cfg.limit,
               "fit_queries": self.cfg.fit_queries}
        files = [self.out / n for n in ("eval_clean.json", "eval_realistic.json", "tsne.png", "retrieval.png")]
        rec = self.state.finished("evaluate", key, files=files)
        if rec is not None:
            self.results["evaluate"] = rec["result"]
            self._done("evaluate", t0, reused=True)
            return
        ids, structures, _ = self.splits["test"]
        gallery = gallery_from_structures(structures, ids=ids)
        gallery.source = "bundled:test"
        tids, tstructures, _ = self.splits["train"]
        train_gallery = gallery_from_structures(tstructures, ids=tids)
        train_gallery.source = "bundled:train"
        cache_dir = self.out / "cache"
        out = {}
        for kind in ("clean", "realistic"):
            res = evaluate(self.checkpoint, gallery, queries=kind, seed=self.cfg.seed, train=train_gallery,
                           cache_dir=cache_dir, out_dir=os.fspath(self.out) if kind == "realistic" else None,
                           progress=self.progress, log=self.log,
                           fit_queries=(self.cfg.fit_queries or None) if kind == "realistic" else None)
            _atomic_json(self.out / f"eval_{kind}.json", res)
            out[kind] = _eval_digest(res)
            self.log(f"      {kind:9s} model top-1 {res['top1']:.3f} top-5 {res['top5']:.3f} | "
                     + " | ".join(f"{b} top-1 {m['top1']:.3f}" for b, m in res["baselines"].items())
                     + f" | hybrid top-1 {res['hybrid']['top1']:.3f}"
                     + (f" | hybrid + fit top-1 {res['hybrid_fit']['top1']:.3f} on {res['hybrid_fit']['n_queries']}"
                        f" queries (hybrid {res['hybrid_fit']['hybrid_same_queries']['top1']:.3f})"
                        if "hybrid_fit" in res else ""))
        self.results["evaluate"] = {"gallery": "bundled:test", "n_gallery": len(gallery),
                                    "checkpoint": self.checkpoint, **out,
                                    "figures": {"tsne": os.fspath(files[2]), "retrieval": os.fspath(files[3])}}
        self.state.record("evaluate", key, self.results["evaluate"], time.perf_counter() - t0)
        self._done("evaluate", t0)

    # ---------------------------------------------------------- 5: fit
    def stage_fit(self) -> None:
        t0 = self._stage(5, "fit", "Rietveld fit of a simulated noisy RuO2 pattern (known answer)")
        key = {"version": 1}
        path = self.out / "fit.png"
        rec = self.state.finished("fit", key, files=[path])
        if rec is not None:
            self.results["fit"] = rec["result"]
            self._done("fit", t0, reused=True)
            return
        self.results["fit"] = _fit_demo(path, self.out / "fit.json")
        f = self.results["fit"]
        self.log(f"      Rwp {100 * f['r_wp']:.2f} %; a {f['a_angstrom']['refined']:.5f}({f['a_angstrom']['su']:.1g}) "
                 f"vs true {f['a_angstrom']['true']:.5f}; zero shift {f['zero_shift_deg']['refined']:+.4f} vs true "
                 f"{f['zero_shift_deg']['true']:+.4f}; wrote {path}")
        self.state.record("fit", key, self.results["fit"], time.perf_counter() - t0)
        self._done("fit", t0)

    # ---------------------------------------------------------- 6: summary
    def hardware(self) -> dict:
        import torch

        from . import __version__

        return {"os_cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(), "cpu": _cpu_model(),
                "platform": platform.platform(), "python": platform.python_version(),
                "torch": str(torch.__version__), "xrdflow": __version__,
                "load_average_at_start": self.load_start, "load_average_at_end": _loadavg(),
                "note": "load averages above os_cpu_count mean other jobs shared the CPU during the run"}

    def write_summary(self, complete: bool) -> None:
        total = time.perf_counter() - self.t_start
        files = sorted(os.fspath(p.relative_to(self.out)) for p in self.out.rglob("*")
                       if p.is_file() and not p.name.startswith(".")
                       and not os.fspath(p.relative_to(self.out)).startswith(("train/cache", "cache")))
        summary = {
            "complete": complete,
            "command": "xrdflow " + " ".join(self.argv) if getattr(self, "argv", None) else None,
            "model_source": getattr(self, "base_note", ""),
            "wall_time_s": round(total, 1), "stage_seconds": self.timings, "stage_reused": self.reused,
            "hardware": self.hardware(), "results": self.results,
            "meaning": MEANINGS, "files": files + (["summary.json", "summary.md"] if "summary.md" not in files
                                                   else []),
        }
        if "summary.json" in files:
            summary["files"] = files
        _atomic_json(self.out / "summary.json", summary)
        atomic_write_text(self.out / "summary.md", _summary_markdown(summary))


MEANINGS = {
    "top1/top3/top5/top10": "fraction of test structures whose own pattern (the query) ranks the right structure "
                            "among the k best of the test gallery (300 structures); ties count against the query",
    "clean/realistic": "queries are the gallery's own patterns, clean or with Augmentation.realistic() drawn at the "
                       "demo seed (strain, size broadening, texture, background, counting noise, ...); "
                       "the model is trained on realistic patterns only, so perfectly sharp noise-free clean queries "
                       "are unfamiliar to it and can score lower than realistic ones",
    "pattern_cosine": "non-learned baseline: cosine of the query with every clean gallery pattern",
    "peak_fom": "non-learned baseline: search-match figure of merit of picked peaks against each structure's lines",
    "hybrid": "the model's and peak_fom's rankings fused by reciprocal rank fusion (k = 60, nothing tuned)",
    "hybrid + fits": "the hybrid's best 10 re-ranked by the Rwp of a whole-pattern fit of each to the query "
                     "(xrdflow.fit.fit_candidates), on a random subset of the realistic queries",
    "val_before/val_after": "retrieval top-1/top-5 on the bundled validation split (augmented patterns against "
                            "crystals) before and after this run's training",
    "bytes_per_structure_in_memory": "size of the cached reflections (hkl, |F|^2, multiplicities, offsets) per "
                                     "structure",
    "chance": "top-1 by guessing: 1 / gallery size",
}


def _eval_digest(res: dict) -> dict:
    keep = ("top1", "top3", "top5", "top10")
    fit = res.get("hybrid_fit")
    return {"model": {k: res[k] for k in keep},
            "baselines": {b: {k: m[k] for k in keep} | {"seconds": m.get("seconds")}
                          for b, m in res["baselines"].items()},
            "hybrid": {k: res["hybrid"][k] for k in keep},
            **({"hybrid_fit": {k: fit[k] for k in keep} | {
                "n_queries": fit["n_queries"], "candidates": fit["candidates"], "seconds": fit["seconds"],
                "hybrid_same_queries": {k: fit["hybrid_same_queries"][k] for k in keep},
                **({"model_same_queries": {k: fit["model_same_queries"][k] for k in keep}}
                   if "model_same_queries" in fit else {})}} if fit else {}),
            "per_crystal_system_top1": {k: {"top1": v["top1"], "n": v["n"]}
                                        for k, v in res["per_crystal_system"].items()},
            "chance_top1": 1.0 / max(res["n_gallery"], 1),
            "timing": res["timing"]}


def _pick_structure(cache) -> int:
    """A structure with a readable number of lines (10-40 unique reflections), else the first."""
    counts = np.diff(np.asarray(cache.offsets)) if hasattr(cache, "offsets") else None
    if counts is not None:
        ok = np.flatnonzero((counts >= 10) & (counts <= 40))
        if ok.size:
            return int(ok[0])
    return 0


def _augmentation_figure(sim, cache, aug, i: int, split, seed: int, path: Path) -> list[dict]:
    """Clean pattern of structure ``i`` above the three draws the stream gives it in epochs 0, 1, 2."""
    from .plot import _matplotlib, atomic_output

    Figure, Canvas = _matplotlib()
    ids, structures, _ = split
    x = sim.two_theta_deg
    clean = sim.render(cache, indices=[i])[0][0]
    fig = Figure(figsize=(10, 8.2))
    canvas = Canvas(fig)
    axes = fig.subplots(4, 1, sharex=True)
    s = structures[i]
    axes[0].plot(x, clean / max(float(clean.max()), 1e-12), color="black", lw=0.8, label="clean (no augmentation)")
    axes[0].set_title(f"{ids[i]}  {s.formula}: clean pattern and three realistic draws streamed for it "
                      f"(epochs 0, 1, 2; seed {seed})", fontsize=10, loc="left")
    draws = []
    colours = ("tab:blue", "tab:orange", "tab:green")
    for e in range(3):
        y, p = sim.render(cache, indices=[i], augmentation=aug, seed=seed, epoch=e)
        y = y[0]
        d = {"epoch": e,
             "crystallite_size_nm": float(p["crystallite_size_nm"][0]), "microstrain": float(p["microstrain"][0]),
             "max_abs_strain": float(np.abs(p["strain"][0]).max()), "zero_shift_deg": float(p["zero_shift_deg"][0]),
             "displacement_mm": float(p["displacement_mm"][0]), "march_r": float(p["march_r"][0]),
             "kalpha2_ratio": float(p["kalpha2_ratio"][0]), "b_extra_A2": float(p["b_extra"][0]),
             "background_level": float(p["background_level"][0]), "hump_level": float(p["hump_level"][0]),
             "counts": float(p["counts"][0])}
        draws.append(d)
        label = (f"size {d['crystallite_size_nm']:.0f} nm, microstrain {d['microstrain']:.4f}, "
                 f"strain {100 * d['max_abs_strain']:.2f} %, zero {d['zero_shift_deg']:+.3f}°, "
                 f"disp. {d['displacement_mm']:+.3f} mm\n"
                 f"March r {d['march_r']:.2f}, Kα2/Kα1 {d['kalpha2_ratio']:.2f}, B+{d['b_extra_A2']:.2f} Å², "
                 f"background {100 * d['background_level']:.1f} %, hump {100 * d['hump_level']:.1f} %, "
                 f"{d['counts']:.0f} counts")
        axes[e + 1].plot(x, y / max(float(y.max()), 1e-12), color=colours[e], lw=0.7, label=label)
    for ax in axes:
        ax.set_ylabel("I / Imax", fontsize=8)
        ax.set_ylim(-0.05, 1.35)
        ax.tick_params(labelsize=8)
        ax.legend(loc="upper right", fontsize=7, frameon=False)
    axes[-1].set_xlabel("2θ (degrees)")
    fig.tight_layout()
    with atomic_output(path) as tmp:
        with open(tmp, "wb") as fh:
            canvas.print_figure(fh, format="png", dpi=120)
    return draws


def _fit_demo(png: Path, json_path: Path) -> dict:
    """RuO2 with a 0.3 % larger cell, 0.03 deg zero shift, 20 nm-ish widths, Poisson counts; fitted from the
    CIF cell.  The refined cell and zero shift should match the truth within a few standard uncertainties."""
    import xrdflow as xf
    from xrdflow import examples

    from .fit import fit_pattern

    s = xf.Structure.from_cif(examples.path("RuO2"))
    factor, zero = 1.003, 0.03
    truth = xf.Structure.from_arrays(np.asarray(s.lattice) * factor, s.frac, s.numbers, s.occupancy, s.b_iso)
    sim = xf.Simulator(radiation="CuKa", two_theta=(15.0, 100.0), step=0.02, zero_shift_deg=zero, Y=0.03,
                       normalization="max")
    tt = sim.two_theta_deg
    rng = np.random.default_rng(0)
    y = rng.poisson(5000.0 * sim.pattern(truth) + 60.0 + 20.0 * (tt[-1] - tt) / (tt[-1] - tt[0])).astype(float)
    res = fit_pattern((tt, y), [s], radiation="CuKa", background_terms=4)
    res.plot(png, title="xrdflow demo: Rietveld fit of a simulated RuO2 pattern (Poisson noise, known answer)")
    res.save_json(json_path)
    a0, _, c0 = s.cell_parameters[:3]
    ph = res.phases[0]
    return {"structure": "RuO2 (bundled example, COD)", "points": int(len(tt)),
            "r_wp": float(res.r_wp), "chi2_red": float(res.chi2_red),
            "a_angstrom": {"cif": a0, "true": a0 * factor, "refined": ph.cell["a"][0], "su": ph.cell["a"][1]},
            "c_angstrom": {"cif": c0, "true": c0 * factor, "refined": ph.cell["c"][0], "su": ph.cell["c"][1]},
            "zero_shift_deg": {"true": zero, "refined": res.zero_shift_deg[0], "su": res.zero_shift_deg[1]},
            "figure": os.fspath(png), "json": os.fspath(json_path)}


def _pct(x) -> str:
    return f"{100 * x:.1f}"


def _summary_markdown(s: dict) -> str:
    r = s["results"]
    hw = s["hardware"]
    lines = ["# xrdflow demo", ""]
    lines.append(("Complete" if s["complete"] else "**Incomplete** (interrupted or still running)")
                 + f": {s['wall_time_s']:.0f} s wall in all. Model: {s['model_source']}.")
    if s.get("command"):
        lines.append(f"Command: `{s['command']}`")
    lines += ["", "## Hardware", "",
              f"{hw['os_cpu_count']} CPU cores ({hw['cpu']}), torch {hw['torch']} with {hw['torch_threads']} "
              f"thread(s), Python {hw['python']}, {hw['platform']}. Load average at start / end: "
              f"{hw['load_average_at_start']} / {hw['load_average_at_end']} (above the core count: the CPU was "
              "shared with other jobs).", "",
              "## Stages", "", "| stage | seconds | |", "|---|---:|---|"]
    for name in STAGES:
        if name in s["stage_seconds"]:
            lines.append(f"| {name} | {s['stage_seconds'][name]:.1f} | "
                         f"{'reused from the previous run' if s['stage_reused'].get(name) else ''} |")
    if "data" in r:
        d, rc = r["data"], r["data"]["reflection_cache"]
        lines += ["", "## Data and reflection cache", "",
                  f"Bundled MP-20 subset, splits {d['bundled_split_sizes']} (used {d['used']}), read in "
                  f"{d['load_s']:.2f} s. Reflection cache of {rc['structures']} training structures: "
                  f"{rc['seconds']:.2f} s ({rc['structures_per_s']:.0f} structures/s), "
                  f"{rc['unique_reflections_per_structure']:.0f} unique reflections and "
                  f"{rc['bytes_per_structure_in_memory']:.0f} bytes per structure in memory."]
    if "stream" in r:
        st = r["stream"]
        lines += ["", "## Streaming", "",
                  f"One epoch of {st['patterns']} realistically augmented patterns ({st['n_points']} points, batches "
                  f"of {st['batch_size']}, PatternStream + DataLoader, num_workers=0, render on all cores): "
                  f"{st['seconds']:.2f} s, {st['patterns_per_s']:,.0f} patterns/s; first batch "
                  f"{st['first_batch_ms']:.0f} ms.", "",
                  "![augmentation](stream_augmentation.png)"]
    if "train" in r:
        t = r["train"]
        lines += ["", "## Model", "",
                  f"{'Fine-tuned ' + str(t['base_checkpoint']) if t['mode'] == 'finetune' else 'Trained from scratch (tiny model)'}: "
                  f"{t['parameters']:,} parameters, {t['steps']} steps of batch {t['batch_size']} on "
                  f"{t['train_structures']} training structures ({t['steps_per_s_this_run']:.2f} steps/s this run"
                  f"{', resumed' if t['resumed'] else ''}). Checkpoint evaluated: {t['checkpoint']} "
                  f"({t['checkpoint_kind']})."]
        for label, v in (("before", t.get("val_before")), ("after", t.get("val_after"))):
            if v:
                lines.append(f"Validation ({v['n']} structures, chance {_pct(1 / max(v['n'], 1))} %) {label} "
                             f"training: top-1 {_pct(v['top1'])} %, top-5 {_pct(v['top5'])} %.")
    if "evaluate" in r:
        e = r["evaluate"]
        lines += ["", f"## Retrieval on the bundled test split ({e['n_gallery']} structures)", "",
                  "| queries | method | top-1 % | top-3 % | top-5 % | top-10 % |", "|---|---|---:|---:|---:|---:|"]
        for kind in ("clean", "realistic"):
            if kind not in e:
                continue
            rows = [("model", e[kind]["model"])] + list(e[kind]["baselines"].items())
            if "hybrid" in e[kind]:
                rows.append(("hybrid (model + peak_fom, RRF)", e[kind]["hybrid"]))
            fit = e[kind].get("hybrid_fit")
            if fit:
                n = fit["n_queries"]
                if "model_same_queries" in fit:
                    rows.append((f"model, on {n} random queries", fit["model_same_queries"]))
                rows += [(f"hybrid, on {n} random queries", fit["hybrid_same_queries"]),
                         (f"hybrid + fits of its best {fit['candidates']}, the same {n} queries", fit)]
            for name, m in rows:
                lines.append(f"| {kind} | {name} | {_pct(m['top1'])} | {_pct(m['top3'])} | {_pct(m['top5'])} | "
                             f"{_pct(m['top10'])} |")
        chance = e.get("realistic", e.get("clean", {})).get("chance_top1")
        if chance:
            lines.append(f"\nChance top-1: {_pct(chance)} %. Clean queries are the gallery's own patterns, so the "
                         "pattern baselines are (nearly) perfect on them; realistic queries separate the methods.")
        lines += ["", "![t-SNE](tsne.png)", "", "![retrieval](retrieval.png)"]
    if "fit" in r:
        f = r["fit"]
        lines += ["", "## Fitting", "",
                  f"{f['structure']}, simulated with a cell {f['a_angstrom']['true'] / f['a_angstrom']['cif']:.4f} "
                  "times the CIF's, a zero shift and Poisson noise, fitted from the CIF cell: "
                  f"Rwp {_pct(f['r_wp'])} %, reduced chi2 {f['chi2_red']:.2f}; "
                  f"a {f['a_angstrom']['refined']:.5f} ± {f['a_angstrom']['su']:.5f} Å (true "
                  f"{f['a_angstrom']['true']:.5f}), c {f['c_angstrom']['refined']:.5f} ± {f['c_angstrom']['su']:.5f} Å "
                  f"(true {f['c_angstrom']['true']:.5f}), zero shift {f['zero_shift_deg']['refined']:+.4f} ± "
                  f"{f['zero_shift_deg']['su']:.4f}° (true {f['zero_shift_deg']['true']:+.4f}°).", "",
                  "![fit](fit.png)"]
    lines += ["", "## What the numbers mean", ""] + [f"- **{k}**: {v}" for k, v in s["meaning"].items()]
    lines += ["", "## Files", ""] + [f"- {f}" for f in s["files"]]
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------ entry points
def run_demo(cfg: DemoConfig, *, argv=None) -> dict:
    """Run the demo (module docs); returns the summary dict also written to ``OUT/summary.json``."""
    if not isinstance(cfg, DemoConfig):
        raise TypeError(f"run_demo needs a DemoConfig, got {type(cfg).__name__}")
    demo = _Demo(cfg)
    demo.argv = list(argv) if argv is not None else None
    demo.prepare()
    demo.stage_data()
    demo.stage_stream()
    demo.stage_train()
    demo.stage_evaluate()
    if cfg.fit:
        demo.stage_fit()
    t0 = demo._stage(6, "summary", "summary.md and summary.json")
    demo.timings["summary"] = 0.0
    demo.write_summary(complete=True)
    demo.timings["summary"] = round(time.perf_counter() - t0, 3)
    demo.write_summary(complete=True)
    total = time.perf_counter() - demo.t_start
    demo.log("stage times: " + ", ".join(f"{k} {v:.1f} s" for k, v in demo.timings.items())
             + f"; total {total:.1f} s")
    with open(demo.out / "summary.json", encoding="utf-8") as fh:
        return json.load(fh)


def _cmd_demo(args) -> int:
    from .cli import UserError

    try:
        cfg = DemoConfig(out=args.out, steps=args.steps, from_scratch=args.from_scratch, checkpoint=args.checkpoint,
                         resume=args.resume, fit=not args.no_fit, limit=args.limit, seed=args.seed,
                         fit_queries=args.fit_queries)
    except ValueError as err:
        raise UserError(str(err)) from None
    argv = ["demo"] + [a for a in sys.argv[2:]] if len(sys.argv) > 1 and sys.argv[1] == "demo" else None
    summary = run_demo(cfg, argv=argv)
    out = Path(cfg.out)
    print(f"wrote {len(summary['files'])} files to {os.fspath(out)}/ in {summary['wall_time_s']:.0f} s "
          f"(summary: {os.fspath(out / 'summary.md')})")
    return 0


def add_demo_parser(sub) -> None:
    """Add ``xrdflow demo`` to the subcommands."""
    from .cli import _int_at_least, _positive_int

    p = sub.add_parser(
        "demo", help="the whole pipeline on the bundled data in ~10 minutes: data, stream, model, evaluation",
        description="Run xrdflow end to end on the bundled MP-20 subset (CPU, about ten minutes): reflection\n"
                    "cache, augmented pattern stream, fine-tune the shipped contrastive model (or train a tiny\n"
                    "one with --from-scratch), retrieval on the 300 test structures with both baselines and\n"
                    "figures, a Rietveld fit; writes pictures, summary.md and summary.json to --out.",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="xrdflow-demo", metavar="DIR", help="output folder (default ./xrdflow-demo)")
    p.add_argument("--steps", type=_positive_int, metavar="N",
                   help=f"training steps (default {DEFAULT_STEPS_FINETUNE} fine-tuning the shipped model, "
                        f"{DEFAULT_STEPS_SCRATCH} from scratch)")
    p.add_argument("--from-scratch", action="store_true",
                   help="train a tiny model from scratch instead of fine-tuning the shipped one")
    p.add_argument("--checkpoint", metavar="CKPT",
                   help="fine-tune this checkpoint (a file from `xrdflow train`, or pretrained:NAME) instead of "
                        "the shipped pretrained:contrastive")
    p.add_argument("--resume", action="store_true",
                   help="reuse the stages a previous run into --out finished, and resume its training")
    p.add_argument("--no-fit", action="store_true", help="skip the fitting stage")
    p.add_argument("--fit-queries", type=_int_at_least(0), default=DEFAULT_FIT_QUERIES, metavar="N",
                   help=f"realistic queries whose hybrid top-10 are re-ranked by whole-pattern fits "
                        f"(default {DEFAULT_FIT_QUERIES}; 0: none)")
    p.add_argument("--seed", type=int, default=0, help="seed of training, augmentation draws and t-SNE (default 0)")
    p.add_argument("--limit", type=_positive_int, default=None, help=argparse.SUPPRESS)  # tests: N per split
    p.set_defaults(func=_cmd_demo)
