"""Momentum (EMA) encoders: a slowly moving copy of a network, used by MoCo, BYOL and DINO.

MoCo (He et al. 2019, arXiv 1911.05722, Eq. 2) calls it the key encoder, BYOL (Grill et al. 2020,
arXiv 2006.07733, Sec. 3.1) the target network, DINO the teacher. The rule is the same everywhere:

    theta_target <- m * theta_target + (1 - m) * theta_online

The copy never receives gradients (its parameters have requires_grad=False), so the only way it
changes is this update, called by the method after each optimiser step.
"""

from __future__ import annotations

import copy
import math

import torch
from torch import nn


def momentum_copy(network: nn.Module) -> nn.Module:
    """A deep copy of `network` that starts equal to it and receives no gradients."""
    target = copy.deepcopy(network)
    for parameter in target.parameters():
        parameter.requires_grad_(False)
    return target


@torch.no_grad()
def momentum_update(target: nn.Module, online: nn.Module, m: float) -> None:
    """theta_target <- m * theta_target + (1 - m) * theta_online, parameter by parameter.

    Buffers (BatchNorm running statistics) are copied from the online network, as in the official
    MoCo and BYOL code: they are statistics, not weights to average.
    """
    for target_parameter, online_parameter in zip(target.parameters(), online.parameters()):
        target_parameter.mul_(m).add_(online_parameter.detach(), alpha=1 - m)
    for target_buffer, online_buffer in zip(target.buffers(), online.buffers()):
        target_buffer.copy_(online_buffer)


def cosine_momentum(base_momentum: float, progress: float, final_momentum: float = 1.0) -> float:
    """BYOL's schedule (Sec. 3.2): tau = 1 - (1 - tau_base) * (cos(pi k / K) + 1) / 2 at progress k / K,
    rising from tau_base at the start to `final_momentum` (1) at the end. DINO uses it too."""
    return final_momentum - (final_momentum - base_momentum) * (math.cos(math.pi * progress) + 1) / 2
