"""Registration through the entry point, pickling for the process and Ray backends, clean-up."""

import gc
import pickle
import sys
from pathlib import Path

import torch
from external_solvers import DT, solver_command

import zooframe
from zooframe import Case
from zooframe_external import External, ExternalConfig, burgers1

FAKE = str(Path(__file__).with_name("fake_solver.py"))


def test_the_entry_point_registers_the_external_simulator():
    info = zooframe.Registry(load_external=True).get("simulator", "external")
    assert info.cls is External and info.provider == "zooframe-external"


def test_a_config_with_the_external_simulator_validates(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    Path("solver").write_text("#!/bin/sh\n")
    Path("solver").chmod(0o755)
    registry = zooframe.Registry(load_external=False, plugins={"zooframe-external": __import__(
        "zooframe_external.plugin", fromlist=["plugin"])})
    cfg = zooframe.load_config({"simulator": {"kind": "external", "command": ["./solver", "--dt", "0.05"],
                                              "channels": ["u"], "spatial_shape": [16]},
                                "reference": {"kind": "file", "path": "ref.npz"},
                                "model": {"kind": "conv"}, "estimator": {"kind": "cge"}}, registry)
    assert cfg.simulator.mode == "batch" and cfg.simulator.timeout_s == 60 and cfg.simulator.dtype == "float64"
    assert External(cfg.simulator).program == str(Path("solver").absolute())  # relative programs: from here


def test_it_pickles_after_a_persistent_step(solvers):
    state = torch.randn(3, 1, 16, dtype=torch.float64)
    cases = [Case(f"c{i}", {"nu": 0.02 * i}) for i in range(3)]
    expected = burgers1.step(state, [0.0, 0.02, 0.04], DT)
    sim = External(ExternalConfig(kind="external", command=solver_command(solvers["c"], "persistent"),
                                  channels=["u"], spatial_shape=[16], mode="persistent"))
    torch.testing.assert_close(sim.step(state, cases, 0), expected)
    copy = pickle.loads(pickle.dumps(sim))
    assert copy._server is None and copy.config == sim.config
    torch.testing.assert_close(copy.step(state, cases, 0), expected)  # its own process, started lazily
    assert copy._server.proc.pid != sim._server.proc.pid
    servers = [sim._server, copy._server]
    copy.close()
    del sim
    gc.collect()  # the finalizer stops a process that close() was never called for
    assert all(s.proc.poll() is not None for s in servers)


def test_close_removes_the_session_directory_and_the_simulator_stays_usable():
    sim = External(ExternalConfig(kind="external", command=[sys.executable, FAKE, "serve"], channels=["u"],
                                  spatial_shape=[4], mode="persistent"))
    state = torch.zeros(1, 1, 4)
    sim.step(state, [Case("a", {})], 0)
    session = sim._session
    assert session.is_dir()
    sim.close()
    assert not session.exists()
    torch.testing.assert_close(sim.step(state, [Case("a", {})], 0), state + 1)
    sim.close()
