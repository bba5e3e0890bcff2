"""The baseline ladder (`zooframe compare`) on each task we have: does the solver in the loop pay off?

    python benchmarks/compare_tasks.py                        # every task: budget seconds=45, 3 seeds
    python benchmarks/compare_tasks.py --task burgers karman  # some tasks
    python benchmarks/compare_tasks.py --budget calls=20000 --seeds 1
    python benchmarks/compare_tasks.py --resume               # continue a stopped sitting (completed runs kept)
    python benchmarks/compare_tasks.py --smoke                # the smallest form: Burgers, steps=2, one seed

Each task is an example config run through :func:`zooframe.compare` unchanged but for
``output.figures`` (each run's own figures are left out; the ladder's figure is drawn here): SRC,
NON, NOG, ZO-SOL (the example's estimator) and, where the simulator is differentiable, FO-SOL,
each from the same initial weights under one budget, with each seed. The stated budget is 45 s
of training per method and seed, 3 seeds: about 5 tasks x 4.4 methods x 3 seeds x (45 s + the
normalization pass and the evaluation) = an hour on 2 cores, and equal wall time is the question
a user asks ("what does each method reach in the time I have?").

Tasks: ``karman`` (examples/karman_subspace.json, PhiFlow), ``fipy`` (examples/fipy_spinodal.json,
every method from the NON pre-training of examples/fipy_pretrain.json, trained here first),
``devito`` (examples/devito_pulse_echo.json), ``burgers`` (examples/burgers_zo.json) and
``external`` (the C example solver of plugins/external/examples, compiled with gcc, on a Burgers
reference file written here). A task whose plugin (or gcc) is missing is recorded as skipped.

Each task's block is merged under ``tasks.<name>`` of benchmarks/results/compare_tasks.json
(keeping the other tasks' blocks), in the results format: ``methods`` (``<metric>_mean``, its
spread over seeds ``<metric>_std``, ``ratio_to_src``, ``simulator_calls``, ``wall_s``, ``steps``,
each seed's metric), ``ratios`` (``zo_sol_over_src``, ``zo_sol_over_non``, ``zo_sol_over_nog``,
``fo_sol_over_zo_sol``), the ``recommendation`` and ``notes`` of the compare, and the figure
compare_tasks-<name>.png (metric against simulator calls and against wall time).
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from importlib.util import find_spec
from pathlib import Path

from common import RESULTS, command, machine, merge_task

import zooframe
from zooframe.runs import figures

ROOT = Path(__file__).resolve().parents[1]
NAME = "compare_tasks"
BUDGET, SEEDS = "seconds=45", 3
SMOKE_BUDGET = "steps=2"


def example(path: str) -> dict:
    config = json.loads((ROOT / path).read_text())
    config.pop("$schema", None)
    config["output"] = {**config.get("output", {}), "progress": False, "figures": False}
    return config


def pretrained(config: dict, pretrain: str, folder: Path, budget: str) -> dict:
    """``config`` starting from the NON pre-training ``pretrain`` (trained into ``folder`` unless it
    completed there; under --smoke as short as the budget)."""
    pre = example(pretrain)
    if budget.startswith("steps="):
        pre["training"]["steps"] = int(budget.split("=")[1])
    zooframe.run(pre, output=folder, resume=folder.is_dir())  # a fresh folder: no warning that nothing resumes
    config["training"]["init"] = str(folder)
    return config


def external_config(folder: Path) -> dict:
    """The external plugin's C example solver on a Burgers reference file (16 cells), as its tests set it up."""
    from zooframe.builtins.simulators.burgers import Burgers, BurgersConfig
    from zooframe.plugins.reference import SimulatorReference

    folder.mkdir(parents=True, exist_ok=True)
    exe = folder / "burgers1d"
    subprocess.run([shutil.which("gcc"), "-O2", "-std=c99", "-o", str(exe),
                    str(ROOT / "plugins" / "external" / "examples" / "burgers1d.c"), "-lm"], check=True)
    source = SimulatorReference.of(Burgers(BurgersConfig(kind="burgers", resolution=16,
                                                         train_viscosities=[0.01, 0.02, 0.04],
                                                         test_viscosities=[0.015, 0.03])))
    sets = source.cases()
    cases = sets["train"] + sets["test"]
    reference = zooframe.write_reference_file(
        folder / "burgers16.npz", source.trajectories(cases, 40).numpy(), [c.name for c in cases],
        [split for split, members in sets.items() for _ in members], {"nu": [c.params["nu"] for c in cases]},
        features=source.features(cases).numpy(), channels=["u"])
    return {"name": "external_c",
            "simulator": {"kind": "external", "command": [str(exe), "--dt", "0.05"], "channels": ["u"],
                          "spatial_shape": [16], "mode": "batch"},
            "reference": {"kind": "file", "path": str(reference)},
            "model": {"kind": "conv", "hidden_channels": 4, "kernel_size": 3, "depth": 0, "padding": "circular",
                      "zero_init_output": True},
            "estimator": {"kind": "subspace"},
            "training": {"mode": "zo", "steps": 1000, "unroll": 3, "horizon": 20, "optimizer": {"lr": 0.01}},
            "evaluation": {"steps": 40},
            "execution": {"threads": 1},
            "output": {"progress": False, "figures": False}}


def task_config(name: str, runs: Path, budget: str) -> dict | str:
    """The task's config, or why it cannot run here."""
    needs = {"karman": "zooframe_phiflow", "fipy": "zooframe_fipy", "devito": "zooframe_devito",
             "external": "zooframe_external"}
    if name in needs and find_spec(needs[name]) is None:
        return f"skipped: {needs[name]} is not installed"
    if name == "karman":
        return example("examples/karman_subspace.json")
    if name == "fipy":
        return pretrained(example("examples/fipy_spinodal.json"), "examples/fipy_pretrain.json",
                          runs / "fipy" / "pretrain", budget)
    if name == "devito":
        return example("examples/devito_pulse_echo.json")
    if name == "burgers":
        return example("examples/burgers_zo.json")
    if shutil.which("gcc") is None:
        return "skipped: gcc is not installed (the C example solver cannot be built)"
    return external_config(runs / "external" / "solver")


TASKS = ("karman", "fipy", "devito", "burgers", "external")


def block(name: str, config: dict, table: zooframe.Comparison, seconds: float) -> dict:
    metric = table.metric
    methods = {m: {f"{metric}_mean": r.metric, f"{metric}_std": r.spread, "ratio_to_src": r.ratio_to_src,
                   "simulator_calls": r.simulator_calls, "wall_s": r.wall_s, "steps": r.steps,
                   "seeds": {str(run["seed"]): run["metric"] for run in r.runs}}
               for m, r in table.rows.items()}
    value = {m: r.metric for m, r in table.rows.items()}
    ratios = {f"zo_sol_over_{m}": value["zo_sol"] / value[m] for m in ("src", "non", "nog")}
    if "fo_sol" in value:
        ratios["fo_sol_over_zo_sol"] = value["fo_sol"] / value["zo_sol"]
    figure = []
    if figures.available():
        RESULTS.mkdir(parents=True, exist_ok=True)
        points = {r.label: [(x["simulator_calls"], x["wall_s"], x["metric"]) for x in r.runs]
                  for m, r in table.rows.items() if m != "src"}
        figure = [figures.ladder(RESULTS / f"{NAME}-{name}.png", metric, value["src"], points).name]
    return {"benchmark": f"{NAME}.{name}", "command": command(),
            "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "machine": machine(),
            "config": {"budget": str(table.budget), "seeds": table.seeds, "metric": metric,
                       "compare_dir": str(table.dir), "resolved": config},
            "methods": methods, "ratios": ratios, "recommendation": table.recommendation, "notes": table.notes,
            "figures": figure, "total_wall_s": seconds}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", nargs="+", choices=TASKS, help="tasks to run (default: all; --smoke: burgers)")
    parser.add_argument("--budget", help=f"as zooframe compare --budget (default: {BUDGET}; --smoke: {SMOKE_BUDGET})")
    parser.add_argument("--seeds", type=int, help=f"seeds per method (default: {SEEDS}; --smoke: 1)")
    parser.add_argument("--runs", type=Path, default=ROOT / "runs" / NAME, help="folder for the compare folders")
    parser.add_argument("--resume", action="store_true", help="continue the compares of an earlier sitting")
    parser.add_argument("--smoke", action="store_true", help="the smallest form, for the tests")
    args = parser.parse_args()
    tasks = args.task or (["burgers"] if args.smoke else list(TASKS))
    budget = args.budget or (SMOKE_BUDGET if args.smoke else BUDGET)
    seeds = args.seeds or (1 if args.smoke else SEEDS)
    for name in tasks:
        start = time.perf_counter()
        config = task_config(name, args.runs, budget)
        if isinstance(config, str):
            print(f"{name}: {config}", flush=True)
            merge_task(NAME, name, {"benchmark": f"{NAME}.{name}", "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                         "skipped": config})
            continue
        table = zooframe.compare(config, budget=budget, seeds=seeds, output=args.runs / name, resume=args.resume,
                                 force=not args.resume, log=lambda line: print(f"  {line}", flush=True))
        path = merge_task(NAME, name, block(name, config, table, time.perf_counter() - start))
        print(table.text(), flush=True)
        print(f"wrote {path} ({name}, {time.perf_counter() - start:.0f} s)", flush=True)


if __name__ == "__main__":
    sys.exit(main())
