"""The conformance kit: good plugins pass, and each broken one fails the rule it breaks, with a fix."""

from typing import Literal

import numpy as np
import pytest
import torch

import zooframe
from zooframe.builtins.simulators.burgers import Burgers, BurgersConfig
from zooframe.faults import SimulatorNonFinite
from zooframe.plugins.reference import SimulatorReference
from zooframe.runs.reference_export import export_reference
from zooframe.testing import RULES, ConformanceError, check_simulator, checks, parametrize_with_checks

from .helpers import SMALL, OpaqueBurgers, OpaqueBurgersConfig


def burgers(cls=Burgers, **kw):
    return cls(cls.Config(kind=cls.Config.model_fields["kind"].annotation.__args__[0], resolution=16, **kw))


@pytest.fixture(scope="module")
def reference_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("kit") / "burgers.npz"
    export_reference(SMALL, path)
    return path


def test_the_builtin_simulator_passes_every_rule():
    report = check_simulator(burgers())
    assert not report.failures and "rows-independent" in report.passed and "differentiable" in report.passed


def test_a_step_one_code_passes_with_a_reference_file(reference_file):
    report = check_simulator(burgers(OpaqueBurgers), reference=reference_file)
    assert set(report.passed) >= {"reference-spec", "rows-independent", "deterministic", "pickles", "responds"}
    assert "differentiable" in report.skipped


class BrokenConfig(OpaqueBurgersConfig):
    kind: Literal["broken"]


class Broken(OpaqueBurgers):
    """Opaque Burgers with one deliberate defect, chosen by ``defect``."""

    Config = BrokenConfig
    defect = None

    def step(self, state, cases, seed):
        out = OpaqueBurgers.step(self, state, cases, seed)
        if self.defect == "batch":
            return out - out.mean(dim=0, keepdim=True) + out.mean()
        if self.defect == "random":
            return out + 1e-3 * torch.randn_like(out)
        if self.defect == "float32":
            return out.float()
        if self.defect == "shape":
            return out[..., :-1]
        if self.defect == "nan":
            out[-1, 0, 3] = float("nan")
            return out
        if self.defect == "rounded":
            return torch.round(state * 100) / 100 + 0 * out
        if self.defect == "numpy":
            return out.detach().numpy()
        if self.defect == "unguarded" and state.abs().amax() > self.bound:  # a state the code was not written for
            raise ValueError("math domain error")
        if self.defect == "guarded" and state.abs().amax() > self.bound:
            raise SimulatorNonFinite("|u| out of range")
        return out


def largest_initial_value(sim) -> float:
    """Above it: a state off the task's own (Burgers keeps its maximum: the rollouts stay below)."""
    source = SimulatorReference.of(sim)
    return 1.001 * float(source.trajectories([c for cases in source.cases().values() for c in cases], 0).abs().max())


@pytest.mark.parametrize("defect, rule, fix", [
    ("batch", "rows-independent", "no batch statistics"),
    ("random", "deterministic", "seed argument"),
    ("float32", "output-dtype", "return the input's dtype"),
    ("shape", "output-shape", "one next state per row"),
    ("nan", "finite", "stable on the task's own states"),
    ("rounded", "responds", "full precision"),
    ("numpy", "output-shape", "torch.as_tensor"),
    ("unguarded", "perturbed-states", "the network will feed you states like these; guard them and raise a fault "
     "class"),
])
def test_each_defect_fails_its_rule_and_says_the_fix(defect, rule, fix):
    sim = burgers(Broken)
    sim.defect = defect
    sim.bound = largest_initial_value(sim)
    with pytest.raises(ConformanceError) as err:
        check_simulator(sim)
    failed = {f.rule: f for f in err.value.report.failures}
    assert rule in failed and fix in failed[rule].fix, err.value.report.text()
    assert f"[{rule}]" in str(err.value)


def test_a_class_that_cannot_be_pickled_fails_pickles():
    class LocalConfig(BurgersConfig):
        kind: Literal["local"]

    class Local(Burgers):
        Config = LocalConfig

    report = check_simulator(Local(LocalConfig(kind="local", resolution=16)), raise_on_failure=False)
    assert [f.rule for f in report.failures] == ["pickles"]
    assert "top level of an importable module" in report.failures[0].fix


def test_a_false_claim_of_differentiability_fails():
    class Claims(Broken):
        differentiable = True

    sim = burgers(Claims)
    report = check_simulator(sim, raise_on_failure=False)
    assert "differentiable" in {f.rule for f in report.failures}


def test_a_reference_file_that_does_not_fit_fails_reference_spec(tmp_path, reference_file):
    from zooframe.plugins.reference_file import read_arrays

    arrays = read_arrays(reference_file)
    arrays["trajectories"] = arrays["trajectories"][..., :8]
    np.savez(tmp_path / "short.npz", **arrays)
    report = check_simulator(burgers(OpaqueBurgers), reference=tmp_path / "short.npz", raise_on_failure=False)
    assert [f.rule for f in report.failures] == ["reference-spec"]
    assert "trajectories: shape" in report.failures[0].problem and "output-shape" in report.skipped


class StepOnlyConfig(zooframe.PluginConfig):
    kind: Literal["step_only"]


class StepOnly(zooframe.Simulator):
    """A code with a step and nothing else: its task must come from elsewhere."""

    Config = StepOnlyConfig
    state_spec = zooframe.StateSpec(("u",), (16,))

    def step_one(self, state, case, seed):
        return state + 0.1 * case.params["nu"] * (np.roll(state, 1, -1) - 2 * state + np.roll(state, -1, -1))


def test_without_states_the_stepping_rules_are_skipped_with_the_reason():
    report = check_simulator(StepOnly(StepOnlyConfig(kind="step_only")))
    assert not report.failures and "give reference=" in report.skipped["rows-independent"]
    cases = [zooframe.Case("a", {"nu": 0.02}), zooframe.Case("b", {"nu": 0.05})]
    states = torch.sin(torch.linspace(0, 6.28, 16, dtype=torch.float64)).repeat(2, 1, 1)
    report = check_simulator(StepOnly(StepOnlyConfig(kind="step_only")), cases=cases, states=states)
    assert "rows-independent" in report.passed


def test_cli_check_reports_the_rules(tmp_path, capsys):
    import json

    from zooframe.cli import main

    config = tmp_path / "config.json"
    config.write_text(json.dumps(SMALL))
    assert main(["check", str(config)]) == 0
    out = capsys.readouterr().out
    assert "Burgers: 13 passed, 0 failed" in out and "ok    rows-independent" in out


@parametrize_with_checks(lambda: burgers(OpaqueBurgers), steps=2)
def test_each_rule_is_a_test_item_of_its_own(check):
    check()


def test_a_bound_check_fails_skips_and_passes_as_one_rule():
    sim = burgers(Broken)
    sim.defect = "batch"
    bound = {c.rule.name: c for c in checks(sim)}
    assert list(bound) == list(RULES)
    with pytest.raises(ConformanceError, match=r"\[rows-independent\] row 0"):
        bound["rows-independent"]()
    bound["deterministic"]()  # the same subject: its first step is shared, not taken again
    with pytest.raises(pytest.skip.Exception, match="differentiable is False"):
        bound["differentiable"]()


def test_a_code_that_raises_a_fault_class_on_states_it_cannot_take_passes():
    sim = burgers(Broken)
    sim.defect, sim.bound = "guarded", largest_initial_value(sim)  # perturbed states are refused, as a fault
    report = check_simulator(sim, raise_on_failure=False)
    assert "perturbed-states" in report.passed


def test_whatever_a_rule_meets_is_its_failure_and_check_json_always_prints_a_document(tmp_path, capsys):
    import json

    from zooframe.cli import main

    class Crashy(Broken):
        @property
        def differentiable(self):
            raise RuntimeError("licence server down")

    report = check_simulator(burgers(Crashy), raise_on_failure=False)  # a local class: pickles fails too
    failed = {f.rule: f.problem for f in report.failures}
    assert failed["differentiable"] == "checking it raised RuntimeError: licence server down"
    with pytest.raises(ConformanceError, match=r"\[differentiable\] checking it raised RuntimeError"):
        check_simulator(burgers(Crashy))

    (tmp_path / "bad.json").write_text(json.dumps({**SMALL, "simulator": {"kind": "burgers", "resolutoin": 16}}))
    assert main(["check", str(tmp_path / "bad.json"), "--json"]) == 2
    document = json.loads(capsys.readouterr().out)
    assert document["passed"] == [] and "simulator.resolutoin" in document["error"]
