"""The Devito kernel: damped variable-density acoustic leapfrog on a batch of 2D grids.

    u_tt + eta u_t = K div(b grad u),   K = rho c^2 (bulk modulus), b = 1 / rho (buoyancy)

Rows of a batch are the first dimension of one 3D Devito grid ``(row, x, y)`` with derivatives
along ``x`` and ``y`` only, so one compiled Operator call steps every row, and the rows never
touch each other. The fluxes ``b du/dx`` live on staggered points and are stored in staggered
Functions between the two derivatives: Devito's single-expression form of a nested staggered
derivative did not converge above second order here (tests/test_propagator.py measures the
order of the form used).

The Operator is built and compiled lazily, once per dtype, and reused for every batch size by
passing that size's Functions to ``apply``; it is never pickled. Devito also keeps the compiled
library in its on-disk JIT cache (``devito-jitcache-uid*`` in the temporary directory), so a
later process with the same kernel loads it instead of running gcc.
"""

from __future__ import annotations

import os
from collections import OrderedDict
from contextlib import nullcontext

import numpy as np

LOG_ENV = "DEVITO_LOGGING"


def devito_quiet(level: str | None):
    """Devito's log level around our calls only: ``level``, or WARNING unless the user chose one
    through DEVITO_LOGGING; Devito's global configuration is restored afterwards."""
    from devito import switchconfig

    if level is None and os.environ.get(LOG_ENV):
        return nullcontext()
    return switchconfig(log_level=level or "WARNING")


class Propagator:
    """``steps`` leapfrog steps of every row of a batch on an ``nx x ny`` grid of spacing ``h``.

    Coefficients per row (arrays ``[B, nx, ny]``): ``kdt2`` = dt^2 K at nodes, ``bx`` and ``by``
    = b at the x- and y-faces (x + h/2, y + h/2), ``damp`` = eta dt / 2.
    """

    FIELDS = ("kdt2", "bx", "by", "damp")
    MAX_BATCH_SIZES = 4  # Function sets kept warm (each batch size has its own)

    def __init__(self, shape: tuple[int, int], spacing: float, space_order: int, log_level: str | None = None):
        self.shape, self.spacing, self.space_order = tuple(shape), float(spacing), int(space_order)
        self.log_level = log_level
        self._dims: dict = {}
        self._operators: dict = {}  # dtype -> Operator
        self._functions: OrderedDict = OrderedDict()  # (dtype, B) -> dict of Functions
        self.compiled = 0  # Operators built in this process

    def __getstate__(self):  # compiled kernels and Devito objects stay in their process
        return {"shape": self.shape, "spacing": self.spacing, "space_order": self.space_order,
                "log_level": self.log_level}

    def __setstate__(self, state):
        self.__init__(state["shape"], state["spacing"], state["space_order"], state["log_level"])

    # --- Devito objects -------------------------------------------------------------------------
    def _dimensions(self, dtype):
        if dtype not in self._dims:
            from devito import Constant, SpaceDimension, TimeDimension

            def space(name, value):
                return SpaceDimension(name=name, spacing=Constant(name=f"h_{name}", value=value, dtype=dtype))

            self._dims[dtype] = (space("row", 1.0), space("x", self.spacing), space("y", self.spacing),
                                 TimeDimension(name="time", spacing=Constant(name="dt", value=1.0, dtype=dtype)))
        return self._dims[dtype]

    def _fields(self, dtype, rows: int) -> dict:
        key = (dtype, rows)
        if key in self._functions:
            self._functions.move_to_end(key)
            return self._functions[key]
        from devito import Function, Grid, TimeFunction

        row, x, y, time = self._dimensions(dtype)
        nx, ny = self.shape
        with np.errstate(divide="ignore"):  # one row: Devito divides the row extent by 0; its spacing is unused
            grid = Grid(shape=(rows, nx, ny), extent=(rows, (nx - 1) * self.spacing, (ny - 1) * self.spacing),
                        dimensions=(row, x, y), time_dimension=time, dtype=dtype)
        so = self.space_order
        f = {"u": TimeFunction(name="u", grid=grid, time_order=2, space_order=so),
             "qx": Function(name="qx", grid=grid, space_order=so, staggered=x),
             "qy": Function(name="qy", grid=grid, space_order=so, staggered=y),
             "bx": Function(name="bx", grid=grid, space_order=so, staggered=x),
             "by": Function(name="by", grid=grid, space_order=so, staggered=y),
             "kdt2": Function(name="kdt2", grid=grid, space_order=0),
             "damp": Function(name="damp", grid=grid, space_order=0),
             "filled": None}
        self._functions[key] = f
        while len(self._functions) > self.MAX_BATCH_SIZES:
            self._functions.popitem(last=False)
        return f

    def _operator(self, dtype, f: dict):
        if dtype not in self._operators:
            from devito import Eq, Operator

            _, x, y, _ = self._dimensions(dtype)
            u, qx, qy = f["u"], f["qx"], f["qy"]
            hx, hy = x.spacing, y.spacing
            divergence = qx.dx(x0=x) + qy.dy(x0=y)
            update = (2 * u - (1 - f["damp"]) * u.backward + f["kdt2"] * divergence) / (1 + f["damp"])
            equations = [Eq(qx, f["bx"] * u.dx(x0=x + hx / 2)), Eq(qy, f["by"] * u.dy(x0=y + hy / 2)),
                         Eq(u.forward, update)]
            with devito_quiet(self.log_level):
                self._operators[dtype] = Operator(equations, name=f"acoustic_so{self.space_order}")
            self.compiled += 1
        return self._operators[dtype]

    def operator(self, dtype=np.float32):
        """The compiled Operator for ``dtype`` (built on first use)."""
        dtype = np.dtype(dtype).type
        return self._operator(dtype, self._fields(dtype, 1))

    # --- stepping --------------------------------------------------------------------------------
    def advance(self, cur: np.ndarray, prev: np.ndarray, coefficients, steps: int,
                key=None) -> tuple[np.ndarray, np.ndarray]:
        """``(u(t + steps dt), u(t + (steps - 1) dt))`` from ``cur = u(t)`` and ``prev = u(t - dt)``,
        arrays ``[B, nx, ny]``. ``coefficients``: a dict of arrays ``[B, nx, ny]`` (see the class), or a
        function that makes one. ``key`` names them (e.g. the rows' cases): when it is the same as the
        last call's for this batch size, they are neither made nor copied again."""
        dtype = np.dtype(cur.dtype).type
        f = self._fields(dtype, cur.shape[0])
        op = self._operator(dtype, f)
        if key is None or f["filled"] != key:
            if callable(coefficients):
                coefficients = coefficients()
            for name in self.FIELDS:
                f[name].data[:] = coefficients[name]
            f["filled"] = key
        u = f["u"]
        u.data[0] = prev
        u.data[1] = cur
        with devito_quiet(self.log_level):
            op.apply(time_m=1, time_M=steps, **{k: f[k] for k in ("u", "qx", "qy", *self.FIELDS)})
        return np.array(u.data[(steps + 1) % 3]), np.array(u.data[steps % 3])
