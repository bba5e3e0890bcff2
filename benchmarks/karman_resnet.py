"""The solver-in-the-loop paper's kind of network through black-box PhiFlow: the PBDL book's ResNet
corrector (47,330 parameters) trained by ZO-SOL (subspace, forward differences, as the main job; the
same with mu 0.001, zo_sol_mu1e-3; and that with both Jacobians' surrogates, zo_sol_both), FO-SOL,
NOG and NON on the same data and schedule, then the paper's (260,354) by the ZO-SOLs and FO-SOL.

    python benchmarks/karman_resnet.py                     # the grid: book 6 methods x 3 seeds, paper 4 x seed 0
    python benchmarks/karman_resnet.py --sizes book --methods zo_sol fo_sol --seeds 0
    python benchmarks/karman_resnet.py --equal-time        # FO-SOL, NOG and NON for ZO-SOL's training time (book)
    python benchmarks/karman_resnet.py --calibrate 5       # 5 steps of each cell: the step times, and so the cost
    python benchmarks/karman_resnet.py --time-steps 6      # each size's methods taking 6 steps in turn
    python benchmarks/karman_resnet.py --probe-mu          # the estimate's cosine to FO by scheme and mu
    python benchmarks/karman_resnet.py --report            # the results file, training nothing
    python benchmarks/karman_resnet.py --quick             # smoke test: a small flow, 30 steps, the book's network

The rows are karman_scaling.py's (benchmarks/karman_rows.py): every finished run leaves its row in
benchmarks/results/karman_resnet[_quick]_rows/ (committed) and is not trained again, and a run
stopped part way resumes from its checkpoint under runs/karman_resnet[_quick]/, so the grid fills
over several sittings. The report gives per method and size the mean over seeds of held-out MAE
over 100 steps and over the paper's 500-step horizon, step time, simulator seconds, calls and rows
per step, and queries per step; the equal-wall-time runs; under config.in_progress the runs stopped
part way (the steps they reached and their step time: what the paper-sized runs got as far as);
and under config.not_run each cell of the grid without a finished row, with the hours a seed
would take at its measured step time (from a finished run, else --time-steps, else --calibrate).
--time-steps times each size's methods side by side at 1 thread, one step each in turn after 2
warm-up steps (zo_step.py's timing), into the rows folder's step_times.json; the report shows it as
interleaved_step_times. --probe-mu measures, at initialization and at the end of each finished
ZO-SOL run, the subspace estimate's cosine to the FO gradient by forward and central differences
at mu 0.1, 0.01 and 0.001 (into mu_probe.json; the report's mu_probe). Writes
benchmarks/results/karman_resnet[_quick].json.
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import time
import warnings
from pathlib import Path

import torch
from common import RESULTS, write_results
from karman_rows import PROBE_WINDOWS, aggregate, log_sitting, sittings, train
from zo_step import one_step

import zooframe
from zooframe.builtins.estimators.subspace import Subspace, SubspaceConfig
from zooframe.builtins.models.resnet import BOOK, PAPER
from zooframe.execution.engine import LocalEngine
from zooframe.plugins.estimator import StepInputs, orthonormal_basis
from zooframe.runs.checkpoint import load_tensors
from zooframe.runs.experiment import Experiment
from zooframe.runs.trainer import Trainer, autograd_gradient, autograd_term_gradients

warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta state")

ROOT = Path(__file__).resolve().parents[1]
MAIN = json.loads((ROOT / "examples" / "karman_subspace.json").read_text())
BASE = {k: copy.deepcopy(v) for k, v in MAIN.items() if k in ("simulator", "training")}
# ZO-SOL takes the main job's Jacobian setting below; NOG keeps the identity, as in karman_scaling.py
BASE["training"].pop("solver_jacobian", None)
BASE["training"]["optimizer"] = {"name": "adam", "lr": 0.001}  # the book's rate for its ResNet
BASE["evaluation"] = {"steps": 500, "split": "test"}
BASE["output"] = {"progress": False, "figures": False}

SIZES = {"book": BOOK, "paper": PAPER}
METHODS = {
    "zo_sol": {"training": {"mode": "zo", "solver_jacobian": MAIN["training"]["solver_jacobian"]},
               "estimator": MAIN["estimator"]},
    # the same with a tenth of the step: forward differences' curvature bias (mu/2 u^T H u) swamps the
    # slope along the surrogate directions late in training at this size (--probe-mu)
    "zo_sol_mu1e-3": {"training": {"mode": "zo", "solver_jacobian": MAIN["training"]["solver_jacobian"]},
                      "estimator": {**MAIN["estimator"], "mu": 0.001}},
    # and with both Jacobians' surrogates: 2m - 1 = 7 directions, whose span holds more of the gradient
    "zo_sol_both": {"training": {"mode": "zo", "solver_jacobian": "both"}, "estimator": {**MAIN["estimator"], "mu": 0.001}},
    "fo_sol": {"training": {"mode": "fo"}},
    "nog": {"training": {"mode": "nog"}},
    "non": {"training": {"mode": "non"}},
}
GRID = {"book": (list(METHODS), [0, 1, 2]), "paper": (["zo_sol", "zo_sol_mu1e-3", "zo_sol_both", "fo_sol"], [0])}
# more seeds where a gap is about the seeds' spread: the best ZO-SOL against FO-SOL over 500 steps
MORE_SEEDS = {("book", "zo_sol_both"): [3, 4, 5], ("book", "fo_sol"): [3, 4, 5]}
EQUAL_TIME = ("fo_sol", "nog", "non")  # trained for ZO-SOL's training time at the book's size

QUICK = copy.deepcopy(BASE)
QUICK["simulator"].update(resolution=[48, 24], reference_factor=2, warmup=300,
                          train_reynolds=[195.3, 781.3, 3125.0], test_reynolds=[585.9, 2343.8])
QUICK["training"].update(horizon=40, unroll=3)
QUICK["evaluation"]["steps"] = 100


def run_config(size: str, method: str, seed: int, steps: int, base: dict) -> dict:
    config = copy.deepcopy(base)
    config["model"] = dict(SIZES[size])
    for section, values in METHODS[method].items():
        config[section] = {**config.get(section, {}), **copy.deepcopy(values)}
    config["training"].update(steps=steps, seed=seed)
    config["name"] = f"resnet_{size}_{method}_seed{seed}_{steps}"
    return config


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", nargs="+", default=list(SIZES), choices=list(SIZES))
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS),
                        help="of each size's methods in the grid, these")
    parser.add_argument("--seeds", type=int, nargs="+", help="of each size's seeds in the grid, these")
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--eval-steps", type=int, help="held-out rollout (default 500, the paper's horizon)")
    parser.add_argument("--equal-time", action="store_true", help="train only FO-SOL, NOG and NON for ZO-SOL's "
                        "mean training time at the book's size (its full runs must have rows)")
    parser.add_argument("--calibrate", type=int, metavar="STEPS", help="train only STEPS steps of each cell "
                        "(evaluated over 100 steps), for the step times of what is not run")
    parser.add_argument("--time-steps", type=int, metavar="STEPS", help="train nothing; time STEPS steps of each "
                        "size's methods, taking steps in turn")
    parser.add_argument("--probe-mu", action="store_true", help="train nothing; the subspace estimate's cosine to FO "
                        "by forward and central differences at several mu, at initialization and at the end of "
                        "ZO-SOL's finished book-sized runs")
    parser.add_argument("--report", action="store_true", help="train nothing; report the finished runs")
    parser.add_argument("--quick", action="store_true", help="the small flow, the book's network, 30 steps, seed 0")
    args = parser.parse_args()
    base, name = (copy.deepcopy(QUICK), "karman_resnet_quick") if args.quick else (copy.deepcopy(BASE), "karman_resnet")
    if args.quick:
        args.sizes, args.seeds, args.steps = ["book"], [0], 30
    if args.eval_steps:
        base["evaluation"]["steps"] = args.eval_steps
    runs, rows = ROOT / "runs" / name, RESULTS / f"{name}_rows"
    start = time.perf_counter()
    if args.time_steps:
        time_steps(args, base, rows)
    elif args.probe_mu:
        probe_mu(args, base, runs, rows)
    elif not args.report:
        if args.equal_time:
            train_equal_time(args, base, runs, rows)
        else:
            train_grid(args, base, runs, rows)
        log_sitting(rows, start)
    report(rows, runs, name, base, args.steps)


def seeds_of(size: str, method: str) -> list[int]:
    return GRID[size][1] + MORE_SEEDS.get((size, method), [])


def cells(args) -> list[tuple[str, str, int]]:
    """The grid's (size, method, seed) that the arguments select."""
    return [(size, method, seed) for size in args.sizes for method in GRID[size][0] if method in args.methods
            for seed in seeds_of(size, method) if args.seeds is None or seed in args.seeds]


def train_grid(args, base: dict, runs: Path, rows: Path) -> None:
    checkpoints = {1, args.steps // 4, args.steps // 2, args.steps}
    if args.calibrate:
        base = copy.deepcopy(base)
        base["evaluation"]["steps"] = 100  # its reference is cheap; only the step time is wanted
        for size, method in dict.fromkeys((size, method) for size, method, _ in cells(args)):
            label = f"{method}_calibration"
            train(run_config(size, method, 0, args.calibrate, base), runs / size / label,
                  rows / size / f"{label}.json", set())
        return
    for size, method, seed in cells(args):
        label = f"{method}_seed{seed}"
        train(run_config(size, method, seed, args.steps, base), runs / size / label, rows / size / f"{label}.json",
              checkpoints)


def time_steps(args, base: dict, rows: Path) -> None:
    """Each size's methods in one process, one step each in turn so that a slow spell of the
    machine falls on all of them: median step and simulator seconds, into rows/step_times.json."""
    path = rows / "step_times.json"
    timed = json.loads(path.read_text()) if path.is_file() else {}
    for size in args.sizes:
        methods = [m for m in GRID[size][0] if m in args.methods]
        configs = {m: run_config(size, m, 0, args.steps, base) for m in methods}
        for config in configs.values():
            config["execution"] = {"threads": 1}  # the same for all: 'auto' may give each a different count
        trainers = {m: Trainer(Experiment.build(zooframe.load_config(config))) for m, config in configs.items()}
        times: dict[str, list] = {m: [] for m in methods}
        try:
            for rep in range(2 + args.time_steps):
                for method, trainer in trainers.items():
                    wall, sim = one_step(trainer)
                    if rep >= 2:
                        times[method].append((wall, sim, trainer.threads.threads))
        finally:
            for trainer in trainers.values():
                trainer.close()
        timed[size] = {"date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
        for method, steps in times.items():
            timed[size][method] = {"step_s": statistics.median(step[0] for step in steps),
                                   "sim_s": statistics.median(step[1] for step in steps), "steps": len(steps),
                                   "threads": max(step[2] for step in steps)}
        print(f"{size}: {timed[size]}", flush=True)
    rows.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(timed, indent=2) + "\n")


PROBE_MU = (0.1, 0.01, 0.001)
PROBE_MU_WINDOWS = 4


def probe_mu(args, base: dict, runs: Path, rows: Path) -> None:
    """The subspace estimate's cosine to the FO gradient by forward and by central differences at
    each mu in PROBE_MU, and the exact projection's (U U^T grad f, where both tend as mu -> 0; and
    onto the span of both Jacobians' surrogates, projection_both), on the same 4 training windows:
    at initialization and at the end of each finished ZO-SOL run at the book's size (its
    checkpoint). Into rows/mu_probe.json."""
    points = {"init": None} | {f"zo_sol_seed{seed}_step{args.steps}": runs / "book" / f"zo_sol_seed{seed}"
                               for seed in GRID["book"][1]}
    found = {}
    for point, folder in points.items():
        exp = Experiment.build(zooframe.load_config(run_config("book", "zo_sol", 0, args.steps, base)), train=True)
        trainer = Trainer(exp)
        try:
            if folder is not None:
                if not (folder / "checkpoint.pt").is_file():
                    continue
                state = load_tensors(folder / "checkpoint.pt")
                if state["step"] != args.steps:
                    continue
                trainer.load_state_dict(state)
            theta, draws = exp.flat.get(), torch.Generator().manual_seed(4321)
            cosines: dict[str, list[float]] = {}
            for k in range(PROBE_MU_WINDOWS):
                window = trainer.sampler.sample(50_000 + k, draws)
                fo, _ = autograd_gradient(exp.objective(window, "exact"), theta)
                objective = exp.objective(window, trainer.jacobian)
                surrogates, loss = autograd_term_gradients(objective, theta)
                basis = orthonormal_basis(surrogates.T)
                both = orthonormal_basis(autograd_term_gradients(exp.objective(window, "both"), theta)[0].T)
                found_here = {"projection": basis @ (basis.T @ fo), "projection_both": both @ (both.T @ fo)}
                for scheme in ("forward", "central"):
                    for mu in PROBE_MU:
                        est = Subspace(SubspaceConfig(kind="subspace", mu=mu, scheme=scheme))
                        queries = est.ask(theta, draws, StepInputs(surrogates=surrogates, loss=loss))
                        with torch.no_grad():
                            values = LocalEngine(256).evaluate(objective, queries)
                        found_here[f"{scheme}_mu{mu:g}"] = est.tell(queries, values)
                for name, grad in found_here.items():
                    cosines.setdefault(name, []).append(float(torch.nn.functional.cosine_similarity(grad, fo, dim=0)))
            found[point] = {name: statistics.mean(c) for name, c in cosines.items()}
            print(f"{point}: " + ", ".join(f"{k} {v:+.3f}" for k, v in found[point].items()), flush=True)
        finally:
            trainer.close()
    rows.mkdir(parents=True, exist_ok=True)
    (rows / "mu_probe.json").write_text(json.dumps(found, indent=2) + "\n")


def full_rows(rows: Path, size: str, method: str, steps: int) -> list[dict]:
    found = [json.loads(p.read_text()) for p in sorted((rows / size).glob(f"{method}_seed*.json"))
             if not p.stem.endswith("_equal_time")]
    return [row for row in found if row["steps"] == steps]


def train_equal_time(args, base: dict, runs: Path, rows: Path) -> None:
    """FO-SOL, NOG and NON at the book's size, each seed for ZO-SOL's mean training time: as many
    steps as that time buys at the method's median step time in its full runs."""
    zo = full_rows(rows, "book", "zo_sol", args.steps)
    if not zo:
        raise SystemExit(f"--equal-time needs ZO-SOL's full runs ({args.steps} steps) at the book's size: "
                         "train them first (--sizes book --methods zo_sol)")
    budget_s = statistics.mean(row["train_s"] for row in zo)
    for method in EQUAL_TIME:
        if method not in args.methods:
            continue
        own = full_rows(rows, "book", method, args.steps)
        if not own:
            raise SystemExit(f"--equal-time {method}: no full run of {method} at the book's size to take its "
                             "step time from: train it first")
        steps = max(1, round(budget_s / statistics.median(row["step_s"] for row in own)))
        for seed in GRID["book"][1]:
            if args.seeds is None or seed in args.seeds:
                label = f"{method}_seed{seed}_equal_time"
                train(run_config("book", method, seed, steps, base), runs / "book" / label,
                      rows / "book" / f"{label}.json", {steps}, budget_s)


def in_progress(runs: Path, size: str, label: str) -> dict | None:
    """How far a run stopped part way got: its steps and median step time, from its run folder."""
    path = runs / size / label / "metrics.jsonl"
    if not path.is_file():
        return None
    metrics = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    if not metrics:
        return None
    return {"steps_reached": metrics[-1]["step"], "step_s": statistics.median(m["step_s"] for m in metrics),
            "sim_s": statistics.median(m["sim_s"] for m in metrics)}


def report(rows_dir: Path, runs: Path, name: str, base: dict, steps: int) -> None:
    horizon = base["evaluation"]["steps"]
    interleaved_file = rows_dir / "step_times.json"
    interleaved = json.loads(interleaved_file.read_text()) if interleaved_file.is_file() else {}
    methods: dict[str, dict] = {}
    step_times: dict[str, dict] = {}  # per method and size: from its full runs, else its calibration run
    not_run, started = {}, {}
    for size, (size_methods, _) in GRID.items():
        for method in size_methods:
            key, seeds = f"{method}_{size}", seeds_of(size, method)
            full = full_rows(rows_dir, size, method, steps)
            if full:
                methods[key] = aggregate(sorted(full, key=lambda r: r["config"]["training"]["seed"]))
                src = full[0]
                methods.setdefault(f"src_{size}", {"mae_100": src["src_mae_100"],
                                                   f"mae_{horizon}": src[f"src_mae_{horizon}"],
                                                   "mae_mean": src["src_mae_100"], "mae_std": 0.0, "queries": 0,
                                                   "wall_s": 0.0})
            equal = sorted(rows_dir.glob(f"{size}/{method}_seed*_equal_time.json"))
            if equal:
                methods[f"{key}_equal_time"] = aggregate([json.loads(p.read_text()) for p in equal])
            calibration = rows_dir / size / f"{method}_calibration.json"
            timed = full[0] if full else json.loads(calibration.read_text()) if calibration.is_file() else None
            if timed:
                step_times[key] = {k: timed[k] for k in ("parameters", "step_s", "sim_s", "queries_per_step",
                                                         "simulator_calls_per_step", "simulator_rows_per_step")
                                   if k in timed}
                step_times[key]["from"] = f"{steps}-step run" if full else f"{timed['steps']}-step calibration run"
            done = {row["config"]["training"]["seed"] for row in full}
            missing = [seed for seed in seeds if seed not in done]
            if missing:
                cost = step_times.get(key, {}).get("step_s")
                if not full and method in interleaved.get(size, {}):
                    cost = interleaved[size][method]["step_s"]
                not_run[key] = {"seeds": missing, "step_s": cost,
                                "hours_per_seed": None if cost is None else cost * steps / 3600}
                for seed in missing:
                    if progress := in_progress(runs, size, f"{method}_seed{seed}"):
                        started[f"{key}_seed{seed}"] = progress
    ratios = {}
    for size in SIZES:
        m = {k.removesuffix(f"_{size}"): v for k, v in methods.items() if k.endswith(f"_{size}")}
        for a, b in (("zo_sol", "fo_sol"), ("zo_sol_mu1e-3", "fo_sol"), ("zo_sol_both", "fo_sol"), ("non", "zo_sol"),
                     ("non", "zo_sol_both"),
                     ("nog", "zo_sol"), ("zo_sol", "src"), ("fo_sol", "src"), ("non", "fo_sol")):
            if a in m and b in m:
                for h in ("100", str(horizon)):
                    ratios[f"{a}_over_{b}_{h}_{size}"] = m[a][f"mae_{h}"] / m[b][f"mae_{h}"]
        for method in EQUAL_TIME:
            if f"{method}_{size}_equal_time" in methods and "zo_sol" in m:
                for h in ("100", str(horizon)):
                    ratios[f"{method}_equal_time_over_zo_sol_{h}_{size}"] = (
                        methods[f"{method}_{size}_equal_time"][f"mae_{h}"] / m["zo_sol"][f"mae_{h}"])
        if f"zo_sol_{size}" in step_times and f"fo_sol_{size}" in step_times:
            ratios[f"zo_sol_step_over_fo_sol_step_{size}"] = (step_times[f"zo_sol_{size}"]["step_s"]
                                                              / step_times[f"fo_sol_{size}"]["step_s"])
        turns = interleaved.get(size, {})
        if "zo_sol" in turns and "fo_sol" in turns:
            ratios[f"zo_sol_step_over_fo_sol_step_in_turns_{size}"] = (turns["zo_sol"]["step_s"]
                                                                       / turns["fo_sol"]["step_s"])
    earlier = RESULTS / f"{name}.json"
    earlier = json.loads(earlier.read_text()) if earlier.is_file() else {}
    config = {"base": base, "sizes": SIZES, "methods": METHODS, "grid": GRID,
              "more_seeds": {f"{method}_{size}": seeds for (size, method), seeds in MORE_SEEDS.items()},
              "equal_time": list(EQUAL_TIME),
              "steps": steps, "horizon": horizon, "probe_windows": PROBE_WINDOWS, "selection": "last step",
              "runs_trained_by": sittings(rows_dir, earlier.get("config", {}).get("runs_trained_by", [])),
              "in_progress": started, "not_run": not_run}
    mu_probe = rows_dir / "mu_probe.json"
    mu_probe = json.loads(mu_probe.read_text()) if mu_probe.is_file() else {}
    interleaved_rows = {f"{method}_{size}": {**row, "date": block["date"]} for size, block in interleaved.items()
                        for method, row in block.items() if method != "date"}
    path = write_results(name, config, methods, ratios, step_times=step_times, interleaved_step_times=interleaved_rows,
                         mu_probe=mu_probe)
    print(json.dumps({"ratios": ratios, "step_times": step_times, "not_run": not_run}, indent=2))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
