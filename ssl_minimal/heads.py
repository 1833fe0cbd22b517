"""Projection and prediction heads, declared as a list of layer sizes.

`mlp([512, 2048, 128])` is Linear(512, 2048) -> BatchNorm -> ReLU -> Linear(2048, 128): hidden layers
get BatchNorm + ReLU, the last layer is a plain Linear unless `last_batch_norm=True` (SimSiam and
Barlow Twins put a BatchNorm after the last layer too). Every method builds its heads with this one
function, so the differences between papers are visible as arguments, not as copied code.

`norm=` picks the hidden layers' normalisation: "batch" (default), "group" (GroupNorm, no batch
statistics), "group_ws" (GroupNorm, and weight standardisation in every Linear layer: BYOL without
batch statistics, Richemond et al. 2020, arXiv 2010.10241) or "none". `activation=` picks the hidden
layers' non-linearity: "relu" (default) or "gelu" (DINO's head on a ViT, like the ViT's own MLPs).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .checks import unknown_name

NORMS = ("batch", "group", "group_ws", "none")
ACTIVATIONS = {"relu": lambda: nn.ReLU(inplace=True), "gelu": nn.GELU}
GROUPS = 32   # GroupNorm's default number of groups (Wu & He 2018, "Group Normalization", arXiv 1803.08494)
# In an MLP a group has no spatial positions: a group of 1 channel normalises one number (its output is
# the constant beta) and a group of 2 gives +-1. Hidden layers keep at least 16 channels per group, the
# best fixed group size in Wu & He 2018 (Table 3); 4096 units still get 32 groups.
MLP_CHANNELS_PER_GROUP = 16


def group_norm(channels: int, min_channels_per_group: int = 1) -> nn.GroupNorm:
    """GroupNorm with 32 groups (fewer when `channels` is not a multiple of 32, or when a group would
    get fewer than `min_channels_per_group` channels)."""
    return nn.GroupNorm(math.gcd(GROUPS, max(1, channels // min_channels_per_group)), channels)


class WSLinear(nn.Linear):
    """Linear layer with weight standardisation (Qiao et al. 2019, arXiv 1903.10520): each output unit's
    weights are rescaled to mean 0 and std 1 / sqrt(fan_in) before use. Zero-mean weights cancel the
    common positive mean of post-ReLU inputs, so every output starts centred over the data, as after
    BatchNorm (the "mean shift" of unnormalised ReLU networks, Brock et al. 2021, arXiv 2101.08692)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self.weight                                                    # [out, in]
        w = (w - w.mean(dim=1, keepdim=True)) / (w.std(dim=1, keepdim=True, unbiased=False) + 1e-5)
        return F.linear(x, w / math.sqrt(w.shape[1]), self.bias)


def mlp(sizes: list[int], batch_norm: bool = True, last_batch_norm: bool = False,
        last_bias: bool = True, norm: str | None = None, activation: str = "relu") -> nn.Sequential:
    """Multi-layer perceptron with sizes [input, hidden..., output].

    Hidden layers: Linear -> BatchNorm1d (if `batch_norm`) -> ReLU (or GELU with activation="gelu").
    Last layer: Linear (with bias if `last_bias`) -> BatchNorm1d (if `last_batch_norm`).
    norm: "batch", "group", "group_ws" or "none" for the hidden layers ("group_ws" also standardises the
        weights of every Linear, see WSLinear); None means "batch" if `batch_norm` else "none".
    `mlp([d_in, d_out])` is a single Linear layer (the "linear projection head" of SimCLR's ablation).
    """
    if len(sizes) < 2:
        raise ValueError(f"mlp needs at least [input, output] sizes, got {sizes}")
    norm = norm or ("batch" if batch_norm else "none")
    if norm not in NORMS:
        raise unknown_name("norm", norm, NORMS)
    if activation not in ACTIVATIONS:
        raise unknown_name("activation", activation, ACTIVATIONS)
    linear = WSLinear if norm == "group_ws" else nn.Linear
    layers: list[nn.Module] = []
    for fan_in, fan_out in zip(sizes[:-2], sizes[1:-1]):
        layers.append(linear(fan_in, fan_out, bias=norm == "none"))
        if norm == "batch":
            layers.append(nn.BatchNorm1d(fan_out))
        elif norm in ("group", "group_ws"):
            layers.append(group_norm(fan_out, MLP_CHANNELS_PER_GROUP))
        layers.append(ACTIVATIONS[activation]())
    layers.append(linear(sizes[-2], sizes[-1], bias=last_bias))
    if last_batch_norm:
        layers.append(nn.BatchNorm1d(sizes[-1], affine=False))
    return nn.Sequential(*layers)
