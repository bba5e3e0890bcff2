"""Resumable rows of a Karman training grid, shared by karman_scaling.py and karman_resnet.py.

Each finished run leaves its row of figures (a JSON file, committed), and a run whose row holds the
same config is not trained again, so a grid fills over several sittings and machines. A run's
folder keeps its checkpoints: an interrupted run resumes from its last one (its cosine probes too).
"""

from __future__ import annotations

import copy
import json
import statistics
import time
from pathlib import Path

import torch
from common import command

import zooframe
from zooframe.core.objective import CorrectionObjective
from zooframe.runs.trainer import Trainer, autograd_gradient

PROBE_WINDOWS = 2


def probe(trainer: Trainer, windows) -> float:
    """Mean cosine of the trainer's gradient (as its step would take it, on its own copies of
    the estimator's state and random generator) to the FO gradient of the same windows."""
    exp = trainer.exp
    theta = exp.flat.get()
    mask = trainer.plan.mask(trainer.step) if trainer.plan else None
    cosines = []
    for window in windows:
        fo, _ = autograd_gradient(CorrectionObjective(exp.runner, exp.flat, window, "exact"), theta)
        saved = exp.estimator, trainer.generator
        exp.estimator, trainer.generator = copy.deepcopy(saved[0]), torch.Generator().manual_seed(7)
        try:
            grad = trainer.gradient(window)[0]
        finally:
            exp.estimator, trainer.generator = saved
        fo = fo if mask is None else fo * mask
        cosines.append(float(torch.nn.functional.cosine_similarity(grad, fo, dim=0)))
    return statistics.mean(cosines)


def train(config: dict, folder: Path, row_file: Path, checkpoints: set[int], budget_s: float | None = None) -> dict:
    """One run, or the finished one whose row in ``row_file`` has the same config: its row of figures.
    A run stopped part way resumes from its folder's checkpoint. Held-out MAE is over the first 100
    steps of the evaluation rollout (``mae_100``) and over all of it (``mae_<evaluation steps>``);
    ``checkpoints`` are the steps at which ZO and NOG runs probe their gradient's cosine to FO."""
    if row_file.is_file():
        row = json.loads(row_file.read_text())
        if row["config"] == config:
            return row
    started = folder / "scaling_config.json"
    resume = started.is_file() and json.loads(started.read_text()) == config
    print(f"[{time.strftime('%H:%M:%S')}] {config['name']}{' (resumed)' if resume else ''}", flush=True)
    folder.mkdir(parents=True, exist_ok=True)
    started.write_text(json.dumps(config, indent=2) + "\n")
    probe_file = folder / "probes.json"
    probes: dict[str, float] = json.loads(probe_file.read_text()) if resume and probe_file.is_file() else {}
    windows: list = []
    # the simulator's calls and rows, less the probes', at the first and the last step of this sitting
    simulator: dict[str, list[int]] = {"probes": [0, 0]}

    def on_step(metrics: dict, trainer: Trainer) -> None:
        runner, probed = trainer.exp.runner, simulator["probes"]
        simulator.setdefault("first", [metrics["step"], runner.calls - probed[0], runner.rows - probed[1]])
        simulator["last"] = [metrics["step"], runner.calls - probed[0], runner.rows - probed[1]]
        if metrics["step"] in checkpoints and trainer.exp.config.training.mode in ("zo", "nog"):
            if not windows:
                sampler = trainer.exp.sampler(config["training"]["unroll"])
                gen = torch.Generator().manual_seed(1234)
                windows.extend(sampler.sample(-100 - k, gen) for k in range(PROBE_WINDOWS))
            calls, rows = runner.calls, runner.rows
            probes[str(metrics["step"])] = probe(trainer, windows)
            probe_file.write_text(json.dumps(probes))
            probed[0] += runner.calls - calls
            probed[1] += runner.rows - rows

    result = zooframe.run(config, output=folder, on_step=on_step, resume=resume, force=not resume)
    metrics = [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]
    ev = result.summary["evaluation"]
    per_step, horizon = ev["corrected"]["mae_per_step"], config["evaluation"]["steps"]
    row = {"config": config, "parameters": result.summary["parameters"],
           "active": result.summary.get("sparsity", {}).get("active", result.summary["parameters"]),
           "mae_100": statistics.mean(per_step[:100]), f"mae_{horizon}": ev["corrected"]["mae_mean"],
           "src_mae_100": statistics.mean(ev["src"]["mae_per_step"][:100]), f"src_mae_{horizon}": ev["src"]["mae_mean"],
           "queries_per_step": statistics.mean(m["queries"] for m in metrics),
           "step_s": statistics.median(m["step_s"] for m in metrics),
           "sim_s": statistics.median(m["sim_s"] for m in metrics),
           "train_s": sum(m["step_s"] for m in metrics), "steps": len(metrics),
           "cosine_to_fo": dict(sorted(probes.items(), key=lambda kv: int(kv[0])))}
    if "first" in simulator and simulator["last"][0] > simulator["first"][0]:  # the steps after this sitting's first
        (s0, c0, r0), (s1, c1, r1) = simulator["first"], simulator["last"]
        row["simulator_calls_per_step"], row["simulator_rows_per_step"] = (c1 - c0) / (s1 - s0), (r1 - r0) / (s1 - s0)
    if budget_s is not None:
        row["budget_s"] = budget_s
    row_file.parent.mkdir(parents=True, exist_ok=True)
    row_file.write_text(json.dumps(row, indent=2) + "\n")
    print(f"    MAE 100 {row['mae_100']:.4g}, {horizon} {row[f'mae_{horizon}']:.4g}; {row['step_s']:.3f} s/step, "
          f"{row['queries_per_step']:.0f} queries/step; cosine {row['cosine_to_fo']}", flush=True)
    return row


def aggregate(rows: list[dict]) -> dict:
    """The mean and standard deviation over ``rows`` (one a seed) of each figure they all hold."""
    def stat(key):
        values = [r[key] for r in rows]
        return statistics.mean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)

    out = {"seeds": [r["config"]["training"]["seed"] for r in rows], "steps": rows[0]["steps"],
           "parameters": rows[0]["parameters"], "active": rows[0]["active"]}
    budgets = [r["budget_s"] for r in rows if "budget_s" in r]  # a block of an earlier results file may have none
    if budgets:
        out["budget_s"] = budgets[0]
    maes = [key for key in rows[0] if key.startswith("mae_") and key[4:].isdigit()]  # mae_100 and the long horizon
    optional = ("sim_s", "simulator_calls_per_step", "simulator_rows_per_step")
    for key in (*maes, "queries_per_step", "step_s", "train_s", *optional):
        if all(key in r for r in rows):
            out[key], out[f"{key}_std"] = stat(key)
    out["mae_mean"], out["mae_std"] = out["mae_100"], out["mae_100_std"]  # BENCHMARKS.md's headline figure
    out["queries"] = out["queries_per_step"] * out["steps"]
    out["wall_s"] = out["train_s"]
    cos = [r["cosine_to_fo"] for r in rows if r.get("cosine_to_fo")]
    if cos:
        out["cosine_to_fo"] = {k: statistics.mean(c[k] for c in cos if k in c) for k in cos[0]}
    return out


def log_sitting(rows: Path, start: float) -> None:
    """Appends this sitting's command, date and wall time to ``rows``/sittings.jsonl."""
    rows.mkdir(parents=True, exist_ok=True)
    with open(rows / "sittings.jsonl", "a") as log:
        log.write(json.dumps({"command": command(), "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                              "wall_s": time.perf_counter() - start}) + "\n")


def sittings(rows: Path, earlier: list[dict]) -> list[dict]:
    """The sittings of an earlier results file, then those logged under ``rows`` that it lacks."""
    log = rows / "sittings.jsonl"
    logged = [json.loads(line) for line in log.read_text().splitlines()] if log.is_file() else []
    return list(earlier) + [s for s in logged if s not in earlier]
