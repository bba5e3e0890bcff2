"""The process and Ray backends give the local engine's estimates and account simulator time."""

import builtins
import json
import os
import signal

import pytest
import torch

import zooframe
from zooframe.builtins.estimators.cge import CGE, CGEConfig
from zooframe.core.objective import CorrectionObjective
from zooframe.execution.engine import LocalEngine, RemoteEngine, WorkerLost, auto_chunk_size, spread
from zooframe.runs.experiment import Experiment

from .helpers import small

ray = pytest.importorskip("ray")


def estimate(make_engine, config):
    exp = Experiment.build(zooframe.load_config(config))
    engine = make_engine(exp)
    objective = CorrectionObjective(exp.runner, exp.flat, exp.sampler(3).sample(0))
    cge = CGE(CGEConfig(kind="cge"))
    queries = cge.ask(exp.flat.get() + 0.01, torch.Generator())
    with engine:
        return cge.tell(queries, engine.evaluate(objective, queries)), engine


RAY = pytest.mark.ray


@pytest.mark.parametrize("backend, workers", [("process", 2), pytest.param("ray", 1, marks=RAY),
                                              pytest.param("ray", 2, marks=RAY)])
def test_backends_give_the_local_estimate(backend, workers):
    from zooframe.execution.process_engine import ProcessEngine
    from zooframe.execution.ray_engine import RayEngine

    config = small()
    expected, _ = estimate(lambda exp: LocalEngine(chunk_size=1000), config)
    cls = ProcessEngine if backend == "process" else RayEngine
    got, engine = estimate(lambda exp: cls(exp.worker_spec(), workers, chunk_size=16), config)
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5)
    assert engine.queries == len(expected) + 1 and engine.remote_seconds > 0
    # the workers count the states they step (what training.budget.simulator_calls spends): each query
    # steps its 2 cases 2 times after the window's first step, which each worker computes once
    assert engine.queries * 2 * 2 < engine.remote_rows <= engine.queries * 2 * 2 + workers * 2


@RAY
def test_a_ray_run_accounts_queries_and_simulator_time(ray_instance, tmp_path):
    config = small(steps=3)
    config["execution"] = {"backend": "ray", "workers": 2, "chunk_size": 8}
    result = zooframe.run(config, output=tmp_path, progress=False)
    metrics = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert all(m["sim_s"] > 0 and m["queries"] == result.summary["parameters"] + 1 for m in metrics)
    assert result.summary["simulator_s"] >= sum(m["sim_s"] for m in metrics) > 0
    assert ray.is_initialized()  # the engine joined the session's instance and left it running


def remote_engine(backend, exp, workers=2, **options):
    from zooframe.execution.process_engine import ProcessEngine
    from zooframe.execution.ray_engine import RayEngine

    cls = ProcessEngine if backend == "process" else RayEngine
    return cls(exp.worker_spec(), workers, chunk_size=16, **options)


def worker_pid(engine) -> int:
    from zooframe.execution.process_engine import ProcessEngine

    if isinstance(engine, ProcessEngine):
        return engine.pool.submit(os.getpid).result()
    return ray.get(engine.actors[0].ping.remote())


def cge_step():
    """The small experiment, one step's objective and its CGE queries."""
    exp = Experiment.build(zooframe.load_config(small()))
    objective = CorrectionObjective(exp.runner, exp.flat, exp.sampler(3).sample(0))
    return exp, objective, CGE(CGEConfig(kind="cge")).ask(exp.flat.get(), torch.Generator())


@pytest.mark.parametrize("backend", ["process", pytest.param("ray", marks=RAY)])
def test_a_dead_worker_is_replaced_and_its_queries_sent_again(backend):
    exp, objective, queries = cge_step()
    # one worker: in a pool of two, the other could answer all queries before the pool notices the death
    with remote_engine(backend, exp, workers=1, max_restarts=1) as engine:
        expected = engine.evaluate(objective, queries)
        os.kill(worker_pid(engine), signal.SIGKILL)  # as a crashing simulator or a lost node would
        torch.testing.assert_close(engine.evaluate(objective, queries), expected)
        assert engine.restarts == 1
        os.kill(worker_pid(engine), signal.SIGKILL)
        with pytest.raises(zooframe.ZooframeError, match=r"worker died .*\(execution.worker_restarts: 1\)"):
            engine.evaluate(objective, queries)


@pytest.mark.slow  # waits out the worker timeout twice, and restarts the worker
@pytest.mark.parametrize("backend", ["process", pytest.param("ray", marks=RAY)])
def test_a_hung_worker_is_stopped_and_replaced(backend):
    exp, objective, queries = cge_step()
    # one worker: a pool's other worker would take over the queries of a frozen one that holds none
    with remote_engine(backend, exp, workers=1, max_restarts=1) as engine:
        expected = engine.evaluate(objective, queries)
        engine.timeout_s = 3
        os.kill(worker_pid(engine), signal.SIGSTOP)  # frozen, as a simulator that never returns
        torch.testing.assert_close(engine.evaluate(objective, queries), expected)
        assert engine.restarts == 1
        os.kill(worker_pid(engine), signal.SIGSTOP)
        with pytest.raises(zooframe.ZooframeError, match=r"longer than execution.worker_timeout_s \(3 s\)"):
            engine.evaluate(objective, queries)


class FlakyEngine(RemoteEngine):
    """Fails the way it is told, once per call, then answers."""

    backend = "flaky"

    def __init__(self, *failures):
        super().__init__(chunk_size=8, workers=1, max_restarts=2)
        self.failures = list(failures)

    def _map(self, tasks):
        if self.failures:
            raise self.failures.pop(0)
        return ["values"]

    def _restart(self):
        pass


def test_only_lost_workers_are_replaced():
    engine = FlakyEngine(WorkerLost("died"), WorkerLost("died"))
    assert engine._gather([()]) == ["values"] and engine.restarts == 2
    with pytest.raises(zooframe.ZooframeError, match=r"a flaky worker died, after 2 restart\(s\)"):
        FlakyEngine(*[WorkerLost("died")] * 3)._gather([()])
    engine = FlakyEngine(TimeoutError("no answer from the licence server"))
    with pytest.raises(TimeoutError, match="licence server"):  # the simulator's own error, not a hung worker
        engine._gather([()])
    assert engine.restarts == 0


def test_missing_ray_is_a_clear_error(monkeypatch):
    from zooframe.execution.ray_engine import import_ray

    real_import = builtins.__import__

    def no_ray(name, *args, **kwargs):
        if name == "ray":
            raise ImportError("No module named 'ray'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_ray)
    with pytest.raises(zooframe.ZooframeError, match=r"pip install 'zooframe\[ray\]'"):
        import_ray()


def test_auto_chunk_size_fits_the_budget():
    small_budget = auto_chunk_size(rows_per_query=2, state_numel=2 * 65 * 33, params=600, bytes_per_value=4,
                                   budget_mb=16)
    large_budget = auto_chunk_size(rows_per_query=2, state_numel=2 * 65 * 33, params=600, bytes_per_value=4,
                                   budget_mb=1024)
    assert 1 <= small_budget < large_budget
    assert small_budget * 4 * (32 * 2 * 2 * 65 * 33 + 600) <= 16 * 2**20


def test_chunks_are_spread_over_workers():
    assert spread(10, 2, 256) == [(0, 5), (5, 10)]
    assert spread(10, 2, 3) == [(0, 2), (2, 5), (5, 7), (7, 10)]
    assert spread(609, 2, 256) == [(0, 152), (152, 304), (304, 456), (456, 609)]  # not 256, 256, 97
    assert spread(3, 2, 1) == [(0, 1), (1, 2), (2, 3)]
    assert spread(1, 4, 256) == [(0, 1)]


@pytest.mark.parametrize("backend", ["process", pytest.param("ray", marks=[RAY, pytest.mark.slow])])
def test_an_in_process_registry_reaches_the_workers(tmp_path, backend):
    """A plugin that exists only in this process's Registry (no entry point) runs on workers, which
    get its class and config from the experiment and never consult a registry of their own."""
    from .helpers import registry_with_opaque

    config = small(steps=2)
    config["simulator"]["kind"] = "opaque_burgers"
    local = zooframe.run(config, output=tmp_path / "local", registry=registry_with_opaque()).summary
    config["execution"] = {"backend": backend, "workers": 2, "chunk_size": 8}
    remote = zooframe.run(config, output=tmp_path / backend, registry=registry_with_opaque()).summary
    assert remote["status"] == "completed"
    assert remote["evaluation"]["corrected"]["mae_mean"] == pytest.approx(
        local["evaluation"]["corrected"]["mae_mean"], rel=1e-4)


def test_the_model_then_simulator_objective_runs_on_workers(tmp_path):
    """The engines know objectives only by their portable recipe: the second coupling needs no change."""
    from .test_objective import inverse

    local = zooframe.run(inverse(steps=2), output=tmp_path / "local").summary
    config = inverse(steps=2)
    config["execution"] = {"backend": "process", "workers": 2, "chunk_size": 16}
    remote = zooframe.run(config, output=tmp_path / "process").summary
    assert remote["final_loss"] == pytest.approx(local["final_loss"], rel=1e-4)
