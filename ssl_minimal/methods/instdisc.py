"""InstDisc — "Unsupervised Feature Learning via Non-Parametric Instance Discrimination".

Zhirong Wu, Yuanjun Xiong, Stella X. Yu, Dahua Lin. CVPR 2018. arXiv:1805.01978.

The idea: treat every training image as its own class. A non-parametric softmax compares the
image's 128-d embedding with a *memory bank* holding one embedding per training image, so the
number of "classes" can be huge without a classifier weight per image; noise-contrastive
estimation (NCE) with m sampled noise rows makes each step cost O(m) instead of O(n).

The code follows the paper's Fig. 2 pipeline: backbone -> 128-d linear layer -> L2 norm -> compare
with the bank -> update the bank rows of this batch. Paper hyper-parameters (Sec. 4.2): tau = 0.07,
m = 4096, embedding 128-d, SGD lr 0.03 (batch 256), momentum 0.9, weight decay 5e-4, 200 epochs.

Two choices differ from the paper, because our runs are 4-15 epochs long, not 200 (both measured
on CIFAR-10 by stepping the method by hand; numbers in BENCHMARKS.md, Sec. 1):

* Z is estimated at every step (Eq. 7 applied to that step's own m noise rows, one Z per image,
  detached so it stays "a constant" as the paper treats it), not once "from initial batches". Taken
  while the bank is random, Z is a few times n; a few steps later the bank holds real embeddings, which
  an untrained network puts at cosine ~0.7 to each other, and the true Z is 1,000x larger (50,000x
  once every row is real). Every noise row then has P(j|v) >> m P_n, the m noise terms of Eq. 6
  dominate (loss 9 -> 2,700, gradient norm 7 -> 250, most of it in the head), the embeddings of a
  batch move together (mean cosine 0.71 -> 0.96 in 4 steps) and the features end worse than at
  initialisation. With Z from the same noise rows, h(i, v) of Eq. 5 is the softmax of the positive
  among itself and the m noise rows whatever n and m P_n are: InfoNCE (CPC and MoCo, lessons 3, 5).
* The bank starts as the untrained network's embeddings of the un-augmented training images
  (`before_training`), not as random unit vectors (`bank_init="random"` is the paper's choice).
  With random rows every positive of the first epoch is a random vector and, with momentum 0.5, each
  row is still half noise after its next visit: a 4-epoch run never recovers (kNN at or below random
  init even with the per-step Z). At 200 epochs neither choice matters much.

`full_softmax=True` computes Eq. 2 exactly over all n rows (as the paper's CIFAR-10 comparison does):
no Z to estimate, and at n <= m + 1 it costs what NCE costs. It is not the default, because with the
two choices above NCE learns as well at our budgets (the same kNN within noise, BENCHMARKS.md).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .. import losses
from ..checks import SSLMinimalError, unknown_name
from ..memory import BANK_MOMENTUM, MemoryBank
from ..method import Method

EMBEDDING_DIM = 128    # Sec. 3.1: "we set the feature dimension to 128"
TEMPERATURE = 0.07     # Sec. 4.2: tau = 0.07
NUM_NOISE = 4096       # Sec. 4.2: m = 4096 noise samples for NCE
BANK_INITS = ("embeddings", "random")   # ours (default) | the paper's random unit vectors (Sec. 3.1)
FILL_BATCH = 256       # images per forward pass when filling the bank: the paper's batch, for BatchNorm


class InstDisc(Method):
    name = "instdisc"
    learning_rate = 0.03
    weight_decay = 5e-4
    augmentation = "instdisc"

    def __init__(self, num_samples: int, temperature: float = TEMPERATURE, num_noise: int = NUM_NOISE,
                 embedding_dim: int = EMBEDDING_DIM, bank_momentum: float = BANK_MOMENTUM,
                 full_softmax: bool = False, bank_init: str = "embeddings", **encoder_options):
        super().__init__(**encoder_options)
        if bank_init not in BANK_INITS:
            raise unknown_name("bank_init", bank_init, BANK_INITS)
        self.temperature = temperature
        self.num_noise = min(num_noise, num_samples - 1)
        self.full_softmax = full_softmax
        self.bank_init = bank_init
        # "we replace the classifier layer with a 128-d fully connected layer" (Sec. 3.1)
        self.head = nn.Linear(self.encoder.output_dim, embedding_dim)
        self.memory_bank = MemoryBank(num_samples, embedding_dim, bank_momentum)

    def embed(self, images: torch.Tensor) -> torch.Tensor:
        """v = f_theta(x) / ||f_theta(x)||: [B, 128] unit vectors."""
        return F.normalize(self.head(self.encoder(images)), dim=1)

    @torch.no_grad()   # the bank is a buffer: it never takes part in a gradient
    def before_training(self, images: torch.Tensor) -> None:
        """Called by `fit` before the first step: v_j <- f_theta(x_j) for every training image x_j
        (un-augmented, all n of them, uint8 [n, 3, H, W]). BatchNorm uses batch statistics, as in
        `training_step`; its running averages are put back, so only the bank changes."""
        if self.bank_init == "random":
            return                                              # Sec. 3.1: rows stay random unit vectors
        if len(images) != len(self.memory_bank):
            raise SSLMinimalError(f"the memory bank has {len(self.memory_bank)} rows but training got "
                                  f"{len(images)} images; build the model with dataset=<the training set>")
        running = {name: buffer.clone() for name, buffer in self.encoder.named_buffers()}
        mode = self.training
        self.train()
        rows = [self.embed(images[start:start + FILL_BATCH].float() / 255)
                for start in range(0, len(images), FILL_BATCH)]           # [n, D] in pieces
        self.train(mode)
        for name, buffer in self.encoder.named_buffers():
            buffer.copy_(running[name])
        self.memory_bank.fill(torch.cat(rows))

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

    @losses.full_precision      # float32 under bf16 autocast too: exp(x / 0.07) magnifies rounding
    def nce_step(self, v: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
        # m noise rows drawn uniformly (P_n = 1/n). The batch shares them, which turns the scores
        # into one matrix product instead of gathering B x m rows (same expectation, much faster).
        noise = self.memory_bank.sample_noise_indices(self.num_noise)                         # [m]
        positive = torch.exp((self.memory_bank.bank[indices] * v).sum(dim=1) / self.temperature)  # exp(v_i^T v / tau), [B]
        noise_scores = torch.exp(v @ self.memory_bank.bank[noise].t() / self.temperature)        # exp(v_j^T v / tau), [B, m]
        # Eq. 7 at every step: Z ~= n E_j[exp(v_j^T v / tau)] ~= (n / m) sum_k exp(v_jk^T v / tau), one per
        # image, held constant (detached) as the paper treats it. See the module docstring for why per step.
        z = normalizer_estimate(noise_scores, len(self.memory_bank)).detach()                   # [B, 1]
        # Eq. 4: P(j | v) = exp(v_j^T v / tau) / Z; Eqs. 5-6 in losses.nce_loss.
        return losses.nce_loss(positive / z[:, 0], noise_scores / z, len(self.memory_bank))


def normalizer_estimate(noise_scores: torch.Tensor, num_samples: int) -> torch.Tensor:
    """Eq. 7's Monte-Carlo estimate of the softmax normaliser, one per image:
    Z_b = (n / m) sum_k exp(v_jk^T v_b / tau). noise_scores: [B, m] exp(v_jk^T v_b / tau); returns [B, 1]."""
    return noise_scores.mean(dim=1, keepdim=True) * num_samples
