"""Each loss against a direct hand computation on a tiny example."""

import math

import torch
import torch.nn.functional as F

from ssl_minimal import losses


def test_nce_loss_matches_hand_computation():
    # n = 4 training images, m = 2 noise samples -> m * P_n = 2 / 4 = 0.5
    positive = torch.tensor([0.5])
    noise = torch.tensor([[0.1, 0.2]])
    h_positive = 0.5 / (0.5 + 0.5)
    expected = -(math.log(h_positive) + math.log(0.5 / (0.1 + 0.5)) + math.log(0.5 / (0.2 + 0.5)))
    assert math.isclose(losses.nce_loss(positive, noise, num_samples=4).item(), expected, rel_tol=1e-6)


def test_nce_loss_averages_batch_and_sums_noise():
    positive = torch.tensor([0.5, 0.25])
    noise = torch.tensor([[0.1, 0.2, 0.3], [0.05, 0.4, 0.0]])
    n, m = 10, 3
    total = 0.0
    for b in range(2):
        total -= math.log(positive[b] / (positive[b] + m / n))
        for j in range(m):
            total -= math.log((m / n) / (noise[b, j] + m / n))
    assert math.isclose(losses.nce_loss(positive, noise, n).item(), total / 2, rel_tol=1e-5)


def test_nonparametric_softmax_matches_loop():
    torch.manual_seed(0)
    v = F.normalize(torch.randn(3, 4), dim=1)
    bank = F.normalize(torch.randn(5, 4), dim=1)
    indices = torch.tensor([4, 0, 2])
    tau = 0.07
    expected = 0.0
    for b in range(3):
        scores = [math.exp(float(bank[j] @ v[b]) / tau) for j in range(5)]
        expected -= math.log(scores[indices[b]] / sum(scores))
    got = losses.nonparametric_softmax_loss(v, bank, indices, tau).item()
    assert math.isclose(got, expected / 3, rel_tol=1e-5)


def test_invariance_spreading_loss_hand_example():
    # Two images, identical views, orthogonal embeddings, tau = 1.
    # Anchor e1 sees: its other view (sim 1) and two copies of e2 (sim 0):
    # P(pos) = e / (e + 2), P(neg) = 1 / (e + 2) each.
    z = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    e = math.e
    per_anchor = math.log(e / (e + 2)) + 2 * math.log(1 - 1 / (e + 2))
    got = losses.invariance_spreading_loss(z, z.clone(), temperature=1.0).item()
    assert math.isclose(got, -per_anchor, rel_tol=1e-6)


def test_invariance_spreading_loss_matches_loop_on_random_input():
    torch.manual_seed(1)
    z1, z2 = torch.randn(3, 5) * 3, torch.randn(3, 5)
    tau = 0.5
    x = F.normalize(torch.cat([z1, z2]), dim=1)
    B = 3
    total = 0.0
    for a in range(2 * B):
        others = [c for c in range(2 * B) if c != a]
        denominator = sum(math.exp(float(x[c] @ x[a]) / tau) for c in others)
        positive = (a + B) % (2 * B)
        total += math.log(math.exp(float(x[positive] @ x[a]) / tau) / denominator)
        for b in others:
            if b != positive:
                total += math.log(1 - math.exp(float(x[b] @ x[a]) / tau) / denominator)
    got = losses.invariance_spreading_loss(z1, z2, tau).item()
    assert math.isclose(got, -total / (2 * B), rel_tol=1e-5)


def test_invariance_spreading_loss_is_lower_when_views_agree():
    torch.manual_seed(2)
    z1 = torch.randn(8, 16)
    aligned = losses.invariance_spreading_loss(z1, z1 + 0.01 * torch.randn(8, 16), 0.1)
    shuffled = losses.invariance_spreading_loss(z1, z1[torch.randperm(8)], 0.1)
    assert aligned < shuffled
