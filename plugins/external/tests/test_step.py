"""Each mode and each example solver agrees with the in-process scheme, row by row."""

import numpy as np
import pytest
import torch
from external_solvers import DT, solver_command

from zooframe import Case
from zooframe_external import External, ExternalConfig, burgers1

MODES = ("batch", "case", "persistent")


def random_batch(rows: int, n: int = 16, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    state = torch.randn(rows, 1, n, generator=g, dtype=torch.float64)
    nus = [0.0, 0.01, 0.03, 0.1, 0.02, 0.05][:rows]
    return state, [Case(f"c{i}", {"nu": nu}) for i, nu in enumerate(nus)]


def simulator(command, mode, **options) -> External:
    return External(ExternalConfig(kind="external", command=command, channels=["u"], spatial_shape=[16], mode=mode,
                                   **options))


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("solver", ["c", "python"])
def test_the_step_agrees_with_the_in_process_scheme(solvers, solver, mode):
    state, cases = random_batch(4)
    expected = burgers1.step(state, [c.params["nu"] for c in cases], DT)
    assert not torch.allclose(expected, state)  # it moved
    with simulator(solver_command(solvers[solver], mode), mode) as sim:
        out = sim.step(state, cases, seed=0)
        torch.testing.assert_close(out, expected, rtol=1e-12, atol=1e-12)
        # rows are independent: the same rows alone, in other company, in another order
        torch.testing.assert_close(sim.step(state[2:3], cases[2:3], 1), expected[2:3], rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(sim.step(state[[3, 0]], [cases[3], cases[0]], 2), expected[[3, 0]],
                                   rtol=1e-12, atol=1e-12)


def test_float32_states_come_back_float32_and_channels_are_advanced_alike(solvers):
    state, cases = random_batch(3)
    two = torch.cat([state, -state], dim=1)  # two channels, one row's nu
    with External(ExternalConfig(kind="external", command=solver_command(solvers["c"], "batch"), channels=["a", "b"],
                                 spatial_shape=[16])) as sim:
        out = sim.step(two.float(), cases, 0)
    assert out.dtype == torch.float32 and out.shape == two.shape
    expected = burgers1.step(two, [c.params["nu"] for c in cases], DT)
    torch.testing.assert_close(out, expected.float())


def test_the_python_solver_reads_float32_and_the_c_solver_refuses_it(solvers, tmp_path):
    from zooframe.faults import SimulatorCrashed

    state, cases = random_batch(2)
    with simulator(solver_command(solvers["python"], "batch"), "batch", dtype="float32") as sim:
        out = sim.step(state, cases, 0)
    torch.testing.assert_close(out, burgers1.step(state.float().double(), [0.0, 0.01], DT), rtol=1e-12, atol=1e-12)
    with simulator(solver_command(solvers["c"], "batch"), "batch", dtype="float32") as sim:
        with pytest.raises(SimulatorCrashed, match=r"(?s)exited with code 2.*little-endian float64"):
            sim.step(state, cases, 0)


def test_the_c_solver_answers_bad_requests_and_keeps_serving(c_solver, tmp_path):
    import json
    import subprocess

    proc = subprocess.run([c_solver, "--dt", "0.05", "--serve"], input='{"nope": 1}\n\n{"workdir": "/nonexistent"}\n',
                          capture_output=True, text=True, timeout=10)
    answers = [json.loads(line) for line in proc.stdout.splitlines()]
    assert proc.returncode == 0 and [a["ok"] for a in answers] == [False, False]
    assert "no \"workdir\"" in answers[0]["error"] and "/nonexistent/state.npy" in answers[1]["error"]


def test_the_solvers_refuse_malformed_npy(solvers, tmp_path):
    import subprocess

    np.save(tmp_path / "state.npy", np.zeros((2, 1, 8), dtype=np.float64).T)  # fortran order
    np.save(tmp_path / "params.npy", np.zeros((2, 1)))
    (tmp_path / "manifest.json").write_text("{}")
    proc = subprocess.run([*solvers["c"], "--dt", "0.05"], cwd=tmp_path, capture_output=True, text=True)
    assert proc.returncode == 2 and "only C order" in proc.stderr
    (tmp_path / "state.npy").write_bytes(b"\x93NUMPY\x02\x00garbage")
    proc = subprocess.run([*solvers["c"], "--dt", "0.05"], cwd=tmp_path, capture_output=True, text=True)
    assert proc.returncode == 2 and "version 2.0" in proc.stderr
    proc = subprocess.run([*solvers["python"], "--dt", "0.05"], cwd=tmp_path, capture_output=True, text=True)
    assert proc.returncode == 2 and "cannot read the inputs" in proc.stderr
