"""SimCLR — "A Simple Framework for Contrastive Learning of Visual Representations".

Ting Chen, Simon Kornblith, Mohammad Norouzi, Geoffrey Hinton. ICML 2020. arXiv:2002.05709.

The idea: no memory bank, no queue, no momentum encoder. Two strong random augmentations of each
image, one shared encoder f and a small MLP projection head g, and the other 2(N - 1) views of a
large batch as negatives (NT-Xent). What matters, the paper shows, is the composition of
augmentations (crop + colour distortion, Fig. 5), the nonlinear projection head (Fig. 8) and
large batches / long training (Fig. 9).

The code follows Algorithm 1: x -> two views -> h = f(x) -> z = g(h) -> NT-Xent(z_1, z_2).
The head is discarded after training: evaluation uses h (`self.encoder`), as in the paper.
Several processes: the negatives come from the global batch (`distributed.gather_with_gradient`)
and the paper's "Global BN" (Sec. 2.2: BN mean and variance aggregated over all devices, so that
positives cannot be told apart by per-device statistics) is `fit(..., sync_batch_norm=True)`.
Hyper-parameters: LARS, lr = 0.3 x BatchSize / 256 (Sec. B.1), weight decay 1e-6, tau = 0.5 on
CIFAR-10 (Appendix B.9), 128-d output of a 2-layer MLP whose hidden size is the feature size.
"""

from __future__ import annotations

import torch
from torch import nn

from .. import distributed, losses
from ..checks import unknown_name
from ..heads import mlp
from ..method import Method

TEMPERATURE = 0.5       # Appendix B.9 (CIFAR-10): tau = 0.5
PROJECTION_DIM = 128    # Sec. 2 / Fig. 8: z is 128-d
PROJECTIONS = ("none", "linear", "mlp")   # Fig. 8's ablation: g = identity, linear, or 1 hidden layer + ReLU


class SimCLR(Method):
    name = "simclr_v1"
    optimizer = "lars"
    learning_rate = 0.3     # Sec. B.1: lr = 0.3 x BatchSize / 256 with LARS
    weight_decay = 1e-6     # Sec. B.1: weight decay 1e-6
    augmentation = "simclr"
    head_layers = 2         # g(h) = W2 ReLU(BN(W1 h)); SimCLR v2 uses 3

    def __init__(self, temperature: float = TEMPERATURE, projection: str = "mlp",
                 projection_dim: int = PROJECTION_DIM, **encoder_options):
        super().__init__(**encoder_options)
        if projection not in PROJECTIONS:
            raise unknown_name("projection head", projection, PROJECTIONS)
        self.temperature, self.projection = temperature, projection
        features = self.encoder.output_dim
        if projection == "none":
            self.head = nn.Identity()                           # z = h
        elif projection == "linear":
            self.head = mlp([features, projection_dim])         # z = W h
        else:
            self.head = mlp([features] * self.head_layers + [projection_dim])   # hidden size = feature size

    def training_step(self, images: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
        x1, x2 = self.augment(images), self.augment(images)    # t ~ T, t' ~ T: [B, 3, H, W] each
        h = self.encoder(torch.cat([x1, x2]))                  # representations, [2B, D]
        z1, z2 = self.head(h).chunk(2)                         # projections, [B, 128] each
        # Several processes: the negatives are the 2N views of the whole global batch (Sec. 2.2,
        # "Training with large batch size"); a no-op in one process.
        z1, z2 = distributed.gather_with_gradient(z1), distributed.gather_with_gradient(z2)   # [N = W*B, 128]
        return losses.nt_xent(z1, z2, self.temperature)        # Eq. 1, over the 2N views
