"""End-to-end throughput of PatternStream through a DataLoader, next to render alone.

    python benchmarks/stream_throughput.py
    python benchmarks/stream_throughput.py --n-structures 1000 --batch-size 64 --workers 0 1 2 \
        --epochs 2 --json out.json

The first N structures of mp20_biternary_test (P1 CIFs from ../shared/data)
are parsed and their Reflections cache is built once (all cores).  The
instrument is the training one: ``xf.Simulator(radiation="CuKa",
two_theta=(5, 90), n_points=4096)`` (K-alpha1+2, normalized to max 1), with
``xf.Augmentation.realistic()``.

Rows:

- *stream*: ``PatternStream(cache, sim, realistic, batch_size, threads=1)``
  fed through ``DataLoader(stream, batch_size=None, num_workers=w,
  persistent_workers=False)`` into a dummy consumer that sums every tensor of
  every batch; ``set_epoch`` each epoch; wall time over all epochs, worker
  start-up and the transfer of batches from the workers included; best of
  ``--repeat``; the last column is the wait for the first batch of the first
  epoch and of the later ones (worker start-up shows there).  With
  ``num_workers=0`` a second row renders with all cores
  (``threads=None``); with workers, a second row keeps them alive across
  epochs (``persistent_workers=True``: no start-up per epoch; set_epoch still
  reaches them).
- *render*: ``sim.render`` alone on the same batches (shuffled order,
  ``batch_size`` per call) with the realistic augmentation, then without
  augmentation, ``sim.patterns`` from scratch (structure factors
  included) on the same batches of structures, and the same augmented
  patterns from scratch (``sim.reflections`` of the batch, then the realistic
  render); 1 and 2 threads (``--threads``); best of ``--repeat``.

The ratio column is each row's patterns/s over that of realistic render on
one thread (the work one DataLoader worker does per batch).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import _common  # noqa: F401  (sets single-threaded BLAS before NumPy loads)
from _common import best_time
import numpy as np

import xrdflow as xf


def consume(batch: dict) -> float:
    """The dummy training step: touch every tensor of the batch (sum it)."""
    return float(sum(t.sum().item() for t in batch.values()))


def time_stream(cache, sim, aug, batch_size: int, workers: int, epochs: int, threads, repeat: int,
                persistent: bool = False) -> dict:
    """Best of ``repeat`` runs of ``epochs`` epochs each (one DataLoader pass per epoch)."""
    from torch.utils.data import DataLoader

    from xrdflow.data import PatternStream

    stream = PatternStream(cache, sim, aug, batch_size=batch_size, seed=0, threads=threads)
    best, best_first = float("inf"), []
    for _ in range(repeat):
        loader = DataLoader(stream, batch_size=None, num_workers=workers, persistent_workers=persistent)
        n = 0
        total = 0.0
        first = []  # seconds from the start of each epoch to its first batch
        t0 = time.perf_counter()
        for epoch in range(epochs):
            stream.set_epoch(epoch)
            te = time.perf_counter()
            for batch in loader:
                if len(first) == epoch:
                    first.append(time.perf_counter() - te)
                total += consume(batch)
                n += len(batch["index"])
        seconds = time.perf_counter() - t0
        if seconds < best:
            best, best_first = seconds, first
        del loader  # persistent workers end here, outside the timing
        assert n == epochs * len(cache), (n, epochs, len(cache))
        assert np.isfinite(total)
    return {"patterns": n, "seconds": best, "patterns_per_s": n / best, "first_batch_s": best_first}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n-structures", type=int, default=1000, help="first N of mp20_biternary_test (default 1000)")
    ap.add_argument("--batch-size", type=int, default=64, help="patterns per batch (default 64)")
    ap.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2],
                    help="DataLoader worker counts (default 0 1 2)")
    ap.add_argument("--epochs", type=int, default=3, help="epochs per stream measurement (default 3)")
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2],
                    help="thread counts for render alone (default 1 2)")
    ap.add_argument("--repeat", type=int, default=3, help="repeats of every timing, best kept (default 3)")
    ap.add_argument("--json", metavar="OUT", help="also write the numbers as JSON to OUT")
    args = ap.parse_args(argv)
    if min(args.n_structures, args.batch_size, args.epochs, args.repeat) < 1 or min(args.workers) < 0:
        ap.error("--n-structures, --batch-size, --epochs and --repeat must be >= 1, --workers >= 0")
    try:
        import torch
    except ImportError:
        print("this benchmark needs PyTorch", file=sys.stderr)
        return 1

    try:
        cifs = _common.load_cifs(args.n_structures)
    except FileNotFoundError as exc:
        print(exc, file=sys.stderr)
        return 1
    structures = [xf.Structure.from_cif(c) for c in cifs]
    sim = xf.Simulator(radiation="CuKa", two_theta=(5.0, 90.0), n_points=4096)
    aug = xf.Augmentation.realistic()
    t = time.perf_counter()
    cache = sim.reflections(structures, threads=None)
    cache_s = time.perf_counter() - t
    n = len(cache)
    order = np.random.Generator(np.random.PCG64([0, 0])).permutation(n)
    batches = [order[i:i + args.batch_size] for i in range(0, n, args.batch_size)]
    struct_batches = [[structures[i] for i in b] for b in batches]

    rows = []

    def render_rows(label, fn):
        for th in args.threads:
            s = best_time(lambda: [fn(b, th) for b in range(len(batches))], args.repeat)[0]
            rows.append({"case": f"{label}, {th} thread{'s' if th > 1 else ''}", "kind": "render",
                         "threads": th, "seconds": s, "patterns_per_s": n / s})

    render_rows("sim.render, realistic augmentation",
                lambda b, th: sim.render(cache, indices=batches[b], augmentation=aug, seed=0, epoch=0, threads=th))
    baseline = rows[0]["patterns_per_s"]
    for w in args.workers:
        variants = [(1, False), (None, False)] if w == 0 else [(1, False), (1, True)]
        for threads, persistent in variants:
            r = time_stream(cache, sim, aug, args.batch_size, w, args.epochs, threads, args.repeat, persistent)
            th = "1 thread" if threads == 1 else "all cores"
            label = f"PatternStream + DataLoader, num_workers={w}{', persistent' if persistent else ''}, render {th}"
            rows.append({"case": label, "kind": "stream", "workers": w, "threads": threads,
                         "persistent_workers": persistent, **r})
    render_rows("sim.render, no augmentation", lambda b, th: sim.render(cache, indices=batches[b], threads=th))
    render_rows("sim.patterns from scratch (structure factors included)",
                lambda b, th: sim.patterns(struct_batches[b], threads=th))
    render_rows("from scratch with the augmentation (sim.reflections + realistic render)",
                lambda b, th: sim.render(sim.reflections(struct_batches[b], threads=th), augmentation=aug, seed=0,
                                         epoch=0, threads=th))
    for r in rows:
        r["ratio_vs_realistic_render_1_thread"] = r["patterns_per_s"] / baseline

    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    info = _common.machine()
    print(f"PatternStream throughput: first {n} structures of mp20_biternary_test, CuKa (K-alpha1+2), "
          f"5-90 deg, 4096 points, Augmentation.realistic(), batch {args.batch_size}, {args.epochs} epochs per "
          f"stream row, best of {args.repeat}; {info['cpu']}, {info['nproc']} CPUs, load average {load:.2f} "
          f"at the end; torch "
          f"{torch.__version__}; cache built in {cache_s:.2f} s (all cores)\n")
    print("| case | patterns/s | vs realistic render, 1 thread | first batch of epoch 1 / later (ms) |")
    print("|---|---:|---:|---:|")
    for r in rows:
        first = r.get("first_batch_s")
        latency = ("" if not first else f"{1e3 * first[0]:.0f}" +
                   (f" / {1e3 * float(np.mean(first[1:])):.0f}" if len(first) > 1 else ""))
        print(f"| {r['case']} | {r['patterns_per_s']:,.0f} | {r['ratio_vs_realistic_render_1_thread']:.2f}x | "
              f"{latency} |")
    if args.json:
        meta = {"xrdflow": xf.__version__, "torch": torch.__version__, "numpy": np.__version__, **info,
                "machine": platform.machine(), "load_average": load, "n_structures": n,
                "batch_size": args.batch_size, "epochs": args.epochs, "repeat": args.repeat,
                "cache_build_s": cache_s}
        Path(args.json).write_text(json.dumps({"meta": meta, "results": rows}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
