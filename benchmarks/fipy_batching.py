"""How to batch FiPy, which solves one mesh at a time: the spinodal plugin's step per row with a
new mesh and equation per row (the plain ``step_one`` way), one kept mesh stepped row by row, and
one mesh of disjoint periodic grids per call (the default); then whole ZO steps of
examples/fipy_spinodal.json (from its initial weights, not its pre-trained ones: a step's cost does
not depend on them) with the local engine and with a pool of worker processes. A step call holds as
many rows as the call of one of the example's ZO estimates: its queries (less a surrogate rollout)
times its cases per step.

    python benchmarks/fipy_batching.py [--repeats 5] [--zo-steps 6]

Writes benchmarks/results/fipy_batching.json. Timings are medians over repeats (step calls) or
over the ZO steps after the first (which builds the meshes).
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import tempfile
import time
from importlib.metadata import version
from pathlib import Path

import torch
from common import write_results

import zooframe
from zooframe.config.registry import resolve
from zooframe.plugins.reference import SimulatorReference
from zooframe_fipy import Spinodal, SpinodalConfig

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = json.loads((ROOT / "examples" / "fipy_spinodal.json").read_text())
EXAMPLE.pop("$schema")


def states(sim: Spinodal, rows: int) -> tuple[torch.Tensor, list]:
    """``rows`` states a few source steps into the separation, cycling over the training cases."""
    train = SimulatorReference.of(sim).cases()["train"]
    cases = [train[i % len(train)] for i in range(rows)]
    n = sim.config.resolution
    start = torch.stack([torch.as_tensor(sim.initial_state(c, n))[None] for c in cases])
    return sim.step(sim.step(start, cases, 0), cases, 0), cases


def step_call_ms(batching: str, rows: int, repeats: int) -> dict:
    sim = Spinodal(SpinodalConfig(**{**EXAMPLE["simulator"], "batching": batching}))
    state, cases = states(sim, rows)
    sim.step(state, cases, 0)  # builds the kept meshes
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        sim.step(state, cases, 0)
        times.append(time.perf_counter() - start)
    call = statistics.median(times)
    return {"rows": rows, "call_ms": 1000 * call, "ms_per_row": 1000 * call / rows}


def zo_step_s(backend: str, workers: int, batching: str, steps: int, runs: Path) -> dict:
    config = copy.deepcopy(EXAMPLE)
    config["name"] = f"{backend}{workers}_{batching}"
    config["simulator"]["batching"] = batching
    config["training"]["steps"] = steps
    config["training"].pop("init", None)
    config["evaluation"]["steps"] = 1
    config["execution"] = {**config["execution"], "backend": backend, "threads": 1,
                           **({"workers": workers} if backend == "process" else {})}
    config["output"] = {"progress": False}
    result = zooframe.run(config, output=runs / config["name"], force=True)
    metrics = [json.loads(line) for line in (result.dir / "metrics.jsonl").read_text().splitlines()]
    later = metrics[1:] or metrics
    return {"step_s": statistics.median(m["step_s"] for m in later),
            "simulator_s_per_step": statistics.median(m["sim_s"] for m in later),
            "queries_per_step": statistics.median(m["queries"] for m in later), "steps": len(metrics)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--zo-steps", type=int, default=6)
    args = parser.parse_args()
    zo = {}
    with tempfile.TemporaryDirectory() as tmp:
        for backend, workers, batching in (("local", 1, "blocks"), ("local", 1, "loop"), ("process", 2, "blocks")):
            key = f"{backend}_{workers}_{batching}"
            zo[key] = zo_step_s(backend, workers, batching, args.zo_steps, Path(tmp))
            print(key, zo[key], flush=True)
    # the estimate's queries in one call, each for every case; the rollout that gives an estimator the
    # surrogate gradients it declared (one of the step's queries) is a call of its own
    inputs = resolve("estimator", EXAMPLE["estimator"]).build().inputs  # what it asks depends on its config
    rollout = 1 if inputs & {"surrogate", "surrogates"} else 0
    rows = (int(zo["local_1_blocks"]["queries_per_step"]) - rollout) * EXAMPLE["training"]["cases_per_step"]
    calls = {}
    for batching in ("rebuild", "loop", "blocks"):
        calls[batching] = step_call_ms(batching, rows, args.repeats)
        print(batching, calls[batching], flush=True)
    calls["blocks_1_row"] = step_call_ms("blocks", 1, args.repeats)
    calls["blocks_64_rows"] = step_call_ms("blocks", 64, args.repeats)
    methods = {f"step_{k}": v for k, v in calls.items()}
    methods.update({f"zo_{k}": v for k, v in zo.items()})
    ratios = {"rebuild_over_blocks_per_row": calls["rebuild"]["ms_per_row"] / calls["blocks"]["ms_per_row"],
              "loop_over_blocks_per_row": calls["loop"]["ms_per_row"] / calls["blocks"]["ms_per_row"],
              "zo_local_loop_over_local_blocks": zo["local_1_loop"]["step_s"] / zo["local_1_blocks"]["step_s"],
              "zo_process2_blocks_over_local_blocks": zo["process_2_blocks"]["step_s"] / zo["local_1_blocks"]["step_s"]}
    path = write_results("fipy_batching", {"example": "examples/fipy_spinodal.json", "rows_per_call": rows,
                                           "repeats": args.repeats, "zo_steps": args.zo_steps,
                                           "fipy": version("fipy")}, methods, ratios)
    print(json.dumps(ratios, indent=2))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
