"""Tests for the Encoder's input checks (ssl_minimal.backbones)."""

import pytest
import torch

from ssl_minimal import backbones
from ssl_minimal.checks import SSLMinimalError


def test_encoder_checks_shape_and_values_of_every_cpu_batch():
    encoder = backbones.build_encoder("small_convnet", width=8)
    assert encoder(torch.rand(2, 3, 32, 32)).shape == (2, encoder.output_dim)
    with pytest.raises(SSLMinimalError, match=r"float in \[0, 1\]"):       # still checked after the first call
        encoder(torch.rand(2, 3, 32, 32) * 255)
    with pytest.raises(SSLMinimalError, match=r"\[B, 3, H, W\]"):
        encoder(torch.rand(2, 32, 32))


def test_encoder_reads_pixel_values_off_the_cpu_only_at_its_first_call(monkeypatch):
    # On a GPU, reading min/max makes the CPU wait for the device: done once, not at every step.
    # ("meta" tensors stand in for a GPU here: same code path, no device needed.)
    calls = []
    monkeypatch.setattr(backbones, "check_images", lambda images, **options: calls.append(options["check_values"]))
    encoder = backbones.build_encoder("small_convnet", width=8).to("meta")
    for _ in range(3):
        encoder(torch.empty(2, 3, 32, 32, device="meta"))
    assert calls == [True, False, False]
