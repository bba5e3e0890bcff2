"""A simulator's own high-fidelity mode is a ReferenceSource its class names; a plugin written in
the simulator's own vocabulary of before (cases, case_features, reference) is still served."""

from typing import Literal

import pytest
import torch

import zooframe
from zooframe.builtins.simulators.burgers import Burgers, BurgersConfig, BurgersReference
from zooframe.faults import SimulatorCrashed
from zooframe.plugins.reference import SimulatorReference, generate
from zooframe.testing import check_simulator


class OldStyleConfig(BurgersConfig):
    kind: Literal["old_style"]


class OldStyle(Burgers):
    """Burgers with its high-fidelity mode written as simulator methods, as plugins did before."""

    Config = OldStyleConfig
    high_fidelity = None

    def cases(self):
        return BurgersReference(self.config, self).cases()

    def case_features(self, cases):
        return BurgersReference(self.config, self).features(cases)

    def reference(self, cases, steps):
        return BurgersReference(self.config, self).trajectories(cases, steps)


def test_the_simulator_source_serves_the_class_its_simulator_names():
    source = SimulatorReference.of(Burgers(BurgersConfig(kind="burgers", resolution=16)))
    assert isinstance(source.mode, BurgersReference) and source.describe() == "the high-fidelity mode of simulator Burgers"
    assert source.trajectories(source.cases()["test"], 3).shape == (3, 4, 1, 16)


def test_a_simulator_without_one_is_told_to_give_a_file():
    class NoModeConfig(zooframe.PluginConfig):
        kind: Literal["no_mode"]

    class NoMode(zooframe.Simulator):
        Config = NoModeConfig
        state_spec = zooframe.StateSpec(("u",), (4,))

        def step(self, state, cases, seed):
            return state

    with pytest.raises(zooframe.ZooframeError, match='"reference": {"kind": "file"'):
        SimulatorReference.of(NoMode(NoModeConfig(kind="no_mode")))


def test_a_mode_in_the_old_vocabulary_gives_the_same_task_with_a_deprecation_warning():
    new = SimulatorReference.of(Burgers(BurgersConfig(kind="burgers", resolution=16)))
    with pytest.warns(DeprecationWarning, match="OldStyle.high_fidelity"):
        old = SimulatorReference.of(OldStyle(OldStyleConfig(kind="old_style", resolution=16)))
    assert old.cases() == new.cases()
    cases = new.cases()["train"]
    assert torch.equal(old.features(cases), new.features(cases))
    assert torch.equal(old.trajectories(cases, 5), new.trajectories(cases, 5))
    with pytest.warns(DeprecationWarning):
        report = check_simulator(OldStyle(OldStyleConfig(kind="old_style", resolution=16)))
    assert "reference-spec" in report.passed


class CFLReference(BurgersReference):
    """Burgers' fine run as a code that breaks its CFL limit at step ``fails_at`` of the case of viscosity 0.05."""

    fails_at = 7

    def trajectories(self, cases, steps):
        if steps >= self.fails_at and any(c.params["nu"] == 0.05 for c in cases):
            raise SimulatorCrashed("CFL condition violated (dt 0.01 > 0.008)")
        return super().trajectories(cases, steps)


class CFLBurgersConfig(BurgersConfig):
    kind: Literal["cfl_burgers"]


class CFLBurgers(Burgers):
    Config = CFLBurgersConfig
    high_fidelity = CFLReference


class _CFLPlugin:
    @zooframe.hookimpl
    def register_simulators(self, register):
        register(CFLBurgers)


def test_a_failing_reference_run_names_the_stage_the_case_and_the_step(tmp_path, monkeypatch):
    import json

    from .helpers import small

    config = small(steps=2)
    config["simulator"].update(kind="cfl_burgers", train_viscosities=[0.02, 0.05])
    registry = zooframe.Registry(load_external=False, plugins={"cfl": _CFLPlugin()})
    with pytest.raises(zooframe.ZooframeError) as info:
        zooframe.run(config, output=tmp_path / "run", registry=registry)
    said = ("generating the reference (the high-fidelity mode of simulator CFLBurgers) for case 'train-nu0.05', at "
            "step 7 of 10: SimulatorCrashed: CFL condition violated (dt 0.01 > 0.008)")
    assert str(info.value) == said and isinstance(info.value.__cause__, SimulatorCrashed)
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["status"] == "failed" and said in summary["error"]

    monkeypatch.setattr(CFLReference, "fails_at", 2)  # within the kit's 3 steps
    report = check_simulator(CFLBurgers(CFLBurgersConfig(kind="cfl_burgers", resolution=16,
                                                         train_viscosities=[0.02, 0.05])), raise_on_failure=False)
    assert [f.rule for f in report.failures] == ["reference-spec"]
    assert "for case 'train-nu0.05', at step 2 of 3: SimulatorCrashed: CFL" in report.failures[0].problem


def test_an_exception_of_no_fault_class_also_says_where_it_was_raised():
    def broken(cases, steps):
        raise ValueError("negative density")

    source = SimulatorReference.of(Burgers(BurgersConfig(kind="burgers", resolution=16)))
    source.trajectories = broken
    with pytest.raises(zooframe.ZooframeError, match=r"case 'train-nu0.01', at its initial state: ValueError: "
                       r"negative density \(raised in broken, .*test_high_fidelity.py:\d+\)"):
        generate(source, source.cases()["train"], 5)
