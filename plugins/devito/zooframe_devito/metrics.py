"""What an NDE engineer reads: the A-scans (receiver traces) of a rollout, and their error."""

from __future__ import annotations

import torch


def traces(simulator, rollout: torch.Tensor) -> torch.Tensor:
    """The pressure at the simulator's receivers over a rollout ``[cases, T + 1, 2, nx, ny]``:
    ``[cases, receivers, T + 1]``, one trace (A-scan) per receiver, sampled once per step."""
    ix, iy = simulator.receiver_nodes()
    return rollout[:, :, 0, torch.as_tensor(ix, device=rollout.device), iy].transpose(1, 2)


def extra_metrics(simulator, predicted: torch.Tensor, reference: torch.Tensor) -> dict[str, float]:
    """Errors of the receiver traces of ``predicted`` against those of ``reference`` (both
    ``[cases, T + 1, 2, nx, ny]``; frame 0, the shared initial state, left out):

    - ``trace_mae``: mean absolute error of the traces;
    - ``trace_mae_relative``: that over the reference traces' mean absolute value;
    - ``trace_correlation``: zero-lag normalized correlation of each predicted trace with its
      reference trace, averaged (1: the same waveform up to scale);
    - ``wavefield_mae``: mean absolute error of the pressure field u (the state's first channel).
    """
    p, r = traces(simulator, predicted)[..., 1:].double(), traces(simulator, reference)[..., 1:].double()
    mae = (p - r).abs().mean()
    norm = p.norm(dim=-1) * r.norm(dim=-1)
    corr = ((p * r).sum(-1) / norm.clamp_min(1e-300))[norm > 0]
    return {"trace_mae": float(mae), "trace_mae_relative": float(mae / r.abs().mean().clamp_min(1e-300)),
            "trace_correlation": float(corr.mean()) if corr.numel() else float("nan"),
            "wavefield_mae": float((predicted[:, 1:, 0] - reference[:, 1:, 0]).abs().double().mean())}
