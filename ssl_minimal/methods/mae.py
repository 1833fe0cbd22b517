"""MAE — "Masked Autoencoders Are Scalable Vision Learners".

Kaiming He, Xinlei Chen, Saining Xie, Yanghao Li, Piotr Dollár, Ross Girshick. CVPR 2022. arXiv:2111.06377.

The idea: hide a large random subset (75%) of an image's patches, encode only the visible ones with
a ViT, and let a light decoder reconstruct the pixels of the hidden ones from the encoded patches
and mask tokens. Masking so much leaves a task that interpolating neighbours cannot solve, and
encoding a quarter of the patches makes pre-training ~3x cheaper.

Code follows the paper's Fig. 1 and Sec. 3 ("Simple implementation"; facts checked against the
official code, github.com/facebookresearch/mae, models_mae.py):
    x -> tokens of the N patches + position (backbone.embed)                           [B, N, D]
    shuffle each image's tokens by argsort of uniform noise, keep the first N(1 - r)   [B, n, D]
    encoder: [CLS] + visible tokens -> blocks -> LayerNorm (backbone.transform)        [B, 1 + n, D]
    decoder: Linear to width d, append N - n mask tokens, unshuffle, add position,
             blocks, LayerNorm, Linear to the p*p*3 pixels of every patch              [B, N, p*p*3]
    L = mean over the masked patches of the per-patch mean squared error (Sec. 3 "Reconstruction
        target"); target: the patch's pixels, each patch normalised by its own mean and std
Paper values: mask ratio r = 0.75 (Fig. 5); decoder 8 blocks of width 512 with 16 heads (Table 1a/b,
models_mae.py); normalised-pixel targets (Table 1d); fixed 2-D sin-cos positions in encoder and
decoder (models_mae.py); AdamW, base lr 1.5e-4 x B/256,
betas (0.9, 0.95), weight decay 0.05, cosine decay after a warm-up; only random resized crop (scale
0.2-1) + flip (Appendix A.1, Table 8; recipe "mae"). The pixels are those the encoder sees: the crop
after the dataset's mean/std normalisation.
Evaluation: `method.encoder` is the plain ViT on whole, unmasked images and its [CLS] state, as for
every method here. The paper fine-tunes and linear-probes, and finds MAE features less linearly
separable than MoCo v3's (Sec. 4.3, Fig. 9). Expect a weak kNN: no loss reaches [CLS] except
through the decoder, and in our short CIFAR-10 runs its kNN stays near the random-init value.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from .. import losses
from ..backbones import TransformerBlock, VisionTransformer, sincos_position_embedding
from ..checks import SSLMinimalError, check_images
from ..method import Method

MASK_RATIO = 0.75       # Sec. 4.1 / Fig. 5: 75% is best for both fine-tuning and linear probing
DECODER_DEPTH = 2       # ours (paper: 8 behind a 24-block ViT-L, Table 1a): lighter than our 4-block encoder
DECODER_DIM = 128       # ours (paper: 512, Table 1b): small_vit's width; 64 ran 1.25x faster on CPU but
#                         reconstructed worse (loss 0.93 vs 0.89 after 4 CIFAR-10 epochs)
DECODER_HEADS = 4       # ours: 32 channels per head, as the paper's 16 heads at width 512 (models_mae.py)
NORM_PIX_LOSS = True    # Table 1d: per-patch normalised pixels are the better target (official --norm_pix_loss)
NORM_PIX_EPS = 1e-6     # models_mae.py: (x - mean) / sqrt(var + 1e-6)
VIT_BACKBONES = ("small_vit", "vit_tiny")


def patchify(images: torch.Tensor, patch_size: int) -> torch.Tensor:
    """[B, C, H, W] -> [B, N, p*p*C]: patches in row-major order (the ViT's token order), each patch
    flattened as (pixel row, pixel column, channel), as models_mae.py does."""
    B, C, H, W = images.shape
    if H != W or H % patch_size:
        raise SSLMinimalError(f"patchify needs square images whose side is a multiple of {patch_size}, got {H}x{W}")
    g, p = H // patch_size, patch_size
    patches = images.reshape(B, C, g, p, g, p).permute(0, 2, 4, 3, 5, 1)              # [B, g, g, p, p, C]
    return patches.reshape(B, g * g, p * p * C)


def unpatchify(patches: torch.Tensor, patch_size: int) -> torch.Tensor:
    """The inverse of patchify: [B, N, p*p*C] -> [B, C, H, W] with H = W = sqrt(N) * p."""
    B, N, P = patches.shape
    g, p = math.isqrt(N), patch_size
    images = patches.reshape(B, g, g, p, p, P // (p * p)).permute(0, 5, 1, 3, 2, 4)   # [B, C, g, p, g, p]
    return images.reshape(B, -1, g * p, g * p)


def random_masking(tokens: torch.Tensor, mask_ratio: float, generator: torch.Generator | None = None):
    """Sec. 3 "Simple implementation": shuffle each image's tokens by sorting uniform noise, keep the first
    n = round(N (1 - mask_ratio)). tokens [B, N, D] -> visible [B, n, D] (shuffled order), mask [B, N]
    (1 = masked), ids_restore [B, N] (each patch's position in the shuffled order: undoes the shuffle)."""
    B, N, D = tokens.shape
    keep = round(N * (1 - mask_ratio))
    if not 0 < keep < N:
        raise SSLMinimalError(f"mask ratio {mask_ratio} keeps {keep} of {N} patches; it must keep at least one "
                              f"and mask at least one: choose a ratio nearer 0.5 or smaller patches")
    source = generator.device if generator is not None else tokens.device
    noise = torch.rand(B, N, generator=generator, device=source).to(tokens.device)      # [B, N]
    ids_shuffle = noise.argsort(dim=1)            # ascending: the first `keep` are visible
    ids_restore = ids_shuffle.argsort(dim=1)      # patch i sits at position ids_restore[i]
    visible = tokens.gather(1, ids_shuffle[:, :keep, None].expand(-1, -1, D))           # [B, n, D]
    return visible, (ids_restore >= keep).float(), ids_restore


class Decoder(nn.Module):
    """Sec. 3 "MAE decoder": encoded visible tokens + a shared, learned mask token per masked patch, in
    patch order, + fixed sin-cos position -> blocks -> LayerNorm -> Linear to pixels. Pre-training only."""

    def __init__(self, encoder_dim: int, grid_size: int, patch_pixels: int, dim: int = DECODER_DIM,
                 depth: int = DECODER_DEPTH, heads: int = DECODER_HEADS):
        super().__init__()
        self.embed = nn.Linear(encoder_dim, dim)
        self.mask_token = nn.Parameter(torch.randn(1, 1, dim) * 0.02)                     # models_mae.py: std 0.02
        self.register_buffer("position", sincos_position_embedding(grid_size, dim)[None])   # [1, N, d]
        self.blocks = nn.ModuleList(TransformerBlock(dim, heads) for _ in range(depth))
        self.norm = nn.LayerNorm(dim)
        self.prediction = nn.Linear(dim, patch_pixels)
        for module in self.modules():                         # models_mae.py: xavier-uniform Linear, zero bias
            if isinstance(module, nn.Linear):
                nn.init.xavier_uniform_(module.weight)
                nn.init.zeros_(module.bias)

    def forward(self, latent: torch.Tensor, ids_restore: torch.Tensor) -> torch.Tensor:
        """latent [B, 1 + n, D] ([CLS] first), ids_restore [B, N] -> predicted pixels [B, N, p*p*3]."""
        x = self.embed(latent)                                                             # [B, 1 + n, d]
        B, N, d = ids_restore.shape[0], ids_restore.shape[1], x.shape[2]
        shuffled = torch.cat([x[:, 1:], self.mask_token.expand(B, N + 1 - x.shape[1], d)], dim=1)   # [B, N, d]
        patches = shuffled.gather(1, ids_restore[..., None].expand(-1, -1, d))             # unshuffle
        x = torch.cat([x[:, :1], patches + self.position], dim=1)   # [CLS] has no position (zero in models_mae.py)
        for block in self.blocks:
            x = block(x)
        return self.prediction(self.norm(x))[:, 1:]                                         # drop [CLS]


class MAE(Method):
    name = "mae"
    optimizer = "adamw"
    learning_rate = 1.5e-4      # Table 8: base lr 1.5e-4, lr = base lr x B / 256
    weight_decay = 0.05         # Table 8
    adam_betas = (0.9, 0.95)    # Table 8: beta1, beta2 = 0.9, 0.95
    augmentation = "mae"        # Table 8: RandomResizedCrop (scale 0.2-1, main_pretrain.py) + flip
    architecture = "vit"

    def __init__(self, mask_ratio: float = MASK_RATIO, decoder_depth: int = DECODER_DEPTH,
                 decoder_dim: int = DECODER_DIM, decoder_heads: int = DECODER_HEADS,
                 norm_pix_loss: bool = NORM_PIX_LOSS, backbone: str = "small_vit", image_size: int = 32,
                 **encoder_options):
        if not 0 < mask_ratio < 1:
            raise SSLMinimalError(f"mask_ratio must be in (0, 1) (the fraction of patches hidden), got {mask_ratio}")
        if not (isinstance(decoder_depth, int) and decoder_depth >= 1):
            raise SSLMinimalError(f"decoder_depth must be an int >= 1 (decoder blocks), got {decoder_depth!r}")
        if backbone not in VIT_BACKBONES:
            raise SSLMinimalError(f"MAE masks the patch tokens of a Vision Transformer; backbone {backbone!r} is not "
                                  f"one: use one of {', '.join(VIT_BACKBONES)}")
        # Fixed sin-cos positions (Sec. 3) for this image size, unless the caller says otherwise. The ViT keeps
        # its default (DeiT) init, with which lesson 14's outputs were made; models_mae.py's own (Xavier-uniform
        # on the fused qkv, [CLS] std 0.02) is backbone_options={"init": "mae"} (backbones.initialise_vit).
        encoder_options["backbone_options"] = {"position_embedding": "sincos", "image_size": image_size,
                                               **(encoder_options.get("backbone_options") or {})}
        super().__init__(backbone=backbone, image_size=image_size, **encoder_options)
        self.mask_ratio, self.norm_pix_loss, self.patch_size = mask_ratio, norm_pix_loss, self.vit.patch_size
        self.decoder = Decoder(self.vit.output_dim, image_size // self.patch_size, self.patch_size ** 2 * 3,
                               decoder_dim, decoder_depth, decoder_heads)

    @property
    def vit(self) -> VisionTransformer:
        return self.encoder.backbone

    def encode(self, x: torch.Tensor, generator: torch.Generator | None = None):
        """Normalised images [B, 3, H, W] -> latent [B, 1 + n, D] of the visible patches only,
        mask [B, N] (1 = masked), ids_restore [B, N]. The masked patches never reach the encoder."""
        tokens = self.vit.embed(x)                                                          # [B, N, D]
        visible, mask, ids_restore = random_masking(tokens, self.mask_ratio, generator)     # [B, n, D]
        return self.vit.transform(visible), mask, ids_restore

    def training_step(self, images: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
        x = self.encoder.normalize(self.augment(images))       # the crop, normalised like the encoder's input
        latent, mask, ids_restore = self.encode(x)
        prediction = self.decoder(latent, ids_restore)                                      # [B, N, p*p*3]
        # Every process holds as many masked patches, so DDP's mean of the gradients is the global mean's.
        return losses.mae_loss(prediction, patchify(x, self.patch_size), mask, self.norm_pix_loss, NORM_PIX_EPS)

    @torch.no_grad()
    def reconstruct(self, images: torch.Tensor, generator: torch.Generator | None = None,
                    paste_visible: bool = False):
        """(masked input, reconstruction, mask) for a figure like the paper's Fig. 2: float [B, 3, H, W] in
        [0, 1] on CPU, one random mask per image (mask: 1 on masked pixels, grey in the masked input). With
        norm_pix_loss each predicted patch gets its true patch's mean and std back (colours come from the
        original: train with norm_pix_loss=False for an honest figure). Like Fig. 2 the output is the
        decoder's everywhere (worse on visible patches: no loss there); paste_visible shows the input there."""
        check_images(images)
        x = images.to(self.decoder.mask_token.device)
        x = x.float() / 255 if x.dtype == torch.uint8 else x.float()
        normalised = self.encoder.normalize(x)
        latent, mask, ids_restore = self.encode(normalised, generator)
        prediction = self.decoder(latent, ids_restore).float()                              # [B, N, p*p*3]
        if self.norm_pix_loss:
            target = patchify(normalised, self.patch_size)                                  # x = x_hat * std + mean
            prediction = prediction * (target.var(-1, keepdim=True) + NORM_PIX_EPS).sqrt() + target.mean(-1, True)
        normalize = self.encoder.normalize                                                  # undo it for display
        reconstruction = (unpatchify(prediction, self.patch_size) * normalize.std + normalize.mean).clamp(0, 1)
        mask_image = unpatchify(mask[..., None].expand_as(prediction), self.patch_size)     # [B, 3, H, W]
        if paste_visible:
            reconstruction = mask_image * reconstruction + (1 - mask_image) * x
        masked_input = (1 - mask_image) * x + mask_image * 0.5
        return masked_input.cpu(), reconstruction.cpu(), mask_image.cpu()
