"""Fault policies: which queries fail, what each policy does with them, on every backend."""

import json

import pytest
import torch

import zooframe
from zooframe.builtins.estimators.cge import CGE, CGEConfig
from zooframe.builtins.estimators.guided import Guided, GuidedConfig
from zooframe.builtins.estimators.rge import RGE, RGEConfig
from zooframe.core.objective import CorrectionObjective
from zooframe.execution.engine import LocalEngine
from zooframe.execution.fault_policy import Guard
from zooframe.plugins.estimator import CoordinateQueries
from zooframe.runs.experiment import Experiment

from .helpers import registry_with_opaque, small


def batch_failing_objective(bad_rows, calls):
    """A batched code that fails the whole call when any row is bad (as a batched solver does)."""
    def f(thetas):
        calls.append(len(thetas))
        if (thetas[:, 0] > 1).any():
            raise RuntimeError("diverged")
        return thetas.sum(dim=1)
    return f


def test_a_failing_batch_is_bisected_down_to_its_bad_queries():
    thetas = torch.zeros(16, 3)
    thetas[[2, 11], 0] = 5.0
    calls = []
    got = Guard(isolate=True)(batch_failing_objective(None, calls), thetas)
    assert [i for i, f in enumerate(got.faults) if f] == [2, 11]
    assert got.counts() == {"exception": 2} and "diverged" in got.messages["exception"]
    assert got.recovered == {"exception": 14} and got.retried == len(calls) - 1
    good = torch.tensor([f is None for f in got.faults])
    torch.testing.assert_close(got.values[good], thetas.sum(dim=1)[good])
    assert len(calls) < 16  # bisection, not one call per query

    whole = Guard(isolate=False)(batch_failing_objective(None, []), thetas)  # every fault aborts: nothing to isolate
    assert whole.counts() == {"exception": 16}


def test_a_retry_recovers_a_transient_fault():
    state = {"calls": 0}

    def flaky(thetas):
        state["calls"] += 1
        if state["calls"] == 1:
            return torch.full((len(thetas),), float("nan"))
        return thetas.sum(dim=1)

    thetas = torch.ones(4, 2)
    got = Guard(retries=(("nonfinite", 2),))(flaky, thetas)
    assert got.counts() == {} and got.recovered == {"nonfinite": 4} and got.retried == 4
    torch.testing.assert_close(got.values, torch.full((4,), 2.0))


def quadratic(theta):
    return (theta ** 2).sum() + theta[0] * theta[1]


def test_skipped_queries_leave_exact_cge_coordinates_and_rescaled_random_estimates():
    theta = torch.tensor([0.3, -0.2, 0.5, 1.0], dtype=torch.float64)
    true = torch.autograd.functional.jacobian(quadratic, theta)
    f = lambda thetas: torch.stack([quadratic(t) for t in thetas])  # noqa: E731
    for scheme in ("forward", "central"):
        cge = CGE(CGEConfig(kind="cge", scheme=scheme, mu=1e-6))
        q = cge.ask(theta, torch.Generator())
        usable = torch.ones(len(q), dtype=torch.bool)
        usable[2 if scheme == "forward" else 5] = False  # coordinate 1's query (forward), coordinate 1's minus
        grad = cge.tell(q, f(q.materialize(0, len(q))).masked_fill(~usable, float("nan")), usable)
        assert grad[1] == 0
        torch.testing.assert_close(grad[[0, 2, 3]], true[[0, 2, 3]], atol=1e-5, rtol=0)
    forward = CGE(CGEConfig(kind="cge"))
    q = forward.ask(theta, torch.Generator())
    assert forward.tell(q, f(q.materialize(0, len(q))), torch.arange(len(q)) > 0) is None  # the centre was lost

    # RGE and guided: the kept pairs alone, averaged over their number; the same as a full estimate of them
    rge = RGE(RGEConfig(kind="rge", q=6, scheme="central", mu=1e-6))
    q = rge.ask(theta, torch.Generator().manual_seed(0))
    values = f(q.materialize(0, len(q)))
    usable = torch.ones(12, dtype=torch.bool)
    usable[[1, 9]] = False  # pair 1 (both) and pair 3 (its minus)
    keep = torch.tensor([0, 2, 4, 5])
    slopes = (values[keep] - values[keep + 6]) / 2e-6
    torch.testing.assert_close(rge.tell(q, values.masked_fill(~usable, float("nan")), usable),
                               slopes @ q.directions[keep] / 4)
    guided = Guided(GuidedConfig(kind="guided", q=6, alpha=0.5))
    from zooframe.plugins.estimator import StepInputs

    q = guided.ask(theta, torch.Generator().manual_seed(0), StepInputs(surrogate=true + 0.1))
    values = f(q.materialize(0, len(q)))
    full = guided.tell(q, values)
    only = torch.zeros(12, dtype=torch.bool)
    only[[0, 6]] = True
    one_pair = guided.tell(q, values.masked_fill(~only, float("nan")), only)
    expected = 6 * q.scale[0] * (values[0] - values[6]) / (2 * q.offsets[0]) * q.directions[0]
    torch.testing.assert_close(one_pair, expected)
    assert torch.isfinite(full).all() and guided.tell(q, values, torch.zeros(12, dtype=torch.bool)) is None

    # subspace: a direction whose pair lost a query adds nothing; the others are exact
    from zooframe.builtins.estimators.subspace import Subspace, SubspaceConfig

    subspace = Subspace(SubspaceConfig(kind="subspace", mu=1e-6))
    basis = torch.eye(4, dtype=theta.dtype)[:3]
    q = subspace.ask(theta, torch.Generator(), StepInputs(surrogates=basis * torch.tensor([[2.0], [-1.0], [5.0]])))
    values = f(q.materialize(0, len(q)))
    usable = torch.ones(6, dtype=torch.bool)
    usable[4] = False  # the minus query of the second direction
    grad = subspace.tell(q, values.masked_fill(~usable, float("nan")), usable)
    lost = int(q.directions[1].abs().argmax())  # the basis is the three coordinates', in the order of their scale
    kept = torch.tensor([1.0, 1.0, 1.0, 0.0], dtype=theta.dtype)
    kept[lost] = 0
    assert lost != 3
    torch.testing.assert_close(grad, true * kept, atol=1e-5, rtol=0)
    assert subspace.tell(q, values, torch.zeros(6, dtype=torch.bool)) is None


def faulty(fault, policy="skip", **simulator):
    config = small(steps=6)
    config["simulator"].update(kind="faulty_burgers", fault=fault, **simulator)
    config["execution"] = {"faults": policy if isinstance(policy, dict) else {"policy": policy}, "chunk_size": 8}
    return config


def engine_for(backend, exp):
    if backend == "local":
        return LocalEngine(chunk_size=8)
    if backend == "process":
        from zooframe.execution.process_engine import ProcessEngine

        return ProcessEngine(exp.worker_spec(), 2, chunk_size=8)
    from zooframe.execution.ray_engine import RayEngine

    return RayEngine(exp.worker_spec(), 1, chunk_size=8)


@pytest.mark.parametrize("backend, fault", [
    *[("local", f) for f in ("exception", "timeout", "output", "shape", "nonfinite")],
    ("process", "exception"), ("process", "shape"), pytest.param("ray", "exception", marks=pytest.mark.ray),
    pytest.param("ray", "nonfinite", marks=pytest.mark.ray)])
def test_the_queries_that_fail_are_found_on_every_backend(request, backend, fault):
    """Queries that blow the corrected state up past 50 fail, every time; the rest keep their
    fault-free values, and a fault inside a worker does not count as a lost worker."""
    if backend == "ray":
        request.getfixturevalue("ray_instance")
    exp = Experiment.build(zooframe.load_config(faulty(fault, above=50.0), registry_with_opaque()),
                           registry_with_opaque())
    objective = CorrectionObjective(exp.runner, exp.flat, exp.sampler(3).sample(0))
    d = exp.flat.dim
    offsets = torch.full((20,), 1e-3)
    offsets[[3, 4, 17]] = 1e4  # coordinate d-1 is the output bias: these corrections are huge
    coords = torch.randint(0, d - 1, (20,), generator=torch.Generator().manual_seed(0))
    coords[[3, 4, 17]] = d - 1
    queries = CoordinateQueries(exp.flat.get(), offsets, True, coords)
    clean = LocalEngine().evaluate(objective, CoordinateQueries(exp.flat.get(), offsets.clamp(max=1), True, coords))
    from zooframe.config.sections import FaultConfig

    with engine_for(backend, exp) as engine:
        got = engine.evaluate_all(objective, queries, Guard.from_config(FaultConfig(policy="skip")))
        assert engine.restarts == 0
    assert [i for i, f in enumerate(got.faults) if f] == [4, 5, 18]  # row 0 is the centre
    assert got.counts() == {fault: 3}
    good = torch.tensor([f is None for f in got.faults])
    torch.testing.assert_close(got.values[good], clean[good], rtol=1e-4, atol=1e-6)


def run_faulty(tmp_path, name, config):
    result = zooframe.run(config, output=tmp_path / name, registry=registry_with_opaque())
    metrics = [json.loads(line) for line in (tmp_path / name / "metrics.jsonl").read_text().splitlines()]
    return result, metrics


def test_abort_names_the_simulator_the_step_the_fault_and_the_queries(tmp_path):
    config = faulty("nonfinite", "abort", every=7)
    with pytest.raises(zooframe.ZooframeError, match=r"'faulty_burgers' failed at step \d+: (\d+) of 42 queries hit a "
                       r"fault \(\1 nonfinite;.*execution.faults.policy") as info:
        zooframe.run(config, output=tmp_path, registry=registry_with_opaque())
    summary = json.loads((tmp_path / "summary.json").read_text())
    failed = int(str(info.value).split(": ")[1].split(" of ")[0])
    assert summary["status"] == "failed" and summary["faults"] == {"nonfinite": failed}
    assert (tmp_path / "model.pt").is_file()


def test_skip_and_penalty_count_the_same_faults_and_finish(tmp_path):
    skipped, metrics = run_faulty(tmp_path, "skip", faulty("nonfinite", "skip", every=7))
    per_step = sum(m.get("faults", {}).get("nonfinite", 0) for m in metrics)
    assert skipped.summary["status"] == "completed" and per_step == skipped.summary["faults"]["nonfinite"] > 0
    assert metrics[-1]["loss"] < metrics[0]["loss"]
    penalised, _ = run_faulty(tmp_path, "penalty", faulty("nonfinite", {"policy": "penalty", "penalty": 1.0}, every=7))
    assert penalised.summary["faults"] == skipped.summary["faults"]  # no bisection for NaN: the same calls fail


def test_retried_transient_faults_give_the_fault_free_run(tmp_path):
    # plain SGD (at a rate that suits this task's small gradients): a retried query is evaluated in
    # a smaller batch, which rounds differently, and Adam would blow a rounding difference in a
    # near-zero gradient coordinate up to a step of its learning rate
    sgd = {"name": "sgd", "lr": 20.0}
    clean = small(steps=6, optimizer=sgd)
    clean["execution"] = {"chunk_size": 8}
    retry = faulty("exception", {"policy": "retry", "retries": 3}, every=5)
    retry["training"]["optimizer"] = sgd
    clean, _ = run_faulty(tmp_path, "clean", clean)
    retried, metrics = run_faulty(tmp_path, "retry", retry)
    assert retried.summary["faults"] == {} and retried.summary["retries"] > 0
    assert retried.summary["recovered"]["exception"] > 0
    initial = Experiment.build(clean.experiment.config, registry_with_opaque()).flat.get()
    assert (clean.experiment.flat.get() - initial).abs().max() > 1e-3  # training moved the weights
    torch.testing.assert_close(retried.experiment.flat.get(), clean.experiment.flat.get(), rtol=1e-5, atol=1e-6)


def test_a_step_that_loses_too_much_is_skipped_and_too_many_in_a_row_stop_the_run(tmp_path):
    config = faulty("nonfinite", {"policy": "skip", "max_lost_fraction": 0.1, "max_skipped_in_a_row": 50}, every=7)
    result, metrics = run_faulty(tmp_path, "lossy", config)
    skipped = [m["step"] for m in metrics if "skipped" in m]
    assert skipped and result.summary["skipped_steps"] == skipped
    assert all("max_lost_fraction" in m["skipped"] for m in metrics if "skipped" in m)

    config = faulty("nonfinite", {"policy": "skip", "max_skipped_in_a_row": 3}, every=1)
    config["model"]["normalize"] = False  # its statistics would fail first: every call is NaN
    with pytest.raises(zooframe.ZooframeError, match="3 steps in a row were skipped"):
        zooframe.run(config, output=tmp_path / "dead", registry=registry_with_opaque())


def test_a_shared_part_of_the_step_that_fails_skips_the_step(tmp_path):
    """The window's first solver step (2 rows: the training cases), shared by all queries, fails."""
    config = faulty("exception", {"policy": "skip", "by_class": {"shape": "abort"}}, rows=2)
    result, metrics = run_faulty(tmp_path, "shared", config)
    assert result.summary["status"] == "completed" and result.summary["skipped_steps"] == [1, 2, 3, 4, 5, 6]
    assert result.summary["faults"] == {"exception": 6}
    assert all("first solver step" in m["skipped"] and m["loss"] is None for m in metrics)
    initial = Experiment.build(result.experiment.config, registry_with_opaque()).flat.get()
    torch.testing.assert_close(result.experiment.flat.get(), initial)  # no step was taken

    config = faulty("shape", {"policy": "skip", "by_class": {"shape": "abort"}}, rows=2)
    with pytest.raises(zooframe.ZooframeError, match="failed at step 0 while computing the window's first solver "
                       "step \\(shape\\): SimulatorShapeError"):
        zooframe.run(config, output=tmp_path / "shape", registry=registry_with_opaque())


@pytest.mark.parametrize("backend", ["process", pytest.param("ray", marks=[pytest.mark.ray, pytest.mark.slow])])
def test_policies_act_the_same_on_workers(request, tmp_path, backend):
    if backend == "ray":
        request.getfixturevalue("ray_instance")
    config = faulty("nonfinite", "skip", every=3)
    config["execution"].update(backend=backend, workers=2)
    result, metrics = run_faulty(tmp_path, backend, config)
    assert result.summary["status"] == "completed" and result.summary["worker_restarts"] == 0
    assert sum(m.get("faults", {}).get("nonfinite", 0) for m in metrics) == result.summary["faults"]["nonfinite"] > 0

    config = faulty("exception", "abort", every=3)  # the third call in each worker
    config["execution"].update(backend=backend, workers=2)
    with pytest.raises(zooframe.ZooframeError, match="'faulty_burgers' failed at step 0"):
        zooframe.run(config, output=tmp_path / "abort", registry=registry_with_opaque())


@pytest.mark.parametrize("backend", ["local", "process",
                                     pytest.param("ray", marks=[pytest.mark.ray, pytest.mark.slow])])
def test_the_simulator_is_closed_where_it_ran(request, tmp_path, backend):
    import os

    if backend == "ray":
        request.getfixturevalue("ray_instance")
    log = tmp_path / "closed.txt"
    config = faulty("exception", "abort", close_log=str(log))
    config["training"]["steps"] = 1
    config["execution"].update(backend=backend, workers=2)
    zooframe.run(config, output=tmp_path / "run", registry=registry_with_opaque())
    pids = log.read_text().split()
    assert str(os.getpid()) in pids  # the run's own simulator (and the one built to check the config)
    assert len(set(pids) - {str(os.getpid())}) == (0 if backend == "local" else 2)  # and each worker's


def test_a_state_that_is_not_floating_point_is_a_shape_fault():
    from zooframe.core.objective import SimulatorRunner
    from zooframe.plugins.faults import SimulatorShapeError

    class Integers:
        def step(self, state, cases, seed):
            return state.round().long()

    with pytest.raises(SimulatorShapeError, match="dtype torch.int64; a state is floating point"):
        SimulatorRunner(Integers())(torch.zeros(2, 1, 4), [None, None], 0)


def test_a_lost_worker_is_counted_apart_from_the_simulator_faults(tmp_path):
    import os
    import signal

    config = faulty("nonfinite", "skip", every=5)
    config["execution"].update(backend="process", workers=1)

    def kill_the_worker(metrics, trainer):
        if metrics["step"] == 2:
            os.kill(trainer.engine.pool.submit(os.getpid).result(), signal.SIGKILL)

    result = zooframe.run(config, output=tmp_path, registry=registry_with_opaque(), on_step=kill_the_worker)
    assert result.summary["status"] == "completed" and result.summary["worker_restarts"] == 1
    assert result.summary["faults"]["lost_worker"] == 1 and result.summary["faults"]["nonfinite"] > 0
    metrics = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert metrics[2]["faults"]["lost_worker"] == 1


def test_penalised_queries_count_as_lost(tmp_path):
    config = faulty("nonfinite", {"policy": "penalty", "penalty": 1.0, "max_lost_fraction": 0.1,
                                  "max_skipped_in_a_row": 50}, every=7)
    result, metrics = run_faulty(tmp_path, "penalty", config)
    assert result.summary["skipped_steps"] and all("skipped or penalised" in m["skipped"] for m in metrics
                                                   if "skipped" in m)


def test_a_code_that_fails_on_the_reference_frames_is_named_before_training(tmp_path):
    config = faulty("nonfinite", "skip", case="train-nu0.05")
    with pytest.raises(zooframe.ZooframeError, match="'faulty_burgers' returned NaN or Inf from the training reference"):
        zooframe.run(config, output=tmp_path, registry=registry_with_opaque())


def test_retry_covers_the_calls_before_training_and_the_held_out_rollouts(tmp_path):
    retry = {"policy": "retry", "retries": 2}
    result, _ = run_faulty(tmp_path, "start", faulty("exception", retry, first=1))  # the normalization pass's call
    assert result.summary["status"] == "completed" and result.summary["recovered"] == {"exception": 1}
    with pytest.raises(zooframe.ZooframeError, match="'faulty_burgers' failed in the normalization pass before "
                                                     "training \\(exception\\): RuntimeError: solver diverged"):
        zooframe.run(faulty("exception", "abort", first=1), output=tmp_path / "abort", registry=registry_with_opaque())

    from zooframe.runs.evaluation import held_out

    with Experiment.build(zooframe.load_config(faulty("exception", retry, first=2), registry_with_opaque()),
                          registry_with_opaque()) as exp:
        first = held_out(exp)  # its first two calls fail and are tried again
        assert exp.simulator.started > first.reference.shape[1]
        torch.testing.assert_close(first.corrected, held_out(exp).corrected, rtol=0, atol=0)
