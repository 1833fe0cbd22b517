"""Side by side with lightly: SimCLR, BYOL and MoCo v2 trained by ssl_minimal and by lightly, same budget.

    /work/lightly-venv/bin/python benchmarks/compare_lightly.py                      # 2 CPU cores: ~15 min idle
    .../python benchmarks/compare_lightly.py --methods simclr_v1 --images 2000 --epochs 2 --threads 1
    .../python benchmarks/compare_lightly.py --device cuda                          # ResNet-18, the gpu budget

Installing lightly (for this benchmark only: it is *not* a dependency of ssl_minimal). Use a
separate virtual environment, so that ssl_minimal's own environment never sees lightly, and keep
the torch and torchvision you already have (lightly 1.6.0 accepts them; pin them so pip does not
pull another torch):

    python -m venv ~/lightly-venv
    ~/lightly-venv/bin/pip install -e . "lightly==1.6.0" "torch==2.14.1" "torchvision==0.29.1"   # your versions
    ~/lightly-venv/bin/python benchmarks/compare_lightly.py

(benchmarks/README.md says more.) Without lightly the script stops with a message saying this;
`--libraries ssl_minimal` runs our side alone.

What is the same on both sides (so that the numbers compare libraries, not set-ups):
  * the backbone: one `ssl_minimal.backbones.Encoder` (Normalize + small ConvNet of width 32, or
    ResNet-18 on cuda), and the *same initial weights* (built once with --seed, loaded into every
    encoder of both models, the momentum copies included);
  * the data: a class-balanced subset of CIFAR-10 (`data.load(...).subset(--images, seed)`), the
    same decoded pixels; the same batch size, number of optimiser steps and images seen
    (epochs x images // batch, last incomplete batch dropped on both sides);
  * the hyper-parameters, read from the ssl_minimal method: optimiser (LARS for SimCLR and BYOL,
    SGD for MoCo v2; the same `training.make_optimizer` and the same weight-decay groups on both
    sides), learning rate x batch / 256, weight decay, the per-step cosine schedule with warm-up,
    temperature, head sizes, MoCo's queue size and momentum, BYOL's base EMA rate and its cosine
    schedule; the augmentation parameters of the ssl_minimal recipe (crop scale, jitter strengths
    and probability, grayscale, blur and solarisation probabilities and sigma range, flip);
  * the precision (--precision, default auto as `fit`: bf16 autocast for the ConvNets on a CPU or GPU
    with native bf16, else fp32; lightly's training loop is ours in this script, so it gets the same
    autocast) and channels_last, on both sides;
  * the evaluation: `evaluate.knn_accuracy` (k = 200, tau = 0.1) of the backbone's features,
    bank = the training subset (no augmentation), queries = the CIFAR-10 test images. The random-
    init kNN of the shared initial encoder is printed beside every accuracy.

lightly's side is written as lightly's documentation and examples write it (examples/pytorch/
simclr.py, byol.py, moco.py of lightly 1.6): a torch Dataset that hands PIL images to lightly's
per-image transform (SimCLRTransform, BYOLTransform with BYOLView1/2Transform, MoCoV2Transform;
`normalize=None` because the shared encoder normalises), a torch DataLoader with --workers worker
processes (default: one per CPU core, as a user would pick), lightly's heads
(SimCLRProjectionHead, BYOLProjectionHead/BYOLPredictionHead, MoCoProjectionHead), losses
(NTXentLoss, with its memory bank for MoCo; NegativeCosineSimilarity) and momentum utilities
(deactivate_requires_grad, update_momentum, cosine_schedule).

What differs, unavoidably or by each library's own design:
  * augmentation runs per image in PIL inside DataLoader workers (lightly) vs batched on tensors
    in the training process (ssl_minimal) - the point of the comparison;
  * Gaussian blur (BYOL, MoCo v2): lightly uses PIL's Gaussian of standard deviation sigma with no
    size limit; ssl_minimal follows SimCLR's kernel of 10% of the image side (3 taps at 32 px), so
    with the same sigma range (0.1, 2) lightly's blur is stronger on 32 px images
    (--lightly-blur-sigmas changes lightly's range; lightly's own CIFAR-10 benchmark turns blur off);
  * the heads' initial weights (different modules, both seeded), MoCo v2's random initial queue;
  * SimCLR: lightly's docs encode the two views in two forward passes (BatchNorm statistics per
    view), ssl_minimal in one pass over both views;
  * MoCo v2: ssl_minimal's key encoder uses shuffled BN in 4 sub-batches; lightly's single-device
    example has none (its batch_shuffle only matters across GPUs);
  * the momentum update: lightly's docs update before each step's forward, ssl_minimal after each
    optimiser step (the same sequence of rates); lightly averages parameters only, ssl_minimal also
    copies BatchNorm running statistics into the momentum copy (the online encoder is evaluated);
  * BYOL's loss: lightly's documented 0.5 (NCS(p0, z1) + NCS(p1, z0)) is scaled to the paper's
    L + L~ = sum of 2 - 2 cos, which ssl_minimal minimises (4 x + 4): with the shared LARS settings
    the unadapted parameters (biases, BatchNorm) would otherwise take 4x smaller steps;
  * the data order (each library's own shuffling, both seeded).

Measurements: img/s = images seen / training wall time (from the start of `fit`, or the DataLoader,
to the last step; no evaluation inside); CPU seconds of the training process plus its DataLoader
workers (resource.getrusage, self + children); peak memory = peak RSS while training
(resource.getrusage ru_maxrss, its high-water mark reset just before training through
/proc/self/clear_refs on Linux, so the data set's decoding does not count; RSS, not tracemalloc:
tensors live outside Python's allocator) of the training process, and for lightly also of its
largest DataLoader worker (forked workers share the parent's pages copy-on-write and count them in
their RSS, so the two are not added); on cuda also torch.cuda.max_memory_allocated. Each (method,
library) run is a fresh Python process, so peaks do not carry over. The machine should be idle: on
a shared machine the wall times and img/s mean little (accuracies are seeded).

Writes OUTPUT/compare_lightly.json and OUTPUT/compare_lightly.md and prints the markdown tables.
"""

from __future__ import annotations

import argparse
import datetime
import gc
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torchvision
from PIL import Image
from torch import nn

import ssl_minimal
from ssl_minimal import evaluate
from ssl_minimal.backbones import Encoder, build_encoder
from ssl_minimal.method import Method
from ssl_minimal.training import (PRECISIONS, cosine_schedule, get_budget, make_optimizer, precision_context,
                                  resolve_precision)

METHODS = ("simclr_v1", "byol", "moco_v2")
LIBRARIES = ("ssl_minimal", "lightly")
LIGHTLY_VERSION = "1.6.0"          # the version this script was written and checked against
KNN_K = 200                        # InstDisc's kNN protocol (Wu et al. 2018): k = 200, tau = 0.1
BLUR_SIGMAS = (0.1, 2.0)           # SimCLR Appendix A / BYOL Table 6 (ssl_minimal's augmentations.BLUR_SIGMA)
BYOL_LOSS_SCALE, BYOL_LOSS_OFFSET = 4.0, 4.0   # L + L~ = 4 + 4 x lightly's 0.5 (NCS(p0, z1) + NCS(p1, z0))

INSTALL_HELP = (f"lightly is not installed in this Python ({sys.executable}). The benchmark needs it, ssl_minimal "
                f"does not: install it into a separate virtual environment, keeping your torch, e.g.\n"
                f"    python -m venv ~/lightly-venv\n"
                f"    ~/lightly-venv/bin/pip install -e . 'lightly=={LIGHTLY_VERSION}' 'torch=={torch.__version__.split('+')[0]}'"
                f" 'torchvision=={torchvision.__version__.split('+')[0]}'\n"
                f"    ~/lightly-venv/bin/python benchmarks/compare_lightly.py\n"
                f"(see the docstring of benchmarks/compare_lightly.py and benchmarks/README.md). "
                f"Or run only our side with --libraries ssl_minimal.")


# ----------------------------------------------------------------------------------------------
# Shared helpers (no lightly needed; tests/test_benchmarks.py checks them)
def load_data(images: int, test_images: int | None, seed: int, data_dir: str | None = None, dataset: str = "cifar10"):
    """(train subset, test set): a class-balanced subset of `images` training images and the test
    split (all of it, or a class-balanced `test_images`)."""
    train = ssl_minimal.data.load(dataset, "train", data_dir=data_dir)
    test = ssl_minimal.data.load(dataset, "test", data_dir=data_dir)
    if images < len(train):
        train = train.subset(images, seed=seed)
    if test_images is not None and test_images < len(test):
        test = test.subset(test_images, seed=seed)
    return train, test


def initial_encoder(backbone: str, dataset, seed: int) -> Encoder:
    """The encoder both libraries start from: Normalize (the dataset's mean/std) + backbone, seeded."""
    torch.manual_seed(seed)
    return build_encoder(backbone, dataset.mean, dataset.std)


def load_initial_weights(model: nn.Module, state: dict) -> int:
    """Load the initial encoder `state` into every Encoder inside `model` (the online encoder and the
    momentum copies of MoCo and BYOL); returns how many were loaded."""
    encoders = [module for module in model.modules() if isinstance(module, Encoder)]
    for encoder in encoders:
        encoder.load_state_dict(state)
    return len(encoders)


def knn_top1(encoder: nn.Module, train, test) -> float:
    """kNN top-1 (k = 200, tau = 0.1) of the encoder's features: bank = `train`, queries = `test`."""
    bank = evaluate.extract_features(encoder, train.images)
    queries = evaluate.extract_features(encoder, test.images)
    return evaluate.knn_accuracy(bank, train.labels, queries, test.labels, k=min(KNN_K, len(train)))


def method_recipe(method: Method) -> dict:
    """The hyper-parameters of an ssl_minimal method that the lightly side copies."""
    recipe = {"optimizer": method.optimizer, "learning_rate": method.learning_rate,
              "weight_decay": method.weight_decay, "momentum": method.momentum,
              "augmentation": method.augmentation, "feature_dim": method.encoder.output_dim}
    if method.name == "simclr_v1":
        recipe.update(temperature=method.temperature, hidden_dim=method.head[0].out_features,
                      projection_dim=method.head[-1].out_features)
    elif method.name == "byol":
        recipe.update(hidden_dim=method.projector[0].out_features, projection_dim=method.projector[-1].out_features,
                      base_momentum=method.base_momentum)
    elif method.name == "moco_v2":
        recipe.update(temperature=method.temperature, hidden_dim=method.head[0].out_features,
                      projection_dim=method.head[-1].out_features, queue_size=len(method.queue),
                      key_momentum=method.m)
    else:
        raise ssl_minimal.SSLMinimalError(f"compare_lightly knows methods {', '.join(METHODS)}, got {method.name!r}")
    return recipe


def schedule_for(recipe: dict, images: int, epochs: int, batch_size: int, warmup_epochs: float) -> np.ndarray:
    """The per-step learning rates `fit` uses: base lr x batch / 256, warm-up, cosine to 0."""
    steps_per_epoch = images // batch_size
    learning_rate = recipe["learning_rate"] * batch_size / 256
    return cosine_schedule(learning_rate, 0.0, steps_per_epoch * epochs, int(warmup_epochs * steps_per_epoch))


class PILImages(torch.utils.data.Dataset):
    """The training subset served as torchvision's CIFAR10 serves it: an HWC uint8 array, one PIL
    image per item, passed through `transform` (lightly's multi-view transform)."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, transform):
        self.array = images.permute(0, 2, 3, 1).contiguous().numpy()    # uint8 [N, H, W, 3]
        self.labels, self.transform = labels.tolist(), transform

    def __len__(self) -> int:
        return len(self.array)

    def __getitem__(self, index: int):
        return self.transform(Image.fromarray(self.array[index])), self.labels[index]


def peak_rss_mib(who: int = resource.RUSAGE_SELF) -> float:
    """Peak resident set size (ru_maxrss) in MiB: KiB on Linux, bytes on macOS."""
    peak = resource.getrusage(who).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 2**10


def reset_peak_rss() -> bool:
    """Restart the peak-RSS count of this process from its current RSS (Linux >= 4.0: writing 5 to
    /proc/self/clear_refs resets the high-water mark that ru_maxrss reports), so that the peak
    measures training, not loading the data set. Memory freed earlier but kept by malloc for reuse
    (ssl_minimal.allocator) is given back first, so that it does not count. False where that is not possible."""
    ssl_minimal.allocator.release_freed_memory()
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def cpu_seconds() -> float:
    """User + system CPU time of this process and of its finished children (DataLoader workers)."""
    return sum(usage.ru_utime + usage.ru_stime for usage in (resource.getrusage(resource.RUSAGE_SELF),
                                                              resource.getrusage(resource.RUSAGE_CHILDREN)))


def comparison(results: list[dict]) -> list[dict]:
    """Per method with both libraries: the ratios ssl_minimal / lightly, and the kNN difference."""
    rows = []
    for method in dict.fromkeys(r["method"] for r in results):
        runs = {r["library"]: r for r in results if r["method"] == method}
        if set(LIBRARIES) <= set(runs):
            ours, theirs = runs["ssl_minimal"], runs["lightly"]
            rows.append({"method": method,
                         "images_per_second": ours["images_per_second"] / theirs["images_per_second"],
                         "train_seconds": ours["train_seconds"] / theirs["train_seconds"],
                         "cpu_seconds": ours["cpu_seconds"] / theirs["cpu_seconds"],
                         "peak_rss_mib": ours["peak_rss_mib"] / theirs["peak_rss_mib"],
                         "knn_top1": ours["knn_top1"] / theirs["knn_top1"],
                         "knn_points": 100 * (ours["knn_top1"] - theirs["knn_top1"])})
    return rows


def markdown(results: list[dict], ratios: list[dict], header: str) -> str:
    lines = [header, "",
             "| method | library | precision | img/s | train wall | CPU s (incl. workers) | peak RSS MiB while training (main / largest worker) "
             "| kNN top-1 | random-init kNN | final loss |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        worker = f" / {r['peak_worker_rss_mib']:,.0f}" if r["workers"] else ""
        gpu = f", GPU {r['peak_gpu_mib']:,.0f}" if r.get("peak_gpu_mib") else ""
        lines.append(f"| {r['method']} | {r['library']} | {r.get('precision', 'fp32')} | {r['images_per_second']:,.0f} | {r['train_seconds']:,.1f} s | "
                     f"{r['cpu_seconds']:,.0f} | {r['peak_rss_mib']:,.0f}{worker}{gpu} | **{r['knn_top1']:.1%}** | "
                     f"{r['knn_random_init']:.1%} | {r['final_loss']:.3f} |")
    if ratios:
        lines += ["", "| method | img/s ssl_minimal / lightly | wall time | CPU s | peak RSS (main) | kNN ratio "
                      "| kNN difference |", "|---|---|---|---|---|---|---|"]
        for q in ratios:
            lines.append(f"| {q['method']} | **{q['images_per_second']:.2f}x** | {q['train_seconds']:.2f}x | "
                         f"{q['cpu_seconds']:.2f}x | {q['peak_rss_mib']:.2f}x | {q['knn_top1']:.3f} | "
                         f"{q['knn_points']:+.1f} points |")
    return "\n".join(lines) + "\n"


# ----------------------------------------------------------------------------------------------
# lightly's side, written as lightly's examples write it (lightly is imported only here)
def lightly_transform(method: str, image_size: int, blur_sigmas: tuple[float, float]):
    """lightly's own transform for `method`, with the parameters of ssl_minimal's recipe."""
    from lightly.transforms import BYOLTransform, BYOLView1Transform, BYOLView2Transform, MoCoV2Transform, SimCLRTransform
    if method == "simclr_v1":   # recipe "simclr" at 32 px: s = 0.5 (Appendix B.9), no blur
        return SimCLRTransform(input_size=image_size, cj_strength=0.5, min_scale=0.08, gaussian_blur=0.0, normalize=None)
    if method == "byol":        # recipes byol_view1 / byol_view2 (Table 6) = lightly's defaults
        return BYOLTransform(view_1_transform=BYOLView1Transform(input_size=image_size, sigmas=blur_sigmas, normalize=None),
                             view_2_transform=BYOLView2Transform(input_size=image_size, sigmas=blur_sigmas, normalize=None))
    if method == "moco_v2":     # recipe moco_v2 = lightly's defaults (flip comes first there; it commutes)
        return MoCoV2Transform(input_size=image_size, sigmas=blur_sigmas, normalize=None)
    raise ValueError(method)


class LightlySimCLR(nn.Module):
    """lightly's SimCLR example: backbone -> SimCLRProjectionHead, NTXentLoss over both views."""

    def __init__(self, backbone: nn.Module, recipe: dict):
        from lightly.loss import NTXentLoss
        from lightly.models.modules import SimCLRProjectionHead
        super().__init__()
        self.backbone = backbone
        self.projection_head = SimCLRProjectionHead(recipe["feature_dim"], recipe["hidden_dim"], recipe["projection_dim"])
        self.criterion = NTXentLoss(temperature=recipe["temperature"])

    def loss(self, views: list[torch.Tensor], step: int, total_steps: int) -> torch.Tensor:
        x0, x1 = views
        z0 = self.projection_head(self.backbone(x0))
        z1 = self.projection_head(self.backbone(x1))
        return self.criterion(z0, z1)


class LightlyBYOL(nn.Module):
    """lightly's BYOL example: online backbone -> projection -> prediction head, momentum copies of
    backbone and projection head updated with update_momentum at a cosine_schedule rate."""

    def __init__(self, backbone: nn.Module, recipe: dict):
        import copy
        from lightly.loss import NegativeCosineSimilarity
        from lightly.models.modules import BYOLPredictionHead, BYOLProjectionHead
        from lightly.models.utils import deactivate_requires_grad
        super().__init__()
        self.backbone = backbone
        self.projection_head = BYOLProjectionHead(recipe["feature_dim"], recipe["hidden_dim"], recipe["projection_dim"])
        self.prediction_head = BYOLPredictionHead(recipe["projection_dim"], recipe["hidden_dim"], recipe["projection_dim"])
        self.backbone_momentum = copy.deepcopy(self.backbone)
        self.projection_head_momentum = copy.deepcopy(self.projection_head)
        deactivate_requires_grad(self.backbone_momentum)
        deactivate_requires_grad(self.projection_head_momentum)
        self.criterion = NegativeCosineSimilarity()
        self.base_momentum = recipe["base_momentum"]

    def forward_momentum(self, x: torch.Tensor) -> torch.Tensor:
        return self.projection_head_momentum(self.backbone_momentum(x)).detach()

    def loss(self, views: list[torch.Tensor], step: int, total_steps: int) -> torch.Tensor:
        from lightly.models.utils import update_momentum
        from lightly.utils.scheduler import cosine_schedule as lightly_cosine_schedule
        m = lightly_cosine_schedule(step, total_steps, self.base_momentum, 1.0)
        update_momentum(self.backbone, self.backbone_momentum, m=m)
        update_momentum(self.projection_head, self.projection_head_momentum, m=m)
        x0, x1 = views
        p0 = self.prediction_head(self.projection_head(self.backbone(x0)))
        p1 = self.prediction_head(self.projection_head(self.backbone(x1)))
        z0, z1 = self.forward_momentum(x0), self.forward_momentum(x1)
        loss = 0.5 * (self.criterion(p0, z1) + self.criterion(p1, z0))       # lightly's example
        return BYOL_LOSS_OFFSET + BYOL_LOSS_SCALE * loss                     # = L + L~ (see the docstring)


class LightlyMoCoV2(nn.Module):
    """lightly's MoCo example: query = projection_head(backbone(x_q)), key from the momentum copies,
    NTXentLoss with a memory bank of the last keys as negatives."""

    def __init__(self, backbone: nn.Module, recipe: dict):
        import copy
        from lightly.loss import NTXentLoss
        from lightly.models.modules import MoCoProjectionHead
        from lightly.models.utils import deactivate_requires_grad
        super().__init__()
        self.backbone = backbone
        self.projection_head = MoCoProjectionHead(recipe["feature_dim"], recipe["hidden_dim"], recipe["projection_dim"])
        self.backbone_momentum = copy.deepcopy(self.backbone)
        self.projection_head_momentum = copy.deepcopy(self.projection_head)
        deactivate_requires_grad(self.backbone_momentum)
        deactivate_requires_grad(self.projection_head_momentum)
        self.criterion = NTXentLoss(temperature=recipe["temperature"],
                                    memory_bank_size=(recipe["queue_size"], recipe["projection_dim"]))
        self.key_momentum = recipe["key_momentum"]

    def loss(self, views: list[torch.Tensor], step: int, total_steps: int) -> torch.Tensor:
        from lightly.models.utils import update_momentum
        update_momentum(self.backbone, self.backbone_momentum, m=self.key_momentum)
        update_momentum(self.projection_head, self.projection_head_momentum, m=self.key_momentum)
        x_query, x_key = views
        query = self.projection_head(self.backbone(x_query))
        key = self.projection_head_momentum(self.backbone_momentum(x_key)).detach()
        return self.criterion(query, key)


LIGHTLY_MODELS = {"simclr_v1": LightlySimCLR, "byol": LightlyBYOL, "moco_v2": LightlyMoCoV2}


def train_lightly(method: str, recipe: dict, encoder: Encoder, train, config: dict, device: torch.device) -> dict:
    """Train with lightly's transform, DataLoader, heads and loss; returns the measurements."""
    torch.manual_seed(config["seed"])
    np.random.seed(config["seed"])
    model = LIGHTLY_MODELS[method](encoder, recipe).to(device).to(memory_format=torch.channels_last)
    transform = lightly_transform(method, train.image_size, tuple(config["lightly_blur_sigmas"]))
    loader = torch.utils.data.DataLoader(
        PILImages(train.images, train.labels, transform), batch_size=config["batch_size"], shuffle=True,
        drop_last=True, num_workers=config["workers"], pin_memory=device.type == "cuda",
        generator=torch.Generator().manual_seed(config["seed"]))
    schedule = schedule_for(recipe, len(train), config["epochs"], config["batch_size"], config["warmup_epochs"])
    optimizer = make_optimizer(recipe["optimizer"], Method.parameter_groups(model), float(schedule.max()),
                               recipe["weight_decay"], recipe["momentum"])
    precision, _ = resolve_precision(config.get("precision", "auto"), device, [config["backbone"]])
    autocast = precision_context(precision, device)
    total_steps, step, losses = len(schedule), 0, []
    model.train()
    while step < total_steps:
        for views, _ in loader:
            views = [view.to(device, non_blocking=True) for view in views]
            for group in optimizer.param_groups:
                group["lr"] = float(schedule[step])
            with autocast:
                loss = model.loss(views, step, total_steps)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            losses.append(loss.detach())
            step += 1
            if step == total_steps:
                break
    del loader          # joins the workers, so that RUSAGE_CHILDREN counts them
    return {"steps": step, "losses": torch.stack(losses).float().cpu().tolist(), "model": model, "precision": precision}


def train_ssl_minimal(method: str, encoder_state: dict, train, config: dict, device: torch.device) -> dict:
    """Train with ssl_minimal's `fit` (batched augmentation on the device, no DataLoader)."""
    # Seeded like the lightly side: the heads are drawn from torch's global generator, whose seed
    # is different in every fresh process unless set (the encoder's weights are loaded below).
    torch.manual_seed(config["seed"])
    model = ssl_minimal.build(method, dataset=train, backbone=config["backbone"], **config.get("method_options", {}))
    load_initial_weights(model, encoder_state)
    budget = get_budget("gpu" if device.type == "cuda" else "cpu", epochs=config["epochs"],
                        batch_size=config["batch_size"], train_samples=len(train),
                        warmup_epochs=config["warmup_epochs"], knn_every_epochs=0,
                        checkpoint_every_steps=10**9, backbone=config["backbone"],
                        precision=config.get("precision", "auto"))
    history = ssl_minimal.fit(model, train, budget, seed=config["seed"], device=device, progress=False)
    return {"steps": len(history.step), "losses": history.loss, "model": model, "precision": history.precision}


def run_one(config: dict) -> dict:
    """One (method, library) run in this process: train, then kNN-evaluate the online encoder."""
    torch.set_num_threads(config["threads"])
    device = torch.device(config["device"])
    train, test = load_data(config["images"], config["test_images"], config["seed"], config["data_dir"])
    state = torch.load(config["initial_encoder"], weights_only=True)
    recipe = config["recipe"]
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    gc.collect()
    peak_from_here = reset_peak_rss()
    rss_before = peak_rss_mib()
    cpu_start, started = cpu_seconds(), time.perf_counter()
    if config["library"] == "lightly":
        encoder = build_encoder(config["backbone"], train.mean, train.std)
        encoder.load_state_dict(state)
        outcome = train_lightly(config["method"], recipe, encoder, train, config, device)
        encoder = outcome["model"].backbone
    else:
        outcome = train_ssl_minimal(config["method"], state, train, config, device)
        encoder = outcome["model"].encoder
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    seconds, cpu = time.perf_counter() - started, cpu_seconds() - cpu_start
    peak_main, peak_worker = peak_rss_mib(), peak_rss_mib(resource.RUSAGE_CHILDREN)
    steps_per_epoch = len(train) // config["batch_size"]
    last_epoch = outcome["losses"][-steps_per_epoch:]
    return {"method": config["method"], "library": config["library"], "backbone": config["backbone"],
            "device": config["device"], "images": len(train), "test_images": len(test), "epochs": config["epochs"],
            "batch_size": config["batch_size"], "steps": outcome["steps"],
            "images_seen": outcome["steps"] * config["batch_size"], "threads": config["threads"],
            "workers": config["workers"] if config["library"] == "lightly" else 0,
            "train_seconds": seconds, "images_per_second": outcome["steps"] * config["batch_size"] / seconds,
            "cpu_seconds": cpu, "peak_rss_mib": peak_main, "rss_before_training_mib": rss_before,
            "peak_rss_covers": "training only" if peak_from_here else "the whole process (data loading included)",
            "peak_worker_rss_mib": peak_worker if config["library"] == "lightly" else 0.0,
            "peak_gpu_mib": torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None,
            "precision": outcome["precision"], "final_loss": float(np.mean(last_epoch)), "knn_top1": knn_top1(encoder, train, test),
            "recipe": recipe, "seed": config["seed"]}


# ----------------------------------------------------------------------------------------------
def parse_args(argv=None) -> argparse.Namespace:
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    parser.add_argument("--libraries", nargs="+", default=list(LIBRARIES), choices=LIBRARIES)
    parser.add_argument("--device", default="cpu", help="cpu or cuda (cuda: ResNet-18 and the gpu budget's defaults)")
    parser.add_argument("--backbone", default=None, help="default: small_convnet on cpu, resnet18 on cuda")
    parser.add_argument("--images", type=int, default=None, help="training subset (default: 10,000 cpu, 50,000 cuda)")
    parser.add_argument("--test-images", type=int, default=None, help="kNN queries (default: all 10,000 test images)")
    parser.add_argument("--epochs", type=int, default=None, help="default: 5 cpu, 200 cuda")
    parser.add_argument("--batch-size", type=int, default=None, help="default: 256 cpu, 512 cuda")
    parser.add_argument("--warmup-epochs", type=float, default=None, help="default: the budget's (1 cpu, 10 cuda)")
    parser.add_argument("--threads", type=int, default=cores, help=f"torch threads (default: {cores}, the cores)")
    parser.add_argument("--workers", type=int, default=cores, help=f"lightly's DataLoader workers (default: {cores})")
    parser.add_argument("--lightly-blur-sigmas", type=float, nargs=2, default=BLUR_SIGMAS, metavar=("LOW", "HIGH"))
    parser.add_argument("--precision", default="auto", choices=PRECISIONS,
                        help="both sides (default: auto, as fit: bf16 autocast where native and faster)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--data-dir", default=None, help="default: $SSL_DATA_DIR")
    parser.add_argument("--output", default="runs/compare_lightly")
    parser.add_argument("--child", help=argparse.SUPPRESS)       # internal: run one configuration (JSON file)
    args = parser.parse_args(argv)
    gpu = args.device.startswith("cuda")
    budget = get_budget("gpu" if gpu else "cpu")
    args.backbone = args.backbone or budget.backbone
    args.images = args.images or (50_000 if gpu else 10_000)
    args.epochs = args.epochs or (budget.epochs if gpu else 5)
    args.batch_size = args.batch_size or budget.batch_size
    args.warmup_epochs = budget.warmup_epochs if args.warmup_epochs is None else args.warmup_epochs
    return args


def main(argv=None) -> None:
    args = parse_args(argv)
    if args.child:
        config = json.loads(Path(args.child).read_text())
        Path(config["result"]).write_text(json.dumps(run_one(config)))
        return
    if "lightly" in args.libraries:
        try:
            import lightly
        except ImportError:
            sys.exit(INSTALL_HELP)
        lightly_version = lightly.__version__
    else:
        lightly_version = None
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        sys.exit(f"--device {args.device} was asked for, but torch {torch.__version__} sees no CUDA device")
    torch.set_num_threads(args.threads)
    train, test = load_data(args.images, args.test_images, args.seed, args.data_dir)
    if args.batch_size > len(train):
        sys.exit(f"--batch-size {args.batch_size} is larger than the training subset ({len(train)} images)")
    encoder = initial_encoder(args.backbone, train, args.seed)
    initial_state = {name: tensor.clone() for name, tensor in encoder.state_dict().items()}
    random_init = knn_top1(encoder.to(args.device), train, test)
    header = (f"# compare_lightly {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC: "
              f"{platform.processor() or platform.machine()}, {args.device}, torch {torch.__version__}, lightly "
              f"{lightly_version}, {args.backbone}, {len(train):,} CIFAR-10 images x {args.epochs} epochs, batch "
              f"{args.batch_size} ({len(train) // args.batch_size * args.epochs} steps), precision {args.precision}, "
              f"{args.threads} threads, {'/'.join(args.libraries)} in that order"
              + (f", {args.workers} lightly DataLoader workers" if lightly_version else "")
              + f"; kNN k=200 on {len(test):,} test images, bank = the training subset")
    print(header + f"\nrandom-init kNN of the shared initial encoder: {random_init:.1%}", flush=True)
    output = Path(args.output)
    output.mkdir(parents=True, exist_ok=True)
    results = []
    with tempfile.TemporaryDirectory() as folder:
        initial_path = Path(folder) / "initial_encoder.pt"
        torch.save(initial_state, initial_path)
        for method in args.methods:
            recipe = method_recipe(ssl_minimal.build(method, dataset=train, backbone=args.backbone))
            for library in args.libraries:
                config = {**{k: v for k, v in vars(args).items() if k not in ("child", "methods", "libraries")},
                          "method": method, "library": library, "recipe": recipe, "initial_encoder": str(initial_path),
                          "result": str(Path(folder) / f"{method}-{library}.json")}
                config_path = Path(folder) / "config.json"
                config_path.write_text(json.dumps(config))
                environment = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "MKL_NUM_THREADS": str(args.threads)}
                subprocess.run([sys.executable, __file__, "--child", str(config_path)], check=True, env=environment)
                result = json.loads(Path(config["result"]).read_text())
                result["knn_random_init"] = random_init
                result["lightly_version"] = lightly_version
                results.append(result)
                r = result
                print(f"{method:10s} {library:11s} {r['images_per_second']:7,.0f} img/s  {r['train_seconds']:7.1f} s  "
                      f"peak RSS {r['peak_rss_mib']:6,.0f} MiB  kNN {r['knn_top1']:.1%} (random init {random_init:.1%})  "
                      f"loss {r['final_loss']:.3f}", flush=True)
                ratios = comparison(results)
                (output / "compare_lightly.json").write_text(json.dumps(
                    {"header": header, "random_init_knn": random_init, "results": results, "ratios": ratios}, indent=1))
                (output / "compare_lightly.md").write_text(markdown(results, ratios, header))
    print("\n" + markdown(results, comparison(results), header))
    print(f"written: {output / 'compare_lightly.json'}, {output / 'compare_lightly.md'}")


if __name__ == "__main__":
    main()
