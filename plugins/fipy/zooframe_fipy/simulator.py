"""Cahn-Hilliard spinodal decomposition through FiPy as zooframe's black-box step.

The source solver is FiPy on a coarse periodic grid with a large time step; the reference is the
same FiPy code, from the same initial condition, on a grid ``reference_factor`` times finer with
``reference_substeps`` steps per source step, block-averaged onto the source grid.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Sequence
from typing import Literal

import numpy as np
import torch
from pydantic import Field, PositiveFloat

import zooframe
from zooframe.plugins.cache import TrajectoryCache


def _import_blocks():
    """The FiPy part, imported with mpi4py hidden from FiPy. zooframe runs FiPy as a serial solver
    (the batch is its parallelism), and with mpi4py installed, importing FiPy starts MPI, whose C
    handlers take the stop signals from Python: SIGHUP then no longer stopped a run, in every zooframe
    process that loads the installed plugins. (Imported here, with the plugin: importing FiPy late in
    a long-lived process, as a first use would, crashed pytest-xdist workers.)"""
    if "mpi4py" in sys.modules:  # MPI's start is not ours to stop
        from . import blocks

        return blocks
    sys.modules["mpi4py"] = None  # FiPy's `from mpi4py import MPI` is then an ImportError: serial FiPy
    try:
        from . import blocks
    finally:
        del sys.modules["mpi4py"]
    return blocks


BlockSolver = _import_blocks().BlockSolver


class MaterialCase(zooframe.PluginConfig):
    """One quench: the physical parameters of a case."""

    mobility: PositiveFloat = Field(description="mobility M")
    kappa: PositiveFloat = Field(description="gradient-energy coefficient kappa (interface width ~ sqrt(2 kappa))")
    mean: float = Field(ge=-0.9, le=0.9, description="mean composition phi_bar (0: critical quench, bicontinuous)")


def _cases(values: list[tuple[float, float, float]]) -> list[MaterialCase]:
    return [MaterialCase(mobility=m, kappa=k, mean=c) for m, k, c in values]


class SpinodalConfig(zooframe.PluginConfig):
    kind: Literal["spinodal"]
    resolution: int = Field(32, ge=8, description="cells per side of the coarse (source) grid")
    length: PositiveFloat = Field(32.0, description="side of the periodic square domain")
    dt: PositiveFloat = Field(2.0, description="time step of one source step")
    reference_factor: int = Field(4, ge=1, description="refinement of the reference grid per side")
    reference_substeps: int = Field(2, ge=1, description="reference steps per source step")
    warmup: int = Field(0, ge=0, description="source steps' worth of reference evolution before its first frame "
                        "(0: the reference starts at the quench)")
    noise: PositiveFloat = Field(0.2, description="standard deviation of the initial composition fluctuation")
    modes: int = Field(6, ge=1, description="largest wavenumber (in units of 2 pi / length) of the initial fluctuation")
    train_cases: list[MaterialCase] = Field(
        default_factory=lambda: _cases([(1.0, 1.0, 0.0), (2.0, 1.0, 0.0), (1.0, 1.5, 0.1), (2.0, 1.5, 0.1),
                                       (1.5, 1.0, 0.2), (1.0, 1.5, 0.3)]),
        min_length=1, description="training quenches")
    test_cases: list[MaterialCase] = Field(
        default_factory=lambda: _cases([(1.5, 1.25, 0.05), (1.0, 1.25, 0.25), (2.5, 1.0, 0.0)]),
        min_length=1, description="held-out quenches")
    conserve: bool = Field(
        True, description="set each state's mean composition to its case's before stepping: Cahn-Hilliard "
        "conserves it, and a correction that shifts it would shift every later state")
    solver: Literal["pcg", "lu"] = Field("pcg", description="FiPy's linear solver (the system is symmetric positive definite)")
    tolerance: PositiveFloat = Field(1e-10, description="relative residual of the pcg solver in the source step "
                                     "(tight: ZO estimates are made of small differences of its output)")
    reference_tolerance: PositiveFloat = Field(1e-8, description="relative residual of the pcg solver on the reference grid")
    batching: Literal["blocks", "loop", "rebuild"] = Field(
        "blocks", description="blocks: one FiPy mesh of up to block_rows disjoint grids per call (fastest); "
        "loop: one kept mesh, one row at a time; rebuild: a new mesh and equation per row (the plain step_one)")
    block_rows: int = Field(64, ge=1, description="most grids in one FiPy mesh (blocks batching)")
    cache_dir: str | None = Field(None, description="reference cache (default: $ZOOFRAME_CACHE or ~/.cache/zooframe)")


class SpinodalReference(zooframe.ReferenceSource):
    """The high-fidelity mode: the same quench on a grid ``reference_factor`` times finer, with
    ``reference_substeps`` FiPy steps per source step, block-averaged onto the source grid and
    cached (:meth:`Spinodal.generate`)."""

    def cases(self) -> dict[str, list[zooframe.Case]]:
        cfg = self.simulator.config
        sets = {"train": cfg.train_cases, "test": cfg.test_cases}
        return {split: [zooframe.Case(f"{split}-M{c.mobility:g}-k{c.kappa:g}-c{c.mean:g}",
                                      {"mobility": c.mobility, "kappa": c.kappa, "mean": c.mean,
                                       "seed": i + 1000 * (split == "test")})
                        for i, c in enumerate(values)] for split, values in sets.items()}

    def features(self, cases: Sequence[zooframe.Case]) -> torch.Tensor:
        return torch.tensor([[math.log10(c.params["mobility"]), math.log10(c.params["kappa"]), c.params["mean"]]
                             for c in cases], device=self.device)

    def trajectories(self, cases: Sequence[zooframe.Case], steps: int) -> torch.Tensor:
        sim = self.simulator
        frames = sim.cache.fetch([sim._cache_params(c) for c in cases], steps,
                                 lambda missing: sim.generate([cases[i] for i in missing], steps))
        return frames.to(torch.get_default_dtype()).to(self.device)


class Spinodal(zooframe.Simulator):
    """A binary mixture phase-separating after a quench; the state is the order parameter phi
    ``[1, X, Y]`` (-1 and +1: the two phases)."""

    Config = SpinodalConfig
    high_fidelity = SpinodalReference
    render_label = "order parameter phi"  # what render() gives, named in the figures

    def __init__(self, config: SpinodalConfig, device="cpu"):
        super().__init__(config, device)
        self._solvers: dict[tuple[int, int], BlockSolver] = {}
        self.cache = TrajectoryCache(config.cache_dir, prefix="fipy-spinodal")

    def __getstate__(self):  # FiPy meshes stay behind; a worker builds its own
        return {**self.__dict__, "_solvers": {}}

    @property
    def state_spec(self) -> zooframe.StateSpec:
        n = self.config.resolution
        return zooframe.StateSpec(("phi",), (n, n))

    def render(self, state: torch.Tensor) -> torch.Tensor:
        return state[:, 0]

    def _tolerance(self, n: int) -> float:
        return self.config.tolerance if n == self.config.resolution else self.config.reference_tolerance

    def block_solver(self, blocks: int, n: int | None = None) -> BlockSolver:
        n = n or self.config.resolution
        key = (blocks, n)
        if key not in self._solvers:
            self._solvers[key] = self._new_block_solver(blocks, n)
        return self._solvers[key]

    def _new_block_solver(self, blocks: int, n: int) -> BlockSolver:
        return BlockSolver(blocks, n, self.config.length / n, self.config.solver, self._tolerance(n))

    @staticmethod
    def _params(cases: Sequence[zooframe.Case]) -> tuple[np.ndarray, np.ndarray]:
        return (np.array([c.params["mobility"] for c in cases], dtype=float),
                np.array([c.params["kappa"] for c in cases], dtype=float))

    def advance(self, phi: np.ndarray, cases: Sequence[zooframe.Case], n: int, dt: float, steps: int) -> np.ndarray:
        """``phi`` ``[B, n, n]`` ``steps`` FiPy steps of ``dt`` on, in blocks of at most ``block_rows``."""
        mobility, kappa = self._params(cases)
        cfg = self.config
        if cfg.batching == "blocks":
            out = []
            for lo in range(0, len(phi), cfg.block_rows):
                hi = min(lo + cfg.block_rows, len(phi))
                out.append(self.block_solver(hi - lo, n).advance(phi[lo:hi], mobility[lo:hi], kappa[lo:hi], dt, steps))
            return np.concatenate(out)
        rows = []
        for b in range(len(phi)):
            solver = self.block_solver(1, n) if cfg.batching == "loop" else self._new_block_solver(1, n)
            rows.append(solver.advance(phi[b:b + 1], mobility[b:b + 1], kappa[b:b + 1], dt, steps))
        return np.concatenate(rows)

    def step(self, state: torch.Tensor, cases: Sequence[zooframe.Case], seed: int) -> torch.Tensor:
        phi = state.detach().cpu().double().numpy()[:, 0]
        if self.config.conserve:
            mean = np.array([c.params["mean"] for c in cases])
            phi = phi - phi.mean(axis=(1, 2), keepdims=True) + mean[:, None, None]
        out = self.advance(phi, cases, self.config.resolution, self.config.dt, 1)
        return torch.as_tensor(out[:, None], device=state.device).to(state.dtype)

    # --- what the high-fidelity mode (SpinodalReference) runs ------------------------------------
    def initial_state(self, case: zooframe.Case, n: int) -> np.ndarray:
        """The mean composition plus a smooth random fluctuation (wavenumbers up to ``modes``),
        sampled at the cell centres of an n x n grid: the same field on every grid."""
        cfg = self.config
        rng = np.random.default_rng(int(case.params["seed"]))
        k = np.arange(-cfg.modes, cfg.modes + 1)
        kx, ky = np.meshgrid(k, k, indexing="ij")
        keep = (kx**2 + ky**2 <= cfg.modes**2) & ((kx > 0) | ((kx == 0) & (ky > 0)))  # one of each +-k pair
        kx, ky = kx[keep], ky[keep]
        amp, phase = rng.standard_normal(len(kx)), rng.uniform(0, 2 * math.pi, len(kx))
        x = (np.arange(n) + 0.5) / n * 2 * math.pi
        arg = kx[:, None, None] * x[None, :, None] + ky[:, None, None] * x[None, None, :] + phase[:, None, None]
        field = (amp[:, None, None] * np.cos(arg)).sum(0)
        return case.params["mean"] + cfg.noise * field / field.std()

    def _cache_params(self, case: zooframe.Case) -> dict:
        cfg = self.config.model_dump(mode="json", exclude={"kind", "train_cases", "test_cases", "batching",
                                                             "block_rows", "cache_dir", "conserve"})
        return {"simulator": "fipy-spinodal", "fipy": _fipy_version(), "case": dict(case.params), **cfg}

    def generate(self, cases: Sequence[zooframe.Case], steps: int) -> torch.Tensor:
        """Fine-grid FiPy trajectories block-averaged onto the source grid, ``[B, steps + 1, 1, n, n]``."""
        cfg = self.config
        n, f = cfg.resolution, cfg.reference_factor
        phi = np.stack([self.initial_state(c, n * f) for c in cases])

        def restrict(fine):
            return fine.reshape(len(cases), n, f, n, f).mean(axis=(2, 4))

        if cfg.warmup:
            phi = self.advance(phi, cases, n * f, cfg.dt / cfg.reference_substeps, cfg.warmup * cfg.reference_substeps)
        frames = [restrict(phi)]
        for _ in range(steps):
            phi = self.advance(phi, cases, n * f, cfg.dt / cfg.reference_substeps, cfg.reference_substeps)
            frames.append(restrict(phi))
        return torch.as_tensor(np.stack(frames, axis=1)[:, :, None], dtype=torch.float64)


def _fipy_version() -> str:
    from importlib.metadata import version

    return version("fipy")
