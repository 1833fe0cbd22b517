"""Training speed as a fraction of the floor: what augmentation, heads, loss and optimiser cost on top
of the backbone's own forward and backward passes.

    python benchmarks/throughput_floor.py simclr_v1 moco_v2 byol                       # CPU, small ConvNet
    python benchmarks/throughput_floor.py simclr_v1 byol --device cuda --backbone resnet18 --batch-size 512
    python benchmarks/throughput_floor.py simclr_v1 --device cuda --backbone resnet18 --compile
    python benchmarks/throughput_floor.py simclr_v1 moco_v2 --precision fp32 bf16      # both, interleaved

For each method, three speeds in images per second (an image is one dataset image, whatever number
of views a method makes of it):
* bare floor: one forward + backward of the backbone (Normalize + backbone, `model.encoder`) on a
  ready batch [B, 3, 32, 32] of float pixels; no augmentation, head, loss or optimiser. The same for
  every method with this backbone and batch.
* method floor: the backbone passes one training step of *this* method makes, found by hooks on its
  encoders during training (e.g. SimCLR: 2 x B with gradient; MoCo v2: B with gradient and B without,
  through the momentum encoder; BYOL: 2 x B with and 2 x B without), on ready float batches, no
  augmentation, heads, loss or optimiser: the fastest this method's step could be.
* training: `fit` on uint8 CIFAR-10 images (random pixels without the data), i.e. everything:
  batched augmentation on the device, encoders, heads, loss, backward, optimiser, momentum updates.
  Measured from `History.step_seconds` after --warmup-steps steps.
training / method floor is the share of a step that is the backbone's unavoidable work (issue 5's
target on one GPU: >= 80% for the ResNet-18 methods); training / bare floor is what a student sees.
Precision and memory format as `fit` uses them: channels_last always; --precision auto (fit's
default: bf16 autocast for the ConvNets where the device has native bf16), fp32 or bf16. Several
precisions are measured method by method, one after the other, so a busy machine affects them alike.
With --compile the floor passes and fit's training step are compiled (torch.compile).
Prints markdown rows for BENCHMARKS.md and writes OUTPUT/throughput_floor.json.

--clock cpu times with the process's CPU time instead of the wall clock (fit's step times too):
on a machine that other jobs share, images per CPU-second of a 1-thread run
(OMP_NUM_THREADS=1) measure the work of a step much more steadily than the wall clock, which
counts the time the other jobs had the cores. It is not a 2-core speed: say so beside such numbers.
"""

from __future__ import annotations

import argparse
import copy
import datetime
import json
import platform
import time
import types
from pathlib import Path

import torch

import ssl_minimal
from ssl_minimal.backbones import Encoder
from ssl_minimal.training import PRECISIONS, fit, get_budget, precision_context, resolve_device, resolve_precision

IMAGE_SIZE = 32
CONTIGUOUS = "fp32-contiguous"     # fp32 with the model and batches in the default (not channels_last) memory format
CLOCKS = {"wall": time.perf_counter, "cpu": time.process_time}
clock = time.perf_counter          # set by --clock


def precision_and_format(asked: str) -> tuple[str, torch.memory_format]:
    """("fp32", contiguous) for fp32-contiguous; (asked, channels_last), as fit does, otherwise."""
    if asked == CONTIGUOUS:
        return "fp32", torch.contiguous_format
    return asked, torch.channels_last


def use_clock(name: str) -> None:
    """Time everything (this script and fit's step_seconds) with CLOCKS[name]."""
    global clock
    clock = CLOCKS[name]
    ssl_minimal.training.time = types.SimpleNamespace(perf_counter=clock) if name == "cpu" else time


def training_images(count: int, data_dir: str | None) -> "ssl_minimal.data.ImageDataset":
    """CIFAR-10 training images when available, else the embedded dataset (speed does not depend on pixels)."""
    name = "cifar10" if ssl_minimal.data.is_available("cifar10", data_dir) else "shapes"
    train = ssl_minimal.data.load(name, "train", data_dir=data_dir)
    return train.subset(min(count, len(train)), seed=0)


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def record_first_step_passes(model: torch.nn.Module) -> tuple[list, list]:
    """Hooks on every Encoder of the model that record, during the first training step only (not
    e.g. InstDisc's filling of its memory bank before it), each call as (encoder, input shape,
    with gradient). Returns the list that fills in and the hook handles to remove."""
    passes, handles, steps_started = [], [], []

    def step_begins(method, args):
        steps_started.append(True)

    def encoder_called(encoder, inputs, output):
        if len(steps_started) == 1:
            passes.append((encoder, tuple(inputs[0].shape), torch.is_grad_enabled()))

    handles.append(model.register_forward_pre_hook(step_begins))       # fit calls method(...) once per step
    handles += [module.register_forward_hook(encoder_called) for module in model.modules() if isinstance(module, Encoder)]
    return passes, handles


def describe_passes(passes: list) -> str:
    """E.g. "32 img 32px grad + 4 x 4 img 32px no-grad" (repeated calls grouped)."""
    groups = []
    for _, shape, with_gradient in passes:
        label = f"{shape[0]} img {shape[-1]}px {'grad' if with_gradient else 'no-grad'}"
        if groups and groups[-1][0] == label:
            groups[-1][1] += 1
        else:
            groups.append([label, 1])
    return " + ".join(f"{count} x {label}" if count > 1 else label for label, count in groups)


def time_passes(passes: list, device: torch.device, steps: int, warmup_steps: int, compile: bool,
                precision: str = "fp32", memory_format: torch.memory_format = torch.channels_last) -> float:
    """Seconds per step for the given backbone passes on ready float batches (forward, then one backward),
    in `precision` ("fp32" or "bf16", resolved), the batches in `memory_format`."""
    autocast = precision_context(precision, device)
    compiled = {}
    for encoder, _, _ in passes:
        if id(encoder) not in compiled:
            compiled[id(encoder)] = torch.compile(encoder) if compile else encoder
    inputs = [torch.rand(shape, device=device).contiguous(memory_format=memory_format) for _, shape, _ in passes]

    def one_step() -> None:
        with autocast:
            total = 0
            for (encoder, _, with_gradient), images in zip(passes, inputs):
                with torch.set_grad_enabled(with_gradient):
                    features = compiled[id(encoder)](images)
                if with_gradient:
                    total = total + features.float().sum()
        if isinstance(total, torch.Tensor):
            total.backward()
        for encoder, _, _ in passes:
            encoder.zero_grad(set_to_none=True)

    for _ in range(warmup_steps):
        one_step()
    synchronize(device)
    started = clock()
    for _ in range(steps):
        one_step()
    synchronize(device)
    return (clock() - started) / steps


def measure(name: str, train, backbone: str, batch_size: int, steps: int, warmup_steps: int,
            device: torch.device, compile: bool, seed: int = 0, precision: str = "auto") -> dict:
    """One method's three speeds. precision "fp32-contiguous" is fp32 without channels_last (model and
    floor batches contiguous): fit's fp32 before 2026-12-01, the baseline of issue 14's 2.2x."""
    contiguous = precision == CONTIGUOUS
    precision, memory_format = precision_and_format(precision)
    ssl_minimal.training.MEMORY_FORMAT = memory_format
    torch.manual_seed(seed)
    model = ssl_minimal.build(name, dataset=train, backbone=backbone)
    total_steps = warmup_steps + steps
    steps_per_epoch = len(train) // batch_size
    budget = get_budget("cpu", epochs=-(-total_steps // steps_per_epoch), batch_size=batch_size, backbone=backbone,
                        warmup_epochs=0, knn_every_epochs=0, checkpoint_every_steps=10**9, compile=compile,
                        precision=precision)
    step_passes, handles = record_first_step_passes(model)
    try:
        history = fit(model, train, budget, seed=seed, device=device, progress=False, max_steps=total_steps)
    finally:
        ssl_minimal.training.MEMORY_FORMAT = torch.channels_last
    for handle in handles:
        handle.remove()
    if not step_passes:
        raise SystemExit(f"{name}: no encoder call was seen in the first training step (a compiled step may hide "
                         f"them); run without --compile to measure the floor")
    seconds, resolved = history.step_seconds, history.precision
    training = steps * batch_size / (seconds[total_steps - 1] - seconds[warmup_steps - 1])
    encoder = model.encoder
    if not any(parameter.requires_grad for parameter in encoder.parameters()):   # DINO's encoder is the teacher
        encoder = copy.deepcopy(encoder).requires_grad_(True)
    bare = batch_size / time_passes([(encoder, (batch_size, 3, IMAGE_SIZE, IMAGE_SIZE), True)], device, steps,
                                    warmup_steps, compile, resolved, memory_format)
    method_floor = batch_size / time_passes(step_passes, device, steps, warmup_steps, compile, resolved, memory_format)
    described = describe_passes(step_passes)
    return {"method": name, "backbone": backbone, "batch_size": batch_size, "device": str(device),
            "precision": ("bf16 autocast" if resolved == "bf16" else "float32") + (", contiguous" if contiguous else ""),
            "asked": CONTIGUOUS if contiguous else precision, "compile": compile,
            "threads": torch.get_num_threads(), "steps": steps, "warmup_steps": warmup_steps,
            "passes_per_step": described, "bare_floor_images_per_second": bare,
            "method_floor_images_per_second": method_floor, "training_images_per_second": training,
            "fraction_of_method_floor": training / method_floor, "fraction_of_bare_floor": training / bare}


HEADER = ("| method | backbone | device, precision | batch | backbone passes per step | bare fwd+bwd img/s | "
          "method floor img/s | training img/s | of method floor | of bare floor |\n|---|---|---|---|---|---|---|---|---|---|")


def markdown_row(r: dict) -> str:
    setting = f"{r['device']}, {r['precision']}{', compiled' if r['compile'] else ''}"
    return (f"| {r['method']} | {r['backbone']} | {setting} | {r['batch_size']} | {r['passes_per_step']} | "
            f"{r['bare_floor_images_per_second']:,.0f} | {r['method_floor_images_per_second']:,.0f} | "
            f"{r['training_images_per_second']:,.0f} | **{r['fraction_of_method_floor']:.0%}** | "
            f"{r['fraction_of_bare_floor']:.0%} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("methods", nargs="*", default=["simclr_v1", "moco_v2", "byol"])
    parser.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    parser.add_argument("--backbone", default=None, help="default: the budget's for each method (gpu budget on cuda, "
                        "cpu budget on cpu: small_convnet, or small_vit for the ViT methods)")
    parser.add_argument("--batch-size", type=int, default=None, help="default: 512 on cuda, 256 on cpu")
    parser.add_argument("--steps", type=int, default=20, help="timed steps (after the warm-up)")
    parser.add_argument("--warmup-steps", type=int, default=5)
    parser.add_argument("--compile", action="store_true", help="torch.compile the floor passes and fit's step")
    parser.add_argument("--precision", nargs="+", default=["auto"], choices=PRECISIONS + (CONTIGUOUS,),
                        help="fit's precision(s); several are measured one after the other for each method. "
                        f"{CONTIGUOUS}: fp32 without channels_last (fit's fp32 before 2026-12-01)")
    parser.add_argument("--backbones-only", action="store_true",
                        help="only the bare floor of each backbone (--backbone, or all four) in each precision, "
                        "interleaved --repeats times: the measurements behind training.CPU_BF16_BACKBONES")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--clock", choices=sorted(CLOCKS), default="wall",
                        help="wall (default) or cpu: the process's CPU time, steadier on a shared machine")
    parser.add_argument("--data-dir", default=None, help="default: $SSL_DATA_DIR")
    parser.add_argument("--output", default="runs/throughput_floor")
    args = parser.parse_args()
    unknown = sorted(set(args.methods) - set(ssl_minimal.METHODS))
    if unknown:
        parser.error(f"unknown method(s) {unknown}; valid: {', '.join(ssl_minimal.METHODS)}")
    if args.steps < 1 or args.warmup_steps < 1:
        parser.error("--steps and --warmup-steps must be at least 1")
    device = resolve_device(args.device)
    use_clock(args.clock)
    if args.backbones_only:
        backbone_floors(args, device)
        return
    default_budget = get_budget("gpu" if device.type == "cuda" else "cpu")    # its backbone per method (ConvNet or ViT)
    batch_size = args.batch_size or (512 if device.type == "cuda" else 256)
    train = training_images(batch_size * (args.steps + args.warmup_steps), args.data_dir)
    output = Path(args.output)
    output.mkdir(parents=True, exist_ok=True)
    print(f"# {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC, {platform.processor() or platform.machine()}, "
          f"torch {torch.__version__}, {torch.get_num_threads()} threads, {clock.__name__} clock, "
          f"{len(train):,} training images\n{HEADER}", flush=True)
    results = []
    for name in args.methods:
        for precision in args.precision:
            backbone = args.backbone or default_budget.backbone_for(ssl_minimal.methods.METHODS[name])
            results.append(measure(name, train, backbone, batch_size, args.steps, args.warmup_steps, device,
                                   args.compile, precision=precision))
            print(markdown_row(results[-1]), flush=True)
            (output / "throughput_floor.json").write_text(json.dumps(results, indent=1))


def backbone_floors(args, device: torch.device) -> None:
    """Bare forward + backward img/s of each backbone in fp32 and bf16 (channels_last both; and fp32 without
    channels_last if asked for with fp32-contiguous), the precisions alternating within each of --repeats
    rounds; prints the median and the range."""
    backbones = [args.backbone] if args.backbone else ["small_convnet", "resnet18", "small_vit", "vit_tiny"]
    precisions = [p for p in args.precision if p != "auto"] or ["fp32", "bf16"]
    print(f"# {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC, {platform.processor() or platform.machine()}, "
          f"torch {torch.__version__}, {torch.get_num_threads()} threads, {clock.__name__} clock, native bf16: "
          f"{ssl_minimal.training.native_bf16(device)}\n| backbone | batch | "
          + " | ".join(f"{p} img/s (median, range of {args.repeats})" for p in precisions)
          + f" | {precisions[-1]} / {precisions[0]} |\n|---|---|" + "---|" * (len(precisions) + 1), flush=True)
    for backbone in backbones:
        batch_size = args.batch_size or {"resnet18": 64, "vit_tiny": 64}.get(backbone, 256)
        torch.manual_seed(0)
        encoder = ssl_minimal.backbones.build_encoder(backbone).to(device).to(memory_format=torch.channels_last)
        passes = [(encoder, (batch_size, 3, IMAGE_SIZE, IMAGE_SIZE), True)]
        speeds = {p: [] for p in precisions}
        for _ in range(args.repeats):
            for precision in precisions:
                resolved, memory_format = precision_and_format(precision)
                encoder.to(memory_format=memory_format)
                speeds[precision].append(batch_size / time_passes(passes, device, args.steps, args.warmup_steps,
                                                                  args.compile, resolved, memory_format))
        medians = {p: sorted(v)[len(v) // 2] for p, v in speeds.items()}
        cells = " | ".join(f"{medians[p]:,.0f} ({min(speeds[p]):,.0f}-{max(speeds[p]):,.0f})" for p in precisions)
        print(f"| {backbone} | {batch_size} | {cells} | {medians[precisions[-1]] / medians[precisions[0]]:.2f}x |",
              flush=True)


if __name__ == "__main__":
    main()
