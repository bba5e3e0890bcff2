"""Residual network of convolutions for 1D and 2D states: the corrector of the solver-in-the-loop
paper (the defaults) and of the PBDL book's version of it, and anything between."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator
from torch import nn

from ...plugins.model import ACTIVATIONS, ModelConfig, ModelFactory, ModelSpec, Residual, output_layer
from .conv import grid_convolutions

# The two correctors of the Karman task (3 input channels: u, v and the Reynolds number; 2 outputs):
# the solver-in-the-loop paper's, 260,354 parameters (the defaults), and the PBDL book's, 47,330
PAPER = {"kind": "resnet", "blocks": 5, "channels": 32, "kernel_size": 5}
BOOK = {"kind": "resnet", "blocks": 3, "channels": 32, "kernel_size": 3, "output_kernel_size": 1,
        "stem": "projection", "activate_sum": False, "activation": "relu"}


class ResNetConfig(ModelConfig):
    kind: Literal["resnet"]
    blocks: int = Field(5, ge=1, le=100, description="residual blocks, each of two convolutions")
    channels: int = Field(32, ge=1, le=1024, description="channels of every block")
    kernel_size: int = Field(5, ge=1, le=63, description="width of the blocks' convolutions; odd, so that the "
                             "output keeps the grid")
    output_kernel_size: int | None = Field(None, ge=1, le=63, description="width of the output convolution "
                                           "(odd; default kernel_size)")
    stem: Literal["conv", "projection"] = Field(
        "conv", description="how the input reaches the blocks' width: 'conv', a convolution and activation before "
        "the first block; 'projection', the first block takes the input and its skip is a 1-wide convolution")
    activate_sum: bool = Field(
        True, description="apply the activation to each block's sum of branch and skip; false: after the "
        "branch's second convolution instead, and the sum is left as it is")
    activation: Literal["relu", "leaky_relu", "gelu", "tanh", "silu"] = "leaky_relu"
    padding: Literal["zeros", "circular", "replicate", "reflect"] = Field(
        "zeros", description="what the convolutions see past the domain's edge: circular for a periodic domain")
    zero_init_output: bool = Field(
        False, description="start the output layer at zero, so that training starts from the uncorrected solver "
        "(leave off with sparsity: zero weights give pruning scores nothing to rank)")

    @field_validator("kernel_size", "output_kernel_size")
    @classmethod
    def _odd(cls, k: int | None, info) -> int | None:
        if k is not None and k % 2 == 0:
            raise ValueError(f"{info.field_name} must be odd (got {k})")
        return k


class ResNetModel(ModelFactory):
    """``[N, in_channels, *S] -> [N, out_channels, *S]`` through ``blocks`` residual blocks of
    ``channels`` channels, each block two ``kernel_size`` convolutions with an activation between
    them, then an output convolution. The network is an ``nn.Sequential`` of convolutions,
    activations and :class:`~zooframe.plugins.model.Residual` blocks, so the Q parameter vectors of
    an estimate run as one network of grouped convolutions."""

    Config = ResNetConfig

    def build(self, spec: ModelSpec) -> nn.Module:
        cfg = self.config
        grid_conv = grid_convolutions("resnet", spec, cfg.padding)
        act = ACTIVATIONS[cfg.activation]

        def conv(cin, cout=cfg.channels, k=cfg.kernel_size):
            return grid_conv(cin, cout, k)

        def block(cin):
            branch = [conv(cin), act(), conv(cfg.channels)] + ([] if cfg.activate_sum else [act()])
            skip = None if cin == cfg.channels else conv(cin, k=1)
            return Residual(nn.Sequential(*branch), skip, act() if cfg.activate_sum else None)

        layers: list[nn.Module] = [conv(spec.in_channels), act()] if cfg.stem == "conv" else []
        width = cfg.channels if cfg.stem == "conv" else spec.in_channels
        for _ in range(cfg.blocks):
            layers.append(block(width))
            width = cfg.channels
        out = conv(cfg.channels, spec.out_channels, cfg.output_kernel_size or cfg.kernel_size)
        return nn.Sequential(*layers, output_layer(out, cfg.zero_init_output))
