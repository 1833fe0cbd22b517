"""Precision: bf16 autocast for the networks where it is faster, float32 for everything delicate.

fit(precision="auto") trains the ConvNets under torch.autocast(bfloat16) on a device with native bf16
and everything else in fp32; augmentations, losses, Sinkhorn, memory banks and InstDisc's NCE stay
float32 inside that autocast. These tests run on any CPU: torch emulates bf16 where it is not native.
"""

import pytest
import torch

import ssl_minimal
from ssl_minimal import augmentations, losses, training
from ssl_minimal.checks import SSLMinimalError
from ssl_minimal.cli import main
from ssl_minimal.methods import METHODS as METHOD_CLASSES
from ssl_minimal.training import fit, get_budget, method_backbones, resolve_precision

CPU = torch.device("cpu")


def bf16_autocast():
    return torch.autocast("cpu", dtype=torch.bfloat16)


def test_auto_picks_bf16_only_for_the_backbones_measured_faster_on_a_native_bf16_cpu(monkeypatch):
    monkeypatch.delenv("SSL_PRECISION", raising=False)
    monkeypatch.setattr(training, "native_bf16", lambda device: True)
    assert resolve_precision("auto", CPU, ["small_convnet"])[0] == "bf16"
    assert resolve_precision("auto", CPU, ["resnet18"])[0] == "bf16"
    assert resolve_precision("auto", CPU, ["vit_tiny"])[0] == "bf16"
    assert resolve_precision("auto", CPU, ["small_vit"]) == ("fp32", "small_vit is not faster in bf16 on a CPU")
    assert resolve_precision("auto", CPU, ["small_convnet", "small_vit"])[0] == "fp32"
    monkeypatch.setattr(training, "native_bf16", lambda device: False)   # an older CPU: do not slow it down
    assert resolve_precision("auto", CPU, ["small_convnet"]) == ("fp32", "cpu has no native bf16")
    assert resolve_precision("bf16", CPU, ["small_vit"]) == ("bf16", "as asked")
    assert resolve_precision("fp32", CPU, ["small_convnet"]) == ("fp32", "as asked")
    with pytest.raises(SSLMinimalError, match="unknown precision 'fp16'; valid precisions are: auto, fp32, bf16"):
        resolve_precision("fp16", CPU, ["small_convnet"])


def test_ssl_precision_environment_variable_overrides_auto_only(monkeypatch):
    monkeypatch.setattr(training, "native_bf16", lambda device: True)
    monkeypatch.setenv("SSL_PRECISION", "fp32")
    assert resolve_precision("auto", CPU, ["small_convnet"]) == ("fp32", "SSL_PRECISION")
    assert resolve_precision("bf16", CPU, ["small_convnet"]) == ("bf16", "as asked")
    monkeypatch.setenv("SSL_PRECISION", "half")
    with pytest.raises(SSLMinimalError, match="SSL_PRECISION='half' is not one of auto, fp32, bf16"):
        resolve_precision("auto", CPU, ["small_convnet"])


def test_method_backbones_finds_every_encoder():
    train = ssl_minimal.data.load("shapes", "train").subset(64)
    assert method_backbones(ssl_minimal.build("cmc", dataset=train)) == ["small_convnet"]
    assert method_backbones(ssl_minimal.build("moco_v3", dataset=train, backbone="small_vit")) == ["small_vit"]


def shapes_256(method: str):
    """256 training shapes; with captions for a method that reads them (CLIP)."""
    load = ssl_minimal.data.load_captioned if METHOD_CLASSES[method].uses_captions else ssl_minimal.data.load
    return load("shapes", "train").subset(256, seed=0)


def short_run(method: str, precision: str, seed: int = 0):
    train = shapes_256(method)
    torch.manual_seed(seed)
    model = ssl_minimal.build(method, dataset=train)
    budget = get_budget("smoke", epochs=1, batch_size=64, knn_every_epochs=0, precision=precision)
    return fit(model, train, budget, seed=seed, progress=False, max_steps=3)


@pytest.mark.parametrize("method", ["simclr_v1", "instdisc"])
def test_bf16_runs_are_reproducible_bitwise_and_really_bf16(method):
    first, second = short_run(method, "bf16"), short_run(method, "bf16")
    assert first.precision == "bf16" and first.loss == second.loss          # same seed, same losses, bitwise
    fp32 = short_run(method, "fp32")
    assert fp32.precision == "fp32" and fp32.loss != first.loss              # the networks did run in bf16
    assert first.loss == pytest.approx(fp32.loss, rel=2e-2)                  # ... and bf16 only rounds


def test_auto_resolves_per_backbone_in_fit(monkeypatch):
    monkeypatch.delenv("SSL_PRECISION", raising=False)
    monkeypatch.setattr(training, "native_bf16", lambda device: True)
    assert short_run("simclr_v1", "auto").precision == "bf16"
    assert short_run("mae", "auto").precision == "fp32"                      # the small ViT stays fp32 on a CPU


@pytest.mark.parametrize("loss, arguments", [
    (losses.nt_xent, lambda z: (z[0], z[1], 0.5)),
    (losses.info_nce, lambda z: (z[0], z[1], z[2], 0.07)),
    (losses.invariance_spreading_loss, lambda z: (z[0], z[1], 0.1)),
    (losses.swav_loss, lambda z: ([z[0] @ z[2].t(), z[1] @ z[2].t()],
                                  [torch.softmax(z[1] @ z[2].t(), dim=1), torch.softmax(z[0] @ z[2].t(), dim=1)], 0.1)),
    (losses.barlow_twins_loss, lambda z: (z[0], z[1])),
    (losses.clip_loss, lambda z: (z[0], z[1], 14.3)),
])
def test_losses_compute_in_float32_inside_bf16_autocast(loss, arguments):
    torch.manual_seed(0)
    z = [torch.nn.functional.normalize(torch.randn(32, 16), dim=1) for _ in range(3)]
    given = arguments(z)
    expected = loss(*given)
    with bf16_autocast():
        inside = loss(*given)
    assert inside.dtype == torch.float32 and torch.equal(inside, expected)


def test_bf16_inputs_are_cast_to_float32_and_keep_their_gradient():
    z1 = torch.randn(8, 4, dtype=torch.bfloat16, requires_grad=True)
    with bf16_autocast():
        value = losses.nt_xent(z1, z1.detach().flip(0), 0.5)
    value.backward()
    assert value.dtype == torch.float32 and z1.grad is not None and z1.grad.dtype == torch.bfloat16
    assert torch.equal(value, losses.nt_xent(z1.detach().float(), z1.detach().flip(0).float(), 0.5))
    assert losses.nt_xent(z1.detach().double(), z1.detach().double(), 0.5).dtype == torch.float64   # float64 kept


def test_sinkhorn_and_instdisc_nce_stay_float32_inside_autocast():
    torch.manual_seed(0)
    scores = torch.randn(64, 30)
    expected = losses.sinkhorn(scores)
    with bf16_autocast():
        assert torch.equal(losses.sinkhorn(scores), expected)
    train = ssl_minimal.data.load("shapes", "train").subset(256)
    model = ssl_minimal.build("instdisc", dataset=train)
    v = torch.nn.functional.normalize(torch.randn(16, model.memory_bank.bank.shape[1]), dim=1)
    indices = torch.arange(16)
    torch.manual_seed(1)
    expected = model.nce_step(v, indices)
    torch.manual_seed(1)
    with bf16_autocast():
        inside = model.nce_step(v, indices)
    assert torch.equal(inside, expected)


@pytest.mark.parametrize("name", ["simclr", "byol_view1", "cmc", "mae"])
def test_augmentations_stay_float32_inside_autocast(name):
    augment = augmentations.recipe(name)
    images = ssl_minimal.data.load("shapes", "train").images[:32]
    expected = augment(images, generator=torch.Generator().manual_seed(0))
    with bf16_autocast():
        inside = augment(images, generator=torch.Generator().manual_seed(0))
    assert inside.dtype == torch.float32 and torch.equal(inside, expected)
    with bf16_autocast():                  # the Lab conversion of CMC's views and SwAV's multi-crop too
        lab = augmentations.rgb_to_lab(expected)
        crops = augmentations.multi_crop(images, 32, 16, num_local=2, generator=torch.Generator().manual_seed(0))
    assert lab.dtype == torch.float32 and torch.equal(lab, augmentations.rgb_to_lab(expected))
    assert all(crop.dtype == torch.float32 for crop in crops)


@pytest.mark.parametrize("method", ssl_minimal.METHODS)
def test_every_method_trains_in_bf16_with_a_float32_loss_and_float32_state(method):
    history = short_run(method, "bf16")
    assert history.precision == "bf16" and all(map(torch.isfinite, torch.tensor(history.loss)))
    train = shapes_256(method)
    model = ssl_minimal.build(method, dataset=train)
    model.before_training(train.images)
    captions = [] if train.captions is None else [train.captions[:64]]
    with bf16_autocast():
        loss = model.training_step(train.images[:64], torch.arange(64), *captions)
    assert loss.dtype == torch.float32
    assert all(buffer.dtype != torch.bfloat16 for buffer in model.buffers())       # banks, queues, centres
    assert all(parameter.dtype == torch.float32 for parameter in model.parameters())


def test_cli_first_line_says_the_precision(capsys, tmp_path, monkeypatch):
    monkeypatch.delenv("SSL_PRECISION", raising=False)
    monkeypatch.setattr(training, "native_bf16", lambda device: True)
    arguments = ["--budget", "smoke", "--max-steps", "1", "--no-progress"]
    assert main(["train", "simclr_v1", *arguments, "--output", str(tmp_path / "a")]) == 0
    first = capsys.readouterr().out.splitlines()[0]
    assert "bf16 autocast + channels_last: this CPU has native bf16" in first
    assert main(["train", "simclr_v1", *arguments, "--precision", "fp32", "--output", str(tmp_path / "b")]) == 0
    assert "fp32: as asked" in capsys.readouterr().out.splitlines()[0]
