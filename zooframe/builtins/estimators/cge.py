"""Coordinate-wise gradient estimation (CGE)."""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field

from ...plugins.base import PluginConfig
from ...plugins.estimator import NO_INPUTS, CoordinateQueries, Estimator, active_coordinates, usable_pairs


class CGEConfig(PluginConfig):
    kind: Literal["cge"]
    mu: float = Field(5e-3, gt=0, description="finite-difference step")
    scheme: Literal["forward", "central"] = Field(
        "forward", description="forward: d+1 queries, O(mu) bias; central: 2d queries, O(mu^2) bias"
    )


class CGE(Estimator):
    r"""Finite differences along each active coordinate i (the others get 0):

    forward:  g_i = (f(theta + mu e_i) - f(theta)) / mu
    central:  g_i = (f(theta + mu e_i) - f(theta - mu e_i)) / (2 mu)

    One query per active coordinate plus the centre (forward), or two per coordinate (central).

    Skipped queries (fault policy ``skip``): a coordinate whose query (forward) or either query
    (central) was skipped gets 0 for this step, the others are exact as above; no rescaling is
    needed, since each coordinate is estimated on its own. Without the centre (forward), there
    is no estimate.
    """

    Config = CGEConfig
    partial = True

    def ask(self, theta, generator, given=NO_INPUTS) -> CoordinateQueries:
        coords = active_coordinates(theta, given.mask)
        mu = torch.full(coords.shape, self.config.mu, dtype=theta.dtype, device=theta.device)
        if self.config.scheme == "forward":
            return CoordinateQueries(theta.detach(), mu, True, coords)
        return CoordinateQueries(theta.detach(), torch.cat([mu, -mu]), False, torch.cat([coords, coords]))

    def tell(self, queries: CoordinateQueries, values: torch.Tensor, usable=None) -> torch.Tensor | None:
        grad = torch.zeros_like(queries.center)
        if queries.with_center:
            if usable is not None and not usable[0]:
                return None
            keep = slice(None) if usable is None else usable[1:].to(values.device)
            grad[queries.coords[keep]] = ((values[1:] - values[0]) / queries.offsets)[keep]
        else:
            k = len(queries.offsets) // 2
            keep = usable_pairs(usable, k).to(values.device)
            grad[queries.coords[:k][keep]] = ((values[:k] - values[k:]) / (2 * queries.offsets[:k]))[keep]
        return grad
