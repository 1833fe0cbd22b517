"""Barlow Twins: the loss of the two views' projections, projector with BN, LARS (Sec. 4)."""

import torch

import ssl_minimal
from ssl_minimal import losses


def _model(**options):
    torch.manual_seed(0)
    return ssl_minimal.build("barlow_twins", backbone_options={"width": 8}, projection_dim=16, **options)


def test_training_step_is_the_cross_correlation_loss_of_two_views(tiny_dataset):
    model = _model(lambd=0.1)
    images = tiny_dataset.images[:16]
    torch.manual_seed(2)
    loss = model.training_step(images, torch.arange(16))
    torch.manual_seed(2)
    y_a, y_b = model.augment(images), model.augment_prime(images)
    with torch.no_grad():
        expected = losses.barlow_twins_loss(model.embed(y_a), model.embed(y_b), 0.1)
    assert torch.allclose(loss, expected, rtol=1e-5)


def test_lambda_weights_only_the_off_diagonal_term():
    torch.manual_seed(1)
    z_a, z_b = torch.randn(32, 8), torch.randn(32, 8)
    invariance = losses.barlow_twins_loss(z_a, z_b, lambd=0.0)
    assert torch.allclose(losses.barlow_twins_loss(z_a, z_b, lambd=2.0) - invariance,
                          2 * (losses.barlow_twins_loss(z_a, z_b, lambd=1.0) - invariance), rtol=1e-5)


def test_paper_recipe():
    model = _model()
    assert model.lambd == 5e-3 and model.optimizer == "lars"
    hidden_norms = [m for m in model.projector if isinstance(m, torch.nn.BatchNorm1d)]
    assert len(hidden_norms) == 2 and isinstance(model.projector[-1], torch.nn.Linear)
