"""Held-out rollouts and their error against the reference."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from ..core import objective
from ..execution.fault_policy import retried
from .experiment import Experiment


def rollout(exp: Experiment, start: torch.Tensor, cases, steps: int, corrected: bool, seed: int = 0) -> torch.Tensor:
    """States ``[B, steps + 1, C, *S]`` from ``start``, with or without the learned correction."""
    return objective.rollout(exp.runner, exp.model, start, cases, exp.features(cases), steps, corrected, seed)


def mae_per_step(states: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """Mean absolute error ``[B, T]`` per case and time step (frame 0 excluded)."""
    return (states[:, 1:] - reference[:, 1:]).abs().flatten(2).mean(dim=2)


def _stats(errors: torch.Tensor) -> dict[str, Any]:
    per_case = errors.mean(dim=1)
    return {"mae_mean": float(per_case.mean()), "mae_std": float(per_case.std()) if len(per_case) > 1 else 0.0,
            "mae_per_case": per_case.tolist(), "mae_per_step": errors.mean(dim=0).tolist()}


@dataclass
class HeldOut:
    """Held-out rollouts: reference, uncorrected source solver and corrected solver, ``[B, T + 1, C, *S]``."""

    split: str
    cases: list
    reference: torch.Tensor
    src: torch.Tensor
    corrected: torch.Tensor
    extra: dict[str, Any] = field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        src = _stats(mae_per_step(self.src, self.reference))
        corrected = _stats(mae_per_step(self.corrected, self.reference))
        return {"split": self.split, "steps": self.reference.shape[1] - 1, "cases": [c.name for c in self.cases],
                "src": src, "corrected": corrected,
                "corrected_over_src": corrected["mae_mean"] / max(src["mae_mean"], 1e-300), **self.extra}


def held_out(exp: Experiment, split: str | None = None, steps: int | None = None) -> HeldOut:
    """The held-out rollouts of ``split`` over ``steps`` (default: the config's), as the
    experiment's coupling makes them."""
    split = split or exp.config.evaluation.split
    steps = steps or exp.config.evaluation.steps
    cases = exp.cases(split)
    reference = exp.reference(cases, steps)
    states = retried(lambda: exp.coupling.held_out(exp.runner, exp.model, cases, exp.features(cases), reference,
                                                   exp.config), exp.config.execution.faults)
    return HeldOut(split, cases, *states)


def evaluate(exp: Experiment, split: str | None = None, steps: int | None = None) -> dict[str, Any]:
    """MAE of the uncorrected source solver (``src``) and of the corrected one over a rollout
    from the reference's first frame, per case and per step."""
    return held_out(exp, split, steps).summary()
