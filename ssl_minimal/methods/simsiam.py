"""SimSiam — "Exploring Simple Siamese Representation Learning".

Xinlei Chen, Kaiming He. CVPR 2021. arXiv:2011.10566.

The idea: two augmented views go through the *same* encoder + projector; a small predictor maps
one view's projection z to p and is asked to match the other view's z, whose gradient is stopped.
No negatives, no momentum encoder, no large batch: the stop-gradient alone prevents the trivial
constant solution (Sec. 4.1, Fig. 2: without it the outputs collapse at once).

Code follows the paper's Fig. 1 and Algorithm 1:
    z1, z2 = f(x1), f(x2);  p1, p2 = h(z1), h(z2)
    L = D(p1, stopgrad(z2)) / 2 + D(p2, stopgrad(z1)) / 2,   D(p, z) = -cos(p, z)         (Eqs. 1-4)
Architecture (Sec. 3): projector = 3 Linear layers, BatchNorm on each (also the output), ReLU on
the hidden ones; predictor = 2 Linear layers with a bottleneck (2048 -> 512 -> 2048), BatchNorm +
ReLU on the hidden one only. CIFAR-10 optimisation (Appendix D): SGD lr 0.03 x B/256, momentum
0.9, weight decay 5e-4. Augmentations: MoCo v2's colour values (jitter 0.4/0.4/0.4/0.1 p=0.8,
grayscale 0.2, flip), here the `simclr` recipe (strength 0.5), which also crops from scale 0.08.
The options `stop_gradient=False` and `predictor=False` are the paper's ablations (Fig. 2, Table 1).
"""

from __future__ import annotations

import torch
from torch import nn

from .. import losses
from ..heads import mlp
from ..method import Method

PROJECTION_DIM = 2048   # Sec. 3: output of the projection MLP
BOTTLENECK_DIM = 512    # Sec. 3: hidden layer of the prediction MLP (bottleneck)


class SimSiam(Method):
    name = "simsiam"
    optimizer = "sgd"
    learning_rate = 0.03   # Appendix D (CIFAR-10): lr = 0.03 x BatchSize / 256
    weight_decay = 5e-4    # Appendix D (CIFAR-10)
    augmentation = "simclr"

    def __init__(self, projection_dim: int = PROJECTION_DIM, bottleneck_dim: int = BOTTLENECK_DIM,
                 stop_gradient: bool = True, predictor: bool = True, **encoder_options):
        super().__init__(**encoder_options)
        self.stop_gradient = stop_gradient
        d = self.encoder.output_dim
        # f = encoder + projector: 3 layers, BN on every layer including the output (last_bias=False:
        # the output BN would cancel a bias anyway).
        self.projector = mlp([d, projection_dim, projection_dim, projection_dim],
                             last_batch_norm=True, last_bias=False)
        # h: 2-layer bottleneck MLP, no BN on its output. Without it (ablation), p = z.
        self.predictor = mlp([projection_dim, bottleneck_dim, projection_dim]) if predictor else nn.Identity()

    def siamese(self, x1: torch.Tensor, x2: torch.Tensor):
        """Two views [B, 3, H, W] -> p1, p2, z1, z2 [B, projection_dim], z's gradient stopped."""
        z1, z2 = self.projector(self.encoder(x1)), self.projector(self.encoder(x2))
        p1, p2 = self.predictor(z1), self.predictor(z2)
        if self.stop_gradient:
            z1, z2 = z1.detach(), z2.detach()   # stopgrad(z): THE line that prevents collapse
        return p1, p2, z1, z2

    def training_step(self, images: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
        x1, x2 = self.augment(images), self.augment(images)
        p1, p2, z1, z2 = self.siamese(x1, x2)
        return losses.negative_cosine(p1, z2) / 2 + losses.negative_cosine(p2, z1) / 2   # Eq. 3
