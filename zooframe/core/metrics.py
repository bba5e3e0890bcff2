"""Error metrics of held-out rollouts against their reference (``evaluation.metrics`` in the config).

A metric reduces the error of one frame to a number; the evaluation averages it over rollout
steps and cases, for the whole state and for each channel.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import torch

from .losses import TINY


class Metric(NamedTuple):
    label: str  # in figures and printed lines
    description: str
    reduce: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # (error, reference) [..., N] -> [...]


METRICS: dict[str, Metric] = {
    "mae": Metric("MAE", "mean absolute error", lambda e, r: e.abs().mean(dim=-1)),
    "rmse": Metric("RMSE", "root mean squared error", lambda e, r: e.pow(2).mean(dim=-1).sqrt()),
    "relative_l2": Metric("relative L2 error", "L2 norm of the error over that of the reference frame",
                          lambda e, r: e.norm(dim=-1) / r.norm(dim=-1).clamp_min(TINY)),
    "max_abs": Metric("max abs error", "largest absolute error in the frame", lambda e, r: e.abs().amax(dim=-1)),
}


def per_step(name: str, states: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """Metric ``name`` per case and step ``[B, T]`` of ``states`` ``[B, T + 1, C, *S]`` against
    ``reference`` (frame 0 excluded), over every entry of a frame."""
    error = (states[:, 1:] - reference[:, 1:]).flatten(2)
    return METRICS[name].reduce(error, reference[:, 1:].flatten(2))


def per_channel_step(name: str, states: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """As :func:`per_step`, each channel on its own: ``[B, T, C]``."""
    frames = reference[:, 1:].unsqueeze(-1).flatten(3)  # the unsqueeze: a state may have no spatial axes
    return METRICS[name].reduce((states[:, 1:] - reference[:, 1:]).unsqueeze(-1).flatten(3), frames)
