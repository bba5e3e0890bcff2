"""Unsteady wake flow behind a cylinder in 2D, after Solver-in-the-Loop (Um et al., NeurIPS 2020).

The source step (explicit diffusion, inflow, semi-Lagrangian advection, pressure projection around
the obstacle) runs on a coarse grid; the reference runs ``reference_factor`` times finer (with as
many sub-steps) and is resampled onto the coarse grid. States cross the plugin boundary as padded
staggered velocity arrays ``[B, 2, X + 1, Y + 1]`` (``u`` on x-faces, ``v`` on y-faces); the padding
entries that belong to no face are kept at zero.
"""

from __future__ import annotations

import functools
import math as pymath
from collections.abc import Callable, Sequence
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from phi.torch.flow import (
    ZERO_GRADIENT,
    Box,
    CenteredGrid,
    Obstacle,
    Solve,
    Sphere,
    StaggeredGrid,
    advect,
    batch,
    diffuse,
    dual,
    extrapolation,
    fluid,
    jit_compile,
    math,
    spatial,
    vec,
)
from phiml.math import _functional as _phiml_functional  # safe_mul's custom gradient: see below
from pydantic import Field, PositiveFloat, PositiveInt
from tqdm.auto import tqdm

import zooframe
from zooframe.plugins.cache import TrajectoryCache

from .pressure import DirectProjection

TRAIN_RE = [97.7, 195.3, 390.6, 781.3, 1562.5, 3125.0]


def _forgets_custom_gradient_traces(method: Callable) -> Callable:
    """Clears the traces of PhiML's ``safe_mul`` when ``method`` returns.

    PhiFlow masks the obstacle's cells with ``safe_mul``, a module-level custom-gradient function
    that keeps one trace per signature it meets: each batch size and grid a step is compiled (or an
    eager projection runs) for, across every solver of the process. From the eighth on, each new
    one warns "custom_grad(_safe_mul_fwd) has been traced N times". A compiled step keeps the
    function it traced, and an eager call traces again (cheaply) when it needs to, so the traces can
    go once a call is done, never within one (a jit compile traces twice and must find its own).
    The recorded output mappings stay: a backward pass that is still to come reads them.
    """

    @functools.wraps(method)
    def wrapper(*args, **kwargs):
        try:
            return method(*args, **kwargs)
        finally:
            traces = getattr(getattr(_phiml_functional, "_safe_mul", None), "traces", None)
            if traces:
                traces.clear()

    return wrapper

TEST_RE = [146.5, 293.0, 585.9, 1171.9, 2343.8]


class KarmanConfig(zooframe.PluginConfig):
    kind: Literal["karman"]
    resolution: tuple[PositiveInt, PositiveInt] = Field((64, 32), description="source grid cells (x, y)")
    reference_factor: int = Field(4, ge=1, description="refinement of the reference in space and time")
    size: tuple[PositiveFloat, PositiveFloat] = Field((200.0, 100.0), description="domain (x, y)")
    obstacle_center: tuple[float, float] = (50.0, 50.0)
    obstacle_radius: PositiveFloat = 10.0
    inflow: PositiveFloat = 1.0
    dt: PositiveFloat = 1.0
    train_reynolds: list[PositiveFloat] = Field(default_factory=lambda: list(TRAIN_RE), min_length=1)
    test_reynolds: list[PositiveFloat] = Field(default_factory=lambda: list(TEST_RE), min_length=1)
    warmup: int = Field(600, ge=0, description="reference steps before frame 0, for vortex shedding to develop")
    spinup_factor: int = Field(2, ge=1, description="refinement of all but the last `settle` warm-up steps "
                               "(a cheaper grid for the spin-up; capped at reference_factor)")
    settle: int = Field(50, ge=0, description="warm-up steps on the reference grid after the spin-up")
    kick: float = Field(0.5, ge=0, description="transverse velocity pushed into the near wake at t = 0, "
                        "so that shedding starts within the warm-up")
    pressure_solver: Literal["direct", "cg"] = Field(
        "direct", description="direct: exact to round-off, a sine-transform solve of the box plus a correction "
        "for the k cells in and next to the obstacle, set up once (k x cells floats; 64 x 32: k = 52); "
        "cg: PhiFlow's conjugate gradients to pressure_tolerance")
    pressure_tolerance: PositiveFloat = Field(1e-4, description="CG tolerance (absolute and relative)")
    pressure_warm_start: bool = Field(True, description="CG: start the pressure solve of rows that share a case "
                                      "from the pressure of that case's first row, when their states are close "
                                      "(ZO queries): fewer CG iterations, the same tolerance")
    cache_dir: str | None = Field(None, description="reference cache (default: $ZOOFRAME_CACHE or ~/.cache/zooframe)")


class KarmanSolver:
    """The wake-flow step at one resolution, batched over the dimension ``b``.

    The whole step is one ``jit_compile``d function; autograd differentiates it through the direct
    pressure solve (FO training). With CG and gradients, diffusion and advection stay jitted and the
    solve runs eagerly: PhiFlow's implicit gradient of a jitted solve fails on the torch backend.
    """

    WARM_START_DISTANCE = 0.05  # relative state distance up to which a group's pressure is a good start

    def __init__(self, cfg: KarmanConfig, nx: int, ny: int, substeps: int):
        self.nx, self.ny, self.substeps = nx, ny, substeps
        self.dt = cfg.dt / substeps
        self.inflow = cfg.inflow
        self.bounds = Box(x=cfg.size[0], y=cfg.size[1])
        self.obstacle = Obstacle(Sphere(center=vec(x=cfg.obstacle_center[0], y=cfg.obstacle_center[1]),
                                        radius=cfg.obstacle_radius))
        # faces in the first cell column; finite bounds: Box(y=None) and infinite ones sample wrongly here
        dx, height = cfg.size[0] / nx, cfg.size[1]
        inflow_region = Box(x=(-dx, 1.25 * dx), y=(-height, 2 * height))
        self.inflow_mask = StaggeredGrid(inflow_region, ZERO_GRADIENT, self.bounds, x=nx, y=ny)
        self.template = StaggeredGrid(0, ZERO_GRADIENT, self.bounds, x=nx, y=ny)
        self.solve = Solve("CG", cfg.pressure_tolerance, cfg.pressure_tolerance, max_iterations=4000)
        self.direct = DirectProjection(cfg.size, nx, ny, self.obstacle) if cfg.pressure_solver == "direct" else None
        self.warm_start = cfg.pressure_warm_start and substeps == 1 and self.direct is None
        # one trace per precision too (PhiFlow keys traces by shapes only): a precision argument
        self._step = jit_compile(self._full_step, auxiliary_args="precision")
        self._step_from = jit_compile(self._step_from_pressure, auxiliary_args="precision")
        self._advance = jit_compile(self._advance_eager)
        valid = torch.zeros(2, nx + 1, ny + 1, dtype=torch.bool)
        valid[0, :, :ny] = True
        valid[1, :nx, :] = True
        self.valid = valid

    @property
    def traces(self) -> int:
        """How often the no-grad steps (cold and warm-started) were traced (compiled) so far."""
        return sum(len(t) for f in (self._step, self._step_from) for t in f.traces.values())

    # --- array <-> field ---------------------------------------------------------------------
    # A state's faces as two tensors: the x-faces [b, X + 1, Y] and the y-faces [b, X, Y + 1]. The
    # compiled steps take and return these, not fields: PhiFlow's conversions of fields across a
    # jit boundary (and of padded tensors) cost several milliseconds per call, more than the step
    # of a small batch.
    def faces(self, state: torch.Tensor) -> tuple[math.Tensor, math.Tensor]:
        return (math.tensor(state[:, 0, :, :self.ny], batch("b"), spatial("x,y")),
                math.tensor(state[:, 1, :self.nx, :], batch("b"), spatial("x,y")))

    def field(self, u: math.Tensor, v: math.Tensor) -> StaggeredGrid:
        return self.template.with_values(math.stack([u, v], dual(vector="x,y")))

    @staticmethod
    def face_values(v: StaggeredGrid) -> tuple[math.Tensor, math.Tensor]:
        return v.values[{"~vector": "x"}], v.values[{"~vector": "y"}]

    @staticmethod
    def padded(u: math.Tensor, v: math.Tensor) -> torch.Tensor:
        u, v = u.native("b,x,y"), v.native("b,x,y")
        return torch.stack([F.pad(u, (0, 1)), F.pad(v, (0, 0, 0, 1))], dim=1)

    def grid(self, state: torch.Tensor) -> StaggeredGrid:
        return self.field(*self.faces(state))

    def array(self, v: StaggeredGrid) -> torch.Tensor:
        return self.padded(*self.face_values(v))

    @_forgets_custom_gradient_traces
    def initial(self, batch_size: int, kick: float, seed: int = 0, noise: float = 0.02) -> torch.Tensor:
        """Uniform inflow, a transverse push into the upper near wake (it breaks the symmetry, so
        that the wake starts to shed within a few hundred steps) and a little seeded noise."""
        g = torch.Generator().manual_seed(seed)
        state = torch.zeros(1, 2, self.nx + 1, self.ny + 1)
        state[:, 0] = self.inflow
        state[:, 1, int(0.3 * self.nx):int(0.45 * self.nx), self.ny // 2:] += kick
        state += noise * torch.randn(state.shape, generator=g)  # the same for every case
        state = state.expand(batch_size, -1, -1, -1)
        return self.array(self.project(self.grid(state)))

    # --- the step ------------------------------------------------------------------------------
    def _advance_eager(self, v: StaggeredGrid, nu: math.Tensor) -> StaggeredGrid:
        v = diffuse.explicit(v, nu, self.dt)
        v = advect.semi_lagrangian(v, v, self.dt)
        return v * (1 - self.inflow_mask) + self.inflow_mask * vec(x=self.inflow, y=0.0)

    @_forgets_custom_gradient_traces
    def project(self, v: StaggeredGrid, solve: Solve | None = None) -> StaggeredGrid:
        return self._project(v, solve)[0]

    def _project(self, v: StaggeredGrid, solve: Solve | None = None) -> tuple[StaggeredGrid, CenteredGrid]:
        if self.direct is not None:
            return self.direct(v)
        return fluid.make_incompressible(v, [self.obstacle], solve or self.solve)

    def _full_step(self, u: math.Tensor, v: math.Tensor, nu: math.Tensor, precision: int) -> tuple[math.Tensor, ...]:
        w = self.field(u, v)
        for _ in range(self.substeps):
            w, p = self._project(self._advance_eager(w, nu))
        return *self.face_values(w), p.values

    def _step_from_pressure(self, u: math.Tensor, v: math.Tensor, nu: math.Tensor, p0: math.Tensor,
                            precision: int) -> tuple[math.Tensor, math.Tensor]:
        x0 = CenteredGrid(p0, extrapolation.ZERO, self.bounds, x=self.nx, y=self.ny)  # as make_incompressible's
        w = self._project(self._advance_eager(self.field(u, v), nu), math.copy_with(self.solve, x0=x0))[0]
        return self.face_values(w)

    @_forgets_custom_gradient_traces
    def __call__(self, state: torch.Tensor, nu: torch.Tensor, groups: torch.Tensor | None = None) -> torch.Tensor:
        """One step of every row; ``groups`` (one integer per row, e.g. its case) enables the
        pressure warm start for rows of one group whose states are close to the group's first row."""
        nu_t = math.tensor(nu.to(state), batch("b"))
        precision = 64 if state.dtype == torch.float64 else 32
        with math.precision(precision):
            if self.direct is None and torch.is_grad_enabled() and (state.requires_grad or nu.requires_grad):
                v = self.grid(state)
                for _ in range(self.substeps):
                    v = self.project(self._advance(v, nu_t))
                return self.array(v)
            if self.warm_start and groups is not None and len(set(groups.tolist())) < len(groups):
                return self.padded(*self._warm_started(state, nu.to(state), groups, precision))
            return self.padded(*self._step(*self.faces(state), nu_t, precision)[:2])

    def _warm_started(self, state: torch.Tensor, nu: torch.Tensor, groups: torch.Tensor,
                      precision: int) -> tuple[math.Tensor, ...]:
        """Solve the first row of each group, then every row from its group's pressure. A row far
        from its group's first row (another time of the same case) starts from zero as usual."""
        _, inverse = torch.unique(groups, return_inverse=True)
        first = torch.full((int(inverse.max()) + 1,), len(groups), dtype=torch.long)
        first = first.scatter_reduce(0, inverse, torch.arange(len(groups)), reduce="amin")
        leaders = first[inverse]
        p = self._step(*self.faces(state[first]), math.tensor(nu[first], batch("b")), precision)[2]
        pressure = p.native("b,x,y")[inverse]
        distance = (state - state[leaders]).flatten(1).norm(dim=1)
        close = distance <= self.WARM_START_DISTANCE * state[leaders].flatten(1).norm(dim=1)
        p0 = math.tensor(pressure * close[:, None, None].to(pressure), batch("b"), spatial("x,y"))
        return self._step_from(*self.faces(state), math.tensor(nu, batch("b")), p0, precision)

    @_forgets_custom_gradient_traces
    def resample(self, state: torch.Tensor, other: KarmanSolver) -> torch.Tensor:
        """A state of this solver interpolated onto ``other``'s faces (made divergence-free
        there when ``other`` is finer)."""
        v = self.grid(state).at(other.template)
        return other.array(other.project(v) if other.nx > self.nx else v)


class KarmanReference(zooframe.ReferenceSource):
    """The high-fidelity mode: the cases are the configured Reynolds numbers, the trajectories the
    same flow on a grid ``reference_factor`` times finer, resampled onto the source grid and cached
    (:meth:`Karman.generate`)."""

    def cases(self):
        cfg = self.simulator.config
        return {split: [zooframe.Case(f"Re{re:g}", {"re": re}) for re in res]
                for split, res in (("train", cfg.train_reynolds), ("test", cfg.test_reynolds))}

    def features(self, cases: Sequence[zooframe.Case]) -> torch.Tensor:
        return torch.tensor([[pymath.log10(c.params["re"])] for c in cases], device=self.device)

    def trajectories(self, cases: Sequence[zooframe.Case], steps: int) -> torch.Tensor:
        sim = self.simulator
        return sim.cache.fetch([sim._cache_params(c) for c in cases], steps,
                               lambda missing: sim.generate([cases[i] for i in missing], steps)).to(self.device)


class Karman(zooframe.Simulator):
    """Karman vortex street behind a cylinder; cases are Reynolds numbers Re = inflow * 2r / nu."""

    Config = KarmanConfig
    high_fidelity = KarmanReference
    differentiable = True  # through PhiFlow's torch backend: FO-SOL, the upper bound
    render_label = "vorticity"  # what render() gives, named in the figures

    def __init__(self, config: KarmanConfig, device="cpu"):
        super().__init__(config, device)
        nx, ny = config.resolution
        self.solver = KarmanSolver(config, nx, ny, substeps=1)
        self.cache = TrajectoryCache(config.cache_dir, prefix="karman")

    @property
    def state_spec(self) -> zooframe.StateSpec:
        nx, ny = self.config.resolution
        return zooframe.StateSpec(("u", "v"), (nx + 1, ny + 1), valid=self.solver.valid)

    def viscosity(self, cases: Sequence[zooframe.Case]) -> torch.Tensor:
        cfg = self.config
        return torch.tensor([cfg.inflow * 2 * cfg.obstacle_radius / c.params["re"] for c in cases])

    def step(self, state: torch.Tensor, cases: Sequence[zooframe.Case], seed: int) -> torch.Tensor:
        index = {}
        groups = torch.tensor([index.setdefault(c.name, len(index)) for c in cases])
        return self.solver(state, self.viscosity(cases).to(state.device), groups)

    def vorticity(self, state: torch.Tensor) -> torch.Tensor:
        """dv/dx - du/dy at cell corners, ``[B, X - 1, Y - 1]`` (interior)."""
        nx, ny = self.config.resolution
        dx, dy = self.config.size[0] / nx, self.config.size[1] / ny
        u, v = state[:, 0, :, :ny], state[:, 1, :nx, :]
        return (v[:, 1:, 1:-1] - v[:, :-1, 1:-1]) / dx - (u[:, 1:-1, 1:] - u[:, 1:-1, :-1]) / dy

    def render(self, state: torch.Tensor) -> torch.Tensor:
        return self.vorticity(state)

    # --- reference -----------------------------------------------------------------------------
    def _cache_params(self, case: zooframe.Case) -> dict:
        # the warm start never applies to reference runs (distinct cases, sub-stepped solvers)
        unused = {"kind", "train_reynolds", "test_reynolds", "cache_dir", "pressure_warm_start"}
        if self.config.pressure_solver == "direct":
            unused.add("pressure_tolerance")
        cfg = self.config.model_dump(exclude=unused, mode="json")
        return {"simulator": "karman", "re": case.params["re"], "phiflow": _phiflow_version(), **cfg}

    def _solver(self, factor: int) -> KarmanSolver:
        nx, ny = self.config.resolution
        return KarmanSolver(self.config, nx * factor, ny * factor, substeps=factor)

    @torch.no_grad()
    def generate(self, cases: Sequence[zooframe.Case], steps: int) -> torch.Tensor:
        """Spin up on a cheaper grid, settle on the reference grid, then keep ``steps + 1``
        frames resampled onto the source grid."""
        cfg = self.config
        fine = self._solver(cfg.reference_factor)
        spinup_steps = max(cfg.warmup - cfg.settle, 0)
        spinup_factor = min(cfg.spinup_factor, cfg.reference_factor)
        solver = self._solver(spinup_factor) if spinup_steps and spinup_factor < cfg.reference_factor else fine
        nu = self.viscosity(cases)
        state = solver.initial(len(cases), cfg.kick)
        frames = []
        names = ", ".join(c.name for c in cases)
        for t in tqdm(range(cfg.warmup + steps + 1), desc=f"karman reference ({names})", disable=None, leave=False):
            if t == spinup_steps and solver is not fine:
                state, solver = solver.resample(state, fine), fine
            if t >= cfg.warmup:
                frames.append(fine.resample(state, self.solver))
            if t < cfg.warmup + steps:
                state = solver(state, nu)
        return torch.stack(frames, dim=1).float()


def _phiflow_version() -> str:
    from importlib.metadata import version

    return version("phiflow")


def shedding(trajectory: torch.Tensor, probe: tuple[int, int], dt: float) -> dict[str, float]:
    """Dominant frequency and amplitude of the cross-stream velocity at ``probe`` (cell index)
    over a trajectory ``[T, 2, X + 1, Y + 1]``: how a case sheds vortices."""
    signal = trajectory[:, 1, probe[0], probe[1]].double().cpu().numpy()
    signal = signal - signal.mean()
    spectrum = np.abs(np.fft.rfft(signal * np.hanning(len(signal))))
    freqs = np.fft.rfftfreq(len(signal), d=dt)
    k = int(np.argmax(spectrum[1:]) + 1)
    return {"frequency": float(freqs[k]), "amplitude": float(signal.std())}
