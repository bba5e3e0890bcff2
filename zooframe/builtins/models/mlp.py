"""Multi-layer perceptron over the flattened state."""

from __future__ import annotations

import math
from typing import Annotated, Literal

from pydantic import Field
from torch import nn

from ...plugins.model import ACTIVATIONS, ModelConfig, ModelFactory, ModelSpec, output_layer


class MLPConfig(ModelConfig):
    kind: Literal["mlp"]
    hidden: list[Annotated[int, Field(ge=1, le=65536)]] = Field(
        default_factory=lambda: [32], max_length=100, description="widths of the hidden layers")
    activation: Literal["relu", "gelu", "tanh", "silu"] = "tanh"
    zero_init_output: bool = Field(
        False, description="start the output layer at zero, so that training starts from the uncorrected solver "
        "(leave off with sparsity: zero weights give pruning scores nothing to rank)")


class MLPModel(ModelFactory):
    """Flattens ``[N, C, *spatial]``, maps it through dense layers, and restores the grid."""

    Config = MLPConfig

    def build(self, spec: ModelSpec) -> nn.Module:
        size = math.prod(spec.spatial_shape)
        widths = [spec.in_channels * size, *self.config.hidden, spec.out_channels * size]
        layers: list[nn.Module] = [nn.Flatten()]
        for i, (a, b) in enumerate(zip(widths, widths[1:])):
            layers.append(nn.Linear(a, b))
            if i < len(widths) - 2:
                layers.append(ACTIVATIONS[self.config.activation]())
        output_layer(layers[-1], self.config.zero_init_output)
        layers.append(nn.Unflatten(1, (spec.out_channels, *spec.spatial_shape)))
        return nn.Sequential(*layers)
