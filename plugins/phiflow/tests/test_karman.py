"""The PhiFlow Karman plugin: registration, stable jit traces, reference cache, and ZO gradients
of the solver-in-the-loop loss against autograd through PhiFlow."""


import pytest
import torch

import zooframe
import zooframe_phiflow.plugin
from zooframe.core.objective import CorrectionObjective
from zooframe.execution.engine import LocalEngine
from zooframe.plugins.reference import SimulatorReference
from zooframe.runs.experiment import Experiment
from zooframe_phiflow.karman import Karman, KarmanConfig, shedding

# a small, cheap flow: 32 x 16 cells, reference 2x finer, a short warm-up
TINY = {"kind": "karman", "resolution": [32, 16], "reference_factor": 2, "warmup": 4,
        "train_reynolds": [200.0, 800.0], "test_reynolds": [400.0]}


@pytest.fixture
def registry():
    return zooframe.Registry(load_external=False, plugins={"zooframe-phiflow": zooframe_phiflow.plugin})


@pytest.fixture
def tiny(tmp_path):
    return {**TINY, "cache_dir": str(tmp_path / "cache")}


def test_the_entry_point_registers_karman():
    info = zooframe.Registry(load_external=True).get("simulator", "karman")
    assert info.cls is Karman and info.provider == "zooframe-phiflow"


def test_karman_passes_the_conformance_kit(tiny):
    from zooframe.testing import check_simulator

    report = check_simulator(Karman(KarmanConfig(**tiny)), steps=2, rtol=1e-5)
    assert "rows-independent" in report.passed and "pickles" in report.passed, report.text()


def test_a_rollout_traces_the_step_once(tiny):
    sim = Karman(KarmanConfig(**tiny))
    cases = SimulatorReference.of(sim).cases()["train"]
    state = sim.solver.initial(len(cases), kick=0.5)
    with torch.no_grad():
        for _ in range(8):
            state = sim.step(state, cases, seed=0)
    assert sim.solver.traces == 1
    assert torch.isfinite(state).all() and state.shape == (2, 2, 33, 17)
    with torch.no_grad():
        sim.step(torch.cat([state, state]), cases * 2, seed=0)  # a new batch size: one more trace
        sim.step(torch.cat([state, state]), cases * 2, seed=1)
    assert sim.solver.traces == 2


@pytest.mark.slow  # compiles the step for 9 batch sizes
def test_steps_at_many_batch_sizes_warn_nothing_and_keep_no_custom_gradient_traces(tiny):
    """PhiFlow masks the obstacle with phiml's safe_mul, a custom-gradient function that keeps a
    trace per signature (each batch size a step is compiled for, each grid) and warns from the
    eighth on; ZO training meets many batch sizes. The solver clears them after each call."""
    import warnings

    from phiml.math._functional import _safe_mul

    sim = Karman(KarmanConfig(**tiny))
    cases = SimulatorReference.of(sim).cases()["train"]
    state = sim.solver.initial(len(cases), kick=0.5)
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        with torch.no_grad():
            for rows in range(1, 10):
                out = sim.step(state.repeat(rows, 1, 1, 1), cases * rows, seed=0)
        assert sim.solver.traces == 9
        torch.testing.assert_close(out[:2], sim.step(state, cases, seed=0), rtol=1e-5, atol=1e-6)
        theta = state.clone().requires_grad_(True)  # through the jitted step and back: mappings kept
        sim.step(theta, cases, seed=0).square().sum().backward()
    assert torch.isfinite(theta.grad).all() and not _safe_mul.traces
    assert sim.render_label == "vorticity"


def test_warm_started_pressure_solves_match_cold_ones(tiny):
    """Rows sharing a case start their pressure solve from that case's first row (ZO queries);
    a row far from it (another time of the case) starts cold. Results agree to the solve tolerance."""
    warm = Karman(KarmanConfig(**tiny, pressure_solver="cg"))
    cold = Karman(KarmanConfig(**tiny, pressure_solver="cg", pressure_warm_start=False))
    cases = SimulatorReference.of(warm).cases()["train"]
    with torch.no_grad():
        state = warm.solver.initial(2, kick=0.5)
        for _ in range(3):
            state = warm.step(state, cases, 0)
        later = warm.step(warm.step(state, cases, 0), cases, 0)
        queries = [state + 1e-3 * torch.randn(state.shape, generator=torch.Generator().manual_seed(i))
                   for i in range(3)]
        rows = torch.cat([state, *queries, later]) * warm.solver.valid
        a, b = warm.step(rows, cases * 5, 0), cold.step(rows, cases * 5, 0)
    assert sum(len(t) for t in warm.solver._step_from.traces.values()) == 1  # the warm path ran
    torch.testing.assert_close(a, b, atol=5e-4, rtol=0)
    assert (a[:2] - a[-2:]).abs().max() > 1e-2  # the far rows are really elsewhere


def test_the_direct_pressure_solve_is_the_solution_cg_converges_to(tiny):
    direct = Karman(KarmanConfig(**tiny))
    cg = Karman(KarmanConfig(**tiny, pressure_solver="cg", pressure_tolerance=1e-11))
    assert direct.solver.direct is not None and cg.solver.direct is None
    assert direct.solver.direct.solver.cells < 0.1 * 32 * 16  # the obstacle's correction stays local
    cases = SimulatorReference.of(cg).cases()["train"]
    state = direct.solver.initial(2, kick=0.5).double()
    with torch.no_grad():
        for _ in range(3):
            a, b = direct.step(state, cases, 0), cg.step(state, cases, 0)
            torch.testing.assert_close(a, b, atol=1e-9, rtol=0)
            state = b
        assert direct.solver.direct.solver.tensors(state)["columns"].dtype == torch.float64
        assert (direct.step(state.float(), cases, 0) - state.float()).abs().max() > 1e-3  # it moves
        torch.testing.assert_close(direct.step(state.float(), cases, 0), cg.step(state, cases, 0).float(),
                                   atol=2e-5, rtol=0)


def test_cases_differ_in_viscosity_and_padding_stays_empty(tiny):
    sim = Karman(KarmanConfig(**tiny))
    cases = SimulatorReference.of(sim).cases()["train"]
    with torch.no_grad():
        state = sim.solver.initial(2, kick=0.5)
        for _ in range(5):
            state = sim.step(state, cases, 0)
    assert (state[0] - state[1]).abs().max() > 1e-4  # Re 200 and Re 800 evolve differently
    assert torch.all(state[:, 0, :, -1] == 0) and torch.all(state[:, 1, -1, :] == 0)


@pytest.mark.slow  # generates references 5 times (the cache itself: tests/test_trajectory_cache.py)
def test_reference_is_cached_and_regenerated_when_damaged(tiny, monkeypatch):
    sim = Karman(KarmanConfig(**tiny))
    cases = SimulatorReference.of(sim).cases()["train"]
    calls = []
    generate = Karman.generate
    monkeypatch.setattr(Karman, "generate", lambda self, c, s: calls.append(len(c)) or generate(self, c, s))
    first = SimulatorReference.of(sim).trajectories(cases, 3)
    assert first.shape == (2, 4, 2, 33, 17) and calls == [2]
    torch.testing.assert_close(SimulatorReference.of(sim).trajectories(cases, 2), first[:, :3])
    assert calls == [2]  # served from the cache
    path = sim.cache.path(sim._cache_params(cases[1]))
    path.write_bytes(path.read_bytes()[:100])  # a partial file
    with pytest.warns(UserWarning, match="corrupt reference cache"):
        again = SimulatorReference.of(sim).trajectories(cases, 3)
    assert calls == [2, 1]  # only the damaged case was regenerated
    torch.testing.assert_close(again, first, atol=1e-5, rtol=0)  # one case, not two, in the batch: round-off
    other = Karman(KarmanConfig(**{**tiny, "dt": 0.5}))
    SimulatorReference.of(other).trajectories(cases, 3)
    assert calls == [2, 1, 2]  # a parameter that shapes the data is part of the key
    cold = Karman(KarmanConfig(**{**tiny, "pressure_warm_start": False, "pressure_tolerance": 1e-5}))
    SimulatorReference.of(cold).trajectories(cases, 3)
    assert calls == [2, 1, 2]  # ones that do not (the direct solve has no tolerance) are not
    SimulatorReference.of(Karman(KarmanConfig(**{**tiny, "pressure_solver": "cg"}))).trajectories(cases, 3)
    assert calls == [2, 1, 2, 2]


@pytest.mark.parametrize("pressure_solver", ["direct", pytest.param("cg", marks=pytest.mark.slow)])
def test_zo_gradient_of_the_sol_loss_matches_autograd_through_phiflow(registry, tiny, pressure_solver):
    config = zooframe.load_config({
        "simulator": {**tiny, "pressure_tolerance": 1e-5, "pressure_solver": pressure_solver},
        "model": {"kind": "conv", "hidden_channels": 2, "kernel_size": 3, "depth": 0},
        "estimator": {"kind": "cge", "scheme": "central", "mu": 1e-2},
        "training": {"unroll": 2, "horizon": 3},
    }, registry)
    exp = Experiment.build(config, registry)
    window = exp.sampler(2).sample(0)
    objective = CorrectionObjective(exp.runner, exp.flat, window)
    theta = exp.flat.get() + 0.05 * torch.randn(exp.flat.dim)
    theta_g = theta.clone().requires_grad_(True)
    (true,) = torch.autograd.grad(objective(theta_g[None])[0], theta_g)
    queries = exp.estimator.ask(theta, torch.Generator())
    grad = exp.estimator.tell(queries, LocalEngine(chunk_size=64).evaluate(objective, queries))
    assert float(torch.nn.functional.cosine_similarity(grad, true, dim=0)) >= 0.99


def test_shedding_finds_the_frequency_of_a_probe_signal():
    t = torch.arange(200, dtype=torch.float64)
    traj = torch.zeros(200, 2, 5, 5)
    traj[:, 1, 2, 2] = 0.3 * torch.sin(2 * torch.pi * 0.05 * t)
    stats = shedding(traj, (2, 2), dt=1.0)
    assert stats["frequency"] == pytest.approx(0.05, abs=0.005)
    assert stats["amplitude"] == pytest.approx(0.3 / 2**0.5, rel=0.05)


def test_guided_estimates_beat_random_search_at_equal_queries_through_phiflow(registry, tiny):
    """Cosine to autograd through PhiFlow on a short rollout of a small network: the free
    surrogates, and guided search against RGE and CGE on random coordinates at 16 queries."""
    from zooframe.builtins.estimators.cge import CGE, CGEConfig
    from zooframe.builtins.estimators.guided import Guided, GuidedConfig
    from zooframe.builtins.estimators.rge import RGE, RGEConfig
    from zooframe.plugins.estimator import StepInputs
    from zooframe.runs.trainer import autograd_gradient

    config = zooframe.load_config({
        "simulator": tiny, "model": {"kind": "conv", "hidden_channels": 4, "kernel_size": 3, "depth": 0},
        "estimator": {"kind": "cge"}, "training": {"unroll": 3, "horizon": 4},
    }, registry)
    exp = Experiment.build(config, registry)
    window = exp.sampler(3).sample(0)
    theta = exp.flat.get()
    true, _ = autograd_gradient(CorrectionObjective(exp.runner, exp.flat, window, "exact"), theta)
    objective = CorrectionObjective(exp.runner, exp.flat, window)

    def cos(g):
        return float(torch.nn.functional.cosine_similarity(g, true, dim=0))

    surrogate = {j: autograd_gradient(CorrectionObjective(exp.runner, exp.flat, window, j), theta)[0]
                 for j in ("drop", "identity")}
    table = {f"surrogate_{j}": cos(g) for j, g in surrogate.items()}
    q, seeds = 8, 6
    for name, estimator, given in (
            ("guided", lambda: Guided(GuidedConfig(kind="guided", q=q)), StepInputs(surrogate=surrogate["identity"])),
            ("rge", lambda: RGE(RGEConfig(kind="rge", q=q, scheme="central")), StepInputs()),
            ("cge_subset", lambda: CGE(CGEConfig(kind="cge")), None)):
        values = []
        for seed in range(seeds):
            gen = torch.Generator().manual_seed(seed)
            if given is None:  # CGE on 2q - 1 random coordinates (and the centre): 2q queries
                mask = torch.zeros(exp.flat.dim, dtype=torch.bool)
                mask[torch.randperm(exp.flat.dim, generator=gen)[: 2 * q - 1]] = True
                step_given = StepInputs(mask=mask)
            else:
                step_given = given
            est = estimator()
            queries = est.ask(theta, gen, step_given)
            assert len(queries) == 2 * q
            with torch.no_grad():
                values.append(cos(est.tell(queries, LocalEngine(chunk_size=64).evaluate(objective, queries))))
        table[name] = sum(values) / seeds
    print({k: round(v, 3) for k, v in table.items()})
    assert table["surrogate_drop"] > 0.3  # biased, but it points the right way
    assert table["guided"] > max(table["rge"], table["cge_subset"]) + 0.1, table
