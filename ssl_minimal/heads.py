"""Projection and prediction heads, declared as a list of layer sizes.

`mlp([512, 2048, 128])` is Linear(512, 2048) -> BatchNorm -> ReLU -> Linear(2048, 128): hidden layers
get BatchNorm + ReLU, the last layer is a plain Linear unless `last_batch_norm=True` (SimSiam and
Barlow Twins put a BatchNorm after the last layer too). Every method builds its heads with this one
function, so the differences between papers are visible as arguments, not as copied code.

`norm=` picks the hidden layers' normalisation: "batch" (default), "group" (GroupNorm, no batch
statistics: BYOL without BatchNorm, Richemond et al. 2020, arXiv 2010.10241) or "none".
"""

from __future__ import annotations

import math

from torch import nn

from .checks import unknown_name

NORMS = ("batch", "group", "none")
GROUPS = 32   # GroupNorm's default number of groups (Wu & He 2018, "Group Normalization", arXiv 1803.08494)


def group_norm(channels: int) -> nn.GroupNorm:
    """GroupNorm with 32 groups (fewer when `channels` is not a multiple of 32)."""
    return nn.GroupNorm(math.gcd(GROUPS, channels), channels)


def mlp(sizes: list[int], batch_norm: bool = True, last_batch_norm: bool = False,
        last_bias: bool = True, norm: str | None = None) -> nn.Sequential:
    """Multi-layer perceptron with sizes [input, hidden..., output].

    Hidden layers: Linear -> BatchNorm1d (if `batch_norm`) -> ReLU.
    Last layer: Linear (with bias if `last_bias`) -> BatchNorm1d (if `last_batch_norm`).
    norm: "batch", "group" or "none" for the hidden layers; None means "batch" if `batch_norm` else "none".
    `mlp([d_in, d_out])` is a single Linear layer (the "linear projection head" of SimCLR's ablation).
    """
    if len(sizes) < 2:
        raise ValueError(f"mlp needs at least [input, output] sizes, got {sizes}")
    norm = norm or ("batch" if batch_norm else "none")
    if norm not in NORMS:
        raise unknown_name("norm", norm, NORMS)
    layers: list[nn.Module] = []
    for fan_in, fan_out in zip(sizes[:-2], sizes[1:-1]):
        layers.append(nn.Linear(fan_in, fan_out, bias=norm == "none"))
        if norm == "batch":
            layers.append(nn.BatchNorm1d(fan_out))
        elif norm == "group":
            layers.append(group_norm(fan_out))
        layers.append(nn.ReLU(inplace=True))
    layers.append(nn.Linear(sizes[-2], sizes[-1], bias=last_bias))
    if last_batch_norm:
        layers.append(nn.BatchNorm1d(sizes[-1], affine=False))
    return nn.Sequential(*layers)
