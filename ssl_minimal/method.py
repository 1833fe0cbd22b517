"""What every method has in common: an encoder, its augmentations, and how the paper optimises it.

A method is an `nn.Module` that subclasses `Method` and implements

    training_step(images, indices) -> loss      # images: uint8 [B, 3, H, W] straight from the dataset

(a method with `uses_captions = True`, CLIP, gets a third argument: the batch's captions, token ids
int64 [B, K, L] from `dataset.captions`).

Before the first step of a new run (not when resuming) `fit` calls `before_training(images)` with the
whole training set (uint8 [N, 3, H, W] on the device; a no-op here: InstDisc fills its memory bank there).
Then, each step, `fit` calls `training_step`, back-propagates, calls `after_backward(progress)` (a no-op here;
SwAV zeroes its prototypes' gradients there during the first epoch), steps the optimiser, then calls
`after_optimizer_step(progress)` (a no-op here; MoCo's and BYOL's momentum encoders update there).
`progress` = step / total_steps in [0, 1], so per-step schedules need nothing else from `fit`.
The class attributes below are the paper's optimisation recipe, which `fit` reads; the
`learning_rate` is for a batch of 256 and `fit` scales it linearly with the batch size
(Goyal et al. 2017, arXiv 1706.02677), as SimCLR, MoCo and BYOL do. The weight decay is fixed unless
`final_weight_decay` is set: then it follows a per-step cosine from `weight_decay` to that value in the
parameter groups that do not set their own (DINO's 0.04 -> 0.4; biases keep their 0).

Evaluation uses `method.encoder` (Normalize + backbone), never the heads, as in the papers.
"""

from __future__ import annotations

import torch
from torch import nn

from . import augmentations
from .backbones import CIFAR10_MEAN, CIFAR10_STD, build_encoder


class Method(nn.Module):
    name = "method"
    optimizer = "sgd"          # "sgd", "lars" or "adamw"
    learning_rate = 0.03       # for batch size 256
    weight_decay = 5e-4
    final_weight_decay: float | None = None   # None: fixed; else cosine from weight_decay to it (DINO)
    momentum = 0.9             # SGD momentum
    adam_betas = (0.9, 0.999)  # AdamW's (beta1, beta2): torch's default; MAE uses (0.9, 0.95)
    augmentation = "instdisc"  # recipe name in augmentations.RECIPES
    architecture = "convnet"   # "vit": budgets give the method their `vit_backbone` instead of `backbone`
    uses_captions = False      # True: `fit` also passes dataset.captions[indices] to training_step (CLIP)
    epochs: int | None = None  # set by `fit` to the run's number of epochs (SwAV freezes its prototypes for one)

    def __init__(self, backbone: str = "small_convnet", image_size: int = 32,
                 mean: tuple[float, ...] = CIFAR10_MEAN, std: tuple[float, ...] = CIFAR10_STD,
                 augmentation: str | None = None, backbone_options: dict | None = None):
        super().__init__()
        self.encoder = build_encoder(backbone, mean, std, **(backbone_options or {}))
        self.augment = augmentations.recipe(augmentation or self.augmentation, image_size)

    def training_step(self, images: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, images: torch.Tensor, indices: torch.Tensor, *captions: torch.Tensor) -> torch.Tensor:
        """Calling the method is one training step (DistributedDataParallel calls forward)."""
        return self.training_step(images, indices, *captions)

    def before_training(self, images: torch.Tensor) -> None:
        """Called once by `fit` before the first step of a new run with all training images, uint8 [N, 3, H, W]."""

    def after_backward(self, progress: float) -> None:
        """Called after loss.backward() and before the optimiser step, progress = step / total_steps."""

    def after_optimizer_step(self, progress: float) -> None:
        """Called after every optimiser step with progress = step / total_steps in [0, 1]."""

    def parameter_groups(self) -> list[dict]:
        """Parameters for the optimiser; biases and BatchNorm weights get no weight decay."""
        decay, no_decay = [], []
        for parameter in self.parameters():
            if parameter.requires_grad:
                (no_decay if parameter.dim() <= 1 else decay).append(parameter)
        return [{"params": decay}, {"params": no_decay, "weight_decay": 0.0}]
