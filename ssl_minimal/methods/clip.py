"""CLIP — "Learning Transferable Visual Models From Natural Language Supervision".

Alec Radford, Jong Wook Kim, Chris Hallacy, et al. ICML 2021. arXiv:2103.00020.

The idea: learn images from the text that comes with them. An image encoder and a text encoder are
trained together so that, in a batch of N (image, caption) pairs, each image is most similar to its
own caption among the N captions, and each caption to its own image among the N images: a contrastive
loss whose "classes" are texts. Afterwards any list of class names becomes a classifier with no
training ("a photo of a {label}." -> text embedding -> nearest to the image): zero-shot transfer
(evaluate.zero_shot_classifier).

Code follows the paper's Figure 3:
    I_f = image_encoder(I)                   # [n, d_i]  self.encoder (the core's ConvNet or ViT)
    T_f = text_encoder(T)                    # [n, d_t]  text.TextTransformer, state at <end>
    I_e = l2_normalize(I_f @ W_i)            # [n, d_e]  W_i = self.image_projection
    T_e = l2_normalize(T_f @ W_t)            # [n, d_e]  W_t = self.text_projection
    logits = I_e @ T_e^T * exp(t)            # [n, n]    t = self.log_logit_scale
    loss = (CE(logits, rows) + CE(logits, columns)) / 2        # losses.clip_loss (normalises inside)
Sec. 2.5: t is learned, initialised to log(1 / 0.07) and exp(t) clipped at 100; a random square crop
is the only augmentation (recipe "clip": no flip, no colour change, since captions name them).
Several processes: the n x n matrix spans the global batch: I_e and T_e are gathered with their
gradients (distributed.gather_with_gradient), so every process computes the loss of the whole batch.
Values: Appendix F, Tables 19 and 21 (ViT-B/32): Adam(W) with beta2 0.98, decoupled weight decay 0.2 (not
on gains, biases or t), cosine schedule with warm-up. The paper's lr (5e-4) is for batches of 32,768
and 32 epochs of 400M pairs; our `learning_rate` (per 256 pairs, scaled by `fit`) comes from a CPU pilot
on shapes (course/lessons/13_clip.md). Text transformer: 63M parameters, 12 layers of width 512 in the
paper; here 2 layers of width 64 over a vocabulary of a few dozen words (text.py).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from .. import distributed, losses
from ..checks import SSLMinimalError
from ..method import Method
from ..text import TextTransformer, Tokenizer

INITIAL_TEMPERATURE = 0.07   # Sec. 2.5: "initialized to the equivalent of 0.07"
MAX_LOGIT_SCALE = 100.0      # Sec. 2.5: "clipped to prevent scaling the logits by more than 100"
EMBEDDING_DIM = 64           # the joint space (paper: 512 for ViT-B/32)
TEXT_WIDTH, TEXT_DEPTH, TEXT_HEADS = 64, 2, 4     # paper: 512, 12, 8
VIT_BACKBONES = ("small_vit", "vit_tiny")


class CLIP(Method):
    name = "clip"
    optimizer = "adamw"
    learning_rate = 2e-3       # per 256 pairs, from our CPU pilot (paper: 5e-4 for 32,768 pairs)
    weight_decay = 0.2         # Table 19
    adam_betas = (0.9, 0.98)   # Table 19
    augmentation = "clip"
    uses_captions = True       # `fit` passes each batch's captions, dataset.captions[indices]

    def __init__(self, tokenizer: Tokenizer | None = None, embedding_dim: int = EMBEDDING_DIM,
                 text_width: int = TEXT_WIDTH, text_depth: int = TEXT_DEPTH, text_heads: int = TEXT_HEADS,
                 initial_temperature: float = INITIAL_TEMPERATURE, max_logit_scale: float = MAX_LOGIT_SCALE,
                 backbone: str = "small_convnet", image_size: int = 32, backbone_options: dict | None = None,
                 **encoder_options):
        if not isinstance(tokenizer, Tokenizer):
            raise SSLMinimalError("CLIP needs the tokenizer of its captions: build it with "
                                  "ssl_minimal.build('clip', dataset=data.load_captioned(...)) or pass tokenizer=")
        if not (initial_temperature > 0 and 1 / initial_temperature <= max_logit_scale):
            raise SSLMinimalError(f"CLIP's initial_temperature must be > 0 with 1 / initial_temperature <= "
                                  f"max_logit_scale ({max_logit_scale}); paper: {INITIAL_TEMPERATURE}, got "
                                  f"{initial_temperature}")
        if min(embedding_dim, text_width, text_depth, text_heads) < 1:
            raise SSLMinimalError("CLIP's embedding_dim, text_width, text_depth and text_heads must be >= 1")
        if backbone in VIT_BACKBONES:
            backbone_options = {"image_size": image_size, **(backbone_options or {})}
        super().__init__(backbone=backbone, image_size=image_size, backbone_options=backbone_options,
                         **encoder_options)
        self.tokenizer, self.max_logit_scale = tokenizer, max_logit_scale
        self.text_encoder = TextTransformer(len(tokenizer), tokenizer.context_length, tokenizer.end_id,
                                            text_width, text_depth, text_heads)
        self.image_projection = nn.Linear(self.encoder.output_dim, embedding_dim, bias=False)   # W_i
        self.text_projection = nn.Linear(text_width, embedding_dim, bias=False)                 # W_t
        self.log_logit_scale = nn.Parameter(torch.tensor(math.log(1 / initial_temperature)))   # t

    def logit_scale(self) -> torch.Tensor:
        """exp(t), clipped at max_logit_scale (Sec. 2.5)."""
        return self.log_logit_scale.exp().clamp(max=self.max_logit_scale)

    def encode_image(self, images: torch.Tensor) -> torch.Tensor:
        """Images [B, 3, H, W] (uint8 or float in [0, 1]) -> I_f @ W_i, [B, d_e] (not normalised)."""
        return self.image_projection(self.encoder(images))

    def encode_text(self, tokens: torch.Tensor) -> torch.Tensor:
        """Token ids int64 [B, L] (from self.tokenizer) -> T_f @ W_t, [B, d_e] (not normalised)."""
        return self.text_projection(self.text_encoder(tokens))

    def training_step(self, images: torch.Tensor, indices: torch.Tensor,
                      captions: torch.Tensor | None = None) -> torch.Tensor:
        texts = self.pick_captions(captions, len(images))                  # [n, L]
        image_embeddings = self.encode_image(self.augment(images))          # I_f @ W_i  [n, d_e]
        text_embeddings = self.encode_text(texts)                           # T_f @ W_t  [n, d_e]
        # the global batch: every process's pairs, with gradients back to the process that made them
        image_embeddings = distributed.gather_with_gradient(image_embeddings)   # [N, d_e]
        text_embeddings = distributed.gather_with_gradient(text_embeddings)     # [N, d_e]
        return losses.clip_loss(image_embeddings, text_embeddings, self.logit_scale())

    def pick_captions(self, captions: torch.Tensor | None, n: int) -> torch.Tensor:
        """One of each image's K captions at random (the text side's only augmentation): [n, K, L] -> [n, L]."""
        length = self.tokenizer.context_length
        if captions is None:
            raise SSLMinimalError("CLIP trains on (image, caption) pairs: give fit a dataset with captions "
                                  "(data.load_captioned(...))")
        if (not isinstance(captions, torch.Tensor) or captions.dtype != torch.int64 or captions.dim() != 3
                or captions.shape[0] != n or captions.shape[2] != length):
            given = f"{captions.dtype} {list(captions.shape)}" if isinstance(captions, torch.Tensor) else type(captions).__name__
            raise SSLMinimalError(f"CLIP's captions must be token ids int64 [{n}, K, {length}] (K captions per "
                                  f"image, context length {length}), got {given}")
        choice = torch.randint(captions.shape[1], (n,), device=captions.device)    # [n]
        return captions[torch.arange(n, device=captions.device), choice]            # [n, L]

    @torch.no_grad()
    def after_optimizer_step(self, progress: float) -> None:
        # keep t itself in range too, so it cannot drift past the clip where it gets no gradient
        self.log_logit_scale.clamp_(max=math.log(self.max_logit_scale))
