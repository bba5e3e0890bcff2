"""Randomized gradient estimation (RGE) along random directions."""

from __future__ import annotations

from typing import Literal

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
    pair_slopes,
)


class RGEConfig(PluginConfig):
    kind: Literal["rge"]
    mu: float = Field(5e-3, gt=0, description="smoothing radius / finite-difference step")
    q: int = Field(10, ge=1, description="number of random directions per estimate")
    distribution: Literal["gaussian", "sphere"] = "gaussian"
    scheme: Literal["forward", "central"] = Field(
        "forward", description="forward: q+1 queries; central (antithetic): 2q queries"
    )


class RGE(Estimator):
    r"""Random directions u_1..u_q over the k active coordinates (zero elsewhere):

    forward:  g = (s / q) sum_j (f(theta + mu u_j) - f(theta)) / mu * u_j
    central:  g = (s / q) sum_j (f(theta + mu u_j) - f(theta - mu u_j)) / (2 mu) * u_j

    gaussian: u ~ N(0, I_k), s = 1; the mean is the gradient of the Gaussian smoothing
              f_mu(theta) = E[f(theta + mu u)].
    sphere:   u uniform on the unit sphere of R^k, s = k; the mean is the gradient of the
              smoothing over the ball of radius mu.
    Both are unbiased for the smoothed gradient; the variance shrinks as 1/q.

    Skipped queries (fault policy ``skip``): the sums run over the q' directions whose query
    (forward) or pair (central) was kept, divided by q' instead of q. When faults do not depend
    on the direction drawn (a crash, a lost licence), the kept directions are still i.i.d. and the
    estimate stays unbiased, with the variance of q' directions; when they do (a code that diverges
    along steep directions), dropping them biases the estimate away from those directions. Without the centre (forward), or with q' = 0,
    there is no estimate.
    """

    Config = RGEConfig
    partial = True

    def ask(self, theta, generator, given=NO_INPUTS) -> DirectionQueries:
        coords = active_coordinates(theta, given.mask)
        cfg = self.config
        u = torch.randn(cfg.q, len(coords), generator=generator, dtype=theta.dtype, device=generator.device)
        u = u.to(theta.device)
        if cfg.distribution == "sphere":
            u = u / u.norm(dim=1, keepdim=True)
        directions = on_coordinates(u, coords, theta)
        if cfg.scheme == "forward":
            mu = torch.full((cfg.q,), cfg.mu, dtype=theta.dtype, device=theta.device)
            return DirectionQueries(theta.detach(), mu, True, directions)
        return antithetic(theta, directions, cfg.mu)

    def tell(self, queries: DirectionQueries, values: torch.Tensor, usable=None) -> torch.Tensor | None:
        q = self.config.q
        directions = queries.directions[:q]
        scale = 1.0
        if self.config.distribution == "sphere":
            scale = float((directions != 0).any(dim=0).sum())
        if queries.with_center:
            if usable is not None and not usable[0]:
                return None
            keep = torch.ones(q, dtype=torch.bool) if usable is None else usable[1:]
            slopes = (values[1:] - values[0]) / queries.offsets
        else:
            slopes, keep = pair_slopes(queries, values, usable)
        kept = int(keep.sum())
        if kept == 0:
            return None
        keep = keep.to(values.device)
        return scale / kept * (slopes[keep] @ directions[keep])
