"""Convolutional correction network for 1D and 2D states."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator
from torch import nn

from ...plugins.model import ACTIVATIONS, ModelConfig, ModelFactory, ModelSpec, Residual, output_layer


def grid_convolutions(model: str, spec: ModelSpec, padding: str):
    """``conv(cin, cout, k)``: convolutions of ``spec``'s dimension (1D or 2D) that keep the grid
    (odd ``k``), padded as ``padding`` says."""
    if spec.spatial_dims not in (1, 2):
        raise ValueError(f"the {model} model handles 1D and 2D states, not {spec.spatial_dims}D")
    conv_cls = nn.Conv1d if spec.spatial_dims == 1 else nn.Conv2d

    def conv(cin: int, cout: int, k: int) -> nn.Module:
        return conv_cls(cin, cout, k, padding=k // 2, padding_mode=padding)
    return conv


class ConvConfig(ModelConfig):
    kind: Literal["conv"]
    hidden_channels: int = Field(8, ge=1, le=1024)
    kernel_size: int = Field(5, ge=1, le=63, description="odd, so that the output keeps the grid")
    depth: int = Field(1, ge=0, le=100, description="hidden layers (or residual blocks) between input and output "
                       "convolutions")
    residual: bool = Field(False, description="hidden layers as residual blocks of two convolutions")
    activation: Literal["relu", "gelu", "tanh", "silu"] = "gelu"
    padding: Literal["zeros", "circular", "replicate", "reflect"] = "zeros"
    zero_init_output: bool = Field(
        False, description="start the output layer at zero, so that training starts from the uncorrected solver "
        "(leave off with sparsity: zero weights give pruning scores nothing to rank)")

    @field_validator("kernel_size")
    @classmethod
    def _odd(cls, k: int) -> int:
        if k % 2 == 0:
            raise ValueError(f"kernel_size must be odd (got {k})")
        return k


class ConvModel(ModelFactory):
    """input conv -> ``depth`` hidden layers (plain or residual) -> output conv."""

    Config = ConvConfig

    def build(self, spec: ModelSpec) -> nn.Module:
        cfg = self.config
        grid_conv = grid_convolutions("conv", spec, cfg.padding)
        act = ACTIVATIONS[cfg.activation]

        def conv(cin=cfg.hidden_channels, cout=cfg.hidden_channels):
            return grid_conv(cin, cout, cfg.kernel_size)

        layers: list[nn.Module] = [conv(spec.in_channels), act()]
        for _ in range(cfg.depth):
            layers += [Residual(nn.Sequential(conv(), act(), conv()), activation=act())] if cfg.residual else [conv(), act()]
        return nn.Sequential(*layers, output_layer(conv(cout=spec.out_channels), cfg.zero_init_output))
