"""SimCLR v2 — "Big Self-Supervised Models are Strong Semi-Supervised Learners".

Ting Chen, Simon Kornblith, Kevin Swersky, Mohammad Norouzi, Geoffrey Hinton. NeurIPS 2020.
arXiv:2006.10029.

The idea: semi-supervised learning in three steps (Fig. 3). (1) Pretrain with SimCLR, but with a
deeper, 3-layer projection head. (2) Fine-tune on the few labels *from the middle of the head*:
the first head layer is kept as part of the network (Sec. 2.2, "fine-tune from the 1st layer of
the projection head"). (3) Distil the fine-tuned teacher into a student on the unlabelled images,
matching the teacher's softened class distribution (Eq. 2); no labels are needed in this step.

Steps (2) and (3) are small `Method`s, so they reuse `fit` like everything else:

    teacher = ssl_minimal.build("simclr_v2"); fit(teacher, unlabelled, ...)
    tuned = FineTune(teacher, labelled_subset.labels, num_classes=10); fit(tuned, labelled_subset, ...)
    student = Distill(tuned, num_classes=10); fit(student, unlabelled, ...)

`labelled_subset` is e.g. `train.subset(len(train) // 100)` for the paper's 1% setting.
"""

from __future__ import annotations

import torch
from torch import nn

from .. import losses
from ..checks import SSLMinimalError
from ..heads import mlp
from ..method import Method
from .simclr import SimCLR

DISTILLATION_TEMPERATURE = 1.0   # Sec. 2.3 / Appendix: tau = 1 for distillation
FINE_TUNE_FROM_LAYER = 1         # Sec. 2.2: fine-tune from the 1st layer of the 3-layer projection head


class SimCLRv2(SimCLR):
    name = "simclr_v2"
    head_layers = 3          # Sec. 2.2: a 3-layer projection head (two hidden layers + output)


class Classifier(nn.Module):
    """Encoder -> (the first projection-head layers) -> Linear(num_classes). Takes images, returns logits."""

    def __init__(self, encoder: nn.Module, head_layer: nn.Module, feature_dim: int, num_classes: int):
        super().__init__()
        self.encoder, self.head_layer = encoder, head_layer
        self.linear = nn.Linear(feature_dim, num_classes)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.linear(self.head_layer(self.encoder(images)))      # [B, num_classes]


def head_layers_up_to(model: SimCLR, layer: int) -> tuple[nn.Module, int]:
    """The first `layer` Linear -> BN -> ReLU blocks of a SimCLR(v2) MLP head and their output size.
    layer 0 is the encoder output h (SimCLR v1's choice: the whole head is dropped), 1 the first
    hidden layer of the head (SimCLR v2's choice), up to head_layers - 1 (the last hidden layer)."""
    hidden_layers = model.head_layers - 1 if model.projection == "mlp" else 0
    if not (isinstance(layer, int) and 0 <= layer <= hidden_layers):
        raise SSLMinimalError(f"fine-tuning can start from head layer 0 (the encoder output) up to "
                              f"{hidden_layers} (the last hidden layer of this {model.projection!r} head), "
                              f"got {layer!r}")
    blocks = list(model.head.children())[:3 * layer]                   # 3 modules per block
    width = blocks[-3].out_features if layer else model.encoder.output_dim
    return nn.Sequential(*blocks), width


class FineTune(Method):
    """Supervised fine-tuning of a pretrained SimCLR v2 model from the first head layer (Sec. 2.2).

    `labels` are the labels of the (small) dataset given to `fit`, indexed by the `indices` that
    `fit` passes. `from_head_layer`: 0 fine-tunes from the encoder output h (SimCLR v1), 1 from the
    first head layer (the paper's choice), 2 from the second (its projection-head ablation compares them).
    Augmentation: random crop + flip only (Appendix B: fine-tuning "with random crops and
    horizontal flips"). Optimiser: the paper uses LARS with batch 1024; ours is SGD, lr 0.05.
    """
    name = "simclr_v2_finetune"
    optimizer = "sgd"
    learning_rate = 0.05
    weight_decay = 0.0       # Appendix B: no weight decay for fine-tuning
    augmentation = "minimal"

    def __init__(self, pretrained: SimCLR, labels: torch.Tensor, num_classes: int, image_size: int = 32,
                 from_head_layer: int = FINE_TUNE_FROM_LAYER):
        super().__init__(image_size=image_size)
        head_layer, width = head_layers_up_to(pretrained, from_head_layer)
        self.from_head_layer = from_head_layer
        self.encoder = pretrained.encoder            # the network keeps learning (full fine-tuning)
        self.classifier = Classifier(self.encoder, head_layer, width, num_classes)
        self.register_buffer("labels", labels.clone().long())

    def training_step(self, images: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
        logits = self.classifier(self.augment(images))
        return nn.functional.cross_entropy(logits, self.labels[indices])


class Distill(Method):
    """Self-distillation (Sec. 2.3, Eq. 2): a student of the same architecture learns the frozen
    fine-tuned teacher's softened predictions on unlabelled images. The student is a fresh network."""
    name = "simclr_v2_distill"
    optimizer = "sgd"
    learning_rate = 0.05      # ours (the paper uses LARS with its pretraining recipe)
    weight_decay = 1e-6
    augmentation = "minimal"

    def __init__(self, teacher: FineTune, num_classes: int, temperature: float = DISTILLATION_TEMPERATURE,
                 backbone: str = "small_convnet", image_size: int = 32, **encoder_options):
        super().__init__(backbone=backbone, image_size=image_size, **encoder_options)
        self.temperature = temperature
        width = teacher.classifier.linear.in_features
        # The student mirrors the teacher: as many fresh Linear -> BN -> ReLU blocks as the teacher kept
        # of its head (mlp's last, plain Linear is dropped; 0 blocks when it fine-tuned from h).
        head_layer = mlp([self.encoder.output_dim] + [width] * teacher.from_head_layer + [num_classes])[:-1]
        self.classifier = Classifier(self.encoder, head_layer, width, num_classes)
        self.teacher = teacher.classifier
        for parameter in self.teacher.parameters():
            parameter.requires_grad_(False)           # the teacher is fixed

    def training_step(self, images: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
        x = self.augment(images)
        self.teacher.eval()
        with torch.no_grad():                         # stop-gradient: only the student learns
            teacher_logits = self.teacher(x)          # [B, C]
        student_logits = self.classifier(x)           # [B, C]
        return losses.distillation_loss(student_logits, teacher_logits, self.temperature)
