"""End-to-end runs: training lowers the error, modes share one config, runs are reproducible
and keep what they computed."""

import json
from dataclasses import replace
from pathlib import Path
from typing import Literal

import pytest
import torch

import zooframe
from zooframe.builtins.estimators.cge import CGE, CGEConfig
from zooframe.cli import main
from zooframe.plugins.estimator import NO_INPUTS

from .helpers import registry_with_opaque, small

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow  # the example at full length: 2000 steps
def test_zo_training_halves_the_held_out_rollout_error(tmp_path):
    """The README's example: CGE through the Burgers solver, held-out viscosities."""
    result = zooframe.run(ROOT / "examples" / "burgers_zo.json", output=tmp_path, progress=False)
    ev = result.summary["evaluation"]
    assert ev["split"] == "test" and ev["steps"] == 50
    assert ev["corrected"]["mae_mean"] <= 0.5 * ev["src"]["mae_mean"], ev["corrected_over_src"]
    losses = [json.loads(line)["loss"] for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert sum(losses[-100:]) / 100 < 0.2 * sum(losses[:100]) / 100


def test_the_readme_example_at_test_size_lowers_the_held_out_rollout_error(tmp_path):
    """The README's example with a smaller network (4 channels, kernel 3: 93 parameters, not 457) for
    300 steps, not 2000: its config runs as it is, and the held-out error falls (the full run, marked
    slow, halves it)."""
    config = json.loads((ROOT / "examples" / "burgers_zo.json").read_text())
    config["model"].update(hidden_channels=4, kernel_size=3)
    config["training"]["steps"] = 300
    result = zooframe.run(config, output=tmp_path, progress=False)
    ev = result.summary["evaluation"]
    assert ev["split"] == "test" and ev["steps"] == 50 and result.summary["parameters"] == 93
    assert ev["corrected"]["mae_mean"] <= 0.75 * ev["src"]["mae_mean"], ev["corrected_over_src"]  # 0.56 here
    losses = [json.loads(line)["loss"] for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert sum(losses[-15:]) < 0.3 * sum(losses[:15])  # 0.14 here


@pytest.mark.parametrize("mode, estimator", [("zo", "cge"), ("zo", "guided"), ("zo", "subspace"), ("zo", "subspace_forward"),
                                             ("zo", "subspace_forward_both"), ("non", "cge"), ("fo", "cge"),
                                             ("nog", "cge")])
def test_each_mode_runs_from_the_same_config_and_lowers_the_loss(tmp_path, mode, estimator):
    config = small(mode=mode, steps=60, optimizer={"lr": 0.03})
    kind, _, scheme = estimator.partition("_")
    scheme, _, jacobian = scheme.partition("_")
    config["estimator"] = {"kind": kind, **({"q": 4} if kind == "guided" else {}), **({"scheme": scheme} if scheme else {})}
    if jacobian:
        config["training"]["solver_jacobian"] = jacobian
    result = zooframe.run(config, output=tmp_path, progress=False)
    metrics = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert len(metrics) == 60
    assert sum(m["loss"] for m in metrics[-10:]) < 0.5 * sum(m["loss"] for m in metrics[:10])
    queries = sum(m["queries"] for m in metrics)
    # guided and subspace: 1 surrogate rollout; subspace: a pair per unrolled step (small(): unroll 3), or
    # forward: one query per step, from the loss at theta that the surrogates' rollout gives; with both
    # Jacobians' surrogates, 2m - 1 directions (the first step's term has the same surrogate under both)
    per_step = {"cge": result.summary["parameters"] + 1, "guided": 1 + 2 * 4, "subspace": 1 + 2 * 3,
                "subspace_forward": 1 + 3, "subspace_forward_both": 1 + 5}[estimator]
    assert queries == (60 * per_step if mode == "zo" else 0)
    assert result.summary["status"] == "completed"
    assert result.summary["evaluation"]["corrected"]["mae_mean"] > 0


@pytest.mark.parametrize("jacobian", ["drop", "identity"])
def test_nog_trains_through_a_simulator_that_gives_no_gradients(tmp_path, jacobian):
    config = small(mode="nog", steps=60, optimizer={"lr": 0.03}, solver_jacobian=jacobian)
    config["simulator"]["kind"] = "opaque_burgers"
    result = zooframe.run(config, output=tmp_path, progress=False, registry=registry_with_opaque())
    losses = [json.loads(line)["loss"] for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert sum(losses[-5:]) < 0.5 * sum(losses[:5])
    assert result.summary["queries_total"] == 0


class Recording(zooframe.Estimator):
    """Central CGE that records what the trainer handed it."""

    class Config(zooframe.PluginConfig):
        kind: Literal["recording"]
        wants: list[str] = ["surrogate"]

    seen: list = []

    @property
    def inputs(self):
        return frozenset(self.config.wants)

    def ask(self, theta, generator, given=NO_INPUTS):
        Recording.seen.append(given)
        self._cge = CGE(CGEConfig(kind="cge", scheme="central"))
        return self._cge.ask(theta, generator, given)

    def tell(self, queries, values):
        return self._cge.tell(queries, values)


def recording_registry():
    class Plugin:
        @zooframe.hookimpl
        def register_estimators(self, register):
            register(Recording)

    return zooframe.Registry(load_external=False, plugins={"test-recording": Plugin()})


def test_an_estimator_gets_the_surrogate_it_declares_and_nothing_else(tmp_path):
    from zooframe.core.objective import CorrectionObjective
    from zooframe.runs.experiment import Experiment
    from zooframe.runs.trainer import Trainer

    registry = recording_registry()
    config = zooframe.load_config({**small(steps=1, unroll=3), "estimator": {"kind": "recording"}}, registry)
    Recording.seen = []
    trainer = Trainer(Experiment.build(config, registry))
    window = trainer.sampler.sample(0)
    _, loss = trainer.gradient(window)
    used = trainer.tally.queries
    (given,) = Recording.seen
    assert given.mask is None
    nog = CorrectionObjective(trainer.exp.runner, trainer.exp.flat, window, "identity")  # the default solver_jacobian
    theta = trainer.exp.flat.get().requires_grad_(True)
    (expected,) = torch.autograd.grad(nog(theta[None])[0], theta)
    torch.testing.assert_close(given.surrogate, expected)
    assert loss == pytest.approx(float(nog(theta[None].detach())[0]))
    assert used == 1 + 2 * trainer.exp.flat.dim  # the surrogate's rollout, then the estimator's queries

    Recording.seen = []
    config = zooframe.load_config({**small(steps=1), "estimator": {"kind": "recording", "wants": ["mask"]}}, registry)
    Trainer(Experiment.build(config, registry)).gradient(window)
    assert Recording.seen[0].surrogate is None and Recording.seen[0].surrogates is None

    # the loss terms' surrogates: term t's gradient is that of the first t steps' total minus the first t - 1's
    Recording.seen = []
    config = zooframe.load_config({**small(steps=1, unroll=3),
                                   "estimator": {"kind": "recording", "wants": ["surrogates", "surrogate"]}}, registry)
    trainer = Trainer(Experiment.build(config, registry))
    trainer.gradient(window)
    (given,) = Recording.seen
    totals = [torch.zeros_like(theta)]
    for t in (1, 2, 3):
        part = CorrectionObjective(trainer.exp.runner, trainer.exp.flat, replace(window, targets=window.targets[:, :t]),
                                   "identity")
        totals.append(t * torch.autograd.grad(part(theta[None])[0], theta)[0])
    assert given.surrogates.shape == (3, theta.numel())
    torch.testing.assert_close(given.surrogates, torch.stack([b - a for a, b in zip(totals, totals[1:])]))
    torch.testing.assert_close(given.surrogate, expected)
    assert trainer.tally.queries == 1 + 2 * theta.numel()  # one rollout gives both


@pytest.mark.parametrize("wants, sparsity, message", [
    (["hessian"], "none", "asks for hessian, which the trainer does not provide"),
    (["surrogate"], "magnitude", "takes no sparsity mask"),
    (["loss"], "none", "asks for loss without surrogate or surrogates"),
])
def test_an_estimator_that_asks_for_what_the_run_cannot_give_is_refused(tmp_path, wants, sparsity, message):
    config = {**small(), "estimator": {"kind": "recording", "wants": wants}, "sparsity": {"method": sparsity}}
    with pytest.raises(zooframe.ZooframeError, match=message):
        zooframe.run(config, output=tmp_path, registry=recording_registry())


def test_both_jacobians_surrogates_go_only_to_an_estimator_that_asks_for_the_terms(tmp_path):
    config = {**small(solver_jacobian="both"), "estimator": {"kind": "guided", "q": 4}}
    with pytest.raises(zooframe.ZooframeError, match="'both' .* estimator 'guided' does not ask for surrogates"):
        zooframe.run(config, output=tmp_path, progress=False)
    with pytest.raises(zooframe.ConfigError, match="training.*solver_jacobian 'both' .* mode 'nog'"):
        zooframe.load_config(small(mode="nog", solver_jacobian="both"))


def test_fo_refuses_a_simulator_that_is_not_differentiable(tmp_path, capsys):
    config = small(mode="fo")
    config["simulator"]["kind"] = "opaque_burgers"
    with pytest.raises(zooframe.ZooframeError, match="needs a differentiable simulator"):
        zooframe.run(config, output=tmp_path, registry=registry_with_opaque())


def test_seeded_runs_are_reproducible(tmp_path):
    config = small(steps=4)
    config["estimator"] = {"kind": "rge", "q": 3}
    a = zooframe.run(config, output=tmp_path / "a", progress=False)
    b = zooframe.run(config, output=tmp_path / "b", progress=False)
    losses = [[json.loads(line)["loss"] for line in (d / "metrics.jsonl").read_text().splitlines()] for d in (a.dir, b.dir)]
    assert losses[0] == losses[1]
    for (name, x), (_, y) in zip(a.model.state_dict().items(), b.model.state_dict().items()):
        assert torch.equal(x, y), name


def test_run_folder_and_cli_evaluate(tmp_path, capsys):
    config_path = tmp_path / "config.json"
    config_path.write_text(json.dumps(small(steps=3)))
    run_dir = tmp_path / "run"
    assert main(["run", str(config_path), "--output", str(run_dir), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert {p.name for p in run_dir.iterdir()} >= {"config.json", "metrics.jsonl", "model.pt", "summary.json"}
    assert summary["steps"] == 3 and summary["queries_total"] > 0
    assert main(["evaluate", str(run_dir), "--json"]) == 0
    ev = json.loads(capsys.readouterr().out)
    assert ev["corrected"]["mae_mean"] == pytest.approx(summary["evaluation"]["corrected"]["mae_mean"])


def test_a_failing_simulator_keeps_what_was_computed(tmp_path):
    from .helpers import OpaqueBurgers

    config = small(steps=50)
    # each step costs 2 cases x (1 + 2 x 42 queries) = 170 single-case calls: fail during step 4
    config["simulator"].update(kind="opaque_burgers", fail_after=20 + 3 * 170 + 50)
    OpaqueBurgers.calls = 0
    with pytest.raises(zooframe.ZooframeError, match="'opaque_burgers' failed at step 3: .*solver diverged") as info:
        zooframe.run(config, output=tmp_path, registry=registry_with_opaque())
    assert isinstance(info.value.__cause__, RuntimeError)  # the plugin's own error, with its traceback
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["status"] == "failed" and "solver diverged" in summary["error"]
    assert summary["steps"] == 3
    assert len((tmp_path / "metrics.jsonl").read_text().splitlines()) == summary["steps"]
    assert (tmp_path / "model.pt").is_file()


def test_cli_reports_user_errors_without_traceback(tmp_path, capsys):
    assert main(["evaluate", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "not a run folder" in err and "Traceback" not in err


def test_every_failure_after_the_folder_exists_ends_in_a_summary(tmp_path, monkeypatch):
    import json

    from zooframe.runs import folder as runs

    config = small(steps=2)
    config["reference"] = {"kind": "file", "path": str(tmp_path / "missing.npz")}
    with pytest.raises(zooframe.ConfigError, match="missing.npz"):  # known before any work: no folder
        zooframe.run(config, output=tmp_path / "a")
    assert not (tmp_path / "a").exists()

    def broken(*args, **kwargs):
        raise RuntimeError("figures crashed")

    with monkeypatch.context() as patch:
        patch.setattr(runs, "Trainer", broken)
        with pytest.raises(RuntimeError):
            zooframe.run(small(steps=2), output=tmp_path / "a")
    summary = json.loads((tmp_path / "a" / "summary.json").read_text())
    assert summary["status"] == "failed" and summary["failed_in"].startswith("building")

    monkeypatch.setattr(runs, "held_out", broken)
    with pytest.raises(RuntimeError):
        zooframe.run(small(steps=2), output=tmp_path / "b")
    summary = json.loads((tmp_path / "b" / "summary.json").read_text())
    assert (summary["status"], summary["failed_in"], summary["steps"]) == ("failed", "evaluation", 2)
    assert "figures crashed" in summary["error"] and (tmp_path / "b" / "model.pt").is_file()


def test_training_init_starts_from_a_finished_runs_weights_and_normalization(tmp_path):
    """Supervised pre-training, then the solver in the loop: the second run starts exactly where the
    first ended (weights and normalization), and so starts at a far lower loss than from scratch."""
    supervised = small(mode="non", steps=60, optimizer={"lr": 0.03})
    del supervised["estimator"]  # estimates nothing, so needs no estimator
    pretrained = zooframe.run(supervised, output=tmp_path / "non", progress=False)
    saved = torch.load(tmp_path / "non" / "model.pt", weights_only=True)
    config = small(steps=1, optimizer={"lr": 1e-12}, init=str(tmp_path / "non"))
    fine = zooframe.run(config, output=tmp_path / "zo", progress=False)
    for name, value in fine.model.state_dict().items():
        assert torch.allclose(value, saved[name], atol=1e-9), name  # normalization buffers: not refitted
    assert not torch.equal(saved["state_std"], torch.ones_like(saved["state_std"]))  # fitted, so the check bites
    scratch = zooframe.run(small(steps=1, optimizer={"lr": 1e-12}), output=tmp_path / "scratch", progress=False)
    first = [json.loads((d / "metrics.jsonl").read_text().splitlines()[0])["loss"] for d in (fine.dir, scratch.dir)]
    assert first[0] < 0.5 * first[1]
    assert fine.summary["evaluation"]["corrected"]["mae_mean"] == pytest.approx(
        pretrained.summary["evaluation"]["corrected"]["mae_mean"], rel=1e-6)
    also = zooframe.run(small(steps=1, optimizer={"lr": 1e-12}, init=str(tmp_path / "non" / "model.pt")),
                        output=tmp_path / "file", progress=False)  # the weights file itself serves too
    assert also.summary["evaluation"] == fine.summary["evaluation"]


def test_a_run_that_ends_worse_than_uncorrected_warns_once_and_names_the_ladder(tmp_path, capsys):
    from zooframe.cli import _format_warning
    from zooframe.runs.folder import WorseThanUncorrected

    config = tmp_path / "config.json"
    config.write_text(json.dumps(small(steps=1, optimizer={"lr": 1.0})))  # a step far too large
    with pytest.warns(WorseThanUncorrected) as warned:
        assert main(["run", str(config), "--output", str(tmp_path / "run"), "--quiet"]) == 0
    ratio = float(capsys.readouterr().out.split("ratio ")[1].rstrip(")\n"))
    assert ratio > 1 and len(warned) == 1 and f"(ratio {ratio:.3f})" in str(warned[0].message)
    line = _format_warning(warned[0].message, WorseThanUncorrected, "", 0)
    assert line.startswith("zooframe: warning: the corrected solver ended worse") and line.count("\n") == 1
    assert "`zooframe compare CONFIG`" in line


def test_a_simulator_failing_in_the_held_out_rollouts_names_the_stage_and_the_cases(tmp_path, monkeypatch):
    from zooframe.core.objective import COUPLINGS
    from zooframe.faults import SimulatorCrashed

    def crash(*args, **kwargs):
        raise SimulatorCrashed("exit code 3: negative pressure")

    monkeypatch.setattr(COUPLINGS["correction"], "held_out", crash)
    with pytest.raises(zooframe.ZooframeError, match=r"simulator 'burgers' failed in the held-out rollouts \(10 steps "
                       r"of the 'test' cases test-nu0.03\): SimulatorCrashed: exit code 3: negative pressure"):
        zooframe.run(small(steps=1), output=tmp_path)
    assert json.loads((tmp_path / "summary.json").read_text())["failed_in"] == "evaluation"


@pytest.mark.parametrize("model", [{"kind": "conv", "kernel_size": 3}, {"kind": "mlp", "hidden": [8]}])
def test_a_zero_output_layer_starts_from_the_uncorrected_solver_and_still_learns(model):
    from zooframe.config.registry import resolve
    from zooframe.plugins.model import ModelSpec

    registry = zooframe.Registry(load_external=False)
    x = torch.randn(3, 2, 16)
    for zero in (False, True):
        net = resolve("model", {**model, "zero_init_output": zero}, registry).build().build(ModelSpec(2, 1, (16,)))
        out = net(x)
        assert torch.equal(out, torch.zeros_like(out)) == zero
    out.sum().backward()  # the zero layer's own weights get a gradient, so training moves it
    assert net[-1 if model["kind"] == "conv" else -2].weight.grad.abs().sum() > 0
