"""Step time of the main job and of the Burgers task with each thread setting of the local
engine (1, 2 and auto threads), on a quiet machine and beside one busy process.

    python benchmarks/threads.py [--repeats 2] [--steps 15]

Each run is a fresh `zooframe run` process, as a user starts one; its step time is the median
over its steps after the first two (compilation). Settings take turns within each repeat, so a
slow spell of the shared machine falls on all of them. Writes benchmarks/results/threads.json.
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import write_results

ROOT = Path(__file__).resolve().parents[1]
SETTINGS = (1, 2, "auto")
BUSY = "import time\nend = time.time() + 3600\nwhile time.time() < end: pass"


def task(name: str, steps: int) -> dict:
    config = json.loads((ROOT / "examples" / f"{name}.json").read_text())
    config["training"]["steps"] = steps
    config["evaluation"]["steps"] = 1
    config["output"] = {"progress": False}
    return config


def step_time(config: dict, threads, folder: Path) -> tuple[float, list]:
    config = copy.deepcopy(config)
    config["execution"]["threads"] = threads
    path = folder / f"{config['name']}-{threads}.json"
    path.write_text(json.dumps(config))
    out = folder / "run"
    subprocess.run([sys.executable, "-m", "zooframe.cli", "run", str(path), "--output", str(out), "--force", "--quiet",
                    "--json"], check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=ROOT)
    metrics = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    summary = json.loads((out / "summary.json").read_text())
    return statistics.median(m["step_s"] for m in metrics[2:]), summary.get("threads", {}).get("checks", [])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--steps", type=int, default=15)
    args = parser.parse_args()
    if args.steps < 3:
        parser.error(f"--steps {args.steps}: the step time is the median after the first two steps, so give 3 or more")
    tasks = {"karman": task("karman_zo_sol", args.steps), "burgers": task("burgers_zo", 10 * args.steps)}
    times: dict[str, list[float]] = {}
    checks: dict[str, list] = {}
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        for condition in ("quiet", "busy"):
            neighbour = subprocess.Popen([sys.executable, "-c", BUSY]) if condition == "busy" else None
            try:
                time.sleep(1.0 if neighbour else 0.0)
                for _ in range(args.repeats):
                    for name, config in tasks.items():
                        for threads in SETTINGS:
                            key = f"{name}_{condition}_{threads}"
                            seconds, seen = step_time(config, threads, Path(tmp))
                            times.setdefault(key, []).append(seconds)
                            checks.setdefault(key, []).extend(seen)
                            print(f"{key}: {seconds:.4f} s per step {seen[:1]}", flush=True)
            finally:
                if neighbour:
                    neighbour.kill()
                    neighbour.wait()
    methods = {key: {"step_s": statistics.median(v), "step_s_runs": v, "auto_checks": checks[key][:4]}
               for key, v in times.items()}
    ratios = {}
    for name in tasks:
        for condition in ("quiet", "busy"):
            best = min(methods[f"{name}_{condition}_{t}"]["step_s"] for t in SETTINGS)
            for t in SETTINGS:
                ratios[f"{name}_{condition}_{t}_over_best"] = methods[f"{name}_{condition}_{t}"]["step_s"] / best
    config = {"repeats": args.repeats, "karman_steps": args.steps, "burgers_steps": 10 * args.steps,
              "neighbour": "one Python process spinning on one core", "total_wall_s": time.perf_counter() - start}
    path = write_results("threads", config, methods, ratios)
    print(json.dumps(ratios, indent=2))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
