"""State that outlives one batch: the memory bank of InstDisc (and CMC) and the queue of MoCo (and SwAV).

Kept as a module with buffers, so it moves with `.to(device)`, is saved in checkpoints with the
model's state dict, and never receives gradients.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from . import distributed
from .checks import SSLMinimalError

# Official InstDisc code (github.com/zhirongw/lemniscate.pytorch) updates bank rows with momentum 0.5.
BANK_MOMENTUM = 0.5


class MemoryBank(nn.Module):
    """One L2-normalised D-dimensional entry v_i per training image (Wu et al. 2018, Sec. 3.1).

    Rows start as random unit vectors (the paper's initialisation; `fill` replaces them all at once,
    e.g. with the untrained network's embeddings). After each step the entries of the images in the
    batch move towards their new embeddings (the paper's proximal idea, Sec. 3.3, as the official
    code does it):

        v_i <- normalize(momentum * v_i + (1 - momentum) * f_i)
    """

    def __init__(self, num_samples: int, dim: int, momentum: float = BANK_MOMENTUM):
        super().__init__()
        self.momentum = momentum
        self.register_buffer("bank", F.normalize(torch.randn(num_samples, dim), dim=1))  # [n, D]

    def __len__(self) -> int:
        return self.bank.shape[0]

    @torch.no_grad()
    def update(self, indices: torch.Tensor, features: torch.Tensor) -> None:
        """v_i <- normalize(m v_i + (1 - m) f_i) for the rows `indices` [B]; features [B, D].
        With several processes every process applies the rows of the whole global batch."""
        indices, features = distributed.gather(indices), distributed.gather(features.to(self.bank.dtype))
        mixed = self.momentum * self.bank[indices] + (1 - self.momentum) * features
        self.bank[indices] = F.normalize(mixed, dim=1)

    @torch.no_grad()
    def fill(self, features: torch.Tensor) -> None:
        """v_j <- normalize(f_j) for every row j; features [n, D], one row per training image."""
        if features.shape != self.bank.shape:
            raise SSLMinimalError(f"fill needs features of shape {list(self.bank.shape)} (one row per bank "
                                  f"entry), got {list(features.shape)}")
        self.bank.copy_(F.normalize(features.to(self.bank.dtype), dim=1))

    def sample_noise_indices(self, num_noise: int) -> torch.Tensor:
        """m indices drawn uniformly from all n rows (the noise distribution P_n = 1/n). [m]"""
        return torch.randint(len(self), (num_noise,), device=self.bank.device)


class Queue(nn.Module):
    """A first-in first-out queue of the last K embeddings (MoCo, He et al. 2019, Sec. 3.2; SwAV's
    small-batch queue). `enqueue(keys)` overwrites the oldest rows; `ptr` is where the next batch goes.

    The queue starts full of random unit vectors (as MoCo's official code), so it can be used as
    negatives from the first step. Kept as buffers: saved in checkpoints, never given gradients.
    """

    def __init__(self, size: int, dim: int):
        super().__init__()
        self.register_buffer("keys", F.normalize(torch.randn(size, dim), dim=1))   # [K, D]
        self.register_buffer("ptr", torch.zeros((), dtype=torch.long))

    def __len__(self) -> int:
        return self.keys.shape[0]

    @torch.no_grad()
    def enqueue(self, keys: torch.Tensor) -> None:
        """Replace the B oldest entries with `keys` [B, D] (wrapping around the end of the queue).
        With several processes the keys of all processes are enqueued, in rank order, on every process."""
        keys = distributed.gather(keys)
        batch_size = keys.shape[0]
        if batch_size > len(self):
            raise ValueError(f"cannot enqueue {batch_size} keys into a queue of {len(self)}: "
                             f"use a queue at least as large as the batch")
        rows = (self.ptr + torch.arange(batch_size, device=keys.device)) % len(self)
        self.keys[rows] = keys.detach().to(self.keys.dtype)
        self.ptr.copy_((self.ptr + batch_size) % len(self))
