"""BYOL: the target gets no gradient, follows the EMA rule with the cosine tau schedule (Sec. 3.2)."""

import pytest
import torch

import ssl_minimal
from ssl_minimal import losses
from ssl_minimal.checks import SSLMinimalError
from ssl_minimal.momentum import cosine_momentum


def _model(**options):
    torch.manual_seed(0)
    return ssl_minimal.build("byol", backbone_options={"width": 8}, hidden_dim=32, projection_dim=16, **options)


def _online_and_target(model):
    online = list(model.encoder.parameters()) + list(model.projector.parameters())
    target = list(model.target_encoder.parameters()) + list(model.target_projector.parameters())
    return online, target


def test_target_gets_no_gradient_and_online_does(tiny_dataset):
    model = _model()
    loss = model.training_step(tiny_dataset.images[:8], torch.arange(8))
    loss.backward()
    online, target = _online_and_target(model)
    assert all(p.grad is None and not p.requires_grad for p in target)
    assert all(p.grad is not None for p in online + list(model.predictor.parameters()))
    assert sum(p.grad.abs().sum() for p in online) > 0


def test_training_step_is_the_symmetrised_loss_against_the_target(tiny_dataset):
    model = _model()
    with torch.no_grad():                      # make the target differ from the online network
        for p in model.target_projector.parameters():
            p.add_(torch.randn_like(p))
    images = tiny_dataset.images[:8]
    torch.manual_seed(4)
    loss = model.training_step(images, torch.arange(8))
    torch.manual_seed(4)
    v1, v2 = model.augment(images), model.augment_prime(images)
    with torch.no_grad():
        p1, p2 = (model.predictor(model.projector(model.encoder(v))) for v in (v1, v2))
        z1, z2 = (model.target_projector(model.target_encoder(v)) for v in (v1, v2))
    assert torch.allclose(loss, losses.byol_loss(p1, z2) + losses.byol_loss(p2, z1), atol=1e-5)


def test_target_is_the_moving_average_after_a_step(tiny_dataset):
    model = _model()
    optimizer = torch.optim.SGD(model.parameter_groups(), lr=0.5)
    model.training_step(tiny_dataset.images[:16], torch.arange(16)).backward()
    optimizer.step()
    online, target = _online_and_target(model)
    before = [p.clone() for p in target]
    assert not all(torch.equal(a, b) for a, b in zip(online, before))     # the online network moved
    model.after_optimizer_step(0.3)
    tau = cosine_momentum(0.996, 0.3)
    assert model.tau == pytest.approx(tau)
    for old, new, current in zip(before, target, online):
        assert torch.allclose(new, tau * old + (1 - tau) * current, atol=1e-6)


def test_tau_schedule_goes_from_0996_to_one():
    model = _model()
    taus = []
    for progress in [0.0, 0.25, 0.5, 0.75, 1.0]:
        model.after_optimizer_step(progress)
        taus.append(model.tau)
    assert taus[0] == pytest.approx(0.996) and taus[-1] == pytest.approx(1.0)
    assert taus[2] == pytest.approx(0.998) and taus == sorted(taus)


def test_norm_options_for_the_collapse_lesson():
    no_bn = _model(projector_batch_norm=False, predictor_batch_norm=False)
    assert not any(isinstance(m, torch.nn.BatchNorm1d) for m in list(no_bn.projector) + list(no_bn.predictor))
    group = _model(norm="group_ws")
    assert not any(isinstance(m, (torch.nn.BatchNorm1d, torch.nn.BatchNorm2d)) for m in group.modules())
    assert any(isinstance(m, torch.nn.GroupNorm) for m in group.projector)
    with pytest.raises(SSLMinimalError, match="group_ws"):
        _model(norm="layer")


def test_group_ws_starts_with_batch_norm_statistics_and_lars_on_every_parameter(tiny_dataset):
    model = _model(norm="group_ws")
    assert all(isinstance(m, torch.nn.Linear) and type(m).__name__ == "WSLinear"
               for m in model.projector if isinstance(m, torch.nn.Linear))
    assert len(model.parameter_groups()) == 1                       # biases and GN betas adapted by LARS too
    assert bool(model.needs_initialisation)
    images = tiny_dataset.images[:32]
    torch.manual_seed(5)
    model.training_step(images, torch.arange(32))                   # the first step initialises
    assert not bool(model.needs_initialisation)
    for online, target in zip(model.encoder.state_dict().values(), model.target_encoder.state_dict().values()):
        assert torch.equal(online, target)                          # the target restarts as a copy
    torch.manual_seed(5)
    views = model.augment(images)                                   # the views the initialisation saw
    outputs = []
    hooks = [m.register_forward_hook(lambda _m, _i, out: outputs.append(out.clone()))   # ReLU works in place
             for m in list(model.encoder.modules()) + list(model.projector) if isinstance(m, torch.nn.GroupNorm)]
    with torch.no_grad():
        model.projector(model.encoder(views))
    for hook in hooks:
        hook.remove()
    assert len(outputs) == 5                                        # 4 conv blocks + the projector's hidden layer
    for out in outputs:                                             # every channel: batch mean 0, std 1
        dims = [0] + list(range(2, out.dim()))
        assert torch.allclose(out.mean(dim=dims), torch.zeros(out.shape[1]), atol=1e-4)
        assert torch.allclose(out.std(dim=dims), torch.ones(out.shape[1]), atol=1e-3)
    before = [p.clone() for p in model.parameters()]
    model.training_step(images, torch.arange(32))                   # later steps leave the init alone
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters()))
