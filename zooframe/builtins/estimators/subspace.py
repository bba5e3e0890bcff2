"""Directional derivatives along the span of the loss terms' surrogate gradients."""

from __future__ import annotations

from typing import ClassVar, Literal

import torch
from pydantic import Field

from ...plugins.base import PluginConfig
from ...plugins.estimator import (
    NO_INPUTS,
    DirectionQueries,
    Estimator,
    active_coordinates,
    antithetic,
    on_coordinates,
    orthonormal_basis,
    pair_slopes,
)


class SubspaceConfig(PluginConfig):
    kind: Literal["subspace"]
    mu: float = Field(0.01, gt=0, description="central-difference step along each unit-length basis direction")


class Subspace(Estimator):
    r"""The true gradient's projection onto the span of the surrogate gradients of the loss's terms.

    The trainer hands over ``StepInputs.surrogates`` ``[m, d]``: the free, biased gradient of each
    term of the loss (one per unrolled step of a correction objective, from one rollout with the
    simulator's Jacobian dropped or taken as the identity, ``training.solver_jacobian``). With U
    (n x r) an orthonormal basis of their span over the n active coordinates (r <= m; dependent or
    zero surrogates add no direction):

        g = sum_i u_i (f(theta + mu u_i) - f(theta - mu u_i)) / (2 mu) = U U^T grad f + O(mu^2)

    2r queries. Every number in g is a difference of the objective's values; the surrogates only
    choose the r directions, so g has no variance, and its only bias is the part of the true
    gradient outside their span, -(I - U U^T) grad f: its cosine to the gradient is
    |U U^T grad f| / |grad f|. A term's surrogate misses the solver's Jacobian over the steps
    before it, so the later terms' surrogates are biased differently from the earlier ones and
    their span holds more of the gradient than their sum (the plain surrogate) does; the
    estimate also measures how far along each direction the loss really falls. An objective with
    one term gives the gradient's component along its surrogate.

    Skipped queries (fault policy ``skip``): a direction whose pair lost a query adds nothing;
    the estimate is the projection onto the span of the kept directions (exact there). With every
    pair lost there is no estimate.
    """

    Config = SubspaceConfig
    partial = True
    inputs: ClassVar[frozenset[str]] = frozenset({"mask", "surrogates"})

    def ask(self, theta, generator, given=NO_INPUTS) -> DirectionQueries:
        if given.surrogates is None:
            raise ValueError("the subspace estimator needs StepInputs.surrogates (the loss terms' surrogate gradients)")
        coords = active_coordinates(theta, given.mask)
        basis = orthonormal_basis(given.surrogates.detach().to(theta)[:, coords].T)  # [n, r]
        return antithetic(theta, on_coordinates(basis.T, coords, theta), self.config.mu)

    def tell(self, queries: DirectionQueries, values: torch.Tensor, usable=None) -> torch.Tensor | None:
        slopes, keep = pair_slopes(queries, values.to(queries.center), usable)
        if not keep.any():
            return None
        slopes = torch.where(keep, slopes, torch.zeros_like(slopes))  # a skipped NaN times 0 is NaN
        return slopes @ queries.directions[: len(slopes)]
