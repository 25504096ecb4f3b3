"""Training of the contrastive model (xrdflow.train): config, schedule, checkpoints, exact resume,
leakage refusal, DDP on 2 gloo processes, and the ``xrdflow train`` command.

Everything uses the tiny config on 48 bundled structures; the data are prepared once per session
and the cache is copied into each run's out_dir (a run with the same data settings reuses it).
"""
from __future__ import annotations

import csv
import dataclasses
import gzip
import io
import json
import math
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("e3nn")
pytest.importorskip("vesin")
pytest.importorskip("yaml")

from xrdflow.train import (TrainConfig, config_to_dict, load_config, load_model, read_checkpoint,  # noqa: E402
                           save_checkpoint, save_config, train)
from xrdflow.train.schedule import WarmupCosine, make_scheduler  # noqa: E402
from conftest import prepared_data_cache, run_dir  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "configs" / "contrastive_tiny.yaml"
N_TRAIN, N_VAL, BATCH = 48, 16, 8


def tiny_config(out_dir, **optim) -> TrainConfig:
    cfg = load_config(TINY)
    data = dataclasses.replace(cfg.data, max_structures=N_TRAIN, max_val_structures=N_VAL)
    opt = dataclasses.replace(cfg.optim, **{"batch_size": BATCH, "warmup_steps": 2, "max_steps": 6, **optim})
    run = dataclasses.replace(cfg.run, out_dir=str(out_dir), device="cpu", progress=False, log_every=1,
                              val_every=0, checkpoint_every=0, tensorboard=False)
    return dataclasses.replace(cfg, data=data, optim=opt, run=run)


@pytest.fixture(scope="session")
def data_cache(tmp_path_factory):
    """The prepared data (reflections + graphs) of tiny_config, computed once."""
    from xrdflow.train.data import prepare_data

    return prepared_data_cache(tmp_path_factory, prepare_data, tiny_config, "train_data")


def params(model) -> dict:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


# ------------------------------------------------------------------ config
def test_config_round_trip_and_unknown_keys(tmp_path):
    cfg = load_config(TINY)
    save_config(cfg, tmp_path / "copy.yaml")
    again = load_config(tmp_path / "copy.yaml")
    assert config_to_dict(again) == config_to_dict(cfg)
    assert again.model == cfg.model and again.optim == cfg.optim
    assert cfg.simulator_kwargs["two_theta"] == (5.0, 90.0)
    assert cfg.make_simulator().n_points == cfg.model.pattern.n_points == 1024

    for text, key in [("optim: {learning_rate: 0.1}\n", "optim.learning_rate"),
                      ("optimizer: {lr: 0.1}\n", "optimizer"),
                      ("model: {crystal: {cutoff: 3.0}}\n", "model.crystal.cutoff"),
                      ("augmentation: {strains: 0.01}\n", "augmentation.strains")]:
        bad = tmp_path / "bad.yaml"
        bad.write_text(text)
        with pytest.raises(ValueError, match=f"unknown key '{key}'"):
            load_config(bad)
    bad.write_text("model: {pattern: {n_points: 512}}\nsimulator: {n_points: 1024}\n")
    with pytest.raises(ValueError, match="n_points"):
        load_config(bad)
    bad.write_text("optim: {amp: fp8}\n")
    with pytest.raises(ValueError, match="optim.amp"):
        load_config(bad)


# ------------------------------------------------------------------ schedule
def test_schedule_values():
    s = WarmupCosine(warmup_steps=10, total_steps=110, min_lr_ratio=0.1)
    assert s(0) == pytest.approx(0.1) and s(4) == pytest.approx(0.5) and s(9) == pytest.approx(1.0)
    assert s(10) == pytest.approx(1.0)
    assert s(60) == pytest.approx(0.1 + 0.9 * 0.5)          # half way through the cosine
    assert s(110) == pytest.approx(0.1) and s(500) == pytest.approx(0.1)
    assert all(s(k) >= s(k + 1) for k in range(10, 120))
    p = torch.nn.Parameter(torch.zeros(2))
    opt = torch.optim.AdamW([p], lr=2.0)
    sched = make_scheduler(opt, 10, 110, 0.1)
    lrs = []
    for _ in range(12):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs[0] == pytest.approx(0.2) and lrs[9] == pytest.approx(2.0)
    buf = io.BytesIO()
    torch.save(sched.state_dict(), buf)
    buf.seek(0)
    assert torch.load(buf, weights_only=True)["lr_lambdas"][0] == {"warmup_steps": 10, "total_steps": 110,
                                                                    "min_lr_ratio": 0.1}
    with pytest.raises(ValueError, match="total_steps"):
        WarmupCosine(10, 0)


# ------------------------------------------------------------------ checkpoints
_CRASH = """
import os, sys, torch
from xrdflow.train import checkpoint
def crash(fd):
    os._exit(17)          # power cut after the bytes were written, before the rename
checkpoint.os.fsync = crash
checkpoint.save_checkpoint(sys.argv[1], {"step": 2, "config": {}, "model": {"w": torch.ones(1000)}})
"""


def test_checkpoint_is_atomic(tmp_path, monkeypatch):
    path = tmp_path / "last.pt"
    save_checkpoint(path, {"step": 1, "config": {}, "model": {"w": torch.zeros(1000)}})
    old = path.read_bytes()

    import xrdflow.train.checkpoint as ck

    def broken_save(obj, fh):
        fh.write(b"PK\x03\x04 half a zip")
        raise OSError("disk full")

    monkeypatch.setattr(ck.torch, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(path, {"step": 2, "config": {}, "model": {"w": torch.ones(1000)}})
    monkeypatch.undo()
    assert path.read_bytes() == old and sorted(os.listdir(tmp_path)) == ["last.pt"]

    proc = subprocess.run([sys.executable, "-c", _CRASH, str(path)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 17, proc.stderr
    assert path.read_bytes() == old                       # the hard crash left the old file whole
    assert read_checkpoint(path)["step"] == 1
    with pytest.raises(ValueError, match="not an xrdflow contrastive checkpoint"):
        torch.save({"a": 1}, tmp_path / "other.pt")
        read_checkpoint(tmp_path / "other.pt")


# ------------------------------------------------------------------ exact resume
def test_resume_is_exact(tmp_path, data_cache):
    steps = 8  # 48 structures / batch 8 = 6 steps per epoch: the interruption is mid-epoch 0,
    #            the second half crosses into epoch 1
    straight = tiny_config(run_dir(tmp_path, data_cache, "straight"), max_steps=steps)
    r1 = train(straight, log=lambda m: None)
    assert r1.step == steps and r1.epoch == 1

    split = tiny_config(run_dir(tmp_path, data_cache, "split"), max_steps=steps)
    half = train(split, stop_at_step=3, log=lambda m: None)
    assert half.step == 3
    with pytest.raises(ValueError, match="--resume"):
        train(split, log=lambda m: None)                # an existing run is never overwritten
    changed = dataclasses.replace(split, optim=dataclasses.replace(split.optim, lr=0.1))
    with pytest.raises(ValueError, match="optim.lr"):
        train(changed, resume=True, log=lambda m: None)
    r2 = train(split, resume=True, log=lambda m: None)
    assert r2.step == steps

    a, b = read_checkpoint(r1.last_checkpoint), read_checkpoint(r2.last_checkpoint)
    assert (a["epoch"], a["batch_in_epoch"]) == (b["epoch"], b["batch_in_epoch"]) == (1, 2)
    for k, v in a["model"].items():
        assert torch.equal(v, b["model"][k]), k
    for sa, sb in zip(a["optimizer"]["state"].values(), b["optimizer"]["state"].values()):
        assert torch.equal(sa["exp_avg"], sb["exp_avg"]) and torch.equal(sa["exp_avg_sq"], sb["exp_avg_sq"])
    assert a["scheduler"] == b["scheduler"]
    assert torch.equal(a["rng"][0]["torch"], b["rng"][0]["torch"])
    rows = list(csv.DictReader(open(Path(split.run.out_dir) / "metrics.csv")))
    train_steps = [int(r["step"]) for r in rows if r["split"] == "train"]
    assert train_steps == list(range(1, steps + 1))     # no step logged twice across the resume


def test_holdout_seed_keeps_the_held_out_structures_under_another_run_seed(tmp_path):
    from xrdflow.train.data import cache_key, clean_structures

    def held_out(run_seed, holdout_seed=None):
        cfg = tiny_config(tmp_path)
        cfg = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, val=[], holdout_val=8,
                                                                holdout_seed=holdout_seed),
                                  run=dataclasses.replace(cfg.run, seed=run_seed))
        _, _, val_ids, _, _ = clean_structures(cfg, log=lambda m: None)
        return cfg, val_ids

    cfg0, ids0 = held_out(0)
    cfg1, ids1 = held_out(1)
    cfg1_kept, ids1_kept = held_out(1, holdout_seed=0)
    assert len(ids0) == 8 and set(ids1) != set(ids0)          # run.seed picks them by default
    assert ids1_kept == ids0                                    # ... unless data.holdout_seed says otherwise
    assert cache_key(cfg1_kept) == cache_key(cfg0) != cache_key(cfg1)
    with pytest.raises(ValueError, match="data.holdout_seed"):
        dataclasses.replace(cfg0.data, holdout_seed=-1)


def test_init_from_starts_a_second_stage_from_the_checkpoints_weights(tmp_path, data_cache):
    from xrdflow.train.contrastive import Trainer

    first = train(tiny_config(run_dir(tmp_path, data_cache, "first"), max_steps=4), log=lambda m: None)
    saved = read_checkpoint(first.last_checkpoint)["model"]

    def setup(name, **changes):
        cfg = dataclasses.replace(tiny_config(run_dir(tmp_path, data_cache, name), max_steps=3), **changes)
        trainer = Trainer(cfg, log=lambda m: None)
        trainer.setup()
        return trainer

    fresh = setup("fresh")
    assert any(not torch.equal(v, saved[k]) for k, v in fresh.model.state_dict().items())
    logs = []
    second = setup("second", init_from=str(first.last_checkpoint))
    for k, v in second.model.state_dict().items():
        assert torch.equal(v, saved[k]), k
    assert second.step_count == 0 and second.best is None    # a new schedule, not a resume

    # the whole second stage trains and records where it started
    cfg2 = dataclasses.replace(tiny_config(run_dir(tmp_path, data_cache, "second_run"), max_steps=2),
                               init_from=str(first.last_checkpoint))
    r2 = train(cfg2, log=logs.append)
    assert r2.step == 2 and any("weights initialised from" in m for m in logs)
    assert load_config(Path(cfg2.run.out_dir) / "config.yaml").init_from == str(first.last_checkpoint)
    with pytest.raises(ValueError, match="init_from"):   # resumed with another start: refused
        train(dataclasses.replace(cfg2, init_from=None), resume=True, log=lambda m: None)

    other = dataclasses.replace(cfg2.model, embed_dim=cfg2.model.embed_dim + 8)
    with pytest.raises(ValueError, match="init_from: .*model.embed_dim"):
        setup("mismatch", model=other, init_from=str(first.last_checkpoint))
    with pytest.raises(FileNotFoundError, match="init_from"):
        setup("missing", init_from=str(tmp_path / "nope.pt"))
    with pytest.raises(ValueError, match="init_from must be"):
        dataclasses.replace(cfg2, init_from=3)


# ------------------------------------------------------------------ leakage
def _bundled_rows(split: str, n: int) -> list[dict]:
    from xrdflow.data import bundled_path, bundled_splits

    want = set(bundled_splits()[split])
    with gzip.open(bundled_path(), "rt", newline="") as fh:
        rows = [r for r in csv.DictReader(fh) if r["material_id"] in want]
    return rows[:n]


def test_leaking_training_set_is_refused(tmp_path):
    from xrdflow.train.data import prepare_data

    rows = _bundled_rows("train", 14) + _bundled_rows("test", 3)
    test_ids = [r["material_id"] for r in rows[-3:]]
    table = tmp_path / "train.csv"
    with open(table, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=["material_id", "cif"])
        w.writeheader()
        for r in rows:
            w.writerow({"material_id": r["material_id"] + "-copy", "cif": r["cif"]})  # new ids: caught by structure
    cfg = tiny_config(tmp_path / "run", batch_size=4)
    cfg = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, train=[str(table)], val=[],
                                                            max_structures=None))
    with pytest.raises(ValueError, match="refusing to train") as err:
        train(cfg, log=lambda m: None)
    assert all(f"duplicate of train {i}-copy" in str(err.value) for i in test_ids)
    assert not (tmp_path / "run" / "last.pt").exists()

    cleaned = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, remove_overlaps=True, cache=False))
    data = prepare_data(cleaned, None, log=lambda m: None)
    assert data.n_train == 14 and not {i + "-copy" for i in test_ids} & set(data.train_ids)
    assert data.report["overlaps_removed"]["bundled:test"]["train"] == 3


# ------------------------------------------------------------------ DDP
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ddp_worker(rank, world, port, cfg_dict, out):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world),
                      LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    from xrdflow.train import config_from_dict, train as train_

    from xrdflow.train import Trainer, config_from_dict

    trainer = Trainer(config_from_dict(cfg_dict), log=lambda m: None)
    trainer.setup()
    try:
        result = trainer.run()
        torch.save({"step": result.step, "model": trainer.model.state_dict()}, os.path.join(out, f"rank{rank}.pt"))
    finally:
        trainer.close()


def test_ddp_two_gloo_processes(tmp_path, data_cache):
    import torch.multiprocessing as mp

    from xrdflow.train.contrastive import build_model

    out = run_dir(tmp_path, data_cache, "ddp")
    cfg = tiny_config(out, max_steps=2, warmup_steps=1)
    # the DDP ranks must agree with each other after the steps ...
    mp.spawn(_ddp_worker, args=(2, _free_port(), config_to_dict(cfg), str(tmp_path)), nprocs=2, join=True)
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in (0, 1)]
    assert ranks[0]["step"] == ranks[1]["step"] == 2
    sd = ranks[0]["model"]
    for k, v in sd.items():
        assert torch.equal(v, ranks[1]["model"][k]), k
    saved = read_checkpoint(out / "last.pt")["model"]
    assert all(torch.equal(v, saved[k]) for k, v in sd.items())
    # ... and the global-batch InfoNCE (embeddings gathered over ranks) must equal one process with the
    # doubled batch: rank r streams positions r, r+2, ... of the epoch's order, so the two ranks' batches
    # of 8 together are the single process's batch of 16 (in another order, to which the loss is blind)
    single = tiny_config(run_dir(tmp_path, data_cache, "single"), max_steps=2, warmup_steps=1,
                         batch_size=2 * BATCH)
    r = train(single, log=lambda m: None)
    ref = read_checkpoint(r.last_checkpoint)["model"]
    losses = [[float(r[c]) for r in csv.DictReader(open(d / "metrics.csv")) if r["split"] == "train"
               for c in ("loss", "grad_norm")] for d in (out, Path(single.run.out_dir))]
    assert len(losses[0]) == 4 and losses[0] == pytest.approx(losses[1], rel=1e-5)
    # Adam's first steps are ~lr * sign(g): an element whose gradient is ~0 can flip sign with rounding
    # (seen: 1 of ~16,000 elements); every other element must agree, and none by more than 2 lr per step
    start = build_model(cfg, torch.device("cpu")).state_dict()
    off = total = moved = 0
    for k, v in ref.items():
        if not v.is_floating_point():
            continue
        diff = (sd[k] - v).abs()
        assert diff.numel() == 0 or float(diff.max()) <= 2 * 2 * cfg.optim.lr, k
        off += int((diff > 1e-5).sum())
        total += v.numel()
        moved += int((v != start[k]).sum())
    assert off <= total // 500 and moved > total // 2      # agree, and the steps did change the parameters


# ------------------------------------------------------------------ command line
def test_cli_train_writes_metrics_and_a_loadable_checkpoint(tmp_path, data_cache, capsys):
    out = run_dir(tmp_path, data_cache)
    cfg = tiny_config(out)
    cfg_path = tmp_path / "cfg.yaml"
    save_config(cfg, cfg_path)
    cmd = [sys.executable, "-m", "xrdflow", "train", "--config", str(cfg_path), "--max-steps", "3", "--no-progress"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "trained 3 steps" in proc.stdout and "from the cache" in proc.stderr
    rows = list(csv.DictReader(open(out / "metrics.csv")))
    assert [r["step"] for r in rows if r["split"] == "train"] == ["1", "2", "3"]
    val = [r for r in rows if r["split"] == "val"]
    assert len(val) == 1 and 0.0 <= float(val[0]["val_top1"]) <= 1.0 and int(val[0]["val_n"]) == N_VAL
    assert all(math.isfinite(float(r["loss"])) and float(r["patterns_per_s"]) > 0 for r in rows
               if r["split"] == "train")

    model, loaded = load_model(out / "last.pt", map_location="cpu")
    assert not model.training and loaded.optim.max_steps == 3
    sim = loaded.make_simulator()
    from xrdflow.data import bundled_dataset
    from xrdflow.models import build_graphs, collate_graphs

    structs = bundled_dataset("test", limit=4).structures
    with torch.no_grad():
        x = model.encode_patterns(torch.from_numpy(sim.patterns(structs)))
        c = model.encode_crystals(collate_graphs(build_graphs(structs, **model.graph_kwargs(), progress=False)))
    assert x.shape == c.shape == (4, loaded.model.embed_dim)
    assert torch.allclose(x.norm(dim=1), torch.ones(4), atol=1e-5)

    from xrdflow.cli import main

    assert main(cmd[3:]) == 2                                # the run exists: refused without --resume
    err = capsys.readouterr().err
    assert "--resume" in err and "Traceback" not in err
    assert main(["train", "--config", str(tmp_path / "nope.yaml")]) == 2
    assert "no such config file" in capsys.readouterr().err


def test_hard_negative_batches_group_look_alikes_and_resume_exactly(tmp_path, data_cache):
    from xrdflow.data import similarity_groups
    from xrdflow.train.contrastive import Trainer

    first = train(tiny_config(run_dir(tmp_path, data_cache, "first"), max_steps=4), log=lambda m: None)

    def hard(name, **optim):
        cfg = tiny_config(run_dir(tmp_path, data_cache, name), **optim)
        return dataclasses.replace(cfg, init_from=str(first.last_checkpoint), hard_negatives={"group_size": 4})

    trainer = Trainer(hard("setup"), log=lambda m: None)
    trainer.setup()
    keys = trainer.init_crystal_embeddings()
    # the keys are the starting model's crystal embeddings, and the epoch order is made of their groups
    assert keys.shape == (N_TRAIN, trainer.model.cfg.embed_dim) and np.isfinite(keys).all()
    rng = np.random.Generator(np.random.PCG64([trainer.cfg.run.seed, 0]))
    groups = similarity_groups(keys, 4, rng)
    assert np.array_equal(trainer.stream.order(0), np.concatenate([groups[i] for i in rng.permutation(len(groups))]))
    trainer.close()

    straight = train(hard("straight", max_steps=8), log=lambda m: None)
    split = hard("split", max_steps=8)
    train(split, stop_at_step=3, log=lambda m: None)
    resumed = train(split, resume=True, log=lambda m: None)
    a, b = read_checkpoint(straight.last_checkpoint), read_checkpoint(resumed.last_checkpoint)
    for k, v in a["model"].items():
        assert torch.equal(v, b["model"][k]), k
    with pytest.raises(ValueError, match="hard_negatives"):   # resumed without: refused
        train(dataclasses.replace(split, hard_negatives=None), resume=True, log=lambda m: None)

    with pytest.raises(ValueError, match="set init_from"):
        dataclasses.replace(split, init_from=None)
    with pytest.raises(ValueError, match="hard_negatives.group_size"):
        dataclasses.replace(split, hard_negatives={"group_size": 1})
    with pytest.raises(ValueError, match="hard_negatives must be"):
        dataclasses.replace(split, hard_negatives={"group": 8})


def test_val_distractors_make_validation_a_harder_gallery_and_pick_best_pt(tmp_path, data_cache):
    cfg = tiny_config(run_dir(tmp_path, data_cache, "distract"), max_steps=3)
    cfg = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, val_distractors=20))
    from xrdflow.train.data import cache_key
    assert cache_key(cfg) == cache_key(tiny_config(tmp_path))   # the prepared data are the same
    logs = []
    r = train(cfg, log=logs.append)
    val = r.last_val
    assert val["n_distractors"] == 20 and val["n"] == N_VAL
    # more wrong answers can only push the right one down
    assert val["top1_distractors"] <= val["top1"] and val["top5_distractors"] <= val["top5"]
    assert r.best_val_top1 == read_checkpoint(r.best_checkpoint)["best"]["val_top1_distractors"]
    rows = [row for row in csv.DictReader(open(Path(cfg.run.out_dir) / "metrics.csv")) if row["split"] == "val"]
    assert rows and float(rows[-1]["val_top1_distractors"]) == pytest.approx(val["top1_distractors"])
    assert any("20 distractors" in m for m in logs)

    # an independent count: rank the validation patterns among validation + the same distractors by hand
    from xrdflow.train.contrastive import Trainer

    trainer = Trainer(dataclasses.replace(cfg, run=dataclasses.replace(cfg.run, out_dir=str(tmp_path / "again"))),
                      log=lambda m: None)
    trainer.setup()
    c, x = trainer.embed_validation()
    wrong = trainer.embed_train_crystals(trainer.distractors)
    sims = (x @ torch.cat([c, wrong]).T).numpy()
    right = sims[np.arange(len(x)), np.arange(len(x))]
    expect = float(np.mean((sims > right[:, None]).sum(1) == 0))
    assert trainer.validate()["top1_distractors"] == pytest.approx(expect)
    trainer.close()
    with pytest.raises(ValueError, match="data.val_distractors"):
        dataclasses.replace(cfg.data, val_distractors=-1)


def test_simulated_pattern_weight_trains_and_validates_with_fused_structure_embeddings(tmp_path, data_cache):
    """A model with simulated_pattern_weight > 0: the loss and validation use normalize(c + w p), p the
    pattern tower's embedding of each structure's clean pattern; init_from may change the weight."""
    from xrdflow.models import collate_graphs
    from xrdflow.train.contrastive import Trainer

    first = train(tiny_config(run_dir(tmp_path, data_cache, "plain"), max_steps=2), log=lambda m: None)
    base = tiny_config(run_dir(tmp_path, data_cache, "fused"), max_steps=3)
    cfg = dataclasses.replace(base, init_from=str(first.last_checkpoint),
                              model=dataclasses.replace(base.model, simulated_pattern_weight=1.5),
                              data=dataclasses.replace(base.data, val_distractors=10))
    trainer = Trainer(cfg, log=lambda m: None)
    trainer.setup()
    model = trainer.model
    assert model.uses_simulated_patterns
    c, x = trainer.embed_validation()
    # by hand: crystal tower and pattern tower of the clean validation patterns, fused
    clean, _ = trainer.sim.render(trainer.data.val_reflections)
    model.eval()
    with torch.no_grad():
        cc = model.encode_crystals(collate_graphs(list(trainer.data.val_graphs)))
        pp = model.encode_patterns(torch.from_numpy(clean))
    model.train()
    fused = torch.nn.functional.normalize(cc + 1.5 * pp, dim=-1)
    torch.testing.assert_close(c, fused, atol=1e-5, rtol=1e-5)
    assert (c - cc).abs().max() > 1e-2
    wrong = trainer.embed_train_crystals(trainer.distractors)
    clean_wrong, _ = trainer.sim.render(trainer.data.train_reflections, indices=trainer.distractors)
    with torch.no_grad():
        model.eval()
        cw = model.encode_crystals(collate_graphs([trainer.data.train_graphs[i] for i in trainer.distractors]))
        pw = model.encode_patterns(torch.from_numpy(clean_wrong))
        model.train()
    torch.testing.assert_close(wrong, torch.nn.functional.normalize(cw + 1.5 * pw, dim=-1), atol=1e-5, rtol=1e-5)
    trainer.close()
    r = train(cfg, log=lambda m: None)
    assert r.step == 3 and load_model(r.last_checkpoint)[0].simulated_pattern_weight == 1.5


def test_export_sets_the_simulated_pattern_weight_of_a_shipped_copy(tmp_path, data_cache, monkeypatch):
    import importlib.util

    from xrdflow import pretrained

    r = train(tiny_config(run_dir(tmp_path, data_cache, "to_export"), max_steps=1), log=lambda m: None)
    spec = importlib.util.spec_from_file_location("export_pretrained", ROOT / "scripts" / "export_pretrained.py")
    export = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(export)
    monkeypatch.setattr(pretrained, "DIRECTORY", tmp_path / "shipped")
    (tmp_path / "shipped").mkdir()
    assert export.main([str(r.last_checkpoint), "--name", "fused", "--command", "xrdflow train --config x.yaml",
                        "--simulated-pattern-weight", "2.5", "--weight-source", "a validation sweep"]) == 0
    model, cfg = load_model(tmp_path / "shipped" / "fused.pt")
    assert model.simulated_pattern_weight == 2.5 and cfg.model.simulated_pattern_weight == 2.5
    original, _ = load_model(r.last_checkpoint)
    assert original.simulated_pattern_weight == 0.0
    for k, v in original.state_dict().items():        # the weights are the trained ones
        assert torch.equal(v, model.state_dict()[k]), k
    meta = json.loads((tmp_path / "shipped" / "fused.json").read_text())
    assert meta["simulated_pattern_weight"] == {"value": 2.5, "chosen_by": "a validation sweep"}
    assert meta["config"]["model"]["simulated_pattern_weight"] == 2.5
    with pytest.raises(ValueError, match="simulated_pattern_weight"):
        export.main([str(r.last_checkpoint), "--name", "bad", "--command", "c", "--simulated-pattern-weight", "-1"])
