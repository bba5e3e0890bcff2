"""DNN sparsity for ZO training on the PhiFlow Karman task: dense ZO-SOL against sparse models
(ZO-GraSP pruning at initialization, pruned weights never estimated) and sparse gradients
(DeepZero: the model stays dense, each step estimates a random per-layer subset) at 50 / 90 / 95 %,
and, as controls, the dense and the 90 % sparse network trained with autograd through PhiFlow (FO).

The network is wider than the main job's (12 hidden channels, 2 hidden layers: 3170 parameters):
the main job's 608-parameter network keeps 61 weights at 90 %, and those saturate at a held-out
MAE of 0.033 (autograd, 400 steps) against 0.015 dense, so no training budget brings it near
the dense one. Each variant trains at its own learning rate (``LR``).

    python benchmarks/sparsity.py [--steps 60] [--seeds 3]
    python benchmarks/sparsity.py --quick      # smoke test on the small flow of karman_accuracy --quick

Writes benchmarks/results/sparsity[_quick].json and sparsity[_quick]-mae_vs_queries.png.
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import time
import warnings
from pathlib import Path

from common import RESULTS, write_results
from karman_accuracy import FULL, QUICK

import zooframe
from zooframe.runs import figures
from zooframe.runs.export import export_correction

warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta state")

VARIANTS = {"dense": ("zo", None), **{f"{use}_{pct}": ("zo", (use, pct / 100)) for use in ("model", "grad")
                                      for pct in (50, 90, 95)},
            # controls: the same dense and 90 % networks trained with autograd through PhiFlow, which
            # separates what the sparse network can learn from what the ZO estimate costs it
            "fo_dense": ("fo", None), "fo_model_90": ("fo", ("model", 0.9))}

MODEL = {"kind": "conv", "hidden_channels": 12, "kernel_size": 3, "depth": 2}
# Adam learning rates, from autograd sweeps of 60 steps (autograd and CGE train alike here; they
# are cheap to sweep with autograd). Dense: 0.01, the best of 0.003-0.03 on seed 0. Sparse
# networks need longer steps: about lr / density for a sparse model, capped where larger ones
# diverged (90 %: 0.07, the best mean over seeds 0-2 of 0.07 and 0.1; 0.05 and 0.2 were worse on
# seed 0), and lr / sqrt(density) for sparse gradients, whose coordinates each move in a fraction
# of the steps.
LR = {"dense": 0.01, "model_50": 0.02, "model_90": 0.07, "model_95": 0.1,
      "grad_50": 0.015, "grad_90": 0.03, "grad_95": 0.045, "fo_dense": 0.01, "fo_model_90": 0.07}


def train_seed(config: dict, seed: int, output: Path) -> zooframe.RunResult:
    config = copy.deepcopy(config)
    config["training"]["seed"] = seed  # training windows, pruning directions and gradient masks
    print(f"[{time.strftime('%H:%M:%S')}] {config['name']}, seed {seed}", flush=True)
    return zooframe.run(config, output=output, force=True)


def summarize(results: list[zooframe.RunResult], sparse_model: bool) -> dict:
    """A variant over its seeds: held-out MAE averaged over seeds (the trajectories of sparse
    networks at large learning rates differ a lot from seed to seed), step time as the median of
    all steps but each run's first."""
    metrics = [json.loads(line) for r in results for line in (r.dir / "metrics.jsonl").read_text().splitlines()]
    steps = [m for m in metrics if m["step"] > 1]
    maes = [r.summary["evaluation"]["corrected"]["mae_mean"] for r in results]
    size = export_correction(results[0].experiment, results[0].dir / "export.pt")
    sparsity = results[0].summary.get("sparsity", {})
    return {
        "step_s": statistics.median(m["step_s"] for m in steps),
        "queries_per_step": statistics.median(m["queries"] for m in steps),
        "queries_total": statistics.mean(r.summary["queries_total"] for r in results),
        "mae_mean": statistics.mean(maes),
        "mae_seed_std": statistics.stdev(maes) if len(maes) > 1 else 0.0,
        "mae_per_seed": [round(m, 5) for m in maes],
        "model_bytes": size["sparse_bytes"] if sparse_model else size["dense_bytes"],
        "active_coordinates": sparsity.get("active", results[0].summary["parameters"]),
        "parameters": results[0].summary["parameters"],
        "layers": sparsity.get("layers"),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=60, help="ZO optimizer steps per variant")
    parser.add_argument("--seeds", type=int, default=3, help="training seeds per variant (MAE: their mean)")
    parser.add_argument("--quick", action="store_true", help="the small flow of karman_accuracy --quick")
    parser.add_argument("--runs", type=Path, help="folder for the runs (default: runs/sparsity*)")
    args = parser.parse_args()
    bench = "sparsity_quick" if args.quick else "sparsity"
    runs = args.runs or Path("runs") / bench
    base = copy.deepcopy(QUICK if args.quick else FULL)
    base["training"]["steps"] = args.steps
    if not args.quick:
        base["model"] = MODEL
    methods = {}
    start = time.perf_counter()
    for name, (mode, variant) in VARIANTS.items():
        config = copy.deepcopy(base)
        config["name"] = name
        config["training"]["mode"] = mode
        if not args.quick:
            config["training"]["optimizer"]["lr"] = LR[name]
        if variant:
            use, ratio = variant
            config["sparsity"] = {"method": "zo_grasp", "ratio": ratio, "use": "model" if use == "model" else "gradient",
                                  "scope": "global"}
        results = [train_seed(config, seed, runs / name / f"seed{seed}") for seed in range(args.seeds)]
        methods[name] = summarize(results, sparse_model=variant is not None and variant[0] == "model")
        methods[name]["lr"] = config["training"]["optimizer"]["lr"]
        print(f"    {name}: step {methods[name]['step_s']:.2f} s, {methods[name]['queries_per_step']:.0f} queries, "
              f"MAE {methods[name]['mae_mean']:.4g} (seeds: {methods[name]['mae_per_seed']})", flush=True)
    src = results[0].summary["evaluation"]["src"]["mae_mean"]
    d, m90 = methods["dense"], methods["model_90"]
    ratios = {"dense_over_model_90_step_s": d["step_s"] / m90["step_s"],
              "model_90_over_dense_mae": m90["mae_mean"] / d["mae_mean"],
              "model_90_over_dense_bytes": m90["model_bytes"] / d["model_bytes"],
              "fo_model_90_over_fo_dense_mae": methods["fo_model_90"]["mae_mean"] / methods["fo_dense"]["mae_mean"]}
    RESULTS.mkdir(parents=True, exist_ok=True)
    plt = figures._pyplot()
    fig, ax = plt.subplots(figsize=(6, 4))
    for name, m in methods.items():
        if name.startswith("fo_"):  # no queries: a level to compare with
            ax.axhline(m["mae_mean"], color="tab:green" if name == "fo_dense" else "tab:red", ls=":", lw=1,
                       label=f"{name} (autograd)")
            continue
        marker = "o" if name.startswith("model") else "s" if name.startswith("grad") else "*"
        ax.errorbar(m["queries_total"], m["mae_mean"], yerr=m["mae_seed_std"], fmt=marker, ms=7, capsize=3)
        ax.annotate(name, (m["queries_total"], m["mae_mean"]), fontsize=8, xytext=(4, 4), textcoords="offset points")
    ax.axhline(src, color="gray", ls="--", lw=0.8, label="uncorrected source")
    ax.set(xscale="log", xlabel="simulator queries in training", ylabel="held-out MAE",
           title=f"ZO-SOL on Karman, {args.steps} steps, mean of {args.seeds} seeds")
    ax.legend()
    fig.tight_layout()
    fig.savefig(RESULTS / f"{bench}-mae_vs_queries.png", dpi=120)
    config = {**base, "seeds": args.seeds, "mae": "mean over seeds of the held-out MAE",
              "pruning": "zo_grasp, global scope, 64 RGE directions", "src_mae": src,
              "total_wall_s": time.perf_counter() - start}
    path = write_results(bench, config, methods, ratios, figures=[f"{bench}-mae_vs_queries.png"])
    print(json.dumps(ratios, indent=2))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
