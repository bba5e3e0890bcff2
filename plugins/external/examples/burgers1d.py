#!/usr/bin/env python3
"""Example solver for zooframe's ``external`` simulator: first-order 1D viscous Burgers, NumPy.

    u_t + (u^2 / 2)_x = nu u_xx on x in [0, 2 pi), periodic

Rusanov flux on piecewise-constant reconstruction, central diffusion, forward Euler with
sub-steps n = max(1, ceil(dt / min(0.4 dx / max(max|u|, 1e-8), 0.4 dx^2 / max(nu, 1e-12))))
per row. ``nu`` is column ``--nu-column`` (default 0) of params.npy.

    python burgers1d.py --dt 0.05 [--workdir DIR]   # batch / case mode: one call
    python burgers1d.py --dt 0.05 --serve           # persistent mode: JSON lines on stdin/stdout

Batch mode reads manifest.json, state.npy and params.npy from the work directory (``--workdir``,
else $ZOOFRAME_WORKDIR, else the current directory) and writes output.npy there. Exit codes:
0 done, 2 unreadable input, 3 a numerical failure (NaN/Inf input, negative nu, too many
sub-steps).
"""

import argparse
import json
import math
import os
import sys

import numpy as np


class SolverError(Exception):
    def __init__(self, message, code):
        super().__init__(message)
        self.code = code


def advance_row(u, nu, dt, max_substeps):
    """One step of ``dt`` for one row ``u`` [C, N]."""
    n_cells = u.shape[-1]
    dx = 2 * math.pi / n_cells
    amax = float(np.max(np.abs(u)))
    limit = min(0.4 * dx / max(amax, 1e-8), 0.4 * dx * dx / max(nu, 1e-12))
    n = max(1, math.ceil(dt / limit))
    if n > max_substeps:
        raise SolverError(f"needs {n} sub-steps, more than --max-substeps {max_substeps} (max|u| = {amax:g})", 3)
    h = dt / n
    for _ in range(n):
        right = np.roll(u, -1, axis=-1)
        flux = 0.25 * (u * u + right * right) - 0.5 * np.maximum(np.abs(u), np.abs(right)) * (right - u)
        left = np.roll(u, 1, axis=-1)
        u = u + h * (-(flux - np.roll(flux, 1, axis=-1)) / dx + nu * (right - 2.0 * u + left) / (dx * dx))
    return u


def solve(workdir, manifest_name, args):
    try:
        with open(os.path.join(workdir, manifest_name)) as f:
            manifest = json.load(f)
        state = np.load(os.path.join(workdir, manifest.get("state", "state.npy")), allow_pickle=False)
        params = np.load(os.path.join(workdir, manifest.get("params", "params.npy")), allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise SolverError(f"cannot read the inputs in {workdir}: {exc}", 2)
    if state.ndim < 2 or state.dtype.kind != "f":
        raise SolverError(f"state must be a float array [B, C, N], got {state.dtype} {list(state.shape)}", 2)
    if params.ndim != 2 or len(params) != len(state) or params.shape[1] <= args.nu_column:
        raise SolverError(f"params must be [B, P] with a column {args.nu_column} for nu, got {list(params.shape)}", 2)
    state = state.astype(np.float64)
    if not np.isfinite(state).all():
        raise SolverError("the input state holds NaN or Inf", 3)
    out = np.empty_like(state)
    for b in range(len(state)):
        nu = float(params[b, args.nu_column])
        if not nu >= 0:
            raise SolverError(f"row {b}: nu is {nu}, it must not be negative", 3)
        out[b] = advance_row(state[b], nu, args.dt, args.max_substeps)
    target = os.path.join(workdir, manifest.get("output", "output.npy"))
    np.save(target + ".part.npy", out)
    os.replace(target + ".part.npy", target)


def serve(args):
    for line in sys.stdin:
        if not line.strip():
            continue
        try:
            request = json.loads(line)
            solve(request["workdir"], request.get("manifest", "manifest.json"), args)
            answer = {"ok": True}
        except SolverError as exc:
            answer = {"ok": False, "error": str(exc)}
        except (KeyError, TypeError, ValueError) as exc:
            answer = {"ok": False, "error": f"bad request {line.strip()[:200]!r}: {exc}"}
        sys.stdout.write(json.dumps(answer) + "\n")
        sys.stdout.flush()


def main():
    parser = argparse.ArgumentParser(description="first-order 1D Burgers step for zooframe's external simulator")
    parser.add_argument("--dt", type=float, required=True)
    parser.add_argument("--serve", action="store_true", help="persistent mode: JSON requests on stdin")
    parser.add_argument("--workdir", default=None, help="default: $ZOOFRAME_WORKDIR, else the current directory")
    parser.add_argument("--nu-column", type=int, default=0)
    parser.add_argument("--max-substeps", type=int, default=100000)
    args = parser.parse_args()
    if not args.dt > 0:
        parser.error("--dt must be positive")
    if args.serve:
        serve(args)
        return 0
    try:
        solve(args.workdir or os.environ.get("ZOOFRAME_WORKDIR", "."), "manifest.json", args)
    except SolverError as exc:
        print(f"burgers1d.py: {exc}", file=sys.stderr)
        return exc.code
    return 0


if __name__ == "__main__":
    sys.exit(main())
