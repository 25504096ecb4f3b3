"""Ablations of the contrastive model on the bundled data: what each part is worth.

    python benchmarks/contrastive_ablation.py [--steps 1500] [--out runs/ablation] [--only NAME ...]

Every variant trains configs/contrastive_small.yaml (2,400 bundled MP-20 training
structures, validation on the bundled validation split, the bundled test split
refused by the leakage check) for the same number of steps with the same seed,
changing one thing, then retrieves the 300 bundled test structures from their
patterns with realistic queries (seed 0) through ``xrdflow.evaluate.evaluate``.
Variants:

- full: the config as shipped (lattice branch, ACE correlation order 2, realistic augmentation);
- no_lattice: ``model.crystal.lattice_features: false`` (local message passing only);
- no_ace: ``model.crystal.correlation: 1`` (no symmetric product, eq. 3 of the EACNN paper);
- no_augmentation: patterns rendered clean during training (queries stay realistic);
- flatten: ``model.pattern.readout: flatten`` (position-aware readout of the pattern tower
  instead of the global average);
- coord: ``model.pattern.coord_channel: true`` (the 2-theta coordinate as a second input channel);
- flatten_coord: both.

Runs are resumable: a variant whose checkpoint already reached the step count
is only evaluated again.  Prints a Markdown table (top-k in %, training
minutes).  Short runs with one seed: differences of a few points are noise.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

VARIANTS = {
    "full": {},
    "no_lattice": {"crystal": {"lattice_features": False}},
    "no_ace": {"crystal": {"correlation": 1}},
    "no_augmentation": {"augmentation": "none"},
    "flatten": {"pattern": {"readout": "flatten"}},
    "coord": {"pattern": {"coord_channel": True}},
    "flatten_coord": {"pattern": {"readout": "flatten", "coord_channel": True}},
}


def variant_config(name: str, steps: int, out: Path):
    from xrdflow.train import load_config
    from xrdflow.train.config import config_from_dict, config_to_dict

    data = config_to_dict(load_config(ROOT / "configs" / "contrastive_small.yaml"))
    change = VARIANTS[name]
    for tower in ("crystal", "pattern"):
        for key, value in change.get(tower, {}).items():
            data["model"][tower][key] = value
    if "augmentation" in change:
        data["augmentation"] = change["augmentation"]
    data["optim"]["max_steps"] = steps
    data["run"]["out_dir"] = str(out / name)
    data["run"]["progress"] = False
    return config_from_dict(data)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=1500, help="optimizer steps per variant (default 1500)")
    ap.add_argument("--out", default=str(ROOT / "runs" / "ablation"), help="folder for the runs")
    ap.add_argument("--only", nargs="*", choices=sorted(VARIANTS), help="run only these variants")
    args = ap.parse_args(argv)

    from xrdflow._fileio import atomic_write_text
    from xrdflow.data import bundled_dataset
    from xrdflow.evaluate.evaluation import evaluate
    from xrdflow.evaluate.gallery import gallery_from_structures
    from xrdflow.train import train

    out = Path(args.out)
    test = bundled_dataset("test")
    gallery = gallery_from_structures(test.structures, test.ids)
    rows = []
    for name in args.only or list(VARIANTS):
        cfg = variant_config(name, args.steps, out)
        last = Path(cfg.run.out_dir) / "last.pt"
        t0 = time.perf_counter()
        result = train(cfg, resume=last.exists())
        minutes = (time.perf_counter() - t0) / 60
        metrics = evaluate(result.last_checkpoint, gallery, queries="realistic", seed=0, baselines=())
        rows.append((name, metrics, minutes))
        atomic_write_text(out / name / "eval_realistic.json", json.dumps(metrics, indent=1, default=str))
        print(f"{name}: top-1 {metrics['top1']:.3f}", file=sys.stderr)
    print(f"| variant ({args.steps} steps, bundled test, realistic queries) | top-1 % | top-3 % | top-5 % | "
          "top-10 % | training min |")
    print("|---|---:|---:|---:|---:|---:|")
    for name, m, minutes in rows:
        print(f"| {name} | {100 * m['top1']:.1f} | {100 * m['top3']:.1f} | {100 * m['top5']:.1f} | "
              f"{100 * m['top10']:.1f} | {minutes:.1f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
