"""Held-out rollouts and their error against the reference."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from ..core import objective
from ..core.metrics import per_channel_step, per_step
from ..execution.fault_policy import retried
from ..plugins import stops
from ..plugins.errors import ZooframeError
from .experiment import Experiment


def rollout(exp: Experiment, start: torch.Tensor, cases, steps: int, corrected: bool, seed: int = 0) -> torch.Tensor:
    """States ``[B, steps + 1, C, *S]`` from ``start``, with or without the learned correction."""
    return objective.rollout(exp.runner, exp.model, start, cases, exp.features(cases), steps, corrected, seed)


def mae_per_step(states: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """Mean absolute error ``[B, T]`` per case and time step (frame 0 excluded)."""
    return per_step("mae", states, reference)


def _stats(errors: torch.Tensor, prefix: str = "") -> dict[str, Any]:
    """Over steps, then cases, of ``errors`` ``[B, T]``: ``mean``, ``std`` (over cases),
    ``per_case``, ``per_step``, each key after ``prefix``."""
    per_case = errors.mean(dim=1)
    return {f"{prefix}mean": float(per_case.mean()), f"{prefix}std": float(per_case.std()) if len(per_case) > 1 else 0.0,
            f"{prefix}per_case": per_case.tolist(), f"{prefix}per_step": errors.mean(dim=0).tolist()}


def metric_stats(name: str, states: torch.Tensor, reference: torch.Tensor, channels: Sequence[str]) -> dict[str, Any]:
    """Metric ``name`` of ``states`` against ``reference`` (:mod:`zooframe.core.metrics`): as
    :func:`_stats`, and per channel its mean and per-case values."""
    per_channel = per_channel_step(name, states, reference).mean(dim=1)  # [B, C]
    return {**_stats(per_step(name, states, reference)),
            "per_channel": {c: {"mean": float(per_channel[:, i].mean()), "per_case": per_channel[:, i].tolist()}
                            for i, c in enumerate(channels)}}


@dataclass
class HeldOut:
    """Held-out rollouts: reference, uncorrected source solver and corrected solver, ``[B, T + 1, C, *S]``."""

    split: str
    cases: list
    reference: torch.Tensor
    src: torch.Tensor
    corrected: torch.Tensor
    extra: dict[str, Any] = field(default_factory=dict)
    metrics: Sequence[str] = ("mae",)  # evaluation.metrics: the first is the headline
    channels: Sequence[str] = ()  # the state's channel names

    def summary(self) -> dict[str, Any]:
        """MAE as ``src`` and ``corrected`` (``mae_mean``, ...), every metric under ``metrics``, and
        the ``headline`` metric's means; ``corrected_over_src`` is the headline's ratio."""
        src = _stats(mae_per_step(self.src, self.reference), "mae_")
        corrected = _stats(mae_per_step(self.corrected, self.reference), "mae_")
        channels = self.channels or [str(c) for c in range(self.reference.shape[2])]
        scores = {name: {"src": metric_stats(name, self.src, self.reference, channels),
                         "corrected": metric_stats(name, self.corrected, self.reference, channels)}
                  for name in self.metrics}
        head = self.metrics[0]
        h_src, h_corrected = scores[head]["src"]["mean"], scores[head]["corrected"]["mean"]
        headline = {"metric": head, "src": h_src, "corrected": h_corrected,
                    "corrected_over_src": h_corrected / max(h_src, 1e-300)}
        return {"split": self.split, "steps": self.reference.shape[1] - 1, "cases": [c.name for c in self.cases],
                "src": src, "corrected": corrected, "corrected_over_src": headline["corrected_over_src"],
                "headline": headline, "metrics": scores, **self.extra}


def headline(evaluation: dict[str, Any]) -> dict[str, Any]:
    """An evaluation's headline metric: ``{"metric", "src", "corrected", "corrected_over_src"}`` (the
    first of ``evaluation.metrics``; MAE in a summary written before metrics could be chosen)."""
    if "headline" in evaluation:
        return evaluation["headline"]
    return {"metric": "mae", "src": evaluation["src"]["mae_mean"], "corrected": evaluation["corrected"]["mae_mean"],
            "corrected_over_src": evaluation["corrected_over_src"]}


def held_out(exp: Experiment, split: str | None = None, steps: int | None = None) -> HeldOut:
    """The held-out rollouts of ``split`` over ``steps`` (default: the config's), as the
    experiment's coupling makes them."""
    split = split or exp.config.evaluation.split
    steps = steps or exp.config.evaluation.steps
    cases = exp.cases(split)
    reference = exp.reference(cases, steps)
    try:
        states = retried(lambda: exp.coupling.held_out(exp.runner, exp.model, cases, exp.features(cases), reference,
                                                       exp.config), exp.config.execution.faults)
    except Exception as exc:  # the stage and the cases, with the code's message
        stops.raise_if_requested(exc)
        raise ZooframeError(f"simulator {exp.config.simulator.kind!r} failed in the held-out rollouts ({steps} steps "
                            f"of the {split!r} cases {', '.join(c.name for c in cases)}): {type(exc).__name__}: "
                            f"{exc}") from exc
    return HeldOut(split, cases, *states, metrics=exp.config.evaluation.metrics,
                   channels=exp.simulator.state_spec.channels)


def evaluate(exp: Experiment, split: str | None = None, steps: int | None = None) -> dict[str, Any]:
    """The errors (``evaluation.metrics``, and MAE) of the uncorrected source solver (``src``) and
    of the corrected one over a rollout from the reference's first frame, per case and per step."""
    return held_out(exp, split, steps).summary()
