"""The model interface: a factory from a config to a ``torch.nn.Module``."""

from __future__ import annotations

from dataclasses import dataclass

from pydantic import Field
from torch import nn

from .base import Plugin, PluginConfig


@dataclass(frozen=True)
class ModelSpec:
    """What the network must map: ``[N, in_channels, *spatial_shape] -> [N, out_channels, *spatial_shape]``."""

    in_channels: int
    out_channels: int
    spatial_shape: tuple[int, ...]

    @property
    def spatial_dims(self) -> int:
        return len(self.spatial_shape)


class ModelConfig(PluginConfig):
    """Options every model shares."""

    normalize: bool = Field(
        True, description="scale inputs by data statistics and outputs by the size of the correction"
    )


class ModelFactory(Plugin):
    category = "model"
    required = (("build",),)

    def build(self, spec: ModelSpec) -> nn.Module:
        raise NotImplementedError


def output_layer(layer: nn.Module, zero: bool) -> nn.Module:
    """``layer``, with weights and bias at zero when ``zero`` (a model's ``zero_init_output``): the
    correction starts at nothing, and the run from the uncorrected solver."""
    if zero:
        nn.init.zeros_(layer.weight)
        nn.init.zeros_(layer.bias)
    return layer


ACTIVATIONS = {"relu": nn.ReLU, "gelu": nn.GELU, "tanh": nn.Tanh, "silu": nn.SiLU, "leaky_relu": nn.LeakyReLU}


class Residual(nn.Module):
    """A residual block, ``activation(body(x) + skip(x))``; ``skip`` None is the identity and
    ``activation`` None applies none. When ``body`` and ``skip`` are stacks of ungrouped
    convolutions and pointwise activations, the core evaluates the block for many parameter
    vectors at once as grouped convolutions, as it does a plain stack."""

    def __init__(self, body: nn.Sequential, skip: nn.Module | None = None, activation: nn.Module | None = None):
        super().__init__()
        self.body, self.skip, self.act = body, skip, activation

    def forward(self, x):
        out = self.body(x) + (x if self.skip is None else self.skip(x))
        return out if self.act is None else self.act(out)
