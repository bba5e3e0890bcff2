"""Held-out rollouts and their error against the reference."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from .experiment import Experiment


@torch.no_grad()
def rollout(exp: Experiment, start: torch.Tensor, cases, steps: int, corrected: bool, seed: int = 0) -> torch.Tensor:
    """States ``[B, steps + 1, C, *S]`` from ``start``, with or without the learned correction."""
    features = exp.features(cases)
    frames, s = [start], start
    for t in range(steps):
        s = exp.runner(s, cases, seed + t)
        if corrected:
            s = s + exp.model(s, features)
        frames.append(s)
    return torch.stack(frames, dim=1)


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
    split = split or exp.config.evaluation.split
    steps = steps or exp.config.evaluation.steps
    cases = exp.cases(split)
    ref = exp.reference(cases, steps)
    if exp.config.objective.coupling == "model_then_simulator":
        return _inverse_held_out(exp, split, cases, ref)
    return HeldOut(split, cases, ref, rollout(exp, ref[:, 0], cases, steps, corrected=False),
                   rollout(exp, ref[:, 0], cases, steps, corrected=True))


@torch.no_grad()
def _inverse_held_out(exp: Experiment, split: str, cases, ref: torch.Tensor) -> HeldOut:
    """Model-then-simulator on held-out cases: every reference frame from k on is an observation x;
    ``corrected`` is what the code makes in k steps of the network's input ``x + model(x)``,
    ``src`` what it makes of ``x`` itself (no network). Frame j of each holds observation time
    k + j - 1 (frame 0: the initial states, shared). ``recovered_input`` compares the network's
    input with the states that did produce the observations."""
    k = exp.config.objective.simulator_steps
    n, times = len(cases), ref.shape[1] - k
    x = ref[:, k:].flatten(0, 1)
    rows = [c for c in cases for _ in range(times)]
    u = x + exp.model(x, exp.features(cases).repeat_interleave(times, dim=0))

    def code(s):
        for t in range(k):
            s = exp.runner(s, rows, t)
        return s.unflatten(0, (n, times))

    def with_start(frames):
        return torch.cat([ref[:, :1], frames], dim=1)

    truth = ref[:, :-k].flatten(0, 1)
    extra = {"recovered_input": {"corrected_mae": float((u - truth).abs().mean()),
                                 "observation_mae": float((x - truth).abs().mean())}, "simulator_steps": k}
    return HeldOut(split, cases, with_start(ref[:, k:]), with_start(code(x)), with_start(code(u)), extra)


def evaluate(exp: Experiment, split: str | None = None, steps: int | None = None) -> dict[str, Any]:
    """MAE of the uncorrected source solver (``src``) and of the corrected one over a rollout
    from the reference's first frame, per case and per step."""
    return held_out(exp, split, steps).summary()
