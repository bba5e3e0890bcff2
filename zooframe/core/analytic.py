"""Analytic batched objectives ``f(thetas [Q, d]) -> [Q]`` with known gradients, for testing
estimators and trying the framework without a simulator."""

from __future__ import annotations

import torch


def rosenbrock(thetas: torch.Tensor) -> torch.Tensor:
    x, y = thetas[:, :-1], thetas[:, 1:]
    return (100 * (y - x**2) ** 2 + (1 - x) ** 2).sum(dim=1)


def sum_sin(thetas: torch.Tensor) -> torch.Tensor:
    """Its Gaussian smoothing with radius mu is ``exp(-mu^2 / 2) * sum_sin``."""
    return torch.sin(thetas).sum(dim=1)


class Quadratic:
    """``0.5 theta' A theta + b' theta`` with a random positive definite A."""

    def __init__(self, dim: int, seed: int = 0, dtype: torch.dtype = torch.float64):
        g = torch.Generator().manual_seed(seed)
        m = torch.randn(dim, dim, generator=g, dtype=dtype)
        self.a = m @ m.T / dim + torch.eye(dim, dtype=dtype)
        self.b = torch.randn(dim, generator=g, dtype=dtype)

    def __call__(self, thetas: torch.Tensor) -> torch.Tensor:
        return 0.5 * ((thetas @ self.a) * thetas).sum(dim=1) + thetas @ self.b

    def gradient(self, theta: torch.Tensor) -> torch.Tensor:
        return self.a @ theta + self.b
