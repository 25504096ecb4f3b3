"""The classifier network: the contrastive model's 1D-ResNet pattern encoder plus three heads.

Park et al. (IUCrJ 4, 486, 2017) train separate CNNs for crystal system, extinction group and
space group; here one encoder (:class:`xrdflow.models.PatternEncoder`, the pattern tower of the
contrastive model) is shared by three linear heads trained with a weighted sum of cross entropies.
"""
from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from ..data import labels as labels_mod
from ..models import PatternEncoder
from .config import HEADS, ClassifierModelConfig

__all__ = ["SpaceGroupClassifier", "head_sizes", "label_tables", "topk_accuracy"]


def head_sizes(scheme: str = "laue") -> dict:
    """Number of classes of each head: 7 crystal systems, the extinction groups of ``scheme``, 230."""
    return {"crystal_system": len(labels_mod.CRYSTAL_SYSTEMS),
            "extinction_group": labels_mod.n_extinction_groups(scheme),
            "space_group": 230}


def label_tables(scheme: str = "laue") -> dict:
    """Per space group (index sg - 1): its crystal-system index and extinction-group id (int64 tensors)."""
    rows = [labels_mod.labels_for(sg, scheme) for sg in range(1, 231)]
    return {h: torch.tensor([r[h] for r in rows], dtype=torch.int64) for h in ("crystal_system", "extinction_group")}


class SpaceGroupClassifier(nn.Module):
    """(B, n_points) patterns -> logits of the three heads.

    ``forward(Y)`` returns ``{"crystal_system": (B, 7), "extinction_group": (B, n_eg),
    "space_group": (B, 230)}``; space-group class ``c`` is group number ``c + 1``.  The
    encoder normalises each pattern itself, so raw counts are valid input.
    """

    def __init__(self, cfg: ClassifierModelConfig | None = None):
        super().__init__()
        cfg = ClassifierModelConfig() if cfg is None else cfg
        if not isinstance(cfg, ClassifierModelConfig):
            raise TypeError(f"SpaceGroupClassifier needs a ClassifierModelConfig, not {type(cfg).__name__}")
        self.cfg = cfg
        self.encoder = PatternEncoder(cfg.pattern)
        self.dropout = nn.Dropout(cfg.dropout)
        sizes = head_sizes(cfg.scheme)
        self.heads = nn.ModuleDict({h: nn.Linear(self.encoder.feat_dim, sizes[h]) for h in HEADS})
        tables = label_tables(cfg.scheme)
        self.register_buffer("sg_to_cs", tables["crystal_system"], persistent=False)
        self.register_buffer("sg_to_eg", tables["extinction_group"], persistent=False)

    @property
    def n_points(self) -> int:
        return self.cfg.pattern.n_points

    def forward(self, y: torch.Tensor) -> dict:
        z = self.dropout(self.encoder(y))
        return {h: head(z) for h, head in self.heads.items()}

    def loss(self, logits: dict, targets: dict) -> tuple[torch.Tensor, dict]:
        """Weighted sum of the three cross entropies; ``targets`` as :meth:`targets_from_sg` gives them."""
        total, parts = 0.0, {}
        for h, w in zip(HEADS, self.cfg.loss_weights):
            ce = F.cross_entropy(logits[h].float(), targets[h], label_smoothing=self.cfg.label_smoothing)
            parts[h] = ce
            if w:
                total = total + w * ce
        return total, parts

    def targets_from_sg(self, sg: torch.Tensor) -> dict:
        """Class indices of every head from space-group numbers (1..230)."""
        sg = sg.to(self.sg_to_cs.device).long()
        if sg.numel() and (int(sg.min()) < 1 or int(sg.max()) > 230):
            raise ValueError("space-group numbers must be in 1..230")
        i = sg - 1
        return {"crystal_system": self.sg_to_cs[i], "extinction_group": self.sg_to_eg[i], "space_group": i}

    @torch.no_grad()
    def predict_proba(self, y: torch.Tensor) -> dict:
        """Softmax probabilities of every head (eval mode is the caller's business)."""
        return {h: torch.softmax(v.float(), dim=-1) for h, v in self.forward(y).items()}

    def load_contrastive_encoder(self, path) -> None:
        """Copy the pattern encoder of a contrastive checkpoint (``xrdflow train``, or ``pretrained:NAME``)
        into this model."""
        from ..pretrained import resolve
        from ..train.checkpoint import read_checkpoint
        from ..train.config import config_from_dict

        path = resolve(path)
        ckpt = read_checkpoint(path, map_location="cpu")
        other = config_from_dict(ckpt["config"]).model.pattern
        if other != self.cfg.pattern:
            raise ValueError(f"the contrastive checkpoint {path} has pattern encoder {other}, this classifier "
                             f"{self.cfg.pattern}; use the same model.pattern settings")
        prefix = "pattern_encoder."
        state = {k[len(prefix):]: v for k, v in ckpt["model"].items() if k.startswith(prefix)}
        self.encoder.load_state_dict(state)


@torch.no_grad()
def topk_accuracy(logits_or_probs: torch.Tensor, target: torch.Tensor, ks=(1, 3, 5)) -> dict:
    """Fraction of rows whose target is among the k highest scores, for each k."""
    k_max = min(max(ks), logits_or_probs.shape[-1])
    top = logits_or_probs.topk(k_max, dim=-1).indices
    hit = top == target[:, None]
    return {k: float(hit[:, :k].any(dim=1).float().mean()) if len(target) else float("nan") for k in ks}
