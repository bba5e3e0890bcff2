"""The signal matrix: SIGINT, SIGTERM, SIGHUP and SIGKILL sent to `zooframe run` at a step drawn at
random. Afterwards no process that the run started is alive, and `--resume` ends with the weights
of a run that was never stopped, bit for bit.

Each signal once, two on each path: the driver takes SIGINT, SIGTERM and SIGHUP through one
handler whatever the backend, and what differs between the paths is the processes a stop must
not leave behind (the process pool's). tests/test_resume.py sends SIGTERM and SIGKILL on the
local path too, and the external plugin's batch, case and persistent paths have their own matrix
in its tests."""

import json
import random
import signal
import sys
import time
from pathlib import Path

import pytest
import torch

import zooframe

from .helpers import small
from .test_resume import wait_for_steps, zooframe_run

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads the process table from /proc")

MATRIX = {"local": ["SIGINT", "SIGHUP"], "process": ["SIGTERM", "SIGKILL"]}
STEPS = 150


def config_file(tmp_path, backend):
    config = small(steps=STEPS, optimizer={"lr": 0.003})
    config["execution"] = {"threads": 1, "backend": backend, **({"workers": 1} if backend == "process" else {})}
    config["output"] = {"progress": False, "figures": False, "checkpoint_every": 5}
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


@pytest.mark.slow  # 10 runs in subprocesses, side by side
def test_every_stop_signal_leaves_no_process_and_the_run_resumes_bit_exact(tmp_path):
    paths = {backend: config_file(tmp_path, backend) for backend in MATRIX}
    path = {name: paths[backend] for backend, names in MATRIX.items() for name in names}
    backend = {name: b for b, names in MATRIX.items() for name in names}
    seed = time.time_ns()
    at = {name: random.Random(f"{seed}-{name}").randint(10, 50) for name in path}
    runs = {name: zooframe_run(path[name], "--output", tmp_path / name) for name in path}
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
        if backend[name] == "process":
            assert started[name], f"{name}: the process backend started no worker to check"
        deadline = time.monotonic() + 15
        while any(map(alive, started[name])) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not [pid for pid in started[name] if alive(pid)], f"{name} at step {at[name]} left processes behind"

    resumed = {name: zooframe_run(path[name], "--output", tmp_path / name, "--resume") for name in path}
    for b, p in paths.items():  # here, while they run: a process of its own would cost another start-up
        zooframe.run(p, output=tmp_path / f"whole-{b}")
    for name, process in resumed.items():
        out, err = process.communicate(timeout=300)
        assert process.returncode == 0, (name, err)
        for a, b in zip(weights(tmp_path / f"whole-{backend[name]}"), weights(tmp_path / name)):
            assert torch.equal(a, b), f"{name} at step {at[name]} (seed {seed}): the resumed weights differ"


@pytest.mark.parametrize("policy", ["abort", "retry", "skip"])
def test_a_stop_that_code_turns_into_another_error_still_stops_the_run(tmp_path, monkeypatch, policy):
    """C code can put another error in the place of the exception a signal handler raised (numpy's
    tofile reported a SIGHUP that landed in it as a TypeError about its file): the run still stops
    as the signal asks, and the policy neither aborts with the error nor retries nor skips it."""
    import os

    from zooframe.plugins import stops

    from .helpers import OpaqueBurgers, registry_with_opaque

    def step_one(self, state, case, seed):
        if OpaqueBurgers.calls == 40:  # the original counts
            try:
                os.kill(os.getpid(), signal.SIGHUP)
                time.sleep(1)  # the handler runs here
            except KeyboardInterrupt:
                raise TypeError("expected str, bytes or os.PathLike object, not BufferedWriter") from None
        return original(self, state, case, seed)

    original = OpaqueBurgers.step_one
    monkeypatch.setattr(OpaqueBurgers, "step_one", step_one)
    monkeypatch.setattr(OpaqueBurgers, "calls", 0)
    config = {**small(steps=20), "simulator": {**small()["simulator"], "kind": "opaque_burgers"},
              "execution": {"threads": 1, "faults": {"policy": policy}}}
    config["output"] = {"progress": False, "figures": False}
    previous = stops.install()
    try:
        with pytest.raises(stops.Stopped):
            zooframe.run(config, output=tmp_path / "run", registry=registry_with_opaque())
    finally:
        stops.restore(previous)
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["status"] == "interrupted" and "SIGHUP" in summary["error"], summary
