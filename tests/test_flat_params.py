"""Batched evaluation of a module for many parameter vectors against one vector at a time."""

import copy

import pytest
import torch
from torch import nn

import zooframe.core.flat_params
from zooframe.builtins.models.resnet import ResNetConfig, ResNetModel
from zooframe.core.flat_params import FlatParams, runs_grouped
from zooframe.plugins.model import ModelSpec


def conv_stack(dims, padding_mode="zeros", bias=True):
    conv = {1: nn.Conv1d, 2: nn.Conv2d}[dims]
    return nn.Sequential(conv(3, 4, 3, padding=1, padding_mode=padding_mode, bias=bias), nn.GELU(),
                         conv(4, 4, 3, padding=2, dilation=2, padding_mode=padding_mode, bias=bias), nn.Tanh(),
                         conv(4, 2, 3, stride=2, padding=1, padding_mode=padding_mode, bias=bias)).double()


def resnet(dims, **config):
    spec = ModelSpec(3, 2, (9,) * dims)
    config = {"kind": "resnet", "blocks": 2, "channels": 4, "kernel_size": 3, **config}
    return ResNetModel(ResNetConfig(**config)).build(spec).double()


class Residual(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv1d(3, 3, 3, padding=1)

    def forward(self, x):
        return x + self.conv(x)


def looped(net, thetas, x, batched):
    out = []
    for i, theta in enumerate(thetas):
        one = copy.deepcopy(net)
        FlatParams(one).set(theta)
        out.append(one(x[i] if batched else x))
    return torch.stack(out)


@pytest.mark.parametrize("net, grouped", [
    (conv_stack(1), True), (conv_stack(2), True), (conv_stack(1, "circular"), True),
    (conv_stack(2, "reflect", bias=False), True),
    (nn.Sequential(nn.Conv1d(3, 4, 3, groups=1), nn.Conv1d(4, 2, 3, groups=2)).double(), False),
    (nn.Sequential(Residual(), nn.ReLU()).double(), False),
    (resnet(1, padding="circular"), True),  # residual blocks run grouped too
    (resnet(2, stem="projection", activate_sum=False, output_kernel_size=1, padding="reflect"), True),
    (resnet(1, stem="projection", channels=3), True),  # the first block's skip is the shared input itself
])
@pytest.mark.parametrize("batched", [True, False])
@pytest.mark.parametrize("block_bytes", [zooframe.core.flat_params.QUERY_BLOCK_BYTES, 1000])
def test_batched_forward_equals_one_parameter_vector_at_a_time(net, grouped, batched, block_bytes, monkeypatch):
    monkeypatch.setattr(zooframe.core.flat_params, "QUERY_BLOCK_BYTES", block_bytes)  # 1000: blocks of one query
    torch.manual_seed(0)
    flat = FlatParams(net)
    thetas = flat.get() + 0.1 * torch.randn(5, flat.dim, dtype=torch.float64)
    spatial = (9,) if any(isinstance(m, nn.Conv1d) for m in net.modules()) else (9, 7)
    x = torch.randn(*((5,) if batched else ()), 2, 3, *spatial, dtype=torch.float64)
    assert runs_grouped(net) == grouped
    with torch.no_grad():
        torch.testing.assert_close(flat.batched_forward(thetas, x, batched=(batched,)),
                                   looped(net, thetas, x, batched), atol=1e-12, rtol=0)
