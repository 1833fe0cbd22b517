"""MoCo v3 — "An Empirical Study of Training Self-Supervised Vision Transformers".

Xinlei Chen, Saining Xie, Kaiming He. ICCV 2021. arXiv:2104.02057.

The idea: MoCo without a queue. A query encoder (backbone + projector + predictor) must pick, for
each image, the key that a slowly moving momentum encoder (backbone + projector) gives another view
of it, among the keys of the whole (global) batch; with a ViT, training is unstable, and a frozen
random patch projection (the first layer) is the paper's trick against it (Sec. 4.2).

Code follows the paper's Algorithm 1:
    q1, q2 = f_q(x1), f_q(x2)             # f_q = predictor(projector(backbone)), [N, C] each
    k1, k2 = f_k(x1), f_k(x2)             # f_k = projector(backbone), momentum encoder, no gradient
    loss = ctr(q1, k2) + ctr(q2, k1)      # symmetrised
    ctr(q, k) = 2 tau * CrossEntropy(q k^T / tau, labels = range(N))     # losses.moco_v3_contrastive_loss
    update(f_q); f_k = m f_k + (1 - m) f_q
q and k are L2-normalised (official moco/builder.py). Several processes: each process contrasts its
queries with the keys of all processes (distributed.gather, keys have no gradient) and its positives
sit at rank * N + i, as in the official code.
Values for ViT (Sec. 5 and the official repo github.com/facebookresearch/moco-v3: README's ViT
commands, main_moco.py, moco/builder.py, vits.py): AdamW, lr 1.5e-4 x B/256, weight decay 0.1,
tau 0.2 (ResNet: 1.0), m 0.99 rising to 1 on a half-cycle cosine (--moco-m-cos), projector
3-layer MLP and predictor 2-layer MLP, hidden 4096, output 256, BatchNorm on every layer (the
last one without affine), Linear layers without bias; fixed 2-D sin-cos position embedding; patch
projection Xavier-uniform initialised and frozen (--stop-grad-conv1); the rest of the ViT initialised
as vits.py does (backbones.initialise_vit "moco_v3": Xavier-uniform Linear layers with q, k and v
as three blocks, [CLS] std 1e-6); BYOL's two asymmetric augmentations with crop scale 0.08-1
(recipes byol_view1 / byol_view2). Our library keeps weight decay off biases and norm weights
(Method.parameter_groups); the official code decays every tensor.
Lesson options: `freeze_patch_embedding=False` trains the patch projection (the paper's unstable
baseline of Sec. 4.2); the instability shows as dips in history.knn_accuracy and jumps in
history.loss (the paper's training curves are kNN accuracy); `temperature`, `hidden_dim`, `projection_dim`;
`backbone="small_convnet"` (or "resnet18") puts a ConvNet under the same loss and optimiser, to compare.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .. import augmentations, distributed, losses
from ..checks import SSLMinimalError
from ..heads import mlp
from ..method import Method
from ..momentum import cosine_momentum, momentum_copy, momentum_update

TEMPERATURE = 0.2      # Sec. 5 / README's ViT commands: --moco-t=.2 (ResNet: 1.0)
HIDDEN_DIM = 4096      # Sec. 5 / main_moco.py --moco-mlp-dim 4096
PROJECTION_DIM = 256   # Sec. 5 / main_moco.py --moco-dim 256
BASE_MOMENTUM = 0.99   # main_moco.py --moco-m 0.99, with --moco-m-cos: cosine increase to 1
VIT_BACKBONES = ("small_vit", "vit_tiny")
CONVNET_BACKBONES = ("small_convnet", "resnet18")   # the paper's ResNet-50 runs (tau 1.0, LARS); here for comparison


class MoCoV3(Method):
    name = "moco_v3"
    optimizer = "adamw"
    learning_rate = 1.5e-4   # Sec. 5 / README's ViT commands: --lr=1.5e-4, x BatchSize / 256
    weight_decay = 0.1       # Sec. 5 / README's ViT commands: --weight-decay=.1
    augmentation = "byol_view1"
    architecture = "vit"

    def __init__(self, temperature: float = TEMPERATURE, hidden_dim: int = HIDDEN_DIM,
                 projection_dim: int = PROJECTION_DIM, base_momentum: float = BASE_MOMENTUM,
                 freeze_patch_embedding: bool = True, backbone: str = "small_vit", image_size: int = 32,
                 backbone_options: dict | None = None, **encoder_options):
        if backbone not in VIT_BACKBONES + CONVNET_BACKBONES:
            raise SSLMinimalError(f"MoCo v3 takes a Vision Transformer ({', '.join(VIT_BACKBONES)}) or, to compare, "
                                  f"a ConvNet ({', '.join(CONVNET_BACKBONES)}); got {backbone!r}")
        if not temperature > 0:
            raise SSLMinimalError(f"MoCo v3 temperature must be > 0 (paper: {TEMPERATURE}), got {temperature}")
        if not 0 <= base_momentum <= 1:
            raise SSLMinimalError(f"MoCo v3 base_momentum must be in [0, 1] (paper: {BASE_MOMENTUM}), "
                                  f"got {base_momentum}")
        if min(hidden_dim, projection_dim) < 1:
            raise SSLMinimalError(f"MoCo v3 hidden_dim and projection_dim must be >= 1, got {hidden_dim} and "
                                  f"{projection_dim}")
        self.vit = backbone in VIT_BACKBONES
        if self.vit:   # fixed 2-D sin-cos position embedding and the official init (Sec. 5 / vits.py)
            backbone_options = {"position_embedding": "sincos", "image_size": image_size, "init": "moco_v3",
                                **(backbone_options or {})}
        super().__init__(backbone=backbone, image_size=image_size, backbone_options=backbone_options,
                         **encoder_options)
        self.augment_prime = augmentations.recipe("byol_view2", image_size)   # the second, asymmetric view
        self.temperature, self.base_momentum, self.m = temperature, base_momentum, base_momentum
        self.freeze_patch_embedding = freeze_patch_embedding and self.vit
        if self.vit:
            self.random_patch_projection(freeze_patch_embedding)

        # f_q = predictor(projector(encoder)); Linear layers without bias, BatchNorm everywhere (the
        # last one without affine), as the official _build_mlp for ViT.
        self.projector = mlp([self.encoder.output_dim, hidden_dim, hidden_dim, projection_dim],
                             last_batch_norm=True, last_bias=False)          # 3 layers
        self.predictor = mlp([projection_dim, hidden_dim, projection_dim],
                             last_batch_norm=True, last_bias=False)          # 2 layers, query side only
        # f_k: a copy of backbone + projector (no predictor) that receives no gradients.
        self.key_encoder = momentum_copy(self.encoder)
        self.key_projector = momentum_copy(self.projector)

    @torch.no_grad()
    def random_patch_projection(self, freeze: bool) -> None:
        """The patch projection (a Linear per patch) gets the official Xavier-uniform init and zero bias
        (vits.py); freeze=True stops its gradient for good: a fixed random projection (Sec. 4.2)."""
        patch = self.encoder.backbone.patch_embedding                      # Conv2d, weight [D, 3, p, p]
        nn.init.xavier_uniform_(patch.weight.view(patch.weight.shape[0], -1))   # fans 3 p^2 and D
        nn.init.zeros_(patch.bias)
        patch.requires_grad_(not freeze)

    def gradient_norm_groups(self) -> dict[str, list[nn.Parameter]]:
        """Sec. 4.1's monitor: the patch projection (the first layer) apart from the rest of the
        backbone, for training.GradientNorms. A frozen projection has no gradient to record."""
        patch = list(self.encoder.backbone.patch_embedding.parameters()) if self.vit else []
        return {"patch projection": patch,
                "rest of the backbone": [p for p in self.encoder.parameters() if all(p is not q for q in patch)]}

    def training_step(self, images: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
        x1, x2 = self.augment(images), self.augment_prime(images)          # [N, 3, H, W] each
        q1 = F.normalize(self.predictor(self.projector(self.encoder(x1))), dim=1)   # [N, C]
        q2 = F.normalize(self.predictor(self.projector(self.encoder(x2))), dim=1)
        with torch.no_grad():                                               # the keys are targets only
            k1 = F.normalize(self.key_projector(self.key_encoder(x1)), dim=1)       # [N, C]
            k2 = F.normalize(self.key_projector(self.key_encoder(x2)), dim=1)
        return self.ctr(q1, k2) + self.ctr(q2, k1)                          # loss = ctr(q1, k2) + ctr(q2, k1)

    def ctr(self, q: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
        """Algorithm 1's ctr: this process's queries against the keys of the global batch."""
        k_all = distributed.gather(k)                                       # [W N, C], no gradient
        offset = distributed.rank() * q.shape[0]                            # labels = rank * N + range(N)
        return losses.moco_v3_contrastive_loss(q, k_all, self.temperature, offset)

    def after_optimizer_step(self, progress: float) -> None:
        self.momentum_update_key_encoder(progress)

    @torch.no_grad()
    def momentum_update_key_encoder(self, progress: float) -> None:
        """f_k <- m f_k + (1 - m) f_q (Algorithm 1), m rising from 0.99 to 1 on a half-cycle cosine."""
        self.m = cosine_momentum(self.base_momentum, progress)
        momentum_update(self.key_encoder, self.encoder, self.m)
        momentum_update(self.key_projector, self.projector, self.m)
