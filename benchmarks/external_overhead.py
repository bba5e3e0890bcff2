"""Per-call overhead of the external simulator plugin: one step of a batch, in each mode, against
the same first-order Burgers scheme run in-process.

    python benchmarks/external_overhead.py [--rows 64] [--resolution 32] [--repeats 15] [--python-case]
                                           [--mpi-ranks 2] [--mpi-case-repeats 3] [--no-mpi]

Methods: ``in_process`` (the torch scheme of ``zooframe_external.burgers1``: the baseline),
the C example (``plugins/external/examples/burgers1d.c``, compiled with gcc -O2) in batch, case
(max_processes 2) and persistent mode, and the Python example in batch and persistent mode (and
case mode with ``--python-case``), and the MPI example (``burgers1d_mpi.c``, compiled with the
``mpicc`` of the mpich wheel) under ``mpiexec -n RANKS`` in batch mode (a launch per call), case mode
(a launch per row, as many at once as the slots hold: this machine's cores / ranks; timed over
``--mpi-case-repeats`` repeats only, it is slow) and persistent mode (one MPI job serving every call;
the step to the bit the serial one's). Each call steps the same ``rows`` x 1 x ``resolution`` state;
methods take turns within each repeat, after one warm-up call each (persistent mode: the
process start-up, reported as ``first_call_s``). Times are medians over the repeats; ratios are
against the in-process baseline of the same run. Needs ``pip install -e plugins/external`` and
gcc (the MPI rows: mpicc and mpiexec, else they are left out and the output says so). Writes
benchmarks/results/external_overhead.json.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from common import write_results

from zooframe import Case
from zooframe_external import External, ExternalConfig, burgers1

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "plugins" / "external" / "examples"
DT = 0.05


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def mpi_tools() -> tuple[str, str] | None:
    """mpicc and mpiexec: the mpich wheel's beside this Python, else those on PATH (None: none)."""
    found = []
    for name in ("mpicc", "mpiexec"):
        here = os.path.join(os.path.dirname(sys.executable), name)
        found.append(here if os.access(here, os.X_OK) else shutil.which(name))
    return None if None in found else (found[0], found[1])


def mpich_version(mpiexec: str) -> str:
    out = subprocess.run([mpiexec, "--version"], capture_output=True, text=True).stdout
    return next((line.split(":", 1)[1].strip() for line in out.splitlines() if "Version" in line), "unknown")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=64)
    parser.add_argument("--resolution", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--python-case", action="store_true", help="also the Python example in case mode (slow)")
    parser.add_argument("--mpi-ranks", type=int, default=2, help="ranks of each MPI run")
    parser.add_argument("--mpi-case-repeats", type=int, default=3, help="repeats of the MPI case-mode row")
    parser.add_argument("--no-mpi", action="store_true", help="leave the MPI rows out")
    args = parser.parse_args()
    gcc = shutil.which("gcc")
    if gcc is None:
        sys.exit("gcc is not on PATH: the C example cannot be compiled")
    torch.set_num_threads(1)
    g = torch.Generator().manual_seed(0)
    state = torch.randn(args.rows, 1, args.resolution, generator=g, dtype=torch.float64)
    state = state / state.abs().amax(dim=-1, keepdim=True)
    nus = [0.01 * (1 + i % 8) for i in range(args.rows)]
    cases = [Case(f"case{i}", {"nu": nu}) for i, nu in enumerate(nus)]
    expected = burgers1.step(state, nus, DT)

    with tempfile.TemporaryDirectory() as tmp:
        exe = str(Path(tmp) / "burgers1d")
        subprocess.run([gcc, "-O2", "-std=c99", "-o", exe, str(EXAMPLES / "burgers1d.c"), "-lm"], check=True)
        solvers = {"c": [exe], "python": [sys.executable, str(EXAMPLES / "burgers1d.py")]}
        plans = [("c", "batch"), ("c", "case"), ("c", "persistent"), ("python", "batch"), ("python", "persistent")]
        if args.python_case:
            plans.append(("python", "case"))
        mpi = None if args.no_mpi else mpi_tools()
        if mpi is not None:
            solvers["c_mpi"] = [str(Path(tmp) / "burgers1d_mpi")]
            subprocess.run([mpi[0], "-O2", "-std=c99", "-o", solvers["c_mpi"][0], str(EXAMPLES / "burgers1d_mpi.c"),
                            "-lm"], check=True)
            os.environ["PATH"] = os.path.dirname(mpi[1]) + os.pathsep + os.environ.get("PATH", "")
            plans += [("c_mpi", "batch"), ("c_mpi", "case"), ("c_mpi", "persistent")]
        elif not args.no_mpi:
            print("no mpicc and mpiexec (pip install mpich): the MPI rows are left out")
        slots = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
        mpi_launch = {"launcher": "mpiexec", "ranks": args.mpi_ranks, "slots": max(slots, args.mpi_ranks)}
        sims = {f"{solver}_{mode}": External(ExternalConfig(
            kind="external", command=[*solvers[solver], "--dt", str(DT), *(["--serve"] if mode == "persistent" else [])],
            channels=["u"], spatial_shape=[args.resolution], mode=mode, workdir_root=tmp,
            max_processes=max(1, mpi_launch["slots"] // args.mpi_ranks) if solver == "c_mpi" else 2,
            launch=mpi_launch if solver == "c_mpi" else None))
            for solver, mode in plans}
        repeats = {name: args.mpi_case_repeats if name == "c_mpi_case" else args.repeats for name in sims}
        calls = {"in_process": lambda: burgers1.step(state, nus, DT)}
        calls.update({name: (lambda sim=sim: sim.step(state, cases, 0)) for name, sim in sims.items()})
        first, error = {}, {}
        for name, call in calls.items():  # warm-up: persistent start-up, imports, page cache
            first[name] = timed(call)
            error[name] = float((call() - expected).abs().max())
        times: dict[str, list[float]] = {name: [] for name in calls}
        for repeat in range(args.repeats):
            for name, call in calls.items():
                if repeat < repeats.get(name, args.repeats):
                    times[name].append(timed(call))
        for sim in sims.values():
            sim.close()

    base = statistics.median(times["in_process"])
    methods = {name: {"call_s": statistics.median(v), "call_s_min": min(v), "first_call_s": first[name],
                      "per_row_s": statistics.median(v) / args.rows, "max_abs_diff_vs_in_process": error[name]}
               for name, v in times.items()}
    ratios = {f"{name}_over_in_process": m["call_s"] / base for name, m in methods.items() if name != "in_process"}
    config = {"rows": args.rows, "resolution": args.resolution, "channels": 1, "dt": DT, "repeats": args.repeats,
              **({"mpi": {"launcher": "mpiexec", "ranks": args.mpi_ranks, "slots": mpi_launch["slots"],
                          "case_max_processes": max(1, mpi_launch["slots"] // args.mpi_ranks),
                          "case_repeats": args.mpi_case_repeats, "mpich": mpich_version(mpi[1])}}
                 if "c_mpi_batch" in methods else {}),
              "nu": "0.01 .. 0.08 over the rows", "torch_threads": 1, "max_processes": 2, "c_compiler": "gcc -O2 -std=c99",
              "scheme": "first-order Rusanov + central diffusion, forward Euler sub-steps (zooframe_external.burgers1)"}
    path = write_results("external_overhead", config, methods, ratios)
    width = max(map(len, methods))
    for name, m in methods.items():
        print(f"{name:<{width}}  {1e3 * m['call_s']:9.2f} ms/call  x{m['call_s'] / base:8.1f}  "
              f"first {1e3 * m['first_call_s']:8.1f} ms  diff {m['max_abs_diff_vs_in_process']:.1e}")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
