"""The benchmark scripts' shared pieces: what makes the ssl_minimal-vs-lightly comparison fair.

Most tests need no lightly (CI does not install it); the ones that do are skipped cleanly without it
(run them in the benchmark's environment, see benchmarks/README.md).
"""

import importlib.util
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision.transforms as T

import ssl_minimal
from ssl_minimal import augmentations, evaluate, losses
from ssl_minimal.backbones import Encoder

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def load_script(name: str):
    spec = importlib.util.spec_from_file_location(f"benchmark_{name}", BENCHMARKS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


compare = load_script("compare_lightly")
throughput = load_script("augmentation_throughput")
train_methods = load_script("train_methods")
floor = load_script("throughput_floor")


def encoders_of(model):
    return [m for m in model.modules() if isinstance(m, Encoder)]


@pytest.mark.parametrize("name", ["byol", "moco_v2"])
def test_initial_weights_reach_every_encoder_including_momentum_copies(tiny_dataset, name):
    state = compare.initial_encoder("small_convnet", tiny_dataset, seed=3).state_dict()
    again = compare.initial_encoder("small_convnet", tiny_dataset, seed=3).state_dict()
    assert all(torch.equal(state[k], again[k]) for k in state)               # seeded: the same on both sides
    torch.manual_seed(123)
    model = ssl_minimal.build(name, dataset=tiny_dataset)
    assert compare.load_initial_weights(model, state) == 2                     # online + momentum copy
    for encoder in encoders_of(model):
        loaded = encoder.state_dict()
        assert all(torch.equal(loaded[k], state[k]) for k in state)


def test_recipe_copies_the_method_hyper_parameters(tiny_dataset):
    simclr = compare.method_recipe(ssl_minimal.build("simclr_v1", dataset=tiny_dataset, temperature=0.25))
    assert simclr["optimizer"] == "lars" and simclr["learning_rate"] == 0.3 and simclr["temperature"] == 0.25
    assert (simclr["feature_dim"], simclr["hidden_dim"], simclr["projection_dim"]) == (256, 256, 128)
    byol = compare.method_recipe(ssl_minimal.build("byol", dataset=tiny_dataset, base_momentum=0.99))
    assert (byol["hidden_dim"], byol["projection_dim"], byol["base_momentum"]) == (4096, 256, 0.99)
    assert byol["weight_decay"] == 1.5e-6
    method = ssl_minimal.build("moco_v2", dataset=tiny_dataset, queue_size=24)
    moco = compare.method_recipe(method)
    assert moco["optimizer"] == "sgd" and moco["temperature"] == 0.2 and moco["key_momentum"] == 0.999
    assert moco["queue_size"] == len(method.queue) == 24
    assert (moco["hidden_dim"], moco["projection_dim"]) == (2048, 128)
    with pytest.raises(ssl_minimal.SSLMinimalError, match="compare_lightly knows methods"):
        compare.method_recipe(ssl_minimal.build("simsiam", dataset=tiny_dataset))


def test_lightly_side_gets_the_learning_rates_that_fit_uses(tiny_dataset):
    torch.manual_seed(0)
    model = ssl_minimal.build("moco_v2", dataset=tiny_dataset)
    history = ssl_minimal.fit(model, tiny_dataset, "smoke", epochs=3, batch_size=32, warmup_epochs=1,
                              knn_every_epochs=0, progress=False, device="cpu")
    schedule = compare.schedule_for(compare.method_recipe(model), len(tiny_dataset), 3, 32, 1)
    assert len(schedule) == len(history.step) == 3 * (64 // 32)
    np.testing.assert_allclose(schedule, history.lr)


def test_pil_dataset_serves_the_same_pixels(tiny_dataset):
    served = compare.PILImages(tiny_dataset.images, tiny_dataset.labels, lambda image: [T.functional.pil_to_tensor(image)])
    views, label = served[5]
    assert torch.equal(views[0], tiny_dataset.images[5]) and label == int(tiny_dataset.labels[5])
    assert len(served) == len(tiny_dataset)


def test_knn_top1_is_the_library_knn_with_the_bank_clipped(tiny_dataset):
    encoder = compare.initial_encoder("small_convnet", tiny_dataset, seed=0)
    bank, queries = tiny_dataset, tiny_dataset.subset(range(32))
    expected = evaluate.knn_accuracy(evaluate.extract_features(encoder, bank.images), bank.labels,
                                     evaluate.extract_features(encoder, queries.images), queries.labels, k=64)
    assert compare.knn_top1(encoder, bank, queries) == expected


def test_comparison_ratios_are_ours_over_lightly():
    run = {"images_per_second": 100.0, "train_seconds": 10.0, "cpu_seconds": 20.0, "peak_rss_mib": 500.0}
    results = [{"method": "byol", "library": "ssl_minimal", **run, "images_per_second": 400.0, "knn_top1": 0.40},
               {"method": "byol", "library": "lightly", **run, "train_seconds": 40.0, "knn_top1": 0.38},
               {"method": "moco_v2", "library": "ssl_minimal", **run, "knn_top1": 0.3}]        # no lightly run: no ratio
    (row,) = compare.comparison(results)
    assert row["method"] == "byol" and row["images_per_second"] == 4.0 and row["train_seconds"] == 0.25
    assert row["knn_points"] == pytest.approx(2.0)
    assert "**4.00x**" in compare.markdown([], [row], "# header")


def test_peak_rss_can_be_reset_before_training():
    if not compare.reset_peak_rss():
        pytest.skip("/proc/self/clear_refs is not available here")
    block = np.ones(200 * 2**20, dtype=np.uint8)          # 200 MiB resident
    high = compare.peak_rss_mib()
    del block
    compare.reset_peak_rss()
    assert compare.peak_rss_mib() < high - 150


def test_train_methods_options_reach_the_constructor_or_the_class_hyper_parameters(tiny_dataset):
    options = train_methods.parse_options(["epsilon=0.02", "optimizer=sgd", "num_local_crops=2"])
    assert options == {"epsilon": 0.02, "optimizer": "sgd", "num_local_crops": 2}
    model = train_methods.build_with_options("swav", tiny_dataset, "small_convnet", options)
    assert model.epsilon == 0.02 and model.optimizer == "sgd" and model.num_local_crops == 2
    assert type(model).optimizer == "lars"               # the class (the paper's default) is untouched
    with pytest.raises(SystemExit, match="no constructor option or class attribute 'bogus'"):
        train_methods.build_with_options("swav", tiny_dataset, "small_convnet", {"bogus": 1})
    with pytest.raises(SystemExit, match="NAME=VALUE"):
        train_methods.parse_options(["epsilon"])


def test_time_to_lightly_accuracy_reads_the_training_time_at_the_first_monitor_that_reached_it():
    history = ssl_minimal.training.History(knn_step=[0, 10, 20], knn_accuracy=[0.3, 0.85, 0.86],
                                           step_seconds=[6.0 * (i + 1) for i in range(20)])
    result = train_methods.time_to_published("simclr_v1", history)            # lightly: 84.8% in 87.1 min
    assert result == {"lightly_published_knn": 0.848, "lightly_published_minutes": 87.1, "minutes_to_lightly_knn": 1.0}
    assert train_methods.time_to_published("byol", history)["minutes_to_lightly_knn"] is None     # 86.8% never reached
    assert train_methods.time_to_published("instdisc", history) == {}


@pytest.mark.parametrize("method, passes", [
    ("simclr_v1", "32 img 32px grad"),                                  # both views in one call, with gradient
    ("moco_v2", "16 img 32px grad + 4 x 4 img 32px no-grad")])         # key encoder: no gradient, shuffled-BN groups
def test_floor_replays_the_backbone_passes_of_one_training_step(tiny_dataset, method, passes):
    result = floor.measure(method, tiny_dataset, "small_convnet", batch_size=16, steps=2, warmup_steps=1,
                           device=torch.device("cpu"), compile=False)
    assert result["passes_per_step"] == passes
    assert result["bare_floor_images_per_second"] > 0 and result["training_images_per_second"] > 0
    assert result["fraction_of_method_floor"] == pytest.approx(
        result["training_images_per_second"] / result["method_floor_images_per_second"])
    assert "| **" in floor.markdown_row(result)


@pytest.mark.parametrize("precision, channels_last", [("fp32", True), ("fp32-contiguous", False)])
def test_floor_measures_fp32_without_channels_last_when_asked(tiny_dataset, monkeypatch, precision, channels_last):
    """fp32-contiguous (issue 14's baseline) trains and floors the model in the default memory format, then
    restores fit's channels_last for whatever runs next."""
    formats, real_fit = [], floor.fit

    def spy(model, *args, **kwargs):
        history = real_fit(model, *args, **kwargs)
        weights = [m.weight for m in model.modules() if isinstance(m, torch.nn.Conv2d) and m.in_channels > 3]
        formats.append(weights[0].is_contiguous(memory_format=torch.channels_last))
        return history

    monkeypatch.setattr(floor, "fit", spy)
    result = floor.measure("simclr_v1", tiny_dataset, "small_convnet", batch_size=16, steps=1, warmup_steps=1,
                           device=torch.device("cpu"), compile=False, precision=precision)
    assert formats == [channels_last] and result["asked"] == precision
    assert ("contiguous" in result["precision"]) is not channels_last
    assert ssl_minimal.training.MEMORY_FORMAT == torch.channels_last


def test_throughput_benchmark_uses_the_recipe_parameters():
    """torchvision's side of augmentation_throughput.py must be the simclr recipe op for op."""
    ours = {step.op.__name__: step.options for step in augmentations.recipe("simclr", 32).steps}
    assert list(ours) == ["random_resized_crop", "horizontal_flip", "color_jitter", "random_grayscale"]   # no blur at 32 px
    crop, flip, jitter, gray, _ = throughput.torchvision_pipeline().transforms
    assert crop.scale == ours["random_resized_crop"]["scale"] and crop.size == (32, 32)
    assert crop.ratio == pytest.approx((3 / 4, 4 / 3))
    assert flip.p == ours["horizontal_flip"]["p"] and gray.p == ours["random_grayscale"]["p"]
    assert jitter.p == ours["color_jitter"]["p"]
    (color,) = jitter.transforms
    strength = ours["color_jitter"]
    assert color.brightness == pytest.approx((1 - strength["brightness"], 1 + strength["brightness"]))
    assert color.saturation == pytest.approx((1 - strength["saturation"], 1 + strength["saturation"]))
    assert color.hue == pytest.approx((-strength["hue"], strength["hue"]))


def test_throughput_sides_make_batches_of_views_of_the_same_images(tiny_dataset):
    dataset = throughput.CIFARStyleDataset(tiny_dataset.images, T.Compose([T.PILToTensor()]))
    assert torch.equal(dataset[7], tiny_dataset.images[7])
    result = throughput.measure(tiny_dataset.images, batch_size=16, cores=1, rounds=1, repeats=1)
    assert result["workers"] == 0 and result["ours_best"] > 0 and result["theirs_per_cpu_second"] > 0
    assert result["batch_threads_best"] is None                  # batch threads are the multi-core setting


def test_throughput_two_core_setting_reports_both_ways_of_using_the_cores(tiny_dataset):
    result = throughput.measure(tiny_dataset.images[:64], batch_size=16, cores=2, rounds=1, repeats=1)
    assert result["workers"] == 2 and result["batch_threads_best"] > 0 and result["theirs_per_cpu_second"] is None
    rows = throughput.markdown_rows(result, "tiny", 16, "python benchmarks/augmentation_throughput.py", "0.0")
    assert len(rows) == 2 and "2 threads / 2 workers" in rows[0] and "2 batch threads / 2 workers" in rows[1]


# ----------------------------------------------------------------------------------------------
# With lightly installed (the benchmark's own environment)
def lightly_steps(transform) -> dict:
    """The torchvision/lightly ops of each view of a lightly multi-view transform, by class name."""
    views = []
    for view in transform.transforms:
        ops = {}
        for op in view.transform.transforms:
            inner = op.transforms[0] if type(op).__name__ == "RandomApply" else op    # torchvision v1 or v2
            ops[type(inner).__name__] = (op, inner)
        views.append(ops)
    return views


@pytest.mark.parametrize("method, recipes", [("simclr_v1", ["simclr", "simclr"]), ("byol", ["byol_view1", "byol_view2"]),
                                             ("moco_v2", ["moco_v2", "moco_v2"])])
def test_lightly_transforms_have_our_augmentation_parameters(method, recipes):
    pytest.importorskip("lightly")
    views = lightly_steps(compare.lightly_transform(method, 32, compare.BLUR_SIGMAS))
    assert len(views) == 2
    for ops, name in zip(views, recipes):
        ours = {step.op.__name__: step.options for step in augmentations.recipe(name, 32).steps}
        crop = ops["RandomResizedCrop"][1]
        assert crop.scale == ours["random_resized_crop"]["scale"] and crop.size == (32, 32)
        assert ops["RandomHorizontalFlip"][1].p == ours["horizontal_flip"]["p"]
        assert ops["RandomVerticalFlip"][1].p == 0
        apply_jitter, color = ops["ColorJitter"]
        assert apply_jitter.p == ours["color_jitter"]["p"]
        for field in ("brightness", "contrast", "saturation"):
            strength = ours["color_jitter"][field]
            assert getattr(color, field) == pytest.approx((1 - strength, 1 + strength))
        assert color.hue == pytest.approx((-ours["color_jitter"]["hue"], ours["color_jitter"]["hue"]))
        assert ops["RandomGrayscale"][1].p == ours["random_grayscale"]["p"]
        blur = ops["GaussianBlur"][1]
        assert blur.prob == ours.get("gaussian_blur", {"p": 0.0})["p"]
        if blur.prob:
            assert tuple(blur.sigmas) == ours["gaussian_blur"]["sigma"]
        if "RandomSolarization" in ops:
            assert ops["RandomSolarization"][1].prob == ours.get("solarize", {"p": 0.0})["p"]
        assert "Normalize" not in ops                     # the shared encoder normalises
        image = T.functional.to_pil_image(torch.randint(0, 256, (3, 32, 32), dtype=torch.uint8))
        view = compare.lightly_transform(method, 32, compare.BLUR_SIGMAS)(image)[0]
        assert view.shape == (3, 32, 32) and 0 <= view.min() and view.max() <= 1


SMALL_HEADS = {"simclr_v1": {}, "byol": {"hidden_dim": 128}, "moco_v2": {"hidden_dim": 128}}   # fast tests


def lightly_model(method, tiny_dataset):
    torch.manual_seed(0)
    recipe = compare.method_recipe(ssl_minimal.build(method, dataset=tiny_dataset, **SMALL_HEADS[method]))
    encoder = compare.initial_encoder("small_convnet", tiny_dataset, seed=0)
    return compare.LIGHTLY_MODELS[method](encoder, recipe), recipe


def random_views(seed=0):
    generator = torch.Generator().manual_seed(seed)
    return [torch.rand(8, 3, 32, 32, generator=generator) for _ in range(2)]


def test_lightly_simclr_minimises_our_nt_xent(tiny_dataset):
    pytest.importorskip("lightly")
    model, recipe = lightly_model("simclr_v1", tiny_dataset)
    x0, x1 = random_views()
    z0, z1 = model.projection_head(model.backbone(x0)), model.projection_head(model.backbone(x1))
    expected = losses.nt_xent(z0, z1, recipe["temperature"])
    assert model.loss([x0, x1], 0, 10).item() == pytest.approx(expected.item(), rel=1e-5)


def test_lightly_byol_loss_is_the_papers_sum_over_both_directions(tiny_dataset):
    pytest.importorskip("lightly")
    model, _ = lightly_model("byol", tiny_dataset)
    x0, x1 = random_views()
    loss = model.loss([x0, x1], 0, 10)       # step 0: the momentum copies still equal the online network
    p0, p1 = (model.prediction_head(model.projection_head(model.backbone(x))) for x in (x0, x1))
    z0, z1 = model.forward_momentum(x0), model.forward_momentum(x1)
    expected = losses.byol_loss(p0, z1) + losses.byol_loss(p1, z0)       # ssl_minimal's L + L~
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)
    loss.backward()
    assert all(p.grad is None for p in model.backbone_momentum.parameters())        # targets get no gradient


def test_lightly_moco_minimises_our_info_nce_against_the_bank_before_update(tiny_dataset):
    pytest.importorskip("lightly")
    model, recipe = lightly_model("moco_v2", tiny_dataset)
    bank = model.criterion.memory_bank.bank.clone()                     # [K, C] unit vectors
    assert bank.shape == (recipe["queue_size"], recipe["projection_dim"])
    x_query, x_key = random_views()
    q = torch.nn.functional.normalize(model.projection_head(model.backbone(x_query)), dim=1)
    k = torch.nn.functional.normalize(model.projection_head_momentum(model.backbone_momentum(x_key)), dim=1)
    expected = losses.info_nce(q, k, bank, recipe["temperature"])
    assert model.loss([x_query, x_key], 0, 10).item() == pytest.approx(expected.item(), rel=1e-5)
    assert torch.allclose(model.criterion.memory_bank.bank[:8], k, atol=1e-6)     # keys enqueued after the loss


def test_ssl_minimal_side_is_reproducible_whatever_the_global_generator_held(tiny_dataset):
    # A fresh process starts torch's global generator from a random seed: the run must not depend on it.
    state = compare.initial_encoder("small_convnet", tiny_dataset, seed=0).state_dict()
    config = {"seed": 0, "epochs": 1, "batch_size": 32, "warmup_epochs": 0.5, "backbone": "small_convnet",
              "method_options": {}}
    runs = []
    for scramble in (1, 2):
        torch.manual_seed(scramble)
        runs.append(compare.train_ssl_minimal("simclr_v1", state, tiny_dataset, config, torch.device("cpu"))["losses"])
    assert runs[0] == runs[1]


@pytest.mark.parametrize("method", compare.METHODS)
def test_both_sides_take_the_same_number_of_steps(tiny_dataset, method):
    pytest.importorskip("lightly")
    model, recipe = lightly_model(method, tiny_dataset)
    config = {"seed": 0, "epochs": 2, "batch_size": 32, "warmup_epochs": 0.5, "workers": 0,
              "lightly_blur_sigmas": compare.BLUR_SIGMAS, "backbone": "small_convnet", "method_options": SMALL_HEADS[method]}
    outcome = compare.train_lightly(method, recipe, model.backbone, tiny_dataset, config, torch.device("cpu"))
    ours = compare.train_ssl_minimal(method, model.backbone.state_dict(), tiny_dataset, config, torch.device("cpu"))
    assert outcome["steps"] == ours["steps"] == len(outcome["losses"]) == 2 * (64 // 32)
    assert all(np.isfinite(outcome["losses"]))


def test_gpu_check_script_runs_end_to_end_on_cpu(tmp_path):
    # The prepared GPU run is only ever run on a lent GPU: this dry run keeps it working meanwhile.
    script = BENCHMARKS / "gpu_check.sh"
    environment = {**os.environ, "DEVICE": "cpu", "BUDGET": "smoke", "DATASET": "shapes", "METHODS": "instdisc",
                   "FLOOR_METHODS": "simclr_v1", "OUT": str(tmp_path / "out"), "RUN_DIR": str(tmp_path / "run"), "PYTHON": sys.executable}
    finished = subprocess.run(["bash", str(script)], cwd=BENCHMARKS.parent, env=environment, capture_output=True,
                              text=True, timeout=600)
    assert finished.returncode == 0, finished.stderr[-2000:]
    summary = (tmp_path / "out" / "time_to_accuracy.txt").read_text()
    assert summary.startswith("instdisc: 8 steps"), summary
    with tarfile.open(tmp_path / "out" / "results.tar.gz") as archive:
        names = archive.getnames()
    assert "./floor/throughput_floor.json" in names and "./instdisc/history.json" in names
    assert not any(name.endswith(".pt") for name in names)            # checkpoints stay on the machine


def test_optimizer_benchmark_times_every_variant_on_the_parameters_fit_optimises():
    bench = load_script("optimizer_step")
    network = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.BatchNorm1d(3))
    groups = bench.parameter_groups(network)
    assert [len(g["params"]) for g in groups] == [1, 3] and groups[1]["weight_decay"] == 0.0
    for p in network.parameters():
        p.grad = torch.ones_like(p)
    variants = bench.optimisers(groups)
    assert {"SGD (fused: fit's on a GPU)", "AdamW (fused: fit's on a GPU)", "LARS (_foreach, fit's)", "LARS (per tensor)"} <= set(variants)
    before = [p.detach().clone() for p in network.parameters()]
    for optimiser, step_name in variants.values():       # every variant really steps
        assert bench.time_steps(optimiser, step_name, 1, torch.device("cpu")) > 0
    assert all(not torch.equal(a, b) for a, b in zip(before, network.parameters()))
