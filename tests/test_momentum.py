"""Momentum encoders and the queue: the update rules of MoCo (Eq. 2) and BYOL (Sec. 3.2), FIFO pointer arithmetic."""

import math

import pytest
import torch
from torch import nn

from ssl_minimal.memory import Queue
from ssl_minimal.momentum import cosine_momentum, momentum_copy, momentum_update


def test_momentum_copy_starts_equal_and_gets_no_gradient():
    online = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4))
    target = momentum_copy(online)
    for a, b in zip(online.parameters(), target.parameters()):
        assert torch.equal(a, b) and a is not b and not b.requires_grad


def test_momentum_update_is_the_exponential_moving_average():
    torch.manual_seed(0)
    online = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4))
    target = momentum_copy(online)
    with torch.no_grad():
        for p in online.parameters():
            p.add_(torch.randn_like(p))
    online(torch.randn(8, 3))                                    # changes BN running statistics
    before = [p.clone() for p in target.parameters()]
    momentum_update(target, online, m=0.9)
    for old, new, current in zip(before, target.parameters(), online.parameters()):
        assert torch.allclose(new, 0.9 * old + 0.1 * current, atol=1e-6)
    assert torch.equal(target[1].running_mean, online[1].running_mean)


def test_momentum_zero_copies_and_one_freezes():
    online, target = nn.Linear(2, 2), nn.Linear(2, 2)
    frozen = [p.clone() for p in target.parameters()]
    momentum_update(target, online, m=1.0)
    assert all(torch.equal(a, b) for a, b in zip(frozen, target.parameters()))
    momentum_update(target, online, m=0.0)
    assert all(torch.equal(a, b) for a, b in zip(online.parameters(), target.parameters()))


def test_cosine_momentum_goes_from_base_to_one():
    assert cosine_momentum(0.996, 0.0) == pytest.approx(0.996)
    assert cosine_momentum(0.996, 1.0) == pytest.approx(1.0)
    assert cosine_momentum(0.996, 0.5) == pytest.approx(1 - 0.004 * (math.cos(math.pi / 2) + 1) / 2)
    values = [cosine_momentum(0.99, k / 10) for k in range(11)]
    assert values == sorted(values)


def test_queue_is_first_in_first_out_with_wraparound():
    queue = Queue(size=5, dim=2)
    assert len(queue) == 5 and torch.allclose(queue.keys.norm(dim=1), torch.ones(5))
    first = torch.tensor([[1.0, 0], [2, 0], [3, 0]])
    queue.enqueue(first)
    assert queue.ptr.item() == 3 and torch.equal(queue.keys[:3], first)
    second = torch.tensor([[4.0, 0], [5, 0], [6, 0]])
    queue.enqueue(second)                                        # rows 3, 4, then wraps to row 0
    assert queue.ptr.item() == 1
    assert torch.equal(queue.keys[:, 0], torch.tensor([6.0, 2, 3, 4, 5]))   # the oldest key (1) is gone


def test_queue_rejects_a_batch_larger_than_itself():
    with pytest.raises(ValueError, match="queue at least as large as the batch"):
        Queue(size=4, dim=2).enqueue(torch.zeros(5, 2))
