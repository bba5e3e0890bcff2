"""SIGINT, SIGTERM, SIGHUP and SIGKILL sent to ``zooframe run`` through the external solver in each mode:
afterwards no process the run started is alive and no work folder is left, and a killed run resumes to
the weights of a run never stopped."""

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

import pytest
import torch
from external_solvers import config, forking, registry, solver_command

import zooframe
from zooframe_external.reaper import kill_processes_with, processes_with

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="finds processes in /proc")

# each signal and each mode once: case mode stopped while its solvers hang, SIGKILL (after which nothing of
# zooframe's own runs: the reaper alone ends the solvers) where a solver lives from call to call
MATRIX = [("case", "SIGINT"), ("batch", "SIGHUP"), ("persistent", "SIGTERM"), ("persistent", "SIGKILL")]


def signal_config(command, mode, reference):
    cfg = config(command, mode, reference, steps=30, evaluation_steps=3)  # signalled at step 3: mid-training
    cfg["model"]["hidden_channels"] = 1
    cfg["training"].update(unroll=1, cases_per_step=1)
    cfg["output"]["checkpoint_every"] = 2
    return cfg


def zooframe_run(path, out, tag, tmp, *extra):
    """``zooframe run`` with every external plugin, ``tag`` in its environment (whatever it starts inherits
    it) and its temporary files in ``tmp``."""
    env = {k: v for k, v in os.environ.items() if k != "ZOOFRAME_DISABLE_EXTERNAL_PLUGINS"}
    name, value = tag.decode().split("=", 1)
    env.update({name: value, "TMPDIR": str(tmp), "PYTHONFAULTHANDLER": "1"})  # SIGABRT dumps every thread
    return subprocess.Popen([sys.executable, "-m", "zooframe.cli", "run", str(path), "--output", str(out), "--quiet",
                             *extra], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def wait_until(condition, process=None, timeout=60) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert process is None or process.poll() is None, process.communicate()
        assert time.monotonic() < deadline, "waited in vain"
        time.sleep(0.05)


def steps_written(run) -> int:
    metrics = run / "metrics.jsonl"
    return len(metrics.read_text().splitlines()) if metrics.is_file() else 0


def cmdline(pid: int) -> bytes:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read()
    except OSError:
        return b""


def hung(tag) -> bool:
    return any(cmdline(pid) == b"sleep\0" b"601\0" for pid in processes_with(tag))


def assert_nothing_left(tag, tmp) -> None:
    deadline = time.monotonic() + 10  # a reaper works after zooframe has gone
    while processes_with(tag) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not processes_with(tag), f"still running: {[cmdline(pid) for pid in processes_with(tag)]}"
    assert not list(tmp.glob("zooframe-external-*"))


def communicate_or_dump(process, timeout=30) -> tuple[str, str]:
    try:
        return process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:  # where it hangs: faulthandler's stacks of every thread
        process.send_signal(signal.SIGABRT)
        _, err = process.communicate(timeout=30)
        raise AssertionError(f"still running {timeout} s after the signal:\n{err}") from None


def signalled_run(tmp_path, c_solver, reference_file, mode, signame) -> dict[str, torch.Tensor] | None:
    """A run stopped by ``signame`` at step 3 and checked; a killed one resumed: its weights."""
    hang, path, run, tmp = tmp_path / "hang", tmp_path / "config.json", tmp_path / "run", tmp_path / "tmp"
    tmp.mkdir(parents=True)
    path.write_text(json.dumps(signal_config(forking(solver_command([c_solver], mode), hang), mode, reference_file)))
    tag = f"ZOOFRAME_TEST_RUN={uuid.uuid4().hex}".encode()
    process = zooframe_run(path, run, tag, tmp)
    try:
        wait_until(lambda: steps_written(run) >= 3, process)
        if mode == "case":  # Ctrl-C while the solvers hang: no waiting out timeout_s
            hang.touch()
            wait_until(lambda: hung(tag), process)
        process.send_signal(getattr(signal, signame))
        _, err = communicate_or_dump(process)
        assert process.returncode == (-9 if signame == "SIGKILL" else 128 + getattr(signal, signame)), err
        assert "Traceback" not in err, err
        assert_nothing_left(tag, tmp)
        if signame != "SIGKILL":  # resumes as tests/test_resume.py checks
            assert json.loads((run / "summary.json").read_text())["status"] == "interrupted"
            return None
        resumed = zooframe_run(path, run, tag, tmp, "--resume")
        _, err = resumed.communicate(timeout=120)
        assert resumed.returncode == 0, err
        assert_nothing_left(tag, tmp)
        return torch.load(run / "model.pt")
    finally:
        process.kill()
        process.communicate()
        kill_processes_with(tag)  # a failing test leaves nothing behind


@pytest.mark.slow  # five zooframe processes, four at a time
def test_signalled_runs_leave_nothing_running_and_resume_to_the_same_weights(c_solver, reference_file, tmp_path):
    # the same solver gives the same numbers in every mode
    whole = zooframe.run(signal_config(solver_command([c_solver], "persistent"), "persistent", reference_file),
                         output=tmp_path / "whole", registry=registry())
    with ThreadPoolExecutor(len(MATRIX)) as pool:  # each run waits for its steps most of the time
        futures = {f"{mode} {signame}": pool.submit(signalled_run, tmp_path / f"{mode}-{signame}", c_solver,
                                                    reference_file, mode, signame) for mode, signame in MATRIX}
    failed = {run: future.exception() for run, future in futures.items() if future.exception() is not None}
    assert not failed, "\n".join(f"{run}: {type(e).__name__}: {e}" for run, e in failed.items())
    expected = whole.model.state_dict()
    for run, future in futures.items():
        weights = future.result()
        if weights is None:
            continue
        assert weights.keys() == expected.keys()
        assert all(torch.equal(weights[k], expected[k]) for k in weights), f"{run}: resumed to other weights"
