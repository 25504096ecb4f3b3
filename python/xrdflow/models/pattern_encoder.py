"""1D ResNet encoder of powder patterns (He et al., CVPR 2016, basic blocks, in 1D;
the EACNN paper section 2.4 encodes the pattern with a 1D ResNet)."""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

__all__ = ["PatternEncoderConfig", "PatternEncoder", "BasicBlock1d", "normalize_patterns"]


@dataclass
class PatternEncoderConfig:
    """Settings of :class:`PatternEncoder` (YAML-friendly).

    n_points: input length (the simulator grid the model is trained on).
    stem_channels, stem_kernel, stem_stride: first convolution; stem_pool: extra max-pool stride (1 = none).
    widths, blocks: channels and number of basic blocks of each stage (each stage after the
        first halves the length).
    kernel: kernel size inside blocks; norm: "batch" or "group" (GroupNorm, 8 groups; batch-size
        independent, e.g. for classifiers trained with tiny batches).
    eps: added to (max - min) in the per-pattern normalisation.
    readout: how the last stage becomes one vector. "avg": global average over positions (the
        original encoder; nearly blind to where along 2-theta a feature sits, since convolutions
        are shift-equivariant and the average discards the position). "flatten": the last stage's
        (channels x length) map, flattened, through one linear layer to ``widths[-1]``: every
        position has its own weights, so peak positions (the lattice) stay readable.
    coord_channel: feed the grid coordinate (-1 at the first point, +1 at the last) as a second
        input channel (CoordConv, Liu et al., NeurIPS 2018), so the convolutions themselves can
        respond to where a peak is.
    """

    n_points: int = 4096
    stem_channels: int = 32
    stem_kernel: int = 7
    stem_stride: int = 4
    stem_pool: int = 2
    widths: tuple = (32, 64, 128, 256)
    blocks: tuple = (1, 1, 1, 1)
    kernel: int = 3
    norm: str = "batch"
    eps: float = 1e-8
    readout: str = "avg"
    coord_channel: bool = False

    def __post_init__(self):
        self.widths = tuple(int(w) for w in self.widths)
        self.blocks = tuple(int(b) for b in self.blocks)
        if len(self.widths) == 0 or len(self.widths) != len(self.blocks):
            raise ValueError(f"widths {self.widths} and blocks {self.blocks} need the same, nonzero length")
        if min(self.widths) < 1 or min(self.blocks) < 1:
            raise ValueError("widths and blocks must be positive")
        for name in ("n_points", "stem_channels", "stem_kernel", "stem_stride", "stem_pool", "kernel"):
            v = getattr(self, name)
            if isinstance(v, bool) or int(v) != v or v < 1:
                raise ValueError(f"{name} must be a positive integer, not {v!r}")
        if self.norm not in ("batch", "group"):
            raise ValueError(f"norm must be 'batch' or 'group', not {self.norm!r}")
        if self.readout not in ("avg", "flatten"):
            raise ValueError(f"readout must be 'avg' or 'flatten', not {self.readout!r}")
        if not isinstance(self.coord_channel, bool):
            raise TypeError(f"coord_channel must be true or false, not {self.coord_channel!r}")
        down = self.stem_stride * self.stem_pool * 2 ** (len(self.widths) - 1)
        if self.n_points < down:
            raise ValueError(f"n_points = {self.n_points} is shorter than the total downsampling {down}")

    @property
    def feat_dim(self) -> int:
        return self.widths[-1]

    def final_length(self) -> int:
        """Positions left after the stem, its pool and the strided stages (PyTorch's
        floor((L + 2 pad - kernel) / stride) + 1 for each strided layer)."""
        def out(length, kernel, stride, pad):
            return (length + 2 * pad - kernel) // stride + 1
        length = out(self.n_points, self.stem_kernel, self.stem_stride, self.stem_kernel // 2)
        if self.stem_pool > 1:
            length = out(length, self.stem_pool * 2 - 1, self.stem_pool, self.stem_pool - 1)
        for _ in self.widths[1:]:
            length = out(length, self.kernel, 2, self.kernel // 2)
        return length


def normalize_patterns(y: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """(y - min) / (max - min + eps) per pattern (rows of a (B, N) tensor)."""
    lo = y.amin(dim=-1, keepdim=True)
    hi = y.amax(dim=-1, keepdim=True)
    return (y - lo) / (hi - lo + eps)


def _norm(kind: str, channels: int) -> nn.Module:
    if kind == "batch":
        return nn.BatchNorm1d(channels)
    return nn.GroupNorm(min(8, channels), channels)


class BasicBlock1d(nn.Module):
    """conv-norm-ReLU-conv-norm + shortcut (1x1 conv when shape changes), then ReLU."""

    def __init__(self, c_in: int, c_out: int, stride: int = 1, kernel: int = 3, norm: str = "batch"):
        super().__init__()
        pad = kernel // 2
        self.conv1 = nn.Conv1d(c_in, c_out, kernel, stride=stride, padding=pad, bias=False)
        self.bn1 = _norm(norm, c_out)
        self.conv2 = nn.Conv1d(c_out, c_out, kernel, padding=pad, bias=False)
        self.bn2 = _norm(norm, c_out)
        self.act = nn.ReLU(inplace=True)
        self.shortcut = nn.Identity()
        if stride != 1 or c_in != c_out:
            self.shortcut = nn.Sequential(nn.Conv1d(c_in, c_out, 1, stride=stride, bias=False), _norm(norm, c_out))

    def forward(self, x):
        out = self.act(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.act(out + self.shortcut(x))


class PatternEncoder(nn.Module):
    """(B, n_points) patterns -> (B, feat_dim) features (global average pool of the last stage).

    Each pattern is normalised to [0, 1] by itself, so raw counts, normalised patterns and
    any affine rescaling a*y + b (a > 0) give the same features. NaN/inf raise ValueError.
    A constant pattern becomes all zeros.
    """

    def __init__(self, cfg: PatternEncoderConfig | None = None):
        super().__init__()
        cfg = PatternEncoderConfig() if cfg is None else cfg
        if not isinstance(cfg, PatternEncoderConfig):
            raise TypeError(f"PatternEncoder needs a PatternEncoderConfig, not {type(cfg).__name__}")
        self.cfg = cfg
        stem = [nn.Conv1d(2 if cfg.coord_channel else 1, cfg.stem_channels, cfg.stem_kernel, stride=cfg.stem_stride,
                          padding=cfg.stem_kernel // 2, bias=False),
                _norm(cfg.norm, cfg.stem_channels), nn.ReLU(inplace=True)]
        if cfg.stem_pool > 1:
            stem.append(nn.MaxPool1d(cfg.stem_pool * 2 - 1, stride=cfg.stem_pool, padding=cfg.stem_pool - 1))
        self.stem = nn.Sequential(*stem)
        stages, c = [], cfg.stem_channels
        for s, (w, n) in enumerate(zip(cfg.widths, cfg.blocks)):
            blocks = []
            for b in range(n):
                blocks.append(BasicBlock1d(c, w, stride=2 if (b == 0 and s > 0) else 1,
                                           kernel=cfg.kernel, norm=cfg.norm))
                c = w
            stages.append(nn.Sequential(*blocks))
        self.stages = nn.Sequential(*stages)
        if cfg.readout == "avg":
            self.pool = nn.Sequential(nn.AdaptiveAvgPool1d(1), nn.Flatten(1))
        else:
            self.pool = nn.Sequential(nn.Flatten(1), nn.Linear(c * cfg.final_length(), cfg.feat_dim))
        if cfg.coord_channel:
            self.register_buffer("coord", torch.linspace(-1.0, 1.0, cfg.n_points)[None, None, :], persistent=False)
        self.feat_dim = cfg.feat_dim

    def check_input(self, y) -> torch.Tensor:
        if not isinstance(y, torch.Tensor):
            raise TypeError(f"patterns must be a torch.Tensor of shape (B, {self.cfg.n_points}), "
                            f"not {type(y).__name__}; use torch.from_numpy(Y)")
        if y.ndim == 1:
            raise ValueError(f"patterns must be 2D (B, {self.cfg.n_points}); for one pattern use y[None]")
        if y.ndim != 2 or y.shape[-1] != self.cfg.n_points:
            raise ValueError(f"patterns have shape {tuple(y.shape)}; this encoder takes (B, {self.cfg.n_points}) "
                             "on its training grid: simulate with the same Simulator or interpolate a "
                             "measured pattern onto that 2-theta grid")
        if y.shape[0] == 0:
            raise ValueError("got an empty batch of patterns")
        if not y.is_floating_point():
            y = y.float()
        if not bool(torch.isfinite(y).all()):
            bad = (~torch.isfinite(y)).any(dim=-1).nonzero().flatten()[:5].tolist()
            raise ValueError(f"patterns contain NaN or infinite values (rows {bad}); clean or drop them")
        return y

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        y = self.check_input(y)
        x = normalize_patterns(y.to(self.stem[0].weight.dtype), self.cfg.eps)[:, None, :]
        if self.cfg.coord_channel:
            x = torch.cat([x, self.coord.to(x.dtype).expand(x.shape[0], -1, -1)], dim=1)
        x = self.stages(self.stem(x))
        return self.pool(x)
