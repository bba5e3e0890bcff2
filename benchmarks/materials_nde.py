"""Materials and NDE codes as black boxes: SRC (no correction), NON (supervised, no solver in the
loop), NOG (solver in the loop, no solver gradient) and ZO-SOL (the config's estimator through
the black-box step), on each task's example config, evaluated on its held-out cases.

    python benchmarks/materials_nde.py --task fipy          # one task
    python benchmarks/materials_nde.py --task all           # every task in TASKS
    ZOOFRAME_BENCHMARK_RESULTS=/tmp/md python benchmarks/materials_nde.py --task fipy --steps 20 --runs /tmp/md  # a smoke test
    python benchmarks/materials_nde.py --task fipy --resume  # reuse the completed runs of the same configs
    python benchmarks/materials_nde.py --task fipy --seeds 0 1 2   # each method trained with 3 seeds
    python benchmarks/materials_nde.py --task fipy --long-rollout 60  # also held-out MAE over 60 steps

A task is an example config in examples/ and, optionally, ``extra_metrics(simulator, predicted,
reference) -> dict[str, float]`` from its plugin package (imported only when the task runs;
``predicted`` and ``reference`` are held-out rollouts ``[cases, time, *state_shape]``). Each run
merges its block under ``tasks.<name>`` of benchmarks/results/materials_nde.json, keeping the
blocks of the other tasks, and writes the figures materials_nde-<name>-fields.png (source /
corrected / reference) and materials_nde-<name>-mae.png (error over the rollout) beside it.
Weights are the last step's for every method (no selection on any split).

With ``--seeds``, NON, NOG and ZO-SOL are trained once per training seed (the pre-training once, with
the example's seed). A method's ``mae_mean`` is then the mean over seeds of each seed's held-out MAE
(itself the mean over cases), ``mae_std`` the standard deviation over seeds, and ``seeds`` holds each
seed's figures; the ratios compare the means. Each row's ``mae_std_over`` says which spread it
gives (``seeds`` or ``cases``: the source and the pre-training are one run each). Extra metrics and
the field snapshots are the first seed's; the error curves are the means over seeds.

``--long-rollout N`` evaluates every trained network again on the held-out cases over N steps (the
training is unchanged); each row gains ``mae_mean_N_steps`` and ``mae_std_N_steps`` (over seeds, or
over cases with one seed) and the ratios ``zo_sol_over_src_N_steps`` and ``non_over_zo_sol_N_steps``.

A task with a ``pretrain`` config (supervised, no solver in the loop) trains it first, and every
method then starts from its weights (``training.init``): NON trains on without the solver, NOG and
ZO-SOL with it, for the same steps. Each method's queries, wall time and steps include the
pre-training's (also given apart as ``pretrain_*``); the pre-trained network alone is the row
``pretrain``.
"""

from __future__ import annotations

import argparse
import copy
import importlib
import json
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import torch
from common import RESULTS, command, machine, merge_task

import zooframe
from zooframe.runs import figures
from zooframe.runs.evaluation import held_out

ROOT = Path(__file__).resolve().parents[1]
NAME = "materials_nde"


@dataclass(frozen=True)
class Task:
    config: str  # path under the repository root
    extra_metrics: str | None = None  # "module:function", imported when the task runs
    packages: tuple[str, ...] = ()  # distributions whose versions go into the block's machine facts
    overrides: dict[str, dict[str, Any]] = field(default_factory=dict)  # per method: config sections to update
    pretrain: str | None = None  # an example config whose finished run every method starts from (training.init)

    def metrics_function(self) -> Callable | None:
        if self.extra_metrics is None:
            return None
        module, _, name = self.extra_metrics.partition(":")
        return getattr(importlib.import_module(module), name)


TASKS: dict[str, Task] = {
    "fipy": Task("examples/fipy_spinodal.json", "zooframe_fipy.metrics:extra_metrics", ("fipy", "zooframe-fipy"),
                 pretrain="examples/fipy_pretrain.json"),
    # NON's rollouts diverge at the example's lr 0.005 (held-out MAE 19x the source's); 0.001 was
    # the best of 0.005, 0.002, 0.001 and 0.0003 at 600 steps
    "devito": Task("examples/devito_pulse_echo.json", "zooframe_devito.metrics:extra_metrics",
                   ("devito", "zooframe-devito"),
                   overrides={"non": {"training": {"optimizer": {"name": "adam", "lr": 0.001}}}}),
}

METHODS = {"non": {"mode": "non"}, "nog": {"mode": "nog"}, "zo_sol": {"mode": "zo"}}


def example(path: str, name: str, steps: int | None) -> dict:
    config = json.loads((ROOT / path).read_text())
    config.pop("$schema", None)
    config["name"] = name
    if steps is not None:
        config["training"]["steps"] = steps
    config["output"] = {**config.get("output", {}), "progress": False}
    return config


def method_config(task: Task, method: str, steps: int | None, init: Path | None = None,
                  seed: int | None = None) -> dict:
    config = example(task.config, method, steps)
    config["training"].update(METHODS[method])
    if seed is not None:
        config["training"]["seed"] = seed
    if init is not None:
        config["training"]["init"] = str(init)
    for section, values in task.overrides.get(method, {}).items():
        config[section] = {**config.get(section, {}), **copy.deepcopy(values)}
    return config


def train(config: dict, folder: Path, resume: bool) -> zooframe.RunResult:
    print(f"[{time.strftime('%H:%M:%S')}] training {folder}: {config['training']}", flush=True)
    result = zooframe.run(config, output=folder, resume=resume, force=not resume)
    ev = result.summary["evaluation"]
    print(f"    held-out MAE {ev['corrected']['mae_mean']:.4g} (source {ev['src']['mae_mean']:.4g}) "
          f"in {result.summary['wall_s']:.0f} s", flush=True)
    return result


def seeds_row(rows: dict[int, dict]) -> dict:
    """One method's figures over training seeds: MAE mean and spread over seeds, the rest averaged."""
    if len(rows) == 1:
        return next(iter(rows.values()))
    maes = [r["mae_mean"] for r in rows.values()]
    out = {"mae_mean": statistics.fmean(maes), "mae_std": statistics.stdev(maes), "mae_std_over": "seeds",
           **{key: statistics.fmean(r[key] for r in rows.values()) for key in ("wall_s", "simulator_s")
              if all(r.get(key) is not None for r in rows.values())},
           **{key: round(statistics.fmean(r[key] for r in rows.values())) for key in ("queries", "steps")}}
    for key in ("mae_per_case", "mae_per_step"):
        out[key] = [statistics.fmean(v) for v in zip(*(r[key] for r in rows.values()))]
    out.update({key: value for key, value in next(iter(rows.values())).items() if key.startswith("pretrain_")})
    out["seeds"] = {str(seed): {"mae_mean": r["mae_mean"], "mae_std_over_cases": r["mae_std"],
                                "mae_per_case": r["mae_per_case"]} for seed, r in rows.items()}
    return out


def long_rollout(methods: dict[str, dict], folders: dict[str, list[Path]], steps: int) -> dict[str, float]:
    """Adds each method's held-out MAE over ``steps`` to its row (the runs in ``folders[method]``,
    one per seed) and the source's to ``methods["src"]``; returns the ratios at that length."""
    key = f"{steps}_steps"
    def evaluate(folder: Path) -> dict:
        with zooframe.load_run(folder) as exp:
            return zooframe.evaluate(exp, steps=steps)

    evals = {method: [evaluate(folder) for folder in runs] for method, runs in folders.items()}
    for method, done in evals.items():
        maes = [e["corrected"]["mae_mean"] for e in done]
        spread = statistics.stdev(maes) if len(maes) > 1 else done[0]["corrected"]["mae_std"]
        methods[method].update({f"mae_mean_{key}": statistics.fmean(maes), f"mae_std_{key}": spread})
    src = evals["zo_sol"][0]["src"]  # the same uncorrected rollouts for every run
    methods["src"].update({f"mae_mean_{key}": src["mae_mean"], f"mae_std_{key}": src["mae_std"]})
    mae = {m: methods[m][f"mae_mean_{key}"] for m in ("src", "non", "zo_sol")}
    return {f"zo_sol_over_src_{key}": mae["zo_sol"] / mae["src"], f"non_over_zo_sol_{key}": mae["non"] / mae["zo_sol"]}


def row(stats: dict, summary: dict | None, before: dict | None = None) -> dict:
    """A method's figures; ``before`` is the summary of the run it started from, whose queries,
    wall time and steps it includes (and reports apart as ``pretrain_*``)."""
    out = {"mae_mean": stats["mae_mean"], "mae_std": stats["mae_std"], "mae_std_over": "cases",
           "queries": summary["queries_total"] if summary else 0, "wall_s": summary["wall_s"] if summary else 0.0,
           "steps": summary["steps"] if summary else 0,
           "mae_per_case": stats["mae_per_case"], "mae_per_step": stats["mae_per_step"]}
    if summary:
        out["simulator_s"] = summary.get("simulator_s")
    if before:
        for key, value in (("queries", before["queries_total"]), ("wall_s", before["wall_s"]),
                           ("steps", before["steps"])):
            out[f"pretrain_{key}"] = value
            out[key] += value
    return out


def versions(packages: tuple[str, ...]) -> dict[str, str]:
    out = {}
    for package in packages:
        try:
            out[package] = version(package)
        except PackageNotFoundError:
            pass
    return out


def run_task(name: str, task: Task, runs: Path, steps: int | None, resume: bool = False,
             seeds: list[int] | None = None, long_steps: int | None = None) -> dict:
    start = time.perf_counter()
    pre = init = None
    if task.pretrain:
        init = runs / name / "pretrain"
        pre = train(example(task.pretrain, "pretrain", steps), init, resume)
    seeds = seeds or [example(task.config, "", None)["training"].get("seed", 0)]
    folder = (lambda method, seed: runs / name / method) if len(seeds) == 1 else \
        (lambda method, seed: runs / name / method / f"seed{seed}")
    every = {method: {seed: train(method_config(task, method, steps, init, seed), folder(method, seed), resume)
                      for seed in seeds} for method in METHODS}
    results = {method: by_seed[seeds[0]] for method, by_seed in every.items()}
    ev = results["zo_sol"].summary["evaluation"]
    methods = {"src": row(ev["src"], None)}
    if pre is not None:
        methods["pretrain"] = row(pre.summary["evaluation"]["corrected"], pre.summary)
    methods.update({m: seeds_row({seed: row(r.summary["evaluation"]["corrected"], r.summary, pre and pre.summary)
                                  for seed, r in by_seed.items()}) for m, by_seed in every.items()})
    mae = {m: v["mae_mean"] for m, v in methods.items()}
    ratios = {"zo_sol_over_src": mae["zo_sol"] / mae["src"], "non_over_zo_sol": mae["non"] / mae["zo_sol"],
              "nog_over_zo_sol": mae["nog"] / mae["zo_sol"], "non_over_src": mae["non"] / mae["src"]}
    if long_steps:
        folders = {m: [folder(m, seed) for seed in seeds] for m in METHODS}
        if pre is not None:
            folders["pretrain"] = [init]
        ratios.update(long_rollout(methods, folders, long_steps))

    held = {m: held_out(r.experiment) for m, r in results.items()}
    zo = results["zo_sol"].experiment
    metric = task.metrics_function()
    extra = {}
    if metric is not None:
        extra["src"] = metric(zo.simulator, held["zo_sol"].src, held["zo_sol"].reference)
        extra.update({m: metric(r.experiment.simulator, held[m].corrected, held[m].reference)
                      for m, r in results.items()})
        extra["reference"] = metric(zo.simulator, held["zo_sol"].reference, held["zo_sol"].reference)
        for split in ("train",):  # what the held-out cases are compared with
            cases = zo.cases(split)
            ref = zo.reference(cases, zo.config.evaluation.steps)
            extra[f"reference_{split}"] = metric(zo.simulator, ref, ref)

    figs = plot(name, zo, held, methods) if figures.available() else []
    config = {"example": task.config, "pretrain": task.pretrain, "steps_override": steps, "methods": METHODS,
              "overrides": task.overrides,
              "resolved": {"pretrain": json.loads((init / "config.json").read_text())} if pre else {},
              "seeds": seeds, "long_rollout_steps": long_steps, "held_out_cases": ev["cases"],
              "mae_std_over": "held-out cases" if len(seeds) == 1 else
              "training seeds of NON, NOG and ZO-SOL (each seed's MAE the mean over held-out cases); held-out "
              "cases for src and pretrain (each row's mae_std_over)"}
    config["resolved"].update({m: json.loads((folder(m, seeds[0]) / "config.json").read_text()) for m in METHODS})
    return {"benchmark": f"{NAME}.{name}", "command": command(),
            "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "machine": {**machine(), **versions(task.packages)}, "config": config, "methods": methods,
            "ratios": ratios, "extra_metrics": extra, "figures": figs, "total_wall_s": time.perf_counter() - start}


def plot(name: str, exp, held: dict, methods: dict) -> list[str]:
    RESULTS.mkdir(parents=True, exist_ok=True)
    zo = held["zo_sol"]
    steps = zo.reference.shape[1] - 1
    times = sorted({max(1, steps * k // 4) for k in (1, 2, 3, 4)})
    with torch.no_grad():
        fields = {label: exp.simulator.render(x[0]) for label, x in
                  (("source", zo.src), ("NON", held["non"].corrected), ("ZO-SOL", zo.corrected),
                   ("reference", zo.reference))}
    paths = [figures.snapshots(RESULTS / f"{NAME}-{name}-fields.png", fields, times,
                               f"{name}: held-out {zo.cases[0].name}"),
             figures.error_curves(RESULTS / f"{NAME}-{name}-mae.png",
                                  {m: v["mae_per_step"] for m, v in methods.items()},
                                  f"{name}: held-out MAE over the rollout (mean over {len(zo.cases)} cases)")]
    return [p.name for p in paths]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", default="all", choices=[*TASKS, "all"])
    parser.add_argument("--steps", type=int, help="training steps of every method (default: the example's)")
    parser.add_argument("--runs", type=Path, default=ROOT / "runs" / NAME, help="folder for the run folders")
    parser.add_argument("--seeds", type=int, nargs="+", help="training seeds of NON, NOG and ZO-SOL (default: "
                        "the example's)")
    parser.add_argument("--resume", action="store_true", help="keep runs of the same config that completed "
                        "(and continue stopped ones) instead of training them again")
    parser.add_argument("--long-rollout", type=int, metavar="STEPS", help="also evaluate every trained "
                        "network over this many held-out steps")
    args = parser.parse_args()
    if args.seeds and len(set(args.seeds)) < len(args.seeds):
        parser.error(f"--seeds {' '.join(map(str, args.seeds))}: each seed once")
    for name in (list(TASKS) if args.task == "all" else [args.task]):
        block = run_task(name, TASKS[name], args.runs, args.steps, args.resume, args.seeds, args.long_rollout)
        path = merge_task(NAME, name, block)
        print(json.dumps({name: {"ratios": block["ratios"],
                                 "mae": {m: v["mae_mean"] for m, v in block["methods"].items()}}}, indent=2))
        print(f"wrote {path} ({name}, {block['total_wall_s']:.0f} s)")


if __name__ == "__main__":
    main()
