"""Augmentation throughput: ssl_minimal's batched SimCLR recipe vs torchvision's per-image PIL pipeline.

    SSL_DATA_DIR=/work/shared/data python benchmarks/augmentation_throughput.py [--images 5000] [--batch-size 256]
        [--cores 2] [--rounds 5]

Both sides make one SimCLR view of every image, with the same ops and parameters as
`augmentations.recipe("simclr", 32)` (Chen et al. 2020, Appendix A, CIFAR-10 settings):
RandomResizedCrop(32, scale 0.08-1, ratio 3/4-4/3), horizontal flip p=0.5, colour jitter
(0.4, 0.4, 0.4, 0.1) with p=0.8 in a random order per image, grayscale p=0.2, no blur; output
float in [0, 1], collected into batches [B, 3, 32, 32].

* ssl_minimal: uint8 batches of --batch-size go through the recipe (no Python loop over images),
  in this process with torch's intra-op threads.
* torchvision: a torch DataLoader over the same images, served as torchvision's CIFAR10 serves them
  (HWC uint8 array -> `Image.fromarray` -> the Compose pipeline -> default collate into batches of
  --batch-size). That is what a training script with torchvision transforms runs.

Two settings, both reported:
* 1 core: ssl_minimal with 1 torch thread; the DataLoader with num_workers=0 (in this process).
* N cores (--cores, default: the CPU cores this process may use), two ways for ssl_minimal against
  the DataLoader with N worker processes (persistent, started and warmed up before timing):
  "N threads": each batch goes through the recipe with N torch intra-op threads;
  "N batch threads": `augmentations.augment_batches(..., threads=N)`, N Python threads that each
  augment whole batches with one torch thread, as the DataLoader's workers each make whole batches.
The same images are used by both sides (real CIFAR-10 when `data.load("cifar10")` finds it, else
random pixels). Each side is timed --rounds times, alternating, every timing a full pass over the
images (ssl_minimal repeats its pass --repeats times inside one timing, so that both timings last
long enough to measure), and the best and the median of the rounds are reported, so that bursts
of load from other processes bias neither side. In the 1-core setting CPU time is reported too
(views per CPU-second: the steadier measure on a shared machine).

Prints the markdown table for BENCHMARKS.md (measure on an idle machine: with other jobs running,
the multi-threaded batched side suffers most).
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torchvision
import torchvision.transforms as T
from PIL import Image

import ssl_minimal
from ssl_minimal import augmentations

IMAGE_SIZE = 32
RECIPE_STRENGTH = 0.5          # SimCLR Appendix B.9: colour strength s = 0.5 on CIFAR-10 -> jitter (0.4, 0.4, 0.4, 0.1)


def load_images(count: int, data_dir: str | None, seed: int = 0) -> tuple[torch.Tensor, str]:
    """A class-balanced set of `count` CIFAR-10 training images as uint8 [N, 3, 32, 32], else random pixels."""
    if ssl_minimal.data.is_available("cifar10", data_dir):
        train = ssl_minimal.data.load("cifar10", "train", data_dir=data_dir)
        return train.subset(min(count, len(train)), seed=seed).images, f"CIFAR-10 ({min(count, len(train)):,} train images)"
    generator = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (count, 3, IMAGE_SIZE, IMAGE_SIZE), dtype=torch.uint8, generator=generator)
    return images, f"random uint8 ({count:,})"


def torchvision_pipeline() -> T.Compose:
    """torchvision's per-image version of augmentations.recipe("simclr", 32)."""
    s = RECIPE_STRENGTH
    return T.Compose([T.RandomResizedCrop(IMAGE_SIZE, scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3)),
                      T.RandomHorizontalFlip(p=0.5),
                      T.RandomApply([T.ColorJitter(0.8 * s, 0.8 * s, 0.8 * s, 0.2 * s)], p=0.8),
                      T.RandomGrayscale(p=0.2),
                      T.ToTensor()])


class CIFARStyleDataset(torch.utils.data.Dataset):
    """Images served as torchvision's CIFAR10 serves them: HWC uint8 array -> PIL -> transform."""

    def __init__(self, images: torch.Tensor, transform: T.Compose):
        self.array = images.permute(0, 2, 3, 1).contiguous().numpy()     # uint8 [N, H, W, 3]
        self.transform = transform

    def __len__(self) -> int:
        return len(self.array)

    def __getitem__(self, index: int) -> torch.Tensor:
        return self.transform(Image.fromarray(self.array[index]))


def time_ours(images: torch.Tensor, batch_size: int, threads: int, repeats: int) -> tuple[float, float]:
    """(wall, CPU) seconds per pass for ssl_minimal's SimCLR recipe over every image, in batches."""
    torch.set_num_threads(threads)
    augment = augmentations.recipe("simclr", IMAGE_SIZE, strength=RECIPE_STRENGTH)
    start, start_cpu = time.perf_counter(), time.process_time()
    for _ in range(repeats):
        for first in range(0, len(images), batch_size):
            augment(images[first:first + batch_size])
    return (time.perf_counter() - start) / repeats, (time.process_time() - start_cpu) / repeats


def time_batch_threads(images: torch.Tensor, batch_size: int, threads: int, repeats: int) -> tuple[float, float]:
    """(wall, CPU) seconds per pass for the recipe over every image with augment_batches(threads=...)."""
    augment = augmentations.recipe("simclr", IMAGE_SIZE, strength=RECIPE_STRENGTH)
    start, start_cpu = time.perf_counter(), time.process_time()
    for repeat in range(repeats):
        for _ in augmentations.augment_batches(augment, images, batch_size, threads=threads, seed=repeat):
            pass
    return (time.perf_counter() - start) / repeats, (time.process_time() - start_cpu) / repeats


def time_loader(loader: torch.utils.data.DataLoader) -> tuple[float, float]:
    """(wall, CPU of this process) seconds for one pass of a DataLoader (its batches of views)."""
    start, start_cpu = time.perf_counter(), time.process_time()
    for _ in loader:
        pass
    return time.perf_counter() - start, time.process_time() - start_cpu


def measure(images: torch.Tensor, batch_size: int, cores: int, rounds: int, repeats: int) -> dict:
    """Best and median views/s of both sides, ssl_minimal with `cores` threads and torchvision with
    `cores` DataLoader workers (0 workers, i.e. this process, for 1 core)."""
    workers = 0 if cores == 1 else cores
    loader = torch.utils.data.DataLoader(CIFARStyleDataset(images, torchvision_pipeline()), batch_size=batch_size,
                                         num_workers=workers, persistent_workers=workers > 0)
    time_ours(images[:2 * batch_size], batch_size, cores, 1)        # warm-up (thread pool, allocator)
    time_loader(loader)                                              # warm-up (starts the workers)
    if cores > 1:
        time_batch_threads(images[:4 * batch_size], batch_size, cores, 1)   # warm-up
    ours, batch_threads, theirs = [], [], []
    for _ in range(rounds):
        ours.append(time_ours(images, batch_size, cores, repeats))
        if cores > 1:
            batch_threads.append(time_batch_threads(images, batch_size, cores, repeats))
        torch.set_num_threads(cores)
        theirs.append(time_loader(loader))
    del loader
    n = len(images)
    return {"cores": cores, "workers": workers,
            "batch_threads_best": n / min(w for w, _ in batch_threads) if batch_threads else None,
            "batch_threads_median": n / statistics.median(w for w, _ in batch_threads) if batch_threads else None,
            "ours_best": n / min(w for w, _ in ours), "ours_median": n / statistics.median(w for w, _ in ours),
            "theirs_best": n / min(w for w, _ in theirs), "theirs_median": n / statistics.median(w for w, _ in theirs),
            "ours_per_cpu_second": n / min(c for _, c in ours),
            "theirs_per_cpu_second": n / min(c for _, c in theirs) if workers == 0 else None}


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


HEADER = ("| date | machine | load avg (1 min) | torch / torchvision | data | batch | cores | "
          "ssl_minimal views/s (best / median) | torchvision PIL views/s (best / median) | speed-up (best) | "
          "views per CPU-second (ours / torchvision) | command |\n|---|---|---|---|---|---|---|---|---|---|---|---|")


def markdown_rows(r: dict, source: str, batch_size: int, command: str, load: str) -> list[str]:
    """One row per way of running ssl_minimal: 1 core, or N cores with intra-op threads and with batch threads."""
    per_cpu = (f"{r['ours_per_cpu_second']:,.0f} / {r['theirs_per_cpu_second']:,.0f} "
               f"({r['ours_per_cpu_second'] / r['theirs_per_cpu_second']:.1f}x)" if r["theirs_per_cpu_second"] else "-")
    if r["cores"] == 1:
        ways = [("1 (1 thread / in-process)", r["ours_best"], r["ours_median"], per_cpu)]
    else:
        ways = [(f"{r['cores']} ({r['cores']} threads / {r['workers']} workers)", r["ours_best"], r["ours_median"], "-"),
                (f"{r['cores']} ({r['cores']} batch threads / {r['workers']} workers)",
                 r["batch_threads_best"], r["batch_threads_median"], "-")]
    return [f"| {datetime.date.today()} | {cpu_model()} | {load} | {torch.__version__} / {torchvision.__version__} | "
            f"{source} | {batch_size} | {setting} | {best:,.0f} / {median:,.0f} | "
            f"{r['theirs_best']:,.0f} / {r['theirs_median']:,.0f} | **{best / r['theirs_best']:.1f}x** | "
            f"{cpu} | `{command}` |" for setting, best, median, cpu in ways]


def main() -> None:
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=int, default=5000)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--cores", type=int, default=cores,
                        help=f"the multi-core setting: torch threads for ours, DataLoader workers for torchvision "
                             f"(default {cores}); the 1-core setting is always measured too")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=3, help="passes of ours per timing (it is the faster side)")
    parser.add_argument("--data-dir", default=None, help="default: $SSL_DATA_DIR")
    args = parser.parse_args()

    load = f"{os.getloadavg()[0]:.1f}" if hasattr(os, "getloadavg") else "?"    # before we add our own
    images, source = load_images(args.images, args.data_dir)
    results = [measure(images, args.batch_size, c, args.rounds, args.repeats)
               for c in dict.fromkeys([1, args.cores])]
    command = "python " + " ".join([Path(sys.argv[0]).as_posix()] + sys.argv[1:])
    print(HEADER)
    for r in results:
        print("\n".join(markdown_rows(r, source, args.batch_size, command, load)))


if __name__ == "__main__":
    main()
