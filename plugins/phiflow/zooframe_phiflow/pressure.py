"""An exact pressure projection: a fast direct solve instead of CG iterations.

Around a fixed obstacle the pressure matrix depends only on the grid. Away from the obstacle it is
the five-point Laplacian of the box with zero pressure outside, which the discrete sine transform
diagonalizes; the obstacle changes only the rows and columns of the k cells in and next to it. So
``A = L + U`` with ``U`` confined to those cells, and by the Woodbury identity (the capacitance
matrix method)

    A^-1 b = y - L^-1 P U_k (I + G U_k)^-1 y_k,   y = L^-1 b,   G = (L^-1)_kk,

a sine-transform solve plus a rank-k correction, both precomputed once in float64. The steps
around the solve are PhiFlow's ``fluid.make_incompressible`` for a stationary obstacle in a box
with zero-gradient velocity boundaries; a test holds the two to the same result.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
import torch
from phi.math import NUMPY
from phi.torch.flow import (
    ZERO_GRADIENT,
    Box,
    CenteredGrid,
    Field,
    Obstacle,
    StaggeredGrid,
    batch,
    extrapolation,
    field,
    fluid,
    math,
    spatial,
)


def _sine_basis(n: int) -> np.ndarray:
    """The orthonormal DST-I matrix: symmetric, its own inverse, the eigenvectors of tridiag(1, -2, 1)."""
    j = np.arange(1, n + 1)
    return np.sqrt(2 / (n + 1)) * np.sin(np.pi * np.outer(j, j) / (n + 1))


def _second_difference(n: int, h: float) -> tuple[sp.spmatrix, np.ndarray]:
    """tridiag(1, -2, 1) / h^2 with zero outside, and its eigenvalues in the order of the DST-I."""
    matrix = sp.diags([np.ones(n - 1), -2 * np.ones(n), np.ones(n - 1)], [-1, 0, 1]) / h ** 2
    return matrix, (2 * np.cos(np.pi * np.arange(1, n + 1) / (n + 1)) - 2) / h ** 2


class ObstaclePoissonSolver:
    """``x = A^-1 b`` for a batch ``b [R, X, Y]``, ``A`` the pressure matrix (SciPy, cells in x-major order)."""

    def __init__(self, matrix: sp.spmatrix, nx: int, ny: int, dx: float, dy: float):
        dxx, ex = _second_difference(nx, dx)
        dyy, ey = _second_difference(ny, dy)
        box = sp.kron(dxx, sp.identity(ny)) + sp.kron(sp.identity(nx), dyy)
        change = sp.csr_matrix(matrix - box)
        change.data[np.abs(change.data) <= 1e-12 * np.abs(box.data).max()] = 0
        change.eliminate_zeros()
        cells = np.unique(change.nonzero()[0])  # A and the box Laplacian are symmetric: rows = columns
        self._f64 = {"sx": torch.from_numpy(_sine_basis(nx)), "sy": torch.from_numpy(_sine_basis(ny)),
                     "eigenvalues": torch.from_numpy(ex[:, None] + ey[None, :]), "cells": torch.from_numpy(cells)}
        k = len(cells)
        unit = torch.zeros(k, nx * ny, dtype=torch.float64)
        unit[torch.arange(k), self._f64["cells"]] = 1
        columns = self._box_solve(unit.view(k, nx, ny), self._f64).reshape(k, -1)  # rows of L^-1 at the cells
        local = torch.from_numpy(change[cells][:, cells].toarray())
        capacitance = torch.eye(k, dtype=torch.float64) + columns[:, self._f64["cells"]] @ local
        self._f64["correction"] = torch.linalg.solve(capacitance.T, local.T)  # (U_k (I + G U_k)^-1)^T
        self._f64["columns"] = columns
        self._cache = {(torch.float64, torch.device("cpu")): self._f64}
        self.cells = k

    @staticmethod
    def _box_solve(b: torch.Tensor, t: dict) -> torch.Tensor:
        return t["sx"] @ ((t["sx"] @ b @ t["sy"]) / t["eigenvalues"]) @ t["sy"]

    def tensors(self, like: torch.Tensor) -> dict:
        """The precomputed operators in ``like``'s dtype and on its device (cached)."""
        key = (like.dtype, like.device)
        if key not in self._cache:
            self._cache[key] = {name: t.to(like.device) if name == "cells" else t.to(like.device, like.dtype)
                                for name, t in self._f64.items()}
        return self._cache[key]

    def __call__(self, b: torch.Tensor) -> torch.Tensor:
        t = self.tensors(b)
        y = self._box_solve(b, t).flatten(1)
        return (y - (y[:, t["cells"]] @ t["correction"]) @ t["columns"]).view_as(b)


class DirectProjection:
    """``v -> (v - grad p, p)`` on an ``nx x ny`` grid over the box ``size``, with ``p`` from
    :class:`ObstaclePoissonSolver`."""

    def __init__(self, size: tuple[float, float], nx: int, ny: int, obstacle: Obstacle):
        self.obstacle = obstacle
        with math.precision(64), NUMPY:  # float64 throughout, the masks as make_incompressible builds them
            template = StaggeredGrid(0, ZERO_GRADIENT, Box(x=size[0], y=size[1]), x=nx, y=ny)
            accessible = Field(template.geometry, ~obstacle.geometry, extrapolation.ONE)  # zero-gradient walls
            self.hard_bcs = field.stagger(accessible, math.minimum, template.boundary, at=template.sampled_at,
                                          dims=template.vector.item_names)
            self.active = accessible.with_extrapolation(extrapolation.NONE)
            pressure = CenteredGrid(0, extrapolation.ZERO, template.bounds, x=nx, y=ny)
            matrix, _ = math.matrix_from_function(fluid.masked_laplace, pressure, template.boundary,
                                                  self.hard_bcs, self.active, wide_stencil=False, order=2,
                                                  implicit=None, upwind=None, correct_skew=False)
            matrix = matrix.native()  # inside: PhiFlow converts to the current precision
        self.pressure = CenteredGrid(0, extrapolation.ZERO, Box(x=size[0], y=size[1]), x=nx, y=ny)
        self.solver = ObstaclePoissonSolver(matrix, nx, ny, size[0] / nx, size[1] / ny)

    def __call__(self, v: StaggeredGrid) -> tuple[StaggeredGrid, CenteredGrid]:
        boundary = v.extrapolation
        v = fluid.apply_boundary_conditions(v, [self.obstacle])
        div = field.divergence(v, order=2) * self.active
        p = self.solver(div.values.native("b,x,y"))
        pressure = self.pressure.with_values(math.tensor(p, batch("b"), spatial("x,y")))
        grad = field.spatial_gradient(pressure, boundary, at=v.sampled_at, order=2, scheme="green-gauss")
        return (v - grad * self.hard_bcs).with_extrapolation(boundary), pressure
