"""Symmetric contrastive (CLIP) loss between crystal and pattern embeddings."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

__all__ = ["clip_loss", "MAX_LOGIT_SCALE"]

MAX_LOGIT_SCALE = math.log(100.0)  # CLIP (Radford et al. 2021, sec. 2.5) clips the scale at 100


def clip_loss(crystal: torch.Tensor, pattern: torch.Tensor, logit_scale: torch.Tensor):
    """Symmetric InfoNCE (EACNN eqs. 5-7; CLIP pseudo-code, Radford et al. 2021 fig. 3).

    crystal, pattern: (B, D) embeddings, row i of each from the same structure (they are
    L2-normalised here too, as eq. 6 divides by the norms). logit_scale: scalar tensor
    log(1 / temperature), clamped at log(100).
    logits = exp(logit_scale) * c @ x.T; loss = (CE(logits, I) + CE(logits.T, I)) / 2.

    Returns (loss, stats) with stats floats: loss, acc_crystal_to_pattern,
    acc_pattern_to_crystal, acc (their mean; in-batch top-1 retrieval), temperature, logit_scale.
    """
    if not (isinstance(crystal, torch.Tensor) and isinstance(pattern, torch.Tensor)):
        raise TypeError("clip_loss needs torch tensors for both embeddings")
    if crystal.ndim != 2 or crystal.shape != pattern.shape:
        raise ValueError(f"embeddings must both be (B, D) with the same shape; got {tuple(crystal.shape)} "
                         f"and {tuple(pattern.shape)}")
    if crystal.shape[0] < 2:
        raise ValueError("clip_loss needs a batch of at least 2 pairs (the other pairs are the negatives)")
    if not isinstance(logit_scale, torch.Tensor):
        logit_scale = torch.as_tensor(float(logit_scale), dtype=crystal.dtype, device=crystal.device)
    c = F.normalize(crystal, dim=-1)
    x = F.normalize(pattern, dim=-1)
    scale = logit_scale.clamp(max=MAX_LOGIT_SCALE).exp()
    logits = scale * c @ x.T  # (B, B): crystal i vs pattern j
    target = torch.arange(logits.shape[0], device=logits.device)
    loss_c2x = F.cross_entropy(logits, target)
    loss_x2c = F.cross_entropy(logits.T, target)
    loss = 0.5 * (loss_c2x + loss_x2c)
    with torch.no_grad():
        acc_c2x = (logits.argmax(dim=1) == target).float().mean().item()
        acc_x2c = (logits.argmax(dim=0) == target).float().mean().item()
        stats = {
            "loss": float(loss.detach()),
            "acc_crystal_to_pattern": acc_c2x,
            "acc_pattern_to_crystal": acc_x2c,
            "acc": 0.5 * (acc_c2x + acc_x2c),
            "temperature": float(1.0 / scale),
            "logit_scale": float(logit_scale.detach()),
        }
    return loss, stats
