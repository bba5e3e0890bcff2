"""Compile and per-step cost of the Devito pulse-echo step next to PhiFlow's Karman step.

    OMP_NUM_THREADS=1 python plugins/devito/benchmarks/step_cost.py [--json OUT]

Devito: the Operator's build and compilation in a fresh process with an empty JIT cache (gcc
runs), and with the cache that run left (the library is loaded from disk), then the median
step time of the example config's source scheme (64 x 64, 2 time steps per call) at 1 row and
at 66 rows (one guided estimate of the example: 2q + 1 queries x 2 cases) and 130 rows. PhiFlow (if
zooframe-phiflow is installed): the Karman main job's source step (64 x 32) traced and compiled
once (``jit_compile``), then the median step time at 1 row and at 130 rows (2q + 1 queries x 2
cases of examples/karman_guided.json). One torch thread each. Each measurement runs in a
subprocess of its own so that nothing is warm from an earlier one.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

DEVITO = r"""
import json, os, statistics, sys, time
import numpy as np
import torch
torch.set_num_threads(1)
t0 = time.perf_counter()
from zooframe.plugins.reference import SimulatorReference
from zooframe_devito.simulator import PulseEcho, PulseEchoConfig
sim = PulseEcho(PulseEchoConfig(kind="pulse_echo", cache_dir=sys.argv[1]))
t1 = time.perf_counter()
import devito
out = {"import_s": time.perf_counter() - t0}
cases = SimulatorReference.of(sim).cases()["train"][:2]
state = torch.from_numpy(sim.pulse.state(sim.config.cells, sim.config.spacing_mm, sim.dt)).float()[None]
t0 = time.perf_counter()
sim.propagator.operator(np.float32)  # symbolic lowering, code generation, gcc (or the JIT cache)
out["operator_s"] = time.perf_counter() - t0
t0 = time.perf_counter()
sim.step(state, cases[:1], 0)
out["first_step_s"] = time.perf_counter() - t0
out["jit_cache"] = devito.configuration["compiler"].get_jit_dir().as_posix()
for rows in (1, 66, 130):
    batch, rows_cases = state.expand(rows, -1, -1, -1).contiguous(), [cases[i % 2] for i in range(rows)]
    sim.step(batch, rows_cases, 0)
    times = []
    for _ in range(15):
        t0 = time.perf_counter(); sim.step(batch, rows_cases, 0); times.append(time.perf_counter() - t0)
    out[f"step_s_{rows}"] = statistics.median(times)
print(json.dumps(out))
"""

PHIFLOW = r"""
import json, statistics, sys, time, warnings
warnings.filterwarnings("ignore")
import torch
torch.set_num_threads(1)
t0 = time.perf_counter()
from zooframe.plugins.reference import SimulatorReference
from zooframe_phiflow.karman import Karman, KarmanConfig
sim = Karman(KarmanConfig(kind="karman", resolution=(64, 32), cache_dir=sys.argv[1]))
import_s = time.perf_counter() - t0
cases = SimulatorReference.of(sim).cases()["train"][:2]
out = {"import_s": import_s}
with torch.no_grad():
    for rows in (1, 130):
        state = sim.solver.initial(rows, kick=0.5)
        rows_cases = [cases[i % 2] for i in range(rows)]
        t0 = time.perf_counter(); sim.step(state, rows_cases, 0); out[f"first_step_s_{rows}"] = time.perf_counter() - t0
        times = []
        for _ in range(15):
            t0 = time.perf_counter(); sim.step(state, rows_cases, 0); times.append(time.perf_counter() - t0)
        out[f"step_s_{rows}"] = statistics.median(times)
print(json.dumps(out))
"""


def run(code: str, env: dict, cache: str) -> dict:
    done = subprocess.run([sys.executable, "-c", code, cache], env=env, capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", help="write the figures to this file too")
    args = parser.parse_args()
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = {}
    with tempfile.TemporaryDirectory() as tmp:
        env_devito = {**env, "TMPDIR": tmp}  # Devito's JIT cache lives in the temporary directory
        cold = run(DEVITO, env_devito, os.path.join(tmp, "refs"))
        warm = run(DEVITO, env_devito, os.path.join(tmp, "refs"))
        result["devito"] = {"cold_jit_cache": cold, "warm_jit_cache": warm}
        try:
            result["phiflow"] = run(PHIFLOW, env, os.path.join(tmp, "refs"))
        except subprocess.CalledProcessError as exc:
            result["phiflow"] = {"error": exc.stderr.strip().splitlines()[-1] if exc.stderr else str(exc)}
    result["command"] = " ".join(["python", *sys.argv])
    result["date"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    text = json.dumps(result, indent=2)
    print(text)
    if args.json:
        with open(args.json, "w") as f:
            f.write(text + "\n")


if __name__ == "__main__":
    main()
