"""Surrogate-guided random search (Guided ES, Maheswaranathan et al., ICML 2019)."""

from __future__ import annotations

from collections import deque
from typing import Literal

import torch
from pydantic import Field

from ...plugins.base import PluginConfig
from ...plugins.estimator import NO_INPUTS, Estimator, active_coordinates, on_coordinates, orthonormal_basis
from .differences import DifferenceQueries, Scheme, combine, differences, scheme_field


class GuidedConfig(PluginConfig):
    kind: Literal["guided"]
    alpha: float = Field(0.5, ge=0, le=1, description="weight of the isotropic part of the search covariance "
                         "(1: plain antithetic random search; 0: the surrogate subspace only)")
    k: int = Field(1, ge=1, description="surrogate gradients kept: the guiding subspace's dimension")
    q: int = Field(16, ge=1, description="directions per estimate (central: 2q queries, forward: q)")
    mu: float = Field(0.01, gt=0, description="finite-difference step; directions have unit length in "
                      "expectation, so queries lie about mu from theta")
    scheme: Scheme = scheme_field("central")


class Guided(Estimator):
    r"""Antithetic random search in a covariance that favours the span of recent surrogate gradients.

    Over the n active coordinates, with U (n x k) an orthonormal basis of the last k surrogates
    (the trainer's free, biased gradient; ``StepInputs.surrogate``) and P = U U^T:

        Sigma   = (alpha / n) I + ((1 - alpha) / k) P           (Guided ES; E|eps|^2 = 1)
        eps_j   = sqrt(alpha / n) z_j + sqrt((1 - alpha) / k) U w_j,   z_j ~ N(0, I_n), w_j ~ N(0, I_k)
        g       = beta / q * sum_j (f(theta + mu eps_j) - f(theta - mu eps_j)) / (2 mu) * eps_j   (central)
        g       = beta / q * sum_j (f(theta + mu eps_j) - f(theta)) / mu * eps_j                 (forward)
        beta    = 1 / (alpha / n + (1 - alpha) / k)

    central: 2q queries (antithetic pairs); forward: q queries, from f(theta) as the surrogate's
    rollout computed it (``StepInputs.loss``). To first order in mu, E[g] = beta Sigma grad f = P grad f + alpha' (I - P) grad f
    with alpha' = beta alpha / n: the component of the true gradient in the surrogate subspace is
    estimated without bias, the rest is shrunk by alpha' (the bias is -(1 - alpha')(I - P) grad f;
    central differences add O(mu^2), forward ones O(mu): mu/2 eps^T H eps along each direction, H
    the loss's Hessian; and forward differences add variance, since f(theta)'s share of each
    difference does not cancel between a pair). alpha = 1 is plain antithetic Gaussian RGE (with
    directions scaled by 1/sqrt(n)). The surrogate only chooses where to look: every number in g
    comes from the objective's values. The variance shrinks as 1/q. A surrogate that is zero
    adds nothing to the subspace (then the search is isotropic).

    Skipped queries (fault policy ``skip``): the sum runs over the q' directions whose query
    (forward) or two queries (central) were kept, divided by q' instead of q. When faults do not depend on the directions drawn,
    E[g] is unchanged and the variance is that of q' pairs; when they do (divergence along steep
    directions), dropping those pairs biases the estimate away from them. With q' = 0
    there is no estimate.
    """

    Config = GuidedConfig
    partial = True

    @property
    def inputs(self) -> frozenset[str]:
        return frozenset({"mask", "surrogate"} | ({"loss"} if self.config.scheme == "forward" else set()))

    def __init__(self, config: GuidedConfig):
        super().__init__(config)
        self.history: deque[torch.Tensor] = deque(maxlen=config.k)

    def state_dict(self) -> dict:
        return {"history": list(self.history)}

    def load_state_dict(self, state: dict) -> None:
        self.history.clear()
        self.history.extend(state["history"])

    def ask(self, theta, generator, given=NO_INPUTS) -> DifferenceQueries:
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
        return differences(theta, on_coordinates(eps, coords, theta), cfg.mu, cfg.scheme, given, beta / cfg.q)

    def tell(self, queries: DifferenceQueries, values: torch.Tensor, usable=None) -> torch.Tensor | None:
        return combine(queries, values, usable, self.config.scheme, average=True)
