"""``xrdflow evaluate`` and ``xrdflow search``.

::

    xrdflow evaluate --checkpoint CKPT --gallery DATA [--queries clean|realistic] [--seed 0]
                     [--json OUT] [--out-dir DIR] [--train DATA] [--no-baselines] [--cache-dir DIR]
                     [--fit-rerank N_QUERIES [--fit-candidates 10]]
    xrdflow search PATTERN --checkpoint CKPT --gallery DATA [-k 10] [--wavelength CuKa|1.5406]
                   [--index dense|faiss] [--rerank peak_fom|fit] [--fit-candidates 10] [--cache-dir DIR]

User errors exit with status 2 and one ``xrdflow: error: ...`` line (see :mod:`xrdflow.cli`).
"""
from __future__ import annotations

import json
import os
import sys

from ..cli import PROG, UserError, _positive_int, _radiation_arg

__all__ = ["add_evaluate_parsers"]


def _progress() -> bool:
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):
        return False


def _write_json(path: str, obj) -> None:
    from .._fileio import atomic_write_text

    atomic_write_text(path, json.dumps(obj, indent=2) + "\n")


def _pct(x) -> str:
    return f"{100 * x:6.2f}"


def _check_model_inputs(args) -> None:
    """Resolve ``--checkpoint`` (``pretrained:NAME`` -> the checkpoint shipped in the package,
    xrdflow.pretrained) in place; UserError unless it is a file and ``--gallery`` exists."""
    from .. import pretrained

    try:
        args.checkpoint = pretrained.resolve(args.checkpoint)
    except (FileNotFoundError, ValueError) as err:
        raise UserError(f"--checkpoint: {err}") from None
    if not os.path.isfile(args.checkpoint):
        raise UserError(f"--checkpoint: no such file: {args.checkpoint!r}")
    if not os.path.exists(args.gallery):
        raise UserError(f"--gallery: no such file or folder: {args.gallery!r}")


def _cmd_evaluate(args) -> int:
    from .evaluation import evaluate

    _check_model_inputs(args)
    if args.scan_range is not None and not args.scan_range[0] < args.scan_range[1]:
        raise UserError(f"--scan-range: START must be below END, got {args.scan_range[0]:g} {args.scan_range[1]:g}")
    if args.out_dir:
        os.makedirs(args.out_dir, exist_ok=True)
    if args.json:
        from ..plot import check_output_path

        check_output_path(args.json)
    if args.fit_rerank is not None and args.no_baselines:
        raise UserError("--fit-rerank re-ranks the hybrid's list, which needs the baselines: drop --no-baselines")
    log = (lambda msg: print(f"{PROG}: {msg}", file=sys.stderr))
    res = evaluate(args.checkpoint, args.gallery, queries=args.queries, seed=args.seed, train=args.train,
                   baselines=() if args.no_baselines else ("pattern_cosine", "peak_fom"), cache_dir=args.cache_dir,
                   out_dir=args.out_dir, progress=_progress(), device=args.device, scan_deg=args.scan_range,
                   log=log, fit_queries=args.fit_rerank, fit_candidates=args.fit_candidates)
    fails = res["gallery_failures"]
    if fails:
        print(f"{len(fails)} gallery entries could not be read (first: {fails[0][0]}: {fails[0][1]})")
    cut = "" if res["scan_range_deg"] is None else " cut to {:g}-{:g} deg".format(*res["scan_range_deg"])
    print(f"{res['n_gallery']} structures, {res['queries']} queries{cut} (seed {res['seed']}); "
          f"embeddings {'from cache' if res['embedding_cache']['reused'] else 'computed'}")
    rows = [("model", res)] + ([("crystal tower", res["crystal_tower"])] if "crystal_tower" in res else []) \
        + list(res["baselines"].items())
    if "hybrid" in res:
        rows.append(("hybrid (RRF)", res["hybrid"]))
    print(f"{'method':<16}{'top-1 %':>9}{'top-3 %':>9}{'top-5 %':>9}{'top-10 %':>10}")
    for name, m in rows:
        print(f"{name:<16}{_pct(m['top1']):>9}{_pct(m['top3']):>9}{_pct(m['top5']):>9}{_pct(m['top10']):>10}")
    if "hybrid_fit" in res:
        hf = res["hybrid_fit"]
        print(f"on {hf['n_queries']} random queries (seed {hf['query_seed']}), the hybrid's best {hf['candidates']} "
              f"re-ranked by whole-pattern fits ({hf['seconds']:.0f} s):")
        same = ([("model", hf["model_same_queries"])] if "model_same_queries" in hf else []) + \
            [("hybrid (RRF)", hf["hybrid_same_queries"]), ("hybrid + fit", hf)]
        for name, m in same:
            print(f"{name:<16}{_pct(m['top1']):>9}{_pct(m['top3']):>9}{_pct(m['top5']):>9}{_pct(m['top10']):>10}")
    print("per crystal system (model, top-1 %):  " +
          ", ".join(f"{k} {_pct(v['top1']).strip()} (n={v['n']})" for k, v in res["per_crystal_system"].items()))
    sgb = res["space_group_top1"]
    print(f"space group of the top-1 structure, by frequency in {sgb['frequency_source']}: " +
          ", ".join(f"{k}: {_pct(v['accuracy']).strip()} % (n={v['n_queries']})" for k, v in sgb["bins"].items()))
    if "crystal_tower" in res:
        print(f"model: crystal tower fused with each structure's simulated pattern (weight "
              f"{res['simulated_pattern_weight']:g}); crystal tower: its embeddings alone")
    if "hybrid" in res:
        print(f"hybrid: {res['hybrid']['method']} (nothing tuned)")
    for name, path in res["figures"].items():
        if isinstance(path, str):
            print(f"wrote {path}")
    if args.json:
        _write_json(args.json, res)
        print(f"wrote {args.json}")
    return 0


def _cmd_search(args) -> int:
    from .search import format_table, search_gallery

    _check_model_inputs(args)
    if not os.path.isfile(args.pattern):
        raise UserError(f"no such pattern file: {args.pattern!r}")
    try:
        res = search_gallery(args.pattern, args.checkpoint, args.gallery, k=args.k, wavelength=args.wavelength,
                             index=args.index, cache_dir=args.cache_dir, device=args.device, progress=_progress(),
                             rerank=args.rerank, fit_candidates=args.fit_candidates)
    except ImportError as err:
        raise UserError(str(err)) from None
    info = res["grid_info"]
    conv = (f"2-theta converted from {info['file_wavelength']:g} A to the model's {info['model_wavelength']:g} A; "
            if info["converted"] else "")
    print(f"{args.pattern}: {conv}covers {100 * info['coverage']:.0f} % of the model's grid; "
          f"gallery {len(res['gallery'])} structures ({'cached' if res['embedding_cache']['reused'] else 'embedded'})")
    if args.rerank is None:
        print(format_table(res["gallery"], res["scores"], res["indices"]))
        return 0
    rr = res["rerank"]
    print(f"ranked by {rr['method']}; {rr['query_peaks']} peaks picked in the pattern; gallery reflections "
          f"{'cached' if rr['reflection_cache']['reused'] else 'computed'}")
    extra = {"similarity": rr["model_scores"], "model rank": rr["model_ranks"],
             "peak FOM": rr["peak_fom_scores"], "FOM rank": rr["peak_fom_ranks"]}
    if "r_wp" in rr:
        extra.update({"fused rank": rr["fused_ranks"],
                      "Rwp %": ["-" if v != v else f"{100 * v:.2f}" for v in rr["r_wp"]],
                      "cell factor": ["-" if v != v else f"{v:.4f}" for v in rr["cell_factor"]]})
    print(format_table(res["gallery"], res["scores"], res["indices"], score_name="fused", extra=extra))
    return 0


def add_evaluate_parsers(sub) -> None:
    """Add ``evaluate`` and ``search`` to the ``xrdflow`` subcommands."""
    import argparse

    ev = sub.add_parser(
        "evaluate", help="structure retrieval of a contrastive checkpoint, with baselines and figures",
        description="Rank every gallery structure for each of the gallery's own simulated patterns (clean, or\n"
                    "realistic augmentation at a fixed seed) by embedding similarity; report top-k accuracy,\n"
                    "per crystal system, space-group accuracy of the top-1 structure by training frequency, and\n"
                    "two non-learned baselines (pattern cosine, peak figure of merit).",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    ev.add_argument("--checkpoint", required=True, metavar="CKPT", help="checkpoint written by `xrdflow train`, or pretrained:NAME for a "
                                                         "model shipped in the package (e.g. pretrained:contrastive)")
    ev.add_argument("--gallery", required=True, metavar="DATA",
                    help="structures: CSV(.gz) with a cif column, CIF folder, or a data set directory")
    ev.add_argument("--queries", choices=("clean", "realistic"), default="clean",
                    help="query patterns: clean, or Augmentation.realistic() drawn with --seed (default clean)")
    ev.add_argument("--seed", type=int, default=0, help="seed of the realistic draws and of the t-SNE (default 0)")
    ev.add_argument("--train", metavar="DATA", help="training structures: space-group frequency bins "
                                                    "(default: frequencies in the gallery itself)")
    ev.add_argument("--json", metavar="OUT.json", help="write all numbers as JSON")
    ev.add_argument("--out-dir", metavar="DIR", help="write tsne.png and retrieval.png here")
    ev.add_argument("--scan-range", type=float, nargs=2, metavar=("START", "END"),
                    help="cut every query to this 2-theta range (degrees) as a partial measured scan, the grid "
                         "points outside filled with the smallest value inside (as search fills a short scan)")
    ev.add_argument("--no-baselines", action="store_true", help="skip the pattern-cosine and peak-FOM baselines")
    ev.add_argument("--fit-rerank", type=_positive_int, metavar="N_QUERIES",
                    help="third stage on N random queries (seed --seed): the hybrid's best --fit-candidates "
                         "re-ranked by whole-pattern fits (Rwp); ~1-3 s per query")
    ev.add_argument("--fit-candidates", type=_positive_int, default=10, metavar="K",
                    help="how many of the hybrid's best to fit (1-10, default 10)")
    ev.add_argument("--cache-dir", metavar="DIR", help="gallery embedding cache (default ~/.cache/xrdflow/gallery "
                                                       "or $XRDFLOW_CACHE_DIR)")
    ev.add_argument("--device", default="cpu", help="torch device for the model (default cpu)")
    ev.set_defaults(func=_cmd_evaluate)

    se = sub.add_parser(
        "search", help="rank gallery structures for a measured pattern",
        description="Read a measured pattern, move it onto the model's grid (converting 2-theta through d when\n"
                    "its wavelength differs from the model's) and rank the gallery by embedding similarity.\n"
                    "Gallery embeddings are computed once and cached on disk.",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    se.add_argument("pattern", metavar="PATTERN", help="measured pattern (.xy/.csv/.xrdml/.cif/... as xrdflow.io reads)")
    se.add_argument("--checkpoint", required=True, metavar="CKPT",
                    help="checkpoint written by `xrdflow train`, or pretrained:NAME (shipped in the package)")
    se.add_argument("--gallery", required=True, metavar="DATA")
    se.add_argument("-k", type=_positive_int, default=10, help="number of structures to list (default 10)")
    se.add_argument("--wavelength", type=_radiation_arg, metavar="SOURCE",
                    help="the pattern's radiation when the file does not say it (CuKa, MoKa, or angstrom)")
    se.add_argument("--index", choices=("dense", "faiss"), default="dense",
                    help="dense matrix in blocks (default) or a faiss IndexFlatIP (pip install 'xrdflow[index]')")
    se.add_argument("--rerank", choices=("peak_fom", "fit"), default=None,
                    help="peak_fom: fuse the model's ranking with the peak figure of merit's by reciprocal rank "
                         "fusion (k=60; the gallery's reflections are cached next to the embeddings); fit: that, "
                         "then whole-pattern fits of the fused best --fit-candidates, listed by Rwp")
    se.add_argument("--fit-candidates", type=_positive_int, default=10, metavar="K",
                    help="with --rerank fit: how many of the fused best to fit (1-100, default 10)")
    se.add_argument("--cache-dir", metavar="DIR", help="gallery embedding (and reflection) cache directory")
    se.add_argument("--device", default="cpu", help="torch device for the model (default cpu)")
    se.set_defaults(func=_cmd_search)
