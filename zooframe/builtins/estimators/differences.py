"""Finite differences along given directions, central or forward: what the subspace and guided
estimators share."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from pydantic import Field

from ...plugins.estimator import DirectionQueries, StepInputs, antithetic, pair_slopes

Scheme = Literal["central", "forward"]


def scheme_field(default: Scheme):
    return Field(default, description="central: 2 queries a direction, O(mu^2) bias; forward: 1 query a direction, "
                 "from the loss at theta that the surrogates' rollout gives (StepInputs.loss), O(mu) bias")


@dataclass(frozen=True)
class DifferenceQueries(DirectionQueries):
    """Queries along k directions v_j for the estimate ``sum_j scale[j] * slope_j * v_j``: central
    (queries j and j + k at ``theta +- mu v_j``) or forward (query j at ``theta + mu v_j``, from
    ``base`` = f(theta), the loss that came with the step, not a query). ``scale`` and ``base``
    hold one entry per query, so that subsets slice them with the rest."""

    scale: torch.Tensor
    base: torch.Tensor


def differences(theta: torch.Tensor, directions: torch.Tensor, mu: float, scheme: Scheme, given: StepInputs,
                scale: float = 1.0) -> DifferenceQueries:
    """The queries of ``scheme`` along ``directions`` ``[k, d]``; forward needs ``given.loss``."""
    k = len(directions)
    if scheme == "central":
        pairs = antithetic(theta, directions, mu)
        base = torch.zeros(2 * k, dtype=theta.dtype, device=theta.device)
        return DifferenceQueries(pairs.center, pairs.offsets, False, pairs.directions, base + scale, base)
    if given.loss is None:
        raise ValueError("forward differences need StepInputs.loss (the loss at theta, from the surrogates' rollout)")
    base = torch.full((k,), float(given.loss), dtype=theta.dtype, device=theta.device)
    step = torch.full((k,), mu, dtype=theta.dtype, device=theta.device)
    return DifferenceQueries(theta.detach(), step, False, directions, torch.full_like(step, scale), base)


def combine(queries: DifferenceQueries, values: torch.Tensor, usable: torch.Tensor | None,
            scheme: Scheme, average: bool = False) -> torch.Tensor | None:
    """``sum_j scale[j] * slope_j * v_j`` over the directions whose queries (central: both of the
    pair) are usable, times k / k' with ``average`` (k' of the k kept); None when none is."""
    values = values.to(queries.center)
    if scheme == "central":
        slopes, keep = pair_slopes(queries, values, usable)
    else:
        slopes = (values - queries.base) / queries.offsets
        keep = torch.ones_like(slopes, dtype=torch.bool) if usable is None else usable.to(slopes.device)
    kept = int(keep.sum())
    if not kept:
        return None
    k = len(slopes)
    weights = queries.scale[:k] * (k / kept if average else 1.0)
    slopes = torch.where(keep, slopes * weights, torch.zeros_like(slopes))  # a skipped NaN times 0 is NaN
    return slopes @ queries.directions[:k]
