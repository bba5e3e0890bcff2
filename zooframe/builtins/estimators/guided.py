"""Surrogate-guided random search (Guided ES, Maheswaranathan et al., ICML 2019)."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import ClassVar, Literal

import torch
from pydantic import Field

from ...plugins.base import PluginConfig
from ...plugins.estimator import (
    NO_INPUTS,
    DirectionQueries,
    Estimator,
    active_coordinates,
    on_coordinates,
    orthonormal_basis,
    usable_pairs,
)


class GuidedConfig(PluginConfig):
    kind: Literal["guided"]
    alpha: float = Field(0.5, ge=0, le=1, description="weight of the isotropic part of the search covariance "
                         "(1: plain antithetic random search; 0: the surrogate subspace only)")
    k: int = Field(1, ge=1, description="surrogate gradients kept: the guiding subspace's dimension")
    q: int = Field(16, ge=1, description="antithetic pairs of directions per estimate (2q queries)")
    mu: float = Field(0.01, gt=0, description="finite-difference step; directions have unit length in "
                      "expectation, so queries lie about mu from theta")


@dataclass(frozen=True)
class WeightedDirectionQueries(DirectionQueries):
    """Direction queries whose estimate is ``sum_j weights[j] * f_j * directions[j]``."""

    weights: torch.Tensor  # [k]


class Guided(Estimator):
    r"""Antithetic random search in a covariance that favours the span of recent surrogate gradients.

    Over the n active coordinates, with U (n x k) an orthonormal basis of the last k surrogates
    (the trainer's free, biased gradient; ``StepInputs.surrogate``) and P = U U^T:

        Sigma   = (alpha / n) I + ((1 - alpha) / k) P           (Guided ES; E|eps|^2 = 1)
        eps_j   = sqrt(alpha / n) z_j + sqrt((1 - alpha) / k) U w_j,   z_j ~ N(0, I_n), w_j ~ N(0, I_k)
        g       = beta / q * sum_j (f(theta + mu eps_j) - f(theta - mu eps_j)) / (2 mu) * eps_j
        beta    = 1 / (alpha / n + (1 - alpha) / k)

    2q queries. To first order in mu, E[g] = beta Sigma grad f = P grad f + alpha' (I - P) grad f
    with alpha' = beta alpha / n: the component of the true gradient in the surrogate subspace is
    estimated without bias, the rest is shrunk by alpha' (the bias is -(1 - alpha')(I - P) grad f;
    central differences add O(mu^2)). alpha = 1 is plain antithetic Gaussian RGE (with
    directions scaled by 1/sqrt(n)). The surrogate only chooses where to look: every number in g
    comes from the objective's values. The variance shrinks as 1/q. A surrogate that is zero
    adds nothing to the subspace (then the search is isotropic).

    Skipped queries (fault policy ``skip``): the sum runs over the q' pairs whose two queries
    were kept, divided by q' instead of q. When faults do not depend on the directions drawn,
    E[g] is unchanged and the variance is that of q' pairs; when they do (divergence along steep
    directions), dropping those pairs biases the estimate away from them. With q' = 0
    there is no estimate.
    """

    Config = GuidedConfig
    partial = True
    inputs: ClassVar[frozenset[str]] = frozenset({"mask", "surrogate"})

    def __init__(self, config: GuidedConfig):
        super().__init__(config)
        self.history: deque[torch.Tensor] = deque(maxlen=config.k)

    def state_dict(self) -> dict:
        return {"history": list(self.history)}

    def load_state_dict(self, state: dict) -> None:
        self.history.clear()
        self.history.extend(state["history"])

    def ask(self, theta, generator, given=NO_INPUTS) -> WeightedDirectionQueries:
        if given.surrogate is None:
            raise ValueError("the guided estimator needs StepInputs.surrogate (a surrogate gradient at theta)")
        cfg = self.config
        self.history.append(given.surrogate.detach().to(theta))
        coords = active_coordinates(theta, given.mask)
        n = len(coords)
        basis = orthonormal_basis(torch.stack([s[coords] for s in self.history], dim=1))  # [n, k']
        k = basis.shape[1]
        alpha = cfg.alpha if k else 1.0  # no subspace yet (a zero surrogate): isotropic search
        z = torch.randn(cfg.q, n, generator=generator, dtype=theta.dtype, device=generator.device).to(theta.device)
        eps = (alpha / n) ** 0.5 * z
        beta = float(n)
        if k:
            w = torch.randn(cfg.q, k, generator=generator, dtype=theta.dtype, device=generator.device)
            eps = eps + ((1 - alpha) / k) ** 0.5 * w.to(theta.device) @ basis.T
            beta = 1.0 / (alpha / n + (1 - alpha) / k)
        directions = on_coordinates(eps, coords, theta)
        mu = torch.full((cfg.q,), cfg.mu, dtype=theta.dtype, device=theta.device)
        weight = torch.full((cfg.q,), beta / (2 * cfg.mu * cfg.q), dtype=theta.dtype, device=theta.device)
        return WeightedDirectionQueries(theta.detach(), torch.cat([mu, -mu]), False,
                                        torch.cat([directions, directions]), torch.cat([weight, -weight]))

    def tell(self, queries: WeightedDirectionQueries, values: torch.Tensor, usable=None) -> torch.Tensor | None:
        weights = queries.weights
        if usable is not None:
            q = len(weights) // 2
            keep = usable_pairs(usable, q)
            if not keep.any():
                return None
            keep = torch.cat([keep, keep]).to(weights.device)
            weights = torch.where(keep, weights * (q / int(keep.sum() // 2)), torch.zeros_like(weights))
            values = torch.where(keep, values.to(weights), torch.zeros_like(weights))  # a skipped NaN times 0 is NaN
        return (weights * values.to(weights)) @ queries.directions

