"""The microstructure's characteristic length from the structure factor, and how well a rollout
reproduces it: the figures the materials benchmark reports beside the MAE."""

from __future__ import annotations

import math

import torch


def structure_factor(phi: torch.Tensor, length: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Radially averaged structure factor of fields ``[..., X, Y]`` on a periodic square of side
    ``length``: wavenumbers ``[K]`` (shells 1..K of 2 pi / length) and ``S [..., K]``."""
    n = phi.shape[-1]
    fluct = phi - phi.mean(dim=(-2, -1), keepdim=True)
    power = torch.fft.fft2(fluct.double()).abs() ** 2 / n**4
    k = torch.fft.fftfreq(n, d=1.0 / n, dtype=torch.float64)
    shell = torch.sqrt(k[:, None] ** 2 + k[None, :] ** 2).round().long().flatten()
    shells = n // 2
    keep = (shell >= 1) & (shell <= shells)
    flat = power.flatten(-2)[..., keep]
    total = torch.zeros(*flat.shape[:-1], shells + 1, dtype=torch.float64)
    total.index_add_(-1, shell[keep], flat)
    count = torch.bincount(shell[keep], minlength=shells + 1).clamp_min(1)
    return torch.arange(1, shells + 1, dtype=torch.float64) * 2 * math.pi / length, (total / count)[..., 1:]


def characteristic_length(phi: torch.Tensor, length: float) -> torch.Tensor:
    """L = 2 pi / k1 with k1 the first moment of the structure factor, per field ``[...]``."""
    k, s = structure_factor(phi, length)
    k1 = (k * s).sum(-1) / s.sum(-1).clamp_min(1e-300)
    return 2 * math.pi / k1


def extra_metrics(simulator, predicted: torch.Tensor, reference: torch.Tensor) -> dict[str, float]:
    """For held-out rollouts ``[cases, T + 1, 1, X, Y]``: the characteristic length at the last
    frame (mean, min and max over cases), its growth exponent (slope of log L over log t in the
    second half of the rollout), and the errors of L(t) and S(k, t) against the reference."""
    size = simulator.config.length
    lp = characteristic_length(predicted[:, :, 0].cpu(), size)  # [cases, T + 1]
    lr = characteristic_length(reference[:, :, 0].cpu(), size)
    _, sp = structure_factor(predicted[:, 1:, 0].cpu(), size)
    _, sr = structure_factor(reference[:, 1:, 0].cpu(), size)
    steps = lp.shape[1] - 1
    half = max(1, steps // 2)
    t = torch.arange(half, steps + 1, dtype=torch.float64)
    log_t = t.log() - t.log().mean()
    slope = ((lp[:, half:].log() - lp[:, half:].log().mean(1, keepdim=True)) * log_t).sum(1) / (log_t**2).sum()
    return {"length_final_mean": float(lp[:, -1].mean()), "length_final_min": float(lp[:, -1].min()),
            "length_final_max": float(lp[:, -1].max()), "length_growth_exponent": float(slope.mean()),
            "length_rel_error": float(((lp[:, 1:] - lr[:, 1:]).abs() / lr[:, 1:]).mean()),
            "structure_factor_rel_error": float((sp - sr).norm(dim=-1).sum() / sr.norm(dim=-1).sum())}
