"""Per-call overhead of the external simulator plugin: one step of a batch, in each mode, against
the same first-order Burgers scheme run in-process.

    python benchmarks/external_overhead.py [--rows 64] [--resolution 32] [--repeats 15] [--python-case]

Methods: ``in_process`` (the torch scheme of ``zooframe_external.burgers1``: the baseline),
the C example (``plugins/external/examples/burgers1d.c``, compiled with gcc -O2) in batch, case
(max_processes 2) and persistent mode, and the Python example in batch and persistent mode (and
case mode with ``--python-case``). Each call steps the same ``rows`` x 1 x ``resolution`` state;
methods take turns within each repeat, after one warm-up call each (persistent mode: the
process start-up, reported as ``first_call_s``). Times are medians over the repeats; ratios are
against the in-process baseline of the same run. Needs ``pip install -e plugins/external`` and
gcc. Writes benchmarks/results/external_overhead.json.
"""

from __future__ import annotations

import argparse
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=64)
    parser.add_argument("--resolution", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--python-case", action="store_true", help="also the Python example in case mode (slow)")
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
        sims = {f"{solver}_{mode}": External(ExternalConfig(
            kind="external", command=[*solvers[solver], "--dt", str(DT), *(["--serve"] if mode == "persistent" else [])],
            channels=["u"], spatial_shape=[args.resolution], mode=mode, max_processes=2, workdir_root=tmp))
            for solver, mode in plans}
        calls = {"in_process": lambda: burgers1.step(state, nus, DT)}
        calls.update({name: (lambda sim=sim: sim.step(state, cases, 0)) for name, sim in sims.items()})
        first, error = {}, {}
        for name, call in calls.items():  # warm-up: persistent start-up, imports, page cache
            first[name] = timed(call)
            error[name] = float((call() - expected).abs().max())
        times: dict[str, list[float]] = {name: [] for name in calls}
        for _ in range(args.repeats):
            for name, call in calls.items():
                times[name].append(timed(call))
        for sim in sims.values():
            sim.close()

    base = statistics.median(times["in_process"])
    methods = {name: {"call_s": statistics.median(v), "call_s_min": min(v), "first_call_s": first[name],
                      "per_row_s": statistics.median(v) / args.rows, "max_abs_diff_vs_in_process": error[name]}
               for name, v in times.items()}
    ratios = {f"{name}_over_in_process": m["call_s"] / base for name, m in methods.items() if name != "in_process"}
    config = {"rows": args.rows, "resolution": args.resolution, "channels": 1, "dt": DT, "repeats": args.repeats,
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
