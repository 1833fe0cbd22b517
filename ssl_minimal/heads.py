"""Projection and prediction heads, declared as a list of layer sizes.

`mlp([512, 2048, 128])` is Linear(512, 2048) -> BatchNorm -> ReLU -> Linear(2048, 128): hidden layers
get BatchNorm + ReLU, the last layer is a plain Linear unless `last_batch_norm=True` (SimSiam and
Barlow Twins put a BatchNorm after the last layer too). Every method builds its heads with this one
function, so the differences between papers are visible as arguments, not as copied code.
"""

from __future__ import annotations

from torch import nn


def mlp(sizes: list[int], batch_norm: bool = True, last_batch_norm: bool = False,
        last_bias: bool = True) -> nn.Sequential:
    """Multi-layer perceptron with sizes [input, hidden..., output].

    Hidden layers: Linear -> BatchNorm1d (if `batch_norm`) -> ReLU.
    Last layer: Linear (with bias if `last_bias`) -> BatchNorm1d (if `last_batch_norm`).
    `mlp([d_in, d_out])` is a single Linear layer (the "linear projection head" of SimCLR's ablation).
    """
    if len(sizes) < 2:
        raise ValueError(f"mlp needs at least [input, output] sizes, got {sizes}")
    layers: list[nn.Module] = []
    for fan_in, fan_out in zip(sizes[:-2], sizes[1:-1]):
        layers.append(nn.Linear(fan_in, fan_out, bias=not batch_norm))
        if batch_norm:
            layers.append(nn.BatchNorm1d(fan_out))
        layers.append(nn.ReLU(inplace=True))
    layers.append(nn.Linear(sizes[-2], sizes[-1], bias=last_bias))
    if last_batch_norm:
        layers.append(nn.BatchNorm1d(sizes[-1], affine=False))
    return nn.Sequential(*layers)
