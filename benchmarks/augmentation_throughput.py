"""Augmentation throughput: ssl_minimal's batched SimCLR recipe vs torchvision's per-image PIL pipeline.

    python benchmarks/augmentation_throughput.py [--images 5000] [--batch-size 256] [--threads 2]

Both sides apply the same ops to CIFAR-sized 32x32 images: RandomResizedCrop(32, scale 0.08-1),
horizontal flip, colour jitter (0.4, 0.4, 0.4, 0.1) with p=0.8 in random order, grayscale p=0.2,
output float in [0, 1]. torchvision runs image by image on PIL images in this process (as a
DataLoader worker would); ssl_minimal runs on uint8 batches of --batch-size. Real CIFAR-10 images
are used when the JPEG archive exists (decoded here with PIL), random pixels otherwise. The two
pipelines are timed alternately for --rounds rounds (ours 3 times per round: it takes a tenth of
the time) and the best time of each is reported, so that bursts of load from other processes on
the machine bias neither side. CPU time (all threads of this process) is reported too: on a machine
shared with other jobs it is the steadier measure.

Prints a markdown table row for BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import datetime
import io
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torchvision
import torchvision.transforms as T
from PIL import Image

from ssl_minimal import augmentations

CIFAR10_JPEG = Path("/work/shared/data/cifar10/cifar10_jpeg.npz")   # JPEG archive: bytes + offsets per image


def load_images(count: int, path: Path) -> tuple[np.ndarray, str]:
    """First `count` CIFAR-10 training images as uint8 [N, 32, 32, 3], or random pixels."""
    if path.exists():
        archive = np.load(path)
        data, offsets = archive["train_jpeg"], archive["train_offsets"]
        images = [np.asarray(Image.open(io.BytesIO(data[offsets[i]:offsets[i + 1]].tobytes())).convert("RGB"))
                  for i in range(count)]
        return np.stack(images), f"CIFAR-10 ({count:,} train images)"
    return np.random.default_rng(0).integers(0, 256, (count, 32, 32, 3), dtype=np.uint8), f"random uint8 ({count:,})"


def time_ours(images: torch.Tensor, batch_size: int) -> tuple[float, float]:
    """(wall, CPU) seconds for ssl_minimal's SimCLR recipe to make one view of every image."""
    augment = augmentations.recipe("simclr", 32)
    start, start_cpu = time.perf_counter(), time.process_time()
    for first in range(0, len(images), batch_size):
        augment(images[first:first + batch_size])
    return time.perf_counter() - start, time.process_time() - start_cpu


def time_torchvision(images: list[Image.Image]) -> tuple[float, float]:
    """(wall, CPU) seconds for torchvision's per-image PIL pipeline with the same ops to make one view of every image."""
    pipeline = T.Compose([T.RandomResizedCrop(32, scale=(0.08, 1.0)), T.RandomHorizontalFlip(),
                          T.RandomApply([T.ColorJitter(0.4, 0.4, 0.4, 0.1)], p=0.8),
                          T.RandomGrayscale(p=0.2), T.ToTensor()])
    start, start_cpu = time.perf_counter(), time.process_time()
    for image in images:
        pipeline(image)
    return time.perf_counter() - start, time.process_time() - start_cpu


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=int, default=5000)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads (the machine has 2 cores)")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--data", type=Path, default=CIFAR10_JPEG)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    array, source = load_images(args.images, args.data)
    tensor_images = torch.from_numpy(array).permute(0, 3, 1, 2).contiguous()     # uint8 [N, 3, 32, 32]
    pil_images = [Image.fromarray(image) for image in array]
    time_ours(tensor_images[:args.batch_size * 2], args.batch_size)              # warm-up
    time_torchvision(pil_images[:200])
    ours, theirs = [], []
    for _ in range(args.rounds):
        ours.extend(time_ours(tensor_images, args.batch_size) for _ in range(3))
        theirs.append(time_torchvision(pil_images))
    ours_rate, theirs_rate = args.images / min(wall for wall, _ in ours), args.images / min(wall for wall, _ in theirs)
    ours_cpu_rate = args.images / min(cpu for _, cpu in ours)
    theirs_cpu_rate = args.images / min(cpu for _, cpu in theirs)

    command = "python " + " ".join([Path(sys.argv[0]).as_posix()] + sys.argv[1:])
    machine = f"{cpu_model()}, {torch.get_num_threads()} threads"
    print("| date | machine | torch / torchvision | data | batch | ssl_minimal views/s | torchvision PIL views/s "
          "| speed-up | views per CPU-second (ours / torchvision, speed-up) | command |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    print(f"| {datetime.date.today()} | {machine} | {torch.__version__} / {torchvision.__version__} | {source} | "
          f"{args.batch_size} | {ours_rate:,.0f} | {theirs_rate:,.0f} | {ours_rate / theirs_rate:.1f}x | "
          f"{ours_cpu_rate:,.0f} / {theirs_cpu_rate:,.0f} ({ours_cpu_rate / theirs_cpu_rate:.1f}x) | `{command}` |")


if __name__ == "__main__":
    main()
