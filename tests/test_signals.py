"""The signal matrix: SIGINT, SIGTERM, SIGHUP and SIGKILL sent to `zooframe run` at a step drawn at
random, on the local and the process paths. Afterwards no process that the run started is alive,
and `--resume` ends with the weights of a run that was never stopped, bit for bit. (The external
plugin's batch, case and persistent paths have their own matrix in its tests.)"""

import json
import random
import signal
import sys
import time
from pathlib import Path

import pytest
import torch

from .helpers import small
from .test_resume import wait_for_steps, zooframe_run

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads the process table from /proc")

SIGNALS = ["SIGINT", "SIGTERM", "SIGHUP", "SIGKILL"]
STEPS = 150


def config_file(tmp_path, backend):
    config = small(steps=STEPS, optimizer={"lr": 0.003})
    config["execution"] = {"threads": 1, "backend": backend, **({"workers": 1} if backend == "process" else {})}
    config["output"] = {"progress": False, "checkpoint_every": 5}
    path = tmp_path / f"{backend}.json"
    path.write_text(json.dumps(config))
    return path


def descendants(pid: int) -> set[int]:
    """The processes under ``pid`` now: its children, theirs, and so on."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):  # not a process, or one that just ended
            continue
        children.setdefault(ppid, []).append(int(entry.name))
    found, todo = set(), [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found


def alive(pid: int) -> bool:
    try:
        return (Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def weights(folder):
    return list(torch.load(folder / "model.pt", weights_only=True).values())


@pytest.mark.slow  # 13 runs in subprocesses, the stopped ones side by side
@pytest.mark.parametrize("backend", ["local", "process"])
def test_every_stop_signal_leaves_no_process_and_the_run_resumes_bit_exact(tmp_path, backend):
    path = config_file(tmp_path, backend)
    draw = random.Random(f"{backend}-{time.time_ns()}")
    at = {name: draw.randint(10, 50) for name in SIGNALS}
    whole = zooframe_run(path, "--output", tmp_path / "whole")
    runs = {name: zooframe_run(path, "--output", tmp_path / name) for name in SIGNALS}
    started: dict[str, set[int]] = {}
    for name, process in runs.items():
        wait_for_steps(process, tmp_path / name / "metrics.jsonl", at[name])
        started[name] = descendants(process.pid)
        process.send_signal(getattr(signal, name))
    for name, process in runs.items():
        out, err = process.communicate(timeout=60)
        expected = -signal.SIGKILL if name == "SIGKILL" else 128 + getattr(signal, name)
        assert process.returncode == expected, (name, at[name], err)
        if name != "SIGKILL":  # the others stop as Ctrl-C does: a summary that says so, no traceback
            summary = json.loads((tmp_path / name / "summary.json").read_text())
            assert summary["status"] == "interrupted" and summary["steps"] < STEPS, (name, summary)
            assert name in summary["error"] or name == "SIGINT", summary
            assert "Traceback" not in err and ("stopped by" in err or "interrupted" in err), err
        if backend == "process":
            assert started[name], f"{name}: the process backend started no worker to check"
        deadline = time.monotonic() + 15
        while any(map(alive, started[name])) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not [pid for pid in started[name] if alive(pid)], f"{name} at step {at[name]} left processes behind"
    assert whole.wait() == 0, whole.communicate()

    resumed = {name: zooframe_run(path, "--output", tmp_path / name, "--resume") for name in SIGNALS}
    for name, process in resumed.items():
        out, err = process.communicate(timeout=300)
        assert process.returncode == 0, (name, err)
        for a, b in zip(weights(tmp_path / "whole"), weights(tmp_path / name)):
            assert torch.equal(a, b), f"{name} at step {at[name]}: the resumed weights differ"
