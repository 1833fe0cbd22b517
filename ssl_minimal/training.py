"""The one training loop every method uses: `fit(method, dataset, budget)`.

    for each step:  indices -> uint8 images on the device -> method.training_step -> loss
                    -> backward -> optimiser step (learning rate from a per-step cosine schedule)
                    -> method.after_optimizer_step -> every few epochs: kNN monitor, checkpoint

The dataset lives on the training device as one uint8 tensor, and augmentation happens inside
`training_step` on the batch, so there is no DataLoader and no per-image PIL work in the loop.

Budgets name how much compute an experiment gets: `smoke` (seconds, for CI), `cpu` (minutes on
2 CPU cores) and `gpu` (paper-like on one GPU). Pick one by name, by the `SSL_BUDGET` environment
variable, or `auto` (gpu when CUDA is available, else cpu).
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import importlib.util
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Mapping

import numpy as np
import torch
from torch import nn

if importlib.util.find_spec("ipywidgets") is not None:
    from tqdm.auto import tqdm          # a widget bar in Jupyter, a text bar elsewhere
else:
    # Without ipywidgets, tqdm.auto inside a notebook warns ("IProgress not found", printing the path of the
    # installed tqdm) and falls back to the text bar anyway: take the text bar directly.
    from tqdm.std import tqdm

from . import distributed, evaluate
from .checks import SSLMinimalError, unknown_name

CHECKPOINT_FORMAT = 1
# On a GPU, fit reads the losses (a CPU-GPU wait) every this many steps, so the CPU can queue the
# next steps' work meanwhile; a non-finite loss is then reported up to this many steps late.
READ_LOSS_EVERY_STEPS = 20


# ----------------------------------------------------------------------------------------------
# Budgets
@dataclass(frozen=True)
class Budget:
    """How much compute one run gets. Every field can be overridden: get_budget("cpu", epochs=5)."""
    name: str
    epochs: int
    batch_size: int
    backbone: str = "small_convnet"     # for the ConvNet methods
    vit_backbone: str = "small_vit"     # for the methods built around a Vision Transformer (MoCo v3, DINO, MAE)
    train_samples: int | None = None    # class-balanced subset of the training split (None: all)
    warmup_epochs: float = 0.0          # linear learning-rate warm-up, then cosine decay
    knn_every_epochs: int = 1           # kNN monitor period (0: only before and after)
    knn_train_samples: int = 10_000     # kNN monitor: labelled training images used as the bank
    knn_test_samples: int = 2_000       # kNN monitor: test images classified
    checkpoint_every_steps: int = 500
    learning_rate: float | None = None  # None: the method's paper value scaled by batch_size / 256
    compile: bool = False               # torch.compile the encoder (GPU)
    sync_batch_norm: bool = False       # several processes: BatchNorm statistics over the global batch (GPUs)
    read_loss_every_steps: int | None = None   # None: every step on CPU, every READ_LOSS_EVERY_STEPS on a GPU
    precision: str = "auto"             # "auto", "fp32" or "bf16": see resolve_precision

    def backbone_for(self, method_class) -> str:
        """The backbone this budget gives a method: `vit_backbone` if the method's `architecture` is "vit"."""
        return self.vit_backbone if getattr(method_class, "architecture", "convnet") == "vit" else self.backbone


BUDGETS = {
    # CI: seconds on 2 CPU cores. 4 epochs (not 2): InvaSpread then beats the random-init kNN on
    # CIFAR-10 clearly (31.3% -> 37.7%, tests/test_learning.py); 2 epochs were within noise. See BENCHMARKS.md.
    "smoke": Budget("smoke", epochs=4, batch_size=128, train_samples=2_000, knn_every_epochs=1,
                    knn_train_samples=2_000, knn_test_samples=1_000, checkpoint_every_steps=50),
    # Minutes on 2 CPU cores with the small ConvNet (width 32): 780 steps, 200,000 images seen, about
    # 4 min for a one-view method (InstDisc) and 7-12 min for two-view / multi-crop ones (BENCHMARKS.md).
    "cpu": Budget("cpu", epochs=10, batch_size=256, train_samples=20_000, warmup_epochs=1,
                  knn_every_epochs=2, knn_train_samples=10_000, knn_test_samples=2_000,
                  checkpoint_every_steps=200),
    # Paper-like on one GPU: ResNet-18, the whole training set, 200 epochs (InstDisc/lightly's benchmark).
    "gpu": Budget("gpu", epochs=200, batch_size=512, backbone="resnet18", vit_backbone="vit_tiny", warmup_epochs=10,
                  knn_every_epochs=10, knn_train_samples=50_000, knn_test_samples=10_000,
                  checkpoint_every_steps=1_000),
}


def get_budget(name: str | Budget | None = None, **overrides) -> Budget:
    """A budget by name ("smoke", "cpu", "gpu", "auto"; None reads SSL_BUDGET, default "auto")."""
    if isinstance(name, Budget):
        budget = name
    else:
        name = name or os.environ.get("SSL_BUDGET", "auto")
        if name == "auto":
            name = "gpu" if torch.cuda.is_available() else "cpu"
        if name not in BUDGETS:
            raise unknown_name("budget", name, list(BUDGETS) + ["auto"])
        budget = BUDGETS[name]
    fields = {f.name for f in dataclasses.fields(Budget)}
    unknown = sorted(set(overrides) - fields)
    if unknown:
        raise SSLMinimalError(f"unknown budget override(s) {unknown}; valid fields are: {', '.join(sorted(fields))}")
    return dataclasses.replace(budget, **{k: v for k, v in overrides.items() if v is not None})


# ----------------------------------------------------------------------------------------------
# Precision: the networks in bf16 where that is faster, everything else in float32
PRECISIONS = ("auto", "fp32", "bf16")
# The backbones whose forward + backward is faster under bf16 autocast + channels_last on a CPU with
# native bf16 (avx512_bf16 / AMX): `benchmarks/throughput_floor.py --backbones-only`, BENCHMARKS.md
# section 8 (1 thread: small ConvNet 1.64x, ResNet-18 1.97x, DeiT-Tiny's 64 tokens 1.27x). small_vit is
# not: its 16 tokens of width 128 are too small matrices, and bf16 made it 0.76x as fast.
CPU_BF16_BACKBONES = ("small_convnet", "resnet18", "vit_tiny")
# The memory format fit puts the model in. A module constant only so that benchmarks/throughput_floor.py
# can measure fp32 without channels_last (fit's fp32 before 2026-12-01, the baseline).
MEMORY_FORMAT = torch.channels_last


def native_bf16(device: torch.device) -> bool:
    """Whether `device` computes bf16 in hardware: a CUDA GPU that supports it, or a CPU whose oneDNN
    reports native bf16 (AVX512-BF16 or AMX). Elsewhere torch emulates bf16, which is slower than fp32."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    if device.type == "cpu":
        return torch.backends.mkldnn.is_available() and bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    return False


def resolve_precision(precision: str, device: torch.device, backbones) -> tuple[str, str]:
    """("fp32" or "bf16", why) for a run of networks with these backbone names on `device`.

    "auto" picks bf16 where the device computes it natively and, on a CPU, only for the backbones
    measured faster with it (CPU_BF16_BACKBONES); everything else trains in fp32, unchanged. The
    environment variable SSL_PRECISION=fp32|bf16 overrides "auto" (not an explicit precision).
    bf16 means: the training step runs under torch.autocast(bfloat16), so convolutions and matrix
    products of the networks run in bf16, while augmentations, every loss (losses.full_precision),
    Sinkhorn, memory banks, queues, momentum updates and kNN evaluation stay float32.
    """
    if precision not in PRECISIONS:
        raise unknown_name("precision", precision, PRECISIONS)
    device, backbones = torch.device(device), sorted(set(backbones))
    if precision != "auto":
        return precision, "as asked"
    forced = os.environ.get("SSL_PRECISION", "auto")        # e.g. SSL_PRECISION=fp32 pytest: the tests in fp32
    if forced != "auto":
        if forced not in PRECISIONS:
            raise SSLMinimalError(f"SSL_PRECISION={forced!r} is not one of {', '.join(PRECISIONS)}; unset it or "
                                  f"set it to one of them")
        return forced, "SSL_PRECISION"
    if not native_bf16(device):
        return "fp32", f"{device.type} has no native bf16"
    if device.type == "cpu" and not (backbones and set(backbones) <= set(CPU_BF16_BACKBONES)):
        return "fp32", f"{', '.join(backbones) or 'this network'} is not faster in bf16 on a CPU"
    return "bf16", f"{'this GPU' if device.type == 'cuda' else 'this CPU'} has native bf16"


def method_backbones(method: nn.Module) -> list[str]:
    """The backbone names of every Encoder in `method` (CMC has two, MoCo a query and a key encoder)."""
    from .backbones import Encoder
    return sorted({module.name for module in method.modules() if isinstance(module, Encoder)})


def precision_context(precision: str, device: torch.device):
    """torch.autocast(bfloat16) on `device` for "bf16", else a null context ("fp32")."""
    if precision == "bf16":
        return torch.autocast(torch.device(device).type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


# ----------------------------------------------------------------------------------------------
# Schedules and optimisers
def cosine_schedule(base_value: float, final_value: float, total_steps: int, warmup_steps: int = 0,
                    warmup_start_value: float = 0.0) -> np.ndarray:
    """Per-step values: linear warm-up from `warmup_start_value` to `base_value`, then a cosine
    decay to `final_value` (SGDR, Loshchilov & Hutter 2016, arXiv 1608.03983). Array [total_steps]."""
    warmup_steps = min(warmup_steps, total_steps)
    warmup = np.linspace(warmup_start_value, base_value, warmup_steps, endpoint=False)
    steps = np.arange(total_steps - warmup_steps)
    cosine = final_value + 0.5 * (base_value - final_value) * (1 + np.cos(np.pi * steps / max(len(steps), 1)))
    return np.concatenate([warmup, cosine])


class LARS(torch.optim.Optimizer):
    """SGD with momentum and layer-wise adaptive rate scaling (You et al. 2017, arXiv 1708.03888,
    Algorithm 2), as SimCLR, BYOL, SwAV and Barlow Twins use for large batches:

        u = g + beta w;   u <- eta ||w|| / ||u|| * u   (trust ratio; 1 when ||w|| or ||u|| is 0)
        v <- m v + u;     w <- w - lr v

    Biases and normalisation weights (tensors with one dimension) are not adapted, as in SimCLR,
    BYOL and Barlow Twins (whose code filters them by `p.ndim == 1`): they take plain momentum-SGD
    steps, and the weight decay of their group (methods give them 0). Which tensors are adapted
    depends on their shape, not on their weight decay, so weight_decay=0 still gives LARS; a
    parameter group with "lars_adapt_all": True adapts its 1-d tensors too (BYOL without batch
    statistics needs it).
    (You et al. write ||g|| + beta ||w|| in the denominator; the papers' code uses ||g + beta w||.)

    Note the scale of a step: an adapted layer moves by lr * eta of its norm (times ~1 / (1 - m)
    through momentum), whatever the gradient. The papers' lr ~0.2-0.6 per 256 images, eta 0.001 and
    ~10^5 steps add up; a few hundred steps at the same lr barely move the weights.
    """

    def __init__(self, params, lr: float, weight_decay: float = 0.0, momentum: float = 0.9,
                 trust_coefficient: float = 0.001):
        super().__init__(params, dict(lr=lr, weight_decay=weight_decay, momentum=momentum,
                                      trust_coefficient=trust_coefficient))

    @torch.no_grad()
    def step(self, closure=None):
        # The rule for all tensors of a group at once (torch._foreach_*: a few kernels per group
        # instead of a few per tensor; on a GPU, launching ~10 kernels for each of ResNet-18's 62
        # tensors costs milliseconds a step). `reference_step` below is the same rule tensor by tensor.
        for group in self.param_groups:
            params = [p for p in group["params"] if p.grad is not None]
            if not params:
                continue
            updates = [p.grad for p in params]
            if group["weight_decay"] > 0:
                updates = torch._foreach_add(updates, params, alpha=group["weight_decay"])   # u = g + beta w
            adapt_all = group.get("lars_adapt_all", False)
            adapted = [i for i, p in enumerate(params) if p.dim() > 1 or adapt_all]
            if adapted:
                param_norms = torch.stack(torch._foreach_norm([params[i] for i in adapted]))     # [L] ||w||
                update_norms = torch.stack(torch._foreach_norm([updates[i] for i in adapted]))   # [L] ||u||
                trust = torch.where((param_norms > 0) & (update_norms > 0),
                                    group["trust_coefficient"] * param_norms / update_norms, 1.0)  # [L]
                scaled = torch._foreach_mul([updates[i] for i in adapted], list(trust.unbind()))  # eta ||w|| / ||u|| u
                updates = list(updates)
                for i, update in zip(adapted, scaled):
                    updates[i] = update
            states = [self.state[p] for p in params]
            # A tensor's first step starts its buffer (v = u); a tensor may start late (SwAV's
            # prototypes get their first gradient after the first epoch).
            old = [i for i, state in enumerate(states) if "momentum_buffer" in state]
            for state, update in zip(states, updates):
                if "momentum_buffer" not in state:
                    state["momentum_buffer"] = torch.clone(update).detach()
            if old:
                buffers = [states[i]["momentum_buffer"] for i in old]
                torch._foreach_mul_(buffers, group["momentum"])                                  # v <- m v + u
                torch._foreach_add_(buffers, [updates[i] for i in old])
            torch._foreach_add_(params, [state["momentum_buffer"] for state in states], alpha=-group["lr"])  # w -= lr v

    @torch.no_grad()
    def reference_step(self):
        """The same rule written tensor by tensor, as You et al.'s Algorithm 2 reads (tests compare)."""
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                update = p.grad
                if group["weight_decay"] > 0:
                    update = update.add(p, alpha=group["weight_decay"])
                # weights of a layer: layer-wise adaptation; a group may ask for it on every tensor
                if p.dim() > 1 or group.get("lars_adapt_all", False):
                    param_norm, update_norm = torch.norm(p), torch.norm(update)
                    trust = torch.where((param_norm > 0) & (update_norm > 0),
                                        group["trust_coefficient"] * param_norm / update_norm, 1.0)
                    update = update * trust
                state = self.state[p]
                if "momentum_buffer" not in state:
                    state["momentum_buffer"] = torch.clone(update).detach()
                else:
                    state["momentum_buffer"].mul_(group["momentum"]).add_(update)
                p.add_(state["momentum_buffer"], alpha=-group["lr"])


# Where fit uses torch's fused SGD and AdamW kernels (one kernel for all parameters instead of a few
# per tensor: fewer kernel launches on a GPU). On a CPU they were not consistently faster in
# benchmarks/optimizer_step.py (BENCHMARKS.md), so CPU runs keep torch's default (and their numbers).
FUSED_DEVICES = ("cuda",)


def make_optimizer(name: str, parameter_groups, learning_rate: float, weight_decay: float,
                   momentum: float = 0.9, betas: tuple[float, float] = (0.9, 0.999),
                   fused: bool | None = None) -> torch.optim.Optimizer:
    """"sgd" (momentum), "lars" or "adamw" (with Adam's `betas`; the default is torch's).

    SGD and AdamW use torch's fused kernels when every parameter is on a device of FUSED_DEVICES (a
    GPU; fused=None), or as asked: the same rule, rounding aside. LARS updates each group's tensors
    together with torch._foreach_* operations (bit-identical to the per-tensor rule).
    """
    parameter_groups = [dict(group, params=list(group["params"])) if isinstance(group, dict) else group
                        for group in parameter_groups]
    if fused is None and all(isinstance(group, dict) for group in parameter_groups):
        devices = {p.device.type for group in parameter_groups for p in group["params"]}
        fused = bool(devices) and devices <= set(FUSED_DEVICES)
    elif fused is None:                                                  # a plain list of tensors
        fused = all(p.device.type in FUSED_DEVICES for p in parameter_groups)
    if name == "sgd":
        return torch.optim.SGD(parameter_groups, lr=learning_rate, momentum=momentum, weight_decay=weight_decay,
                               fused=fused or None)
    if name == "lars":
        return LARS(parameter_groups, lr=learning_rate, momentum=momentum, weight_decay=weight_decay)
    if name == "adamw":
        return torch.optim.AdamW(parameter_groups, lr=learning_rate, betas=betas, weight_decay=weight_decay,
                                 fused=fused or None)
    raise unknown_name("optimizer", name, ["sgd", "lars", "adamw"])


def loss_read_interval(budget: Budget, device: torch.device) -> int:
    """Every how many steps `fit` reads the losses: the budget's `read_loss_every_steps`, else 1 on
    a CPU (reading costs nothing there) and READ_LOSS_EVERY_STEPS on other devices."""
    every = budget.read_loss_every_steps
    if every is None:
        return 1 if device.type == "cpu" else READ_LOSS_EVERY_STEPS
    if not isinstance(every, int) or every < 1:
        raise SSLMinimalError(f"read_loss_every_steps must be a positive whole number of steps, got {every!r}")
    return every


# ----------------------------------------------------------------------------------------------
# History and checkpoints
@dataclass
class History:
    """What happened during training, as plain lists (plot with visualize.plot_history)."""
    step: list[int] = field(default_factory=list)
    epoch: list[float] = field(default_factory=list)
    loss: list[float] = field(default_factory=list)
    lr: list[float] = field(default_factory=list)
    images_per_second: list[float] = field(default_factory=list)
    knn_step: list[int] = field(default_factory=list)
    knn_epoch: list[float] = field(default_factory=list)
    knn_accuracy: list[float] = field(default_factory=list)
    baseline_knn_accuracy: float | None = None   # the same encoder at random initialisation
    precision: str = "fp32"                      # what the run used: "fp32" or "bf16" (autocast)
    wall_seconds: float = 0.0                    # the whole loop: training, monitors, checkpoints
    step_seconds: list[float] = field(default_factory=list)   # training time after each step (no monitors)
    budget: dict = field(default_factory=dict)
    monitor_step: list[int] = field(default_factory=list)     # when fit's `monitors` were evaluated
    monitor_epoch: list[float] = field(default_factory=list)
    monitors: dict[str, list[float]] = field(default_factory=dict)   # name -> one value per monitor_step

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def record_monitors(self, step: int, epoch: float, values: dict[str, float]) -> None:
        self.monitor_step.append(step), self.monitor_epoch.append(epoch)
        for name, value in values.items():
            self.monitors.setdefault(name, []).append(value)

    @property
    def final_knn_accuracy(self) -> float | None:
        return self.knn_accuracy[-1] if self.knn_accuracy else None

    def training_seconds_at(self, step: int) -> float | None:
        """Training seconds (monitors and checkpoints excluded) after `step` steps; 0 at step 0,
        None if the history holds no time for that step."""
        if step == 0:
            return 0.0
        return self.step_seconds[step - 1] if 0 < step <= len(self.step_seconds) else None

    def seconds_to_accuracy(self, target: float) -> float | None:
        """Training seconds until the kNN monitor first read >= target, a fraction in [0, 1]; None
        if it never did. Time-to-accuracy, in the units of lightly's benchmark table (which reports
        minutes). The random-init reading (step 0) does not count."""
        for step, accuracy in zip(self.knn_step, self.knn_accuracy):
            if step > 0 and accuracy >= target and self.training_seconds_at(step) is not None:
                return self.training_seconds_at(step)
        return None


def save_checkpoint(path: str | Path, state: dict) -> None:
    """Write atomically: a temporary file in the same folder, then rename over the old one, so a
    crash while writing never leaves a truncated checkpoint behind."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(path.name + ".tmp")
    torch.save(state, temporary)
    os.replace(temporary, path)


def load_checkpoint(path: str | Path) -> dict:
    """Load a checkpoint, turning a missing or damaged file into a clear error (the file is kept)."""
    path = Path(path)
    if not path.is_file():
        found = sorted(p.name for p in path.parent.glob("*.pt")) if path.parent.is_dir() else []
        raise SSLMinimalError(f"cannot resume: checkpoint {path} does not exist"
                              + (f" (checkpoints found in {path.parent}: {', '.join(found)})" if found else ""))
    try:
        state = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as error:  # truncated zip, not a torch file, ...
        raise SSLMinimalError(f"cannot resume: checkpoint {path} is truncated or not a ssl_minimal checkpoint "
                              f"({type(error).__name__}); the file was left in place") from None
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        raise SSLMinimalError(f"cannot resume: {path} is not a ssl_minimal checkpoint (format "
                              f"{state.get('format') if isinstance(state, dict) else type(state).__name__}, "
                              f"expected {CHECKPOINT_FORMAT}); the file was left in place")
    return state


# ----------------------------------------------------------------------------------------------
# The loop
def resolve_device(device: str | torch.device | None) -> torch.device:
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def knn_monitor(encoder: nn.Module, train, test, budget: Budget, seed: int = 0) -> float:
    """kNN top-1 (k=200, tau=0.1) of `encoder` features: bank = labelled training images, queries = test."""
    bank = train.subset(min(budget.knn_train_samples, len(train)), seed=seed)
    queries = test.subset(min(budget.knn_test_samples, len(test)), seed=seed)
    train_features = evaluate.extract_features(encoder, bank.images)
    test_features = evaluate.extract_features(encoder, queries.images)
    k = min(200, len(bank))
    return evaluate.knn_accuracy(train_features, bank.labels, test_features, queries.labels, k=k)


def _captions_for(method, dataset, device: torch.device) -> torch.Tensor | None:
    """dataset.captions on `device` if the method trains on captions (`uses_captions`), else None."""
    if not getattr(method, "uses_captions", False):
        return None
    if getattr(dataset, "captions", None) is None:
        raise SSLMinimalError(f"{method.name} trains on (image, caption) pairs but the dataset has no captions; "
                              f"load it with ssl_minimal.data.load_captioned({dataset.name!r}, ...)")
    return dataset.captions.to(device)


def _all_rng_states(state: torch.Tensor, device: torch.device) -> torch.Tensor:
    """The generator state of every process, [W, n] (one process: [n], as saved before torch.distributed)."""
    if not distributed.is_distributed():
        return state
    return distributed.gather(state.to(device)[None]).cpu()      # NCCL gathers CUDA tensors only


def _own_rng_state(states: torch.Tensor) -> torch.Tensor:
    """This process's row of `_all_rng_states` (rank modulo the number saved, if that changed).
    A copy: torch.set_rng_state crashes (SIGSEGV, torch 2.14) on a row view with a storage offset."""
    return states if states.dim() == 1 else states[distributed.rank() % states.shape[0]].clone()


Monitor = Callable[[nn.Module], "float | Mapping[str, float]"]


def run_monitors(monitors: Mapping[str, Monitor], method: nn.Module) -> dict[str, float]:
    """Evaluate each monitor on `method` (no gradients, the random state left as it was, train mode
    afterwards). A monitor that returns a dict gives one value per key, named "monitor/key"."""
    values = {}
    device = next(method.parameters()).device
    with torch.no_grad(), torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        for name, monitor in monitors.items():
            result = monitor(method)
            items = result.items() if isinstance(result, Mapping) else [(None, result)]
            values.update({name if key is None else f"{name}/{key}": float(value) for key, value in items})
    method.train()
    return values


class GradientNorms:
    """The gradient norm of named groups of parameters at every backward pass, i.e. every step of `fit`,
    e.g. a ViT's patch projection apart from the rest of the network (MoCo v3, Sec. 4.1 and Fig. 4).
    Hooks on the parameters do the recording, so `fit` needs nothing:

        norms = GradientNorms({"patch projection": vit.patch_embedding.parameters(),
                               "rest": [p for n, p in vit.named_parameters() if "patch" not in n]})
        history = fit(method, ...)          # norms.values["rest"][i]: the norm at step i + 1
        norms.remove()

    A group's norm is sqrt(sum of its gradients' squares), taken once each of its parameters has its
    gradient for the pass. Parameters that take no gradient (a frozen patch projection) are left out;
    a group without any records nothing."""

    def __init__(self, groups: Mapping[str, Iterable[nn.Parameter]]):
        self._norms: dict[str, list[torch.Tensor]] = {}
        self._pending: dict[str, list] = {}
        self._handles = []
        for name, parameters in groups.items():
            parameters = [p for p in parameters if p.requires_grad]
            self._norms[name], self._pending[name] = [], [0.0, 0]        # [sum of squares, parameters seen]
            for parameter in parameters:
                hook = functools.partial(self._record, name, len(parameters))
                self._handles.append(parameter.register_post_accumulate_grad_hook(hook))

    def _record(self, name: str, size: int, parameter: torch.Tensor) -> None:
        pending = self._pending[name]
        pending[0] = pending[0] + parameter.grad.detach().float().pow(2).sum()   # stays on the device
        pending[1] += 1
        if pending[1] == size:
            self._norms[name].append(pending[0].sqrt())
            self._pending[name] = [0.0, 0]

    @property
    def values(self) -> dict[str, list[float]]:
        """{group: [norm at the first backward pass, the second, ...]} as floats."""
        return {name: torch.stack(norms).tolist() if norms else [] for name, norms in self._norms.items()}

    def remove(self) -> None:
        """Take the hooks off the parameters (the values stay)."""
        for handle in self._handles:
            handle.remove()
        self._handles.clear()


def fit(method, dataset, budget: str | Budget | None = None, *, eval_dataset=None,
        checkpoint_path: str | Path | None = None, resume: bool | str | Path = False,
        max_steps: int | None = None, seed: int = 0, device: str | torch.device | None = None,
        progress: bool = True, monitors: Mapping[str, Monitor] | None = None,
        **budget_overrides) -> History:
    """Train `method` on `dataset` (an ssl_minimal.data.ImageDataset) and return its History.

    budget: "smoke" | "cpu" | "gpu" | "auto" | a Budget; keyword overrides such as epochs=5,
        batch_size=128, learning_rate=0.1 replace the budget's fields.
    eval_dataset: labelled test set for the kNN monitor (before training, every
        `knn_every_epochs` epochs, and at the end). Without it there is no monitor.
    checkpoint_path: where to save every `checkpoint_every_steps` steps and at the end.
    resume: True (resume from checkpoint_path if it exists... and fail clearly if it does not) or
        a path. The run continues exactly: same data order, same random augmentations.
    max_steps: stop after this many steps in total (the schedule still spans the whole budget),
        e.g. to split a long run over several sessions.
    monitors: {name: function(method) -> float or {key: float}}, evaluated at the kNN monitor's
        moments (before training, every `knn_every_epochs` epochs, at the end; with or without an
        eval_dataset) and stored in history.monitors[name] (or [name/key]) beside history.monitor_step,
        e.g. {"z": lambda m: evaluate.collapse_diagnostics(evaluate.embeddings_of(m, probe_images))}.
    The optimiser gets `method.parameter_groups()`; every step sets each group's lr to the schedule's
    value times the group's optional "lr_scale" (default 1), and, if the method sets `final_weight_decay`,
    the weight decay of the groups without their own to a cosine from `method.weight_decay` to it.
    Precision (budget field `precision`, e.g. fit(..., precision="fp32")): "auto" trains the ConvNets
    under bf16 autocast where the device computes bf16 natively, everything else in fp32 (see
    resolve_precision; history.precision says what was used). Same seed, same losses, in both.
    A non-finite loss stops the run with FloatingPointError naming its step. On a GPU the losses are
    read every READ_LOSS_EVERY_STEPS steps (budget field `read_loss_every_steps`), so the error can
    come that many steps later; the last checkpoint is always from before the bad step.
    Note: the dataset is used as given; `budget.train_samples` is applied by the caller
    (`ssl_minimal.train` or the CLI), because methods with a memory bank size it to the dataset.
    Several processes (torchrun): `budget.batch_size` is the global batch, each process trains on its
    slice of it inside DistributedDataParallel, rank 0 writes checkpoints (see distributed.py).
    BatchNorm then normalises each process's slice with its own statistics, unless
    sync_batch_norm=True turns every BatchNorm into torch.nn.SyncBatchNorm (CUDA/NCCL only).
    """
    budget = get_budget(budget, **budget_overrides)
    device = distributed.setup(resolve_device(device))
    processes, main_process = distributed.world_size(), distributed.is_main_process()
    if dataset.labels is None or len(dataset) == 0:
        raise SSLMinimalError("the training dataset is empty")
    if budget.batch_size > len(dataset):
        raise SSLMinimalError(f"batch size {budget.batch_size} is larger than the dataset ({len(dataset)} images); "
                              f"use a smaller batch_size or a bigger dataset")
    if budget.batch_size % processes:
        raise SSLMinimalError(f"batch size {budget.batch_size} (the global batch) must be divisible by the "
                              f"number of processes ({processes})")
    if budget.sync_batch_norm and distributed.is_distributed():
        if device.type != "cuda":
            raise SSLMinimalError(f"sync_batch_norm needs CUDA devices (torch's SyncBatchNorm runs on GPUs with NCCL, "
                                  f"not with gloo on {device.type}); drop --sync-batch-norm to keep per-process "
                                  f"BatchNorm statistics")
        torch.nn.SyncBatchNorm.convert_sync_batchnorm(method)   # in place: every BatchNorm child -> SyncBatchNorm
    if monitors is not None and not (isinstance(monitors, Mapping) and all(map(callable, monitors.values()))):
        raise SSLMinimalError(f"monitors must be a dict {{name: function(method) -> float or dict}}, got "
                              f"{type(monitors).__name__}")
    torch.manual_seed(seed)
    method.epochs = budget.epochs               # so a method can turn "the first epoch" into a progress fraction
    method.to(device)
    # channels_last: faster convolutions on GPUs and, with oneDNN, on CPUs too (1.4x for the small ConvNet
    # in fp32; with bf16 autocast, 2.2x over contiguous fp32 in all).
    method.to(memory_format=MEMORY_FORMAT)
    precision, _ = resolve_precision(budget.precision, device, method_backbones(method))
    # DistributedDataParallel averages gradients over processes; it calls method.forward = training_step.
    # Buffers (memory bank, queue) are kept in step by the methods themselves (distributed.gather).
    trainer = (torch.nn.parallel.DistributedDataParallel(method, broadcast_buffers=False)
               if distributed.is_distributed() else method)
    torch.manual_seed(seed + distributed.rank())            # each process draws its own augmentations
    images = dataset.images.to(device)
    # (image, caption) pairs for the methods that read text (CLIP): the batch's captions go to training_step too
    captions = _captions_for(method, dataset, device)
    steps_per_epoch = len(dataset) // budget.batch_size   # drop the last incomplete batch
    total_steps = steps_per_epoch * budget.epochs
    learning_rate = budget.learning_rate or method.learning_rate * budget.batch_size / 256
    schedule = cosine_schedule(learning_rate, 0.0, total_steps, int(budget.warmup_epochs * steps_per_epoch))
    optimizer = make_optimizer(method.optimizer, method.parameter_groups(), learning_rate,
                               method.weight_decay, method.momentum, method.adam_betas)
    # The groups that take the method's weight decay (those that set none of their own) may follow a schedule.
    decayed_groups = [i for i, group in enumerate(method.parameter_groups()) if "weight_decay" not in group]
    final_weight_decay = getattr(method, "final_weight_decay", None)
    weight_decays = (None if final_weight_decay is None
                     else cosine_schedule(method.weight_decay, final_weight_decay, total_steps))
    step_function = torch.compile(trainer) if budget.compile else trainer
    history = History(budget=dataclasses.asdict(budget), precision=precision)
    start_step = 0

    if resume:
        resume_path = Path(checkpoint_path if resume is True else resume)
        if resume is True and checkpoint_path is None:
            raise SSLMinimalError("resume=True needs checkpoint_path (or pass the checkpoint path as resume=...)")
        state = load_checkpoint(resume_path)
        if state["method"] != method.name:
            raise SSLMinimalError(f"cannot resume: {resume_path} was written by method {state['method']!r}, "
                                  f"not {method.name!r}; the file was left in place")
        if state["total_steps"] != total_steps:
            raise SSLMinimalError(f"cannot resume: {resume_path} belongs to a run of {state['total_steps']} steps, "
                                  f"this one has {total_steps} (different budget, batch size or dataset); "
                                  f"the file was left in place")
        try:
            method.load_state_dict(state["model"])
        except RuntimeError as error:
            raise SSLMinimalError(f"cannot resume: {resume_path} does not fit this model "
                                  f"(different backbone or options?): {str(error).splitlines()[0]}") from None
        optimizer.load_state_dict(state["optimizer"])
        history = History(**{**state["history"], "precision": precision})
        start_step = state["step"]
        torch.set_rng_state(_own_rng_state(state["cpu_rng"]))
        if device.type == "cuda" and state.get("cuda_rng") is not None:
            torch.cuda.set_rng_state(_own_rng_state(state["cuda_rng"]))
    elif eval_dataset is not None and main_process:
        history.baseline_knn_accuracy = knn_monitor(method.encoder, dataset, eval_dataset, budget, seed)
        history.knn_step.append(0), history.knn_epoch.append(0.0)
        history.knn_accuracy.append(history.baseline_knn_accuracy)
    if monitors and not resume and main_process:
        history.record_monitors(0, 0.0, run_monitors(monitors, method))

    def checkpoint(step: int) -> None:
        if checkpoint_path is None:
            return
        # Every process's random generator ([W, n]; each process draws its own augmentations).
        cpu_rng = _all_rng_states(torch.get_rng_state(), device)
        cuda_rng = _all_rng_states(torch.cuda.get_rng_state(), device) if device.type == "cuda" else None
        if main_process:
            save_checkpoint(checkpoint_path, {
                "format": CHECKPOINT_FORMAT, "method": method.name, "step": step, "total_steps": total_steps,
                "model": method.state_dict(), "optimizer": optimizer.state_dict(), "history": history.to_dict(),
                "cpu_rng": cpu_rng, "cuda_rng": cuda_rng})

    end_step = total_steps if max_steps is None else min(total_steps, max_steps)
    autocast = precision_context(precision, device)
    if start_step == 0:
        method.before_training(images)                     # e.g. InstDisc's memory bank (a resumed run has it)
    bar = tqdm(total=total_steps, initial=start_step, disable=not (progress and main_process), desc=method.name,
               unit="step")
    method.train()
    started = time.perf_counter()
    window_start, window_images = time.perf_counter(), 0
    step = start_step
    training_seconds = history.step_seconds[-1] if history.step_seconds else 0.0   # a resumed run continues
    order_epoch = None
    read_loss_every = loss_read_interval(budget, device)
    unread_losses: list[torch.Tensor] = []
    while step < end_step:
        step_started = time.perf_counter()
        epoch, position = divmod(step, steps_per_epoch)
        if epoch != order_epoch:
            # Same permutation for an epoch whether or not the run was resumed inside it. Moved to the
            # device once per epoch: a copy to the GPU at every step would wait for the GPU each time.
            order = torch.randperm(len(dataset), generator=torch.Generator().manual_seed(seed * 100_003 + epoch))
            order, order_epoch = order.to(device), epoch
        indices = order[position * budget.batch_size:(position + 1) * budget.batch_size]
        indices = distributed.local_slice(indices)          # this process's share of the global batch
        for group in optimizer.param_groups:   # a group may scale the schedule (e.g. a smaller bias lr)
            group["lr"] = float(schedule[step]) * group.get("lr_scale", 1.0)
        if weight_decays is not None:          # e.g. DINO's cosine 0.04 -> 0.4
            for i in decayed_groups:
                optimizer.param_groups[i]["weight_decay"] = float(weight_decays[step])
        with autocast:
            loss = step_function(images[indices], indices, *([] if captions is None else [captions[indices]]))
        # Reading a loss makes the CPU wait for the device; off the CPU the losses of several steps
        # are read at once (and always before an evaluation, a checkpoint or the end of the run).
        unread_losses.append(loss.detach())
        if (len(unread_losses) >= read_loss_every or (step + 1) % steps_per_epoch == 0 or step + 1 == end_step
                or (step + 1) % budget.checkpoint_every_steps == 0):
            values = torch.stack(unread_losses).tolist()                 # one wait for all of them
            unread_losses.clear()
            bad = [i for i, value in enumerate(values) if not math.isfinite(value)]
            if bad:
                bar.close()
                bad_step = step - len(values) + 1 + bad[0]               # values[-1] is this step's loss
                raise FloatingPointError(
                    f"{method.name}: the loss became {values[bad[0]]} at step {bad_step} (epoch "
                    f"{bad_step // steps_per_epoch}, lr {schedule[bad_step]:.3g}). Likely causes: learning rate "
                    f"too high (try a smaller learning_rate or longer warm-up), a temperature too small, or "
                    f"bad input data. The last checkpoint was written before it.")
            history.loss.extend(values)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        method.after_backward(step / total_steps)
        optimizer.step()
        step += 1
        method.after_optimizer_step(step / total_steps)

        window_images += len(indices) * processes
        history.step.append(step), history.epoch.append(step / steps_per_epoch)
        history.lr.append(float(schedule[step - 1]))
        elapsed = time.perf_counter() - window_start
        history.images_per_second.append(window_images / elapsed if elapsed > 0 else 0.0)
        if elapsed > 2.0:
            window_start, window_images = time.perf_counter(), 0
        bar.update(1)
        bar.set_postfix(loss=f"{history.loss[-1]:.3f}" if history.loss else "?", lr=f"{schedule[step - 1]:.3g}",
                        img_s=f"{history.images_per_second[-1]:.0f}")
        # Off the CPU a step's time is only what the CPU spent launching it, until a step that reads
        # the losses (it waits for the device): the sum is right there, i.e. at every epoch's end.
        training_seconds += time.perf_counter() - step_started
        history.step_seconds.append(training_seconds)

        epoch_done, finished = step // steps_per_epoch, step == total_steps
        evaluation_due = main_process and step % steps_per_epoch == 0 and (
            finished or (budget.knn_every_epochs and epoch_done % budget.knn_every_epochs == 0))
        if eval_dataset is not None and evaluation_due:
            accuracy = knn_monitor(method.encoder, dataset, eval_dataset, budget, seed)
            method.train()
            history.knn_step.append(step), history.knn_epoch.append(float(epoch_done))
            history.knn_accuracy.append(accuracy)
            bar.write(f"{method.name} epoch {epoch_done}: kNN top-1 {accuracy:.2%}")
        if monitors and evaluation_due:
            history.record_monitors(step, float(epoch_done), run_monitors(monitors, method))
        history.wall_seconds += time.perf_counter() - started
        started = time.perf_counter()
        if step % budget.checkpoint_every_steps == 0 or step == end_step:
            checkpoint(step)
    bar.close()
    return history
