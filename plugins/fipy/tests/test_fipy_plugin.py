"""Discovery, the conformance kit, config errors, and a ZO run through FiPy from the example config."""

import json
import math
import subprocess
import sys

import numpy as np
import pytest
import torch
from pydantic import ValidationError

import zooframe
from zooframe.plugins.reference import SimulatorReference
from zooframe.testing import check_simulator
from zooframe_fipy import Spinodal, SpinodalConfig
from zooframe_fipy.metrics import characteristic_length, extra_metrics


def test_the_entry_point_registers_the_spinodal_simulator():
    info = zooframe.Registry(load_external=True).get("simulator", "spinodal")
    assert info.cls is Spinodal and info.provider == "zooframe-fipy"


def test_the_simulator_passes_the_conformance_kit(small):
    check_simulator(Spinodal(SpinodalConfig(**small)), rtol=1e-6)


def test_a_bad_case_names_its_field(small):
    with pytest.raises(ValidationError, match=r"train_cases\.0\.mean"):
        SpinodalConfig(**{**small, "train_cases": [{"mobility": 1.0, "kappa": 1.0, "mean": 1.5}]})
    with pytest.raises(ValidationError, match="batching"):
        SpinodalConfig(**{**small, "batching": "threads"})


@pytest.mark.parametrize("batching", ["loop", "rebuild"])
def test_the_batched_mesh_steps_each_row_as_its_own_fipy_mesh(small, batching):
    sim = Spinodal(SpinodalConfig(**{**small, "block_rows": 2}))  # 3 rows: blocks of 2 and 1
    source = SimulatorReference.of(sim)
    cases = source.cases()["train"] + source.cases()["test"]
    state = source.trajectories(cases, 2)[:, 2].double()
    one_by_one = Spinodal(SpinodalConfig(**{**small, "batching": batching}))
    torch.testing.assert_close(sim.step(state, cases, 0), one_by_one.step(state, cases, 0), rtol=1e-8, atol=1e-8)


def test_the_step_conserves_composition_and_separates_the_phases(small):
    sim = Spinodal(SpinodalConfig(**small))
    cases = SimulatorReference.of(sim).cases()["train"]
    state = SimulatorReference.of(sim).trajectories(cases, 0)[:, 0].double()
    later = state
    for _ in range(10):
        later = sim.step(later, cases, 0)
    torch.testing.assert_close(later.mean(dim=(1, 2, 3)), state.mean(dim=(1, 2, 3)), rtol=0, atol=1e-8)
    assert (later.std(dim=(1, 2, 3)) > 2 * state.std(dim=(1, 2, 3))).all()  # spinodal: fluctuations grow
    assert later.abs().max() < 1.2  # and saturate near the two phases


def test_the_reference_starts_from_the_fine_initial_field_averaged(small):
    sim = Spinodal(SpinodalConfig(**small))
    case = SimulatorReference.of(sim).cases()["test"][0]
    fine = sim.initial_state(case, 32)
    expected = fine.reshape(16, 2, 16, 2).mean(axis=(1, 3))
    np.testing.assert_allclose(SimulatorReference.of(sim).trajectories([case], 1)[0, 0, 0].double().numpy(), expected, atol=1e-6)
    assert abs(expected.mean() - case.params["mean"]) < 1e-12


def test_the_warmup_starts_the_reference_later_on_the_same_trajectory(small):
    cases = SimulatorReference.of(Spinodal(SpinodalConfig(**small))).cases()["train"]
    from_quench = SimulatorReference.of(Spinodal(SpinodalConfig(**small))).trajectories(cases, 5)
    later = SimulatorReference.of(Spinodal(SpinodalConfig(**{**small, "warmup": 3}))).trajectories(cases, 2)
    torch.testing.assert_close(later, from_quench[:, 3:], rtol=0, atol=1e-6)


def test_the_characteristic_length_of_a_cosine_is_its_wavelength():
    x = (torch.arange(32, dtype=torch.float64) + 0.5) / 32 * 2 * math.pi
    field = torch.cos(4 * x)[:, None].expand(32, 32)
    assert float(characteristic_length(field, 64.0)) == pytest.approx(16.0)


def test_a_few_zo_steps_through_fipy_run_from_the_example_config(example_config, tmp_path):
    result = zooframe.run(example_config, output=tmp_path / "run", progress=False,
                          registry=zooframe.Registry(load_external=True))
    summary = result.summary
    assert summary["status"] == "completed" and summary["steps"] == 6
    assert example_config["estimator"]["kind"] == "subspace"  # a pair per unrolled loss term, and the surrogates' rollout
    assert summary["queries_total"] == 6 * (2 * example_config["training"]["unroll"] + 1)
    ev = summary["evaluation"]
    assert math.isfinite(ev["corrected"]["mae_mean"]) and ev["corrected"]["mae_mean"] < 2 * ev["src"]["mae_mean"]
    held = zooframe.runs.evaluation.held_out(result.experiment)
    metrics = extra_metrics(result.experiment.simulator, held.corrected, held.reference)
    assert set(metrics) >= {"length_final_mean", "length_rel_error"} and all(map(math.isfinite, metrics.values()))
    losses = [json.loads(line)["loss"] for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert all(math.isfinite(v) for v in losses)


def test_stop_signals_still_stop_a_process_once_fipy_is_loaded_and_stepped(small):
    """With mpi4py installed, importing FiPy started MPI, which took SIGHUP from zooframe's handler."""
    script = f"""
import os, signal, sys, torch, zooframe
got = []
for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
    signal.signal(s, lambda signum, frame: got.append(signum))
zooframe.Registry()  # loads every installed plugin
from zooframe_fipy import Spinodal, SpinodalConfig
sim = Spinodal(SpinodalConfig(**{small!r}))
sim.block_solver(1)
for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
    os.kill(os.getpid(), s)
print(sorted(got), "fipy" in sys.modules)
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split()[-4:] == ["[1,", "2,", "15]", "True"], done.stdout
