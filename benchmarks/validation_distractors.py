"""Validation retrieval among thousands of crystals, without touching the test gallery.

    python benchmarks/validation_distractors.py --config configs/contrastive_cpu_stage3.yaml \
        --distractors 6618 CKPT [CKPT ...] [--json OUT.json]

A run's 500 held-out validation structures rank against only each other, which is far easier than an
evaluation gallery of 7,118.  This script ranks each checkpoint's validation patterns (realistic, the
trainer's fixed validation draws) among the 500 validation crystals plus ``--distractors`` training
crystals, chosen as ``data.val_distractors`` chooses them (``xrdflow.train``), so 500 + 6,618 = 7,118
candidates, the size of the mp20_biternary_test gallery.  It reads the prepared data of the config's
``run.out_dir/cache`` (run the training first, or any run with the same data section).  The distractors
are training structures, which the crystal tower has seen; the answers are not.  Prints top-1/5/10 (%)
with and without the distractors.

``--weights W [W ...]`` also ranks by structure embeddings fused with each candidate's clean simulated
pattern at each ``simulated_pattern_weight`` W (``xrdflow.models.fuse_embeddings``; 0 = the crystal tower
alone): the sweep that chose the shipped model's weight, on validation data only.  Without it each
checkpoint is ranked with its own weight.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("checkpoints", nargs="+", help="checkpoints of xrdflow train, or pretrained:NAME")
    ap.add_argument("--config", required=True, type=Path, help="training config whose prepared data to use")
    ap.add_argument("--distractors", type=int, default=6618, help="training crystals added (default 6618)")
    ap.add_argument("--weights", nargs="+", type=float, default=None,
                    help="simulated_pattern_weight values to rank with (default: each checkpoint's own)")
    ap.add_argument("--json", type=Path, help="write the numbers here")
    args = ap.parse_args(argv)

    import torch

    from xrdflow import pretrained
    from xrdflow._fileio import atomic_write_text
    import xrdflow as xf
    from xrdflow.evaluate.gallery import encode_graphs, encode_patterns, structure_embeddings
    from xrdflow.train import load_config, load_model
    from xrdflow.train.contrastive import retrieval_accuracy
    from xrdflow.train.data import prepare_data, validation_distractors

    cfg = load_config(args.config)
    data = prepare_data(cfg, cfg.run.out_dir, progress=False, log=lambda m: None, cache_only=True)
    if not 0 < args.distractors <= data.n_train:
        raise SystemExit(f"--distractors must be in [1, {data.n_train}] (the training set), got {args.distractors}")
    chosen = validation_distractors(cfg, data.n_train, args.distractors)   # as data.val_distractors chooses
    graphs = list(data.val_graphs) + [data.train_graphs[i] for i in chosen]
    sim = cfg.make_simulator()
    patterns, _ = sim.render(data.val_reflections, augmentation=cfg.make_augmentation(),
                             seed=cfg.run.val_augmentation_seed, epoch=0)
    # the candidates' own clean patterns, for structure embeddings that fuse them in
    clean, _ = sim.render(xf.Reflections.concatenate([data.val_reflections,
                                                      data.train_reflections.subset(chosen)]))

    out = {"config": str(args.config), "n_val": data.n_val, "n_distractors": int(args.distractors), "results": {}}
    print(f"{data.n_val} validation patterns; {data.n_val} validation + {args.distractors} training crystals")
    print(f"{'checkpoint':60s} {'weight':>6s} {'top-1':>6s} {'top-5':>6s} {'top-10':>6s}   {'val only top-1':>14s}")
    for spec in args.checkpoints:
        model, _ = load_model(pretrained.resolve(spec))
        crystal = encode_graphs(model, graphs, batch_size=256)
        x = torch.from_numpy(encode_patterns(model, patterns))
        rows = {}
        for w in (args.weights if args.weights is not None else [model.simulated_pattern_weight]):
            c = torch.from_numpy(structure_embeddings(model, crystal, clean, weight=w))
            hard = retrieval_accuracy(c, x, ks=(1, 5, 10))
            easy = retrieval_accuracy(c[:data.n_val], x, ks=(1,))
            rows[f"{w:g}"] = {**hard, "top1_val_only": easy["top1"]}
            print(f"{spec:60s} {w:6g} {100 * hard['top1']:6.1f} {100 * hard['top5']:6.1f} {100 * hard['top10']:6.1f}"
                  f"   {100 * easy['top1']:14.1f}")
        out["results"][spec] = {"simulated_pattern_weight": rows}
    if args.json:
        atomic_write_text(args.json, json.dumps(out, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
