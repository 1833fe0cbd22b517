"""The no-negatives losses (SwAV, BYOL, SimSiam, Barlow Twins) against hand computations with loops."""

import math

import torch

from ssl_minimal import losses


def _sinkhorn_loop(scores, epsilon, iterations):
    """SwAV Algorithm 1 written with Python loops over a K x B list of lists."""
    B, K = scores.shape
    q = [[math.exp(float(scores[b, k]) / epsilon) for b in range(B)] for k in range(K)]   # K x B
    total = sum(map(sum, q))
    q = [[x / total for x in row] for row in q]
    for _ in range(iterations):
        q = [[x / sum(row) / K for x in row] for row in q]                                  # prototypes
        column_sums = [sum(q[k][b] for k in range(K)) for b in range(B)]
        q = [[q[k][b] / column_sums[b] / B for b in range(B)] for k in range(K)]            # samples
    return torch.tensor([[q[k][b] * B for k in range(K)] for b in range(B)])               # B x K


def test_sinkhorn_matches_hand_written_loop():
    torch.manual_seed(0)
    scores = torch.randn(6, 4, dtype=torch.float64) * 0.3
    got = losses.sinkhorn(scores, epsilon=0.5, iterations=3)
    assert torch.allclose(got, _sinkhorn_loop(scores, 0.5, 3).double(), atol=1e-10)


def test_sinkhorn_codes_are_distributions_and_partition_the_batch_equally():
    torch.manual_seed(1)
    B, K = 32, 8
    # Every sample prefers prototype 0: plain softmax codes would all pile onto it.
    scores = torch.randn(B, K) * 0.1
    scores[:, 0] += 0.5
    q = losses.sinkhorn(scores, epsilon=0.05, iterations=3)
    assert torch.allclose(q.sum(dim=1), torch.ones(B), atol=1e-5)            # each row is a distribution
    assert (q >= 0).all()
    assert torch.allclose(q.sum(dim=0), torch.full((K,), B / K), rtol=0.1)   # ~equal share after 3 iterations
    exact = losses.sinkhorn(scores, epsilon=0.05, iterations=200)
    assert torch.allclose(exact.sum(dim=0), torch.full((K,), B / K), rtol=1e-3)
    softmax_share = torch.softmax(scores / 0.05, dim=1).sum(dim=0)
    assert softmax_share[0] > 0.9 * B                                        # what Sinkhorn prevents


def test_sinkhorn_is_stable_over_the_whole_range_of_cosine_scores():
    # Scores are cosines in [-1, 1]; exp(1 / 0.05) alone would be e^20 per entry, fine, but sums of
    # many such entries overflow float16/bfloat16. The max-subtraction keeps every value <= 1.
    scores = torch.tensor([[1.0, -1.0, 0.0], [-1.0, 1.0, 1.0], [1.0, 1.0, -1.0]])
    q = losses.sinkhorn(scores.bfloat16(), epsilon=0.05, iterations=3)
    assert torch.isfinite(q).all() and torch.allclose(q.float().sum(dim=1), torch.ones(3), atol=2e-2)


def test_swav_loss_swapped_prediction_by_hand():
    torch.manual_seed(2)
    s1, s2, s3 = torch.randn(3, 4), torch.randn(3, 4), torch.randn(3, 4)
    q1, q2 = torch.softmax(torch.randn(3, 4), 1), torch.softmax(torch.randn(3, 4), 1)
    T = 0.1

    def ell(z, q):   # -sum_k q_k log softmax(z / T)_k, averaged over the batch, with loops
        total = 0.0
        for b in range(3):
            norm = sum(math.exp(float(z[b, k]) / T) for k in range(4))
            total -= sum(float(q[b, k]) * math.log(math.exp(float(z[b, k]) / T) / norm) for k in range(4))
        return total / 3

    two_views = (ell(s2, q1) + ell(s1, q2)) / 2
    assert math.isclose(losses.swav_loss([s1, s2], [q1, q2], T).item(), two_views, rel_tol=1e-5)
    multi_crop = (ell(s2, q1) + ell(s3, q1) + ell(s1, q2) + ell(s3, q2)) / 4
    assert math.isclose(losses.swav_loss([s1, s2, s3], [q1, q2], T).item(), multi_crop, rel_tol=1e-5)


def test_byol_loss_is_two_minus_two_cosine():
    p = torch.tensor([[1.0, 0.0], [3.0, 4.0]])
    z = torch.tensor([[0.0, 2.0], [3.0, 4.0]])
    # pair 0: orthogonal -> 2; pair 1: parallel -> 0; mean 1. Also ||p/|p| - z/|z|||^2 by hand:
    assert math.isclose(losses.byol_loss(p, z).item(), 1.0, abs_tol=1e-6)
    torch.manual_seed(3)
    p, z = torch.randn(5, 7), torch.randn(5, 7)
    expected = sum(float(((p[b] / p[b].norm() - z[b] / z[b].norm()) ** 2).sum()) for b in range(5)) / 5
    assert math.isclose(losses.byol_loss(p, z).item(), expected, rel_tol=1e-5)


def test_byol_loss_differentiates_through_both_arguments():
    p, z = torch.randn(4, 3, requires_grad=True), torch.randn(4, 3, requires_grad=True)
    losses.byol_loss(p, z).backward()
    assert p.grad.abs().sum() > 0 and z.grad.abs().sum() > 0    # the stop-gradient is the method's job


def test_negative_cosine_by_hand():
    p = torch.tensor([[1.0, 1.0], [2.0, 0.0]])
    z = torch.tensor([[1.0, 0.0], [-1.0, 0.0]])
    expected = -(1 / math.sqrt(2) + (-1.0)) / 2
    assert math.isclose(losses.negative_cosine(p, z).item(), expected, rel_tol=1e-6)


def test_barlow_twins_loss_matches_loops():
    torch.manual_seed(4)
    B, D, lambd = 6, 3, 0.3
    z1, z2 = torch.randn(B, D, dtype=torch.float64), torch.randn(B, D, dtype=torch.float64) * 2 + 1

    def normalised(z, i):
        mean = sum(float(z[b, i]) for b in range(B)) / B
        std = math.sqrt(sum((float(z[b, i]) - mean) ** 2 for b in range(B)) / B + 1e-5)
        return [(float(z[b, i]) - mean) / std for b in range(B)]

    expected = 0.0
    for i in range(D):
        for j in range(D):
            c_ij = sum(a * b for a, b in zip(normalised(z1, i), normalised(z2, j))) / B
            expected += (1 - c_ij) ** 2 if i == j else lambd * c_ij ** 2
    assert math.isclose(losses.barlow_twins_loss(z1, z2, lambd).item(), expected, rel_tol=1e-9)


def test_barlow_twins_loss_is_zero_for_identical_decorrelated_views():
    # Two identical views whose dimensions are uncorrelated and standardised: C = I, loss = 0.
    z = torch.tensor([[1.0, 1.0], [1.0, -1.0], [-1.0, 1.0], [-1.0, -1.0]])
    assert losses.barlow_twins_loss(z, z.clone(), lambd=1.0, eps=0.0).item() < 1e-10
    # Perfectly redundant dimensions are penalised by the off-diagonal term only.
    redundant = torch.tensor([[1.0, 1.0], [-1.0, -1.0], [1.0, 1.0], [-1.0, -1.0]])
    assert math.isclose(losses.barlow_twins_loss(redundant, redundant, lambd=0.5, eps=0.0).item(), 0.5 * 2, rel_tol=1e-6)
