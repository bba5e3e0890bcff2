"""1D viscous Burgers' equation on a periodic domain: the fast built-in correction task.

    u_t + (u^2 / 2)_x = nu u_xx,   x in [0, 2 pi)

The step is a finite-volume scheme: MUSCL reconstruction with a minmod limiter (a
non-differentiable operation), a Rusanov flux, central diffusion and Heun (SSP-RK2) time
stepping. The source solver runs on ``resolution`` cells with one step per ``dt``; the reference
runs ``reference_factor`` times finer in space, with as many sub-steps as stability needs, and is
averaged back onto the source grid.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

import torch
from pydantic import Field, PositiveFloat

from ...plugins.base import PluginConfig
from ...plugins.reference import ReferenceSource
from ...plugins.simulator import Case, Simulator, StateSpec


class BurgersConfig(PluginConfig):
    kind: Literal["burgers"]
    resolution: int = Field(32, ge=8, description="cells of the source grid")
    reference_factor: int = Field(4, ge=1, description="refinement of the reference solver")
    dt: float = Field(0.05, gt=0, description="time step of the source solver")
    train_viscosities: list[PositiveFloat] = Field(default_factory=lambda: [0.01, 0.02, 0.04, 0.08], min_length=1)
    test_viscosities: list[PositiveFloat] = Field(default_factory=lambda: [0.015, 0.03, 0.06], min_length=1)
    modes: int = Field(3, ge=1, description="Fourier modes of the random initial condition")
    amplitude: float = Field(1.0, gt=0)


def _minmod(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return torch.where(a * b > 0, torch.sign(a) * torch.minimum(a.abs(), b.abs()), torch.zeros_like(a))


def burgers_rhs(u: torch.Tensor, nu: torch.Tensor, dx: float) -> torch.Tensor:
    """du/dt of the semi-discrete scheme for ``u`` ``[..., N]`` (periodic), ``nu`` broadcastable."""
    left, right = torch.roll(u, 1, -1), torch.roll(u, -1, -1)
    slope = _minmod(u - left, right - u)
    u_minus = u + 0.5 * slope  # state left of face i+1/2
    u_plus = torch.roll(u - 0.5 * slope, -1, -1)  # state right of face i+1/2
    speed = torch.maximum(u_minus.abs(), u_plus.abs())
    flux = 0.25 * (u_minus**2 + u_plus**2) - 0.5 * speed * (u_plus - u_minus)
    return -(flux - torch.roll(flux, 1, -1)) / dx + nu * (right - 2 * u + left) / dx**2


def heun_steps(u: torch.Tensor, nu: torch.Tensor, dx: float, dt: float, substeps: int) -> torch.Tensor:
    h = dt / substeps
    for _ in range(substeps):
        mid = u + h * burgers_rhs(u, nu, dx)
        u = 0.5 * (u + mid + h * burgers_rhs(mid, nu, dx))
    return u


class BurgersReference(ReferenceSource):
    """The high-fidelity mode: the same equation ``reference_factor`` times finer in space, with as
    many sub-steps as stability needs, averaged back onto the source grid; the cases are the
    configured viscosities, each with a random smooth initial profile of its own."""

    def cases(self) -> dict[str, list[Case]]:
        cfg = self.simulator.config
        return {
            split: [Case(f"{split}-nu{nu:g}", {"nu": nu, "seed": 1000 * (split == "test") + i})
                    for i, nu in enumerate(nus)]
            for split, nus in (("train", cfg.train_viscosities), ("test", cfg.test_viscosities))
        }

    def features(self, cases: Sequence[Case]) -> torch.Tensor:
        return torch.tensor([[math.log10(c.params["nu"])] for c in cases], device=self.device)

    def trajectories(self, cases: Sequence[Case], steps: int) -> torch.Tensor:
        sim = self.simulator
        cfg = sim.config
        fine_n = cfg.resolution * cfg.reference_factor
        u = sim.initial_states(cases, fine_n)
        nu = sim._nu(cases, u)
        substeps = sim._substeps(fine_n, float(nu.max()), cfg.dt)
        frames = [u]
        for _ in range(steps):
            u = heun_steps(u, nu, 2 * math.pi / fine_n, cfg.dt, substeps)
            frames.append(u)
        fine = torch.stack(frames, dim=1)  # [B, T+1, 1, fine_n]
        coarse = fine.reshape(*fine.shape[:-1], cfg.resolution, cfg.reference_factor).mean(-1)
        return coarse.to(dtype=torch.get_default_dtype(), device=self.device)


class Burgers(Simulator):
    Config = BurgersConfig
    differentiable = True  # pure torch; the limiter has a subgradient
    high_fidelity = BurgersReference

    @property
    def state_spec(self) -> StateSpec:
        return StateSpec(("u",), (self.config.resolution,))

    def _nu(self, cases: Sequence[Case], like: torch.Tensor) -> torch.Tensor:
        return torch.tensor([c.params["nu"] for c in cases], dtype=like.dtype, device=like.device)[:, None, None]

    def _substeps(self, n: int, nu_max: float, dt: float) -> int:
        dx = 2 * math.pi / n
        limit = min(0.4 * dx / (1.5 * self.config.amplitude), 0.4 * dx**2 / max(nu_max, 1e-12))
        return max(1, math.ceil(dt / limit))

    def step(self, state: torch.Tensor, cases: Sequence[Case], seed: int) -> torch.Tensor:
        n = self.config.resolution
        nu = self._nu(cases, state)
        substeps = self._substeps(n, float(nu.max()), self.config.dt)
        return heun_steps(state, nu, 2 * math.pi / n, self.config.dt, substeps)

    def initial_states(self, cases: Sequence[Case], n: int) -> torch.Tensor:
        """Random smooth profiles (seeded by each case) sampled at cell centres of an n-cell grid."""
        x = (torch.arange(n, dtype=torch.float64) + 0.5) * 2 * math.pi / n
        out = []
        for case in cases:
            g = torch.Generator().manual_seed(int(case.params["seed"]))
            coef = torch.randn(self.config.modes, generator=g, dtype=torch.float64)
            phase = 2 * math.pi * torch.rand(self.config.modes, generator=g, dtype=torch.float64)
            k = torch.arange(1, self.config.modes + 1, dtype=torch.float64)
            u = (coef[:, None] * torch.sin(k[:, None] * x + phase[:, None]) / k[:, None]).sum(0)
            out.append(self.config.amplitude * u / u.abs().max())
        return torch.stack(out)[:, None, :]
