"""Collapse: the claims of the no-negatives papers, each checked by a short run WITH and WITHOUT the
ingredient that prevents collapse (the same runs, larger and on CIFAR-10, are notebook 10's curves).

Deterministic seeds, the embedded shapes data at 16 x 16 pixels (1,024 training images, 512 probe
images), a width-8 ConvNet and small heads, 4 epochs of batch 64 (64 steps): a few seconds per run.
Measured with `collapse_diagnostics` on the projector outputs z of the probe images (eval mode): the
std of the L2-normalised z per dimension (about 1/sqrt(d) when spread, 0 when collapsed to a point)
and the effective rank (1 when all z lie on one line). The numbers in the docstrings are the
measured ones; the thresholds sit about halfway between the two sides.
"""

import functools
import math

import pytest
import torch

import ssl_minimal
from ssl_minimal import evaluate

pytestmark = pytest.mark.slow

TRAIN_SAMPLES, PROBE_SAMPLES, IMAGE_SIZE, EPOCHS, BATCH_SIZE = 1024, 512, 16, 4, 64


@functools.lru_cache(maxsize=None)   # the same run is the reference of several tests: train it once
def train_and_embed(name: str, learning_rate: float | None = None, **options):
    """Train method `name` on 1,024 shapes images (width-8 ConvNet); return (model, z of 512 test images)."""
    train = ssl_minimal.data.load("shapes", "train", image_size=IMAGE_SIZE).subset(TRAIN_SAMPLES, seed=0)
    probe = ssl_minimal.data.load("shapes", "test", image_size=IMAGE_SIZE).subset(PROBE_SAMPLES, seed=0).images
    torch.manual_seed(0)
    model = ssl_minimal.build(name, dataset=train, backbone_options={"width": 8}, **options)
    ssl_minimal.fit(model, train, "smoke", epochs=EPOCHS, batch_size=BATCH_SIZE, learning_rate=learning_rate,
                    warmup_epochs=0, progress=False, seed=0)
    return model, evaluate.embeddings_of(model, probe)


def diagnostics(name: str, **options) -> dict[str, float]:
    """collapse_diagnostics of the run, with the std also as a fraction of 1/sqrt(d): "spread"."""
    result = evaluate.collapse_diagnostics(train_and_embed(name, **options)[1])
    return {**result, "spread": result["std"] / result["expected_std"]}


# ----------------------------------------------------------------------------------------------
# SimSiam (Chen & He 2021, arXiv 2011.10566)
SIMSIAM = dict(projection_dim=64, bottleneck_dim=16, learning_rate=0.3)


def test_simsiam_collapses_without_stop_gradient():
    """Fig. 2: without stop-gradient the loss goes to its minimum -1 and the outputs collapse. The
    projector ends with BatchNorm (as in the paper), so z cannot become one point in a batch; it
    collapses onto a line: effective rank 2.6 and spread 0.54, against 13.3 and 0.94 with it. (On a
    line z/|z| is +-u, whose per-dimension std need not be small: the rank is the clearer measure.)"""
    kept, removed = diagnostics("simsiam", **SIMSIAM), diagnostics("simsiam", stop_gradient=False, **SIMSIAM)
    assert kept["spread"] > 0.6 and kept["effective_rank"] > 7
    assert removed["effective_rank"] < 0.4 * kept["effective_rank"] and removed["spread"] < 0.75 * kept["spread"]


def test_simsiam_collapses_without_predictor():
    """Table 1(a): removing the predictor (p = z) makes the model collapse: effective rank 2.9 vs 13.3."""
    kept, removed = diagnostics("simsiam", **SIMSIAM), diagnostics("simsiam", predictor=False, **SIMSIAM)
    assert removed["effective_rank"] < 0.4 * kept["effective_rank"] and removed["spread"] < kept["spread"]


# ----------------------------------------------------------------------------------------------
# BYOL (Grill et al. 2020) without BatchNorm (Fetterman & Albrecht 2020; Richemond et al. 2020)
BYOL = dict(hidden_dim=256, projection_dim=32, learning_rate=1.0)
BYOL_HEAD_NORMS = {"both": {}, "none": dict(projector_batch_norm=False, predictor_batch_norm=False),
                   "projector only": dict(predictor_batch_norm=False),
                   "predictor only": dict(projector_batch_norm=False)}


def test_byol_collapses_without_batch_norm_in_the_heads():
    """No BatchNorm in projector and predictor (the encoder keeps its own): the outputs collapse
    (spread 0.01, effective rank 1.3; with BatchNorm 0.80 and 18.0). LARS lr 1.0 for batch 64, not
    the paper's 0.2 x 64/256: with LARS every update is lr x 0.001 x |w|, too small to move in 64 steps."""
    with_bn, without_bn = diagnostics("byol", **BYOL), diagnostics("byol", **BYOL_HEAD_NORMS["none"], **BYOL)
    assert with_bn["spread"] > 0.5
    assert without_bn["spread"] < 0.3 * with_bn["spread"]
    assert without_bn["effective_rank"] < 0.5 * with_bn["effective_rank"]


@pytest.mark.parametrize("head", ["projector only", "predictor only"])
def test_byol_batch_norm_in_either_head_is_enough(head):
    """Fetterman & Albrecht 2020: "a single batch normalization layer in one of the MLPs is
    sufficient" (55.3% and 48% vs 28.3% without, random 28.8%, ResNet-18 on STL-10). Here: spread
    0.49 (projector only) and 0.42 (predictor only), effective rank 10.0 both, vs 0.01 and 1.3."""
    none = diagnostics("byol", **BYOL_HEAD_NORMS["none"], **BYOL)
    one = diagnostics("byol", **BYOL_HEAD_NORMS[head], **BYOL)
    assert one["spread"] > 2 * none["spread"] and one["effective_rank"] > 2 * none["effective_rank"]


def test_byol_without_batch_statistics_group_norm_and_weight_standardisation():
    """Richemond et al. 2020: GroupNorm + weight standardisation everywhere, no batch statistics at all,
    trains without collapse when initialised like BatchNorm and optimised by LARS on every parameter
    (byol.py): spread 0.24, effective rank 11.3. Without weight standardisation in the heads 0.075 and
    4.0, without the initialisation 0.017 and 1.6, with BYOL's usual LARS groups 0.035 and 2.0."""
    group_ws = diagnostics("byol", norm="group_ws", **BYOL)
    assert group_ws["spread"] > 0.12 and group_ws["effective_rank"] > 6


# ----------------------------------------------------------------------------------------------
# Barlow Twins (Zbontar et al. 2021, arXiv 2103.03230)
# The paper's lambda = 5e-3 is for D = 8192: the off-diagonal sum has D(D - 1) terms, so we keep the
# paper's lambda * D = 41 (5e-3 with D = 128 keeps few dimensions apart in 64 steps: rank 9.0 vs 5.4).
BARLOW_D = 128
BARLOW = dict(projection_dim=BARLOW_D, learning_rate=1.0)
BARLOW_LAMBDA = 5e-3 * 8192 / BARLOW_D


def test_barlow_twins_without_redundancy_reduction_collapses_dimensionally():
    """Eq. 1 with lambda = 0 keeps only the invariance term: nothing stops every dimension from
    carrying the same signal, so z collapses to a few directions (dimensional collapse: effective
    rank 8.2 of 128, from 28 at initialisation); the off-diagonal term keeps 38 in use."""
    kept = diagnostics("barlow_twins", lambd=BARLOW_LAMBDA, **BARLOW)
    invariance_only = diagnostics("barlow_twins", lambd=0.0, **BARLOW)
    assert kept["effective_rank"] > 20 and invariance_only["effective_rank"] < 0.5 * kept["effective_rank"]


# ----------------------------------------------------------------------------------------------
# SwAV (Caron et al. 2020, arXiv 2006.09882)
SWAV = dict(hidden_dim=64, projection_dim=32, num_prototypes=30, num_local_crops=2)


def test_swav_without_equal_partition_sends_everything_to_one_prototype():
    """Sec. 3.1: without the equal-partition constraint (plain softmax codes) the trivial solution
    assigns every image to the same prototype; Sinkhorn codes keep many in use."""
    probe = ssl_minimal.data.load("shapes", "test", image_size=IMAGE_SIZE).subset(PROBE_SAMPLES, seed=0).images
    sinkhorn_usage = train_and_embed("swav", **SWAV)[0].prototype_usage(probe)
    softmax_usage = train_and_embed("swav", equal_partition=False, **SWAV)[0].prototype_usage(probe)
    assert sinkhorn_usage.sum() == softmax_usage.sum() == PROBE_SAMPLES
    assert (sinkhorn_usage > 0).sum() >= 15 and sinkhorn_usage.max() < 0.4 * PROBE_SAMPLES
    assert softmax_usage.max() > 0.9 * PROBE_SAMPLES


# ----------------------------------------------------------------------------------------------
# DINO (Caron et al. 2021, arXiv 2104.14294, Sec. 5.3, Fig. 7)
@functools.lru_cache(maxsize=None)
def dino_statistics(**options) -> dict[str, float]:
    """DINO with a tiny ViT (width 32, 2 blocks, 4x4 patches on 16 px), K = 64, 2 local crops, lr 1e-3, 64
    steps; then `collapse_statistics` (the teacher's entropy and KL(P_t || P_s)) on 512 test images."""
    train = ssl_minimal.data.load("shapes", "train", image_size=IMAGE_SIZE).subset(TRAIN_SAMPLES, seed=0)
    probe = ssl_minimal.data.load("shapes", "test", image_size=IMAGE_SIZE).subset(PROBE_SAMPLES, seed=0).images
    torch.manual_seed(0)
    vit = {"dim": 32, "depth": 2, "heads": 2, "patch_size": 4, "image_size": IMAGE_SIZE}
    model = ssl_minimal.build("dino", dataset=train, backbone_options=vit, hidden_dim=64, bottleneck_dim=16,
                              output_dim=64, num_local_crops=2, **options)
    ssl_minimal.fit(model, train, "smoke", epochs=EPOCHS, batch_size=BATCH_SIZE, learning_rate=1e-3,
                    warmup_epochs=0, progress=False, seed=0)
    return model.collapse_statistics(probe)


def test_dino_collapses_to_one_dimension_without_centering_and_to_uniform_without_sharpening():
    """Fig. 7: without centring one dimension dominates (entropy 0.001, KL 0.006 measured); without
    sharpening the output goes uniform (entropy 4.149 of log K = 4.159). The full method keeps both
    apart (entropy 4.02, KL 0.42 at this tiny scale, where it too drifts towards uniform: dino.py)."""
    log_k = math.log(64)
    full = dino_statistics()
    no_centering, no_sharpening = dino_statistics(centering=False), dino_statistics(sharpening=False)
    assert full["entropy"] > 2 and full["kl"] > 0.1
    assert no_centering["entropy"] < 0.05 and no_centering["kl"] < 0.05
    assert no_sharpening["entropy"] > 0.99 * log_k > full["entropy"]
