"""fit(): schedules, budgets, optimisers, checkpoints, exact resume, clear errors."""

import math
import os

import numpy as np
import pytest
import torch

import ssl_minimal
from ssl_minimal.checks import SSLMinimalError
from ssl_minimal.training import LARS, History, cosine_schedule, fit, get_budget, load_checkpoint, make_optimizer


def test_cosine_schedule_warmup_then_cosine():
    values = cosine_schedule(1.0, 0.0, total_steps=110, warmup_steps=10)
    assert len(values) == 110
    assert np.allclose(values[:10], np.arange(10) / 10)          # linear warm-up from 0
    assert values[10] == pytest.approx(1.0)                        # peak right after warm-up
    assert values[60] == pytest.approx(0.5)                        # half way down the cosine
    assert values[-1] == pytest.approx(0.5 * (1 + math.cos(math.pi * 99 / 100)))
    assert np.all(np.diff(values[10:]) <= 0)


def test_budget_names_overrides_and_env(monkeypatch):
    assert get_budget("smoke").name == "smoke"
    assert get_budget("cpu", epochs=3).epochs == 3
    monkeypatch.setenv("SSL_BUDGET", "smoke")
    assert get_budget().name == "smoke"
    monkeypatch.setenv("SSL_BUDGET", "auto")
    assert get_budget().name == ("gpu" if torch.cuda.is_available() else "cpu")
    with pytest.raises(SSLMinimalError, match="valid budgets are: smoke, cpu, gpu, auto"):
        get_budget("huge")
    with pytest.raises(SSLMinimalError, match="unknown budget override.*epoch"):
        get_budget("cpu", epoch=3)


def test_lars_scales_each_layer_by_its_trust_ratio():
    weight = torch.nn.Parameter(torch.tensor([[3.0, 4.0]]))        # ||w|| = 5
    weight.grad = torch.tensor([[0.0, 1.0]])
    optimizer = LARS([weight], lr=1.0, weight_decay=0.1, momentum=0.9, trust_coefficient=0.001)
    update = weight.grad + 0.1 * weight.detach()                   # g + wd * w = [0.3, 1.4]
    expected = weight.detach() - 0.001 * 5.0 / update.norm() * update
    optimizer.step()
    assert torch.allclose(weight.detach(), expected, atol=1e-6)


def test_lars_adapts_layers_by_shape_not_by_weight_decay_and_keeps_momentum_of_scaled_steps():
    """You et al. 2017, Algorithm 2: v <- m v + trust * (g + beta w), w <- w - lr v. A matrix is
    adapted even with weight_decay=0 (it used to fall back to plain SGD); a bias never is."""
    weight = torch.nn.Parameter(torch.tensor([[3.0, 4.0]]))        # ||w|| = 5
    bias = torch.nn.Parameter(torch.tensor([1.0, 0.0]))
    optimizer = LARS([weight, bias], lr=2.0, weight_decay=0.0, momentum=0.5, trust_coefficient=0.01)
    gradient, bias_gradient = torch.tensor([[0.0, 10.0]]), torch.tensor([0.5, -1.0])
    w0, b0 = weight.detach().clone(), bias.detach().clone()
    weight.grad, bias.grad = gradient.clone(), bias_gradient.clone()
    optimizer.step()
    u1 = 0.01 * 5.0 / 10.0 * gradient                              # trust * g, g has norm 10
    assert torch.allclose(weight.detach(), w0 - 2.0 * u1, atol=1e-6)
    assert torch.allclose(bias.detach(), b0 - 2.0 * bias_gradient, atol=1e-6)   # plain SGD step
    w1 = weight.detach().clone()
    weight.grad, bias.grad = gradient.clone(), bias_gradient.clone()
    optimizer.step()
    u2 = 0.01 * w1.norm() / 10.0 * gradient                        # the trust ratio uses the new ||w||
    assert torch.allclose(weight.detach(), w1 - 2.0 * (0.5 * u1 + u2), atol=1e-6)   # momentum of scaled steps


def test_lars_updates_all_tensors_together_exactly_as_tensor_by_tensor():
    """LARS.step (torch._foreach_* over each group) is reference_step (Algorithm 2 per tensor),
    bit for bit, with weight decay, a zero weight (trust ratio 1), a group adapting its biases too,
    a parameter without gradient at one step, one whose first gradient comes at the second step,
    and momentum over several steps."""
    torch.manual_seed(0)
    shapes = [(4, 3), (4,), (2, 3, 3, 3), (5,), (3, 3)]
    first = [torch.nn.Parameter(torch.randn(shape)) for shape in shapes]
    with torch.no_grad():
        first[4].zero_()                                           # ||w|| = 0: trust ratio 1
    second = [torch.nn.Parameter(p.detach().clone()) for p in first]

    def groups(params):
        return [{"params": params[:2]}, {"params": params[2:4], "weight_decay": 0.0, "lars_adapt_all": True},
                {"params": params[4:]}]

    fast = LARS(groups(first), lr=0.5, weight_decay=0.01, momentum=0.9, trust_coefficient=0.02)
    reference = LARS(groups(second), lr=0.5, weight_decay=0.01, momentum=0.9, trust_coefficient=0.02)
    for step in range(3):
        for a, b in zip(first, second):
            gradient = torch.randn(a.shape)
            a.grad, b.grad = gradient.clone(), gradient.clone()
        first[3].grad = second[3].grad = None if step == 1 else first[3].grad   # skipped at step 1
        if step == 0:                                               # starts late (as SwAV's prototypes)
            first[1].grad = second[1].grad = None
        fast.step()
        reference.reference_step()
        for a, b in zip(first, second):
            assert torch.equal(a, b)
    assert not torch.equal(first[0], torch.zeros(4, 3))


def test_sgd_and_adamw_use_fused_kernels_on_gpus_and_follow_the_same_rule(monkeypatch):
    from ssl_minimal import training
    from ssl_minimal.training import make_optimizer
    torch.manual_seed(0)
    cpu_params = [torch.nn.Parameter(torch.randn(3))]
    assert not make_optimizer("sgd", [{"params": cpu_params}], 0.1, 0.0).defaults["fused"]   # CPU: torch's default
    monkeypatch.setattr(training, "FUSED_DEVICES", ("cpu",))       # as on a GPU, with CPU tensors
    for name in ("sgd", "adamw"):
        fused_params = [torch.nn.Parameter(torch.randn(6, 4)), torch.nn.Parameter(torch.randn(4))]
        plain_params = [torch.nn.Parameter(p.detach().clone()) for p in fused_params]
        fused = make_optimizer(name, [{"params": fused_params}], 0.1, 0.01)
        plain = make_optimizer(name, [{"params": plain_params}], 0.1, 0.01, fused=False)
        assert fused.defaults["fused"] and not plain.defaults["fused"]
        for _ in range(3):
            for a, b in zip(fused_params, plain_params):
                a.grad = torch.randn(a.shape)
                b.grad = a.grad.clone()
            fused.step(), plain.step()
        for a, b in zip(fused_params, plain_params):
            assert torch.allclose(a, b, atol=1e-6)
    meta = [torch.nn.Parameter(torch.empty(3, device="meta"))]      # a device without fused kernels
    assert not make_optimizer("sgd", [{"params": meta}], 0.1, 0.0).defaults["fused"]
    with pytest.raises(SSLMinimalError, match="valid optimizers are: sgd, lars, adamw"):
        make_optimizer("adam", [{"params": plain_params}], 0.1, 0.0)


def test_a_parameter_group_can_scale_the_learning_rate_schedule(tiny_dataset):
    """fit sets every group's lr from the schedule, times the group's "lr_scale" (Barlow Twins, for
    one, gives biases and BatchNorm parameters a much smaller lr than the weights)."""
    model = ssl_minimal.build("invaspread", dataset=tiny_dataset)
    weights = [p for p in model.parameters() if p.dim() > 1]
    biases = [p for p in model.parameters() if p.dim() <= 1]
    model.parameter_groups = lambda: [{"params": weights}, {"params": biases, "weight_decay": 0.0, "lr_scale": 0.0}]
    before_weights, before_biases = [p.detach().clone() for p in weights], [p.detach().clone() for p in biases]
    fit(model, tiny_dataset, "smoke", epochs=1, batch_size=16, max_steps=2, progress=False)
    assert all(torch.equal(a, b) for a, b in zip(before_biases, biases))
    assert not all(torch.equal(a, b) for a, b in zip(before_weights, weights))


def test_adamw_takes_the_methods_betas_and_keeps_torchs_default(tiny_dataset, tmp_path):
    """A method's `adam_betas` reach fit's AdamW (MAE: (0.9, 0.95)); the default stays torch's (0.9, 0.999)."""
    weight = torch.nn.Parameter(torch.ones(2, 2))
    assert make_optimizer("adamw", [weight], 0.1, 0.0).defaults["betas"] == (0.9, 0.999)
    assert make_optimizer("adamw", [weight], 0.1, 0.0, betas=(0.9, 0.95)).defaults["betas"] == (0.9, 0.95)
    model = ssl_minimal.build("cpc", dataset=tiny_dataset)
    model.adam_betas = (0.8, 0.9)
    fit(model, tiny_dataset, "smoke", epochs=1, batch_size=16, max_steps=1, progress=False,
        checkpoint_path=tmp_path / "cpc.pt")
    groups = load_checkpoint(tmp_path / "cpc.pt")["optimizer"]["param_groups"]
    assert all(tuple(group["betas"]) == (0.8, 0.9) for group in groups)


def test_a_method_can_ask_for_a_cosine_weight_decay_schedule(tiny_dataset, monkeypatch):
    """With `final_weight_decay` set, the groups without their own weight decay follow a per-step cosine
    from `weight_decay` to it (DINO: 0.04 -> 0.4); a group that sets its own (biases: 0) keeps it."""
    from ssl_minimal import training
    optimizers, make_optimizer = [], training.make_optimizer

    def recording_make_optimizer(*args, **kwargs):
        optimizers.append(make_optimizer(*args, **kwargs))
        return optimizers[-1]
    monkeypatch.setattr(training, "make_optimizer", recording_make_optimizer)
    model = ssl_minimal.build("invaspread", dataset=tiny_dataset)
    model.optimizer, model.weight_decay, model.final_weight_decay = "adamw", 0.04, 0.4
    seen = []
    model.after_optimizer_step = lambda progress: seen.append([g["weight_decay"] for g in optimizers[0].param_groups])
    fit(model, tiny_dataset, "smoke", epochs=2, batch_size=16, progress=False)   # 8 steps
    assert [decayed for decayed, _ in seen] == pytest.approx(list(cosine_schedule(0.04, 0.4, 8)))
    assert seen[0][0] == pytest.approx(0.04) and seen[-1][0] > 0.38
    assert all(biases == 0.0 for _, biases in seen)


def _instdisc(dataset):
    torch.manual_seed(0)
    return ssl_minimal.build("instdisc", dataset=dataset, num_noise=16)


def test_resume_gives_the_same_parameters_as_an_uninterrupted_run(tiny_dataset, tmp_path):
    options = dict(epochs=3, batch_size=16, progress=False, seed=7)
    uninterrupted = _instdisc(tiny_dataset)
    fit(uninterrupted, tiny_dataset, "smoke", **options)

    interrupted = _instdisc(tiny_dataset)
    checkpoint = tmp_path / "run" / "checkpoint.pt"
    fit(interrupted, tiny_dataset, "smoke", checkpoint_path=checkpoint, max_steps=5, **options)  # "crash"
    resumed = _instdisc(tiny_dataset)  # a fresh process would rebuild the model from scratch
    history = fit(resumed, tiny_dataset, "smoke", checkpoint_path=checkpoint, resume=True, **options)

    assert history.step == list(range(1, 13))
    # training time continues across the resume: one increasing value per step
    assert len(history.step_seconds) == 12 and all(b > a for a, b in zip(history.step_seconds, history.step_seconds[1:]))
    for (name, a), (_, b) in zip(uninterrupted.state_dict().items(), resumed.state_dict().items()):
        assert torch.equal(a, b), name
    assert not list(checkpoint.parent.glob("*.tmp"))               # atomic writes leave no temp file


def test_seconds_to_accuracy_reads_the_training_time_of_the_first_monitor_at_the_target():
    history = History(step=[1, 2, 3, 4], knn_step=[0, 2, 4], knn_accuracy=[0.5, 0.6, 0.7],
                      step_seconds=[1.0, 2.5, 4.0, 6.0], wall_seconds=9.0)
    assert history.seconds_to_accuracy(0.6) == 2.5        # reached at step 2: training time after step 2
    assert history.seconds_to_accuracy(0.65) == 6.0
    assert history.seconds_to_accuracy(0.5) == 2.5        # the random-init reading (step 0) does not count
    assert history.seconds_to_accuracy(0.9) is None
    assert [history.training_seconds_at(step) for step in (0, 2, 4, 5)] == [0.0, 2.5, 6.0, None]


def test_training_changes_parameters_and_records_history(tiny_dataset):
    model = ssl_minimal.build("invaspread", dataset=tiny_dataset)
    before = [p.detach().clone() for p in model.parameters()]
    history = fit(model, tiny_dataset, "smoke", epochs=2, batch_size=16, progress=False,
                  eval_dataset=tiny_dataset, knn_train_samples=64, knn_test_samples=64)
    assert len(history.loss) == 8 and all(math.isfinite(x) for x in history.loss)
    assert history.baseline_knn_accuracy is not None and history.knn_step == [0, 4, 8]
    assert any(not torch.equal(a, b) for a, b in zip(before, model.parameters()))


def test_non_finite_loss_stops_with_the_step(tiny_dataset):
    model = ssl_minimal.build("invaspread", dataset=tiny_dataset)
    with pytest.raises(FloatingPointError, match=r"at step \d+.*learning rate"):
        fit(model, tiny_dataset, "smoke", epochs=1, batch_size=16, learning_rate=1e30, progress=False)


def test_losses_read_every_few_steps_are_the_same_losses_and_a_bad_one_names_its_step(tiny_dataset):
    """Off the CPU fit reads the losses every READ_LOSS_EVERY_STEPS steps (one CPU-GPU wait for
    several steps); the values, and the step a non-finite loss is reported at, do not change."""
    from ssl_minimal.training import READ_LOSS_EVERY_STEPS, loss_read_interval
    histories = []
    for every in (1, 3):
        torch.manual_seed(0)
        model = ssl_minimal.build("invaspread", dataset=tiny_dataset)
        histories.append(fit(model, tiny_dataset, "smoke", epochs=2, batch_size=8, read_loss_every_steps=every,
                             checkpoint_every_steps=5, progress=False))
    assert len(histories[1].loss) == len(histories[1].step) == 16
    assert histories[0].loss == histories[1].loss
    for every in (1, 4):                          # the loss of step 5 (the 6th) is NaN; read at steps 3 and 7
        torch.manual_seed(0)
        model = ssl_minimal.build("invaspread", dataset=tiny_dataset)
        original, calls = model.training_step, []

        def training_step(images, indices, original=original, calls=calls):
            calls.append(len(calls))
            loss = original(images, indices)
            return loss * float("nan") if len(calls) == 6 else loss

        model.training_step = training_step
        with pytest.raises(FloatingPointError, match=r"the loss became nan at step 5 \(epoch 0"):
            fit(model, tiny_dataset, "smoke", epochs=1, batch_size=8, read_loss_every_steps=every, progress=False)
    assert loss_read_interval(get_budget("gpu"), torch.device("cpu")) == 1
    assert loss_read_interval(get_budget("gpu"), torch.device("cuda")) == READ_LOSS_EVERY_STEPS
    assert loss_read_interval(get_budget("gpu", read_loss_every_steps=5), torch.device("cuda")) == 5
    with pytest.raises(SSLMinimalError, match="positive whole number"):
        loss_read_interval(get_budget("gpu", read_loss_every_steps=0), torch.device("cpu"))


def test_batch_larger_than_dataset_is_caught_early(tiny_dataset):
    model = ssl_minimal.build("invaspread", dataset=tiny_dataset)
    with pytest.raises(SSLMinimalError, match="batch size 128 is larger than the dataset \\(64 images\\)"):
        fit(model, tiny_dataset, "smoke", progress=False)


def test_resume_errors_name_the_problem_and_keep_the_files(tiny_dataset, tmp_path):
    model = ssl_minimal.build("invaspread", dataset=tiny_dataset)
    options = dict(epochs=1, batch_size=16, progress=False)
    with pytest.raises(SSLMinimalError, match="does not exist"):
        fit(model, tiny_dataset, "smoke", checkpoint_path=tmp_path / "missing.pt", resume=True, **options)

    truncated = tmp_path / "truncated.pt"
    fit(model, tiny_dataset, "smoke", checkpoint_path=truncated, **options)
    truncated.write_bytes(truncated.read_bytes()[:100])
    with pytest.raises(SSLMinimalError, match="truncated"):
        fit(model, tiny_dataset, "smoke", checkpoint_path=truncated, resume=True, **options)
    assert truncated.is_file()

    other = tmp_path / "instdisc.pt"
    fit(_instdisc(tiny_dataset), tiny_dataset, "smoke", checkpoint_path=other, **options)
    with pytest.raises(SSLMinimalError, match="written by method 'instdisc'"):
        fit(model, tiny_dataset, "smoke", checkpoint_path=other, resume=True, **options)
    assert load_checkpoint(other)["method"] == "instdisc"


def test_build_errors():
    with pytest.raises(SSLMinimalError, match="valid methods are: instdisc, invaspread"):
        ssl_minimal.build("simclr3")
    with pytest.raises(SSLMinimalError, match="cannot build 'invaspread'"):
        ssl_minimal.build("invaspread", temprature=0.1)


def test_fit_tells_the_method_how_many_epochs_the_run_has(tiny_dataset):
    model = ssl_minimal.build("invaspread", dataset=tiny_dataset)
    assert model.epochs is None
    fit(model, tiny_dataset, "smoke", epochs=3, batch_size=32, max_steps=1, progress=False)
    assert model.epochs == 3


def test_monitors_are_recorded_with_the_knn_monitor_and_survive_a_resume(tiny_dataset, tmp_path):
    probe = tiny_dataset.images[:32]
    calls = []

    def noisy_count(method):                       # draws random numbers: must not change the training
        calls.append(method.training)
        return float(len(calls)) + 0 * torch.rand(1).item()

    monitors = {"calls": noisy_count,
                "z": lambda method: ssl_minimal.evaluate.collapse_diagnostics(
                    ssl_minimal.evaluate.embeddings_of(method, probe))}
    options = dict(epochs=3, batch_size=16, progress=False, seed=7, knn_every_epochs=2,
                   eval_dataset=tiny_dataset, knn_train_samples=64, knn_test_samples=64)
    plain = _instdisc(tiny_dataset)
    fit(plain, tiny_dataset, "smoke", **options)
    monitored = _instdisc(tiny_dataset)
    history = fit(monitored, tiny_dataset, "smoke", monitors=monitors, **options)

    assert history.monitor_step == history.knn_step == [0, 8, 12]      # before, every 2 epochs, at the end
    assert history.monitor_epoch == [0.0, 2.0, 3.0]
    assert history.monitors["calls"] == [1.0, 2.0, 3.0]
    assert sorted(history.monitors) == ["calls", "z/effective_rank", "z/expected_std", "z/std"]
    assert all(len(values) == 3 for values in history.monitors.values())
    assert calls == [True, True, True]             # the method is back in train mode after each monitor
    for (name, a), (_, b) in zip(plain.state_dict().items(), monitored.state_dict().items()):
        assert torch.equal(a, b), name             # monitoring changed nothing in the training

    checkpoint = tmp_path / "checkpoint.pt"
    calls.clear()
    fit(_instdisc(tiny_dataset), tiny_dataset, "smoke", monitors=monitors, checkpoint_path=checkpoint,
        max_steps=9, **options)                    # "crash" after the epoch-2 evaluation
    resumed = fit(_instdisc(tiny_dataset), tiny_dataset, "smoke", monitors=monitors, checkpoint_path=checkpoint,
                  resume=True, **options)
    assert resumed.monitor_step == [0, 8, 12]
    assert resumed.monitors["z/std"] == pytest.approx(history.monitors["z/std"])
    assert resumed.monitors["calls"] == [1.0, 2.0, 3.0]


def test_monitors_must_be_a_dict_of_functions(tiny_dataset):
    model = _instdisc(tiny_dataset)
    with pytest.raises(SSLMinimalError, match="monitors must be a dict"):
        fit(model, tiny_dataset, "smoke", epochs=1, batch_size=16, progress=False, monitors=[len])
    with pytest.raises(SSLMinimalError, match="monitors must be a dict"):
        fit(model, tiny_dataset, "smoke", epochs=1, batch_size=16, progress=False, monitors={"x": 1.0})


def test_gradient_norms_records_each_groups_norm_at_every_backward_pass():
    torch.manual_seed(0)
    first, second, frozen = torch.nn.Linear(3, 4), torch.nn.Linear(4, 2), torch.nn.Linear(2, 1)
    frozen.requires_grad_(False)
    norms = ssl_minimal.GradientNorms({"first": first.parameters(), "second": second.parameters(),
                                       "frozen": frozen.parameters()})
    expected = {"first": [], "second": []}
    for step in range(3):
        for layer in (first, second):
            layer.zero_grad(set_to_none=True)
        frozen(second(first(torch.randn(5, 3)))).pow(2).sum().backward()
        for name, layer in (("first", first), ("second", second)):     # sqrt of the sum of all squares
            expected[name].append(math.sqrt(sum(float(p.grad.pow(2).sum()) for p in layer.parameters())))
    values = norms.values
    assert values["frozen"] == [] and len(values["first"]) == len(values["second"]) == 3
    for name in ("first", "second"):
        assert values[name] == pytest.approx(expected[name], rel=1e-5)
    norms.remove()
    second(first(torch.randn(5, 3))).sum().backward()
    assert len(norms.values["first"]) == 3                               # no hooks any more


def test_moco_v3_gradient_groups_split_the_patch_projection_from_the_rest(tiny_dataset):
    for freeze in (False, True):
        torch.manual_seed(0)
        model = ssl_minimal.build("moco_v3", backbone_options={"dim": 32, "depth": 1, "heads": 2}, hidden_dim=32,
                                  projection_dim=16, freeze_patch_embedding=freeze)
        groups = model.gradient_norm_groups()
        patch = model.encoder.backbone.patch_embedding
        assert [id(p) for p in groups["patch projection"]] == [id(patch.weight), id(patch.bias)]
        assert len(groups["rest of the backbone"]) == len(list(model.encoder.parameters())) - 2
        norms = ssl_minimal.GradientNorms(groups)
        ssl_minimal.fit(model, tiny_dataset, "smoke", epochs=1, batch_size=16, progress=False)
        values = norms.values
        assert len(values["rest of the backbone"]) == 4 and all(v > 0 for v in values["rest of the backbone"])
        assert len(values["patch projection"]) == (0 if freeze else 4)
