"""Loggers: what TensorBoard and MLflow hold after a run, read back with their own readers; a
logger that fails is dropped and changes nothing; a resumed run logs no step twice."""

import ast
import json
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Literal

import pytest
import torch

import zooframe
from tests.helpers import small
from zooframe.plugins.errors import ConfigError
from zooframe.plugins.logger import Logger, LoggerConfig
from zooframe.runs.loggers import LoggerDropped


def with_loggers(*loggers, **training):
    config = small(**training)
    config["output"].update(loggers=list(loggers), checkpoint_every=3)
    return config


def interrupted_then_resumed(config, folder, stopped=lambda: None, at_checkpoint=lambda: None):
    """The run stopped by Ctrl-C after step 5 (its checkpoint is at step 3, after which
    ``at_checkpoint()`` is called), ``stopped()``, then the run resumed."""
    def stop(metrics, trainer):
        if metrics["step"] == 3:
            at_checkpoint()
        if metrics["step"] == 5:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        zooframe.run(config, output=folder, on_step=stop)
    stopped()
    return zooframe.run(config, output=folder, resume=True)


def losses(folder):
    return [(m["step"], m["loss"]) for m in map(json.loads, (folder / "metrics.jsonl").read_text().splitlines())]


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_tensorboard_holds_each_step_once_after_a_resume_and_the_held_out_metrics(tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    def read():
        events = EventAccumulator(str(tmp_path / "run" / "tensorboard"), size_guidance={"scalars": 0, "tensors": 0})
        events.Reload()
        return events

    def on_disk_at_the_checkpoint():  # what a resume finds, had the run been killed here
        assert [e.step for e in read().Scalars("train/loss")] == [1, 2, 3]

    result = interrupted_then_resumed(with_loggers({"kind": "tensorboard", "flush_s": 600}, steps=6),
                                      tmp_path / "run", at_checkpoint=on_disk_at_the_checkpoint)
    events = read()
    logged = [(e.step, e.value) for e in events.Scalars("train/loss")]
    assert [step for step, _ in logged] == [1, 2, 3, 4, 5, 6]  # steps 4 and 5 twice in the files, once as read
    assert [loss for _, loss in logged] == pytest.approx([loss for _, loss in losses(tmp_path / "run")])
    queries = [m["queries"] for m in map(json.loads, (tmp_path / "run" / "metrics.jsonl").read_text().splitlines())]
    assert [e.value for e in events.Scalars("train/queries")] == queries
    (ratio,) = events.Scalars("held_out/corrected_over_src")
    assert (ratio.step, ratio.value) == (6, pytest.approx(result.summary["evaluation"]["corrected_over_src"]))
    assert {tag for tag in events.Tags()["scalars"] if tag.startswith("held_out/")} == {  # each number once
        "held_out/corrected_over_src", "held_out/mae/src/mean", "held_out/mae/src/std", "held_out/mae/corrected/mean",
        "held_out/mae/corrected/std"}
    (mae,) = events.Scalars("held_out/mae/corrected/mean")
    assert mae.value == pytest.approx(result.summary["evaluation"]["metrics"]["mae"]["corrected"]["mean"])
    (config_text,) = events.Tensors("config/text_summary")
    assert '"steps": 6' in config_text.tensor_proto.string_val[0].decode()


class RaisingConfig(LoggerConfig):
    kind: Literal["raising"]
    at_step: int = 2


class Raising(Logger):
    """Fails at one step, as a logger whose disk filled up would."""

    Config = RaisingConfig
    calls = []

    def log_step(self, metrics):
        Raising.calls.append(metrics["step"])
        if metrics["step"] == self.config.at_step:
            raise OSError(28, "No space left on device")

    def end(self, status):
        Raising.calls.append(status)


class _Plugin:
    @zooframe.hookimpl
    def register_loggers(self, register):
        register(Raising)


def test_a_failing_logger_is_dropped_with_one_warning_and_changes_nothing(tmp_path):
    registry = zooframe.Registry(load_external=False, plugins={"test-raising": _Plugin()})
    plain = zooframe.run(small(), output=tmp_path / "plain", registry=registry)
    Raising.calls.clear()
    with pytest.warns(LoggerDropped) as caught:
        logged = zooframe.run(with_loggers({"kind": "raising"}), output=tmp_path / "logged", registry=registry)
    dropped = [w for w in caught if issubclass(w.category, LoggerDropped)]
    assert len(dropped) == 1 and "'raising' failed in log_step (OSError" in str(dropped[0].message)
    assert Raising.calls == [1, 2, "failed"]  # ended as it is dropped, and not called again
    assert logged.summary["status"] == "completed" and len(losses(tmp_path / "logged")) == 5
    for a, b in zip(plain.model.parameters(), logged.model.parameters()):
        assert torch.equal(a, b)


def test_logger_config_errors_name_the_field_and_a_missing_package_its_extra(tmp_path, monkeypatch):
    config = with_loggers({"kind": "tensorbord"}, {"kind": "mlflow", "tracking": "http://x"})
    with pytest.raises(ConfigError) as err:
        zooframe.load_config(config)
    assert "output.loggers.0.kind: unknown logger kind 'tensorbord'; known: mlflow, tensorboard" in err.value.problems
    assert any(p.startswith("output.loggers.1.tracking: unknown field; did you mean tracking_uri?")
               for p in err.value.problems)
    monkeypatch.setitem(sys.modules, "mlflow", None)  # as if it were not installed
    with pytest.raises(ConfigError, match=r"the mlflow logger needs the mlflow package: pip install 'zooframe\[mlflow\]'"):
        zooframe.run(with_loggers({"kind": "mlflow"}), output=tmp_path / "run")
    assert not (tmp_path / "run").exists()


def test_no_module_imports_a_tracker_when_zooframe_is_imported():
    for path in Path(zooframe.__file__).parent.rglob("*.py"):
        for node in ast.parse(path.read_text()).body:  # the module's own statements, not its functions'
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module] if isinstance(node, ast.ImportFrom) and node.level == 0 else [])
            assert not [n for n in names if {"mlflow", "tensorboard"} & set(n.split("."))], path  # torch.utils too


@pytest.mark.slow
def test_mlflow_holds_params_each_step_once_after_a_resume_metrics_artifacts_and_status(tmp_path):
    pytest.importorskip("mlflow")
    from mlflow.tracking import MlflowClient

    config = with_loggers({"kind": "mlflow", "experiment": "burgers", "flush_s": 600}, steps=6)
    config["output"]["figures"] = True
    runs = []

    def status():
        client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'run' / 'mlflow.db'}")
        runs[:] = client.search_runs([client.get_experiment_by_name("burgers").experiment_id])
        return client

    def sent_at_the_checkpoint():  # what a resume finds, had the run been killed here
        client = status()
        assert sorted(m.step for m in client.get_metric_history(runs[0].info.run_id, "train/loss")) == [1, 2, 3]

    result = interrupted_then_resumed(config, tmp_path / "run", status, sent_at_the_checkpoint)
    assert [r.info.status for r in runs] == ["KILLED"]
    client = status()
    (run,) = runs  # the same MLflow run, continued
    assert run.info.status == "FINISHED" and run.info.run_name == "run"
    assert run.data.params["training.optimizer.lr"] == "0.01" and run.data.params["simulator.kind"] == "burgers"
    history = sorted((m.step, m.value) for m in client.get_metric_history(run.info.run_id, "train/loss"))
    assert [step for step, _ in history] == [1, 2, 3, 4, 5, 6]  # steps 4 and 5 once: the resume skipped them
    assert [loss for _, loss in history] == pytest.approx([loss for _, loss in losses(tmp_path / "run")])
    assert run.data.metrics["held_out/corrected_over_src"] == pytest.approx(
        result.summary["evaluation"]["corrected_over_src"])
    assert {key for key in run.data.metrics if key.startswith("held_out/")} == {
        "held_out/corrected_over_src", "held_out/mae/src/mean", "held_out/mae/src/std", "held_out/mae/corrected/mean",
        "held_out/mae/corrected/std"}
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"model.pt", "summary.json", "figures"} <= artifacts
    assert {a.path for a in client.list_artifacts(run.info.run_id, "figures")} == {
        f"figures/{name}" for name in result.summary["figures"]}


@pytest.mark.slow
def test_an_unreachable_tracking_server_is_dropped_at_once_and_training_goes_on(tmp_path):
    pytest.importorskip("mlflow")
    plain = zooframe.run(small(), output=tmp_path / "plain")
    config = with_loggers({"kind": "mlflow", "tracking_uri": f"http://127.0.0.1:{free_port()}"})
    with pytest.warns(LoggerDropped) as caught:
        logged = zooframe.run(config, output=tmp_path / "logged")
    dropped = [str(w.message) for w in caught if issubclass(w.category, LoggerDropped)]
    assert len(dropped) == 1 and "'mlflow' failed in start (URLError" in dropped[0]  # asked once, not retried
    assert logged.summary["status"] == "completed"
    for a, b in zip(plain.model.parameters(), logged.model.parameters()):
        assert torch.equal(a, b)


@pytest.mark.slow
def test_the_tensorboard_server_shows_the_run(tmp_path):
    pytest.importorskip("tensorboard")
    config = with_loggers({"kind": "tensorboard"})
    config["output"]["figures"] = True
    zooframe.run(config, output=tmp_path / "runs" / "small")
    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "tensorboard.main", "--logdir", str(tmp_path / "runs"),
                               "--host", "127.0.0.1", "--port", str(port)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 40
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/data/plugin/scalars/tags", timeout=2) as r:
                    tags = json.load(r)
                if tags:
                    break
            except OSError:
                pass
            assert time.monotonic() < deadline, "TensorBoard did not serve the run within 40 s"
            time.sleep(0.5)
        assert "small/tensorboard" in tags and "train/loss" in tags["small/tensorboard"]
        query = "run=small/tensorboard&tag=train/loss&format=json"
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/data/plugin/scalars/scalars?{query}", timeout=5) as r:
            steps = [step for _, step, _ in json.load(r)]
        assert steps == [1, 2, 3, 4, 5]
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/data/plugin/images/tags", timeout=5) as r:
            images = json.load(r)["small/tensorboard"]
        assert set(images) == {"figures/loss", "figures/mae", "figures/snapshots"}
    finally:
        server.terminate()
        server.wait(timeout=10)
