"""Forward+backward speed of the xrdflow.models towers on CPU.

    python benchmarks/model_speed.py [--batch 64] [--repeats 5] [--threads 2]

Prints structures/s (crystal tower), patterns/s (pattern tower) and the time of a whole
contrastive training step (both towers + CLIP loss + backward + AdamW) at the default
DualTowerConfig, on bundled MP-20 structures and simulated patterns.
"""
from __future__ import annotations

import argparse
import os
import time

import numpy as np
import torch

import xrdflow as xf
from xrdflow.data import bundled_dataset
from xrdflow.models import DualTower, DualTowerConfig, build_graphs, collate_graphs


def _time(fn, repeats):
    """Median wall time and median process CPU time (all threads) of fn, after a warm-up.
    On a shared machine the wall time grows with the load; the CPU time much less."""
    fn()  # warm-up (e3nn code generation, allocator)
    wall, cpu = [], []
    for _ in range(repeats):
        t0, c0 = time.perf_counter(), time.process_time()
        fn()
        wall.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    return float(np.median(wall)), float(np.median(cpu))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--step-batch", type=int, default=128, help="batch of the full training step")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    cfg = DualTowerConfig()
    model = DualTower(cfg)
    n = max(args.batch, args.step_batch)
    structures = bundled_dataset(limit=n).structures[:n]
    t0 = time.perf_counter()
    graphs = build_graphs(structures, **model.graph_kwargs(), progress=False)
    graph_s = (time.perf_counter() - t0) / len(graphs)
    sim = xf.Simulator(radiation="CuKa", two_theta=(5.0, 90.0), n_points=cfg.pattern.n_points)
    Y = torch.from_numpy(sim.patterns(structures))

    n_params = {name: sum(p.numel() for p in getattr(model, name).parameters())
                for name in ("crystal_encoder", "pattern_encoder")}
    if hasattr(os, "getloadavg"):
        print("load average before: " + " ".join(f"{x:.1f}" for x in os.getloadavg()))
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, cpus {os.cpu_count()}; "
          f"params crystal {n_params['crystal_encoder']:,} pattern {n_params['pattern_encoder']:,}")
    print(f"graphs: {graph_s * 1e3:.2f} ms/structure, "
          f"{np.mean([g.n_sites for g in graphs]):.1f} sites, "
          f"{np.mean([g.n_edges / g.n_sites for g in graphs]):.1f} edges/site")

    b = args.batch
    batch = collate_graphs(graphs[:b])
    y = Y[:b]

    def crystal():
        model.zero_grad(set_to_none=True)
        model.encode_crystals(batch).sum().backward()

    def pattern():
        model.zero_grad(set_to_none=True)
        model.encode_patterns(y).sum().backward()

    t, c = _time(crystal, args.repeats)
    print(f"crystal tower fwd+bwd, batch {b}: {t * 1e3:.0f} ms wall = {b / t:.0f} structures/s "
          f"({c * 1e3:.0f} ms CPU)")
    t, c = _time(pattern, args.repeats)
    print(f"pattern tower fwd+bwd, batch {b}: {t * 1e3:.0f} ms wall = {b / t:.0f} patterns/s "
          f"({c * 1e3:.0f} ms CPU)")

    sb = args.step_batch
    big = collate_graphs(graphs[:sb])
    ys = Y[:sb]
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)

    def step():
        opt.zero_grad(set_to_none=True)
        loss, _ = model(big, ys)
        loss.backward()
        opt.step()

    t, c = _time(step, args.repeats)
    print(f"training step (both towers + CLIP + AdamW), batch {sb}: {t * 1e3:.0f} ms wall = "
          f"{sb / t:.0f} pairs/s ({c * 1e3:.0f} ms CPU)")
    if hasattr(os, "getloadavg"):
        print("load average during the run (other processes share the CPUs): "
              + " ".join(f"{x:.1f}" for x in os.getloadavg()))


if __name__ == "__main__":
    main()
