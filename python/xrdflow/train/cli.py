"""``xrdflow train --config CFG.yaml [--resume] [--device DEV] [--max-steps N] [--out-dir DIR]``.

Trains the contrastive dual tower described by the YAML config (see
:mod:`xrdflow.train.config` and ``configs/``).  Under ``torchrun`` every
process runs this command and they train together (DDP)::

    torchrun --nproc-per-node 4 -m xrdflow train --config configs/contrastive_full.yaml

User errors (a bad config, a leaking training set, an existing run without
--resume) exit with status 2 and one ``xrdflow: error: ...`` line.
"""
from __future__ import annotations

import dataclasses

__all__ = ["add_train_parser"]


def _cmd_train(args) -> int:
    from ..cli import UserError
    from .config import load_config
    from .contrastive import train

    try:
        cfg = load_config(args.config)
    except FileNotFoundError as err:
        raise UserError(str(err)) from None
    run = {}
    if args.device is not None:
        run["device"] = args.device
    if args.out_dir is not None:
        run["out_dir"] = args.out_dir
    if args.progress is not None:
        run["progress"] = args.progress
    if run:
        cfg = dataclasses.replace(cfg, run=dataclasses.replace(cfg.run, **run))
    if args.max_steps is not None:
        cfg = dataclasses.replace(cfg, optim=dataclasses.replace(cfg.optim, max_steps=args.max_steps))
    result = train(cfg, resume=args.resume)
    best = "" if result.best_val_top1 is None else f", best validation top-1 {result.best_val_top1:.4f}"
    print(f"trained {result.step} steps ({result.steps_per_s:.2f} steps/s){best}; checkpoint {result.last_checkpoint}")
    return 0


def add_train_parser(sub) -> None:
    """Register ``xrdflow train`` on the subparsers object of :func:`xrdflow.cli.build_parser`."""
    import argparse

    from ..cli import _positive_int

    p = sub.add_parser(
        "train", help="train the contrastive crystal/pattern model from a YAML config",
        description="Train the contrastive dual-tower model (crystal graph encoder + pattern encoder) on patterns\n"
                    "rendered on the fly with realistic augmentation. Writes OUT_DIR/last.pt, best.pt,\n"
                    "metrics.csv, config.yaml and a data cache. Under torchrun, trains on all processes (DDP).",
        epilog="example:\n  xrdflow train --config configs/contrastive_tiny.yaml --max-steps 50\n"
               "  xrdflow train --config configs/contrastive_tiny.yaml --resume",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", required=True, metavar="CFG.yaml", help="training config (YAML; see configs/)")
    p.add_argument("--resume", action="store_true",
                   help="continue the run in run.out_dir from last.pt exactly where it stopped")
    p.add_argument("--device", metavar="DEV", help="override run.device: auto, cpu, cuda, cuda:N, mps")
    p.add_argument("--max-steps", type=_positive_int, metavar="N",
                   help="override optim.max_steps (schedule length and end of the run)")
    p.add_argument("--out-dir", metavar="DIR", help="override run.out_dir")
    bar = p.add_mutually_exclusive_group()
    bar.add_argument("--progress", dest="progress", action="store_true", default=None,
                     help="show a progress bar (default: only on a terminal)")
    bar.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bar")
    p.set_defaults(func=_cmd_train)
