"""Backbones: the networks that turn an image into a feature vector.

Every backbone starts with `Normalize` (per-channel mean/std of the dataset), so the rest of the
library passes images as floats in [0, 1] and never has to remember which statistics to use.

- `small_convnet`: a 4-block VGG-style ConvNet (~390 k parameters at the default width 32). Its
  forward + backward runs at about 1,000 images/s on 2 CPU cores (channels_last; width 64: ~330),
  which is what makes the CPU budgets possible.
  `norm="group_ws"` swaps BatchNorm for GroupNorm + weight standardisation, so the network uses
  no batch statistics (Richemond et al. 2020, "BYOL works even without batch statistics", arXiv
  2010.10241); `norm="none"` removes normalisation altogether.
- Both take `in_channels` (default 3): CMC encodes the L channel (1) and the ab channels (2) of
  Lab colour with one network each, CPC encodes greyscale patches (1). `mean` and `std` of the
  encoder's `Normalize` then have one entry per input channel.
- `resnet18`: torchvision's ResNet-18 adapted to 32x32 images as in the SimCLR paper's CIFAR-10
  experiments (Chen et al. 2020, arXiv 2002.05709, Appendix B.9): the 7x7 stride-2 stem becomes a
  3x3 stride-1 convolution and the first max-pool is removed. 512-d features.
"""

from __future__ import annotations

import torch
import torchvision
from torch import nn

from .checks import SSLMinimalError, check_images, unknown_name
from .heads import group_norm

CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)   # published CIFAR-10 training-set statistics
CIFAR10_STD = (0.2470, 0.2435, 0.2616)


class Normalize(nn.Module):
    """(x - mean) / std per channel; x is a float image batch in [0, 1]."""

    def __init__(self, mean: tuple[float, ...] = CIFAR10_MEAN, std: tuple[float, ...] = CIFAR10_STD):
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std).view(1, -1, 1, 1))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return (images - self.mean) / self.std


class WSConv2d(nn.Conv2d):
    """Conv2d with weight standardisation: each output filter is rescaled to mean 0 and std 1 before
    use (Qiao et al. 2019, "Micro-Batch Training with Batch-Channel Normalization and Weight
    Standardization", arXiv 1903.10520), the partner of GroupNorm in Richemond et al. 2020."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self.weight
        mean = w.mean(dim=(1, 2, 3), keepdim=True)
        std = w.std(dim=(1, 2, 3), keepdim=True, unbiased=False)
        return self._conv_forward(x, (w - mean) / (std + 1e-5), self.bias)


CONV_NORMS = ("batch", "group_ws", "none")
# Ours: width 32 trains 3x faster than 64 on 2 CPU cores (benchmarks in BENCHMARKS.md); the gpu budget uses ResNet-18.
WIDTH = 32


def _conv_block(in_channels: int, out_channels: int, pool: bool, norm: str = "batch") -> nn.Sequential:
    if norm == "batch":
        layers = [nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False), nn.BatchNorm2d(out_channels)]
    elif norm == "group_ws":
        layers = [WSConv2d(in_channels, out_channels, 3, padding=1, bias=False), group_norm(out_channels)]
    else:
        layers = [nn.Conv2d(in_channels, out_channels, 3, padding=1)]
    layers.append(nn.ReLU(inplace=True))
    if pool:
        layers.append(nn.MaxPool2d(2))
    return nn.Sequential(*layers)


class SmallConvNet(nn.Module):
    """conv(w) -> pool -> conv(2w) -> pool -> conv(4w) -> pool -> conv(8w) -> global average pool.

    Each conv is 3x3 + BatchNorm + ReLU. Output: [B, 8w] features (256-d at the default width 32).
    norm: "batch" (default), "group_ws" (GroupNorm + weight standardisation) or "none".
    """

    def __init__(self, width: int = WIDTH, norm: str = "batch", in_channels: int = 3):
        super().__init__()
        if norm not in CONV_NORMS:
            raise unknown_name("norm", norm, CONV_NORMS)
        self.layers = nn.Sequential(
            _conv_block(in_channels, width, pool=True, norm=norm),    # [B, w, H/2, W/2]
            _conv_block(width, 2 * width, pool=True, norm=norm),      # [B, 2w, H/4, W/4]
            _conv_block(2 * width, 4 * width, pool=True, norm=norm),  # [B, 4w, H/8, W/8]
            _conv_block(4 * width, 8 * width, pool=False, norm=norm),  # [B, 8w, H/8, W/8]
            nn.AdaptiveAvgPool2d(1), nn.Flatten())        # [B, 8w]
        self.output_dim = 8 * width

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.layers(images)


class ResNet18Small(nn.Module):
    """ResNet-18 for 32x32 inputs: 3x3 stride-1 stem, no max-pool, no classifier. Output [B, 512]."""

    def __init__(self, in_channels: int = 3):
        super().__init__()
        net = torchvision.models.resnet18(weights=None)
        net.conv1 = nn.Conv2d(in_channels, 64, kernel_size=3, stride=1, padding=1, bias=False)
        net.maxpool = nn.Identity()
        net.fc = nn.Identity()
        self.net = net
        self.output_dim = 512

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.net(images)


BACKBONES = {"small_convnet": SmallConvNet, "resnet18": ResNet18Small}


class Encoder(nn.Module):
    """Normalize -> backbone. Takes float images in [0, 1] (or uint8), returns features [B, output_dim].
    With `in_channels=C` (an option of the backbone) the images are [B, C, H, W] and mean/std have C entries."""

    def __init__(self, name: str = "small_convnet", mean=CIFAR10_MEAN, std=CIFAR10_STD, **options):
        super().__init__()
        if name not in BACKBONES:
            raise unknown_name("backbone", name, BACKBONES)
        self.name = name
        self.in_channels = options.get("in_channels", 3)
        if not len(mean) == len(std) == self.in_channels:
            raise SSLMinimalError(f"mean and std need one entry per input channel ({self.in_channels}), got "
                                  f"mean {tuple(mean)} and std {tuple(std)}")
        self.normalize = Normalize(mean, std)
        self.backbone = BACKBONES[name](**options)
        self.output_dim = self.backbone.output_dim

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        # The value range is read on CPU, and on other devices only at the first call: reading it
        # makes the CPU wait for the GPU, at every encoder call of every step (the shape is always checked).
        first_call = not getattr(self, "_values_checked", False)
        check_images(images, channels=self.in_channels, check_values=first_call or images.device.type == "cpu")
        self._values_checked = True
        if images.dtype == torch.uint8:
            images = images.float() / 255
        return self.backbone(self.normalize(images))


def build_encoder(name: str = "small_convnet", mean=CIFAR10_MEAN, std=CIFAR10_STD, **options) -> Encoder:
    """Build `Normalize + backbone` by name ("small_convnet" or "resnet18")."""
    try:
        return Encoder(name, mean, std, **options)
    except TypeError as error:
        raise SSLMinimalError(f"backbone {name!r} does not accept options {sorted(options)}: {error}") from None
