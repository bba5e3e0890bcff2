"""zooframe on a GPU, in one go (under 8 minutes on one): the tests of `execution.device: cuda`,
the main job (examples/karman_subspace.json) trained and evaluated on the device, and the step
times of its ZO-SOL step and of FO-SOL there.

    python benchmarks/gpu_check.py                       # on a machine with CUDA
    python benchmarks/gpu_check.py --device cpu          # the same on the CPU (the tests run it test-sized)

1. `pytest tests/test_device.py`: each test compares the device's numbers with the CPU's (the
   grouped network evaluation, ZO estimates through Burgers and the resnet model, the main job's
   step through PhiFlow) or trains, stops and resumes a run there; without CUDA they skip.
2. The main job with `execution.device` set, in a folder under runs/gpu_check/, stopped after
   --main-timeout seconds of training if it has not finished (the steps it reached are reported
   then; its references, generated first on a fresh machine, come on top).
3. The main job's ZO-SOL step (subspace, forward differences, the solver's Jacobian dropped) and
   FO-SOL's on the device, taking steps in turn (benchmarks/zo_step.py's timing), median of
   --repeats steps after --warmup, each step synchronized with the device.

Writes benchmarks/results/gpu_check.json: the device's name, and per part its outcome and time.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import torch
from common import write_results
from zo_step import MAIN, config_for, one_step

import zooframe
from zooframe.runs.experiment import Experiment
from zooframe.runs.trainer import Trainer

ROOT = Path(__file__).resolve().parents[1]
REPOSITORY = Path(zooframe.__file__).resolve().parents[1]  # the tests' (ROOT is a copy in the smoke test)
TESTS = ["tests/test_device.py"]
TIMED = ("zo_forward_drop", "fo_sol")  # the main job's ZO-SOL step, and FO-SOL's


def run_tests() -> dict:
    """The device tests, in a pytest process of their own (the suite's fixtures change the
    environment): counts of passed, failed and skipped tests."""
    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "junit.xml"
        start = time.perf_counter()
        done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-n", "0", "-p", "no:cacheprovider", "-rs",
                               f"--junit-xml={report}", *TESTS], cwd=REPOSITORY, capture_output=True, text=True)
        print(done.stdout[-3000:], done.stderr[-3000:], sep="\n", flush=True)
        out = {"exit_code": done.returncode, "wall_s": time.perf_counter() - start, "paths": TESTS}
        if not report.is_file():  # pytest did not get as far as running tests
            return {**out, "tests": 0, "failures": 0, "errors": 1, "skipped": 0, "passed": 0}
        suite = ET.parse(report).getroot()
    suite = suite if suite.tag == "testsuite" else suite.find("testsuite")
    counts = {key: int(suite.get(key, 0)) for key in ("tests", "failures", "errors", "skipped")}
    counts["passed"] = counts["tests"] - counts["failures"] - counts["errors"] - counts["skipped"]
    return {**out, **counts}


def run_main_job(device: str, timeout_s: float) -> dict:
    """The main job on ``device``: its held-out MAE and wall time, or the steps it reached when it
    ran out of time (it stops as Ctrl-C stops it, and ``zooframe run --resume`` would go on)."""
    folder = ROOT / "runs" / "gpu_check" / f"main_job_{device}"
    config = {k: v for k, v in MAIN.items() if k != "$schema"}
    config["execution"] = {**config["execution"], "device": device}
    config["output"] = {**config.get("output", {}), "progress": False, "figures": False}
    start, began = time.perf_counter(), []  # when the first step began (the references come before it)

    def stop(metrics: dict, trainer: Trainer) -> None:
        if not began:
            began.append(time.perf_counter() - metrics["step_s"])
        if time.perf_counter() - began[0] > timeout_s:
            raise KeyboardInterrupt

    out = {"steps": config["training"]["steps"], "folder": str(folder.relative_to(ROOT))}
    try:
        summary = zooframe.run(config, output=folder, force=True, on_step=stop).summary
        ev = summary["evaluation"]
        out.update(status="completed", mae_mean=ev["corrected"]["mae_mean"], mae_std=0.0,
                   src_mae=ev["src"]["mae_mean"], corrected_over_src=ev["corrected_over_src"])
    except KeyboardInterrupt:
        out["status"] = f"stopped after {timeout_s:.0f} s of training"
    except Exception as error:  # reported in the results file, and the script fails at its end
        out["status"] = f"failed: {type(error).__name__}: {error}"
    out["wall_s"] = time.perf_counter() - start
    metrics = folder / "metrics.jsonl"
    lines = [json.loads(line) for line in metrics.read_text().splitlines() if line.strip()] if metrics.is_file() else []
    if lines:
        out.update(steps_reached=lines[-1]["step"], step_s=statistics.median(m["step_s"] for m in lines),
                   train_s=sum(m["step_s"] for m in lines))
    return out


def time_steps(device: str, repeats: int, warmup: int) -> dict:
    """Median step time of the main job's ZO-SOL step and of FO-SOL on ``device``, in turns."""
    trainers = {m: Trainer(Experiment.build(zooframe.load_config(config_for(m, 1, device)))) for m in TIMED}
    times: dict[str, list[tuple[float, float]]] = {m: [] for m in TIMED}
    try:
        for rep in range(warmup + repeats):
            for method, trainer in trainers.items():
                wall, sim = one_step(trainer)
                if rep >= warmup:
                    times[method].append((wall, sim))
    finally:
        for trainer in trainers.values():
            trainer.close()
    return {m: {"step_s": statistics.median(w for w, _ in rows), "sim_s": statistics.median(s for _, s in rows),
                "simulator_share": statistics.median(s / w for w, s in rows), "repeats": len(rows)}
            for m, rows in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--main-timeout", type=float, default=180, help="seconds of the main job's training "
                        "(its references, generated first on a fresh machine, and its evaluation come on top)")
    args = parser.parse_args()
    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("gpu_check: PyTorch sees no CUDA device here; run it on a GPU machine, or with --device cpu")
    start = time.perf_counter()
    tests = run_tests()
    print(f"tests: {tests['passed']} passed, {tests['failures'] + tests['errors']} failed, {tests['skipped']} skipped",
          flush=True)
    main_job = run_main_job(args.device, args.main_timeout)
    print(f"main job: {main_job}", flush=True)
    steps = time_steps(args.device, args.repeats, args.warmup)
    print(f"steps: {steps}", flush=True)
    methods = {"main_job": main_job, **steps}
    ratios = {"zo_sol_step_over_fo_sol_step": steps["zo_forward_drop"]["step_s"] / steps["fo_sol"]["step_s"]}
    if "corrected_over_src" in main_job:
        ratios["main_job_corrected_over_src"] = main_job["corrected_over_src"]
    device = torch.cuda.get_device_name() if args.device == "cuda" else f"cpu ({os.cpu_count()} cores)"
    config = {"example": "examples/karman_subspace.json", "device": args.device, "device_name": device,
              "cuda": torch.version.cuda, "timed": list(TIMED), "repeats": args.repeats, "warmup": args.warmup,
              "total_wall_s": time.perf_counter() - start}
    path = write_results("gpu_check", config, methods, ratios, tests=tests)
    print(json.dumps(ratios, indent=2))
    print(f"wrote {path}")
    if tests["failures"] or tests["errors"] or not main_job["status"].startswith(("completed", "stopped")):
        raise SystemExit("gpu_check: a device test or the main job failed (see above)")


if __name__ == "__main__":
    main()
