"""Collapse: the claims of the no-negatives papers, each checked by a short run WITH and WITHOUT the
ingredient that prevents collapse. Deterministic seeds, the embedded shapes data (1,024 training
images, 512 probe images), a width-8 ConvNet and small heads, 8 epochs of batch 64 (128 steps):
a few seconds per run on 2 CPU cores. The collapse notebook can reuse `train_and_embed`.

Measured with `collapse_diagnostics` on the projector outputs z of the probe images (eval mode):
std of the L2-normalised z per dimension (1/sqrt(d) when spread, 0 when collapsed to a point) and
the effective rank (1 when all z lie on a line).
"""

import functools

import pytest
import torch

import ssl_minimal
from ssl_minimal import evaluate

pytestmark = pytest.mark.slow

TRAIN_SAMPLES, PROBE_SAMPLES, EPOCHS, BATCH_SIZE = 1024, 512, 8, 64


@functools.lru_cache(maxsize=None)   # the same run is the "with" side of two tests: train it once
def train_and_embed(name: str, epochs: int = EPOCHS, learning_rate: float | None = None, seed: int = 0,
                    **options):
    """Train method `name` on 1,024 shapes images (width-8 ConvNet), return (model, z of 512 test images)."""
    train = ssl_minimal.data.load("shapes", "train").subset(TRAIN_SAMPLES, seed=0)
    probe = ssl_minimal.data.load("shapes", "test").subset(PROBE_SAMPLES, seed=0).images
    torch.manual_seed(seed)
    model = ssl_minimal.build(name, dataset=train, backbone_options={"width": 8}, **options)
    ssl_minimal.fit(model, train, "smoke", epochs=epochs, batch_size=BATCH_SIZE, learning_rate=learning_rate,
                    warmup_epochs=0, progress=False, seed=seed)
    return model, evaluate.embeddings_of(model, probe)


def _diagnostics(name, **options):
    model, z = train_and_embed(name, **options)
    return model, z, evaluate.collapse_diagnostics(z)


SIMSIAM = dict(projection_dim=64, bottleneck_dim=16, learning_rate=0.3)


def test_simsiam_collapses_without_stop_gradient():
    """Chen & He 2021, Fig. 2: without stop-gradient the loss goes to its minimum -1 and the outputs
    collapse. Here the projector ends with BatchNorm (as in the paper), so z cannot become exactly one
    point in a batch; it collapses onto a line (effective rank ~2) with the std well below 1/sqrt(d)."""
    _, _, kept = _diagnostics("simsiam", **SIMSIAM)
    _, _, removed = _diagnostics("simsiam", stop_gradient=False, **SIMSIAM)
    expected = kept["expected_std"]
    assert kept["std"] > 0.8 * expected and kept["effective_rank"] > 8
    assert removed["std"] < 0.5 * expected and removed["effective_rank"] < 3


def test_simsiam_collapses_without_predictor():
    """Chen & He 2021, Table 1(a): removing the predictor (p = z) makes the model collapse."""
    _, _, kept = _diagnostics("simsiam", **SIMSIAM)
    _, _, removed = _diagnostics("simsiam", predictor=False, **SIMSIAM)
    assert removed["effective_rank"] < 0.5 * kept["effective_rank"]
    assert removed["std"] < 0.75 * kept["std"]


BYOL = dict(hidden_dim=64, projection_dim=32)


def test_byol_degrades_without_batch_norm_in_the_heads():
    """Removing BatchNorm from BYOL's projector and predictor makes it collapse or degrade badly
    (Fetterman & Albrecht 2020; Richemond et al. 2020, arXiv 2010.10241, Table 1)."""
    _, _, with_bn = _diagnostics("byol", **BYOL)
    _, _, without_bn = _diagnostics("byol", projector_batch_norm=False, predictor_batch_norm=False, **BYOL)
    expected = with_bn["expected_std"]
    assert with_bn["std"] > 0.5 * expected
    assert without_bn["std"] < 0.3 * expected
    assert without_bn["effective_rank"] < 0.5 * with_bn["effective_rank"]


def test_barlow_twins_without_redundancy_reduction_has_a_much_lower_effective_rank():
    """Zbontar et al. 2021, Eq. 1: with lambda = 0 only the invariance term remains, nothing stops all
    dimensions from carrying the same signal. At this budget (D = 64, LARS lr 2.0, 128 steps) the
    effective rank with lambda = 0 is about half of the one with the paper's lambda = 5e-3 (~3.5 vs
    ~6.4), a clear but not dramatic gap: the invariance term alone does not collapse to a point."""
    options = dict(projection_dim=64, learning_rate=2.0)
    _, _, paper = _diagnostics("barlow_twins", **options)
    _, _, invariance_only = _diagnostics("barlow_twins", lambd=0.0, **options)
    assert invariance_only["effective_rank"] < 0.7 * paper["effective_rank"]


def prototype_usage(model, z: torch.Tensor) -> torch.Tensor:
    """How many of the probe images pick each SwAV prototype as their best match: [K] counts."""
    scores = model.prototypes(torch.nn.functional.normalize(z, dim=1))
    return torch.bincount(scores.argmax(dim=1), minlength=model.prototypes.out_features)


def test_swav_without_equal_partition_sends_everything_to_one_prototype():
    """Caron et al. 2020, Sec. 3.1: without the equal-partition constraint (plain softmax codes) the
    trivial solution assigns every image to the same prototype; Sinkhorn codes keep many in use."""
    options = dict(hidden_dim=64, projection_dim=32, num_prototypes=30, num_local_crops=2)
    model, z = train_and_embed("swav", **options)
    sinkhorn_usage = prototype_usage(model, z)
    model, z = train_and_embed("swav", equal_partition=False, **options)
    softmax_usage = prototype_usage(model, z)
    assert (sinkhorn_usage > 0).sum() >= 15 and sinkhorn_usage.max() < 0.4 * PROBE_SAMPLES
    assert softmax_usage.max() > 0.9 * PROBE_SAMPLES
