"""SimSiam: the stop-gradient is on z only, the loss is the symmetric negative cosine (Eq. 3)."""

import copy

import torch

import ssl_minimal
from ssl_minimal import losses


def _model(**options):
    torch.manual_seed(0)
    return ssl_minimal.build("simsiam", backbone_options={"width": 8}, projection_dim=32, bottleneck_dim=8, **options)


def _views():
    generator = torch.Generator().manual_seed(1)
    return torch.rand(8, 3, 32, 32, generator=generator), torch.rand(8, 3, 32, 32, generator=generator)


def _encoder_gradients(model, loss):
    model.zero_grad()
    loss.backward()
    return [p.grad.clone() for p in model.encoder.parameters()]


def test_stop_gradient_lets_the_gradient_flow_only_through_p():
    x1, x2 = _views()
    model = _model()
    p1, p2, z1, z2 = model.siamese(x1, x2)
    assert p1.requires_grad and not z1.requires_grad and not z2.requires_grad
    got = _encoder_gradients(model, losses.negative_cosine(p1, z2) / 2 + losses.negative_cosine(p2, z1) / 2)
    # The same network without stop-gradient, with z detached by hand: identical gradients ...
    free = copy.deepcopy(model)
    free.stop_gradient = False
    p1, p2, z1, z2 = free.siamese(x1, x2)
    assert z1.requires_grad
    by_hand = _encoder_gradients(free, losses.negative_cosine(p1, z2.detach()) / 2
                                 + losses.negative_cosine(p2, z1.detach()) / 2)
    assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(got, by_hand))
    # ... and different from the gradient through both p and z.
    p1, p2, z1, z2 = free.siamese(x1, x2)
    both = _encoder_gradients(free, losses.negative_cosine(p1, z2) / 2 + losses.negative_cosine(p2, z1) / 2)
    assert not all(torch.allclose(a, b, atol=1e-6) for a, b in zip(got, both))


def test_training_step_is_the_symmetric_negative_cosine(tiny_dataset):
    model = _model()
    images = tiny_dataset.images[:8]
    torch.manual_seed(3)
    loss = model.training_step(images, torch.arange(8))
    torch.manual_seed(3)
    x1, x2 = model.augment(images), model.augment(images)
    with torch.no_grad():
        z1, z2 = model.projector(model.encoder(x1)), model.projector(model.encoder(x2))
        expected = (losses.negative_cosine(model.predictor(z1), z2) + losses.negative_cosine(model.predictor(z2), z1)) / 2
    assert torch.allclose(loss, expected, atol=1e-5)
    assert -1 <= loss.item() <= 1


def test_architecture_and_ablations():
    model = _model()
    assert isinstance(model.projector[-1], torch.nn.BatchNorm1d)            # BN on the projector output
    assert model.predictor[0].out_features == 8                              # bottleneck
    no_predictor = _model(predictor=False)
    x1, x2 = _views()
    p1, _, z1, _ = no_predictor.siamese(x1, x2)
    assert torch.equal(p1, z1)                                               # p = z
