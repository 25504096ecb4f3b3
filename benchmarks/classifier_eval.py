"""Classifier experiments of the README ("Classifying space groups"): train, evaluate, draw.

    xrdflow dataset generate --random 2000 --seed 6 --max-atoms 24 --shard-size 250 -o data/random2000
    xrdflow dataset generate --random 400 --seed 7 --max-atoms 24 --shard-size 200 -o data/random400_test
    python benchmarks/classifier_eval.py --random data/random2000 --random-test data/random400_test \\
        --runs runs/classifier_eval --steps 500 --json benchmarks/results/classifier_eval.json \\
        --figures docs/images

Runs (configs/classifier_small.yaml with these changes; every run the same number of optimizer
steps of 64 patterns, so the curves compare data and grids at equal compute):

* ``random_n{N}_p1024`` for N in --sizes (training structures before the 200 held out for
  validation): accuracy vs training-set size;
* ``random_n{max}_p{P}`` for P in --points: accuracy vs n_points (grid of 5-90 deg 2theta);
* ``real_p1024``: configs/classifier_real.yaml (the first 2,000 structures of MP-20 biternary val).

Each finished run is skipped when run again (its last.pt holds the final step); each evaluation is
kept in the JSON.  Evaluation: one realistic augmented pattern per test structure (seed 2024),
test structures that duplicate a training structure removed (id or structure), top-1/3/5 per head.
Test sets: mp20_biternary_test (real), the held-out random crystals (--random-test), perov5_test and
carbon24_test (extra, main models only).
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data" / "structures"


def _configs(args):
    from xrdflow.classify import load_config

    base = load_config(ROOT / "configs" / "classifier_small.yaml")
    real = load_config(ROOT / "configs" / "classifier_real.yaml")
    n_max = args.sizes[-1]
    runs = {}

    def with_(cfg, name, n=None, points=None, train=None):
        data = dataclasses.replace(cfg.data, train=train if train is not None else cfg.data.train,
                                   max_structures=n)
        model, sim = cfg.model, dict(cfg.simulator)
        if points is not None:
            model = dataclasses.replace(model, pattern=dataclasses.replace(model.pattern, n_points=points))
            sim["n_points"] = points
            if points >= 2048:
                sim.pop("W", None)      # default instrument widths are sampled well enough from 2048 points
        optim = dataclasses.replace(cfg.optim, max_steps=args.steps)
        run = dataclasses.replace(cfg.run, out_dir=str(Path(args.runs) / name), progress=args.progress)
        return dataclasses.replace(cfg, data=data, model=model, simulator=sim, optim=optim, run=run)

    for n in args.sizes:
        runs[f"random_n{n}_p1024"] = with_(base, f"random_n{n}_p1024", n=n + 200, train=list(args.random))
    for p in args.points:
        if p != 1024:
            runs[f"random_n{n_max}_p{p}"] = with_(base, f"random_n{n_max}_p{p}", n=n_max + 200, points=p,
                                                  train=list(args.random))
    runs["real_p1024"] = with_(real, "real_p1024", n=real.data.max_structures)
    return runs


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--random", required=True, nargs="+",
                    help="random-crystal training data set(s) (xrdflow dataset generate), joined in this order")
    ap.add_argument("--random-test", required=True, help="independent random-crystal test data set")
    ap.add_argument("--runs", default="runs/classifier_eval")
    ap.add_argument("--steps", type=int, default=1000)
    ap.add_argument("--sizes", type=int, nargs="+", default=[250, 700, 1800])
    ap.add_argument("--points", type=int, nargs="+", default=[512, 1024, 2048])
    ap.add_argument("--only", nargs="*", help="train/evaluate only these runs")
    ap.add_argument("--json", default="benchmarks/results/classifier_eval.json")
    ap.add_argument("--figures", default="docs/images")
    ap.add_argument("--cache-dir", default=None, help="cache of the test sets' labels and reflections")
    ap.add_argument("--progress", action="store_true")
    ap.add_argument("--merge", nargs="*", default=[],
                    help="take finished runs from these JSON files too (parallel invocations with --only)")
    args = ap.parse_args(argv)
    args.sizes = sorted(args.sizes)

    from xrdflow.classify import evaluate_model, load_classifier, train
    from xrdflow.classify.figures import plot_confusion, plot_curve
    from xrdflow.classify.train import read_checkpoint
    from xrdflow.train.config import atomic_write_bytes

    out_json = Path(args.json)
    results = json.loads(out_json.read_text()) if out_json.is_file() else {}
    results.setdefault("runs", {})
    for other in args.merge:
        for name, entry in json.loads(Path(other).read_text()).get("runs", {}).items():
            results["runs"].setdefault(name, entry)
    runs = _configs(args)
    mp20 = str(SHARED / "mp20_biternary_test.csv.gz")
    tests_main = [mp20, args.random_test, str(SHARED / "perov5_test.csv.gz"), str(SHARED / "carbon24_test.csv.gz")]
    tests_curve = [mp20, args.random_test]
    main_runs = {f"random_n{args.sizes[-1]}_p1024", "real_p1024"}

    def log(msg):
        print(msg, file=sys.stderr, flush=True)

    def save():
        out_json.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(out_json, json.dumps(results, indent=1).encode())

    for name, cfg in runs.items():
        if args.only is not None and name not in args.only:
            continue
        last = Path(cfg.run.out_dir) / "last.pt"
        entry = results["runs"].setdefault(name, {})
        done = last.is_file() and read_checkpoint(last)["step"] >= args.steps
        if not done:
            t0 = time.perf_counter()
            res = train(cfg, resume=last.is_file(), log=log)
            entry["train_wall_s"] = round(time.perf_counter() - t0, 1)
            entry["steps_per_s"] = round(res.steps_per_s, 3)
            entry["evaluation"] = {}
        ck = read_checkpoint(last)
        entry.update({"steps": int(ck["step"]), "batch_size": cfg.optim.batch_size, "n_train": int(ck["n_train"]),
                      "n_points": cfg.model.pattern.n_points, "train": cfg.data.train,
                      "parameters": sum(int(v.numel()) for v in ck["model"].values()),
                      "last_val": ck.get("last_val")})
        model, mcfg = load_classifier(last)
        tests = tests_main if name in main_runs else tests_curve
        todo = [t for t in tests if t not in entry.get("evaluation", {})]
        if todo:
            t0 = time.perf_counter()
            ev = evaluate_model(model, mcfg, todo, cache_dir=args.cache_dir, log=log)
            entry.setdefault("evaluation", {}).update(ev)
            entry["eval_wall_s"] = round(time.perf_counter() - t0, 1)
        save()

    # pictures
    figs = Path(args.figures)
    figs.mkdir(parents=True, exist_ok=True)
    R = results["runs"]
    for name in sorted(main_runs):
        for spec, short in ((mp20, "mp20"), (args.random_test, "random")):
            r = R.get(name, {}).get("evaluation", {}).get(spec)
            if r:
                plot_confusion(r, figs / f"classifier_confusion_{name.split('_')[0]}_on_{short}.png",
                               title=f"trained on {name.split('_')[0]} ({R[name]['n_train']} structures, "
                                     f"{R[name]['steps']} steps), tested on {short} ({r['n']})")

    def curve(names, xs, path, xlabel, title):
        series = {}
        for spec, short in ((mp20, "MP-20 test"), (args.random_test, "random test")):
            for head, label in (("crystal_system", "crystal system"), ("space_group_as_extinction_group",
                                                                       "SG -> extinction group"),
                                ("space_group", "space group")):
                ys = [R.get(n, {}).get("evaluation", {}).get(spec, {}).get(head, {}).get("top1") for n in names]
                if all(y is not None for y in ys):
                    series[f"{label}, {short}"] = ys
        if series:
            plot_curve(xs, series, path, xlabel=xlabel, title=title, logx=True)

    n_max = args.sizes[-1]
    curve([f"random_n{n}_p1024" for n in args.sizes], args.sizes, figs / "classifier_data_scaling.png",
          "random training crystals", f"{args.steps} steps of 64 patterns, 1024 points")
    curve([f"random_n{n_max}_p{p}" for p in args.points], args.points, figs / "classifier_n_points.png",
          "pattern points (5-90 deg 2theta)", f"{n_max} random crystals, {args.steps} steps of 64")
    save()
    print(markdown(results, mp20, args.random_test))
    return 0


def _pct(v):
    return "" if v is None else f"{100 * v:.1f}"


def markdown(results, mp20, random_test) -> str:
    """README tables from the JSON: every evaluation of every run, then the slides' 2 x 2 table."""
    names = {mp20: "MP-20 biternary test", random_test: "random crystals (held out)"}
    lines = ["| model | test set | n | crystal system top-1 / 3 | extinction group top-1 / 3 / 5 | "
             "space group top-1 / 3 / 5 | SG -> extinction group top-1 |",
             "|---|---|---:|---|---|---|---|"]
    for name, e in results["runs"].items():
        for spec, r in e.get("evaluation", {}).items():
            cs, eg, sg, m = (r["crystal_system"], r["extinction_group"], r["space_group"],
                             r["space_group_as_extinction_group"])
            lines.append(f"| {name} ({e['n_train']} str., {e['steps']} steps) | "
                         f"{names.get(spec, Path(spec).name.split('.')[0])} | {r['n']} | "
                         f"{_pct(cs['top1'])} / {_pct(cs['top3'])} | "
                         f"{_pct(eg['top1'])} / {_pct(eg['top3'])} / {_pct(eg['top5'])} | "
                         f"{_pct(sg['top1'])} / {_pct(sg['top3'])} / {_pct(sg['top5'])} | {_pct(m['top1'])} |")
    main_random = max((n for n in results["runs"] if n.startswith("random_n") and n.endswith("_p1024")),
                      key=lambda n: int(n.split("_")[1][1:]), default=None)
    pairs = [("trained on real (MP-20 val)", "real_p1024"), ("trained on balanced random", main_random)]
    lines += ["", "| space group top-1 / 3 / 5 (%) | MP-20 biternary test (biased) | random crystals (balanced) |",
              "|---|---|---|"]
    for label, name in pairs:
        ev = results["runs"].get(name, {}).get("evaluation", {})
        cells = []
        for spec in (mp20, random_test):
            r = ev.get(spec, {}).get("space_group")
            cells.append("" if r is None else f"{_pct(r['top1'])} / {_pct(r['top3'])} / {_pct(r['top5'])}")
        lines.append(f"| {label} | {cells[0]} | {cells[1]} |")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
