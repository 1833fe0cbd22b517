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

Shuffling BN (Sec. 3.3): with BatchNorm, the query and its positive key computed on the *same*
batch can "cheat": the batch statistics leak information between samples, and the model finds a
low loss by recognising the batch rather than the image. MoCo shuffles the batch across GPUs for
the key encoder, so a query and its positive key are normalised with statistics of *different*
sub-batches. `key` does it as the official code (`_batch_shuffle_ddp` / `_batch_unshuffle_ddp`):
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
from ..heads import mlp
from ..memory import Queue
from ..method import Method
from ..momentum import momentum_copy, momentum_update

EMBEDDING_DIM = 128     # v1 Sec. 3.3: "a fully-connected layer ... 128-D"
TEMPERATURE_V1 = 0.07   # v1 Sec. 3.3: tau = 0.07 (as InstDisc)
TEMPERATURE_V2 = 0.2    # v2 Table 1 / official code: tau = 0.2
MOMENTUM = 0.999        # v1 Sec. 3.2 / 4.1: m = 0.999
QUEUE_SIZE = 4096       # ours for CIFAR-sized runs (paper: K = 65536 for ImageNet; solo-learn's CIFAR config: 32768)
BN_GROUPS = 4           # ours, one process: sub-batches for the key encoder's BN (paper: 8 GPUs x 32 images)
V2_HIDDEN_DIM = 2048    # v2: "a 2-layer MLP head (hidden layer 2048-d, with ReLU)"


class MoCoV1(Method):
    name = "moco_v1"
    learning_rate = 0.03    # v1 Sec. 4.1: lr 0.03 for batch 256
    weight_decay = 1e-4     # v1 Sec. 4.1: weight decay 0.0001
    augmentation = "moco_v1"

    def __init__(self, temperature: float = TEMPERATURE_V1, queue_size: int = QUEUE_SIZE,
                 momentum_m: float = MOMENTUM, embedding_dim: int = EMBEDDING_DIM, bn_groups: int = BN_GROUPS,
                 num_samples: int | None = None, **encoder_options):
        super().__init__(**encoder_options)
        self.temperature, self.m, self.bn_groups = temperature, momentum_m, bn_groups
        if num_samples is not None:
            # Ours: a queue longer than about half the dataset holds older keys of the images of the
            # current batch, i.e. their own positives as negatives.
            queue_size = max(1, min(queue_size, num_samples // 2))
        self.head = self.build_head(self.encoder.output_dim, embedding_dim)
        # f_k starts as a copy of f_q and never gets gradients (Algorithm 1: f_k.params = f_q.params).
        self.key_encoder = momentum_copy(self.encoder)
        self.key_head = momentum_copy(self.head)
        self.queue = Queue(queue_size, embedding_dim)     # [K, C] buffer: no gradient, saved in checkpoints

    def build_head(self, in_dim: int, out_dim: int) -> nn.Module:
        return nn.Linear(in_dim, out_dim)                 # v1: one 128-d linear layer

    def query(self, x: torch.Tensor) -> torch.Tensor:
        """q = normalize(f_q(x_q)): [B, C]."""
        return F.normalize(self.head(self.encoder(x)), dim=1)

    @torch.no_grad()  # the stop-gradient of Algorithm 1: k = f_k.forward(x_k).detach()
    def key(self, x: torch.Tensor) -> torch.Tensor:
        """k = normalize(f_k(x_k)) with shuffling BN: [B, C], row i is the key of image i."""
        x_all = distributed.gather(x)                                            # [W*B, 3, H, W], all processes
        permutation = distributed.broadcast(torch.randperm(x_all.shape[0], device=x.device))   # rank 0's
        shuffled = distributed.local_slice(x_all[permutation])                   # this process's share, [B, ...]
        # Each sub-batch gets its own BatchNorm statistics: one per GPU, or bn_groups in one process.
        groups = 1 if distributed.is_distributed() else self.bn_groups
        keys = torch.cat([self.key_head(self.key_encoder(chunk)) for chunk in shuffled.chunk(groups)])
        keys = distributed.gather(keys)                                          # [W*B, C], shuffled order
        unshuffled = torch.empty_like(keys)
        unshuffled[permutation] = keys                                           # undo the shuffle
        return F.normalize(distributed.local_slice(unshuffled), dim=1)          # this process's images, [B, C]

    def training_step(self, images: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
        x_q, x_k = self.augment(images), self.augment(images)    # two random views, [B, 3, H, W]
        q = self.query(x_q)                                      # [B, C]
        k = self.key(x_k)                                        # [B, C], no gradient
        loss = losses.info_nce(q, k, self.queue.keys.clone(), self.temperature)   # Eq. 1
        self.queue.enqueue(k)                                    # enqueue k, dequeue the oldest
        return loss

    def after_optimizer_step(self, progress: float) -> None:
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
