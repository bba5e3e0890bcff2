"""zooframe sweep: the space checked before any trial, trials selected on validation cases carved
out of the training cases, the test split touched once at the end, a killed sweep resumed
without repeating its finished trials."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import jsonschema
import pytest

import zooframe
from zooframe.plugins.errors import ConfigError
from zooframe.runs.experiment import Experiment

from .helpers import registry_with_opaque, small

pytest.importorskip("optuna")

from zooframe.runs import sweep as sweeping  # noqa: E402 (after the skip: the module imports Optuna lazily, its tests need it)

ROOT = Path(__file__).resolve().parents[1]


def task(steps=8):
    config = small(steps=steps, unroll=2, horizon=6)
    config["simulator"]["train_viscosities"] = [0.01, 0.02, 0.05, 0.08]
    config["evaluation"]["steps"] = 6
    return config


LR = {"training.optimizer.lr": {"log_uniform": [1e-4, 0.3]}}


@pytest.mark.parametrize("space, expected", [
    ({"training.optimiser.lr": {"log_uniform": [1e-4, 0.1]}},
     "training.optimiser.lr (log_uniform [0.0001, 0.1]), value 0.0001: training.optimiser: unknown field; did you "
     "mean optimizer?"),
    ({"training.optimizer.lr": {"uniform": [0, 0.1]}},
     "training.optimizer.lr (uniform [0.0, 0.1]), value 0.0: training.optimizer.lr: Input should be greater than 0"),
    ({"model.hidden_channels": {"choice": [4, "wide"]}}, 'value "wide": model.hidden_channels: Input should be a '
                                                         "valid integer"),
    ({"training.optimizer.lr": {"normal": [0, 1]}}, "training.optimizer.lr: unknown distribution 'normal'; known: "
                                                     "uniform"),
    ({"training.steps": {"int": [10, 5]}}, "training.steps: the low bound must be below the high one"),
    ({"evaluation.split": {"choice": ["test", "train"]}}, "evaluation.split: set by the sweep itself"),
])
def test_a_space_the_schema_refuses_is_named_before_any_trial_runs(tmp_path, space, expected):
    with pytest.raises(ConfigError) as info:
        sweeping.sweep(task(), space, trials=2, output=tmp_path / "sweep")
    assert any(expected in p for p in info.value.problems), info.value.problems
    assert not (tmp_path / "sweep").exists()


def test_validation_cases_are_carved_from_the_training_cases_the_same_way_every_time():
    config = zooframe.load_config(task())
    assert sweeping.validation_of(config) == sweeping.Validation("validation", ("train-nu0.05",), carved=True)
    six = zooframe.load_config(task(), overrides={"simulator.train_viscosities": [0.01, 0.02, 0.03, 0.05, 0.08, 0.1]})
    assert sweeping.validation_of(six).cases == ("train-nu0.02", "train-nu0.08")
    named = zooframe.load_config(task(), overrides={"training.validation_cases": ["train-nu0.01"]})
    assert sweeping.validation_of(named) == sweeping.Validation("validation", ("train-nu0.01",), carved=False)


def test_trials_see_validation_cases_only_and_the_test_split_once_at_the_end(tmp_path, monkeypatch):
    """Every case set an experiment is asked for, in order: training and validation in the trials,
    the test split only in the best trial's evaluation after the last trial."""
    asked = []
    cases = Experiment.cases
    monkeypatch.setattr(Experiment, "cases", lambda self, split: asked.append(split) or cases(self, split))
    result = sweeping.sweep(task(), LR, trials=3, output=tmp_path / "sweep")
    assert [t["state"] for t in result["trials"]] == ["completed"] * 3
    assert result["trials"][0]["baseline"] and result["trials"][0]["params"] == {"training.optimizer.lr": 0.01}
    assert asked.count("test") == 1 and asked[-1] == "test"
    assert set(asked[:-1]) == {"train", "validation"}
    trained_on = zooframe.load_config(tmp_path / "sweep/trials/0000/config.json")
    assert trained_on.training.validation_cases == ["train-nu0.05"]
    best = result["best"]
    assert best["test"]["split"] == "test" and best["test"]["trial"] == best["number"]
    assert best["validation"] == min(t["validation"] for t in result["trials"])
    runnable = zooframe.load_config(tmp_path / "sweep" / best["config_file"])  # trains on every training case
    assert runnable.evaluation.split == "test" and runnable.training.validation_cases == []
    assert runnable.training.optimizer.lr == best["params"]["training.optimizer.lr"]
    jsonschema.validate(result, json.loads((ROOT / "schemas/cli-sweep.schema.json").read_text()))
    assert json.loads((tmp_path / "sweep/sweep.json").read_text()) == json.loads(json.dumps(result))
    # the report again (the sweep is done): the test split is not evaluated a second time
    asked.clear()
    again = sweeping.sweep(task(), LR, trials=3, output=tmp_path / "sweep")
    assert "test" not in asked and again["best"] == result["best"]


def test_worker_processes_run_trials_with_the_callers_plugins(tmp_path, monkeypatch):
    """--jobs 2 hands each process the plan alone (pickled): its trials find a plugin that only the
    caller's registry holds."""
    import pickle

    def in_this_process(plan, counts, seed):  # as each spawned process gets it: the plan, no registry
        for i, n in enumerate(counts):
            sweeping.work(pickle.loads(pickle.dumps(plan)), n, seed + i)

    monkeypatch.setattr(sweeping, "_in_processes", in_this_process)
    monkeypatch.setattr(sweeping.figures, "available", lambda: False)  # not the point here
    config = task(steps=1)
    config["simulator"]["kind"], config["training"]["mode"] = "opaque_burgers", "nog"
    config["training"]["horizon"] = config["evaluation"]["steps"] = 2
    result = sweeping.sweep(config, LR, trials=2, jobs=2, output=tmp_path / "sweep", registry=registry_with_opaque())
    assert [t["state"] for t in result["trials"]] == ["completed"] * 2, [t.get("why") for t in result["trials"]]


def test_a_trial_that_a_stop_left_running_is_marked_interrupted_and_queued_again(tmp_path):
    from optuna.distributions import FloatDistribution

    study = sweeping._study(tmp_path)
    left = study.ask({"training.optimizer.lr": FloatDistribution(1e-4, 0.3)})  # its process was killed
    assert sweeping._resume(study) == 0
    first, again = study.get_trials()
    assert (first.number, first.state.name, again.state.name) == (left.number, "FAIL", "WAITING")
    assert again.user_attrs["retry_of"] == left.number
    assert sweeping._resume(study) == 0 and len(study.get_trials()) == 2  # queued once


def sweep_command(config, space, out, *extra):
    return [sys.executable, "-m", "zooframe.cli", "sweep", str(config), str(space), "--output", str(out), "--json",
            *extra]


@pytest.mark.slow
@pytest.mark.ray
def test_a_two_job_sweep_killed_resumes_on_ray_without_repeating_trials_and_beats_its_worst_trial(tmp_path):
    """Two local processes, stopped by SIGTERM after two trials; continued by two Ray workers on
    the same study."""
    config, space, out = tmp_path / "config.json", tmp_path / "space.yaml", tmp_path / "sweep"
    config.write_text(json.dumps(task()))
    space.write_text("training.optimizer.lr: {log_uniform: [1.0e-5, 0.3]}\n")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    process = subprocess.Popen(sweep_command(config, space, out, "--trials", "5", "--jobs", "2"), env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while len(finished(out)) < 2 and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    process.send_signal(signal.SIGTERM)
    assert process.wait(60) == 128 + signal.SIGTERM, process.stderr.read().decode()
    # what the study holds (a signal in the moment after a trial's run wrote "completed" still interrupts it)
    before = [t.number for t in sweeping._study(out).trials if t.state.name == "COMPLETE"]
    assert 1 <= len(before) < 5
    started = {n: json.loads((out / f"trials/{n:04d}/summary.json").read_text())["started"] for n in before}

    result = sweeping.sweep(config, space, trials=5, jobs=2, backend="ray", output=out)
    states = [t["state"] for t in result["trials"]]
    assert states.count("completed") + states.count("pruned") + states.count("failed") == 5
    for n in before:  # kept as they were, not run again
        assert json.loads((out / f"trials/{n:04d}/summary.json").read_text())["started"] == started[n]
    assert all("run again" in t["why"] for t in result["trials"] if t["state"] == "interrupted")
    validations = [t["validation"] for t in result["trials"] if t["validation"] is not None]
    assert result["best"]["validation"] == min(validations) < max(validations)
    # every trial evaluated on the validation cases; the test split only in the best trial's folder
    for t in result["trials"]:
        summary = out / t["run_dir"] / "summary.json"
        if summary.is_file() and "evaluation" in json.loads(summary.read_text()):
            assert json.loads(summary.read_text())["evaluation"]["split"] == "validation"
    tested = sorted(p.parent.name for p in (out / "trials").glob("*/evaluation.json"))
    assert tested == [f"{result['best']['number']:04d}"]
    assert (out / "sweep.png").is_file()


def finished(out: Path) -> list[int]:
    return sorted(int(p.parent.name) for p in (out / "trials").glob("*/summary.json")
                  if json.loads(p.read_text() or "{}").get("status") == "completed")
