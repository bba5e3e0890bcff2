"""A simulator's own high-fidelity mode is a ReferenceSource its class names; a plugin written in
the simulator's own vocabulary of before (cases, case_features, reference) is still served."""

from typing import Literal

import pytest
import torch

import zooframe
from zooframe.builtins.simulators.burgers import Burgers, BurgersConfig, BurgersReference
from zooframe.plugins.reference import SimulatorReference
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
