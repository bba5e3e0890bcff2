"""The pulse-echo simulator: found through its entry point, conforms, makes and caches a reference
that the coarse scheme visibly disperses from, refuses bad fields by name, and trains by ZO."""

import json
from pathlib import Path

import pydantic
import pytest
import torch

import zooframe
import zooframe_devito.plugin
from zooframe.plugins.reference import SimulatorReference
from zooframe.testing import check_simulator
from zooframe_devito.metrics import extra_metrics, traces
from zooframe_devito.simulator import PulseEcho, PulseEchoConfig

EXAMPLE = Path(__file__).resolve().parents[3] / "examples" / "devito_pulse_echo.json"


def registry():
    return zooframe.Registry(load_external=False, plugins={"zooframe-devito": zooframe_devito.plugin})


def test_the_entry_point_registers_pulse_echo():
    info = zooframe.Registry(load_external=True).get("simulator", "pulse_echo")
    assert info.cls is PulseEcho and info.provider == "zooframe-devito"


def test_pulse_echo_passes_the_conformance_kit(small):
    report = check_simulator(PulseEcho(PulseEchoConfig(**small)), steps=3)
    assert {"rows-independent", "pickles", "responds", "output-dtype"} <= set(report.passed), report.text()


def test_the_reference_is_cached_and_the_coarse_scheme_disperses_from_it(small, monkeypatch):
    sim = PulseEcho(PulseEchoConfig(**small))
    cases = SimulatorReference.of(sim).cases()["train"]
    calls = []
    generate = PulseEcho.generate
    monkeypatch.setattr(PulseEcho, "generate", lambda self, c, s: calls.append(len(c)) or generate(self, c, s))
    ref = SimulatorReference.of(sim).trajectories(cases, 24)
    assert ref.shape == (2, 25, 2, 32, 32) and calls == [2]
    torch.testing.assert_close(SimulatorReference.of(sim).trajectories(cases, 10), ref[:, :11])
    assert calls == [2]  # from the cache
    SimulatorReference.of(PulseEcho(PulseEchoConfig(**{**small, "frequency_mhz": 0.9}))).trajectories(cases, 10)
    assert calls == [2, 2]  # a field that shapes the waves is part of the key
    SimulatorReference.of(PulseEcho(PulseEchoConfig(**{**small, "receivers": 4, "space_order": 4}))).trajectories(cases, 10)
    assert calls == [2, 2]  # fields of the coarse scheme and the receivers are not
    torch.testing.assert_close(ref[:, 0], torch.from_numpy(sim.pulse.state((32, 32), 1.0, sim.dt)).float().expand(2, -1, -1, -1))
    state, errors = ref[:, 0], []
    for t in range(24):
        state = sim.step(state, cases, 0)
        errors.append(float((state - ref[:, t + 1]).abs().mean() / ref[:, t + 1].abs().mean()))
    assert errors[0] < 0.15 and errors[-1] > 4 * errors[0], errors  # starts close, drifts far (dispersion)
    fourth = PulseEcho(PulseEchoConfig(**{**small, "space_order": 4}))
    state = ref[:, 0]
    for _ in range(24):
        state = fourth.step(state, cases, 0)
    assert float((state - ref[:, -1]).abs().mean() / ref[:, -1].abs().mean()) < 0.7 * errors[-1]  # order helps


def test_the_flaw_reflects(small):
    sim = PulseEcho(PulseEchoConfig(**small))
    cases = SimulatorReference.of(sim).cases()["train"]
    no_flaw = zooframe.Case("far", {"x": 16.0, "depth": 31.0, "radius": 0.2})  # a speck at the bottom edge
    start = SimulatorReference.of(sim).trajectories(cases[:1], 0)[:, 0].expand(2, -1, -1, -1)
    frames = {"flaw": [start], "none": [start]}
    for _ in range(30):
        frames["flaw"].append(sim.step(frames["flaw"][-1], [cases[0]] * 2, 0))
        frames["none"].append(sim.step(frames["none"][-1], [no_flaw] * 2, 0))
    a_scans = {k: traces(sim, torch.stack(v, dim=1)) for k, v in frames.items()}  # [2, receivers, 31]
    echo = (a_scans["flaw"] - a_scans["none"]).abs().amax(dim=(0, 1))
    assert float(echo[:3].max()) < 1e-3 < 0.02 < float(echo.max())  # the flaw's echo reaches the receivers


def test_free_surfaces_send_the_pulse_back_and_the_absorbing_window_does_not(small):
    """With air below the plate (ending at the grid's edge) the pulse comes back to the receivers."""
    late = {}
    for free in (False, True):
        cfg = {**small, "free_surfaces": free, "top_mm": 1.0, "thickness_mm": 22.0, "receiver_depth_mm": 8.0}
        sim = PulseEcho(PulseEchoConfig(**cfg))
        case = zooframe.Case("speck", {"x": 16.0, "depth": 30.5, "radius": 0.2})
        state = torch.from_numpy(sim.pulse.state((32, 32), 1.0, sim.dt)).float()[None]
        frames = [state]
        for _ in range(70):
            frames.append(sim.step(frames[-1], [case], 0))
        a_scan = traces(sim, torch.stack(frames, dim=1))[0]  # [receivers, 71]
        late[free] = float(a_scan[:, 50:].abs().max())  # the round trip to the bottom and back
    assert late[True] > 4 * late[False], late


@pytest.mark.parametrize("change, field", [
    ({"space_order": 3}, "space_order"),
    ({"train_flaws": [{"x_mm": 1.0, "depth_mm": 14.0, "radius_mm": 2.0}]}, "train_flaws[0]"),
    ({"free_surfaces": True, "thickness_mm": 40.0}, "thickness_mm"),
    ({"test_flaws": [{"x_mm": 15.0, "depth_mm": 14.0, "radius": 2.0}]}, "test_flaws.0.radius"),
    ({"courant": 0.7}, "courant"),
    ({"cells": [8, 64]}, "cells"),
])
def test_bad_fields_are_refused_by_name(small, change, field):
    with pytest.raises(pydantic.ValidationError, match=field.replace("[", r"\[").replace("]", r"\]")):
        PulseEchoConfig(**{**small, **change})


def test_trace_metrics(small):
    sim = PulseEcho(PulseEchoConfig(**small))
    source = SimulatorReference.of(sim)
    ref = source.trajectories(source.cases()["test"], 12)
    assert traces(sim, ref).shape == (1, 8, 13)
    same = extra_metrics(sim, ref, ref)
    assert same["trace_mae"] == 0 and same["trace_correlation"] == pytest.approx(1)
    late = extra_metrics(sim, torch.cat([ref[:, :1], ref[:, :-1]], 1), ref)  # one frame late
    assert late["trace_mae"] > 0 and late["trace_correlation"] < 1 and late["wavefield_mae"] > 0


def test_a_few_zo_steps_from_the_example_config_lower_the_error(small, tmp_path):
    config = json.loads(EXAMPLE.read_text())
    config["simulator"] = small
    config["training"].update(steps=30, horizon=24, unroll=4)
    config["evaluation"]["steps"] = 24
    config["output"] = {"progress": False}
    result = zooframe.run(config, output=tmp_path / "run", registry=registry())
    ev = result.summary["evaluation"]
    assert result.summary["status"] == "completed" and result.summary["queries_total"] > 0
    assert ev["corrected"]["mae_mean"] < ev["src"]["mae_mean"], ev
