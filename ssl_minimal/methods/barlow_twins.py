"""Barlow Twins — "Barlow Twins: Self-Supervised Learning via Redundancy Reduction".

Jure Zbontar, Li Jing, Ishan Misra, Yann LeCun, Stéphane Deny. ICML 2021. arXiv:2103.03230.

The idea: make the cross-correlation matrix C between the (batch-normalised) embeddings of two
views as close to the identity as possible. The diagonal C_ii -> 1 makes the embedding invariant to
the augmentations; the off-diagonal C_ij -> 0 decorrelates the dimensions, so they cannot all carry
the same information — which is what rules out collapse, with no negatives, no predictor, no
stop-gradient and no momentum encoder.

Code follows the paper's Fig. 1 and Algorithm 1:
    z_A, z_B = f(y_A), f(y_B);   C = BN(z_A)^T BN(z_B) / N                         [D, D]
    L = sum_i (1 - C_ii)^2 + lambda sum_i sum_{j != i} C_ij^2                      (Eq. 1)
Paper values (Sec. 4): projector = 3 Linear layers of 8192 units, BN + ReLU after the first two;
lambda = 5e-3; LARS, lr 0.2 x B/256 for the weights, weight decay 1.5e-6; BYOL's augmentations.
Our defaults: D = 2048 (8192-wide layers are slow on a CPU; the paper's ablation of the projector
dimension shows accuracy dropping gradually, not collapsing, for smaller D) with the paper's
lambda = 5e-3. One learning rate for all parameters: the paper's separate bias lr (0.0048) is not used; biases and BN parameters get no
weight decay and no LARS adaptation instead.
"""

from __future__ import annotations

import torch

from .. import augmentations, distributed, losses
from ..heads import mlp
from ..method import Method

PROJECTION_DIM = 2048   # paper: 8192 (Sec. 4); smaller here for CPU training
LAMBDA = 5e-3           # Sec. 4: lambda = 5e-3 (the paper's loss name `lambd` in code)


class BarlowTwins(Method):
    name = "barlow_twins"
    optimizer = "lars"
    learning_rate = 0.2     # Sec. 4: LARS, lr 0.2 x BatchSize / 256 (weights)
    weight_decay = 1.5e-6   # Sec. 4
    augmentation = "byol_view1"

    def __init__(self, projection_dim: int = PROJECTION_DIM, lambd: float = LAMBDA, image_size: int = 32,
                 **encoder_options):
        super().__init__(image_size=image_size, **encoder_options)
        self.augment_prime = augmentations.recipe("byol_view2", image_size)   # BYOL's asymmetric pair
        self.lambd = lambd
        d = projection_dim
        self.projector = mlp([self.encoder.output_dim, d, d, d])   # BN + ReLU after the first two layers

    def embed(self, images: torch.Tensor) -> torch.Tensor:
        """Embedding z = projector(encoder(images)), [B, D]."""
        return self.projector(self.encoder(images))

    def training_step(self, images: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
        z_a, z_b = self.embed(self.augment(images)), self.embed(self.augment_prime(images))   # [B, D] each
        # Several processes: C and the batch normalisation inside the loss span the global batch, as
        # the official code's all_reduce of C does; a no-op in one process.
        z_a, z_b = distributed.gather_with_gradient(z_a), distributed.gather_with_gradient(z_b)   # [W*B, D]
        return losses.barlow_twins_loss(z_a, z_b, self.lambd)                     # Eq. 1
