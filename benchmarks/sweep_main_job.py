"""A sweep of the main job's estimator settings (learning rate, finite-difference step mu) with
`zooframe sweep`: trials selected on validation Reynolds numbers carved out of the training ones,
the best trial evaluated once on the test Reynolds numbers, against the shipped example's own
settings (the sweep's first trial, evaluated on the test split here as the baseline).

    python benchmarks/sweep_main_job.py                         # about 17 minutes on 2 cores (24 trials,
                                                                # most of them pruned)
    python benchmarks/sweep_main_job.py --trials 2 --steps 2    # smoke test (on a test-sized example,
                                                                # add --set training.cases_per_step=1)

Writes benchmarks/results/sweep_main_job.json and the sweep's figure beside it; the sweep folder
(trials, study, best config) is runs/sweep_main_job, and a stopped sweep continues from it.
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

from common import RESULTS, write_results

from zooframe.config.files import parse_sets
from zooframe.runs.folder import evaluate_run
from zooframe.runs.sweep import sweep, table

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "karman_subspace.json"
SPACE = {"training.optimizer.lr": {"log_uniform": [1e-3, 5e-2]}, "estimator.mu": {"log_uniform": [1e-3, 1e-1]}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    # Optuna's TPE samples its first 10 trials at random: 24 give it 14 guided ones
    parser.add_argument("--trials", type=int, default=24, help="trials, the example's own settings first (default 24)")
    parser.add_argument("--steps", type=int, help="training steps of every trial (default: the example's)")
    parser.add_argument("--runs", default="runs/sweep_main_job", help="the sweep folder")
    parser.add_argument("--set", action="append", default=[], metavar="PATH=VALUE", help="as zooframe sweep --set")
    args = parser.parse_args()

    overrides = {"output.progress": False, "output.figures": False, **parse_sets(args.set)}
    if args.steps:
        overrides["training.steps"] = args.steps
    result = sweep(EXAMPLE, SPACE, trials=args.trials, output=args.runs, overrides=overrides, verbose=True)
    print(table(result), flush=True)
    best = result["best"]
    if best is None:
        raise SystemExit("no trial completed")
    example = next(t for t in result["trials"] if t["baseline"])
    if example["validation"] is None:
        raise SystemExit(f"the example's own settings did not complete: {example.get('why')}")
    # the baseline's test metric: measured here for the comparison, never seen by the sweep's selection
    tested = (evaluate_run(Path(args.runs) / example["run_dir"], split=result["test_split"])
              if example["number"] != best["number"] else None)
    example_test = (tested["corrected_over_src"] if tested else best["test"]["corrected_over_src"],
                    tested["corrected"]["mae_mean"] if tested else best["test"]["corrected_mae"])

    def method(trial: dict, test_ratio: float, test_mae: float) -> dict:
        return {"params": trial["params"], "validation_ratio": trial["validation"], "test_ratio": test_ratio,
                "mae_mean": test_mae, "wall_s": trial["wall_s"], "queries": trial["queries"],
                "simulator_calls": trial["simulator_calls"]}

    best_trial = next(t for t in result["trials"] if t["number"] == best["number"])
    methods = {"example": method(example, *example_test),
               "best": method(best_trial, best["test"]["corrected_over_src"], best["test"]["corrected_mae"])}
    ratios = {"best_over_example_validation": best["validation"] / example["validation"],
              "best_over_example_test": best["test"]["corrected_over_src"] / example_test[0]}
    figure = Path(args.runs) / result["figure"]
    figures = []
    if figure.is_file():
        RESULTS.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(figure, RESULTS / "sweep_main_job.png")
        figures.append("sweep_main_job.png")
    config = {"example": EXAMPLE.name, "overrides": overrides, "space": SPACE, "trials": args.trials,
              "validation": result["validation"], "metric": "corrected_over_src (held-out MAE corrected / "
              "uncorrected), validation cases for selection, test cases for the two rows"}
    trials = [{k: t[k] for k in ("number", "state", "params", "validation", "wall_s") if k in t} for t in
              result["trials"]]
    path = write_results("sweep_main_job", config, methods, ratios, figures=figures, trials=trials,
                         importances=result["importances"])
    print(json.dumps(ratios), f"\nwrote {path}")


if __name__ == "__main__":
    main()
