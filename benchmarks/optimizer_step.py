"""One optimiser step, timed: torch's per-tensor ("for-loop"), multi-tensor and fused SGD/AdamW, and
our LARS (`step`, torch._foreach_* per parameter group, vs `reference_step`, tensor by tensor).

    python benchmarks/optimizer_step.py                                    # CPU, ResNet-18 and the small ConvNet
    python benchmarks/optimizer_step.py --device cuda --backbones resnet18 vit_tiny

Gradients are random (an optimiser step does not care where they came from); the parameters are
the backbone's, in the groups `fit` gives them (biases and norm weights without weight decay).
Prints milliseconds per step (median of --steps steps after one warm-up step) as markdown rows.
"""

from __future__ import annotations

import argparse
import datetime
import platform
import statistics
import time

import torch

from ssl_minimal.backbones import build_encoder
from ssl_minimal.training import LARS


def _synchronise(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def parameter_groups(network: torch.nn.Module) -> list[dict]:
    params = list(network.parameters())
    return [{"params": [p for p in params if p.dim() > 1]},
            {"params": [p for p in params if p.dim() <= 1], "weight_decay": 0.0}]


def optimisers(groups: list[dict]) -> dict[str, tuple[torch.optim.Optimizer, str]]:
    """name -> (optimiser, name of its step method)."""
    return {
        "SGD (for-loop: fit's on CPU)": (torch.optim.SGD(groups, lr=0.1, momentum=0.9, weight_decay=5e-4, foreach=False), "step"),
        "SGD (foreach)": (torch.optim.SGD(groups, lr=0.1, momentum=0.9, weight_decay=5e-4, foreach=True), "step"),
        "SGD (fused: fit's on a GPU)": (torch.optim.SGD(groups, lr=0.1, momentum=0.9, weight_decay=5e-4, fused=True), "step"),
        "AdamW (for-loop: fit's on CPU)": (torch.optim.AdamW(groups, lr=1e-3, weight_decay=0.05, foreach=False), "step"),
        "AdamW (foreach)": (torch.optim.AdamW(groups, lr=1e-3, weight_decay=0.05, foreach=True), "step"),
        "AdamW (fused: fit's on a GPU)": (torch.optim.AdamW(groups, lr=1e-3, weight_decay=0.05, fused=True), "step"),
        "LARS (per tensor)": (LARS(groups, lr=0.1, weight_decay=1e-6), "reference_step"),
        "LARS (_foreach, fit's)": (LARS(groups, lr=0.1, weight_decay=1e-6), "step"),
    }


def time_steps(optimiser: torch.optim.Optimizer, step_name: str, steps: int, device: torch.device) -> float:
    step = getattr(optimiser, step_name)
    step()                                                   # creates the state (momentum, moments)
    times = []
    for _ in range(steps):
        _synchronise(device)
        started = time.perf_counter()
        step()
        _synchronise(device)
        times.append(time.perf_counter() - started)
    return statistics.median(times) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbones", nargs="+", default=["small_convnet", "resnet18"])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--steps", type=int, default=10)
    args = parser.parse_args()
    device = torch.device(args.device)
    print(f"# {datetime.datetime.now():%Y-%m-%d %H:%M}, {platform.processor() or platform.machine()}, "
          f"torch {torch.__version__}, {torch.get_num_threads()} thread(s), device {device}")
    print("| backbone | parameters | optimiser | ms per step |\n|---|---|---|---|")
    for name in args.backbones:
        torch.manual_seed(0)
        network = build_encoder(name).to(device)
        for p in network.parameters():
            p.grad = torch.randn_like(p)
        count = sum(p.numel() for p in network.parameters())
        for label, (optimiser, step_name) in optimisers(parameter_groups(network)).items():
            print(f"| {name} | {count / 1e6:.2f} M | {label} | {time_steps(optimiser, step_name, args.steps, device):.1f} |",
                  flush=True)


if __name__ == "__main__":
    main()
