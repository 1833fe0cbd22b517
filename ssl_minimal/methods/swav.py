"""SwAV — "Unsupervised Learning of Visual Features by Contrasting Cluster Assignments".

Mathilde Caron, Ishan Misra, Julien Mairal, Priya Goyal, Piotr Bojanowski, Armand Joulin.
NeurIPS 2020. arXiv:2006.09882.

The idea: instead of comparing features of two views directly, assign each view to a set of K
learnable prototypes ("codes") and predict the code of one view from the other ("swapped
prediction"). The codes are computed online with a few Sinkhorn-Knopp iterations that force an
equal partition of the batch over the prototypes — this constraint is what prevents the trivial
solution of sending every image to the same prototype.

Code follows the paper's Fig. 1 and Algorithm 1 (Sec. 3.1):
    z = normalize(projector(encoder(x)))             for every crop              [B, 128]
    scores = z C^T   (prototypes C: rows of unit norm)                             [B, K]
    q = sinkhorn(scores of a global crop, eps 0.05, 3 iterations), no gradient     (Eq. 3)
    L = swapped prediction of every other crop's softmax(scores / 0.1) to q         (Eqs. 1-2)
Multi-crop (Sec. 3.2): 2 global crops (scale 0.14-1) + 6 local crops at half the size (scale
0.05-0.14; the options `global_scale=`, `local_scale=` change them), codes from the global crops only.
Prototypes: normalised after every step and frozen during the first epoch (Appendix A). Small batches:
a queue of past embeddings joins the batch in Sinkhorn (Sec. 4 / Appendix A) so that K prototypes can
be partitioned over more than B samples.
Several processes: Sinkhorn partitions the *global* batch (losses.sinkhorn sums over processes).
Our queue holds the same rows on every process (it is filled with the global batch), so each
process adds only its share of the queue rows: the global Sinkhorn sees every row exactly once,
as the official code's per-GPU queues of length queue_length / world_size do.
Paper values: projector 2048 -> 128, temperature 0.1, epsilon 0.05, 3 iterations, LARS, weight
decay 1e-6; lr 0.6 for batch 256 (the authors' batch-256 configuration, github.com/facebookresearch/swav).
Our choice: K = 100 prototypes for CIFAR-10 (the paper uses 3000 on ImageNet).
`equal_partition=False` replaces Sinkhorn by a plain softmax (the collapse lesson, where
`prototype_usage` counts how many images pick each prototype).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .. import augmentations, distributed, evaluate, losses
from ..heads import mlp
from ..memory import Queue
from ..method import Method

HIDDEN_DIM = 2048        # Sec. 4.1 / Appendix A: projection head 2048 -> 128
PROJECTION_DIM = 128
NUM_PROTOTYPES = 100     # ours for CIFAR-10; paper: 3000 on ImageNet
TEMPERATURE = 0.1        # Eq. 2: tau = 0.1
EPSILON = 0.05           # Eq. 3: epsilon = 0.05
SINKHORN_ITERATIONS = 3  # Sec. 3.1 / Algorithm 1: 3 iterations
NUM_LOCAL_CROPS = 6      # Sec. 3.2: 2 x 224 + 6 x 96 on ImageNet; here 2 x 32 + 6 x 16
GLOBAL_SCALE = (0.14, 1.0)   # crop areas as fractions of the image: the official code's min/max_scale_crops
LOCAL_SCALE = (0.05, 0.14)


class SwAV(Method):
    name = "swav"
    optimizer = "lars"
    learning_rate = 0.6    # authors' batch-256 configuration
    weight_decay = 1e-6    # Appendix A
    augmentation = "simclr"   # not used: SwAV draws its views with augmentations.multi_crop

    def __init__(self, num_prototypes: int = NUM_PROTOTYPES, hidden_dim: int = HIDDEN_DIM,
                 projection_dim: int = PROJECTION_DIM, temperature: float = TEMPERATURE,
                 epsilon: float = EPSILON, sinkhorn_iterations: int = SINKHORN_ITERATIONS,
                 num_local_crops: int = NUM_LOCAL_CROPS, local_size: int | None = None,
                 global_scale: tuple[float, float] = GLOBAL_SCALE, local_scale: tuple[float, float] = LOCAL_SCALE,
                 queue_size: int = 0, equal_partition: bool = True, freeze_prototypes_epochs: float = 1.0, image_size: int = 32, **encoder_options):
        super().__init__(image_size=image_size, **encoder_options)
        self.temperature, self.epsilon, self.iterations = temperature, epsilon, sinkhorn_iterations
        self.equal_partition = equal_partition
        self.image_size, self.local_size = image_size, local_size or image_size // 2
        self.num_local_crops = num_local_crops
        self.global_scale, self.local_scale = tuple(global_scale), tuple(local_scale)   # areas, fractions of the image
        self.freeze_prototypes_epochs = freeze_prototypes_epochs
        self.projector = mlp([self.encoder.output_dim, hidden_dim, projection_dim])
        self.prototypes = nn.Linear(projection_dim, num_prototypes, bias=False)   # C: [K, 128]
        self.normalize_prototypes()
        # One queue per global crop (Appendix A), used only once it holds real embeddings.
        self.queues = nn.ModuleList([Queue(queue_size, projection_dim) for _ in range(2)]) if queue_size else None
        self.register_buffer("queued", torch.zeros((), dtype=torch.long))

    @torch.no_grad()
    def normalize_prototypes(self) -> None:
        """c_k <- c_k / ||c_k||: the prototypes live on the unit sphere, like the embeddings."""
        self.prototypes.weight.copy_(F.normalize(self.prototypes.weight, dim=1))

    def embed(self, images: torch.Tensor) -> torch.Tensor:
        """z = normalize(projector(encoder(x))), [B, 128]."""
        return F.normalize(self.projector(self.encoder(images)), dim=1)

    @torch.no_grad()
    def codes(self, scores: torch.Tensor, view: int, z: torch.Tensor) -> torch.Tensor:
        """Codes q [B, K] of one global view: Sinkhorn over the batch (+ queue), or plain softmax."""
        batch_size, scores = scores.shape[0], scores.float()   # Sinkhorn in float32 even under autocast
        if self.queues is not None and self.queued >= len(self.queues[view]):
            queued = distributed.local_slice(self.queues[view].keys)                # this process's share [Q / W, 128]
            scores = torch.cat([scores, queued @ self.prototypes.weight.t()])        # [B + Q / W, K]
        if self.queues is not None:
            self.queues[view].enqueue(z)
        if not self.equal_partition:   # ablation: no equal-partition constraint
            return torch.softmax(scores[:batch_size] / self.epsilon, dim=1)
        return losses.sinkhorn(scores, self.epsilon, self.iterations)[:batch_size]

    def training_step(self, images: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
        crops = augmentations.multi_crop(images, self.image_size, self.local_size, num_global=2,
                                         num_local=self.num_local_crops, global_scale=self.global_scale,
                                         local_scale=self.local_scale)
        batch_size = images.shape[0]
        z_global = self.embed(torch.cat(crops[:2]))                            # [2B, 128]
        z = list(z_global.chunk(2))
        if self.num_local_crops:
            z += list(self.embed(torch.cat(crops[2:])).chunk(self.num_local_crops))   # [B, 128] each
        scores = [self.prototypes(z_v) for z_v in z]                           # z^T C, [B, K] each
        codes = [self.codes(scores[v].detach(), v, z[v].detach()) for v in range(2)]   # no gradient
        if self.queues is not None:
            self.queued += batch_size * distributed.world_size()   # enqueue adds every process's rows
        return losses.swav_loss(scores, codes, self.temperature)

    @property
    def freeze_prototypes_fraction(self) -> float:
        """Prototypes are frozen for the first epoch(s): that fraction of training (`fit` sets self.epochs)."""
        return self.freeze_prototypes_epochs / self.epochs if self.epochs else 0.0

    def after_backward(self, progress: float) -> None:
        if progress < self.freeze_prototypes_fraction:   # first epoch: prototypes do not move
            self.prototypes.weight.grad = None

    def after_optimizer_step(self, progress: float) -> None:
        self.normalize_prototypes()

    def prototype_usage(self, images: torch.Tensor) -> torch.Tensor:
        """How many of `images` (uint8 [N, 3, H, W]) have each prototype as their best match, in eval
        mode: counts [K]. Collapse without the equal partition shows as one prototype taking all N."""
        z = F.normalize(evaluate.embeddings_of(self, images), dim=1).to(self.prototypes.weight.device)  # [N, 128]
        with torch.no_grad():
            best = self.prototypes(z).argmax(dim=1)                            # [N]
        return torch.bincount(best, minlength=self.prototypes.out_features).cpu()   # [K]
