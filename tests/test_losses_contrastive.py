"""Contrastive losses (InfoNCE, NT-Xent, CPC, CMC) and SimCLR v2's distillation vs hand computations."""

import math

import torch
import torch.nn.functional as F

from ssl_minimal import losses


def _unit(*shape, seed=0):
    return F.normalize(torch.randn(*shape, generator=torch.Generator().manual_seed(seed)), dim=-1)


def test_info_nce_matches_hand_computation():
    q, k, queue = _unit(3, 4, seed=0), _unit(3, 4, seed=1), _unit(5, 4, seed=2)
    tau = 0.07
    expected = 0.0
    for n in range(3):
        positive = math.exp(float(q[n] @ k[n]) / tau)
        negatives = sum(math.exp(float(q[n] @ queue[j]) / tau) for j in range(5))
        expected -= math.log(positive / (positive + negatives))
    assert math.isclose(losses.info_nce(q, k, queue, tau).item(), expected / 3, rel_tol=1e-5)


def test_info_nce_does_not_normalise_its_inputs():
    """Documented: the caller normalises (as MoCo's code). Scaling q changes the loss."""
    q, k, queue = _unit(3, 4, seed=0), _unit(3, 4, seed=1), _unit(5, 4, seed=2)
    assert not math.isclose(losses.info_nce(q, k, queue, 0.2).item(), losses.info_nce(2 * q, k, queue, 0.2).item())


def test_nt_xent_matches_hand_computation_over_all_2n_anchors():
    z1, z2 = torch.randn(3, 5, generator=torch.Generator().manual_seed(0)), torch.randn(3, 5)
    tau = 0.5
    z = [v / v.norm() for v in torch.cat([z1, z2])]
    n = 3
    total = 0.0
    for i in range(2 * n):
        j = (i + n) % (2 * n)
        denominator = sum(math.exp(float(z[i] @ z[k]) / tau) for k in range(2 * n) if k != i)
        total -= math.log(math.exp(float(z[i] @ z[j]) / tau) / denominator)
    assert math.isclose(losses.nt_xent(z1, z2, tau).item(), total / (2 * n), rel_tol=1e-5)


def test_nt_xent_is_low_for_matching_views_and_high_for_swapped_ones():
    z = _unit(8, 16, seed=3)
    assert losses.nt_xent(z, z, 0.1) < losses.nt_xent(z, z.roll(1, dims=0), 0.1)


def test_cpc_info_nce_matches_hand_computation():
    predictions, targets = torch.randn(4, 3), torch.randn(4, 3)
    expected = 0.0
    for i in range(4):
        scores = [math.exp(float(predictions[i] @ targets[j])) for j in range(4)]
        expected -= math.log(scores[i] / sum(scores))
    assert math.isclose(losses.cpc_info_nce(predictions, targets).item(), expected / 4, rel_tol=1e-5)


def test_cmc_loss_is_both_directions_of_a_hand_computation():
    a, b = torch.randn(4, 6), torch.randn(4, 6)
    tau = 0.07
    va, vb = [v / v.norm() for v in a], [v / v.norm() for v in b]

    def one_direction(anchors, others):
        total = 0.0
        for i in range(4):
            scores = [math.exp(float(anchors[i] @ others[j]) / tau) for j in range(4)]
            total -= math.log(scores[i] / sum(scores))
        return total / 4

    expected = one_direction(va, vb) + one_direction(vb, va)
    assert math.isclose(losses.cmc_loss(a, b, tau).item(), expected, rel_tol=1e-5)


def test_distillation_loss_matches_hand_computation():
    student, teacher = torch.randn(2, 3), torch.randn(2, 3)
    tau = 2.0
    expected = 0.0
    for x in range(2):
        teacher_z = sum(math.exp(float(teacher[x, c]) / tau) for c in range(3))
        student_z = sum(math.exp(float(student[x, c]) / tau) for c in range(3))
        for y in range(3):
            p_teacher = math.exp(float(teacher[x, y]) / tau) / teacher_z
            expected -= p_teacher * math.log(math.exp(float(student[x, y]) / tau) / student_z)
    assert math.isclose(losses.distillation_loss(student, teacher, tau).item(), expected / 2, rel_tol=1e-5)


def test_distillation_loss_is_minimised_by_the_teacher_distribution():
    teacher = torch.randn(4, 5)
    student = torch.randn(4, 5)
    assert losses.distillation_loss(teacher, teacher, 1.0) < losses.distillation_loss(student, teacher, 1.0)


def test_info_nce_in_batch_is_info_nce_with_the_other_keys_of_the_batch_as_the_queue():
    """MoCo's end-to-end dictionary (v1 Fig. 2a): the same Eq. 1, the negatives of query i are k_j, j != i."""
    q, k = _unit(4, 6, seed=0), _unit(4, 6, seed=1)
    tau = 0.07
    per_query = [losses.info_nce(q[i:i + 1], k[i:i + 1], torch.cat([k[:i], k[i + 1:]]), tau) for i in range(4)]
    assert torch.allclose(losses.info_nce_in_batch(q, k, tau), torch.stack(per_query).mean(), atol=1e-6)
    expected = 0.0
    for i in range(4):
        scores = [math.exp(float(q[i] @ k[j]) / tau) for j in range(4)]
        expected -= math.log(scores[i] / sum(scores))
    assert math.isclose(losses.info_nce_in_batch(q, k, tau).item(), expected / 4, rel_tol=1e-5)
