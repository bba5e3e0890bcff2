"""An exact pressure projection for small grids: one matrix product instead of CG iterations.

Around a fixed obstacle the pressure matrix depends only on the grid, so its inverse is computed
once (in float64) and applied to every row of a batch in one product. The steps around the solve
are PhiFlow's ``fluid.make_incompressible`` for a stationary obstacle in a domain with
zero-gradient velocity boundaries; a test holds the two to the same result.
"""

from __future__ import annotations

import torch
from phi.math import NUMPY
from phi.torch.flow import (CenteredGrid, Field, Obstacle, StaggeredGrid, batch, extrapolation, field, fluid, math,
                            spatial)


class DirectProjection:
    """``v -> (v - grad p, p)`` with ``p`` from the precomputed inverse of the pressure matrix."""

    def __init__(self, template: StaggeredGrid, obstacle: Obstacle):
        self.obstacle, self.extrapolation = obstacle, template.extrapolation
        self.nx, self.ny = template.resolution.sizes
        with math.precision(64), NUMPY:  # the masks as make_incompressible builds them (zero-gradient walls)
            accessible = Field(template.geometry, ~obstacle.geometry, extrapolation.ONE)
            self.hard_bcs = field.stagger(accessible, math.minimum, template.boundary, at=template.sampled_at,
                                          dims=template.vector.item_names)
            self.active = accessible.with_extrapolation(extrapolation.NONE)
            self.pressure = CenteredGrid(0, extrapolation.ZERO, template.bounds, x=self.nx, y=self.ny)
            matrix, _ = math.matrix_from_function(fluid.masked_laplace, self.pressure, template.boundary,
                                                  self.hard_bcs, self.active, wide_stencil=False, order=2,
                                                  implicit=None, upwind=None, correct_skew=False)
            dense = math.dense(matrix).numpy("x,y,~x,~y")
        cells = self.nx * self.ny
        dense = torch.from_numpy(dense).reshape(cells, cells)
        assert dense.dtype == torch.float64
        self._inverse_t = {torch.float64: torch.linalg.inv(dense).T.contiguous()}

    def inverse_t(self, like: torch.Tensor) -> torch.Tensor:
        """The transposed inverse in ``like``'s dtype and on its device (cached)."""
        key = (like.dtype, like.device)
        if key not in self._inverse_t:
            self._inverse_t[key] = self._inverse_t[torch.float64].to(like.device, like.dtype)
        return self._inverse_t[key]

    def __call__(self, v: StaggeredGrid) -> tuple[StaggeredGrid, CenteredGrid]:
        v = fluid.apply_boundary_conditions(v, [self.obstacle])
        div = field.divergence(v, order=2) * self.active
        rhs = div.values.native("b,x,y")
        p = (rhs.flatten(1) @ self.inverse_t(rhs)).view_as(rhs)
        pressure = self.pressure.with_values(math.tensor(p, batch("b"), spatial("x,y")))
        grad = field.spatial_gradient(pressure, self.extrapolation, at=v.sampled_at, order=2, scheme="green-gauss")
        return (v - grad * self.hard_bcs).with_extrapolation(self.extrapolation), pressure
