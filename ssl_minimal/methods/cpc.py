"""CPC — "Representation Learning with Contrastive Predictive Coding".

Aaron van den Oord, Yazhe Li, Oriol Vinyals. 2018. arXiv:1807.03748. Image version: Sec. 3.2 and
Fig. 4, with the context network of CPC v2 (Hénaff et al. 2019, "Data-Efficient Image Recognition
with Contrastive Predictive Coding", arXiv:1905.09272, Appendix A).

The idea: cut the image into a grid of overlapping patches, encode each patch to z, summarise the
rows above with an autoregressive network into a context c_t, and predict the embeddings of the
patches k rows *below* from it. The prediction is scored against the embeddings of other patches
(other positions, other images) with InfoNCE (Eq. 4): the encoder must keep what is predictable
across the image (object parts, shapes), not pixel detail.

The paper cuts a 256 px image into a 7x7 grid of 64 px patches with 50% overlap (a quarter of the
side each). For CIFAR's 32 px images we keep the 50% overlap but use patches of half the side:
16 px patches every 8 px, a 3x3 grid, predicting k = 1 and 2 rows below. The paper's proportions
(`patch_size=8`: 8 px patches every 4 px, a 7x7 grid) give patches that hold a few edges only,
and cost 3-5x more per image on a CPU; at the course's budgets their features stayed below the
random-init encoder in both kNN and linear probe (BENCHMARKS.md). Patches are greyscale, as in the paper.

    images [B, 3, H, W] -> grey -> patches [B, R, R, 1, p, p] -> patch encoder (Normalize + backbone)
    -> z [B, D, R, R] -> causal context network -> c [B, D, R, R] (row t sees rows <= t only)
    -> for k in prediction_steps: W_k c_t vs z_{t+k}, InfoNCE over all patches k.. rows down

No stop-gradient: encoder, context network and W_k are trained together through both the
predictions and the targets. Evaluation features (`self.encoder`, what the kNN monitor and
`evaluate.extract_features` use): the patch embeddings z mean-pooled over the grid, [B, D]; the
context network and the W_k are discarded, as CPC v2 does for its linear evaluation.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .. import losses
from ..augmentations import GRAYSCALE_WEIGHTS, rgb_to_grayscale
from ..backbones import CIFAR10_MEAN, CIFAR10_STD
from ..checks import SSLMinimalError, check_images
from ..method import Method

PATCH_FRACTION = 2            # ours: patches of 1/2 the side (paper: 64 px of 256 px = 1/4); stride = half a patch
PREDICTION_STEPS = (1, 2)     # k rows below; all that a 3x3 grid allows (the paper: up to 5 rows of 7; CPC v2: k = 3)
CONTEXT_BLOCKS = 3            # ours: residual masked-conv blocks (CPC v2 Appendix A uses 5 on a 7x7 grid)
CONTEXT_HIDDEN = 128          # ours: width inside a block (CPC v2: 256)
JITTER = 60 / 64              # Sec. 3.2: a random 60x60 sub-crop of each 64x64 patch, padded back


def extract_patches(images: torch.Tensor, size: int, stride: int) -> torch.Tensor:
    """Grid of overlapping square patches: [B, C, H, W] -> [B, R, R', C, size, size] with
    R = (H - size) // stride + 1; patch (i, j) is images[:, :, i*stride : i*stride+size, j*stride : j*stride+size]."""
    patches = images.unfold(2, size, stride).unfold(3, size, stride)     # [B, C, R, R', size, size]
    return patches.permute(0, 2, 3, 1, 4, 5)


def jitter_patches(patches: torch.Tensor, keep: float = JITTER) -> torch.Tensor:
    """Keep a random sub-crop of each patch (side floor(keep * size)) in place and zero the rest, so
    overlapping patches no longer line up pixel for pixel (Sec. 3.2). [..., size, size] -> same shape."""
    size = patches.shape[-1]
    crop = max(1, int(keep * size))
    shape = patches.shape[:-2] + (1, 1)
    top = torch.randint(0, size - crop + 1, shape, device=patches.device)
    left = torch.randint(0, size - crop + 1, shape, device=patches.device)
    position = torch.arange(size, device=patches.device)
    rows = (position.view(-1, 1) >= top) & (position.view(-1, 1) < top + crop)          # [..., size, 1]
    columns = (position.view(1, -1) >= left) & (position.view(1, -1) < left + crop)     # [..., 1, size]
    return patches * (rows & columns)


class PatchGridEncoder(nn.Module):
    """images -> greyscale -> grid of patches -> the patch encoder on every patch -> z grid.
    forward(images [B, 3, H, W]) = z mean-pooled over the grid [B, D]: the evaluation features."""

    def __init__(self, patch_encoder: nn.Module, patch_size: int, stride: int):
        super().__init__()
        self.patch_encoder, self.patch_size, self.stride = patch_encoder, patch_size, stride
        self.output_dim = patch_encoder.output_dim

    def patches(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 or float RGB [B, 3, H, W] -> greyscale patches [B, R, R, 1, p, p] in [0, 1]."""
        check_images(images)
        images = images.float() / 255 if images.dtype == torch.uint8 else images
        return extract_patches(rgb_to_grayscale(images), self.patch_size, self.stride)

    def embed(self, patches: torch.Tensor) -> torch.Tensor:
        """z = g_enc(x) for every patch: [B, R, R, 1, p, p] -> [B, D, R, R]."""
        batch, rows, columns = patches.shape[:3]
        z = self.patch_encoder(patches.reshape(-1, *patches.shape[3:]))       # [B*R*R, D]
        return z.view(batch, rows, columns, -1).permute(0, 3, 1, 2)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.embed(self.patches(images)).mean(dim=(2, 3))              # [B, D]


class CausalBlock(nn.Module):
    """A residual PixelCNN-style block over the grid (CPC v2 Appendix A): a 1x3 convolution within
    the row, then a 2x1 convolution over this row and the one above (padded at the top only), so
    output row t depends on input rows <= t. [B, D, R, R] -> [B, D, R, R]"""

    def __init__(self, dim: int, hidden: int = CONTEXT_HIDDEN):
        super().__init__()
        self.reduce = nn.Conv2d(dim, hidden, 1)
        self.within_row = nn.Conv2d(hidden, hidden, (1, 3), padding=(0, 1))
        self.from_above = nn.Conv2d(hidden, hidden, (2, 1))
        self.expand = nn.Conv2d(hidden, dim, 1)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        h = self.within_row(F.relu(self.reduce(z)))
        h = F.relu(self.from_above(F.pad(h, (0, 0, 1, 0))))    # one row of zeros on top: row t sees t-1 and t
        return z + self.expand(h)


class CPC(Method):
    name = "cpc"
    optimizer = "adamw"
    # Sec. 3.2: Adam with learning rate 2e-4 for a batch of 32 GPUs x 16. Ours: 2e-3 for a batch of 256
    # (1e-3 at the notebook's 128), for runs of a few hundred steps instead of the paper's many epochs.
    learning_rate = 2e-3
    weight_decay = 0.0        # the paper mentions none
    augmentation = "cpc"      # Sec. 3.2: crop, flip, greyscale

    def __init__(self, prediction_steps: tuple[int, ...] = PREDICTION_STEPS, context_blocks: int = CONTEXT_BLOCKS,
                 patch_size: int | None = None, jitter: float = JITTER, image_size: int = 32,
                 mean: tuple[float, ...] = CIFAR10_MEAN, std: tuple[float, ...] = CIFAR10_STD,
                 backbone_options: dict | None = None, **encoder_options):
        # The patch encoder sees one grey channel: the grey of the mean colour, and about the grey's std.
        grey_mean = (sum(w * m for w, m in zip(GRAYSCALE_WEIGHTS, mean)),)
        grey_std = (sum(w * s for w, s in zip(GRAYSCALE_WEIGHTS, std)),)
        super().__init__(image_size=image_size, mean=grey_mean, std=grey_std,
                         backbone_options={**(backbone_options or {}), "in_channels": 1}, **encoder_options)
        patch_size = patch_size or image_size // PATCH_FRACTION
        rows = (image_size - patch_size) // (patch_size // 2) + 1
        self.prediction_steps, self.jitter = tuple(prediction_steps), jitter
        if not self.prediction_steps or min(self.prediction_steps) < 1 or max(self.prediction_steps) >= rows:
            raise SSLMinimalError(f"prediction_steps must be row offsets in 1..{rows - 1} (the grid has {rows} "
                                  f"rows), got {prediction_steps}")
        self.encoder = PatchGridEncoder(self.encoder, patch_size, patch_size // 2)
        dim = self.encoder.output_dim
        self.context = nn.Sequential(*[CausalBlock(dim) for _ in range(context_blocks)], nn.ReLU())   # g_ar
        self.W = nn.ModuleList([nn.Linear(dim, dim, bias=False) for _ in self.prediction_steps])    # W_k (Eq. 3)

    def predictions_and_targets(self, z: torch.Tensor, c: torch.Tensor, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        """For the i-th prediction step k: rows (b, t, column) of W_k c_t and of z_{t+k}, the patch k
        rows below in the same image and column, for t = 0..R-1-k. Both [B * (R - k) * R, D]."""
        k = self.prediction_steps[step]
        context = c[:, :, :-k].permute(0, 2, 3, 1).flatten(0, 2)          # c_t, [B*(R-k)*R, D]
        targets = z[:, :, k:].permute(0, 2, 3, 1).flatten(0, 2)           # z_{t+k}, same order
        return self.W[step](context), targets

    def cpc_loss(self, z: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        """Eq. 4 for every k, averaged over the prediction steps. Each prediction must pick its own
        target among all patches in rows k.. of every image in the batch (other positions of the
        same image and of other images are the negatives, as in CPC v2)."""
        total = 0.0
        for step in range(len(self.prediction_steps)):
            predictions, targets = self.predictions_and_targets(z, c, step)
            total = total + losses.cpc_info_nce(predictions, targets)   # -log f_k(z_{t+k}, c_t) / sum_j f_k(z_j, c_t)
        return total / len(self.prediction_steps)

    def training_step(self, images: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
        x = self.augment(images)                                  # grey crops, [B, 3, H, W]
        patches = jitter_patches(self.encoder.patches(x), self.jitter)   # [B, R, R, 1, p, p]
        z = self.encoder.embed(patches)                           # z_{i,j} = g_enc(x_{i,j}), [B, D, R, R]
        c = self.context(z)                                       # c_t = g_ar(z_{<=t}), [B, D, R, R]
        return self.cpc_loss(z, c)
