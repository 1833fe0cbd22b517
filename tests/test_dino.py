"""DINO: the loss by hand, the teacher (no gradient, EMA, global crops only), the centre, the schedules."""

import math

import pytest
import torch

import ssl_minimal
from ssl_minimal import losses
from ssl_minimal.checks import SSLMinimalError
from ssl_minimal.methods.dino import attention_maps
from ssl_minimal.momentum import cosine_momentum


def _model(**options):
    torch.manual_seed(0)
    options = {"backbone_options": {"dim": 32, "depth": 2, "heads": 2}, "hidden_dim": 32, "bottleneck_dim": 16,
               "output_dim": 20, "num_local_crops": 2, **options}
    return ssl_minimal.build("dino", **options)


def _perturb(network):
    """Make a teacher differ from its student (they start equal)."""
    with torch.no_grad():
        for p in network.parameters():
            p.add_(0.05 * torch.randn_like(p))


def test_loss_against_a_hand_computation():
    torch.manual_seed(1)
    student = [torch.randn(4, 5) for _ in range(3)]           # 2 global crops + 1 local, K = 5
    teacher = [torch.randn(4, 5) for _ in range(2)]
    center, tau_s, tau_t = torch.randn(5), 0.1, 0.04
    total, pairs = 0.0, 0
    for a in range(2):                                         # teacher crop a
        for b in range(3):                                     # student crop b
            if a == b:
                continue                                       # same crop: skipped
            for i in range(4):
                p_t = [math.exp((teacher[a][i, k] - center[k]) / tau_t) for k in range(5)]   # centred, sharpened
                p_s = [math.exp(student[b][i, k] / tau_s) for k in range(5)]                  # neither centred ...
                total -= sum(p_t[k] / sum(p_t) * math.log(p_s[k] / sum(p_s)) for k in range(5)) / 4
            pairs += 1
    assert pairs == 4
    assert losses.dino_loss(student, teacher, center, tau_s, tau_t).item() == pytest.approx(total / pairs, rel=1e-5)


def _step_with_capture(model, images):
    """One training step, recording what the teacher's backbone and head see and give."""
    seen = {"teacher_inputs": [], "student_inputs": [], "teacher_outputs": []}
    hooks = [model.encoder.register_forward_hook(lambda m, i, o: seen["teacher_inputs"].append(i[0].shape)),
             model.student_encoder.register_forward_hook(lambda m, i, o: seen["student_inputs"].append(i[0].shape)),
             model.teacher_head.register_forward_hook(lambda m, i, o: seen["teacher_outputs"].append(o.detach()))]
    loss = model.training_step(images, torch.arange(len(images)))
    for hook in hooks:
        hook.remove()
    return loss, seen


def test_teacher_sees_only_the_global_crops_and_the_step_is_the_dino_loss(tiny_dataset):
    model = _model()
    _perturb(model.encoder)
    _perturb(model.teacher_head)
    model.center.normal_(std=0.05)        # small: a large centre would fix the teacher's targets by itself
    images = tiny_dataset.images[:8]
    torch.manual_seed(3)
    loss, seen = _step_with_capture(model, images)
    assert seen["teacher_inputs"] == [torch.Size([16, 3, 32, 32])]                 # 2 global crops x B
    assert seen["student_inputs"] == [torch.Size([16, 3, 32, 32]), torch.Size([16, 3, 16, 16])]   # + 2 local
    torch.manual_seed(3)                                                           # the same crops again
    global_crops = torch.cat([model.augment(images), model.augment_prime(images)])
    local_crops = [model.augment_local(images) for _ in range(2)]
    with torch.no_grad():
        s = list(model.student(global_crops).chunk(2)) + list(model.student(torch.cat(local_crops)).chunk(2))
        t = list(model.teacher(global_crops).chunk(2))
    center = (model.center - 0.1 * seen["teacher_outputs"][0].mean(dim=0)) / 0.9   # the centre before the step
    assert torch.allclose(loss, losses.dino_loss(s, t, center, 0.1, 0.04), atol=1e-4)


def test_teacher_gets_no_gradient_and_the_student_does(tiny_dataset):
    model = _model()
    model.training_step(tiny_dataset.images[:8], torch.arange(8)).backward()
    teacher = list(model.encoder.parameters()) + list(model.teacher_head.parameters())
    student = list(model.student_encoder.parameters()) + list(model.student_head.parameters())
    assert all(p.grad is None and not p.requires_grad for p in teacher)
    assert all(p.grad is not None for p in student) and sum(p.grad.abs().sum() for p in student) > 0
    assert {id(p) for p in model.parameters() if p.requires_grad} == {id(p) for p in student}


def test_teacher_is_the_moving_average_with_the_scheduled_momentum(tiny_dataset):
    model = _model()
    optimizer = torch.optim.SGD(model.parameter_groups(), lr=0.5)
    model.training_step(tiny_dataset.images[:16], torch.arange(16)).backward()
    optimizer.step()
    student = list(model.student_encoder.parameters()) + list(model.student_head.parameters())
    teacher = list(model.encoder.parameters()) + list(model.teacher_head.parameters())
    before = [p.clone() for p in teacher]
    assert not all(torch.equal(a, b) for a, b in zip(student, before))          # the student moved
    model.after_optimizer_step(0.3)
    l = cosine_momentum(0.996, 0.3)
    assert model.teacher_momentum == pytest.approx(l)
    for old, new, current in zip(before, teacher, student):
        assert torch.allclose(new, l * old + (1 - l) * current, atol=1e-6)


def test_centre_update_rule(tiny_dataset):
    model = _model()
    model.center.normal_()
    c0, t = model.center.clone(), torch.randn(12, 20)
    model.update_center(t)
    assert torch.allclose(model.center, 0.9 * c0 + 0.1 * t.mean(dim=0), atol=1e-6)        # Eq. 4, m = 0.9
    c1 = model.center.clone()
    _, seen = _step_with_capture(model, tiny_dataset.images[:8])                    # a step updates it once
    assert torch.allclose(model.center, 0.9 * c1 + 0.1 * seen["teacher_outputs"][0].mean(dim=0), atol=1e-6)


def test_teacher_temperature_schedule():
    model = _model()
    assert model.tau_t.item() == pytest.approx(0.04) and model.teacher_temperature_at(0.7) == 0.04   # default
    warm = _model(warmup_teacher_temperature=0.04, teacher_temperature=0.07, teacher_warmup_epochs=3)
    assert warm.tau_t.item() == pytest.approx(0.04)                               # the first step's tau_t
    warm.epochs = 10                                                              # fit sets it
    assert [warm.teacher_temperature_at(p) for p in (0.0, 0.15, 0.3, 0.9)] == pytest.approx([0.04, 0.055, 0.07, 0.07])
    warm.after_optimizer_step(0.15)
    assert warm.tau_t.item() == pytest.approx(0.055)                              # used by the next step
    assert _model(sharpening=False).teacher_temperature_at(0.5) == 0.1           # tau_t = tau_s: no sharpening


def test_without_centering_the_centre_stays_out_of_the_loss(tiny_dataset):
    images, losses_by_option = tiny_dataset.images[:8], {}
    for centering, center in [(True, 5.0), (False, 5.0), (True, 0.0)]:   # the same weights and crops each time
        model = _model(centering=centering)
        model.center[:3] = center                                          # a centre that matters, or none
        torch.manual_seed(3)
        losses_by_option[centering, center] = model.training_step(images, torch.arange(8)).item()
    assert losses_by_option[False, 5.0] == pytest.approx(losses_by_option[True, 0.0], rel=1e-6)
    assert losses_by_option[True, 5.0] != pytest.approx(losses_by_option[False, 5.0], rel=1e-3)


def test_last_layer_frozen_in_the_first_epoch_and_gradients_clipped_per_parameter(tiny_dataset):
    model = _model()
    model.epochs = 4
    model.training_step(tiny_dataset.images[:8], torch.arange(8)).backward()
    for p in model.student_encoder.parameters():
        p.grad.mul_(1e4)                                                          # far above the limit of 3
    model.after_backward(0.1)                                                     # inside the first epoch
    assert model.student_head.last_layer.weight.grad is None
    assert all(p.grad.norm() <= 3.0 + 1e-4 for p in model.student_encoder.parameters())
    model.training_step(tiny_dataset.images[:8], torch.arange(8)).backward()
    model.after_backward(0.5)
    assert model.student_head.last_layer.weight.grad is not None


def test_attention_maps_per_head_on_the_patch_grid(tiny_dataset):
    model = _model()
    maps = attention_maps(model, tiny_dataset.images[:3])
    assert maps.shape == (3, 2, 4, 4)                                             # 2 heads, 32 / 8 = 4 patches a side
    assert torch.allclose(maps.sum(dim=(2, 3)), torch.ones(3, 2), atol=1e-5)
    x = model.encoder.normalize(tiny_dataset.images[:3].float() / 255)
    cls_row = model.encoder.backbone.last_self_attention(x)[:, :, 0, 1:]          # [CLS] -> patches
    assert torch.allclose(maps.flatten(2), cls_row / cls_row.sum(dim=-1, keepdim=True), atol=1e-6)
    assert len(ssl_minimal.visualize.plot_attention_maps(tiny_dataset.images[:3], maps).axes) == 3 * 3
    with pytest.raises(SSLMinimalError, match="Vision Transformer"):
        attention_maps(ssl_minimal.build("simsiam", backbone_options={"width": 8}), tiny_dataset.images[:2])


def test_collapse_statistics_read_uniform_outputs_as_entropy_log_k(tiny_dataset):
    model = _model()
    stats = model.collapse_statistics(tiny_dataset.images[:16])
    assert 0 <= stats["entropy"] <= math.log(20) + 1e-5 and stats["kl"] >= -1e-6
    with torch.no_grad():
        model.teacher_head.last_layer.weight.fill_(1.0)                           # every logit equal: uniform P_t
    assert model.collapse_statistics(tiny_dataset.images[:16])["entropy"] == pytest.approx(math.log(20), rel=1e-5)


def test_fit_trains_a_couple_of_steps(tiny_dataset):
    model = _model()
    teacher_before = [p.clone() for p in model.encoder.parameters()]
    history = ssl_minimal.fit(model, tiny_dataset, "smoke", epochs=1, batch_size=16, max_steps=2, progress=False)
    assert len(history.loss) == 2 and all(math.isfinite(v) for v in history.loss)
    assert model.center.abs().sum() > 0                                            # the centre moved
    assert not all(torch.equal(a, b) for a, b in zip(teacher_before, model.encoder.parameters()))
    assert model.encoder.backbone.patch_size == 8 and type(model).architecture == "vit"


def test_head_last_layer_is_weight_normalised_with_unit_gain():
    """main_dino.py's DINOHead: weight_norm(Linear(256, K)) with g fixed to 1, so each output is the cosine
    between the L2-normalised bottleneck and a row of v: rescaling any row of v changes nothing."""
    from ssl_minimal.methods.dino import DINOHead
    torch.manual_seed(0)
    head, features = DINOHead(12, 16, 8, 10), torch.randn(5, 12)
    out = head(features)
    z = torch.nn.functional.normalize(head.mlp(features), dim=1)
    assert torch.allclose(out, z @ torch.nn.functional.normalize(head.last_layer.weight, dim=1).t(), atol=1e-6)
    assert out.abs().max() <= 1 + 1e-6                                             # cosines
    with torch.no_grad():
        head.last_layer.weight.mul_(torch.linspace(0.1, 30, 10)[:, None])          # each row rescaled differently
    assert torch.allclose(head(features), out, atol=1e-5)


def test_gradient_clipping_is_per_parameter_not_global(tiny_dataset):
    """main_dino.py clip_gradients: each parameter's gradient norm is clipped to 3 on its own; a small
    gradient is left as it is, however large the others (one global clip would shrink it too)."""
    model = _model()
    model.training_step(tiny_dataset.images[:8], torch.arange(8)).backward()
    parameters = list(model.student_encoder.parameters())
    large, small = parameters[0], parameters[-1]
    large.grad.normal_().mul_(100 / large.grad.norm())                             # norm 100
    small.grad.normal_().mul_(0.5 / small.grad.norm())                             # norm 0.5
    small_before = small.grad.clone()
    model.after_backward(0.9)
    assert large.grad.norm().item() == pytest.approx(3.0, rel=1e-4)
    assert torch.equal(small.grad, small_before)


def test_paper_recipe_and_defaults():
    """Sec. 3.2 and main_dino.py's defaults (the CPU lesson changes some in its own settings, not here)."""
    from ssl_minimal.methods import dino
    model = _model(num_local_crops=dino.NUM_LOCAL_CROPS)
    recipe = (model.optimizer, model.learning_rate, model.weight_decay, model.final_weight_decay)
    assert recipe == ("adamw", 0.0005, 0.04, 0.4)                                 # lr x batch / 256; wd cosine 0.04 -> 0.4
    assert (model.tau_s, model.tau_t_start, model.tau_t_end, model.teacher_warmup_epochs) == (0.1, 0.04, 0.04, 0)
    assert (model.center_momentum, model.base_momentum, model.num_local_crops) == (0.9, 0.996, 8)
    assert (dino.CLIP_GRAD, model.freeze_last_layer_epochs, model.student_head.last_layer.out_features) == (3.0, 1, 20)
    assert (dino.HIDDEN_DIM, dino.BOTTLENECK_DIM, dino.OUTPUT_DIM) == (2048, 256, 4096)
    crops = [(a.name, a.steps[0].options["size"], a.steps[0].options["scale"])
             for a in (model.augment, model.augment_prime, model.augment_local)]
    assert crops == [("byol_view1", 32, (0.4, 1.0)), ("byol_view2", 32, (0.4, 1.0)), ("dino_local", 16, (0.05, 0.4))]
    lesson = _model(global_scale=(0.7, 1.0), local_scale=(0.2, 0.5), local_size=8)
    assert lesson.augment.steps[0].options["scale"] == (0.7, 1.0)
    assert lesson.augment_local.steps[0].options["scale"] == (0.2, 0.5)
    assert lesson.augment_local.steps[0].options["size"] == 8
