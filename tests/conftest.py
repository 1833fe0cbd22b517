"""Shared fixtures. Tests never touch the network; real CIFAR-10 is used only when ../shared/data exists."""

from pathlib import Path

import pytest
import torch

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


@pytest.fixture
def tiny_dataset():
    """64 random 32x32 images in 4 classes (enough to exercise the training loop in a second)."""
    from ssl_minimal.data import ImageDataset
    generator = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (64, 3, 32, 32), dtype=torch.uint8, generator=generator)
    labels = torch.arange(64) % 4
    return ImageDataset(name="tiny", split="train", images=images, labels=labels,
                        classes=["a", "b", "c", "d"], mean=(0.5, 0.5, 0.5), std=(0.29, 0.29, 0.29))


@pytest.fixture
def shared_data_dir():
    if not (SHARED_DATA / "cifar10" / "cifar10_jpeg.npz").is_file():
        pytest.skip("../shared/data/cifar10/cifar10_jpeg.npz not present")
    return SHARED_DATA
