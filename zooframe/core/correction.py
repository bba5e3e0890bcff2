"""The correction network as the objective sees it: normalization and constant case inputs
around the user's model."""

from __future__ import annotations

import torch
from torch import nn

from ..plugins.base import PluginSpec
from ..plugins.errors import ZooframeError
from ..plugins.model import ModelSpec
from ..plugins.simulator import StateSpec


class CorrectionNetwork(nn.Module):
    """``correction(state, features)``: normalizes the state per channel, appends each case's
    features as constant channels, runs ``net`` and scales its output back to physical units.

    The statistics are buffers, not parameters: the optimizer and the estimators never touch them.
    """

    def __init__(self, net: nn.Module, channels: int, features: int, spatial_dims: int,
                 valid: torch.Tensor | None = None):
        super().__init__()
        self.net = net
        self.channels, self.features = channels, features
        shape = (1, -1) + (1,) * spatial_dims
        self.register_buffer("valid", None if valid is None else valid.to(torch.get_default_dtype())[None])
        self.register_buffer("state_mean", torch.zeros(channels).view(shape))
        self.register_buffer("state_std", torch.ones(channels).view(shape))
        self.register_buffer("feature_mean", torch.zeros(features).view(shape))
        self.register_buffer("feature_std", torch.ones(features).view(shape))
        self.register_buffer("output_std", torch.ones(channels).view(shape))

    def set_statistics(self, states: torch.Tensor, features: torch.Tensor, corrections: torch.Tensor) -> None:
        """Statistics from example states ``[N, C, *S]``, features ``[N, F]`` and target
        corrections ``[N, C, *S]`` (reference minus solver)."""
        dims = [0] + list(range(2, states.ndim))
        if self.valid is not None:  # statistics over the entries that hold data only
            keep = self.valid[0].bool().all(dim=0).expand_as(states[:, 0])
            states, corrections = (x.movedim(1, -1)[keep] for x in (states, corrections))
            dims = [0]

        def std(x, d):
            return x.std(dim=d).clamp_min(1e-8) if x.shape[0] > 1 else torch.ones(x.shape[1], dtype=x.dtype)

        self.state_mean.copy_(states.mean(dim=dims).view_as(self.state_mean))
        self.state_std.copy_(std(states, dims).view_as(self.state_std))
        self.output_std.copy_(std(corrections, dims).view_as(self.output_std))
        if features.shape[1]:
            self.feature_mean.copy_(features.mean(dim=0).view_as(self.feature_mean))
            self.feature_std.copy_(std(features, [0]).view_as(self.feature_std))

    def forward(self, state: torch.Tensor, features: torch.Tensor) -> torch.Tensor:
        return self.outputs(self.net(self.inputs(state, features)))

    def inputs(self, state: torch.Tensor, features: torch.Tensor) -> torch.Tensor:
        """What ``net`` sees: the normalized state ``[N, C, *S]`` and the normalized features
        ``[N, F]`` as constant channels."""
        x = (state - self.state_mean) / self.state_std
        if features.shape[-1]:
            f = ((features[(...,) + (None,) * (state.ndim - 2)] - self.feature_mean) / self.feature_std)
            x = torch.cat([x, f.expand(-1, -1, *state.shape[2:])], dim=1)
        return x

    def outputs(self, out: torch.Tensor) -> torch.Tensor:
        """``net``'s output ``[..., C, *S]`` in physical units, off the entries that hold no data."""
        out = out * self.output_std
        return out if self.valid is None else out * self.valid


MAX_PARAMETERS = 10**8  # 400 MB of float32 weights, and far more than zeroth-order estimates can train


def build_correction(model: PluginSpec, channels: int, features: int, spatial_shape: tuple[int, ...],
                     valid: torch.Tensor | None = None) -> CorrectionNetwork:
    """The model plugin's network inside the core's normalization and case-feature wrapper; a
    network with more than :data:`MAX_PARAMETERS` parameters is refused before it is allocated."""
    factory, spec = model.build(), ModelSpec(channels + features, channels, tuple(spatial_shape))
    with torch.device("meta"):  # counted without allocating them
        size = sum(p.numel() for p in factory.build(spec).parameters())
    if size > MAX_PARAMETERS:
        raise ZooframeError(f"model: the {model.config.kind} network for this task would have {size:,} parameters, "
                            f"more than the {MAX_PARAMETERS:,} zooframe builds; make it smaller")
    net = factory.build(spec)
    return CorrectionNetwork(net, channels, features, len(spatial_shape), valid)


def correction_for(model: PluginSpec, spec: StateSpec, features: int) -> CorrectionNetwork:
    return build_correction(model, spec.num_channels, features, spec.spatial_shape, spec.valid)
