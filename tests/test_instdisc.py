"""InstDisc: memory-bank update rule, NCE normaliser, gradients only through the current batch."""

import torch
import torch.nn.functional as F

import ssl_minimal
from ssl_minimal.memory import MemoryBank


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


def test_nce_normalizer_is_estimated_once_from_the_first_batch(tiny_dataset):
    model = _model()
    assert model.normalizer.item() < 0
    indices = torch.arange(16)
    model.training_step(tiny_dataset.images[indices], indices)
    first = model.normalizer.item()
    # Z = n * mean exp(v_j^T v / tau) with |v_j^T v| <= 1  ->  n e^{-1/tau} <= Z <= n e^{1/tau}
    assert 64 * torch.exp(torch.tensor(-1 / 0.07)) <= first <= 64 * torch.exp(torch.tensor(1 / 0.07))
    model.training_step(tiny_dataset.images[indices + 16], indices + 16)
    assert model.normalizer.item() == first


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


def test_nce_step_scores_the_own_row_against_uniform_noise_rows(tiny_dataset):
    model = _model()
    model.normalizer.fill_(50.0)                 # a known Z
    indices = torch.arange(8)
    bank = model.memory_bank.bank.clone()
    torch.manual_seed(2)
    loss = model.training_step(tiny_dataset.images[indices], indices)
    torch.manual_seed(2)                         # replay: augmentation, then the noise draw
    with torch.no_grad():
        v = model.embed(model.augment(tiny_dataset.images[indices]))
    noise = torch.randint(64, (16,))
    positive = torch.exp((bank[indices] * v).sum(1) / 0.07) / 50.0
    noise_probability = torch.exp(v @ bank[noise].t() / 0.07) / 50.0
    m_pn = 16 / 64
    expected = -(torch.log(positive / (positive + m_pn)).mean()
                 + torch.log(m_pn / (noise_probability + m_pn)).sum(1).mean())
    assert torch.allclose(loss, expected, rtol=1e-4)


def test_full_softmax_step_back_propagates_after_the_bank_update(tiny_dataset):
    # The bank is updated in place inside training_step, before fit calls loss.backward().
    model = _model(full_softmax=True)
    indices = torch.arange(8)
    loss = model.training_step(tiny_dataset.images[indices], indices)
    loss.backward()
    assert model.head.weight.grad is not None and model.head.weight.grad.abs().sum() > 0
