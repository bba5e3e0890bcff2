"""Shared by the benchmark scripts: machine facts and the results file of ../shared/BENCHMARKS.md."""

from __future__ import annotations

import json
import os
import platform
import shlex
import sys
import time
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import torch

# ZOOFRAME_BENCHMARK_RESULTS sends results files and figures elsewhere (the smoke tests do, so that
# the committed results stay the ones their commands made)
RESULTS = Path(os.environ.get("ZOOFRAME_BENCHMARK_RESULTS") or Path(__file__).resolve().parent / "results")


def machine() -> dict[str, Any]:
    info = {"cpus": os.cpu_count(), "torch": torch.__version__, "python": platform.python_version()}
    for package in ("phiflow", "zooframe"):
        try:
            info[package] = version(package)
        except PackageNotFoundError:
            pass
    return info


def command() -> str:
    return " ".join(["python", *map(shlex.quote, sys.argv)])


def merge_task(benchmark: str, task: str, block: dict) -> Path:
    """Put ``block`` (with its ``date``) as ``tasks.<task>`` into the results file of a benchmark run a
    task at a time, keeping the other tasks' blocks."""
    path = RESULTS / f"{benchmark}.json"
    data = json.loads(path.read_text()) if path.is_file() else {}
    data.update({"benchmark": benchmark, "command": command(), "date": block["date"], "machine": machine()})
    data.setdefault("tasks", {})[task] = block
    data["tasks"] = dict(sorted(data["tasks"].items()))
    RESULTS.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2) + "\n")
    return path


def write_results(name: str, config: dict, methods: dict, ratios: dict, **extra: Any) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    data = {"benchmark": name, "command": command(), "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "machine": machine(), "config": config, "methods": methods, "ratios": ratios, **extra}
    path.write_text(json.dumps(data, indent=2) + "\n")
    return path
