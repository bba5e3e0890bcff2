"""Each way a solver can fail is raised as its zooframe fault class, with what it needs to debug it."""

import json
import shlex
import sys
import time
from pathlib import Path

import pydantic
import pytest
import torch

from zooframe import Case, ZooframeError
from zooframe.faults import (
    SimulatorCrashed,
    SimulatorFault,
    SimulatorNonFinite,
    SimulatorOutputError,
    SimulatorShapeError,
    SimulatorTimeout,
)
from zooframe_external import External, ExternalConfig

FAKE = str(Path(__file__).with_name("fake_solver.py"))
STATE = torch.zeros(3, 1, 8, dtype=torch.float64)
CASES = [Case(f"case{i}", {"nu": 0.01 * i}) for i in range(3)]


def fake(behaviour: str, mode: str = "batch", **options) -> External:
    return External(ExternalConfig(kind="external", command=[sys.executable, FAKE, behaviour], channels=["u"],
                                   spatial_shape=[8], mode=mode, **options))


def test_a_non_zero_exit_is_a_crash_with_the_command_and_stderr():
    sim = fake("exit3")
    with pytest.raises(SimulatorCrashed) as info:
        sim.step(STATE, CASES, 0)
    text = str(info.value)
    assert "exited with code 3 (allowed: 0)" in text
    assert shlex.join([sys.executable, FAKE, "exit3"]) in text
    assert "solver: the mesh is tangled" in text and "solver: giving up" in text
    assert "workdir:" in text and "set simulator.keep_workdir to true" in text
    assert info.value.fault == "exception"


def test_allowed_return_codes_are_honoured():
    out = fake("partial3", allowed_return_codes=[0, 3]).step(STATE, CASES, 0)
    torch.testing.assert_close(out, STATE + 1)


def test_a_program_that_cannot_start_is_a_crash(tmp_path):
    solver = tmp_path / "solver"
    solver.write_text("#!/bin/sh\n")
    solver.chmod(0o755)
    sims = [External(ExternalConfig(kind="external", command=[str(solver)], channels=["u"], spatial_shape=[8],
                                    mode=mode)) for mode in ("batch", "persistent")]
    solver.unlink()  # after the config was checked
    with pytest.raises(SimulatorCrashed, match="could not start"):
        sims[0].step(STATE, CASES, 0)
    with pytest.raises(SimulatorCrashed, match="could not start the persistent process"):
        sims[1].step(STATE, CASES, 0)


@pytest.mark.parametrize("option, problem", [
    ({"command": ["{tmp}/no-such-solver"]}, "simulator.command[0]: {tmp}/no-such-solver does not exist"),
    ({"command": ["no-such-solver-zf"]}, "simulator.command[0]: no-such-solver-zf is not found on PATH"),
    ({"command": ["{tmp}"]}, "simulator.command[0]: {tmp} is not an executable file"),
    ({"cwd": "{tmp}/missing"}, "simulator.cwd: {tmp}/missing does not exist"),
    ({"workdir_root": "{tmp}/file/work"}, "simulator.workdir_root: {tmp}/file/work cannot be used: {tmp}/file is not "
                                          "a directory"),
], ids=["missing program", "not on PATH", "not executable", "missing cwd", "workdir_root under a file"])
def test_what_this_machine_lacks_is_a_config_error_not_a_fault(tmp_path, option, problem):
    (tmp_path / "file").write_text("")
    option = {k: [a.format(tmp=tmp_path) for a in v] if k == "command" else v.format(tmp=tmp_path)
              for k, v in option.items()}
    config = ExternalConfig(**{"kind": "external", "command": [sys.executable], "channels": ["u"],
                               "spatial_shape": [8], **option})
    with pytest.raises(ZooframeError) as info:
        External(config)
    assert not isinstance(info.value, SimulatorFault)  # a fault policy would retry it
    assert str(info.value).startswith(problem.format(tmp=tmp_path))


@pytest.mark.parametrize("behaviour, fault, text", [
    ("missing", SimulatorOutputError, "wrote no output.npy"),
    ("malformed", SimulatorOutputError, "cannot be read as a .npy file"),
    ("shape", SimulatorShapeError, r"shape \[3, 1, 7\]; expected \[3, 1, 8\]"),
    ("int", SimulatorShapeError, "dtype int64"),
    ("nan", SimulatorNonFinite, r"NaN or Inf in 1 of 3 row\(s\): 2 \(case2\)"),
])
def test_bad_output_is_its_fault_class(behaviour, fault, text):
    with pytest.raises(fault, match=text) as info:
        fake(behaviour).step(STATE, CASES, 0)
    assert FAKE in str(info.value)
    if behaviour == "missing":
        assert "solver: forgot to write" in str(info.value)


def test_case_mode_names_the_failing_row():
    with pytest.raises(SimulatorNonFinite, match=r"row 0 of 3, case 'case0'"):
        fake("nan", mode="case").step(STATE, CASES, 0)


def test_a_run_past_the_timeout_is_stopped():
    start = time.perf_counter()
    with pytest.raises(SimulatorTimeout, match=r"(?s)timeout_s \(0.5 s\).*solver: sleeping"):
        fake("sleep", timeout_s=0.5).step(STATE, CASES, 0)
    assert time.perf_counter() - start < 10


def test_keep_workdir_keeps_the_files_and_otherwise_they_go(tmp_path):
    fake("copy", workdir_root=str(tmp_path / "gone")).step(STATE, CASES, 0)
    assert not list((tmp_path / "gone").glob("*/call-*"))
    sim = fake("copy", workdir_root=str(tmp_path / "kept"), keep_workdir=True)
    sim.step(STATE, CASES, 5)
    (call,) = (tmp_path / "kept").glob("*/call-*")
    assert {p.name for p in call.iterdir()} == {"state.npy", "params.npy", "manifest.json", "output.npy", "stdout.txt",
                                                "stderr.txt"}
    manifest = json.loads((call / "manifest.json").read_text())
    assert manifest == {"format_version": 1, "rows": 3, "shape": [3, 1, 8], "dtype": "float64", "channels": ["u"],
                        "parameter_names": ["nu"], "case_names": ["case0", "case1", "case2"], "seed": 5,
                        "state": "state.npy", "params": "params.npy", "output": "output.npy"}
    with pytest.raises(SimulatorCrashed, match=r"\(kept\)"):
        External(sim.config.model_copy(update={"command": [sys.executable, FAKE, "exit3"]})).step(STATE, CASES, 0)
    sim.close()
    assert len(list((tmp_path / "kept").glob("*/call-*"))) == 2


def test_argv_never_goes_through_a_shell(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    report = tmp_path / "report.json"
    args = ["a b;echo hacked", "$(touch pwned)", "`touch pwned2`", "*", "--in={workdir}/state.npy"]
    sim = External(ExternalConfig(kind="external", command=[sys.executable, FAKE, "argv", *args], channels=["u"],
                                  spatial_shape=[8], env_vars={"FAKE_REPORT": str(report), "FAKE_EXTRA": "x y"},
                                  cwd=str(tmp_path)))
    torch.testing.assert_close(sim.step(STATE, CASES, 0), STATE + 1)
    seen = json.loads(report.read_text())
    workdir = seen["workdir"]
    assert seen["argv"] == ["argv", *args[:-1], f"--in={workdir}/state.npy"]
    assert Path(seen["cwd"]) == tmp_path and Path(workdir).name.startswith("call-") and seen["extra"] == "x y"
    assert not (tmp_path / "pwned").exists() and not (tmp_path / "pwned2").exists()


def test_the_persistent_process_is_restarted_after_it_dies():
    sim = fake("serve", mode="persistent")
    torch.testing.assert_close(sim.step(STATE, CASES, 0), STATE + 1)
    first = sim._server.proc.pid
    with pytest.raises(SimulatorCrashed) as info:
        sim.step(STATE, CASES, 7)
    text = str(info.value)
    assert "exited with code 5 during a request" in text and "segfault in the pressure solve" in text
    assert "the next call starts a new one" in text and shlex.join([sys.executable, FAKE, "serve"]) in text
    torch.testing.assert_close(sim.step(STATE, CASES, 10), STATE + 1)  # a banner line is skipped
    assert sim._server.proc.pid != first and sim.restarts == 1
    with pytest.raises(SimulatorCrashed, match="answered with an error: did not converge"):
        sim.step(STATE, CASES, 8)
    server = sim._server  # an error answer leaves it running
    torch.testing.assert_close(sim.step(STATE, CASES, 1), STATE + 1)
    assert sim._server is server
    sim.close()
    assert server.proc.poll() is not None


def test_a_hung_persistent_process_is_stopped_and_replaced():
    sim = fake("serve", mode="persistent", timeout_s=1.0)
    sim.step(STATE, CASES, 0)
    hung = sim._server.proc
    with pytest.raises(SimulatorTimeout, match="no answer within timeout_s"):
        sim.step(STATE, CASES, 9)
    assert hung.poll() is not None
    torch.testing.assert_close(sim.step(STATE, CASES, 0), STATE + 1)
    sim.close()


def test_a_persistent_process_that_died_between_calls_is_restarted_with_a_warning():
    sim = fake("serve", mode="persistent")
    sim.step(STATE, CASES, 0)
    sim._server.proc.kill()
    sim._server.proc.wait()
    with pytest.warns(RuntimeWarning, match="between calls"):
        torch.testing.assert_close(sim.step(STATE, CASES, 0), STATE + 1)
    sim.close()


def test_the_config_is_checked():
    base = {"kind": "external", "command": ["solver"], "channels": ["u"], "spatial_shape": [8]}
    for bad in ({"command": []}, {"command": [""]}, {"spatial_shape": [0]}, {"channels": ["u", "u"]},
                {"mode": "shell"}, {"timeout_s": 0}, {"max_processes": 0}, {"env_vars": {"A=B": "1"}},
                {"shell": True}, {"env_vars": {"A": "x\0y"}}, {"command": ["solver", "a\0b"]}, {"cwd": "a\0b"},
                {"workdir_root": "\0"}):
        with pytest.raises(pydantic.ValidationError):
            ExternalConfig(**{**base, **bad})


def test_missing_case_parameters_are_named():
    sim = fake("copy", parameters=["nu", "re"])
    with pytest.raises(ZooframeError, match="case 'case0' has no parameter"):
        sim.step(STATE, CASES, 0)


def test_validate_and_run_name_what_this_machine_lacks_before_any_work(reference_file, tmp_path):
    from external_solvers import config, registry

    import zooframe
    from zooframe.runs.experiment import preflight  # what zooframe validate reports

    cfg = config(["no-such-solver-zf"], "batch", reference_file, cwd=str(tmp_path / "gone"))
    (problem,) = preflight(zooframe.load_config(cfg, registry()), registry(), tmp_path / "run")
    assert "simulator.command[0]: no-such-solver-zf is not found on PATH" in problem and "simulator.cwd" in problem
    with pytest.raises(zooframe.ConfigError, match="simulator.cwd"):
        zooframe.run(cfg, output=tmp_path / "run", registry=registry())
    assert not (tmp_path / "run").exists()
