"""DINO — "Emerging Properties in Self-Supervised Vision Transformers".

Mathilde Caron, Hugo Touvron, Ishan Misra, Hervé Jégou, Julien Mairal, Piotr Bojanowski, Armand Joulin.
ICCV 2021. arXiv:2104.14294.

The idea: self-distillation with no labels. A student network learns to give, over K output
dimensions, the probabilities that a momentum teacher (an average of past students) gives for other
views of the same image; the teacher sees only the two global crops, the student every crop.
Collapse is avoided by centring the teacher's outputs (subtract a running mean C) and sharpening
them (a low teacher temperature).

Code follows the paper's Algorithm 1 and Eqs. 3-4, with the official main_dino.py (facebookresearch/dino):
    s = g_s(every crop);  t = g_t(the two global crops) under no_grad              [B, K] per crop
    loss = mean over pairs a != b of H(t_a, s_b),  H(t, s) = -sum softmax((t - C) / tau_t) log softmax(s / tau_s)
    teacher <- l teacher + (1 - l) student,  l cosine from 0.996 to 1              (Sec. 3.1)
    C <- m C + (1 - m) mean over the global batch of t,  m = 0.9                   (Eq. 4)
Head (Sec. 3.1): MLP (hidden 2048, GELU, no BatchNorm with a ViT) -> 256, L2-normalised, weight-normalised
Linear to K. Crops (main_dino.py): 2 global (BYOL's two augmentations, Sec. 3.2) + 8 local at 96/224 of
the side: 16 px at 32 px, a multiple of small_vit's 8 px patches. No stochastic depth here. The teacher
"has better performance than the student throughout the training" (Sec. 3.1) and the repo evaluates
it (eval_knn.py), so `self.encoder` is the teacher's backbone, `self.student_encoder` the trained one.
Collapse lesson (Sec. 5.3, Fig. 7): `centering=False` leaves sharpening alone and one dimension comes
to dominate (the teacher's entropy -> 0); `sharpening=False` (tau_t = tau_s) leaves centring alone
and the output goes uniform (entropy -> log K); either way the teacher-student KL -> 0, and
`collapse_statistics` measures both. `attention_maps` gives the last block's [CLS] attention per
head (Fig. 1, 3); visualize.plot_attention_maps draws it.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .. import augmentations, distributed, evaluate, losses
from ..checks import SSLMinimalError, check_images
from ..heads import mlp
from ..method import Method
from ..momentum import cosine_momentum, momentum_copy, momentum_update

HIDDEN_DIM = 2048             # Sec. 3.1: 3-layer MLP with hidden dimension 2048
BOTTLENECK_DIM = 256          # main_dino.py DINOHead: bottleneck_dim 256, L2-normalised
OUTPUT_DIM = 4096             # ours: K for CIFAR-10, as solo-learn's CIFAR config (paper: 65536 on ImageNet)
STUDENT_TEMPERATURE = 0.1     # Sec. 3.2: tau_s = 0.1
TEACHER_TEMPERATURE = 0.04    # main_dino.py default: tau_t = 0.04 throughout (--teacher_temp)
# (In 100-step CPU runs 0.04 drifts towards uniform outputs and 0.02 does not; lowering tau_t against
# collapse is the authors' advice, facebookresearch/dino issue #43.)
WARMUP_TEACHER_TEMPERATURE = 0.04  # main_dino.py --warmup_teacher_temp; Sec. 3.2: 0.04 -> 0.07 over 30 epochs
TEACHER_WARMUP_EPOCHS = 0     # main_dino.py default (the paper's runs: 30, with tau_t 0.07 at the end)
CENTER_MOMENTUM = 0.9         # main_dino.py DINOLoss: center_momentum = 0.9 (m in Eq. 4)
BASE_MOMENTUM = 0.996         # Sec. 3.1: l follows a cosine from 0.996 to 1
GLOBAL_SCALE = (0.4, 1.0)     # main_dino.py --global_crops_scale
LOCAL_SCALE = (0.05, 0.4)     # main_dino.py --local_crops_scale
NUM_LOCAL_CROPS = 8           # main_dino.py --local_crops_number
CLIP_GRAD = 3.0               # main_dino.py --clip_grad: the largest gradient norm of each parameter
FREEZE_LAST_LAYER_EPOCHS = 1  # main_dino.py --freeze_last_layer


class DINOHead(nn.Module):
    """MLP [D, 2048, 2048, 256] with GELU -> L2-normalise -> weight-normalised Linear(256, K), g = 1."""

    def __init__(self, input_dim: int, hidden_dim: int, bottleneck_dim: int, output_dim: int):
        super().__init__()
        self.mlp = mlp([input_dim, hidden_dim, hidden_dim, bottleneck_dim], norm="none", activation="gelu")
        for layer in self.mlp:                                  # DINOHead's init: truncated normal, zero bias
            if isinstance(layer, nn.Linear):
                nn.init.trunc_normal_(layer.weight, std=0.02)
                nn.init.zeros_(layer.bias)
        self.last_layer = nn.Linear(bottleneck_dim, output_dim, bias=False)   # v [K, 256]; W = v / ||v|| per row

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        z = F.normalize(self.mlp(features), dim=1)                             # [B, 256] on the unit sphere
        with torch.autocast(z.device.type, enabled=False):   # float32 logits: tau_t = 0.04 magnifies rounding
            return z.float() @ F.normalize(self.last_layer.weight.float(), dim=1).t()   # [B, K], cosines


class DINO(Method):
    name = "dino"
    optimizer = "adamw"
    learning_rate = 0.0005     # Sec. 3.2: lr = 0.0005 x batch size / 256
    weight_decay = 0.04        # Sec. 3.2: weight decay cosine from 0.04 ...
    final_weight_decay = 0.4   # ... to 0.4 (fit schedules it per step)
    augmentation = "byol_view1"
    architecture = "vit"

    def __init__(self, output_dim: int = OUTPUT_DIM, hidden_dim: int = HIDDEN_DIM,
                 bottleneck_dim: int = BOTTLENECK_DIM, student_temperature: float = STUDENT_TEMPERATURE,
                 teacher_temperature: float = TEACHER_TEMPERATURE,
                 warmup_teacher_temperature: float = WARMUP_TEACHER_TEMPERATURE,
                 teacher_warmup_epochs: float = TEACHER_WARMUP_EPOCHS, center_momentum: float = CENTER_MOMENTUM,
                 base_momentum: float = BASE_MOMENTUM, num_local_crops: int = NUM_LOCAL_CROPS,
                 local_size: int | None = None, global_scale: tuple[float, float] = GLOBAL_SCALE,
                 local_scale: tuple[float, float] = LOCAL_SCALE,
                 freeze_last_layer_epochs: float = FREEZE_LAST_LAYER_EPOCHS, centering: bool = True,
                 sharpening: bool = True, image_size: int = 32, backbone: str = "small_vit", **encoder_options):
        super().__init__(backbone=backbone, image_size=image_size, **encoder_options)
        if not sharpening:     # the collapse lesson: the teacher as soft as the student
            teacher_temperature = warmup_teacher_temperature = student_temperature
        self.tau_s = student_temperature
        self.tau_t_start, self.tau_t_end = warmup_teacher_temperature, teacher_temperature
        self.teacher_warmup_epochs, self.freeze_last_layer_epochs = teacher_warmup_epochs, freeze_last_layer_epochs
        self.center_momentum, self.centering, self.base_momentum = center_momentum, centering, base_momentum
        self.teacher_momentum = base_momentum
        self.local_size, self.num_local_crops = local_size or image_size // 2, num_local_crops
        self.augment = augmentations.recipe("byol_view1", image_size, scale=global_scale)        # x_1^g
        self.augment_prime = augmentations.recipe("byol_view2", image_size, scale=global_scale)  # x_2^g
        self.augment_local = augmentations.recipe("dino_local", self.local_size, scale=local_scale)
        # student g_s = student_head(student_encoder(x)); teacher g_t: copies that get no gradient
        self.student_encoder = self.encoder
        self.student_head = DINOHead(self.student_encoder.output_dim, hidden_dim, bottleneck_dim, output_dim)
        self.encoder = momentum_copy(self.student_encoder)            # the teacher's backbone, used for evaluation
        self.teacher_head = momentum_copy(self.student_head)
        self.register_buffer("center", torch.zeros(output_dim))      # C [K]
        self.register_buffer("tau_t", torch.tensor(warmup_teacher_temperature if teacher_warmup_epochs
                                                   else teacher_temperature))          # this step's tau_t

    def student(self, crops: torch.Tensor) -> torch.Tensor:
        return self.student_head(self.student_encoder(crops))         # g_s: [N, K]

    def teacher(self, crops: torch.Tensor) -> torch.Tensor:
        return self.teacher_head(self.encoder(crops))                 # g_t: [N, K]

    def teacher_temperature_at(self, progress: float) -> float:
        """tau_t: linear from the warm-up value to the final one over the first `teacher_warmup_epochs`
        (a fraction of the run once `fit` has set self.epochs), then constant (main_dino.py's schedule)."""
        warmup = self.teacher_warmup_epochs / self.epochs if self.epochs else 0.0
        if progress >= warmup:
            return self.tau_t_end
        return self.tau_t_start + (self.tau_t_end - self.tau_t_start) * progress / warmup

    def training_step(self, images: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
        global_crops = torch.cat([self.augment(images), self.augment_prime(images)])          # [2B, 3, 32, 32]
        s = list(self.student(global_crops).chunk(2))                                        # 2 x [B, K]
        if self.num_local_crops:                                                            # [nB, 3, 16, 16]
            local_crops = torch.cat([self.augment_local(images) for _ in range(self.num_local_crops)])
            s += list(self.student(local_crops).chunk(self.num_local_crops))
        with torch.no_grad():                             # stop-gradient: the teacher only gives targets
            t = self.teacher(global_crops)                # [2B, K]: the teacher sees the global crops only
        center = self.center if self.centering else torch.zeros_like(self.center)
        loss = losses.dino_loss(s, list(t.chunk(2)), center, self.tau_s, self.tau_t)
        self.update_center(t)
        return loss

    @torch.no_grad()
    def update_center(self, t: torch.Tensor) -> None:
        """C <- m C + (1 - m) mean of the teacher's outputs t [N, K] over the global batch (Eq. 4)."""
        batch_mean = distributed.all_reduce_sum(t.float().sum(dim=0)) / (len(t) * distributed.world_size())   # [K]
        self.center.mul_(self.center_momentum).add_(batch_mean, alpha=1 - self.center_momentum)

    def after_backward(self, progress: float) -> None:
        for parameter in self.parameters():              # main_dino.py clip_gradients: each parameter on its own
            if parameter.grad is not None:
                torch.nn.utils.clip_grad_norm_(parameter, CLIP_GRAD)
        if self.epochs and progress < self.freeze_last_layer_epochs / self.epochs:   # first epoch: last layer fixed
            self.student_head.last_layer.weight.grad = None

    def after_optimizer_step(self, progress: float) -> None:
        self.teacher_momentum = cosine_momentum(self.base_momentum, progress)   # l: 0.996 -> 1
        # teacher <- l teacher + (1 - l) student
        momentum_update(self.encoder, self.student_encoder, self.teacher_momentum)
        momentum_update(self.teacher_head, self.student_head, self.teacher_momentum)
        self.tau_t.fill_(self.teacher_temperature_at(progress))                 # for the next step

    def collapse_statistics(self, images: torch.Tensor) -> dict[str, float]:
        """Fig. 7's two curves on uint8 `images` [N, 3, H, W] (no augmentation, eval mode): the mean
        entropy of the teacher's target P_t and the mean KL(P_t || P_s). Both near 0: one dimension
        dominates (no centring); entropy near log K with KL near 0: uniform outputs (no sharpening)."""
        teacher = evaluate.extract_features(nn.Sequential(self.encoder, self.teacher_head), images)   # [N, K]
        student = evaluate.extract_features(nn.Sequential(self.student_encoder, self.student_head), images)
        center = self.center if self.centering else torch.zeros_like(self.center)
        log_p_t = F.log_softmax((teacher - center) / self.tau_t, dim=1)
        log_p_s = F.log_softmax(student / self.tau_s, dim=1)
        entropy = -(log_p_t.exp() * log_p_t).sum(dim=1).mean()
        kl = (log_p_t.exp() * (log_p_t - log_p_s)).sum(dim=1).mean()
        return {"entropy": entropy.item(), "kl": kl.item()}


@torch.no_grad()
def attention_maps(method: nn.Module, images: torch.Tensor) -> torch.Tensor:
    """The last block's attention of [CLS] to the patches in `method.encoder` (DINO: the teacher), per
    head, as [B, heads, g, g] for images [B, 3, H, W], g = H / patch size. Each map is rescaled to sum
    to 1 over the patches ([CLS]'s attention to itself left out, as in visualize_attention.py)."""
    backbone = method.encoder.backbone
    if not hasattr(backbone, "last_self_attention"):
        raise SSLMinimalError(f"attention maps need a Vision Transformer encoder ('small_vit' or 'vit_tiny'), "
                              f"got {method.encoder.name!r}")
    check_images(images)
    x = images.to(next(method.encoder.parameters()).device)
    x = x.float() / 255 if x.dtype == torch.uint8 else x.float()
    with evaluate.evaluation_mode(method.encoder):
        attention = backbone.last_self_attention(method.encoder.normalize(x))[:, :, 0, 1:]   # [B, h, N]
    grid = x.shape[-1] // backbone.patch_size
    return (attention / attention.sum(dim=-1, keepdim=True)).reshape(len(x), backbone.heads, grid, grid)
