"""Backbones: the networks that turn an image into a feature vector.

Every backbone starts with `Normalize` (per-channel mean/std of the dataset), so the rest of the
library passes images as floats in [0, 1] and never has to remember which statistics to use.

- `small_convnet`: a 4-block VGG-style ConvNet (~390 k parameters at the default width 32). Its
  forward + backward runs at about 1,800 images/s on 2 idle CPU cores in fp32 with channels_last, and
  about 2,900 under bf16 autocast where the CPU has native bf16 (width 64: about 3x slower); that is what
  makes the CPU budgets possible (BENCHMARKS.md section 8).
  `norm="group_ws"` swaps BatchNorm for GroupNorm + weight standardisation, so the network uses
  no batch statistics (Richemond et al. 2020, "BYOL works even without batch statistics", arXiv
  2010.10241); `norm="none"` removes normalisation altogether.
- Both take `in_channels` (default 3): CMC encodes the L channel (1) and the ab channels (2) of
  Lab colour with one network each, CPC encodes greyscale patches (1). `mean` and `std` of the
  encoder's `Normalize` then have one entry per input channel.
- `resnet18`: torchvision's ResNet-18 adapted to 32x32 images as in the SimCLR paper's CIFAR-10
  experiments (Chen et al. 2020, arXiv 2002.05709, Appendix B.9): the 7x7 stride-2 stem becomes a
  3x3 stride-1 convolution and the first max-pool is removed. 512-d features.
- `vit_tiny` and `small_vit`: a Vision Transformer (Dosovitskiy et al. 2020, "An Image is Worth
  16x16 Words", arXiv 2010.11929): the image is cut into patches, each patch becomes a token, a
  [CLS] token is added and its final state is the feature vector. `vit_tiny` is DeiT-Tiny's shape
  (Touvron et al. 2020, arXiv 2012.12877: width 192, 12 blocks, 3 heads) with 4x4 patches (64
  tokens at 32x32; the gpu budget of the ViT methods). `small_vit` (width 128, 4 blocks, 4 heads,
  8x8 patches: 16 tokens) trains at about 750 images/s on 2 CPU cores, a little faster than the
  small ConvNet (4x4 patches: ~240 images/s). MoCo v3,
  DINO and MAE use them; `last_self_attention` gives the attention maps DINO's paper shows.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
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


# ----------------------------------------------------------------------------------------------
# Vision Transformer
def sincos_position_embedding(grid_size: int, dim: int) -> torch.Tensor:
    """Fixed 2-D sine-cosine position embedding [grid_size**2, dim] (MoCo v3 Sec. 4, MAE Sec. 3):
    half of the channels encode the row, half the column, each as sin/cos at dim/4 frequencies
    1 / 10000^(k / (dim/4)) (Vaswani et al. 2017's 1-D code applied to each axis)."""
    if dim % 4:
        raise SSLMinimalError(f"a 2-D sine-cosine position embedding needs a width divisible by 4, got {dim}")
    frequencies = 1.0 / 10000 ** (torch.arange(dim // 4, dtype=torch.float64) / (dim // 4))   # [dim/4]
    rows, columns = torch.meshgrid(torch.arange(grid_size), torch.arange(grid_size), indexing="ij")
    angles = [axis.flatten().double()[:, None] * frequencies[None] for axis in (rows, columns)]  # 2 x [N, dim/4]
    return torch.cat([f(a) for a in angles for f in (torch.sin, torch.cos)], dim=1).float()     # [N, dim]


class Attention(nn.Module):
    """Multi-head self-attention: softmax(q k^T / sqrt(d)) v for each of `heads` heads of width d.
    causal=True: token i attends to tokens 0..i only (a text transformer, CLIP Sec. 2.4)."""

    def __init__(self, dim: int, heads: int, causal: bool = False):
        super().__init__()
        if dim % heads:
            raise SSLMinimalError(f"ViT width {dim} must be divisible by the number of heads {heads}")
        self.heads, self.causal = heads, causal
        self.qkv = nn.Linear(dim, 3 * dim)
        self.projection = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, return_attention: bool = False):
        B, N, D = x.shape
        q, k, v = self.qkv(x).view(B, N, 3, self.heads, D // self.heads).permute(2, 0, 3, 1, 4)  # 3 x [B, h, N, d]
        if return_attention:            # the explicit softmax, to look at it (DINO's attention maps)
            logits = q @ k.transpose(-2, -1) / math.sqrt(D // self.heads)                         # [B, h, N, N]
            if self.causal:
                logits = logits.masked_fill(torch.ones(N, N, dtype=torch.bool, device=x.device).triu(1), -math.inf)
            attention = logits.softmax(dim=-1)
            out = attention @ v
        else:                           # the same numbers through one fused kernel
            attention, out = None, F.scaled_dot_product_attention(q, k, v, is_causal=self.causal)  # [B, h, N, d]
        return self.projection(out.transpose(1, 2).reshape(B, N, D)), attention


class TransformerBlock(nn.Module):
    """Pre-norm block: x + Attention(LayerNorm(x)), then x + MLP(LayerNorm(x)) (ViT Eq. 2-3)."""

    def __init__(self, dim: int, heads: int, mlp_ratio: float = 4.0, causal: bool = False):
        super().__init__()
        self.norm1, self.attention = nn.LayerNorm(dim), Attention(dim, heads, causal)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, int(dim * mlp_ratio)), nn.GELU(), nn.Linear(int(dim * mlp_ratio), dim))

    def forward(self, x: torch.Tensor, return_attention: bool = False):
        attended, attention = self.attention(self.norm1(x), return_attention)
        x = x + attended
        x = x + self.mlp(self.norm2(x))
        return (x, attention) if return_attention else x


VIT_INITS = ("deit", "moco_v3", "mae")


@torch.no_grad()
def initialise_vit(vit: "VisionTransformer", init: str = "deit") -> None:
    """Initial weights as each paper's official code sets them (LayerNorms: weight 1, bias 0 in all):
    - "deit" (DeiT / timm's ViT, DINO's vision_transformer.py): every Linear weight normal std 0.02
      (trunc_normal_, whose cut at +-2 lies 100 std away), zero bias; [CLS] std 0.02; the patch
      projection keeps Conv2d's default (Kaiming uniform).
    - "moco_v3" (moco-v3 vits.py): Xavier-uniform Linear weights, zero bias, with the fused qkv weight
      [3D, D] treated as three [D, D] blocks (bound sqrt(6 / (D + D)), not sqrt(6 / (3D + D)));
      [CLS] normal std 1e-6; the patch projection Xavier-uniform with fans 3 p^2 and D, zero bias.
    - "mae" (mae models_mae.py): as "moco_v3" but the fused qkv weight is one Xavier-uniform [3D, D]
      matrix (bound sqrt(6 / (4D))) and [CLS] normal std 0.02.
    A learned position embedding (MoCo v3 and MAE use fixed sin-cos) is truncated normal std 0.02."""
    if init == "deit":                  # [CLS] first: the order of random draws of the library's first ViT init
        nn.init.trunc_normal_(vit.cls_token, std=0.02)
    for name, module in vit.named_modules():
        if isinstance(module, nn.Linear):
            if init == "deit":
                nn.init.trunc_normal_(module.weight, std=0.02)
            elif init == "moco_v3" and name.endswith("qkv"):
                out_features, in_features = module.weight.shape            # [3D, D]: q, k, v each [D, D]
                bound = math.sqrt(6 / (out_features // 3 + in_features))
                nn.init.uniform_(module.weight, -bound, bound)
            else:
                nn.init.xavier_uniform_(module.weight)
            nn.init.zeros_(module.bias)
    if init != "deit":
        nn.init.normal_(vit.cls_token, std=1e-6 if init == "moco_v3" else 0.02)
        weight = vit.patch_embedding.weight     # the patch projection as a Linear on the flat patch, [D, 3 p^2]
        nn.init.xavier_uniform_(weight.view(weight.shape[0], -1))
        nn.init.zeros_(vit.patch_embedding.bias)


class VisionTransformer(nn.Module):
    """ViT: patches -> linear embedding + position -> [CLS] + tokens -> blocks -> LayerNorm -> [CLS] state.

    images [B, C, H, W] -> `embed` -> patch tokens [B, N, D] (N = (H / patch_size)^2)
                        -> `transform` -> [B, 1 + N, D] ([CLS] first) -> forward returns [B, D].
    MAE calls `embed`, drops tokens, then `transform`. Images of another size than `image_size`
    (DINO's small local crops, STL-10's 96x96) get the position embedding resized bicubically, as
    in DINO's code. position_embedding: "learned" (ViT, DINO) or "sincos" (fixed, MoCo v3 and MAE).
    init: "deit" (default; DeiT's and DINO's), "moco_v3" or "mae": each official code's initial
    weights, see `initialise_vit`.
    """

    def __init__(self, dim: int = 192, depth: int = 12, heads: int = 3, patch_size: int = 4,
                 image_size: int = 32, mlp_ratio: float = 4.0, in_channels: int = 3,
                 position_embedding: str = "learned", init: str = "deit"):
        super().__init__()
        if position_embedding not in ("learned", "sincos"):
            raise unknown_name("position embedding", position_embedding, ["learned", "sincos"])
        if init not in VIT_INITS:
            raise unknown_name("ViT init", init, VIT_INITS)
        if image_size % patch_size:
            raise SSLMinimalError(f"image_size {image_size} must be a multiple of patch_size {patch_size}")
        self.patch_size, self.grid_size = patch_size, image_size // patch_size
        self.patch_embedding = nn.Conv2d(in_channels, dim, patch_size, stride=patch_size)  # a Linear per patch
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        position = torch.zeros(1, self.grid_size ** 2, dim)
        if position_embedding == "sincos":
            self.register_buffer("position", sincos_position_embedding(self.grid_size, dim)[None])  # [1, N, D]
        else:
            self.position = nn.Parameter(nn.init.trunc_normal_(position, std=0.02))             # [1, N, D]
        self.blocks = nn.ModuleList(TransformerBlock(dim, heads, mlp_ratio) for _ in range(depth))
        self.norm = nn.LayerNorm(dim)
        self.output_dim, self.heads, self.init = dim, heads, init
        initialise_vit(self, init)

    def position_for(self, grid_size: int) -> torch.Tensor:
        """The position embedding for a grid_size x grid_size patch grid, [1, grid_size**2, D]."""
        if grid_size == self.grid_size:
            return self.position
        grid = self.position.reshape(1, self.grid_size, self.grid_size, -1).permute(0, 3, 1, 2)   # [1, D, g, g]
        grid = F.interpolate(grid, size=(grid_size, grid_size), mode="bicubic", align_corners=False)
        return grid.permute(0, 2, 3, 1).reshape(1, grid_size ** 2, -1)

    def embed(self, images: torch.Tensor) -> torch.Tensor:
        """Patch tokens with their position embedding, [B, N, D] (no [CLS] yet)."""
        if images.shape[-1] % self.patch_size or images.shape[-2] != images.shape[-1]:
            raise SSLMinimalError(f"the ViT needs square images whose side is a multiple of its patch size "
                                  f"{self.patch_size}, got {list(images.shape[-2:])}")
        tokens = self.patch_embedding(images).flatten(2).transpose(1, 2)          # [B, N, D]
        return tokens + self.position_for(images.shape[-1] // self.patch_size)

    def transform(self, tokens: torch.Tensor) -> torch.Tensor:
        """Prepend [CLS], run the blocks and the final LayerNorm: [B, n, D] -> [B, 1 + n, D]."""
        x = torch.cat([self.cls_token.expand(len(tokens), -1, -1), tokens], dim=1)
        for block in self.blocks:
            x = block(x)
        return self.norm(x)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.transform(self.embed(images))[:, 0]                          # [B, D]: the [CLS] state

    @torch.no_grad()
    def last_self_attention(self, images: torch.Tensor) -> torch.Tensor:
        """The last block's attention weights [B, heads, 1 + N, 1 + N] (row 0: what [CLS] attends to)."""
        x = torch.cat([self.cls_token.expand(len(images), -1, -1), self.embed(images)], dim=1)
        for block in self.blocks[:-1]:
            x = block(x)
        return self.blocks[-1](x, return_attention=True)[1]


def vit_tiny(**options) -> VisionTransformer:
    """DeiT-Tiny's shape (width 192, 12 blocks, 3 heads), 4x4 patches: 5.4 M parameters."""
    return VisionTransformer(**{"dim": 192, "depth": 12, "heads": 3, **options})


def small_vit(**options) -> VisionTransformer:
    """Ours, for 2 CPU cores: width 128, 4 blocks, 4 heads, 8x8 patches (16 tokens at 32x32): 0.8 M parameters."""
    return VisionTransformer(**{"dim": 128, "depth": 4, "heads": 4, "patch_size": 8, **options})


BACKBONES = {"small_convnet": SmallConvNet, "resnet18": ResNet18Small, "small_vit": small_vit, "vit_tiny": vit_tiny}


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
    """Build `Normalize + backbone` by name ("small_convnet", "resnet18", "small_vit" or "vit_tiny")."""
    try:
        return Encoder(name, mean, std, **options)
    except TypeError as error:
        raise SSLMinimalError(f"backbone {name!r} does not accept options {sorted(options)}: {error}") from None
