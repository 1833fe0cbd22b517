"""SimCLR v1: NT-Xent of two views through encoder + projection head; the head ablation."""

import pytest
import torch

import ssl_minimal
from ssl_minimal import losses
from ssl_minimal.checks import SSLMinimalError


def test_training_step_is_nt_xent_of_the_two_projected_views(tiny_dataset):
    model = ssl_minimal.build("simclr_v1")
    images = tiny_dataset.images[:8]
    torch.manual_seed(1)
    loss = model.training_step(images, torch.arange(8))
    torch.manual_seed(1)
    with torch.no_grad():
        x1, x2 = model.augment(images), model.augment(images)
        z1, z2 = model.head(model.encoder(torch.cat([x1, x2]))).chunk(2)
    assert torch.allclose(loss, losses.nt_xent(z1, z2, 0.5), atol=1e-5)
    assert model.optimizer == "lars" and model.temperature == 0.5


@pytest.mark.parametrize("projection, layers", [("none", 0), ("linear", 1), ("mlp", 2)])
def test_projection_head_variants_build_and_train_a_step(tiny_dataset, projection, layers):
    model = ssl_minimal.build("simclr_v1", projection=projection)
    assert sum(isinstance(m, torch.nn.Linear) for m in model.head.modules()) == layers
    loss = model.training_step(tiny_dataset.images[:8], torch.arange(8))
    loss.backward()
    assert torch.isfinite(loss) and model.encoder.backbone.layers[0][0].weight.grad.abs().sum() > 0


def test_the_head_is_not_part_of_the_evaluated_encoder():
    model = ssl_minimal.build("simclr_v1")
    head = {id(p) for p in model.head.parameters()}
    assert head and not head & {id(p) for p in model.encoder.parameters()}
    assert model.encoder(torch.rand(2, 3, 32, 32)).shape == (2, model.encoder.output_dim)


def test_unknown_projection_lists_the_valid_ones():
    with pytest.raises(SSLMinimalError, match="linear"):
        ssl_minimal.build("simclr_v1", projection="deep")
