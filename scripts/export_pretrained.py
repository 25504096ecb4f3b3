"""Ship a trained checkpoint inside the package: weights and config only, with its provenance.

    python scripts/export_pretrained.py runs/contrastive_cpu/last.pt --name contrastive \
        --command "xrdflow train --config configs/contrastive_cpu.yaml" [--eval runs/eval/*.json]
    python scripts/export_pretrained.py runs/contrastive_cpu_stage4/best.pt --name contrastive \
        --command "xrdflow train --config configs/contrastive_cpu_stage4.yaml" --simulated-pattern-weight 3
    python scripts/export_pretrained.py runs/classifier_full/last.pt --name classifier \
        --command "xrdflow classifier train --config configs/classifier_full.yaml" \
        --eval benchmarks/results/classifier_full_eval.json

Writes python/xrdflow/pretrained/NAME.pt (the checkpoint of ``xrdflow train``
or ``xrdflow classifier train`` without optimizer, scheduler and RNG state, so
a few MB; read back with ``torch.load(weights_only=True)`` by
``xrdflow.train.load_model`` or ``xrdflow.classify.load_classifier``) and
NAME.json beside it: the config, the command, the training step, the sha256
of the source checkpoint and of the shipped file, and the evaluation JSON
files given with ``--eval`` (copied as they are).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
KEEP = ("format", "version", "config", "model", "step", "epoch", "best")
# what a classifier checkpoint records beside those (its last validation and training set)
KEEP_CLASSIFIER = ("last_val", "n_train", "train_ids_sha256", "torch_version")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("checkpoint", type=Path, help="checkpoint written by xrdflow train (last.pt or best.pt)")
    ap.add_argument("--name", default="contrastive", help="shipped model name (default contrastive)")
    ap.add_argument("--command", required=True, help="the command that trained it (recorded in NAME.json)")
    ap.add_argument("--eval", nargs="*", type=Path, default=[], help="evaluation JSON files to record")
    ap.add_argument("--simulated-pattern-weight", type=float, default=None, metavar="W",
                    help="set the contrastive model's model.simulated_pattern_weight (it holds no parameters: "
                         "a weight chosen after training, e.g. by benchmarks/validation_distractors.py --weights)")
    ap.add_argument("--weight-source", default=None,
                    help="how --simulated-pattern-weight was chosen (recorded in NAME.json)")
    args = ap.parse_args(argv)

    from xrdflow import classify, pretrained
    from xrdflow._fileio import atomic_write_text, sha256_file
    from xrdflow.train.checkpoint import load_model, read_checkpoint, save_checkpoint

    try:
        ckpt, keep, load = classify.read_checkpoint(args.checkpoint), KEEP + KEEP_CLASSIFIER, classify.load_classifier
    except ValueError:  # not a classifier: a contrastive checkpoint, or read_checkpoint says what is wrong
        ckpt, keep, load = read_checkpoint(args.checkpoint), KEEP, load_model
    slim = {key: ckpt[key] for key in keep if key in ckpt}
    if args.simulated_pattern_weight is not None:
        if load is not load_model:
            raise SystemExit("--simulated-pattern-weight applies to contrastive checkpoints only")
        from xrdflow.models import DualTowerConfig

        model_cfg = dict(slim["config"]["model"], simulated_pattern_weight=args.simulated_pattern_weight)
        DualTowerConfig(**model_cfg)   # refuses a negative or non-finite weight
        slim["config"] = {**slim["config"], "model": model_cfg}
    target = pretrained.DIRECTORY / f"{pretrained._check_name(args.name)}.pt"
    save_checkpoint(target, slim)
    load(target)  # the shipped file must load on its own
    evaluations = {p.name: json.loads(p.read_text()) for p in args.eval}
    provenance = {
        "name": args.name,
        "command": args.command,
        "source_checkpoint": str(args.checkpoint),
        "source_sha256": sha256_file(args.checkpoint),
        "sha256": sha256_file(target),
        "step": int(ckpt["step"]),
        "best": ckpt.get("best"),
        **{key: ckpt[key] for key in KEEP_CLASSIFIER if key in ckpt},
        **({"simulated_pattern_weight": {"value": args.simulated_pattern_weight, "chosen_by": args.weight_source}}
           if args.simulated_pattern_weight is not None else {}),
        "config": slim["config"],
        "evaluations": evaluations,
    }
    json_path = target.with_suffix(".json")
    atomic_write_text(json_path, json.dumps(provenance, indent=1, default=str) + "\n")
    print(f"wrote {target} ({target.stat().st_size / 1e6:.1f} MB) and {json_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
