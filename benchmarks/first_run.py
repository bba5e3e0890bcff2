"""The skeleton's first run on our tasks: `zooframe new-plugin`'s two example configs (supervised
pre-training, then the solver in the loop from its weights), with each task's own simulator, grid,
padding, horizon and evaluation length and everything else as the skeleton writes it. Each must
end below 1 (better than the uncorrected solver).

    python benchmarks/first_run.py                       # every task (heat1d is the skeleton's own)
    python benchmarks/first_run.py --task burgers karman # some; the others' blocks are kept
    python benchmarks/first_run.py --task fipy --zo-steps 60

Writes benchmarks/results/first_run.json: per task, the held-out error over the uncorrected
solver's after each stage, and each stage's wall time.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
import warnings
from pathlib import Path

import zooframe
from zooframe.plugins.scaffold import new_plugin

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import RESULTS, write_results  # noqa: E402

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
FIPY = {"kind": "spinodal", "resolution": 32, "length": 32.0, "dt": 2.0, "reference_factor": 4,
        "reference_substeps": 2, "warmup": 6}
# task -> (simulator section, padding, training.horizon, evaluation.steps, other training fields)
TASKS = {
    "heat1d": ({"kind": "heat1d", "cells": 32}, "circular", 40, 40, {}),
    "burgers": ({"kind": "burgers", "resolution": 24, "reference_factor": 4}, "circular", 50, 50, {}),
    "karman": (None, "zeros", 100, 100, {"cases_per_step": 2}),  # examples/karman_subspace.json's simulator
    "fipy": (FIPY, "circular", 16, 20, {"cases_per_step": 4}),
}


def skeleton(folder: Path, installed: bool):
    """The skeleton's two example configs, and a registry with its plugin (for the heat1d task) and,
    if ``installed``, the installed plugins (for the other tasks)."""
    root, _ = new_plugin("heat1d", folder / "zooframe-heat1d")
    sys.path.insert(0, str(root))
    import zooframe_heat1d.plugin as plugin

    configs = [json.loads((root / "examples" / name).read_text()) for name in ("heat1d_pretrain.json", "heat1d.json")]
    return configs, zooframe.Registry(load_external=installed, plugins={"zooframe-heat1d": plugin})


def run_task(task: str, configs: list[dict], registry, folder: Path, steps_of: dict[str, int | None]) -> dict:
    simulator, padding, horizon, steps, training = TASKS[task]
    if simulator is None:
        simulator = json.loads((EXAMPLES / "karman_subspace.json").read_text())["simulator"]
    row = {}
    for stage, config in zip(("non", "zo"), json.loads(json.dumps(configs))):
        config.update(simulator=simulator, execution={"threads": 1}, output={"progress": False, "figures": False})
        config["model"]["padding"] = padding
        config["training"].update(horizon=horizon, **training)
        config["evaluation"]["steps"] = steps
        if stage == "zo":
            config["training"]["init"] = str(folder / f"{task}-non")
        config["training"]["steps"] = steps_of[stage] or config["training"]["steps"]
        start = time.perf_counter()
        result = zooframe.run(config, output=folder / f"{task}-{stage}", progress=False, registry=registry)
        row[stage] = {"corrected_over_src": result.summary["evaluation"]["corrected_over_src"],
                      "steps": config["training"]["steps"], "wall_s": time.perf_counter() - start}
        print(task, stage, row[stage], flush=True)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", nargs="+", choices=list(TASKS), default=list(TASKS))
    parser.add_argument("--non-steps", type=int, help="steps of the pre-training stage (default: the skeleton's)")
    parser.add_argument("--zo-steps", type=int, help="steps of the solver-in-the-loop stage (default: the skeleton's)")
    args = parser.parse_args()
    warnings.simplefilter("ignore", DeprecationWarning)
    path = RESULTS / "first_run.json"
    tasks = json.loads(path.read_text()).get("tasks", {}) if path.is_file() else {}
    with tempfile.TemporaryDirectory() as tmp:
        configs, registry = skeleton(Path(tmp), installed=args.task != ["heat1d"])
        for task in args.task:
            tasks[task] = {"methods": run_task(task, configs, registry, Path(tmp), {"non": args.non_steps, "zo": args.zo_steps}),
                           "command": " ".join(["python", *sys.argv])}
    methods = {f"{task}_{stage}": block["methods"][stage] for task, block in tasks.items() for stage in ("non", "zo")}
    ratios = {f"{name}_over_src": m["corrected_over_src"] for name, m in methods.items()}
    write_results("first_run", {"skeleton": configs, "tasks": {t: TASKS[t][:4] for t in tasks}}, methods, ratios,
                  tasks=tasks)


if __name__ == "__main__":
    main()
