"""Learning-rate schedule: linear warmup, then cosine decay.

lr(step) = lr_peak * factor(step), with ``step`` the number of optimizer
steps already taken (0 for the first step):

* warmup, ``step < warmup_steps``: factor = (step + 1) / warmup_steps (the
  first step already uses a non-zero rate; Goyal et al. 2017, arXiv:1706.02677);
* decay: with p = (step - warmup_steps) / max(1, total_steps - warmup_steps)
  clipped to [0, 1], factor = r + (1 - r) (1 + cos(pi p)) / 2, r = min_lr_ratio
  (SGDR, Loshchilov & Hutter 2017, arXiv:1608.03983, without restarts).

:class:`WarmupCosine` is a plain callable (its state is three numbers), used
with :class:`torch.optim.lr_scheduler.LambdaLR`, whose ``state_dict`` then
holds only numbers and loads with ``torch.load(weights_only=True)``.
"""
from __future__ import annotations

import math

__all__ = ["WarmupCosine", "make_scheduler"]


class WarmupCosine:
    """``factor(step)`` of the module docstring."""

    def __init__(self, warmup_steps: int, total_steps: int, min_lr_ratio: float = 0.0):
        if isinstance(warmup_steps, bool) or not isinstance(warmup_steps, int) or warmup_steps < 0:
            raise ValueError(f"warmup_steps must be an integer >= 0, got {warmup_steps!r}")
        if isinstance(total_steps, bool) or not isinstance(total_steps, int) or total_steps < 1:
            raise ValueError(f"total_steps must be an integer >= 1, got {total_steps!r}")
        if not 0.0 <= float(min_lr_ratio) <= 1.0:
            raise ValueError(f"min_lr_ratio must be in [0, 1], got {min_lr_ratio!r}")
        self.warmup_steps = warmup_steps
        self.total_steps = total_steps
        self.min_lr_ratio = float(min_lr_ratio)

    def __call__(self, step: int) -> float:
        if step < self.warmup_steps:
            return (step + 1) / self.warmup_steps
        span = max(1, self.total_steps - self.warmup_steps)
        p = min(1.0, max(0.0, (step - self.warmup_steps) / span))
        r = self.min_lr_ratio
        return r + (1.0 - r) * 0.5 * (1.0 + math.cos(math.pi * p))

    def __repr__(self) -> str:
        return (f"WarmupCosine(warmup_steps={self.warmup_steps}, total_steps={self.total_steps}, "
                f"min_lr_ratio={self.min_lr_ratio})")


def make_scheduler(optimizer, warmup_steps: int, total_steps: int, min_lr_ratio: float = 0.0):
    """A LambdaLR applying :class:`WarmupCosine` to every parameter group of ``optimizer``."""
    import torch

    return torch.optim.lr_scheduler.LambdaLR(optimizer, WarmupCosine(warmup_steps, total_steps, min_lr_ratio))
