"""Command line of the classifier.

``xrdflow classify PATTERN [--checkpoint CKPT] [-k 5] [--wavelength W] [--json]``
    top-k crystal systems, extinction groups and space groups (sets of indistinguishable groups);
    CKPT defaults to ``pretrained:classifier``, the model shipped in :mod:`xrdflow.pretrained`
``xrdflow classifier train --config CFG.yaml [--resume] [--max-steps N] [--out-dir DIR]``
``xrdflow classifier evaluate --checkpoint CKPT --test SRC [SRC ...] [--json OUT] [--figures DIR]``
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import sys

__all__ = ["add_classify_parsers"]


def _cmd_classify(args) -> int:
    from ..cli import UserError
    from ..io import read_pattern
    from .predict import classify_patterns, format_result, pattern_on_grid
    from .train import load_classifier

    try:
        model, cfg = load_classifier(args.checkpoint)   # pretrained:NAME resolved by xrdflow.pretrained
    except FileNotFoundError as err:
        raise UserError(str(err)) from None
    pattern = read_pattern(args.pattern, format=args.format)
    sim = cfg.make_simulator()
    y, info = pattern_on_grid(pattern, sim, wavelength=args.wavelength)
    if info["coverage"] < 0.5:
        print(f"xrdflow: warning: the pattern covers only {100 * info['coverage']:.0f} % of the model's 2theta grid; "
              "predictions are unreliable", file=sys.stderr)
    res = classify_patterns(model, y[None], k=args.k)[0]
    if args.json:
        print(json.dumps({"pattern": args.pattern, "grid": info, **res}, indent=1))
    else:
        print(format_result(res, info, source=args.pattern))
    return 0


def _cmd_train(args) -> int:
    from ..cli import UserError
    from .config import load_config
    from .train import train

    try:
        cfg = load_config(args.config)
    except FileNotFoundError as err:
        raise UserError(str(err)) from None
    run = {k: v for k, v in (("device", args.device), ("out_dir", args.out_dir), ("progress", args.progress))
           if v is not None}
    if run:
        cfg = dataclasses.replace(cfg, run=dataclasses.replace(cfg.run, **run))
    if args.max_steps is not None:
        cfg = dataclasses.replace(cfg, optim=dataclasses.replace(cfg.optim, max_steps=args.max_steps))
    result = train(cfg, resume=args.resume)
    best = "" if result.best_val_sg_top1 is None else f", best validation space-group top-1 {result.best_val_sg_top1:.4f}"
    print(f"trained {result.step} steps ({result.steps_per_s:.2f} steps/s) on {result.n_train} structures{best}; "
          f"checkpoint {result.last_checkpoint}")
    return 0


def _cmd_evaluate(args) -> int:
    from ..cli import UserError
    from ..train.config import atomic_write_bytes
    from .evaluate import evaluate_checkpoint

    try:
        res = evaluate_checkpoint(args.checkpoint, args.test, augmentation=args.patterns, seed=args.seed,
                                  limit=args.limit, dedup_against_training=not args.no_dedup,
                                  cache_dir=args.cache_dir, progress=args.progress, scan_deg=args.scan_range,
                                  log=lambda m: print(m, file=sys.stderr, flush=True))
    except FileNotFoundError as err:
        raise UserError(str(err)) from None
    text = json.dumps({"checkpoint": args.checkpoint, "patterns": args.patterns, "seed": args.seed,
                       "scan_range_deg": args.scan_range, "results": res}, indent=1)
    if args.json:
        atomic_write_bytes(args.json, text.encode("utf-8"))
    if args.figures:
        import os
        from pathlib import Path

        from .figures import plot_confusion

        os.makedirs(args.figures, exist_ok=True)
        for spec, r in res.items():
            name = Path(spec).name.split(".")[0]
            plot_confusion(r, Path(args.figures) / f"confusion_{name}.png",
                           title=f"{Path(args.checkpoint).name} on {name} ({r['n']} structures, {args.patterns})")
    if not args.json:
        print(text)
    return 0


def add_classify_parsers(sub) -> None:
    """Register ``xrdflow classify`` and ``xrdflow classifier train|evaluate``."""
    from ..cli import _positive_int

    p = sub.add_parser(
        "classify", help="crystal system, extinction group and space group of a measured pattern",
        description="Read a powder pattern, interpolate it onto the classifier's 2theta grid (through d-spacing when\n"
                    "the wavelengths differ) and print the top-k crystal systems, extinction groups and space\n"
                    "groups with probabilities. Space groups sharing an extinction group have the same line\n"
                    "positions and are shown as one set.",
        epilog="examples:\n  xrdflow classify scan.xy -k 5                  # the shipped model (pretrained:classifier)\n"
               "  xrdflow classify scan.xy --checkpoint runs/classifier_small/last.pt",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("pattern", metavar="PATTERN", help="measured pattern (.xy/.xye/.csv/.txt, pdCIF, XRDML, GSAS)")
    p.add_argument("--checkpoint", default="pretrained:classifier", metavar="CKPT",
                   help="classifier checkpoint (xrdflow classifier train) or pretrained:NAME (default "
                        "pretrained:classifier, the shipped model trained on MP-20 structures)")
    p.add_argument("-k", type=_positive_int, default=5, metavar="K", help="show the K best of each head (default 5)")
    p.add_argument("--wavelength", metavar="W",
                   help="wavelength of the pattern (angstrom or a tube name such as CuKa) when the file does not say "
                        "or says wrongly")
    p.add_argument("--format", choices=("text", "cif", "xrdml", "gsas"), help="file format (default: guessed)")
    p.add_argument("--json", action="store_true", help="print JSON instead of text")
    p.set_defaults(func=_cmd_classify)

    c = sub.add_parser("classifier", help="train and evaluate the space-group classifier",
                       description="Train (from a YAML config, see configs/classifier_*.yaml) and evaluate the "
                                   "pattern -> crystal system / extinction group / space group classifier.")
    c.set_defaults(func=lambda args: (c.print_help(sys.stderr), 2)[1])
    actions = c.add_subparsers(dest="classifier_command", metavar="ACTION", parser_class=type(c))

    t = actions.add_parser("train", help="train from a YAML config",
                           description="Train the classifier on augmented patterns streamed from the configured "
                                       "structures. Writes OUT_DIR/last.pt, best.pt, metrics.csv, config.yaml, "
                                       "cache/.",
                           epilog="example:\n  xrdflow classifier train --config configs/classifier_tiny.yaml",
                           formatter_class=argparse.RawDescriptionHelpFormatter)
    t.add_argument("--config", required=True, metavar="CFG.yaml")
    t.add_argument("--resume", action="store_true", help="continue run.out_dir/last.pt exactly where it stopped")
    t.add_argument("--device", metavar="DEV", help="override run.device: auto, cpu, cuda, cuda:N, mps")
    t.add_argument("--max-steps", type=_positive_int, metavar="N", help="override optim.max_steps")
    t.add_argument("--out-dir", metavar="DIR", help="override run.out_dir")
    bar = t.add_mutually_exclusive_group()
    bar.add_argument("--progress", dest="progress", action="store_true", default=None,
                     help="progress bar (default: only on a terminal)")
    bar.add_argument("--no-progress", dest="progress", action="store_false")
    t.set_defaults(func=_cmd_train)

    e = actions.add_parser("evaluate", help="top-k accuracies on labelled structures",
                           description="Render one augmented pattern per test structure (fixed seed) on the "
                                       "classifier's grid, after removing test structures that duplicate a "
                                       "training structure, and report top-1/3/5 of every head, space group "
                                       "mapped to extinction group, and per-crystal-system results.")
    e.add_argument("--checkpoint", required=True, metavar="CKPT", help="classifier checkpoint or pretrained:NAME")
    e.add_argument("--test", required=True, nargs="+", metavar="SRC",
                   help="CSV(.gz) with a cif column, CIF folder, extxyz, data set directory or bundled:SPLIT")
    e.add_argument("--patterns", choices=("realistic", "none"), default="realistic",
                   help="augmentation of the test patterns (default realistic)")
    e.add_argument("--seed", type=int, default=2024, help="seed of the test patterns' augmentation (default 2024)")
    e.add_argument("--limit", type=_positive_int, metavar="N", help="first N structures of each source")
    e.add_argument("--no-dedup", action="store_true", help="do not remove duplicates of training structures")
    e.add_argument("--cache-dir", metavar="DIR", help="cache labels and reflections of the test sets here")
    e.add_argument("--json", metavar="OUT.json", help="write the results as JSON (else print them)")
    e.add_argument("--figures", metavar="DIR", help="write a crystal-system confusion picture per source")
    e.add_argument("--scan-range", type=float, nargs=2, metavar=("START", "END"),
                   help="cut every test pattern to this 2-theta range (degrees) as a partial scan, the grid "
                        "points outside filled as xrdflow classify fills a short measured scan")
    e.add_argument("--progress", action="store_true", help="progress bars")
    e.set_defaults(func=_cmd_evaluate)
