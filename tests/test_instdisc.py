"""InstDisc: memory-bank update rule and fill, NCE normaliser (Eq. 7), gradients only through the current batch."""

import copy
import math

import pytest
import torch
import torch.nn.functional as F

import ssl_minimal
from ssl_minimal import SSLMinimalError
from ssl_minimal.memory import MemoryBank
from ssl_minimal.methods.instdisc import normalizer_estimate


def test_memory_bank_update_rule():
    bank = MemoryBank(num_samples=6, dim=4, momentum=0.5)
    before = bank.bank.clone()
    indices = torch.tensor([1, 4])
    features = F.normalize(torch.randn(2, 4), dim=1)
    bank.update(indices, features)
    expected = F.normalize(0.5 * before[indices] + 0.5 * features, dim=1)
    assert torch.allclose(bank.bank[indices], expected, atol=1e-6)
    untouched = torch.tensor([0, 2, 3, 5])
    assert torch.equal(bank.bank[untouched], before[untouched])
    assert torch.allclose(bank.bank.norm(dim=1), torch.ones(6), atol=1e-6)


def test_noise_indices_are_uniform_over_the_bank():
    torch.manual_seed(0)
    bank = MemoryBank(num_samples=10, dim=4)
    counts = torch.bincount(bank.sample_noise_indices(20_000), minlength=10).float()
    assert counts.min() > 0.9 * counts.mean() and counts.max() < 1.1 * counts.mean()


def _model(num_samples=64, **options):
    return ssl_minimal.build("instdisc", num_samples=num_samples, num_noise=16, **options)


def test_training_step_updates_bank_rows_of_the_batch_with_the_batch_embeddings(tiny_dataset):
    model = _model()
    indices = torch.tensor([3, 10, 20, 33, 40, 63])
    images = tiny_dataset.images[indices]
    old_bank = model.memory_bank.bank.clone()
    torch.manual_seed(5)
    model.training_step(images, indices)
    torch.manual_seed(5)                         # replay the same augmentations
    with torch.no_grad():
        v = model.embed(model.augment(images))
    expected = F.normalize(0.5 * old_bank[indices] + 0.5 * v, dim=1)
    assert torch.allclose(model.memory_bank.bank[indices], expected, atol=1e-5)
    others = torch.ones(64, dtype=torch.bool)
    others[indices] = False
    assert torch.equal(model.memory_bank.bank[others], old_bank[others])


def test_gradient_reaches_encoder_only_through_the_current_batch(tiny_dataset):
    model = _model()
    assert "memory_bank.bank" not in dict(model.named_parameters())
    assert not model.memory_bank.bank.requires_grad
    indices = torch.arange(8)
    loss = model.training_step(tiny_dataset.images[indices], indices)
    loss.backward()
    assert model.memory_bank.bank.grad is None
    grads = [p.grad for p in model.encoder.parameters()]
    assert all(g is not None for g in grads) and sum(g.abs().sum() for g in grads) > 0


def test_normalizer_is_the_monte_carlo_sum_of_eq7_per_image():
    # n = 10 rows, m = 3 noise scores per image: Z_b = (n / m) sum_k exp(v_jk^T v_b / tau)
    scores = torch.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]])
    assert torch.allclose(normalizer_estimate(scores, 10), torch.tensor([[20.0], [50.0]]))


def test_full_softmax_variant_is_the_cross_entropy_over_the_bank(tiny_dataset):
    model = _model(full_softmax=True)
    indices = torch.arange(8)
    bank = model.memory_bank.bank.clone()
    torch.manual_seed(1)
    loss = model.training_step(tiny_dataset.images[indices], indices)
    torch.manual_seed(1)
    with torch.no_grad():
        v = model.embed(model.augment(tiny_dataset.images[indices]))
    expected = F.cross_entropy(v @ bank.t() / model.temperature, indices)
    assert torch.allclose(loss, expected, atol=1e-5)


def _hand_nce(v, bank, indices, noise, tau=0.07):
    """Eqs. 4-7 written out: P = exp(s / tau) / Z with Z_b = (n / m) sum_k exp(v_jk^T v_b / tau), Z held constant."""
    n, m = bank.shape[0], noise.shape[0]
    noise_scores = torch.exp(v @ bank[noise].t() / tau)                  # [B, m]
    z = (n / m) * noise_scores.sum(dim=1, keepdim=True).detach()         # [B, 1]
    positive = torch.exp((bank[indices] * v).sum(1) / tau) / z[:, 0]
    noise_probability = noise_scores / z
    m_pn = m / n
    return -(torch.log(positive / (positive + m_pn)).mean()
             + torch.log(m_pn / (noise_probability + m_pn)).sum(1).mean())


def test_nce_step_scores_the_own_row_against_uniform_noise_rows_with_z_from_those_rows():
    model = _model()
    bank = model.memory_bank.bank.clone()
    indices = torch.arange(8)
    torch.manual_seed(2)
    v = F.normalize(torch.randn(8, 128), dim=1).requires_grad_(True)
    loss = model.nce_step(v, indices)
    (gradient,) = torch.autograd.grad(loss, v)
    torch.manual_seed(2)
    torch.randn(8, 128)
    noise = torch.randint(64, (16,))             # replay the noise draw
    v_hand = v.detach().clone().requires_grad_(True)
    expected = _hand_nce(v_hand, bank, indices, noise)
    (expected_gradient,) = torch.autograd.grad(expected, v_hand)
    assert torch.allclose(loss, expected, rtol=1e-5)
    # Z is a constant for the gradient (detached), as the paper treats it
    assert torch.allclose(gradient, expected_gradient, rtol=1e-4, atol=1e-6)


def test_nce_noise_term_stays_bounded_when_the_bank_collapses(tiny_dataset):
    """The old failure: Z fixed while the bank was random, then bank rows similar to v made P(j|v) >> m P_n
    and the m noise terms exploded. With Z from the step's noise rows, sum_j P(j|v) / (m P_n) = 1, so the noise
    term is at most 1; with every row equal to v the loss is exactly log(1 + m) + m log(1 + 1/m)."""
    model = _model()
    indices = torch.arange(8)
    model.training_step(tiny_dataset.images[indices], indices)        # a first step with a random bank
    u = F.normalize(torch.randn(1, 128), dim=1)
    model.memory_bank.bank.copy_(u.expand(64, 128))                   # every row is the same vector
    loss = model.nce_step(u.expand(8, 128), indices)
    m = 16
    assert math.isclose(loss.item(), math.log(1 + m) + m * math.log(1 + 1 / m), rel_tol=1e-5)


def _fill_by_hand(model, images):
    copy_of_model = copy.deepcopy(model).train()
    with torch.no_grad():
        return F.normalize(copy_of_model.embed(images.float() / 255), dim=1)


def test_before_training_fills_the_bank_with_the_untrained_embeddings_and_nothing_else(tiny_dataset):
    model = _model()
    before = copy.deepcopy(model.state_dict())
    expected = _fill_by_hand(model, tiny_dataset.images)                 # one chunk: 64 < FILL_BATCH
    model.eval()
    model.before_training(tiny_dataset.images)
    assert not model.training                                            # the mode is restored
    assert torch.allclose(model.memory_bank.bank, expected, atol=1e-6)
    for name, value in model.state_dict().items():
        if name != "memory_bank.bank":                                   # BatchNorm running stats too
            assert torch.equal(value, before[name]), name


def test_paper_bank_init_keeps_random_rows_and_wrong_sizes_are_reported(tiny_dataset):
    model = _model(bank_init="random")
    bank = model.memory_bank.bank.clone()
    model.before_training(tiny_dataset.images)
    assert torch.equal(model.memory_bank.bank, bank)
    with pytest.raises(SSLMinimalError, match="the memory bank has 64 rows but training got 32 images"):
        _model().before_training(tiny_dataset.images[:32])
    with pytest.raises(SSLMinimalError, match="valid bank_inits are: embeddings, random"):
        _model(bank_init="zeros")
    with pytest.raises(SSLMinimalError, match=r"fill needs features of shape \[64, 128\]"):
        model.memory_bank.fill(torch.randn(64, 4))


def test_fit_fills_the_bank_before_the_first_step(tiny_dataset):
    model = _model()
    expected = _fill_by_hand(model, tiny_dataset.images)
    ssl_minimal.fit(model, tiny_dataset, "smoke", epochs=1, batch_size=16, max_steps=0, progress=False)
    assert torch.allclose(model.memory_bank.bank, expected, atol=1e-5)


def test_full_softmax_step_back_propagates_after_the_bank_update(tiny_dataset):
    # The bank is updated in place inside training_step, before fit calls loss.backward().
    model = _model(full_softmax=True)
    indices = torch.arange(8)
    loss = model.training_step(tiny_dataset.images[indices], indices)
    loss.backward()
    assert model.head.weight.grad is not None and model.head.weight.grad.abs().sum() > 0
