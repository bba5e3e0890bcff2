"""ZO at growing network sizes on the Karman task: NON, NOG, ZO-SOL with CGE (dense and a 90 %
sparse model), ZO-SOL guided (q 32 and 128), ZO-SOL subspace and FO-SOL, at about 600, 5k and 20k
parameters.

    python benchmarks/karman_scaling.py                                   # the whole grid
    python benchmarks/karman_scaling.py --sizes 608 5378 --seeds 0 --methods non nog zo_guided fo_sol
    python benchmarks/karman_scaling.py --methods zo_guided --equal-time zo_cge   # CGE for guided's time
    python benchmarks/karman_scaling.py --sizes 5378 --methods fo_sol --time-of fo_sol \
        --equal-time zo_subspace_forward_drop                                 # the main job's ZO for FO's time
    python benchmarks/karman_scaling.py --report                          # the results file, training nothing
    python benchmarks/karman_scaling.py --quick                           # smoke test, minutes

Every finished run leaves its row of figures in benchmarks/results/karman_scaling[_quick]_rows/
(committed), and a run whose row holds the same config is not trained again, so the grid is
filled over several sittings and machines. A run's folder under runs/karman_scaling[_quick]/
keeps its checkpoints: an interrupted run resumes from its last one (its cosine probes too). The
results file reports every row, and keeps the blocks of an earlier results file that the rows do
not cover (every seed of the block), with the commands that trained them, and names under
config.not_run each method, size and seed of the grid that has no full-length row, with the hours
a seed would take at its measured step time. Weights are the last step's for every method (no selection
on any split). Held-out MAE is over a 400-step rollout and over its first 100 steps; the cosine
of each method's gradient to autograd through PhiFlow (FO) is probed on fixed training windows
at a few steps. Writes benchmarks/results/karman_scaling[_quick].json and figures beside it.
"""

from __future__ import annotations

import argparse
import copy
import json
import time
import warnings
from pathlib import Path

from common import RESULTS, write_results
from karman_rows import PROBE_WINDOWS, aggregate, log_sitting, sittings, train

from zooframe.runs import figures

warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta state")

ROOT = Path(__file__).resolve().parents[1]
MAIN = json.loads((ROOT / "examples" / "karman_zo_sol.json").read_text())
BASE = {k: v for k, v in MAIN.items() if k in ("simulator", "model", "training", "evaluation")}
BASE["training"] = {**BASE["training"], "schedule": {"name": "cosine"}}
BASE["evaluation"] = {"steps": 400, "split": "test"}
BASE["output"] = {"progress": False}

# hidden channels x hidden layers of the conv corrector (3 x 3 kernels): 608, 5378 and 19970 parameters
SIZES = {608: (6, 1), 5378: (16, 2), 19970: (32, 2)}
GUIDED = {"kind": "guided", "q": 32, "alpha": 0.5, "k": 1, "mu": 0.01}
METHODS = {
    "non": {"training": {"mode": "non"}},
    "nog": {"training": {"mode": "nog"}},
    "zo_cge": {"training": {"mode": "zo"}, "estimator": {"kind": "cge"}},
    "zo_cge_sparse90": {"training": {"mode": "zo", "optimizer": {"name": "adam", "lr": 0.07}},
                        "estimator": {"kind": "cge"}, "sparsity": {"method": "zo_grasp", "ratio": 0.9}},
    "zo_guided": {"training": {"mode": "zo"}, "estimator": GUIDED},
    "zo_guided_q128": {"training": {"mode": "zo"}, "estimator": {**GUIDED, "q": 128}},
    "zo_subspace": {"training": {"mode": "zo"}, "estimator": {"kind": "subspace", "mu": 0.01}},
    "zo_subspace_forward": {"training": {"mode": "zo"}, "estimator": {"kind": "subspace", "mu": 0.01, "scheme": "forward"}},
    "zo_subspace_forward_drop": {"training": {"mode": "zo", "solver_jacobian": "drop"},
                                 "estimator": {"kind": "subspace", "mu": 0.01, "scheme": "forward"}},
    "fo_sol": {"training": {"mode": "fo"}},
}


TIMED_STEP_CAP = 1_000_000  # training.steps of a run that a seconds budget ends


def run_config(size: int, method: str, seed: int, steps: int, base: dict) -> dict:
    hidden, depth = SIZES[size]
    config = copy.deepcopy(base)
    config["model"].update(hidden_channels=hidden, depth=depth)
    config["estimator"] = {"kind": "cge"}
    spec = METHODS[method]
    for section, values in spec.items():
        config[section] = {**config.get(section, {}), **copy.deepcopy(values)}
    config["training"].update(steps=steps, seed=seed)
    config["name"] = f"{method}_{size}_seed{seed}_{steps}"
    return config


QUICK = copy.deepcopy(BASE)
QUICK["simulator"].update(resolution=[48, 24], reference_factor=2, warmup=300,
                          train_reynolds=[195.3, 781.3, 3125.0], test_reynolds=[585.9, 2343.8])
QUICK["training"].update(horizon=40, unroll=3)
QUICK["evaluation"]["steps"] = 100


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=list(SIZES), choices=list(SIZES))
    parser.add_argument("--methods", nargs="*", default=list(METHODS), choices=list(METHODS),
                        help="methods trained for --steps (none: only the --equal-time runs)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--equal-time", nargs="*", default=[], choices=list(METHODS), metavar="METHOD",
                        help="also train these methods for the training time of --time-of's method at each size "
                        "(the first seed for that time itself, the others for as many steps as it reached); a "
                        "method with an earlier equal-time run at that size trains as many steps as it did")
    parser.add_argument("--time-of", default="zo_guided", choices=list(METHODS), metavar="METHOD",
                        help="whose training time (its full runs, so it must be in --methods) the --equal-time "
                        "runs get (default zo_guided)")
    parser.add_argument("--report", action="store_true", help="train nothing; report the finished runs")
    parser.add_argument("--quick", action="store_true", help="the small flow, 608 parameters, 30 steps")
    args = parser.parse_args()
    base, name = (QUICK, "karman_scaling_quick") if args.quick else (BASE, "karman_scaling")
    if args.quick:
        args.sizes, args.seeds, args.steps = [608], [0], 30
    runs, rows = ROOT / "runs" / name, RESULTS / f"{name}_rows"
    start = time.perf_counter()
    if not args.report:
        train_grid(args, base, runs, rows)
        log_sitting(rows, start)
    report(rows, name, base, args.steps)


def train_grid(args, base: dict, runs: Path, rows: Path) -> None:
    checkpoints = {1, args.steps // 4, args.steps // 2, args.steps}

    def one(size: int, method: str, seed: int, steps: int, label: str, probes: set[int], budget_s=None,
            timed: bool = False) -> dict:
        config = run_config(size, method, seed, steps, base)
        if timed:  # trains for budget_s itself: a seconds budget, which the cosine schedule follows
            config["training"]["budget"] = {"seconds": budget_s}
        return train(config, runs / f"{size}" / label,
                     rows / f"{size}" / f"{label}.json", probes, budget_s)

    for size in args.sizes:
        full = {method: aggregate([one(size, method, seed, args.steps, f"{method}_seed{seed}", checkpoints)
                                   for seed in args.seeds]) for method in args.methods}
        for method in args.equal_time:
            if method == args.time_of:
                continue
            steps, budget_s = equal_time_budget(rows, size, method)
            seeds = args.seeds
            if steps is None:
                if args.time_of not in full:
                    raise SystemExit(f"--equal-time {method} at {size} parameters has no earlier equal-time run "
                                     f"to take its steps from: add {args.time_of} to --methods, whose time it gets")
                # the first seed trains for the time itself (step times measured in another sitting,
                # on a differently loaded machine, would give it the wrong steps); the others take as
                # many steps as it reached
                budget_s = full[args.time_of]["train_s"]
                first, *seeds = args.seeds
                steps = one(size, method, first, TIMED_STEP_CAP, f"{method}_seed{first}_equal_time", set(), budget_s,
                            timed=True)["steps"]
            for seed in seeds:
                one(size, method, seed, steps, f"{method}_seed{seed}_equal_time", {steps}, budget_s)


def equal_time_budget(rows: Path, size: int, method: str) -> tuple[int | None, float | None]:
    """The steps (and time budget) of an earlier equal-time run of ``method`` at ``size``, from
    its row or the results file's block: every seed trains as many steps as the first did, so
    that the seeds share one budget, whatever the machine's load when each is trained."""
    for path in sorted((rows / f"{size}").glob(f"{method}_seed*_equal_time.json")):
        row = json.loads(path.read_text())
        return row["steps"], row.get("budget_s")
    earlier = RESULTS / f"{rows.name.removesuffix('_rows')}.json"
    block = json.loads(earlier.read_text())["methods"].get(f"{method}_{size}_equal_time") if earlier.is_file() else None
    return (block["steps"], block.get("budget_s")) if block else (None, None)


def report(rows_dir: Path, name: str, base: dict, steps: int) -> None:
    """The results file from every row under ``rows_dir``: per method and size, the mean over seeds
    of the full-length runs (``steps``) and of the equal-time runs. A block of the earlier results
    file stays where the rows do not hold every one of its seeds (it was trained before the rows
    were kept); a block of one seed that the rows lack joins them as that seed's row."""
    groups: dict[str, list[dict]] = {}
    src: dict[int, dict] = {}
    step_s: dict[str, float] = {}  # any row's step time, calibrations included: what a missing run would cost
    for path in sorted(rows_dir.glob("*/*.json")):
        row = json.loads(path.read_text())
        size, label = int(path.parent.name), path.stem
        method = label.split("_seed")[0].removesuffix("_calibration")
        step_s.setdefault(f"{method}_{size}", row["step_s"])
        src.setdefault(size, {"mae_100": row["src_mae_100"], "mae_400": row["src_mae_400"],
                              "mae_mean": row["src_mae_100"], "mae_std": 0.0, "queries": 0, "wall_s": 0.0})
        if label.endswith("_equal_time"):
            groups.setdefault(f"{method}_{size}_equal_time", []).append(row)
        elif "_seed" in label and row["steps"] == steps:
            groups.setdefault(f"{method}_{size}", []).append(row)
    earlier = RESULTS / f"{name}.json"
    earlier = json.loads(earlier.read_text()) if earlier.is_file() else {}
    held = {key: {row["config"]["training"]["seed"] for row in rows} for key, rows in groups.items()}
    held.update({f"src_{size}": set() for size in src})
    blocks = {}
    for key, block in earlier.get("methods", {}).items():
        seeds = set(block.get("seeds", []))
        if key in held and seeds <= held[key]:
            continue
        if key in groups and len(seeds) == 1:  # a block of one seed that the rows lack is that seed's row
            groups[key].append({**block, "config": {"training": {"seed": block["seeds"][0]}}})
        else:
            blocks[key] = block
    methods = {key: aggregate(sorted(rows, key=lambda r: r["config"]["training"]["seed"]))
               for key, rows in sorted(groups.items())}
    methods.update({f"src_{size}": row for size, row in sorted(src.items())})
    methods.update(blocks)
    sizes = sorted({int(key.split("_")[-1]) for key in methods if key.startswith("src_")})
    not_run = {}
    for size in SIZES:
        for method in METHODS:
            key = f"{method}_{size}"
            missing = [s for s in (0, 1, 2) if s not in methods.get(key, {}).get("seeds", [])]
            if missing:
                cost = step_s.get(key, methods.get(f"{key}_equal_time", {}).get("step_s"))
                not_run[key] = {"seeds": missing, "step_s": cost,
                                "hours_per_seed": None if cost is None else cost * steps / 3600}
    ratios = {}
    for size in sizes:
        m = {k.removesuffix(f"_{size}"): v for k, v in methods.items() if k.endswith(f"_{size}")}
        m.update({f"{k.removesuffix(f'_{size}_equal_time')}_equal_time": v for k, v in methods.items()
                  if k.endswith(f"_{size}_equal_time")})
        for a, b in (("non", "zo_guided"), ("non", "zo_cge"), ("nog", "zo_guided"), ("nog", "zo_cge"),
                     ("zo_guided", "fo_sol"), ("zo_cge", "fo_sol"), ("nog", "fo_sol"), ("non", "src"),
                     ("zo_guided", "src"), ("zo_guided_q128", "fo_sol"), ("nog", "zo_guided_q128"),
                     ("zo_cge_sparse90", "fo_sol"), ("nog", "zo_cge_sparse90"), ("zo_subspace", "fo_sol"),
                     ("nog", "zo_subspace"), ("non", "zo_subspace"), ("zo_subspace", "src"),
                     ("zo_subspace_forward_drop_equal_time", "fo_sol")):  # the main job's ZO for FO's time
            if a in m and b in m:
                for horizon in ("100", "400"):
                    ratios[f"{a}_over_{b}_{horizon}_{size}"] = m[a][f"mae_{horizon}"] / m[b][f"mae_{horizon}"]
        for guided in ("zo_guided", "zo_guided_q128"):
            if guided in m and "zo_cge" in m:
                ratios[f"{guided}_queries_over_zo_cge_{size}"] = (m[guided]["queries_per_step"]
                                                                  / m["zo_cge"]["queries_per_step"])
    figs = plot(methods, sizes, name) if figures.available() else []
    trained_by = sittings(rows_dir, earlier.get("config", {}).get("runs_trained_by", []))
    config = {"base": base, "sizes": {s: SIZES[s] for s in sizes}, "methods": METHODS, "steps": steps,
              "probe_windows": PROBE_WINDOWS, "selection": "last step", "runs_trained_by": trained_by,
              "not_run": not_run}  # the grid's (method, size, seed) at `steps` without a row, and their cost
    path = write_results(name, config, methods, ratios, figures=figs)
    print(json.dumps(ratios, indent=2))
    print(f"wrote {path}")


def plot(methods: dict, sizes: list[int], name: str) -> list[str]:
    plt = figures._pyplot()
    out = []
    def rollouts(row):  # FO, NOG and NON query nothing, but each step runs one rollout at theta
        return max(row["queries"], row["steps"])

    for x, label, file in ((rollouts, "rollouts per run (a ZO query is one)", "mae_vs_queries"),
                           (lambda row: row["parameters"], "parameters", "mae_vs_parameters")):
        fig, ax = plt.subplots(figsize=(6, 4))
        for method in METHODS:
            points = [(x(methods[k]), methods[k]["mae_100"]) for s in sizes if (k := f"{method}_{s}") in methods]
            if points:
                ax.plot(*zip(*points), marker="o", label=method)
        ax.set_xscale("log")
        ax.set_xlabel(label)
        ax.set_ylabel("held-out MAE, 100 steps")
        ax.legend(fontsize=8)
        fig.tight_layout()
        path = RESULTS / f"{name}-{file}.png"
        fig.savefig(path, dpi=120)
        plt.close(fig)
        out.append(path.name)
    return out


if __name__ == "__main__":
    main()
