"""The batched objectives against plain per-query loops."""

import copy

import pytest
import torch

import zooframe
from zooframe.builtins.estimators.cge import CGE, CGEConfig
from zooframe.core.flat_params import FlatParams
from zooframe.core.objective import CorrectionObjective, ModelThenSimulatorObjective, SimulatorRunner
from zooframe.execution.engine import LocalEngine
from zooframe.runs.experiment import Experiment

from .helpers import registry_with_opaque, small


def setup(config=None, registry=None, dtype="float64"):
    config = config or small()
    config["execution"] = {"dtype": dtype}
    exp = Experiment.build(zooframe.load_config(config, registry), registry)
    window = exp.sampler(exp.config.training.unroll).sample(0)
    return exp, window


def looped_loss(exp, window, theta):
    """One query at a time, with the module's own parameters: the obvious implementation."""
    model = copy.deepcopy(exp.model)
    FlatParams(model).set(theta)
    s, loss = window.start, 0.0
    for t in range(window.targets.shape[1]):
        p = exp.simulator.step(s, window.cases, window.seed + t)
        s = p + model(p, window.features)
        loss += (s - window.targets[:, t]).pow(2).mean()
    return loss / window.targets.shape[1]


def test_batched_correction_objective_equals_a_loop_over_queries():
    exp, window = setup()
    objective = CorrectionObjective(exp.runner, exp.flat, window)
    thetas = exp.flat.get() + 0.1 * torch.randn(5, exp.flat.dim, dtype=torch.float64)
    expected = torch.stack([looped_loss(exp, window, t) for t in thetas])
    torch.testing.assert_close(objective(thetas), expected)


def test_first_solver_step_is_shared_by_all_queries():
    exp, window = setup()
    objective = CorrectionObjective(exp.runner, exp.flat, window)
    assert exp.runner.calls == 1
    queries = CGE(CGEConfig(kind="cge")).ask(exp.flat.get(), torch.Generator())
    LocalEngine(chunk_size=len(queries)).evaluate(objective, queries)
    m = window.targets.shape[1]
    assert exp.runner.calls == 1 + (m - 1)  # one batched call per later step, for all queries
    assert exp.runner.rows == len(window.cases) * (1 + (m - 1) * len(queries))


def test_per_sample_simulator_is_batched_by_the_core():
    registry = registry_with_opaque()
    opaque = small()
    opaque["simulator"]["kind"] = "opaque_burgers"
    exp_a, window = setup(opaque, registry)
    exp_b, _ = setup()
    thetas = exp_a.flat.get() + 0.1 * torch.randn(4, exp_a.flat.dim, dtype=torch.float64)
    a = CorrectionObjective(exp_a.runner, exp_a.flat, window)(thetas)
    b = CorrectionObjective(exp_b.runner, exp_b.flat, window)(thetas)
    torch.testing.assert_close(a, b)


def test_zo_gradient_of_the_unrolled_loss_matches_autograd_through_the_solver():
    exp, window = setup(small(unroll=4))
    objective = CorrectionObjective(exp.runner, exp.flat, window)
    theta = exp.flat.get() + 0.05 * torch.randn(exp.flat.dim, dtype=torch.float64)
    theta_g = theta.clone().requires_grad_(True)
    (true,) = torch.autograd.grad(objective(theta_g[None])[0], theta_g)
    est = CGE(CGEConfig(kind="cge", scheme="central", mu=1e-4))
    queries = est.ask(theta, torch.Generator())
    grad = est.tell(queries, LocalEngine().evaluate(objective, queries))
    assert float(torch.nn.functional.cosine_similarity(grad, true, dim=0)) >= 0.99


def inverse(mode="zo", steps=5, k=3):
    config = small(mode=mode, steps=steps, optimizer={"lr": 0.01})
    config["objective"] = {"coupling": "model_then_simulator", "simulator_steps": k}
    config["model"]["hidden_channels"] = 8
    return config


def test_model_then_simulator_zo_estimate_matches_autograd():
    """y = P^k(x + model(x)) through the differentiable Burgers code: central CGE against autograd."""
    config = inverse()
    config["execution"] = {"dtype": "float64"}
    exp = Experiment.build(zooframe.load_config(config))
    window = exp.sampler(exp.window_steps()).sample(0)
    objective = exp.objective(window)
    assert isinstance(objective, ModelThenSimulatorObjective) and window.targets.shape[1] == 3
    theta = exp.flat.get() + 0.05 * torch.randn(exp.flat.dim, generator=torch.Generator().manual_seed(0))
    true = autograd(objective, theta)
    est = CGE(CGEConfig(kind="cge", scheme="central", mu=1e-5))
    queries = est.ask(theta, torch.Generator())
    grad = est.tell(queries, LocalEngine().evaluate(objective, queries))
    assert float(torch.nn.functional.cosine_similarity(grad, true, dim=0)) >= 0.99


def test_model_then_simulator_from_the_config_trains_and_beats_the_supervised_baseline(tmp_path):
    """ZO through the code lowers the held-out mismatch P^k(u) - x below the network-free guess
    (u = x) and below supervised training without the code (NON)."""
    zo = zooframe.run(inverse(steps=100), output=tmp_path / "zo").summary["evaluation"]
    non = zooframe.run(inverse("non", steps=100), output=tmp_path / "non").summary["evaluation"]
    assert zo["corrected_over_src"] < 0.6
    assert zo["corrected"]["mae_mean"] < non["corrected"]["mae_mean"]
    rec = zo["recovered_input"]
    assert rec["corrected_mae"] < rec["observation_mae"] and zo["simulator_steps"] == 3


def test_model_then_simulator_rejects_a_window_longer_than_the_reference():
    config = inverse(k=12)
    with pytest.raises(zooframe.ConfigError, match=r"simulator_steps \(12\) must not exceed training.horizon"):
        zooframe.load_config(config)


def autograd(objective, theta):
    theta = theta.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(objective(theta[None])[0], theta)
    return g


def test_dropped_solver_jacobian_is_the_one_step_gradient_on_the_visited_states():
    """NOG: each step's correction learns from its own loss, on the states the corrected rollout
    visits, as if those states were given."""
    exp, window = setup(small(unroll=4))
    theta = exp.flat.get() + 0.05 * torch.randn(exp.flat.dim, dtype=torch.float64)
    grad = autograd(CorrectionObjective(exp.runner, exp.flat, window, "drop"), theta)

    model = copy.deepcopy(exp.model)
    FlatParams(model).set(theta)
    visited, s = [], window.start
    with torch.no_grad():
        for t in range(window.targets.shape[1]):
            visited.append(exp.simulator.step(s, window.cases, window.seed + t))
            s = visited[-1] + model(visited[-1], window.features)
    loss = sum((p + model(p, window.features) - window.targets[:, t]).pow(2).mean() for t, p in enumerate(visited))
    expected = torch.cat([g.flatten() for g in torch.autograd.grad(loss / len(visited), list(model.parameters()))])
    torch.testing.assert_close(grad, expected)
    exact = autograd(CorrectionObjective(exp.runner, exp.flat, window), theta)
    assert not torch.allclose(grad, exact, rtol=1e-3)  # with unroll > 1 the solver's Jacobian matters


class Drift:
    """A solver whose Jacobian is the identity: the state moves by a constant."""

    def step(self, state, cases, seed):
        return state + 0.1


def test_identity_solver_jacobian_is_exact_where_the_solver_jacobian_is_the_identity():
    exp, window = setup(small(unroll=4))
    theta = exp.flat.get() + 0.05 * torch.randn(exp.flat.dim, dtype=torch.float64)
    runner = SimulatorRunner(Drift())
    exact = autograd(CorrectionObjective(runner, exp.flat, window, "exact"), theta)
    straight = autograd(CorrectionObjective(runner, exp.flat, window, "identity"), theta)
    dropped = autograd(CorrectionObjective(runner, exp.flat, window, "drop"), theta)
    torch.testing.assert_close(straight, exact)
    assert not torch.allclose(dropped, exact, rtol=1e-3)


def test_black_box_jacobians_never_record_through_the_solver():
    registry = registry_with_opaque()
    opaque = small(unroll=3)
    opaque["simulator"]["kind"] = "opaque_burgers"  # NumPy inside: autograd through it would fail
    exp, window = setup(opaque, registry)
    for jacobian in ("drop", "identity"):
        grad = autograd(CorrectionObjective(exp.runner, exp.flat, window, jacobian), exp.flat.get())
        assert torch.isfinite(grad).all() and grad.abs().sum() > 0
