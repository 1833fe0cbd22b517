"""InstDisc — "Unsupervised Feature Learning via Non-Parametric Instance Discrimination".

Zhirong Wu, Yuanjun Xiong, Stella X. Yu, Dahua Lin. CVPR 2018. arXiv:1805.01978.

The idea: treat every training image as its own class. A non-parametric softmax compares the
image's 128-d embedding with a *memory bank* holding one embedding per training image, so the
number of "classes" can be huge without a classifier weight per image; noise-contrastive
estimation (NCE) with m sampled noise rows makes each step cost O(m) instead of O(n).

The code follows the paper's Fig. 2 pipeline: backbone -> 128-d linear layer -> L2 norm -> compare
with the bank -> update the bank rows of this batch. Paper hyper-parameters (Sec. 4): tau = 0.07,
m = 4096, embedding 128-d, SGD lr 0.03 (batch 256), momentum 0.9, weight decay 5e-4, 200 epochs.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .. import losses
from ..memory import BANK_MOMENTUM, MemoryBank
from ..method import Method

EMBEDDING_DIM = 128    # Sec. 3.1: "we set the feature dimension to 128"
TEMPERATURE = 0.07     # Sec. 4: tau = 0.07
NUM_NOISE = 4096       # Sec. 4: m = 4096 noise samples for NCE


class InstDisc(Method):
    name = "instdisc"
    learning_rate = 0.03
    weight_decay = 5e-4
    augmentation = "instdisc"

    def __init__(self, num_samples: int, temperature: float = TEMPERATURE, num_noise: int = NUM_NOISE,
                 embedding_dim: int = EMBEDDING_DIM, bank_momentum: float = BANK_MOMENTUM,
                 full_softmax: bool = False, **encoder_options):
        super().__init__(**encoder_options)
        self.temperature = temperature
        self.num_noise = min(num_noise, num_samples - 1)
        self.full_softmax = full_softmax
        # "we replace the classifier layer with a 128-d fully connected layer" (Sec. 3.1)
        self.head = nn.Linear(self.encoder.output_dim, embedding_dim)
        self.memory_bank = MemoryBank(num_samples, embedding_dim, bank_momentum)
        # Z, the softmax normaliser for NCE, estimated once from the first batch (Eq. 8); -1 = not yet.
        self.register_buffer("normalizer", torch.tensor(-1.0))

    def embed(self, images: torch.Tensor) -> torch.Tensor:
        """v = f_theta(x) / ||f_theta(x)||: [B, 128] unit vectors."""
        return F.normalize(self.head(self.encoder(images)), dim=1)

    def training_step(self, images: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
        v = self.embed(self.augment(images))                         # [B, D]
        if self.full_softmax:
            # A copy: the bank update below changes the buffer in place before loss.backward() runs.
            loss = losses.nonparametric_softmax_loss(v, self.memory_bank.bank.clone(), indices, self.temperature)
        else:
            loss = self.nce_step(v, indices)
        # The bank is a buffer: gradients reach the encoder only through v, the current batch.
        self.memory_bank.update(indices, v.detach())
        return loss

    def nce_step(self, v: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
        # m noise rows drawn uniformly (P_n = 1/n). The batch shares them, which turns the scores
        # into one matrix product instead of gathering B x m rows (same expectation, much faster).
        noise = self.memory_bank.sample_noise_indices(self.num_noise)                  # [m]
        positive_scores = (self.memory_bank.bank[indices] * v).sum(dim=1)              # v_i^T v, [B]
        noise_scores = v @ self.memory_bank.bank[noise].t()                            # v_j^T v, [B, m]
        scores = torch.exp(torch.cat([positive_scores[:, None], noise_scores], dim=1) / self.temperature)
        if self.normalizer < 0:
            # Eq. 8: Z ~= n E_j[exp(v_j^T v / tau)], estimated once and then held constant.
            with torch.no_grad():
                self.normalizer.fill_(scores.mean().item() * len(self.memory_bank))
        probabilities = scores / self.normalizer                                       # P(j | v), [B, 1 + m]
        return losses.nce_loss(probabilities[:, 0], probabilities[:, 1:], len(self.memory_bank))
