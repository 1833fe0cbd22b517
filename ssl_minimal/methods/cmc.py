"""CMC — "Contrastive Multiview Coding".

Yonglong Tian, Dilip Krishnan, Phillip Isola. ECCV 2020. arXiv:1906.05849.

The idea: a "view" need not be an augmentation; it can be a different sensory channel of the same
scene. One encoder per view, and a contrastive loss that makes the two views of a scene agree
(Eqs. 2-3), so the representation keeps what the views share (objects, shape) and drops what only
one view has (lighting in L, colour noise in ab).

The code follows the paper's ImageNet setup (Sec. 4.2, Fig. 1 with two views): an image's two
views are the lightness channel L and the colour channels ab of the CIE L*a*b* colour space; the L
encoder f_1 and the ab encoder f_2 are two half-width copies of one backbone (the official code
splits AlexNet into two halves), each followed by a linear layer to a 128-d L2-normalised
embedding; h(v1, v2) = exp(v1.v2 / tau); both directions are summed, L(V1, V2) = L^{V1,V2} +
L^{V2,V1} (Eq. 3). Evaluation features (`self.encoder`): the features of both encoders
concatenated, [f_1(L), f_2(ab)] ([B, 128 + 128] for the small ConvNet), as the paper does.

Which negatives. The paper draws K = 16384 negatives from a memory bank (one for each view, updated
with momentum 0.5 as InstDisc's) and approximates the softmax with NCE (Sec. 3.2). We use the
in-batch form by default (`negatives="batch"`, `losses.cmc_loss`: the other B - 1 images of the
batch are the negatives), because at this course's budgets (a few epochs on a few thousand images)
every bank row is rewritten only a few times, so bank negatives and positives stay stale for the
whole run, and lesson 1 showed InstDisc's bank + NCE diverging at these sizes (2 epochs on 5,000
CIFAR-10 images: kNN 34.5% at random init -> 39.9% in-batch, -> 35.2% with the bank). `negatives="bank"`
is the paper's memory-bank version with the exact softmax over the sampled rows (the official code's
softmax option; `losses.info_nce` with the positive bank row first), for comparison.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .. import losses
from ..augmentations import rgb_to_lab
from ..backbones import WIDTH, build_encoder
from ..checks import SSLMinimalError, check_images, unknown_name
from ..memory import BANK_MOMENTUM, MemoryBank
from ..method import Method

TEMPERATURE = 0.07      # official code (HobbitLong/CMC): --nce_t 0.07 for ImageNet
EMBEDDING_DIM = 128     # official code: --feat_dim 128
NUM_NEGATIVES = 4096    # official code: --nce_k 4096 (the paper: 16384 on ImageNet); bank version only
NEGATIVES = ("batch", "bank")
# The official code maps L, a and b to [-1, 1] with the range of sRGB colours in Lab (train_CMC.py):
# L in [0, 100], a in [-86.183, 98.233], b in [-107.857, 94.478]. We map them to [0, 1] (what every
# encoder takes) and Normalize with mean = std = 0.5, which is the same map to [-1, 1].
LAB_LOW = (0.0, -86.183, -107.857)
LAB_HIGH = (100.0, 98.233, 94.478)


class LabEncoder(nn.Module):
    """RGB images -> (L view [B, 1, H, W], ab view [B, 2, H, W]), each in [0, 1] -> f_1(L), f_2(ab).
    forward(images [B, 3, H, W]) = [f_1(L), f_2(ab)] concatenated: the evaluation features."""

    def __init__(self, encoder_l: nn.Module, encoder_ab: nn.Module):
        super().__init__()
        self.encoder_l, self.encoder_ab = encoder_l, encoder_ab
        self.output_dim = encoder_l.output_dim + encoder_ab.output_dim
        self.register_buffer("low", torch.tensor(LAB_LOW).view(1, 3, 1, 1))
        self.register_buffer("high", torch.tensor(LAB_HIGH).view(1, 3, 1, 1))

    def views(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """uint8 or float RGB [B, 3, H, W] -> L [B, 1, H, W] and ab [B, 2, H, W], scaled to [0, 1]."""
        check_images(images)
        images = images.float() / 255 if images.dtype == torch.uint8 else images
        lab = ((rgb_to_lab(images) - self.low) / (self.high - self.low)).clamp(0, 1)   # [B, 3, H, W]
        return lab[:, :1], lab[:, 1:]

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        l, ab = self.views(images)
        return torch.cat([self.encoder_l(l), self.encoder_ab(ab)], dim=1)          # [B, D_1 + D_2]


class CMC(Method):
    name = "cmc"
    learning_rate = 0.03    # official code: SGD lr 0.03, momentum 0.9, batch 256
    weight_decay = 1e-4     # official code: weight decay 1e-4
    augmentation = "cmc"    # crop + flip; the views themselves are the colour split

    def __init__(self, temperature: float = TEMPERATURE, embedding_dim: int = EMBEDDING_DIM,
                 negatives: str = "batch", num_samples: int | None = None, num_negatives: int = NUM_NEGATIVES,
                 bank_momentum: float = BANK_MOMENTUM, backbone: str = "small_convnet", image_size: int = 32,
                 mean=None, std=None, augmentation: str | None = None, backbone_options: dict | None = None):
        # mean/std (the dataset's RGB statistics, passed by ssl_minimal.build) do not apply to Lab views.
        if negatives not in NEGATIVES:
            raise unknown_name("negatives", negatives, NEGATIVES)
        options = dict(backbone_options or {})
        if backbone == "small_convnet":
            options.setdefault("width", WIDTH // 2)      # one half-width network per view (official AlexNet halves)
        super().__init__(backbone, image_size, mean=(0.5,), std=(0.5,), augmentation=augmentation,
                         backbone_options={**options, "in_channels": 1})                  # f_1: the L encoder
        encoder_ab = build_encoder(backbone, (0.5, 0.5), (0.5, 0.5), **options, in_channels=2)   # f_2: ab
        self.encoder = LabEncoder(self.encoder, encoder_ab)
        self.head_l = nn.Linear(self.encoder.encoder_l.output_dim, embedding_dim)
        self.head_ab = nn.Linear(encoder_ab.output_dim, embedding_dim)
        self.temperature, self.negatives = temperature, negatives
        if negatives == "bank":
            if num_samples is None:
                raise SSLMinimalError("negatives='bank' needs num_samples (the training set size), got None; "
                                      "ssl_minimal.build('cmc', dataset=train, negatives='bank') fills it in")
            self.num_negatives = min(num_negatives, num_samples - 1)
            self.memory_l = MemoryBank(num_samples, embedding_dim, bank_momentum)     # v1 of every image
            self.memory_ab = MemoryBank(num_samples, embedding_dim, bank_momentum)    # v2 of every image

    def embed(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Unit embeddings of the two views: v1 = f_1(L) -> head, v2 = f_2(ab) -> head, each [B, 128]."""
        l, ab = self.encoder.views(images)
        v1 = F.normalize(self.head_l(self.encoder.encoder_l(l)), dim=1)
        v2 = F.normalize(self.head_ab(self.encoder.encoder_ab(ab)), dim=1)
        return v1, v2

    def training_step(self, images: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
        v1, v2 = self.embed(self.augment(images))       # one crop per image, split into L and ab
        if self.negatives == "batch":
            return losses.cmc_loss(v1, v2, self.temperature)    # Eq. 3: L^{V1,V2} + L^{V2,V1}, in-batch
        # Bank version: the anchor of one view meets the *other* view's bank rows (positive first).
        noise = self.memory_l.sample_noise_indices(self.num_negatives)                 # [K], shared by the batch
        loss = (losses.info_nce(v1, self.memory_ab.bank[indices], self.memory_ab.bank[noise], self.temperature)
                + losses.info_nce(v2, self.memory_l.bank[indices], self.memory_l.bank[noise], self.temperature))
        # The banks are buffers: gradients reach the encoders only through v1 and v2 of this batch.
        self.memory_l.update(indices, v1.detach())
        self.memory_ab.update(indices, v2.detach())
        return loss
