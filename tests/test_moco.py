"""MoCo v1/v2: stop-gradient into the key encoder, Eq. 2 momentum update, FIFO queue, shuffled BN."""

import copy

import pytest
import torch
import torch.nn.functional as F

import ssl_minimal
from ssl_minimal import losses
from ssl_minimal.methods.moco import MoCoV1


def _sgd_step(model, images, indices):
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.5)
    loss = model.training_step(images, indices)
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    model.after_optimizer_step(0.0)
    return loss


def test_no_gradient_reaches_the_key_encoder_or_the_queue(tiny_dataset):
    model = ssl_minimal.build("moco_v1", queue_size=32)
    loss = model.training_step(tiny_dataset.images[:8], torch.arange(8))
    loss.backward()
    assert all(not p.requires_grad and p.grad is None
               for p in list(model.key_encoder.parameters()) + list(model.key_head.parameters()))
    assert not model.queue.keys.requires_grad
    assert model.encoder.backbone.layers[0][0].weight.grad is not None     # the query encoder learns


@pytest.mark.parametrize("name", ["moco_v1", "moco_v2"])
def test_key_encoder_is_the_momentum_average_after_a_step(tiny_dataset, name):
    m = 0.9
    model = ssl_minimal.build(name, queue_size=32, momentum_m=m)
    with torch.no_grad():   # make the two encoders differ first, so the rule is visible
        for p in model.key_encoder.parameters():
            p.add_(0.1)
    key_before = copy.deepcopy(model.key_encoder.state_dict())
    head_before = copy.deepcopy(model.key_head.state_dict())
    _sgd_step(model, tiny_dataset.images[:8], torch.arange(8))
    for name_, p in model.encoder.named_parameters():
        expected = m * key_before[name_] + (1 - m) * p.detach()     # theta_k <- m theta_k + (1 - m) theta_q
        assert torch.allclose(dict(model.key_encoder.named_parameters())[name_], expected, atol=1e-6), name_
    for name_, p in model.head.named_parameters():
        expected = m * head_before[name_] + (1 - m) * p.detach()
        assert torch.allclose(dict(model.key_head.named_parameters())[name_], expected, atol=1e-6), name_


def test_queue_holds_the_keys_of_the_last_two_batches_in_order(tiny_dataset):
    model = ssl_minimal.build("moco_v1", queue_size=16)
    keys = []
    original_key = model.key

    def recording_key(x):
        k = original_key(x)
        keys.append(k.clone())
        return k

    model.key = recording_key
    for batch in range(2):
        indices = torch.arange(8 * batch, 8 * batch + 8)
        _sgd_step(model, tiny_dataset.images[indices], indices)
    assert torch.equal(model.queue.keys, torch.cat(keys))          # FIFO: batch 1 then batch 2
    assert model.queue.ptr.item() == 0                            # 16 keys written into 16 rows: wrapped


def test_training_step_is_info_nce_of_recomputed_query_key_and_queue(tiny_dataset):
    model = ssl_minimal.build("moco_v2", queue_size=32)
    images = tiny_dataset.images[:8]
    queue_before = model.queue.keys.clone()
    torch.manual_seed(5)
    loss = model.training_step(images, torch.arange(8))
    torch.manual_seed(5)
    with torch.no_grad():
        x_q, x_k = model.augment(images), model.augment(images)
        q, k = model.query(x_q), model.key(x_k)
    expected = losses.info_nce(q, k, queue_before, model.temperature)
    assert torch.allclose(loss, expected, atol=1e-5)
    assert model.temperature == 0.2 and isinstance(model.head, torch.nn.Sequential)


def test_shuffled_bn_unshuffle_restores_the_order():
    """With one BN group the batch statistics do not depend on the order, so shuffling then
    unshuffling must give exactly the keys of the unshuffled batch, row by row."""
    torch.manual_seed(0)
    model = MoCoV1(queue_size=16, bn_groups=1)
    x = torch.rand(8, 3, 32, 32)
    direct = torch.nn.functional.normalize(model.key_head(model.key_encoder(x)), dim=1)
    assert torch.allclose(model.key(x), direct, atol=1e-5)


def test_shuffled_bn_uses_sub_batch_statistics():
    torch.manual_seed(0)
    model = MoCoV1(queue_size=16, bn_groups=4)
    x = torch.rand(8, 3, 32, 32)
    direct = torch.nn.functional.normalize(model.key_head(model.key_encoder(x)), dim=1)
    assert not torch.allclose(model.key(x), direct, atol=1e-3)
    model.eval()   # in eval mode BN uses running statistics: the groups no longer matter
    direct = torch.nn.functional.normalize(model.key_head(model.key_encoder(x)), dim=1)
    assert torch.allclose(model.key(x), direct, atol=1e-5)


@pytest.mark.parametrize("name", ["moco_v1", "moco_v2"])
def test_queue_is_capped_for_small_datasets(tiny_dataset, name):
    """build(dataset=...) passes num_samples also to MoCoV2, whose constructor forwards **options to v1's."""
    assert len(ssl_minimal.build(name, dataset=tiny_dataset).queue) == len(tiny_dataset) // 2


# ----------------------------------------------------------------------------------------------
# The three dictionaries of v1 Fig. 2 / 3, all with the same InfoNCE loss
def test_unknown_dictionary_and_memory_bank_without_dataset_are_clear_errors():
    with pytest.raises(ssl_minimal.SSLMinimalError, match="queue, end_to_end, memory_bank"):
        ssl_minimal.build("moco_v1", dictionary="bank")
    with pytest.raises(ssl_minimal.SSLMinimalError, match="num_samples"):
        ssl_minimal.build("moco_v1", dictionary="memory_bank")


def test_end_to_end_keys_come_from_the_query_encoder_with_gradient(tiny_dataset):
    """Fig. 2a: no momentum encoder, no queue; k = f_q(x_k) and the loss back-propagates through k,
    with the other keys of the batch as the negatives."""
    torch.manual_seed(0)
    model = ssl_minimal.build("moco_v1", dictionary="end_to_end")
    assert not hasattr(model, "key_encoder") and not hasattr(model, "queue")
    images = tiny_dataset.images[:8]

    def gradients(loss):
        model.zero_grad()
        loss.backward()
        return torch.cat([p.grad.flatten() for p in model.encoder.parameters()])

    def recomputed(detach_keys):   # the same views and shuffles as the training step
        torch.manual_seed(3)
        x_q, x_k = model.augment(images), model.augment(images)
        q = model.query(x_q)
        k = F.normalize(model.shuffled_bn(x_k, model.encoder, model.head), dim=1)
        return losses.info_nce_in_batch(q, k.detach() if detach_keys else k, model.temperature)

    torch.manual_seed(3)
    loss = model.training_step(images, torch.arange(8))
    step_gradient = gradients(loss)
    assert torch.allclose(loss, recomputed(detach_keys=False), atol=1e-5)
    assert torch.allclose(step_gradient, gradients(recomputed(detach_keys=False)), atol=1e-6)
    # With a stop-gradient on k (as in MoCo) the encoder would get only the query's share of the gradient.
    query_only = gradients(recomputed(detach_keys=True))
    assert (step_gradient - query_only).abs().max() > 1e-2 * step_gradient.abs().max()


def test_memory_bank_step_uses_bank_rows_and_updates_them_by_the_instdisc_rule(tiny_dataset):
    """Fig. 2b: the positive is the image's own bank row, the negatives are K rows drawn from the bank
    (not the batch, not a queue); afterwards v_i <- normalize(0.5 v_i + 0.5 q_i) for the batch only."""
    torch.manual_seed(0)
    model = ssl_minimal.build("moco_v1", dataset=tiny_dataset, dictionary="memory_bank", queue_size=16)
    assert model.num_negatives == 16 and not hasattr(model, "key_encoder")
    images, indices = tiny_dataset.images[8:16], torch.arange(8, 16)
    bank_before = model.memory_bank.bank.clone()
    torch.manual_seed(7)
    loss = model.training_step(images, indices)
    loss.backward()
    torch.manual_seed(7)
    with torch.no_grad():
        q = model.query(model.augment(images))
        noise = model.memory_bank.sample_noise_indices(16)
    assert torch.allclose(loss, losses.info_nce(q, bank_before[indices], bank_before[noise], model.temperature),
                          atol=1e-5)
    m = model.memory_bank.momentum
    assert m == 0.5
    expected = F.normalize(m * bank_before[indices] + (1 - m) * q, dim=1)
    assert torch.allclose(model.memory_bank.bank[indices], expected, atol=1e-5)
    untouched = torch.ones(len(tiny_dataset), dtype=torch.bool)
    untouched[indices] = False
    assert torch.equal(model.memory_bank.bank[untouched], bank_before[untouched])
    assert not model.memory_bank.bank.requires_grad
    assert model.encoder.backbone.layers[0][0].weight.grad is not None


def test_memory_bank_negatives_are_capped_by_the_dataset(tiny_dataset):
    model = ssl_minimal.build("moco_v1", dataset=tiny_dataset, dictionary="memory_bank")
    assert model.num_negatives == len(tiny_dataset) - 1
