"""Karman wake-flow accuracy on held-out Reynolds numbers: SRC (no correction), NON (supervised,
no solver in the loop), NON trained for ZO-SOL's wall time, ZO-SOL (CGE through the black-box
PhiFlow solver) and FO-SOL (autograd through the solver), all with the same model and data.

    python benchmarks/karman_accuracy.py            # full: within 60 minutes on 2 cores
    python benchmarks/karman_accuracy.py --quick    # smoke test: within 5 minutes

Writes benchmarks/results/karman_accuracy[_quick].json and figures beside it.
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

import zooframe
from zooframe.runs import figures
from zooframe.runs.evaluation import held_out, rollout
from zooframe_phiflow.karman import shedding

warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta state")

# the main job's configuration (README), without its run name, output folder and execution settings
FULL = {key: value for key, value in json.loads((Path(__file__).resolve().parents[1] / "examples" /
                                                 "karman_zo_sol.json").read_text()).items()
        if key in ("simulator", "model", "estimator", "training", "evaluation")}
FULL["output"] = {"progress": False}
QUICK = copy.deepcopy(FULL)
QUICK["simulator"].update(resolution=[48, 24], reference_factor=2, warmup=300,
                          train_reynolds=[195.3, 781.3, 3125.0], test_reynolds=[585.9, 2343.8])
QUICK["model"].update(hidden_channels=4, depth=0)
QUICK["training"].update(steps=40, horizon=40, unroll=3, optimizer={"name": "adam", "lr": 0.002})
QUICK["evaluation"].update(steps=40)


def train(base: dict, name: str, runs: Path, **training) -> zooframe.RunResult:
    config = copy.deepcopy(base)
    config["name"] = name
    config["training"].update(training)
    print(f"[{time.strftime('%H:%M:%S')}] training {name}: {config['training']}", flush=True)
    result = zooframe.run(config, output=runs / name, force=True)
    print(f"    {name}: MAE {result.summary['evaluation']['corrected']['mae_mean']:.4g} "
          f"in {result.summary['wall_s']:.0f} s", flush=True)
    return result


def step_times(result: zooframe.RunResult) -> list[float]:
    return [json.loads(line)["step_s"] for line in (result.dir / "metrics.jsonl").read_text().splitlines()]


def physical_differences(exp, probe_steps: int) -> dict:
    """Shedding frequency and amplitude per case on the source grid (uncorrected solver from the
    reference's first frame) and of the reference: do held-out cases differ from training ones?"""
    cx, cy = exp.simulator.config.resolution
    probe = (int(0.6 * cx), cy // 2)  # cross-stream velocity on the wake's centre line
    out = {}
    for split in ("train", "test"):
        cases = exp.cases(split)
        ref = exp.reference(cases, exp.config.evaluation.steps)
        src = rollout(exp, ref[:, 0], cases, probe_steps, corrected=False)
        for i, case in enumerate(cases):
            s, r = shedding(src[i], probe, exp.simulator.config.dt), shedding(ref[i], probe, exp.simulator.config.dt)
            out[case.name] = {"split": split, "re": case.params["re"], "source_frequency": s["frequency"],
                              "source_amplitude": s["amplitude"], "reference_amplitude": r["amplitude"]}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small smoke-test variant (minutes)")
    parser.add_argument("--runs", type=Path, help="folder for the runs (default: runs/karman_accuracy*)")
    args = parser.parse_args()
    name = "karman_accuracy_quick" if args.quick else "karman_accuracy"
    base = QUICK if args.quick else FULL
    runs = args.runs or Path("runs") / name
    start = time.perf_counter()

    results = {"non": train(base, "non", runs, mode="non"),
               "zo_sol": train(base, "zo_sol", runs, mode="zo"),
               "fo_sol": train(base, "fo_sol", runs, mode="fo")}
    non_step = statistics.median(step_times(results["non"]))
    equal_steps = max(1, round(results["zo_sol"].summary["wall_s"] / non_step))
    results["non_equal_time"] = train(base, "non_equal_time", runs, mode="non", steps=equal_steps)

    evaluation = results["zo_sol"].summary["evaluation"]
    methods = {"src": {"mae_mean": evaluation["src"]["mae_mean"], "mae_std": evaluation["src"]["mae_std"],
                       "queries": 0, "wall_s": 0.0, "steps": 0, "mae_per_step": evaluation["src"]["mae_per_step"]}}
    for method, result in results.items():
        s, ev = result.summary, result.summary["evaluation"]["corrected"]
        methods[method] = {"mae_mean": ev["mae_mean"], "mae_std": ev["mae_std"], "queries": s["queries_total"],
                           "wall_s": s["wall_s"], "steps": s["steps"], "mae_per_case": ev["mae_per_case"],
                           "mae_per_step": ev["mae_per_step"]}
    mae = {k: v["mae_mean"] for k, v in methods.items()}
    ratios = {"non_over_zo_sol": mae["non"] / mae["zo_sol"],
              "non_equal_time_over_zo_sol": mae["non_equal_time"] / mae["zo_sol"],
              "zo_sol_over_fo_sol": mae["zo_sol"] / mae["fo_sol"],
              "zo_sol_over_src": mae["zo_sol"] / mae["src"]}

    zo = results["zo_sol"].experiment
    physics = physical_differences(zo, probe_steps=400)
    RESULTS.mkdir(parents=True, exist_ok=True)
    states = held_out(zo)
    steps = states.reference.shape[1] - 1
    times = [max(1, steps * k // 4) for k in (1, 2, 3, 4)]
    with torch.no_grad():
        fields = {label: zo.simulator.render(x[0]) for label, x in
                  (("source", states.src), ("ZO-corrected", states.corrected), ("reference", states.reference))}
    figs = [figures.snapshots(RESULTS / f"{name}-vorticity.png", fields, times,
                              f"vorticity, held-out {states.cases[0].name}"),
            figures.error_curves(RESULTS / f"{name}-mae.png", {k: v["mae_per_step"] for k, v in methods.items()},
                                 "held-out MAE over the rollout")]
    config = {**base, "total_wall_s": time.perf_counter() - start, "non_equal_time_steps": equal_steps}
    path = write_results(name, config, methods, ratios, physical_difference=physics,
                         figures=[f.name for f in figs])
    print(json.dumps({"ratios": ratios, "mae": mae}, indent=2))
    print(f"wrote {path} in {config['total_wall_s']:.0f} s")


if __name__ == "__main__":
    main()
