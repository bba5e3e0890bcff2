"""FiPy's Cahn-Hilliard step on many independent periodic grids at once.

FiPy solves one mesh at a time and spends most of a small step in Python (assembling the
terms), not in the linear solve. A batch of B states therefore becomes one FiPy mesh made of B
disjoint periodic n x n grids (``BlockMesh``): FiPy assembles and solves it in one call, and the
grids share no face, so the block-diagonal system keeps every row independent of the others.
The mesh, its variables and the equation are built once per batch size and kept (``BlockSolver``).
"""

from __future__ import annotations

import numpy as np
from fipy import CellVariable, DiffusionTerm, ExplicitDiffusionTerm, LinearLUSolver, LinearPCGSolver, TransientTerm
from fipy.meshes.mesh2D import Mesh2D
from fipy.meshes.nonUniformGrid2D import NonUniformGrid2D


def block_mesh(blocks: int, n: int, dx: float) -> Mesh2D:
    """``blocks`` periodic n x n grids of spacing ``dx`` as one mesh; cell ``b * n * n + i + n * j``
    is cell (x = i, y = j) of grid b."""
    grid = NonUniformGrid2D(nx=n, ny=n, dx=dx, dy=dx)
    vertices = np.asarray(grid.vertexCoords)
    face_vertices = np.asarray(grid.faceVertexIDs)
    cell_faces = np.asarray(grid.cellFaceIDs)
    nv, nf = vertices.shape[1], face_vertices.shape[1]
    shift = np.array([[0.0], [(n + 2) * dx]])  # grids apart, so that they share no vertex or face
    mesh = Mesh2D(np.concatenate([vertices + b * shift for b in range(blocks)], axis=1),
                  np.concatenate([face_vertices + b * nv for b in range(blocks)], axis=1),
                  np.concatenate([cell_faces + b * nf for b in range(blocks)], axis=1))
    offsets = np.arange(blocks)[:, None] * nf
    for first, second in ((grid.facesLeft, grid.facesRight), (grid.facesBottom, grid.facesTop)):
        a, b = np.nonzero(np.asarray(first))[0], np.nonzero(np.asarray(second))[0]
        mesh._connectFaces((a + offsets).ravel(), (b + offsets).ravel())  # as FiPy's PeriodicGrid2D does
    return mesh


class BlockSolver:
    """One FiPy Cahn-Hilliard problem over ``blocks`` grids: per grid its own mobility M and
    gradient-energy coefficient kappa, for phi in [-1, 1] with f(phi) = (phi^2 - 1)^2 / 4:

        d phi / dt = div(M grad(phi^3 - phi - kappa lap phi))

    Convex splitting (Eyre): the phi^3 part and the fourth-order term implicit, the concave -phi
    part explicit, which keeps the system symmetric positive definite for any time step.
    """

    def __init__(self, blocks: int, n: int, dx: float, solver: str = "pcg", tolerance: float = 1e-10):
        self.blocks, self.n = blocks, n
        self.mesh = block_mesh(blocks, n, dx)
        self.phi = CellVariable(mesh=self.mesh, value=0.0, hasOld=True)
        self.mobility = CellVariable(mesh=self.mesh, value=1.0)
        self.kappa = CellVariable(mesh=self.mesh, value=1.0)
        m_face = self.mobility.arithmeticFaceValue
        face = self.phi.arithmeticFaceValue
        self.equation = (TransientTerm() == DiffusionTerm(coeff=3 * m_face * face**2)
                         - ExplicitDiffusionTerm(coeff=m_face)
                         - DiffusionTerm(coeff=(m_face, self.kappa.arithmeticFaceValue)))
        self.solver = (LinearPCGSolver(tolerance=tolerance, iterations=5000) if solver == "pcg"
                       else LinearLUSolver())

    def _cells(self, fields: np.ndarray) -> np.ndarray:
        # [B, X, Y] -> FiPy's cell order (x fastest within a grid)
        return np.ascontiguousarray(fields.transpose(0, 2, 1)).reshape(-1)

    def advance(self, phi: np.ndarray, mobility: np.ndarray, kappa: np.ndarray, dt: float, steps: int = 1) -> np.ndarray:
        """``phi`` ``[B, X, Y]`` ``steps`` steps of ``dt`` on; ``mobility``, ``kappa``: ``[B]``."""
        cells = self.n * self.n
        self.mobility.setValue(np.repeat(np.asarray(mobility, dtype=float), cells))
        self.kappa.setValue(np.repeat(np.asarray(kappa, dtype=float), cells))
        self.phi.setValue(self._cells(np.asarray(phi, dtype=float)))
        for _ in range(steps):
            self.phi.updateOld()
            self.equation.solve(var=self.phi, dt=dt, solver=self.solver)
        return np.asarray(self.phi.value).reshape(self.blocks, self.n, self.n).transpose(0, 2, 1).copy()
