"""SwAV: codes under no_grad via Sinkhorn, prototypes on the unit sphere, frozen during the first epoch."""

import torch
import torch.nn.functional as F

import ssl_minimal
from ssl_minimal import losses


def _model(**options):
    torch.manual_seed(0)
    options = {"backbone_options": {"width": 8}, "hidden_dim": 32, "projection_dim": 16,
               "num_prototypes": 10, "num_local_crops": 2, **options}
    return ssl_minimal.build("swav", **options)


def test_codes_carry_no_gradient_and_are_sinkhorn_codes():
    model = _model()
    z = F.normalize(torch.randn(8, 16), dim=1).requires_grad_(True)
    scores = model.prototypes(z)
    q = model.codes(scores, view=0, z=z)
    assert not q.requires_grad
    assert torch.allclose(q, losses.sinkhorn(scores.detach(), 0.05, 3))
    softmax_codes = _model(equal_partition=False).codes(scores, view=0, z=z)
    assert torch.allclose(softmax_codes, torch.softmax(scores.detach() / 0.05, dim=1))


def test_training_step_gradient_reaches_prototypes_and_encoder(tiny_dataset):
    model = _model()
    model.training_step(tiny_dataset.images[:8], torch.arange(8)).backward()
    assert model.prototypes.weight.grad.abs().sum() > 0
    assert all(p.grad is not None for p in model.encoder.parameters())


def _one_step(model, images, progress):
    optimizer = torch.optim.SGD(model.parameters(), lr=1.0)
    model.training_step(images, torch.arange(len(images))).backward()
    model.after_backward(progress)
    optimizer.step()
    model.after_optimizer_step(progress)


def test_prototypes_frozen_in_the_first_epoch_then_trained_and_kept_normalised(tiny_dataset):
    model = _model()
    model.epochs = 4                               # as fit sets it: frozen while progress < 1 / 4
    assert model.freeze_prototypes_fraction == 0.25
    before = model.prototypes.weight.clone()
    encoder_before = [p.clone() for p in model.encoder.parameters()]
    _one_step(model, tiny_dataset.images[:16], progress=0.1)
    assert torch.allclose(model.prototypes.weight, before, atol=1e-6)   # (re-normalising rounds)
    assert not all(torch.equal(a, b) for a, b in zip(encoder_before, model.encoder.parameters()))
    _one_step(model, tiny_dataset.images[:16], progress=0.5)
    assert not torch.allclose(model.prototypes.weight, before)
    assert torch.allclose(model.prototypes.weight.norm(dim=1), torch.ones(10), atol=1e-6)


def test_queue_joins_sinkhorn_only_once_full(tiny_dataset):
    model = _model(queue_size=16)
    z = F.normalize(torch.randn(8, 16), dim=1)
    scores = model.prototypes(z).detach()
    assert torch.allclose(model.codes(scores, 0, z), losses.sinkhorn(scores, 0.05, 3))   # queue not used yet
    model.queued.fill_(16)
    queue = model.queues[0].keys.clone()
    expected = losses.sinkhorn(torch.cat([scores, queue @ model.prototypes.weight.t()]), 0.05, 3)[:8]
    assert torch.allclose(model.codes(scores, 0, z), expected, atol=1e-6)


def test_fit_gives_swav_the_run_length_so_the_first_epoch_is_frozen(tiny_dataset):
    model = _model()
    assert model.freeze_prototypes_fraction == 0.0                 # no run yet: nothing to freeze
    ssl_minimal.fit(model, tiny_dataset, "smoke", epochs=4, batch_size=32, max_steps=1, progress=False)
    assert model.freeze_prototypes_fraction == 0.25


def test_training_step_crops_at_the_chosen_scales(tiny_dataset, monkeypatch):
    from ssl_minimal import augmentations
    seen = []
    real_multi_crop = augmentations.multi_crop

    def spy(*args, **kwargs):
        seen.append((kwargs["global_scale"], kwargs["local_scale"]))
        return real_multi_crop(*args, **kwargs)

    monkeypatch.setattr(augmentations, "multi_crop", spy)
    _model().training_step(tiny_dataset.images[:8], torch.arange(8))
    _model(local_scale=(0.14, 0.4), global_scale=[0.3, 1.0]).training_step(tiny_dataset.images[:8], torch.arange(8))
    assert seen == [((0.14, 1.0), (0.05, 0.14)), ((0.3, 1.0), (0.14, 0.4))]   # the paper's defaults, then ours
