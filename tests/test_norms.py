"""Normalisation options used by the collapse lessons: heads.mlp(norm=...) and SmallConvNet(norm=...)."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from ssl_minimal.backbones import SmallConvNet, WSConv2d
from ssl_minimal.checks import SSLMinimalError
from ssl_minimal.heads import WSLinear, mlp


def test_mlp_norm_choices():
    assert isinstance(mlp([4, 64, 2])[1], nn.BatchNorm1d)
    group = mlp([4, 4096, 2], norm="group")
    assert isinstance(group[1], nn.GroupNorm) and group[1].num_groups == 32
    assert mlp([4, 64, 2], norm="group")[1].num_groups == 4                    # at least 16 channels per group
    assert mlp([4, 48, 2], norm="group")[1].num_groups == 1                    # gcd(32, 48 // 16)
    assert [type(m) for m in mlp([4, 8, 2], norm="none")] == [nn.Linear, nn.ReLU, nn.Linear]
    assert [type(m) for m in mlp([4, 8, 2], batch_norm=False)] == [nn.Linear, nn.ReLU, nn.Linear]
    ws = mlp([4, 64, 2], norm="group_ws")
    assert [type(m) for m in ws] == [WSLinear, nn.GroupNorm, nn.ReLU, WSLinear]
    with pytest.raises(SSLMinimalError, match="valid norms are: batch, group, group_ws, none"):
        mlp([4, 8, 2], norm="layer")


def test_mlp_activation_choices():
    assert [type(m) for m in mlp([4, 8, 8, 2], norm="none", activation="gelu")] == [
        nn.Linear, nn.GELU, nn.Linear, nn.GELU, nn.Linear]                     # DINO's head
    assert isinstance(mlp([4, 8, 2])[2], nn.ReLU)                               # the default
    with pytest.raises(SSLMinimalError, match="valid activations are: relu, gelu"):
        mlp([4, 8, 2], activation="tanh")


def test_weight_standardised_linear_uses_rows_of_mean_zero_and_std_one_over_sqrt_fan_in():
    torch.manual_seed(0)
    linear = WSLinear(16, 3)
    x = torch.randn(5, 16) + 2.0                       # inputs with a common positive mean
    w = linear.weight
    standardised = (w - w.mean(1, keepdim=True)) / (w.std(1, unbiased=False, keepdim=True) + 1e-5) / 4
    assert torch.allclose(linear(x), F.linear(x, standardised, linear.bias), atol=1e-5)
    shifted = linear(x + 10.0) - linear.bias           # zero-mean rows ignore a shift shared by all inputs
    assert torch.allclose(shifted, linear(x) - linear.bias, atol=1e-3)


def test_weight_standardised_conv_uses_filters_of_mean_zero_and_std_one():
    torch.manual_seed(0)
    conv = WSConv2d(3, 4, 3, padding=1, bias=False)
    x = torch.randn(2, 3, 5, 5)
    w = conv.weight
    flat = w.view(4, -1)
    standardised = ((flat - flat.mean(1, keepdim=True)) / (flat.std(1, unbiased=False, keepdim=True) + 1e-5)).view_as(w)
    assert torch.allclose(conv(x), F.conv2d(x, standardised, padding=1), atol=1e-5)
    assert not torch.allclose(conv(x), F.conv2d(x, w, padding=1), atol=1e-3)


def test_small_convnet_without_batch_statistics():
    net = SmallConvNet(width=8, norm="group_ws")
    assert not any(isinstance(m, nn.BatchNorm2d) for m in net.modules())
    net.train()
    x = torch.randn(3, 3, 32, 32)
    single = torch.cat([net(x[i:i + 1]) for i in range(3)])
    assert torch.allclose(net(x), single, atol=1e-5)     # each image's output ignores the rest of the batch
    with pytest.raises(SSLMinimalError, match="valid norms are"):
        SmallConvNet(norm="layer")
