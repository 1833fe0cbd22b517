"""How good are frozen features? kNN, linear probe, retrieval, label noise and collapse checks.

Self-supervised papers judge an encoder by what a *simple* classifier can do with its frozen
features, never by the pretext loss:

  * `knn_accuracy` — the weighted k-nearest-neighbour classifier of InstDisc (Wu et al., 2018,
    "Unsupervised Feature Learning via Non-Parametric Instance Discrimination", arXiv 1805.01978,
    Sec. 3.4). No training at all, so it is cheap enough to run every few epochs as a monitor.
  * `linear_probe` — logistic regression on the frozen features (the "linear evaluation protocol",
    e.g. MoCo, He et al., 2020, arXiv 1911.05722, Sec. 4.1).
  * `nearest_neighbours` and `find_label_noise` — retrieval: which training images does the
    encoder think look alike? Mislabelled images stand out because their neighbours disagree.
  * `collapse_diagnostics` — did the embeddings collapse to a point or to a low-dimensional
    subspace? (SimSiam's per-dimension std, Chen & He, 2021, arXiv 2011.10566, Sec. 4.1; and the
    effective rank of Roy & Vetterli, 2007.)

Typical use, with any encoder that maps images [B, 3, H, W] in [0, 1] to features [B, D]:

    train_features = extract_features(model.encoder, train.images)       # [N, D]
    test_features = extract_features(model.encoder, test.images)         # [M, D]
    knn_accuracy(train_features, train.labels, test_features, test.labels)   # e.g. 0.81

Everything runs on the device the features live on (CPU or GPU); nothing here moves data to a GPU.
"""

from __future__ import annotations

import contextlib
import math
from typing import Callable, Iterator

import torch
import torch.nn.functional as F
from torch import nn

from .checks import SSLMinimalError, check_features, check_images, check_labels

# kNN: InstDisc Sec. 3.4 votes with the k = 200 nearest training images, each weighted by
# exp(s_i / tau). tau = 0.1 is the value of the authors' CIFAR-10 code (lemniscate.pytorch,
# cifar.py, --nce-t 0.1; their ImageNet script uses 0.07) and of most CIFAR kNN monitors since.
KNN_NEIGHBOURS = 200
KNN_TEMPERATURE = 0.1

# Queries are compared with the whole bank in chunks of at most this many similarities
# (2**24 float32 numbers = 64 MiB), so 10,000 queries x 50,000 bank images never need 2 GB at once.
SIMILARITIES_PER_CHUNK = 2 ** 24

# Linear probe: multinomial logistic regression fitted with full-batch L-BFGS, like scikit-learn's
# LogisticRegression (solver="lbfgs") and the linear evaluation of SimCLR's transfer experiments
# (Chen et al. 2020, arXiv 2002.05709, Appendix B). Full-batch steps are few and large, so 50,000
# x 512 features take seconds on 2 CPU cores, there is no learning rate to tune and no randomness.
PROBE_MAX_ITERATIONS = 200     # L-BFGS iterations (scikit-learn stops at 100 by default)
PROBE_HISTORY_SIZE = 10        # L-BFGS memory (scikit-learn/SciPy use 10 as well)
PROBE_GRADIENT_TOLERANCE = 1e-6   # stop when every gradient entry is below this

FEATURE_BATCH_SIZE = 512       # images per forward pass in extract_features
LABEL_NOISE_NEIGHBOURS = 20    # neighbours that vote in find_label_noise
CONSTANT_FEATURE_STD = 1e-6    # below this a feature counts as constant and is only centred


# ----------------------------------------------------------------------------------------------
# Features
@contextlib.contextmanager
def evaluation_mode(module: nn.Module) -> Iterator[None]:
    """Put `module` in eval mode (BatchNorm uses running stats, dropout is off) and afterwards give
    every submodule back the train/eval flag it had before (a frozen BatchNorm stays frozen)."""
    flags = [(submodule, submodule.training) for submodule in module.modules()]
    module.eval()
    try:
        yield
    finally:
        for submodule, training in flags:
            submodule.training = training


def _module_device(encoder: Callable) -> torch.device | None:
    """The device of an nn.Module's first parameter or buffer, None for plain functions."""
    if isinstance(encoder, nn.Module):
        for tensor in list(encoder.parameters()) + list(encoder.buffers()):
            return tensor.device
    return None


def extract_features(encoder: Callable[[torch.Tensor], torch.Tensor], images: torch.Tensor,
                     batch_size: int = FEATURE_BATCH_SIZE,
                     device: str | torch.device | None = None) -> torch.Tensor:
    """Run `encoder` over `images` in batches and return the features, float32 [N, D].

    images: uint8 [N, 3, H, W] in 0..255 (divided by 255 here) or float in [0, 1]. They can stay on
    the CPU: each batch is moved to `device` (default: the encoder's device, else the images').
    An `nn.Module` encoder runs in eval mode under `torch.no_grad()`; its train/eval flags are
    restored afterwards. The features are returned on `device`.
    """
    check_images(images, "images")
    if images.shape[0] == 0:
        raise SSLMinimalError("images is empty (shape [0, 3, H, W]); pass at least one image")
    if not isinstance(batch_size, int) or batch_size < 1:
        raise SSLMinimalError(f"batch_size must be a positive integer, got {batch_size!r}")
    device = torch.device(device) if device is not None else (_module_device(encoder) or images.device)
    mode = evaluation_mode(encoder) if isinstance(encoder, nn.Module) else contextlib.nullcontext()
    batches = []
    with mode, torch.no_grad():
        for start in range(0, images.shape[0], batch_size):
            batch = images[start:start + batch_size].to(device)            # [b, 3, H, W]
            batch = batch.float() / 255 if batch.dtype == torch.uint8 else batch.float()
            features = encoder(batch)                                      # [b, D]
            if not isinstance(features, torch.Tensor) or features.dim() != 2:
                shape = list(features.shape) if isinstance(features, torch.Tensor) else type(features).__name__
                raise SSLMinimalError(f"the encoder must return features of shape [B, D], got {shape}; "
                                      f"pool and flatten feature maps (e.g. use model.encoder, not a "
                                      f"convolutional trunk)")
            batches.append(features.float())
    return torch.cat(batches)                                              # [N, D]


# ----------------------------------------------------------------------------------------------
# Input checks shared by the functions below
def _check_pair(first: torch.Tensor, second: torch.Tensor, first_name: str, second_name: str) -> None:
    """Two feature matrices [N, D] and [M, D] with the same feature dimension D."""
    check_features(first, first_name)
    check_features(second, second_name)
    if first.shape[1] != second.shape[1]:
        raise SSLMinimalError(f"{first_name} {list(first.shape)} and {second_name} {list(second.shape)} must have "
                              f"the same feature dimension D (shape [N, D] and [M, D]); extract both with the "
                              f"same encoder")


def _check_class_labels(labels: torch.Tensor, n: int, name: str) -> None:
    """Integer class labels [n] that are all >= 0 (-1 marks an unlabelled image in data.py)."""
    check_labels(labels, n, name)
    if labels.numel() and labels.min() < 0:
        count = int((labels < 0).sum())
        raise SSLMinimalError(f"{name} contains {count} negative labels (-1 = unlabelled image); use labelled "
                              f"samples only for the kNN bank and for evaluation, e.g. "
                              f"features[labels >= 0] and labels[labels >= 0]")


def _check_k(k: int, available: int, what: str) -> None:
    if not isinstance(k, int) or isinstance(k, bool) or k < 1:
        raise SSLMinimalError(f"k must be a positive integer, got {k!r}")
    if k > available:
        raise SSLMinimalError(f"k = {k} is larger than the number of {what} ({available}); pass "
                              f"k <= {available} or use more {what}")


def _chunk_size(num_gallery: int, chunk_size: int | None) -> int:
    """Queries per chunk so that one chunk's similarity matrix holds about SIMILARITIES_PER_CHUNK numbers."""
    if chunk_size is not None:
        if not isinstance(chunk_size, int) or chunk_size < 1:
            raise SSLMinimalError(f"chunk_size must be a positive integer or None, got {chunk_size!r}")
        return chunk_size
    return max(1, SIMILARITIES_PER_CHUNK // max(num_gallery, 1))


def _top_k_cosine(queries: torch.Tensor, gallery: torch.Tensor, k: int, exclude_self: bool = False,
                  chunk_size: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """The k most cosine-similar gallery rows of every query: (similarities [M, k] descending, indices [M, k]).

    Runs on the gallery's device, in chunks of queries. With exclude_self, query i is gallery row i
    and is never its own neighbour."""
    gallery = F.normalize(gallery.float(), dim=1)                                  # [N, D]
    queries = F.normalize(queries.float(), dim=1)                                  # [M, D]
    step = _chunk_size(gallery.shape[0], chunk_size)
    similarities, indices = [], []
    for start in range(0, queries.shape[0], step):
        chunk = queries[start:start + step].to(gallery.device)                    # [m, D]
        cosine = chunk @ gallery.T                                                 # [m, N], s_i = cos(v_i, f)
        if exclude_self:
            rows = torch.arange(chunk.shape[0], device=gallery.device)
            cosine[rows, rows + start] = -math.inf
        top = cosine.topk(k, dim=1, largest=True, sorted=True)
        similarities.append(top.values)
        indices.append(top.indices)
    return torch.cat(similarities), torch.cat(indices)                            # [M, k], [M, k]


# ----------------------------------------------------------------------------------------------
# Weighted kNN (InstDisc, Sec. 3.4)
def knn_predict(train_features: torch.Tensor, train_labels: torch.Tensor, query_features: torch.Tensor,
                k: int = KNN_NEIGHBOURS, temperature: float = KNN_TEMPERATURE, num_classes: int | None = None,
                chunk_size: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Classify `query_features` [M, D] by a weighted vote of their k nearest `train_features` [N, D].

    Wu et al. 2018 (InstDisc, arXiv 1805.01978), Sec. 3.4: with cosine similarities s_i between the
    query and its k nearest training images N_k, class c gets the score

        w_c = sum_{i in N_k} alpha_i * 1(c_i = c),    alpha_i = exp(s_i / tau)

    and the prediction is the class with the largest score (ties go to the smaller class index).
    Features are L2-normalised here, so any feature scale works.

    Returns (predictions int64 [M], scores float32 [M, C]) on the training features' device.
    C = `num_classes`, default max(train_labels) + 1. Queries are processed in chunks of
    `chunk_size` (default: as many as keep one similarity chunk at 64 MiB).
    """
    _check_pair(train_features, query_features, "train_features", "query_features")
    _check_class_labels(train_labels, train_features.shape[0], "train_labels")
    _check_k(k, train_features.shape[0], "training samples")
    if not temperature > 0:
        raise SSLMinimalError(f"temperature must be > 0 (the weights are exp(s / temperature)), got {temperature}")
    num_classes = int(train_labels.max()) + 1 if num_classes is None else num_classes
    if num_classes <= int(train_labels.max()):
        raise SSLMinimalError(f"num_classes = {num_classes} but train_labels go up to {int(train_labels.max())}; "
                              f"pass num_classes > {int(train_labels.max())} or leave it as None")
    train_labels = train_labels.to(train_features.device)
    similarities, indices = _top_k_cosine(query_features, train_features, k, chunk_size=chunk_size)  # [M, k]
    weights = torch.exp(similarities / temperature)                   # alpha_i = exp(s_i / tau), [M, k]
    neighbour_labels = train_labels[indices]                          # c_i, [M, k]
    scores = torch.zeros(query_features.shape[0], num_classes, device=train_features.device)
    scores.scatter_add_(1, neighbour_labels, weights)                 # w_c = sum_i alpha_i 1(c_i = c), [M, C]
    return scores.argmax(dim=1), scores


def knn_accuracy(train_features: torch.Tensor, train_labels: torch.Tensor, test_features: torch.Tensor,
                 test_labels: torch.Tensor, k: int = KNN_NEIGHBOURS, temperature: float = KNN_TEMPERATURE,
                 chunk_size: int | None = None) -> float:
    """Top-1 accuracy in [0, 1] of the weighted kNN classifier (InstDisc, Sec. 3.4; see `knn_predict`).

    The training features (the "bank") must all be labelled: drop unlabelled images (label -1)
    first. k larger than the bank raises an error; the kNN monitor of `fit` uses k = min(200, N).
    """
    _check_pair(train_features, test_features, "train_features", "test_features")
    _check_class_labels(test_labels, test_features.shape[0], "test_labels")
    if test_features.shape[0] == 0:
        raise SSLMinimalError("test_features is empty (shape [0, D]); pass at least one test sample")
    predictions, _ = knn_predict(train_features, train_labels, test_features, k=k, temperature=temperature,
                                 chunk_size=chunk_size)
    return (predictions == test_labels.to(predictions.device)).float().mean().item()


# ----------------------------------------------------------------------------------------------
# Linear probe
class LinearProbe(nn.Module):
    """Standardise with the training features' mean/std, then one linear layer: features [B, D] -> logits [B, C]."""

    def __init__(self, mean: torch.Tensor, std: torch.Tensor, num_classes: int):
        super().__init__()
        self.register_buffer("mean", mean)                                         # [D]
        self.register_buffer("std", std)                                           # [D]
        self.linear = nn.Linear(mean.shape[0], num_classes)
        nn.init.zeros_(self.linear.weight)          # start from zero: the fit is the same every time
        nn.init.zeros_(self.linear.bias)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.linear((features.float() - self.mean) / self.std)


def linear_probe(train_features: torch.Tensor, train_labels: torch.Tensor, test_features: torch.Tensor,
                 test_labels: torch.Tensor, weight_decay: float | None = None,
                 max_iterations: int = PROBE_MAX_ITERATIONS,
                 return_model: bool = False) -> float | tuple[float, LinearProbe]:
    """Fit a linear classifier on frozen features and return its top-1 test accuracy in [0, 1].

    The linear evaluation protocol: the encoder stays fixed and only a linear layer is trained, with
    cross-entropy. Here that is multinomial logistic regression on features standardised with the
    *training* mean and std (constant features are only centred), minimising

        mean_i CE(W x_i + b, y_i) + weight_decay / 2 * ||W||^2

    with full-batch L-BFGS from W = 0, b = 0 (deterministic: same inputs, same accuracy).
    weight_decay defaults to 1 / N, which is scikit-learn's LogisticRegression default (C = 1 on
    the summed loss). 50,000 x 512 features take a few seconds on 2 CPU cores.

    With `return_model=True` returns (accuracy, probe), where `probe(features)` gives logits [B, C]
    for raw (unstandardised) features.
    """
    _check_pair(train_features, test_features, "train_features", "test_features")
    _check_class_labels(train_labels, train_features.shape[0], "train_labels")
    _check_class_labels(test_labels, test_features.shape[0], "test_labels")
    if train_features.shape[0] == 0 or test_features.shape[0] == 0:
        raise SSLMinimalError(f"linear_probe needs training and test samples, got train_features "
                              f"{list(train_features.shape)} and test_features {list(test_features.shape)}")
    if not isinstance(max_iterations, int) or max_iterations < 1:
        raise SSLMinimalError(f"max_iterations must be a positive integer, got {max_iterations!r}")
    weight_decay = 1 / train_features.shape[0] if weight_decay is None else weight_decay
    if weight_decay < 0:
        raise SSLMinimalError(f"weight_decay must be >= 0, got {weight_decay}")
    device = train_features.device
    features = train_features.float()                                              # [N, D]
    labels = train_labels.to(device)                                               # [N]
    num_classes = max(int(labels.max()), int(test_labels.max())) + 1
    std = features.std(dim=0) if features.shape[0] > 1 else torch.ones(features.shape[1], device=device)
    std = torch.where(std > CONSTANT_FEATURE_STD, std, torch.ones_like(std))
    probe = LinearProbe(features.mean(dim=0), std, num_classes).to(device)
    standardised = (features - probe.mean) / probe.std                             # [N, D], computed once

    optimizer = torch.optim.LBFGS(probe.linear.parameters(), max_iter=max_iterations,
                                  history_size=PROBE_HISTORY_SIZE, tolerance_grad=PROBE_GRADIENT_TOLERANCE,
                                  line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        logits = probe.linear(standardised)                                        # [N, C]
        loss = F.cross_entropy(logits, labels) + weight_decay / 2 * probe.linear.weight.square().sum()
        loss.backward()
        return loss

    optimizer.step(closure)          # one call runs up to max_iterations L-BFGS iterations

    with torch.no_grad():
        predictions = probe(test_features.to(device)).argmax(dim=1)
    accuracy = (predictions == test_labels.to(device)).float().mean().item()
    return (accuracy, probe) if return_model else accuracy


# ----------------------------------------------------------------------------------------------
# Retrieval and label noise
def nearest_neighbours(query_features: torch.Tensor, gallery_features: torch.Tensor, k: int = 5,
                       exclude_self: bool = False,
                       chunk_size: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """The k gallery rows most cosine-similar to each query: (indices int64 [M, k], similarities [M, k]).

    Similarities are sorted from the most similar. With `exclude_self=True` the queries *are* the
    gallery (same rows, same order) and a sample is never returned as its own neighbour.
    Results are on the gallery's device.
    """
    _check_pair(query_features, gallery_features, "query_features", "gallery_features")
    if exclude_self and query_features.shape[0] != gallery_features.shape[0]:
        raise SSLMinimalError(f"exclude_self=True means query i is gallery row i, so both need the same number of "
                              f"rows; got query_features {list(query_features.shape)} and gallery_features "
                              f"{list(gallery_features.shape)}")
    _check_k(k, gallery_features.shape[0] - int(exclude_self), "gallery samples" + (" other than the query" if
                                                                                     exclude_self else ""))
    similarities, indices = _top_k_cosine(query_features, gallery_features, k, exclude_self, chunk_size)
    return indices, similarities


def find_label_noise(features: torch.Tensor, labels: torch.Tensor,
                     k: int = LABEL_NOISE_NEIGHBOURS) -> tuple[torch.Tensor, torch.Tensor]:
    """Flag samples whose label disagrees with their neighbours: (suspicion float [N], predicted int64 [N]).

    suspicion[i] = fraction of the k nearest neighbours of sample i (itself excluded, cosine
    similarity) whose label differs from labels[i]: 0 = all neighbours agree, 1 = none does.
    predicted[i] = the most common label among those neighbours (ties: the smaller label).
    Sort by suspicion, descending, to list the images most likely to be mislabelled.
    """
    check_features(features, "features")
    _check_class_labels(labels, features.shape[0], "labels")
    _check_k(k, features.shape[0] - 1, "other samples")
    labels = labels.to(features.device)
    indices, _ = nearest_neighbours(features, features, k=k, exclude_self=True)   # [N, k]
    neighbour_labels = labels[indices]                                            # [N, k]
    suspicion = (neighbour_labels != labels[:, None]).float().mean(dim=1)          # [N]
    votes = torch.zeros(features.shape[0], int(labels.max()) + 1, device=features.device)
    votes.scatter_add_(1, neighbour_labels, torch.ones_like(neighbour_labels, dtype=votes.dtype))  # [N, C]
    return suspicion, votes.argmax(dim=1)


# ----------------------------------------------------------------------------------------------
# Collapse
def collapse_diagnostics(embeddings: torch.Tensor) -> dict[str, float]:
    """Two numbers that reveal collapsed embeddings [N, D].

    std: the standard deviation of each dimension of the L2-normalised embeddings, averaged over
        dimensions (SimSiam, Chen & He 2021, arXiv 2011.10566, Sec. 4.1 / Fig. 2). Complete
        collapse (every embedding the same vector) gives 0; embeddings spread like an isotropic
        Gaussian give about expected_std = 1 / sqrt(D).
    effective_rank: exp of the entropy of the normalised singular values p_k = sigma_k / sum(sigma)
        of the embedding matrix (Roy & Vetterli 2007, "The effective rank: a measure of effective
        dimensionality", EUSIPCO). 1 when all embeddings lie on one line, D when they use every
        direction equally; "dimensional collapse" is a rank far below D.
    """
    check_features(embeddings, "embeddings")
    if embeddings.shape[0] < 2:
        raise SSLMinimalError(f"collapse_diagnostics needs at least 2 embeddings to measure a spread, "
                              f"got shape {list(embeddings.shape)}")
    embeddings = embeddings.float()
    dimension = embeddings.shape[1]
    normalised = F.normalize(embeddings, dim=1)                                    # [N, D]
    std = normalised.std(dim=0).mean().item()
    singular_values = torch.linalg.svdvals(embeddings)                            # [min(N, D)]
    total = singular_values.sum()
    if total == 0:                                                                 # all-zero embeddings
        effective_rank = 0.0
    else:
        p = singular_values / total
        entropy = -torch.special.xlogy(p, p).sum()                                 # 0 log 0 = 0
        effective_rank = entropy.exp().item()
    return {"std": std, "expected_std": 1 / math.sqrt(dimension), "effective_rank": effective_rank}


@torch.no_grad()
def embeddings_of(method: nn.Module, images: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
    """The method's projector outputs z = projector(encoder(x)) for uint8 images [N, 3, H, W], in eval
    mode, as [N, D] — the vectors whose collapse the no-negatives papers measure (SimSiam Fig. 2).
    Methods without a `projector` give their encoder features. Feed them to `collapse_diagnostics`."""
    check_images(images)
    was_training = method.training
    method.eval()
    device = next(method.parameters()).device
    head = getattr(method, "projector", nn.Identity())
    outputs = [head(method.encoder(images[i:i + batch_size].to(device))).float().cpu()
               for i in range(0, len(images), batch_size)]
    method.train(was_training)
    return torch.cat(outputs)


# ----------------------------------------------------------------------------------------------
# Image-text models (CLIP): zero-shot classification and retrieval
# A model here has encode_image(images) -> [B, D], encode_text(tokens) -> [B, D] and a `tokenizer`
# (ssl_minimal.methods.CLIP); embeddings are compared after L2 normalisation, by cosine similarity.
@torch.no_grad()
def image_embeddings(model: nn.Module, images: torch.Tensor, batch_size: int = FEATURE_BATCH_SIZE) -> torch.Tensor:
    """L2-normalised image embeddings [N, D] of uint8 (or [0, 1] float) images [N, 3, H, W], in eval mode."""
    with evaluation_mode(model):
        return F.normalize(extract_features(model.encode_image, images, batch_size, _module_device(model)), dim=1)


@torch.no_grad()
def text_embeddings(model: nn.Module, texts: list[str] | torch.Tensor, batch_size: int = FEATURE_BATCH_SIZE
                    ) -> torch.Tensor:
    """L2-normalised text embeddings [n, D] of texts (strings, tokenised with model.tokenizer, or token ids [n, L])."""
    tokens = model.tokenizer(texts) if not isinstance(texts, torch.Tensor) else texts
    if len(tokens) == 0:
        raise SSLMinimalError("no texts given; pass at least one")
    device = _module_device(model)
    with evaluation_mode(model):
        embeddings = [model.encode_text(tokens[i:i + batch_size].to(device)).float()
                      for i in range(0, len(tokens), batch_size)]
    return F.normalize(torch.cat(embeddings), dim=1)


@torch.no_grad()
def zero_shot_classifier(model: nn.Module, class_names: list[str], templates: list[str] | tuple[str, ...] = ("{}",)
                         ) -> torch.Tensor:
    """Class embeddings [C, D] from text alone: a linear classifier built without any training image.

    Class c's prompts are templates.format(class_names[c]) ("a photo of a {}" -> "a photo of a dog"; "a"
    becomes "an" before a vowel). With several templates the class embedding is the mean of the prompts'
    normalised embeddings, normalised again: prompt ensembling (CLIP Sec. 3.1.4, the official notebook
    "Prompt_Engineering_for_ImageNet"). Classify with zero_shot_predict (nearest class by cosine).
    """
    from .text import with_articles
    if len(class_names) == 0:
        raise SSLMinimalError("zero-shot classification needs at least one class name, got an empty list")
    if len(templates) == 0 or not all("{}" in template for template in templates):
        raise SSLMinimalError(f"templates must be a non-empty list of prompts with a {{}} for the class name, "
                              f"e.g. ['a photo of a {{}}'], got {list(templates)!r}")
    prompts = [with_articles(template.format(name)) for name in class_names for template in templates]
    embeddings = text_embeddings(model, prompts).view(len(class_names), len(templates), -1)   # [C, T, D]
    return F.normalize(embeddings.mean(dim=1), dim=1)                                          # [C, D]


@torch.no_grad()
def zero_shot_predict(model: nn.Module, images: torch.Tensor, classifier: torch.Tensor) -> torch.Tensor:
    """The class whose embedding (a row of `classifier` [C, D]) is most cosine-similar to each image: int64 [N]."""
    check_features(classifier, "classifier")
    features = image_embeddings(model, images)                                 # [N, D]
    _check_pair(features, classifier, "image embeddings", "classifier")
    return (features @ classifier.to(features.device).t()).argmax(dim=1)       # [N]


def zero_shot_accuracy(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, class_names: list[str],
                       templates: list[str] | tuple[str, ...] = ("{}",)) -> float:
    """Top-1 accuracy in [0, 1] of the zero-shot classifier of `class_names` (label c = class_names[c])."""
    classifier = zero_shot_classifier(model, class_names, templates)
    _check_class_labels(labels, images.shape[0], "labels")
    if len(labels) and int(labels.max()) >= len(class_names):
        raise SSLMinimalError(f"labels go up to {int(labels.max())} but only {len(class_names)} class names were given")
    predictions = zero_shot_predict(model, images, classifier)
    return (predictions.cpu() == labels.cpu()).float().mean().item()


def retrieval_recall(image_features: torch.Tensor, text_features: torch.Tensor, ks: tuple[int, ...] = (1, 5)
                     ) -> dict[str, float]:
    """Recall@k of image -> text and text -> image retrieval, where image i and text i are a pair.

    image_to_text@k: the fraction of images whose own text is among the k texts most cosine-similar to it;
    text_to_image@k the other way (CLIP Sec. 3.1 / Table 13, on Flickr30k and MSCOCO). Returns
    {"image_to_text@1": ..., "text_to_image@1": ..., ...} with values in [0, 1].
    """
    _check_pair(image_features, text_features, "image_features", "text_features")
    if image_features.shape[0] != text_features.shape[0]:
        raise SSLMinimalError(f"retrieval needs one text per image (pair i = row i of both), got "
                              f"{image_features.shape[0]} images and {text_features.shape[0]} texts")
    results = {}
    for name, queries, gallery in (("image_to_text", image_features, text_features),
                                   ("text_to_image", text_features, image_features)):
        for k in ks:
            _check_k(k, gallery.shape[0], "items to retrieve from")
            _, top = _top_k_cosine(queries, gallery, k)                              # [N, k]
            own = torch.arange(queries.shape[0], device=top.device)[:, None]
            results[f"{name}@{k}"] = (top == own).any(dim=1).float().mean().item()
    return results


def zero_shot_report(model: nn.Module, dataset, templates: list[str] | tuple[str, ...] | None = None
                     ) -> dict[str, float]:
    """Zero-shot top-1 on a captioned test set (data.load_captioned) with prompt ensembling over `templates`
    (default: the dataset's prompts, data.PROMPTS): {"accuracy": ...}, plus "seen" and "unseen" (images
    of colour x shape pairs held out of training) when the dataset marks some images unseen."""
    from .data import PROMPTS
    templates = templates or PROMPTS.get(dataset.name, ("{}",))
    classifier = zero_shot_classifier(model, dataset.classes, templates)
    correct = (zero_shot_predict(model, dataset.images, classifier).cpu() == dataset.labels.cpu()).float()   # [N]
    report = {"accuracy": correct.mean().item()}
    unseen = (dataset.attributes or {}).get("unseen")
    if unseen is not None and unseen.any():
        unseen = unseen.cpu()
        report.update(seen=correct[~unseen].mean().item(), unseen=correct[unseen].mean().item())
    return report
