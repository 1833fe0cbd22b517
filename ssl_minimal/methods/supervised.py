"""Supervised baseline — the reference point every self-supervised number is compared with.

Not a self-supervised method, so it is not in `METHODS`: the encoder is trained with a linear
classifier and cross-entropy on the labels, using the same augmentations, loop and budgets as the
self-supervised methods. Lesson 0 (metric learning) uses its embeddings; later lessons use it as
the "same labels, no pre-training" baseline.

    model = Supervised(labels=train.labels, num_classes=train.num_classes)
    ssl_minimal.fit(model, train, budget="cpu")
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..checks import SSLMinimalError
from ..method import Method


class Supervised(Method):
    name = "supervised"
    learning_rate = 0.1        # standard CIFAR ResNet recipe: SGD 0.1, momentum 0.9, weight decay 5e-4
    weight_decay = 5e-4
    augmentation = "minimal"   # random resized crop (area 8-100%, SimCLR's) + flip; not CIFAR's usual padded crop

    def __init__(self, labels: torch.Tensor, num_classes: int, **encoder_options):
        super().__init__(**encoder_options)
        if (labels < 0).any():
            raise SSLMinimalError("Supervised needs a label for every training image; this dataset has "
                                  "unlabelled images (label -1): use a labelled split")
        self.register_buffer("labels", labels.clone())    # [n], looked up by the batch's indices
        self.classifier = nn.Linear(self.encoder.output_dim, num_classes)

    def logits(self, images: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.encoder(images))      # [B, num_classes]

    def training_step(self, images: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(self.logits(self.augment(images)), self.labels[indices])
