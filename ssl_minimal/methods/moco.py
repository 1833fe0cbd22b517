"""MoCo — "Momentum Contrast for Unsupervised Visual Representation Learning" (v1) and
"Improved Baselines with Momentum Contrastive Learning" (v2).

v1: Kaiming He, Haoqi Fan, Yuxin Wu, Saining Xie, Ross Girshick. CVPR 2020. arXiv:1911.05722.
v2: Xinlei Chen, Haoqi Fan, Ross Girshick, Kaiming He. 2020. arXiv:2003.04297.

The idea: contrastive learning as a dictionary look-up. The dictionary is a *queue* of the keys of
the last K images, so it can be much larger than a batch (unlike InvaSpread/SimCLR), and the keys
come from a *momentum encoder*, a slowly moving average of the query encoder, so the keys in the
queue stay consistent with each other (unlike InstDisc's memory bank, whose rows were written by
many different past networks).

The code follows the paper's Algorithm 1 line by line: two views -> q = f_q(x_q), k = f_k(x_k)
(no gradient) -> logits [q.k+, q.queue] / tau -> cross-entropy with label 0 -> SGD step on f_q ->
f_k <- m f_k + (1 - m) f_q -> enqueue k, dequeue the oldest.

The paper's Fig. 2/3 ablation compares three dictionaries with the same InfoNCE loss, and so does
`dictionary=`: "queue" (MoCo, Fig. 2c), "end_to_end" (Fig. 2a: keys from the query encoder itself,
with gradient; the dictionary is the current batch, K = B - 1 negatives, as InvaSpread/SimCLR) and
"memory_bank" (Fig. 2b: InstDisc's bank, one row per image moved towards the image's latest q with
momentum; the positive is the image's own row, the negatives are K rows drawn at random).

Shuffling BN (Sec. 3.3): with BatchNorm, the query and its positive key computed on the *same*
batch can "cheat": the batch statistics leak information between samples, and the model finds a
low loss by recognising the batch rather than the image. MoCo shuffles the batch across GPUs for
the key encoder, so a query and its positive key are normalised with statistics of *different*
sub-batches. `shuffled_bn` does it as the official code (`_batch_shuffle_ddp` / `_batch_unshuffle_ddp`):
gather the key images of all processes, shuffle them with one permutation (rank 0's), let each
process encode its share, gather the keys and undo the permutation. In one process the gathers
are identities and `bn_groups` sub-batches of the shuffled batch stand in for the GPUs.
(`sync_batch_norm=True` would give the key encoder global statistics and undo the point of the shuffle.)

v2 (arXiv 2003.04297, Table 1): a 2-layer MLP head (2048-d hidden, ReLU), tau = 0.2, blur in the
augmentation and a cosine learning-rate schedule (which `fit` always uses).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .. import distributed, losses
from ..checks import SSLMinimalError, unknown_name
from ..heads import mlp
from ..memory import BANK_MOMENTUM, MemoryBank, Queue
from ..method import Method
from ..momentum import momentum_copy, momentum_update

EMBEDDING_DIM = 128     # v1 Sec. 3.3: "a fully-connected layer ... 128-D"
TEMPERATURE_V1 = 0.07   # v1 Sec. 3.3: tau = 0.07 (as InstDisc)
TEMPERATURE_V2 = 0.2    # v2 Table 1 / official code: tau = 0.2
MOMENTUM = 0.999        # v1 Sec. 3.2 / 4.1: m = 0.999
QUEUE_SIZE = 4096       # ours for CIFAR-sized runs (paper: K = 65536 for ImageNet; solo-learn's CIFAR config: 32768)
BN_GROUPS = 4           # ours, one process: sub-batches for the key encoder's BN (paper: 8 GPUs x 32 images)
V2_HIDDEN_DIM = 2048    # v2: "a 2-layer MLP head (hidden layer 2048-d, with ReLU)"
DICTIONARIES = ("queue", "end_to_end", "memory_bank")   # v1 Fig. 2 (c), (a), (b)


class MoCoV1(Method):
    name = "moco_v1"
    learning_rate = 0.03    # v1 Sec. 4.1: lr 0.03 for batch 256
    weight_decay = 1e-4     # v1 Sec. 4.1: weight decay 0.0001
    augmentation = "moco_v1"

    def __init__(self, temperature: float = TEMPERATURE_V1, queue_size: int = QUEUE_SIZE,
                 momentum_m: float = MOMENTUM, embedding_dim: int = EMBEDDING_DIM, bn_groups: int = BN_GROUPS,
                 num_samples: int | None = None, dictionary: str = "queue",
                 bank_momentum: float = BANK_MOMENTUM, **encoder_options):
        super().__init__(**encoder_options)
        if dictionary not in DICTIONARIES:
            raise unknown_name("dictionary", dictionary, DICTIONARIES)
        self.temperature, self.m, self.bn_groups, self.dictionary = temperature, momentum_m, bn_groups, dictionary
        self.head = self.build_head(self.encoder.output_dim, embedding_dim)
        if dictionary == "queue":
            if num_samples is not None:
                # Ours: with K <= n keys, a fraction 0.5 (K/n)^2 of the queries find their own key of the
                # previous epoch (a stale positive) among the negatives: 12.5% at K = n/2, 50% at K = n
                # (ImageNet, K = 65536: 0.13%). Notebook 05 simulates it.
                queue_size = max(1, min(queue_size, num_samples // 2))
            # f_k starts as a copy of f_q and never gets gradients (Algorithm 1: f_k.params = f_q.params).
            self.key_encoder = momentum_copy(self.encoder)
            self.key_head = momentum_copy(self.head)
            self.queue = Queue(queue_size, embedding_dim)     # [K, C] buffer: no gradient, saved in checkpoints
        elif dictionary == "memory_bank":
            if num_samples is None:
                raise SSLMinimalError("dictionary='memory_bank' needs num_samples (one bank row per training "
                                      "image; build(..., dataset=train) fills it in), got None")
            self.num_negatives = min(queue_size, num_samples - 1)     # K rows drawn per step
            self.memory_bank = MemoryBank(num_samples, embedding_dim, bank_momentum)   # [n, C] buffer
        # "end_to_end" keeps no state: the dictionary is the batch itself.

    def build_head(self, in_dim: int, out_dim: int) -> nn.Module:
        return nn.Linear(in_dim, out_dim)                 # v1: one 128-d linear layer

    def query(self, x: torch.Tensor) -> torch.Tensor:
        """q = normalize(f_q(x_q)): [B, C]."""
        return F.normalize(self.head(self.encoder(x)), dim=1)

    def shuffled_bn(self, x: torch.Tensor, encoder: nn.Module, head: nn.Module) -> torch.Tensor:
        """head(encoder(x)) with shuffling BN (Sec. 3.3): [B, C], row i belongs to image i.

        As the official code (`_batch_shuffle_ddp` / `_batch_unshuffle_ddp`): gather the images of all
        processes, shuffle them with one permutation (rank 0's), encode this process's share, gather
        the outputs and undo the permutation. In one process the gathers are identities and
        `bn_groups` sub-batches of the shuffled batch stand in for the GPUs."""
        x_all = distributed.gather(x)                                            # [W*B, 3, H, W], all processes
        permutation = distributed.broadcast(torch.randperm(x_all.shape[0], device=x.device))   # rank 0's
        shuffled = distributed.local_slice(x_all[permutation])                   # this process's share, [B, ...]
        # Each sub-batch gets its own BatchNorm statistics: one per GPU, or bn_groups in one process.
        groups = 1 if distributed.is_distributed() else self.bn_groups
        out = torch.cat([head(encoder(chunk)) for chunk in shuffled.chunk(groups)])
        out = distributed.gather_with_gradient(out)                              # [W*B, C], shuffled order
        unshuffled = torch.empty_like(out)
        unshuffled[permutation] = out                                            # undo the shuffle
        return distributed.local_slice(unshuffled)                               # this process's images, [B, C]

    @torch.no_grad()  # the stop-gradient of Algorithm 1: k = f_k.forward(x_k).detach()
    def key(self, x: torch.Tensor) -> torch.Tensor:
        """k = normalize(f_k(x_k)) with shuffling BN: [B, C], row i is the key of image i."""
        return F.normalize(self.shuffled_bn(x, self.key_encoder, self.key_head), dim=1)

    def training_step(self, images: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
        if self.dictionary == "memory_bank":
            return self.memory_bank_step(images, indices)
        x_q, x_k = self.augment(images), self.augment(images)    # two random views, [B, 3, H, W]
        q = self.query(x_q)                                      # [B, C]
        if self.dictionary == "end_to_end":
            # Fig. 2a: the keys come from the query encoder itself, WITH gradient (no .detach()).
            k = F.normalize(self.shuffled_bn(x_k, self.encoder, self.head), dim=1)   # [B, C]
            return losses.info_nce_in_batch(q, k, self.temperature)  # Eq. 1, negatives: the other B - 1 keys
        k = self.key(x_k)                                        # [B, C], no gradient
        loss = losses.info_nce(q, k, self.queue.keys.clone(), self.temperature)   # Eq. 1
        self.queue.enqueue(k)                                    # enqueue k, dequeue the oldest
        return loss

    def memory_bank_step(self, images: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
        """Fig. 2b: one view; the positive key is the image's own bank row v_i, the negatives are K rows
        drawn uniformly; then v_i <- normalize(m_bank v_i + (1 - m_bank) q_i) (InstDisc's rule)."""
        q = self.query(self.augment(images))                                     # [B, C]
        bank = self.memory_bank.bank                                             # [n, C] buffer, no gradient
        negatives = bank[self.memory_bank.sample_noise_indices(self.num_negatives)]     # [K, C]
        loss = losses.info_nce(q, bank[indices], negatives, self.temperature)   # Eq. 1, same loss
        self.memory_bank.update(indices, q.detach())        # rows written by today's encoder, read later
        return loss

    def after_optimizer_step(self, progress: float) -> None:
        if self.dictionary == "queue":
            self.momentum_update_key_encoder()

    @torch.no_grad()
    def momentum_update_key_encoder(self) -> None:
        """theta_k <- m theta_k + (1 - m) theta_q  (Eq. 2)."""
        momentum_update(self.key_encoder, self.encoder, self.m)
        momentum_update(self.key_head, self.head, self.m)


class MoCoV2(MoCoV1):
    name = "moco_v2"
    augmentation = "moco_v2"

    def __init__(self, temperature: float = TEMPERATURE_V2, hidden_dim: int = V2_HIDDEN_DIM, **options):
        self.hidden_dim = hidden_dim
        super().__init__(temperature=temperature, **options)

    def build_head(self, in_dim: int, out_dim: int) -> nn.Module:
        # v2: fc(2048) -> ReLU -> fc(128), no BatchNorm in the head (official code).
        return mlp([in_dim, self.hidden_dim, out_dim], batch_norm=False)
