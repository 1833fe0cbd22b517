"""InvaSpread — "Unsupervised Embedding Learning via Invariant and Spreading Instance Feature".

Mang Ye, Xu Zhang, Pong C. Yuen, Shih-Fu Chang. CVPR 2019. arXiv:1904.03436.

The idea: drop the memory bank. Compute the embeddings of two augmentations of every image in
the batch with the *current* network (end to end, one shared "siamese" encoder), pull the two
views of an image together (invariance) and push every other sample of the batch away
(spreading). Negatives are now up to date, but there are only 2B - 2 of them per anchor.

Code follows the paper's Fig. 2: encoder -> 128-d linear embedding -> L2 norm -> loss over the
batch. Paper hyper-parameters (Sec. 4.1, CIFAR-10): tau = 0.1, 128-d embedding, batch 128,
SGD lr 0.03 with momentum 0.9 and weight decay 5e-4.
"""

from __future__ import annotations

import torch
from torch import nn

from .. import distributed, losses
from ..method import Method

EMBEDDING_DIM = 128   # Sec. 4.1: 128-d embedding
TEMPERATURE = 0.1     # Sec. 4.1: tau = 0.1


class InvaSpread(Method):
    name = "invaspread"
    learning_rate = 0.03
    weight_decay = 5e-4
    augmentation = "invaspread"

    def __init__(self, temperature: float = TEMPERATURE, embedding_dim: int = EMBEDDING_DIM,
                 **encoder_options):
        super().__init__(**encoder_options)
        self.temperature = temperature
        self.head = nn.Linear(self.encoder.output_dim, embedding_dim)

    def training_step(self, images: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
        x1, x2 = self.augment(images), self.augment(images)   # two views of each image, [B, 3, H, W]
        z = self.head(self.encoder(torch.cat([x1, x2])))      # one forward pass for both views, [2B, D]
        z1, z2 = z.chunk(2)
        # With several processes the negatives are the whole global batch (a no-op in one process).
        z1, z2 = distributed.gather_with_gradient(z1), distributed.gather_with_gradient(z2)
        return losses.invariance_spreading_loss(z1, z2, self.temperature)
