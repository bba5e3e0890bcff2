"""Per-query cost of a ZO gradient estimate: a DeepZero-style loop (copy the model, perturb one
coordinate, one simulator call per query) against the local engine, the process backend and
the Ray backend, on the PhiFlow Karman task (64 x 32) and the Burgers task.

    python benchmarks/query_throughput.py [--repeats 3] [--turns 15]

Writes benchmarks/results/query_throughput.json.
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import tempfile
import time
import warnings
from pathlib import Path

import ray
import torch
from common import write_results

import zooframe
from zooframe.core.flat_params import FlatParams
from zooframe.core.objective import CorrectionObjective
from zooframe.execution.engine import LocalEngine
from zooframe.execution.process_engine import ProcessEngine
from zooframe.execution.ray_engine import RayEngine
from zooframe.execution.threads import ThreadPolicy
from zooframe.runs.experiment import Experiment

warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta state")
ROOT = Path(__file__).resolve().parents[1]


def karman_config(pressure_solver: str = "direct") -> dict:
    config = json.loads((ROOT / "examples" / "karman_zo_sol.json").read_text())
    config["simulator"]["pressure_solver"] = pressure_solver
    return config


def burgers_config(hidden_channels: int | None = None) -> dict:
    config = json.loads((ROOT / "examples" / "burgers_zo.json").read_text())
    if hidden_channels:
        config["model"]["hidden_channels"] = hidden_channels
    return config


def timed(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


class TimedObjective(CorrectionObjective):
    """Also counts the seconds spent in the network (normalization, forward, de-normalization)."""

    model_seconds = 0.0

    def _corrections(self, thetas, states):
        start = time.perf_counter()
        out = super()._corrections(thetas, states)
        self.model_seconds += time.perf_counter() - start
        return out


def local_estimates(engine: LocalEngine, objective: TimedObjective, queries, runner, repeats: int) -> dict:
    """Per-query time of a CGE estimate (median over repeats) and the shares of its wall time in
    simulator calls, in the network, and elsewhere (the engine: materializing parameter vectors,
    losses, bookkeeping)."""
    walls, shares = [], []
    for _ in range(repeats):
        sim, model, start = runner.seconds, objective.model_seconds, time.perf_counter()
        engine.evaluate(objective, queries)
        walls.append(time.perf_counter() - start)
        shares.append(((runner.seconds - sim) / walls[-1], (objective.model_seconds - model) / walls[-1]))
    sim, model = (statistics.median(x) for x in zip(*shares))
    per_query = statistics.median(walls) / len(queries)
    return {"per_query_s": per_query, "estimate_simulator_share": sim, "estimate_model_share": model,
            "estimate_engine_share": 1 - sim - model,
            # what no engine can go below: each query's solver steps and network passes, engine time zero
            "floor_per_query_s": per_query * (sim + model), "floor_simulator_share": sim / (sim + model)}


def interleaved(engines: dict, objective, queries, repeats: int) -> dict[str, list[float]]:
    """Seconds per estimate of each engine, the engines taking turns, so that a slow spell of
    this shared machine falls on all of them alike."""
    times = {name: [] for name in engines}
    for _ in range(repeats):
        for name, engine in engines.items():
            start = time.perf_counter()
            engine.evaluate(objective, queries)
            times[name].append(time.perf_counter() - start)
    return times


def deepzero_loop(exp: Experiment, objective: CorrectionObjective, coords: list[int], mu: float) -> None:
    """What DeepZero's CGE does per coordinate: deep-copy the parameters, perturb one, and run
    the whole unrolled loss for that single query."""
    w = objective.window
    for i in coords:
        model = copy.deepcopy(exp.model)
        flat = FlatParams(model)
        theta = flat.get()
        theta[i] += mu
        flat.set(theta)
        s = w.start
        with torch.no_grad():
            loss = 0.0
            for t in range(w.targets.shape[1]):
                p = exp.simulator.step(s, w.cases, w.seed + t)
                s = p + model(p, w.features)
                loss += (s - w.targets[:, t]).pow(2).mean()


def measure(name: str, config: dict, repeats: int, turns: int, loop_queries: int) -> dict:
    config = zooframe.load_config(config)
    exp = Experiment.build(config)
    objective = TimedObjective(exp.runner, exp.flat, exp.sampler(config.training.unroll).sample(0))
    queries = exp.estimator.ask(exp.flat.get(), torch.Generator())
    n = len(queries)
    print(f"[{name}] {n} queries per estimate, {len(objective.window.cases)} cases per query", flush=True)
    methods = {}

    coords = list(range(min(loop_queries, exp.flat.dim)))
    deepzero_loop(exp, objective, coords[:2], config.estimator.mu)  # warm-up (jit traces)
    methods["deepzero_loop"] = {"per_query_s": timed(lambda: deepzero_loop(exp, objective, coords,
                                                                           config.estimator.mu), repeats) / len(coords)}

    local = LocalEngine(config.execution.chunk_size)
    local.evaluate(objective, queries)  # warm-up
    methods["local"] = local_estimates(local, objective, queries, exp.runner, repeats)

    with tempfile.TemporaryDirectory() as tmp:  # simulator share of whole ZO steps (estimate + update)
        run_config = config.to_json()
        run_config["training"]["steps"] = 4
        run_config["output"] = {"progress": False}
        result = zooframe.run(run_config, output=tmp, progress=False)
        steps = [json.loads(line) for line in (Path(tmp) / "metrics.jsonl").read_text().splitlines()][1:]
        methods["local"]["simulator_share"] = statistics.median(m["sim_s"] / m["step_s"] for m in steps)
        methods["local"]["step_s"] = statistics.median(m["step_s"] for m in steps)
        del result

    with ProcessEngine(exp.worker_spec(), 2, n) as engine:
        engine.evaluate(objective, queries)  # warm-up: worker start-up and traces
        methods["process_2"] = {"per_query_s": timed(lambda: engine.evaluate(objective, queries), repeats) / n}

    # one Ray instance for both engines (3 actors on 2 cores: only the engine being timed is busy)
    ray.init(address="local", num_cpus=3, include_dashboard=False, object_store_memory=200 * 2**20)
    try:
        with RayEngine(exp.worker_spec(), 1, n) as ray_1, RayEngine(exp.worker_spec(), 2, n) as ray_2:
            engines = {"ray_1": ray_1, "ray_2": ray_2}
            for engine in engines.values():
                engine.evaluate(objective, queries)  # warm-up: worker start-up and traces
            times = interleaved(engines, objective, queries, turns)
    finally:
        ray.shutdown()
    for label, seconds in times.items():
        methods[label] = {"per_query_s": statistics.median(seconds) / n}
    speedup = statistics.median(t1 / t2 for t1, t2 in zip(times["ray_1"], times["ray_2"]))
    for label in ("process_2", "ray_1", "ray_2"):
        print(f"[{name}] {label}: {methods[label]['per_query_s'] * 1e3:.3f} ms per query", flush=True)

    loop, local = methods["deepzero_loop"]["per_query_s"], methods["local"]
    ratios = {"deepzero_loop_over_local": loop / local["per_query_s"],
              "deepzero_loop_over_floor": loop / local["floor_per_query_s"],
              "local_over_floor": local["per_query_s"] / local["floor_per_query_s"],
              "ray_2_over_ray_1_throughput": speedup}
    info = {"queries_per_estimate": n, "parameters": exp.flat.dim, "cases_per_query": len(objective.window.cases),
            "unroll": config.training.unroll, "loop_queries_timed": len(coords)}
    print(f"[{name}] " + json.dumps(ratios), flush=True)
    return {"methods": methods, "ratios": ratios, "setup": info}


def measure_all(args) -> dict:
    return {"karman": measure("karman", karman_config(), args.repeats, args.turns, args.loop_queries),
             # PhiFlow's CG (warm-started) instead of the exact solve: what the engine does with a costlier step
             "karman_cg": measure("karman_cg", karman_config("cg"), args.repeats, args.turns, args.loop_queries),
             "burgers": measure("burgers", burgers_config(), args.repeats, args.turns, args.loop_queries),
             # 3.4x the queries per estimate: how the backends scale with the size of a chunk
             "burgers_16_channels": measure("burgers_16_channels", burgers_config(hidden_channels=16),
                                            args.repeats, args.turns, args.loop_queries)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--turns", type=int, default=15, help="turns of Ray with 1 and 2 workers (their ratio is "
                        "the noisiest figure here)")
    parser.add_argument("--loop-queries", type=int, default=24, help="queries timed in the DeepZero-style loop")
    args = parser.parse_args()
    with ThreadPolicy("auto") as threads:  # as a run's default setting would drive the local engine
        tasks = measure_all(args)
    config = {"repeats": args.repeats, "turns": args.turns, "threads": {"setting": "auto", "checks": threads.history},
              "timing": "median over repeats, one full CGE estimate per repeat; ray_1 and ray_2 take turns (one "
                        "estimate each per turn) and their ratio is the median of the per-turn ratios",
              "estimate_shares": "local engine, one CGE estimate: simulator calls, the network, the rest",
              "floor": "the local estimate's simulator and network time per query: the per-query time of an engine "
                       "that costs nothing; deepzero_loop_over_floor is the most any engine could gain over the loop",
              "headline": "methods and ratios repeat tasks.karman, the reference task",
              "tasks": "karman: examples/karman_zo_sol.json (the ZO-SOL configuration of karman_accuracy), "
                       "direct pressure solve; karman_cg: the same with warm-started CG; burgers: examples/burgers_zo.json; burgers_16_channels: the same with "
                       "hidden_channels 16"}
    path = write_results("query_throughput", config, tasks["karman"]["methods"], tasks["karman"]["ratios"],
                         tasks=tasks)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
