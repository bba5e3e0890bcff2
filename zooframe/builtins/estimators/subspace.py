"""Directional derivatives along the span of the loss terms' surrogate gradients."""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field

from ...plugins.base import PluginConfig
from ...plugins.estimator import NO_INPUTS, Estimator, active_coordinates, on_coordinates, orthonormal_basis
from .differences import DifferenceQueries, Scheme, combine, differences, scheme_field


class SubspaceConfig(PluginConfig):
    kind: Literal["subspace"]
    mu: float = Field(0.01, gt=0, description="finite-difference step along each unit-length basis direction; with "
                      "scheme forward keep it small (0.001 at 47k parameters): its bias is the loss's curvature along "
                      "the surrogates, which outgrows the slope there late in training; larger only against a noisy code")
    scheme: Scheme = scheme_field("central")


class Subspace(Estimator):
    r"""The true gradient's projection onto the span of the surrogate gradients of the loss's terms.

    The trainer hands over ``StepInputs.surrogates`` ``[m, d]``: the free, biased gradient of each
    term of the loss (one per unrolled step of a correction objective, from one rollout with the
    simulator's Jacobian dropped or taken as the identity, ``training.solver_jacobian``; ``both``
    hands over both sets, ``[2m, d]``, whose span holds more of the gradient). With U (n x r) an
    orthonormal basis of their span over the n active coordinates (r <= m, or 2m - 1 with both;
    dependent or zero surrogates add no direction):

        central:  g = sum_i u_i (f(theta + mu u_i) - f(theta - mu u_i)) / (2 mu) = U U^T grad f + O(mu^2)
        forward:  g = sum_i u_i (f(theta + mu u_i) - f(theta)) / mu             = U U^T grad f + O(mu)

    central: 2r queries; forward: r queries, from f(theta) as the surrogates' rollout computed it
    (``StepInputs.loss``), so a step runs r + 1 rollouts instead of 2r + 1. The finite-difference
    bias along u_i is mu^2/6 times the third derivative (central) and mu/2 u_i^T H u_i (forward),
    H the loss's Hessian. The surrogate directions are among the loss's most curved, and as training
    ends the slope along them shrinks while the curvature does not, so the forward bias can swamp it:
    at the end of training the book-sized ResNet on the Karman task (47k parameters) had forward
    estimates at mu 0.01 pointing away from the gradient, and at mu 0.001 near the projection's
    cosine (``benchmarks/karman_resnet.py --probe-mu``). Take mu small for forward differences, as far
    as the code's output noise allows (a difference of two losses must stand above it).

    Every number in g is a difference of the objective's values; the surrogates only choose the r
    directions, so g has no variance, and its only bias beyond the finite differences' is the part
    of the true gradient outside their span, -(I - U U^T) grad f: its cosine to the gradient is
    |U U^T grad f| / |grad f|. A term's surrogate misses the solver's Jacobian over the steps
    before it, so the later terms' surrogates are biased differently from the earlier ones and
    their span holds more of the gradient than their sum (the plain surrogate) does; the
    estimate also measures how far along each direction the loss really falls. An objective with
    one term gives the gradient's component along its surrogate.

    Skipped queries (fault policy ``skip``): a direction whose query (forward) or either query of
    whose pair (central) was lost adds nothing;
    the estimate is the projection onto the span of the kept directions (exact there). With every
    pair lost there is no estimate.
    """

    Config = SubspaceConfig
    partial = True

    @property
    def inputs(self) -> frozenset[str]:
        return frozenset({"mask", "surrogates"} | ({"loss"} if self.config.scheme == "forward" else set()))

    def ask(self, theta, generator, given=NO_INPUTS) -> DifferenceQueries:
        if given.surrogates is None:
            raise ValueError("the subspace estimator needs StepInputs.surrogates (the loss terms' surrogate gradients)")
        coords = active_coordinates(theta, given.mask)
        basis = orthonormal_basis(given.surrogates.detach().to(theta)[:, coords].T)  # [n, r]
        return differences(theta, on_coordinates(basis.T, coords, theta), self.config.mu, self.config.scheme, given)

    def tell(self, queries: DifferenceQueries, values: torch.Tensor, usable=None) -> torch.Tensor | None:
        return combine(queries, values, usable, self.config.scheme)
