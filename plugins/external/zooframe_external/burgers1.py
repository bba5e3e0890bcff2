"""The first-order Burgers scheme of the example solvers (``examples/burgers1d.c`` and
``examples/burgers1d.py``), in torch: the in-process reference the tests and the overhead
benchmark compare them with.

    u_t + (u^2 / 2)_x = nu u_xx on x in [0, 2 pi), periodic, N cells, dx = 2 pi / N

Rusanov flux on piecewise-constant reconstruction, central diffusion, forward Euler with
``n = max(1, ceil(dt / min(0.4 dx / max(max|u|, 1e-8), 0.4 dx dx / max(nu, 1e-12))))``
sub-steps of ``dt / n``, chosen per row (max|u| over all of the row's channels), so that rows
are independent. Each channel is advanced with the row's ``nu``.
"""

from __future__ import annotations

import math

import torch

CFL, SPEED_FLOOR, NU_FLOOR = 0.4, 1e-8, 1e-12
MAX_SUBSTEPS = 100000


def substeps(amax: float, nu: float, dx: float, dt: float) -> int:
    limit = min(CFL * dx / max(amax, SPEED_FLOOR), CFL * dx * dx / max(nu, NU_FLOOR))
    return max(1, math.ceil(dt / limit))


def euler_steps(u: torch.Tensor, nu: torch.Tensor, dx: float, h: float, n: int) -> torch.Tensor:
    """``n`` forward-Euler steps of size ``h``; ``u`` ``[B, C, N]``, ``nu`` ``[B, 1, 1]``."""
    for _ in range(n):
        right = torch.roll(u, -1, -1)
        flux = 0.25 * (u * u + right * right) - 0.5 * torch.maximum(u.abs(), right.abs()) * (right - u)  # face i+1/2
        left = torch.roll(u, 1, -1)
        u = u + h * (-(flux - torch.roll(flux, 1, -1)) / dx + nu * (right - 2.0 * u + left) / (dx * dx))
    return u


def step(u: torch.Tensor, nu, dt: float, max_substeps: int = MAX_SUBSTEPS) -> torch.Tensor:
    """One step of ``dt`` for ``u`` ``[B, C, N]`` (float64 advised), ``nu`` one value per row.
    Rows with the same number of sub-steps are advanced together."""
    if u.ndim != 3:
        raise ValueError(f"expected a state [B, C, N], got shape {tuple(u.shape)}")
    nu = torch.as_tensor(nu, dtype=u.dtype, device=u.device).reshape(-1)
    if (nu < 0).any():
        raise ValueError("nu must not be negative")
    dx = 2 * math.pi / u.shape[-1]
    amax = u.abs().flatten(1).amax(dim=1).tolist()
    counts = [substeps(a, v, dx, dt) for a, v in zip(amax, nu.tolist())]
    if max(counts, default=1) > max_substeps:
        raise ValueError(f"a row needs {max(counts)} sub-steps, more than {max_substeps}")
    out = torch.empty_like(u)
    for n in sorted(set(counts)):
        rows = torch.tensor([i for i, c in enumerate(counts) if c == n], device=u.device)
        out[rows] = euler_steps(u[rows], nu[rows, None, None], dx, dt / n, n)
    return out
