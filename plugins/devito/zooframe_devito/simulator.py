"""Ultrasonic pulse-echo testing of a steel part with a flaw, with Devito's compiled stencils as
the black-box step.

A transducer on the top has sent a pulse (a Ricker wavelet, 2 MHz peak) down into the part; it
reflects off the flaw (a pore or a crack: a region of 10x lower density, reflection coefficient
-0.82) and receivers under the transducer record the echoes (A-scans). The window is absorbing
all round (a region of a thick part), or has free surfaces above and below (air, and the
backwall echo) with ``free_surfaces``. The state is the pressure field at two time levels,
``[2, nx, ny]`` = (u(t), u(t - dt)); one step advances the coarse scheme ``steps_per_call`` time
steps. The source is second order in space on the coarse grid (about 6 points per wavelength at
the peak frequency: strong numerical dispersion); the reference is eighth order on a
``reference_factor`` times finer grid with as many more time steps, sampled at the coarse nodes.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict
from typing import Literal

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field, PositiveFloat, field_validator, model_validator

import zooframe
from zooframe.plugins.cache import TrajectoryCache

from .geometry import Flaw, Pulse, Specimen
from .propagator import Propagator

LogLevel = Literal["DEBUG", "PERF", "INFO", "WARNING", "ERROR", "CRITICAL"]


class FlawConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    x_mm: float = Field(..., description="lateral position of the flaw's centre")
    depth_mm: float = Field(..., description="depth of the flaw's centre below the top of the grid")
    radius_mm: PositiveFloat = Field(..., description="semi-axis along the flaw's length")
    aspect: float = Field(1.0, gt=0, le=1, description="the other semi-axis over radius_mm: 1 a round void, "
                          "small a crack")
    angle_deg: float = Field(0.0, ge=-90, le=90, description="tilt of the flaw's length from horizontal")

    def flaw(self) -> Flaw:
        return Flaw(self.x_mm, self.depth_mm, self.radius_mm, self.aspect, self.angle_deg)


def _flaws(*rows) -> list[FlawConfig]:
    return [FlawConfig(x_mm=x, depth_mm=d, radius_mm=r, aspect=a, angle_deg=g) for x, d, r, a, g in rows]


# x, depth, radius (mm), aspect, angle (deg); the held-out flaws sit at other places and sizes,
# and include a tilted crack and a larger pore than any in training
TRAIN_FLAWS = ((12.0, 13.0, 1.5, 1.0, 0.0), (20.0, 15.0, 2.0, 1.0, 0.0), (16.0, 21.0, 1.0, 1.0, 0.0),
               (14.0, 17.0, 3.0, 0.25, 0.0), (18.0, 13.5, 2.5, 0.3, 20.0), (10.5, 20.0, 2.0, 0.6, -30.0))
TEST_FLAWS = ((17.5, 14.0, 1.25, 1.0, 0.0), (13.0, 19.0, 2.5, 0.2, -35.0), (19.5, 19.0, 3.0, 1.0, 0.0),
              (15.0, 13.5, 2.0, 0.4, 10.0))


class PulseEchoConfig(zooframe.PluginConfig):
    kind: Literal["pulse_echo"]
    cells: tuple[int, int] = Field((64, 64), description="coarse grid nodes (x, depth)")
    spacing_mm: PositiveFloat = Field(0.5, description="coarse grid spacing")
    space_order: int = Field(2, ge=2, le=16, description="spatial order of the coarse (source) stencils")
    reference_space_order: int = Field(8, ge=2, le=16, description="spatial order of the reference stencils")
    reference_factor: int = Field(4, ge=1, le=8, description="refinement of the reference grid and time step")
    courant: float = Field(0.4, gt=0, le=0.5, description="velocity * dt / spacing of both grids")
    steps_per_call: int = Field(2, ge=1, description="coarse time steps per step() call (one frame)")
    velocity: PositiveFloat = Field(5.9, description="longitudinal wave speed, mm/us (steel)")
    frequency_mhz: PositiveFloat = Field(2.0, description="centre (peak) frequency of the pulse")
    cycles: PositiveFloat | None = Field(None, description="length of the tone burst in periods (1/e width of "
                                         "its Gaussian envelope); null: a Ricker wavelet (broadband)")
    transducer_x_mm: float | None = Field(None, description="centre of the transducer (default: the middle)")
    aperture_mm: PositiveFloat = Field(4.0, description="Gaussian half-width of the transducer's beam")
    free_surfaces: bool = Field(False, description="air above the top surface and below the backwall (the "
                                "backwall echo); false: absorbing layers all round, a window into a thick part")
    top_mm: float = Field(1.5, ge=0, description="free_surfaces: depth of the plate's top surface (air above it)")
    thickness_mm: PositiveFloat = Field(28.5, description="free_surfaces: plate thickness, the backwall lies at "
                                        "top_mm + this")
    void_density: float = Field(0.1, gt=0, lt=1, description="density of air and flaws over the plate's")
    interface_cells: PositiveFloat = Field(3.0, description="smoothing width of interfaces, in coarse cells")
    sponge_mm: PositiveFloat = Field(4.0, description="absorbing layers at the edges (the left and right only "
                                     "with free_surfaces)")
    sponge_strength: PositiveFloat = Field(8.0, description="damping at the outer edge, velocity / sponge_mm units")
    receivers: int = Field(16, ge=1, description="receivers under the top surface, across the transducer")
    receiver_depth_mm: float | None = Field(None, description="depth of the receivers (default: 0.5 mm inside the "
                                              "top sponge, or 2 mm below top_mm with free_surfaces)")
    train_flaws: list[FlawConfig] = Field(default_factory=lambda: _flaws(*TRAIN_FLAWS), min_length=1)
    test_flaws: list[FlawConfig] = Field(default_factory=lambda: _flaws(*TEST_FLAWS), min_length=1)
    cache_dir: str | None = Field(None, description="reference cache (default: $ZOOFRAME_CACHE or ~/.cache/zooframe)")
    log_level: LogLevel | None = Field(
        None, description="Devito's log level during this plugin's calls (default: WARNING, or DEVITO_LOGGING "
        "if set); Devito's global setting is left as it was")

    @field_validator("cells")
    @classmethod
    def _cells(cls, v):
        if min(v) < 16:
            raise ValueError(f"cells must be at least 16 per side (got {v})")
        return v

    @field_validator("space_order", "reference_space_order")
    @classmethod
    def _even(cls, v):
        if v % 2:
            raise ValueError(f"space orders must be even (got {v})")
        return v

    @property
    def extent(self) -> tuple[float, float]:
        return ((self.cells[0] - 1) * self.spacing_mm, (self.cells[1] - 1) * self.spacing_mm)

    def interior(self) -> tuple[float, float]:
        """Depths between which the plate is free of air and sponges (mm)."""
        if self.free_surfaces:
            return self.top_mm, self.top_mm + self.thickness_mm
        return self.sponge_mm, self.extent[1] - self.sponge_mm

    @model_validator(mode="after")
    def _inside(self):
        width, height = self.extent
        top, bottom = self.interior()
        if self.free_surfaces and self.top_mm + self.thickness_mm >= height:
            raise ValueError(f"top_mm + thickness_mm = {self.top_mm + self.thickness_mm:g} mm must lie inside the "
                             f"grid's depth {height:g} mm (cells[1] - 1) * spacing_mm")
        if 2 * self.sponge_mm >= min(width, height):
            raise ValueError(f"sponge_mm = {self.sponge_mm:g} leaves no plate between the sponges of a "
                             f"{width:g} x {height:g} mm grid")
        for split in ("train_flaws", "test_flaws"):
            for i, f in enumerate(getattr(self, split)):
                if not (top < f.depth_mm < bottom and self.sponge_mm < f.x_mm < width - self.sponge_mm):
                    raise ValueError(f"{split}[{i}]: the centre ({f.x_mm:g}, {f.depth_mm:g}) mm lies outside the "
                                     f"plate between the sponges (x in ({self.sponge_mm:g}, "
                                     f"{width - self.sponge_mm:g}), depth in ({top:g}, {bottom:g}))")
        return self


def flaw_of(case: zooframe.Case) -> Flaw:
    p = case.params
    return Flaw(p["x"], p["depth"], p["radius"], p.get("aspect", 1.0), p.get("angle", 0.0))


class PulseEchoReference(zooframe.ReferenceSource):
    """The high-fidelity mode: the cases are the configured flaws, the trajectories an eighth-order
    run on a finer grid (:meth:`PulseEcho.generate`), cached."""

    def cases(self):
        def case(split, i, f: FlawConfig):
            kind = "pore" if f.aspect == 1 else "crack"
            return zooframe.Case(f"{split}{i}-{kind}-x{f.x_mm:g}-d{f.depth_mm:g}-r{f.radius_mm:g}",
                                 {"x": f.x_mm, "depth": f.depth_mm, "radius": f.radius_mm, "aspect": f.aspect,
                                  "angle": f.angle_deg})

        cfg = self.simulator.config
        return {"train": [case("train", i, f) for i, f in enumerate(cfg.train_flaws)],
                "test": [case("test", i, f) for i, f in enumerate(cfg.test_flaws)]}

    def trajectories(self, cases: Sequence[zooframe.Case], steps: int) -> torch.Tensor:
        sim = self.simulator
        return sim.cache.fetch([sim._cache_params(c) for c in cases], steps,
                               lambda missing: sim.generate([cases[i] for i in missing], steps)).to(self.device)


class PulseEcho(zooframe.Simulator):
    """2D acoustic pulse-echo inspection; cases are flaws (position, size, shape)."""

    Config = PulseEchoConfig
    high_fidelity = PulseEchoReference
    render_label = "pressure u"  # what render() gives, named in the figures

    def __init__(self, config: PulseEchoConfig, device="cpu"):
        super().__init__(config, device)
        cfg = config
        self.dt = cfg.courant * cfg.spacing_mm / cfg.velocity
        self.specimen = Specimen(
            width=cfg.extent[0], height=cfg.extent[1], velocity=cfg.velocity, top=cfg.top_mm,
            bottom=cfg.top_mm + cfg.thickness_mm, void_density=cfg.void_density,
            interface=cfg.interface_cells * cfg.spacing_mm, sponge=cfg.sponge_mm, sponge_strength=cfg.sponge_strength,
            free_surfaces=cfg.free_surfaces)
        wavelength = cfg.velocity / cfg.frequency_mhz
        self.pulse = Pulse(x=cfg.extent[0] / 2 if cfg.transducer_x_mm is None else cfg.transducer_x_mm,
                           depth=cfg.interior()[0] + wavelength * (1.5 if cfg.cycles is None else 1.1 * cfg.cycles),
                           aperture=cfg.aperture_mm, frequency=cfg.frequency_mhz,
                           velocity=cfg.velocity, cycles=cfg.cycles)
        self.propagator = Propagator(cfg.cells, cfg.spacing_mm, cfg.space_order, cfg.log_level)
        self.cache = TrajectoryCache(cfg.cache_dir, prefix="pulse_echo")
        self._coefficients: dict = {}

    @property
    def state_spec(self) -> zooframe.StateSpec:
        return zooframe.StateSpec(("u", "u_prev"), tuple(self.config.cells))

    @property
    def frame_us(self) -> float:
        """Time between frames (one step), microseconds."""
        return self.config.steps_per_call * self.dt

    def receiver_nodes(self) -> tuple[np.ndarray, int]:
        """Coarse-grid node indices of the receivers: x indices ``[R]`` and the depth index."""
        cfg = self.config
        depth = cfg.interior()[0] + (2.0 if cfg.free_surfaces else 0.5)
        depth = depth if cfg.receiver_depth_mm is None else cfg.receiver_depth_mm
        span = min(2 * cfg.aperture_mm, cfg.extent[0] / 2 - cfg.sponge_mm)
        xs = np.linspace(self.pulse.x - span, self.pulse.x + span, cfg.receivers) if cfg.receivers > 1 \
            else np.array([self.pulse.x])
        ix = np.clip(np.rint(xs / cfg.spacing_mm).astype(int), 0, cfg.cells[0] - 1)
        return ix, int(np.clip(round(depth / cfg.spacing_mm), 0, cfg.cells[1] - 1))

    # --- flaws ------------------------------------------------------------------------------------
    def _coefficients_of(self, case: zooframe.Case) -> dict[str, np.ndarray]:
        key = tuple(sorted(case.params.items()))
        if key not in self._coefficients:
            self._coefficients[key] = self.specimen.coefficients(flaw_of(case), self.config.cells,
                                                                 self.config.spacing_mm, self.dt)
        return self._coefficients[key]

    # --- the black-box step ---------------------------------------------------------------------
    def step(self, state: torch.Tensor, cases: Sequence[zooframe.Case], seed: int) -> torch.Tensor:
        rows = state.detach().to("cpu").numpy()
        dtype = np.float64 if rows.dtype == np.float64 else np.float32
        keys = tuple(tuple(sorted(c.params.items())) for c in cases)

        def coefficients():
            per_row = [self._coefficients_of(c) for c in cases]
            return {name: np.stack([p[name] for p in per_row]) for name in Propagator.FIELDS}

        cur, prev = self.propagator.advance(rows[:, 0].astype(dtype), rows[:, 1].astype(dtype), coefficients,
                                            self.config.steps_per_call, key=keys)
        return torch.from_numpy(np.stack([cur, prev], axis=1)).to(device=state.device, dtype=state.dtype)

    def render(self, state: torch.Tensor) -> torch.Tensor:
        """The pressure u, depth reversed: the core's figures draw the last index at the top, and
        the transducer belongs there."""
        return state[:, 0].flip(-1)

    # --- the reference: eighth order on a finer grid ---------------------------------------------
    def _cache_params(self, case: zooframe.Case) -> dict:
        from importlib.metadata import version

        unused = {"kind", "train_flaws", "test_flaws", "cache_dir", "log_level", "space_order", "receivers",
                  "receiver_depth_mm"}
        # the derived specimen and pulse too: what the fields imply may change with the code
        return {"simulator": "pulse_echo", "flaw": dict(sorted(case.params.items())), "devito": version("devito"),
                "specimen": asdict(self.specimen), "pulse": asdict(self.pulse),
                **self.config.model_dump(exclude=unused, mode="json")}

    def fine_propagator(self) -> tuple[Propagator, int, int]:
        """The reference propagator, its grid refinement r and its time steps per coarse time step."""
        cfg = self.config
        r = cfg.reference_factor
        n = tuple(r * (c - 1) + 1 for c in cfg.cells)
        substeps = r * max(1, math.ceil(cfg.courant / 0.4 - 1e-9))  # fine Courant <= 0.4: stable at order 8
        return Propagator(n, cfg.spacing_mm / r, cfg.reference_space_order, cfg.log_level), r, substeps

    @torch.no_grad()
    def generate(self, cases: Sequence[zooframe.Case], steps: int) -> torch.Tensor:
        """``[B, steps + 1, 2, nx, ny]``: the fine run's fields at the coarse nodes and frame times."""
        cfg = self.config
        fine, r, m = self.fine_propagator()
        h, dt = cfg.spacing_mm / r, self.dt / m
        coefficients = [self.specimen.coefficients(flaw_of(c), fine.shape, h, dt) for c in cases]
        coefficients = {k: np.stack([c[k] for c in coefficients]) for k in Propagator.FIELDS}
        start = self.pulse.state(fine.shape, h, dt).astype(np.float32)
        cur, prev = (np.repeat(start[i][None], len(cases), axis=0) for i in (0, 1))
        earlier = self.pulse.state(fine.shape, h, self.dt)[1].astype(np.float32)  # u(-dt) of the coarse step
        frames = [np.stack([cur, np.repeat(earlier[None], len(cases), axis=0)], axis=1)]
        key = "reference"
        for _ in range(steps):
            if cfg.steps_per_call > 1:
                cur, prev = fine.advance(cur, prev, coefficients, (cfg.steps_per_call - 1) * m, key)
            before = cur
            cur, prev = fine.advance(cur, prev, coefficients, m, key)
            frames.append(np.stack([cur, before], axis=1))
        out = np.stack(frames, axis=1)[..., ::r, ::r]
        return torch.from_numpy(np.ascontiguousarray(out)).to(torch.get_default_dtype())
