"""The batched objectives against plain per-query loops."""

import copy

import torch

import zooframe
from zooframe.estimators.cge import CGE, CGEConfig
from zooframe.engine import LocalEngine
from zooframe.experiment import Experiment
from zooframe.flat_params import FlatParams
from zooframe.objective import CorrectionObjective, ModelThenSimulatorObjective, SimulatorRunner

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


def test_model_then_simulator_training_lowers_the_loss():
    """A network predicts the initial condition of a black-box code from a case parameter."""
    from zooframe.simulators.burgers import Burgers, BurgersConfig

    torch.manual_seed(0)
    sim = Burgers(BurgersConfig(kind="burgers", resolution=16))
    cases = [zooframe.Case(f"c{i}", {"nu": 0.05}) for i in range(8)]
    x = torch.linspace(-1, 1, 8, dtype=torch.float64)[:, None]
    grid = torch.linspace(0, 2 * torch.pi, 16, dtype=torch.float64)
    truth = (x * torch.sin(grid))[:, None, :]  # [8, 1, 16]
    labels = sim.step(sim.step(truth, cases, 0), cases, 0)
    net = torch.nn.Sequential(torch.nn.Linear(1, 8), torch.nn.Tanh(), torch.nn.Linear(8, 16),
                              torch.nn.Unflatten(1, (1, 16))).double()
    flat = FlatParams(net)
    objective = ModelThenSimulatorObjective(SimulatorRunner(sim), flat, x, labels, cases, simulator_steps=2)
    est, engine = CGE(CGEConfig(kind="cge", scheme="central")), LocalEngine()
    opt = torch.optim.Adam(net.parameters(), lr=0.02)
    first = float(objective(flat.get()[None])[0])
    for _ in range(150):
        queries = est.ask(flat.get(), torch.Generator())
        flat.set_grad(est.tell(queries, engine.evaluate(objective, queries)))
        opt.step()
    assert float(objective(flat.get()[None])[0]) < first / 10


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
