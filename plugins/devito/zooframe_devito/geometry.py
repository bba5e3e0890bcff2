"""The specimen as continuous functions of position (mm), sampled on any grid: a plate with air
above and below, a flaw, absorbing sponges at the sides, the transducer's pulse and receivers.

Every grid (the coarse source and the fine reference) samples the same functions, so their
difference is discretization error only. Interfaces are smoothed over ``interface_mm``, about
one coarse cell, so that the coarse grid can represent them at all.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Flaw:
    """An elliptical flaw: centre (x, depth) in mm, semi-axes ``radius`` and ``radius * aspect``,
    turned by ``angle`` degrees from horizontal. aspect 1: a round void (pore); a small aspect: a crack."""

    x: float
    depth: float
    radius: float
    aspect: float = 1.0
    angle: float = 0.0

    def signed_distance(self, X: np.ndarray, Y: np.ndarray) -> np.ndarray:
        """About the distance to the flaw's edge in mm, negative inside (first order in the
        ellipse's level set, exact for a circle)."""
        a, b = self.radius, self.radius * self.aspect
        c, s = math.cos(math.radians(self.angle)), math.sin(math.radians(self.angle))
        dx, dy = X - self.x, Y - self.depth
        p, q = c * dx + s * dy, -s * dx + c * dy
        level = np.sqrt((p / a) ** 2 + (q / b) ** 2)
        grad = np.sqrt((p / a**2) ** 2 + (q / b**2) ** 2) / np.maximum(level, 1e-12)
        return np.where(level > 1e-12, (level - 1) / np.maximum(grad, 1e-12), -min(a, b))


@dataclass(frozen=True)
class Specimen:
    width: float  # mm, lateral (x)
    height: float  # mm, depth (y), top at 0
    velocity: float  # mm / us, the plate's (and the air layers' and flaw's: see density)
    top: float  # mm, depth of the plate's top surface (air above)
    bottom: float  # mm, depth of the backwall (air below)
    void_density: float  # density of air and flaw relative to the plate's
    interface: float  # mm, smoothing width of every interface
    sponge: float  # mm, absorbing layer at the sides (and at the top and bottom without free surfaces)
    sponge_strength: float  # eta at the outer edge, in units of velocity / sponge width
    free_surfaces: bool  # air above ``top`` and below ``bottom``; else the window is absorbing all round

    def void_fraction(self, X: np.ndarray, Y: np.ndarray, flaw: Flaw | None) -> np.ndarray:
        """1 in air and in the flaw, 0 in the plate, smooth across interfaces."""
        w = self.interface

        def inside(d):  # d < 0 inside
            return 0.5 * (1 - np.tanh(d / w))

        void = np.maximum(inside(Y - self.top), inside(self.bottom - Y)) if self.free_surfaces else np.zeros_like(X)
        if flaw is None:
            return void
        return np.maximum(void, inside(flaw.signed_distance(X, Y)))

    def density(self, X: np.ndarray, Y: np.ndarray, flaw: Flaw | None) -> np.ndarray:
        return np.exp(self.void_fraction(X, Y, flaw) * math.log(self.void_density))

    def eta(self, X: np.ndarray, Y: np.ndarray) -> np.ndarray:
        """Sponge damping (1 / us): a quadratic ramp over ``sponge`` mm at the left and right edges,
        and at the top and bottom unless those are free surfaces."""
        def ramp(d, extent):
            return np.maximum(np.maximum(self.sponge - d, d - (extent - self.sponge)), 0) / self.sponge

        depth = ramp(X, self.width) if self.free_surfaces else np.maximum(ramp(X, self.width), ramp(Y, self.height))
        return self.sponge_strength * self.velocity / self.sponge * depth**2

    def coefficients(self, flaw: Flaw | None, n: tuple[int, int], h: float, dt: float) -> dict[str, np.ndarray]:
        """The propagator's coefficients on an ``n`` grid of spacing ``h`` (nodes at 0, h, ...)."""
        x, y = np.arange(n[0]) * h, np.arange(n[1]) * h
        X, Y = np.meshgrid(x, y, indexing="ij")
        rho = self.density(X, Y, flaw)
        return {"kdt2": dt**2 * rho * self.velocity**2,
                "bx": 1 / self.density(X + h / 2, Y, flaw), "by": 1 / self.density(X, Y + h / 2, flaw),
                "damp": self.eta(X, Y) * dt / 2}


@dataclass(frozen=True)
class Pulse:
    """The transducer's pulse just after it entered the plate, travelling down from ``depth``
    (mm) under a Gaussian aperture of half-width ``aperture`` (mm) centred at ``x``: a tone burst
    of ``cycles`` periods (1/e width of its Gaussian envelope) at ``frequency`` (MHz), or a Ricker
    wavelet of that peak frequency when ``cycles`` is None."""

    x: float
    depth: float
    aperture: float
    frequency: float
    velocity: float
    cycles: float | None = None

    def field(self, X: np.ndarray, Y: np.ndarray, t: float) -> np.ndarray:
        tau = (self.depth + self.velocity * t - Y) / self.velocity  # us since the pulse's centre passed
        beam = np.exp(-(((X - self.x) / self.aperture) ** 2))
        if self.cycles is None:
            s = math.pi * self.frequency * tau
            return (1 - 2 * s**2) * np.exp(-s**2) * beam
        envelope = np.exp(-((2 * self.frequency * tau / self.cycles) ** 2))
        return np.sin(2 * math.pi * self.frequency * tau) * envelope * beam

    def state(self, n: tuple[int, int], h: float, dt: float) -> np.ndarray:
        """``[2, nx, ny]``: the field at t = 0 and at t = -dt."""
        x, y = np.arange(n[0]) * h, np.arange(n[1]) * h
        X, Y = np.meshgrid(x, y, indexing="ij")
        return np.stack([self.field(X, Y, 0.0), self.field(X, Y, -dt)])
