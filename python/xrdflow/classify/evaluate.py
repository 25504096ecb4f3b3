"""Evaluation of a classifier on labelled structures.

For each test source: the structures are read and labelled (spglib space groups), those that
duplicate a training structure (same id, or :func:`xrdflow.data.dedup.cross_duplicates`) are
removed, one augmented pattern per structure is rendered on the classifier's grid
(``augmentation`` "realistic" by default, fixed ``seed``), and the metrics are

* top-1/3/5 of each head (crystal system, extinction group, space group);
* ``space_group_as_extinction_group``: the space-group probabilities summed per extinction
  group (a pattern cannot tell the members of one apart), then top-k against the true
  extinction group;
* per crystal system: counts and top-1 of each head, and the 7 x 7 confusion matrix of the
  crystal-system head (rows true, columns predicted).
"""
from __future__ import annotations

import numpy as np
import torch

from ..data.labels import CRYSTAL_SYSTEMS
from .config import HEADS
from .model import topk_accuracy

__all__ = ["predict", "score", "evaluate_model", "evaluate_checkpoint", "training_pool"]


@torch.no_grad()
def predict(model, patterns, *, device=None, chunk: int = 512) -> dict:
    """Softmax probabilities of every head for (N, n_points) patterns (numpy or tensor), on the CPU."""
    if isinstance(patterns, np.ndarray):
        patterns = torch.from_numpy(np.ascontiguousarray(patterns, dtype=np.float32))
    device = device or next(model.parameters()).device
    was_training = model.training
    model.eval()
    try:
        out = {h: [] for h in HEADS}
        for start in range(0, patterns.shape[0], chunk):
            p = model.predict_proba(patterns[start:start + chunk].to(device))
            for h in HEADS:
                out[h].append(p[h].cpu())
        return {h: torch.cat(v) for h, v in out.items()}
    finally:
        model.train(was_training)


def sg_to_eg_probs(sg_probs: torch.Tensor, model) -> torch.Tensor:
    """Space-group probabilities summed within each extinction group: (N, n_extinction_groups)."""
    n_eg = model.heads["extinction_group"].out_features
    out = torch.zeros(sg_probs.shape[0], n_eg, dtype=sg_probs.dtype)
    return out.index_add_(1, model.sg_to_eg.cpu(), sg_probs)


def score(probs: dict, sg: np.ndarray, model, ks=(1, 3, 5)) -> dict:
    """Metrics of the module docs from :func:`predict`'s output and true space groups (1..230)."""
    sg_t = torch.as_tensor(np.asarray(sg, dtype=np.int64))
    targets = {k: v.cpu() for k, v in model.targets_from_sg(sg_t).items()}
    res = {"n": int(len(sg_t))}
    for h in HEADS:
        res[h] = {f"top{k}": v for k, v in topk_accuracy(probs[h], targets[h], ks).items()}
    eg_from_sg = sg_to_eg_probs(probs["space_group"], model)
    res["space_group_as_extinction_group"] = {f"top{k}": v for k, v in
                                              topk_accuracy(eg_from_sg, targets["extinction_group"], ks).items()}
    cs_true = targets["crystal_system"].numpy()
    cs_pred = probs["crystal_system"].argmax(-1).numpy()
    conf = np.zeros((7, 7), dtype=np.int64)
    np.add.at(conf, (cs_true, cs_pred), 1)
    res["crystal_system_confusion"] = conf.tolist()
    per = {}
    for c, name in enumerate(CRYSTAL_SYSTEMS):
        m = cs_true == c
        if not m.any():
            per[name] = {"n": 0}
            continue
        row = {"n": int(m.sum())}
        for h in HEADS:
            row[f"{h}_top1"] = float((probs[h][m].argmax(-1) == targets[h][m]).float().mean())
        per[name] = row
    res["per_crystal_system"] = per
    return res


def training_pool(cfg, progress: bool = False) -> tuple[list, list]:
    """(ids, structures) of a run's training sources as read for training (first ``max_structures``)."""
    from ..train.data import read_sources

    ids, structs = read_sources(cfg.data.train, progress)
    if cfg.data.max_structures is not None:
        ids, structs = ids[:cfg.data.max_structures], structs[:cfg.data.max_structures]
    return ids, structs


def remove_train_duplicates(test, train_ids, train_structs, progress=False):
    """Drop test structures that share an id with, or duplicate, a training structure; returns (kept, n_removed)."""
    from ..data.dedup import cross_duplicates

    ref = set(map(str, train_ids))
    drop = {j for j, i in enumerate(test.ids) if str(i) in ref}
    drop |= {j for _, j in cross_duplicates(train_structs, test.structures, progress=progress)}
    keep = np.array([j for j in range(len(test.ids)) if j not in drop], dtype=np.int64)
    return keep, len(drop)


def evaluate_model(model, cfg, test_specs, *, augmentation="realistic", seed: int = 2024, limit=None,
                   dedup_against_training: bool = True, train_pool=None, cache_dir=None, progress=False,
                   scan_deg=None, log=print) -> dict:
    """Metrics per test source (see the module docs); ``train_pool`` = (ids, structures) to de-duplicate
    against (default: read from the run's config); ``scan_deg`` = (start, end) cuts every test pattern to
    that 2-theta range as a partial measured scan (:meth:`xrdflow.ScanRange.fixed`)."""
    import xrdflow as xf

    from .data import load_labeled

    sim = cfg.make_simulator()
    aug = {"realistic": xf.Augmentation.realistic, "none": xf.Augmentation.none}[augmentation]()
    if dedup_against_training and train_pool is None:
        train_pool = training_pool(cfg, progress=progress)
    out = {}
    for spec in test_specs:
        test = load_labeled(spec, sim, cache_dir=cache_dir, limit=limit, progress=progress)
        removed = 0
        keep = np.arange(len(test.ids))
        if dedup_against_training:
            keep, removed = remove_train_duplicates(test, *train_pool, progress=progress)
        if len(keep) == 0:
            raise ValueError(f"every structure of {spec} duplicates a training structure: nothing to evaluate")
        refl = test.reflections if len(keep) == len(test.ids) else test.reflections.subset(keep)
        y, _ = sim.render(refl, augmentation=None if aug.is_none else aug, seed=seed, epoch=0)
        if scan_deg is not None:
            xf.ScanRange.fixed(*scan_deg).apply(y, sim.two_theta_deg, keep, seed)
        probs = predict(model, y)
        res = score(probs, test.sg[keep], model)
        res["removed_as_training_duplicates"] = int(removed)
        res["n_read"] = len(test.ids)
        res["n_space_groups"] = int(len(np.unique(test.sg[keep])))
        if scan_deg is not None:
            res["scan_deg"] = [float(v) for v in scan_deg]
        out[spec] = res
        log(f"{spec}: {res['n']} structures ({removed} training duplicates removed): top-1 crystal system "
            f"{res['crystal_system']['top1']:.3f}, extinction group {res['extinction_group']['top1']:.3f}, "
            f"space group {res['space_group']['top1']:.3f} (top-5 {res['space_group']['top5']:.3f}), "
            f"space group -> extinction group {res['space_group_as_extinction_group']['top1']:.3f}")
    return out


def evaluate_checkpoint(path, test_specs, **kwargs) -> dict:
    """:func:`evaluate_model` of a checkpoint's classifier."""
    from .train import load_classifier

    model, cfg = load_classifier(path)
    return evaluate_model(model, cfg, test_specs, **kwargs)
