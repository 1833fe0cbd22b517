"""InvaSpread: end to end, in-batch negatives, loss = the library's invariance_spreading_loss."""

import torch

import ssl_minimal
from ssl_minimal import losses


def test_training_step_is_the_invariance_spreading_loss_of_two_views(tiny_dataset):
    model = ssl_minimal.build("invaspread")
    images = tiny_dataset.images[:8]
    torch.manual_seed(3)
    loss = model.training_step(images, torch.arange(8))
    torch.manual_seed(3)
    with torch.no_grad():
        x1, x2 = model.augment(images), model.augment(images)
        z1, z2 = model.head(model.encoder(torch.cat([x1, x2]))).chunk(2)
    assert torch.allclose(loss, losses.invariance_spreading_loss(z1, z2, model.temperature), atol=1e-5)


def test_no_memory_bank_everything_is_end_to_end():
    model = ssl_minimal.build("invaspread")
    buffers = [name for name, _ in model.named_buffers()]
    assert all("running" in name or "num_batches" in name or "normalize" in name for name in buffers), buffers


def test_negatives_come_from_the_batch(tiny_dataset):
    """Changing *another* image of the batch changes the loss's gradient for image 0's embedding."""
    torch.manual_seed(0)
    z1, z2 = torch.randn(4, 8), torch.randn(4, 8)

    def gradient_for_first(z1_other):
        anchor = z1[:1].clone().requires_grad_(True)
        loss = losses.invariance_spreading_loss(torch.cat([anchor, z1_other]), z2, 0.1)
        loss.backward()
        return anchor.grad

    assert not torch.allclose(gradient_for_first(z1[1:]), gradient_for_first(z1[1:] + 1.0))
