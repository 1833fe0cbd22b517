"""Input checks that turn user mistakes into one clear sentence.

Every public function of ssl_minimal that takes a tensor from the user validates it here, so a
wrong shape, dtype or value range is reported as *what was expected and what was given* instead
of a traceback from deep inside PyTorch. The CLI prints these errors as a single line.
"""

from __future__ import annotations

from typing import Iterable

import torch


class SSLMinimalError(ValueError):
    """A mistake in how ssl_minimal was called (bad name, shape, file...). The message says how to fix it."""


def unknown_name(kind: str, given: str, valid: Iterable[str]) -> SSLMinimalError:
    """Error for an unknown method/dataset/budget/recipe name, listing the valid ones."""
    valid = list(valid)
    return SSLMinimalError(f"unknown {kind} {given!r}; valid {kind}s are: {', '.join(valid)}")


def check_images(images: torch.Tensor, name: str = "images", *, channels: int = 3,
                 allow_uint8: bool = True, check_values: bool = True) -> None:
    """Check a batch of images: a tensor [B, C, H, W], uint8 in 0..255 or float in [0, 1].
    check_values=False skips reading the pixels (on a GPU that read waits for the device)."""
    if not isinstance(images, torch.Tensor):
        raise SSLMinimalError(f"{name} must be a torch.Tensor of shape [B, {channels}, H, W], "
                              f"got {type(images).__name__}")
    if images.dim() != 4 or images.shape[1] != channels:
        raise SSLMinimalError(f"{name} must have shape [B, {channels}, H, W] (batch, channels, height, "
                              f"width), got {list(images.shape)}")
    if images.dtype == torch.uint8:
        if not allow_uint8:
            raise SSLMinimalError(f"{name} must be float in [0, 1], got uint8; divide by 255 first")
        return
    if not images.is_floating_point():
        raise SSLMinimalError(f"{name} must be uint8 (0..255) or float in [0, 1], got dtype {images.dtype}")
    if check_values and images.numel() and (images.min() < -1e-3 or images.max() > 1 + 1e-3):
        raise SSLMinimalError(f"{name} must be float in [0, 1], got values in "
                              f"[{images.min().item():.3g}, {images.max().item():.3g}]; "
                              f"if they are 0..255 divide by 255, if they are normalised undo it")


def check_features(features: torch.Tensor, name: str = "features") -> None:
    """Check a feature matrix: a float tensor [N, D]."""
    if not isinstance(features, torch.Tensor) or features.dim() != 2 or not features.is_floating_point():
        shape = list(features.shape) if isinstance(features, torch.Tensor) else type(features).__name__
        raise SSLMinimalError(f"{name} must be a float tensor of shape [N, D], got {shape}")


def check_labels(labels: torch.Tensor, n: int, name: str = "labels") -> None:
    """Check integer labels [N] matching N feature rows."""
    if not isinstance(labels, torch.Tensor) or labels.dim() != 1 or labels.is_floating_point():
        shape = list(labels.shape) if isinstance(labels, torch.Tensor) else type(labels).__name__
        raise SSLMinimalError(f"{name} must be an integer tensor of shape [N], got {shape}")
    if labels.shape[0] != n:
        raise SSLMinimalError(f"{name} has {labels.shape[0]} entries but there are {n} feature rows")
