"""Checkpoints and --resume: a killed run continues to the weights of a run never stopped, bit for bit."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

import zooframe
from zooframe.cli import main

from .helpers import small

CONFIGS = {
    "dense": {"schedule": {"name": "cosine"}},
    # masks redrawn every step from the plan's generator, and the guided estimator's surrogate history
    "sparse_guided": {"sparsity": {"method": "random", "ratio": 0.5, "use": "gradient"},
                      "estimator": {"kind": "guided", "q": 4, "k": 2}},
}


def config_file(tmp_path, name, steps=400):
    config = small(steps=steps, optimizer={"lr": 0.003})
    config["training"]["schedule"] = CONFIGS[name].get("schedule", {})
    for section in ("sparsity", "estimator"):
        if section in CONFIGS[name]:
            config[section] = CONFIGS[name][section]
    config["execution"] = {"threads": 1}
    config["output"] = {"progress": False, "figures": False, "checkpoint_every": 7}
    path = tmp_path / f"{name}.json"
    path.write_text(json.dumps(config))
    return path


def zooframe_run(*args):
    return subprocess.Popen([sys.executable, "-m", "zooframe.cli", "run", *map(str, args), "--quiet"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def wait_for_steps(process, metrics, steps: int) -> None:
    """Until ``metrics`` holds ``steps`` lines, with ``process`` still running (2 minutes at most)."""
    deadline = time.monotonic() + 120
    while not (metrics.is_file() and len(metrics.read_text().splitlines()) >= steps):
        assert process.poll() is None and time.monotonic() < deadline, process.communicate()
        time.sleep(0.05)


@pytest.mark.slow  # two runs of 400 steps in subprocesses, one killed and resumed
@pytest.mark.parametrize("name", ["sparse_guided"])  # dense: in the signal matrix, tests/test_signals.py
def test_a_killed_run_resumes_to_the_uninterrupted_weights(tmp_path, name):
    path = config_file(tmp_path, name)
    whole = zooframe_run(path, "--output", tmp_path / "whole")
    killed = zooframe_run(path, "--output", tmp_path / "killed")
    metrics = tmp_path / "killed" / "metrics.jsonl"
    wait_for_steps(killed, metrics, 60)
    os.kill(killed.pid, signal.SIGKILL)
    killed.wait()
    lines = len(metrics.read_text().splitlines())
    assert lines < 400, "the run finished before it was killed: make it longer"
    assert whole.wait() == 0, whole.communicate()

    resumed = zooframe_run(path, "--output", tmp_path / "killed", "--resume")
    out, err = resumed.communicate()
    assert resumed.returncode == 0, err
    summary = json.loads((tmp_path / "killed" / "summary.json").read_text())
    assert summary["status"] == "completed" and 0 < summary["resumed_from_step"] <= lines
    assert summary["resumed_from_step"] % 7 == 0
    for a, b in zip(torch.load(tmp_path / "whole" / "model.pt").values(),
                    torch.load(tmp_path / "killed" / "model.pt").values()):
        assert torch.equal(a, b)
    steps = [json.loads(line)["step"] for line in metrics.read_text().splitlines()]
    assert steps == list(range(1, 401))  # each step once: the lines after the checkpoint were dropped
    whole_summary = json.loads((tmp_path / "whole" / "summary.json").read_text())
    assert summary["queries_total"] == whole_summary["queries_total"]


def test_resuming_a_completed_run_does_nothing_and_says_so(tmp_path, capsys):
    path = config_file(tmp_path, "dense", steps=3)
    assert main(["run", str(path), "--output", str(tmp_path / "run"), "--quiet"]) == 0
    before = (tmp_path / "run" / "model.pt").read_bytes()
    capsys.readouterr()
    assert main(["run", str(path), "--output", str(tmp_path / "run"), "--quiet", "--resume"]) == 0
    assert "nothing to do: the run had completed" in capsys.readouterr().out
    assert (tmp_path / "run" / "model.pt").read_bytes() == before


def test_a_folder_of_another_experiment_is_refused_unless_forced(tmp_path, capsys):
    config = small(steps=2)
    config["sparsity"] = {"method": "magnitude", "ratio": 0.5}
    zooframe.run(config, output=tmp_path)
    assert (tmp_path / "mask.pt").is_file()
    other = small(steps=3)
    path = tmp_path.parent / f"{tmp_path.name}.json"
    path.write_text(json.dumps(other))
    for extra in ([], ["--resume"]):
        assert main(["run", str(path), "--output", str(tmp_path), "--quiet", *extra]) == 2
        err = capsys.readouterr().err
        assert "holds another experiment" in err and "training.steps" in err and "sparsity.method" in err
    assert main(["run", str(path), "--output", str(tmp_path), "--quiet", "--force"]) == 0
    assert not (tmp_path / "mask.pt").exists()  # the old run's files are gone, not mixed with the new
    assert len((tmp_path / "metrics.jsonl").read_text().splitlines()) == 3


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
def test_a_crafted_pickle_in_a_run_folder_does_not_execute(tmp_path):
    import pickle

    from zooframe.runs import evaluate_run

    config = small(steps=2)
    zooframe.run(config, output=tmp_path)
    marker = tmp_path / "pwned"

    class Exploit:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    for name in ("model.pt", "checkpoint.pt"):
        with open(tmp_path / name, "wb") as f:
            pickle.dump(Exploit(), f)
    (tmp_path / "summary.json").write_text(json.dumps({"status": "failed"}))
    with pytest.raises(zooframe.ZooframeError, match="cannot read .*checkpoint.pt: it holds objects other than tensors"):
        zooframe.run(config, output=tmp_path, resume=True)
    with pytest.raises(zooframe.ZooframeError, match="cannot read .*model.pt: it holds objects other than tensors"):
        evaluate_run(tmp_path)
    assert not marker.exists()


@pytest.mark.parametrize("backend", ["local", "process"])
def test_an_interrupted_run_resumes_on_its_backend_with_skipped_steps(tmp_path, backend):
    """Faulty steps are skipped before and after the resume point, and workers rebuilt."""
    from .helpers import registry_with_opaque

    config = small(steps=20)
    config["simulator"].update(kind="faulty_burgers", fault="nonfinite", case="train-nu0.05")
    config["training"]["cases_per_step"] = 1
    config["model"]["normalize"] = False  # its statistics come from every case's steps
    config["execution"] = {"threads": 1, "backend": backend, "workers": 2, "chunk_size": 8,
                           "faults": {"policy": "skip", "max_skipped_in_a_row": 100}}
    config["output"] = {"progress": False, "figures": False, "checkpoint_every": 4}
    config["sparsity"] = {"method": "random", "ratio": 0.5, "use": "gradient"}
    registry = registry_with_opaque()
    whole = zooframe.run(config, output=tmp_path / "whole", registry=registry)

    def stop(metrics, trainer):
        if metrics["step"] == 11:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        zooframe.run(config, output=tmp_path / "cut", registry=registry, on_step=stop)
    assert json.loads((tmp_path / "cut" / "summary.json").read_text())["status"] == "interrupted"
    resumed = zooframe.run(config, output=tmp_path / "cut", registry=registry, resume=True)
    assert resumed.summary["resumed_from_step"] == 8
    for a, b in zip(whole.model.parameters(), resumed.model.parameters()):
        assert torch.equal(a, b)
    for key in ("faults", "skipped_steps", "queries_total"):
        assert resumed.summary[key] == whole.summary[key]
    assert 0 < len(whole.summary["skipped_steps"]) < 20


@pytest.mark.parametrize("signame", ["SIGTERM"])  # and every signal in the matrix, tests/test_signals.py
def test_a_scheduler_stop_ends_like_ctrl_c_and_the_run_resumes(tmp_path, signame):
    path = config_file(tmp_path, "dense", steps=300)
    stopped = zooframe_run(path, "--output", tmp_path / "run")
    metrics = tmp_path / "run" / "metrics.jsonl"
    wait_for_steps(stopped, metrics, 20)
    stopped.send_signal(getattr(signal, signame))
    _, err = stopped.communicate(timeout=60)
    assert stopped.returncode == 128 + getattr(signal, signame), err
    assert f"stopped by {signame}" in err and "Traceback" not in err
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["status"] == "interrupted" and signame in summary["error"], summary
    assert (tmp_path / "run" / "model.pt").is_file() and summary["steps"] < 300
    resumed = zooframe_run(path, "--output", tmp_path / "run", "--resume")
    assert resumed.wait() == 0, resumed.communicate()
    assert json.loads((tmp_path / "run" / "summary.json").read_text())["status"] == "completed"


def test_a_run_stored_without_a_field_added_since_resumes_with_its_default(tmp_path):
    config = small(steps=4)
    config["output"] = {"progress": False, "figures": False, "checkpoint_every": 2}
    zooframe.run(config, output=tmp_path)
    stored = json.loads((tmp_path / "config.json").read_text())
    del stored["training"]["solver_jacobian"], stored["execution"]["faults"]  # as a version without them wrote it
    (tmp_path / "config.json").write_text(json.dumps(stored))
    summary = json.loads((tmp_path / "summary.json").read_text())
    (tmp_path / "summary.json").write_text(json.dumps({**summary, "status": "interrupted"}))
    resumed = zooframe.run(config, output=tmp_path, resume=True)
    assert resumed.summary["status"] == "completed" and resumed.summary["resumed_from_step"] == 4
    config["training"]["solver_jacobian"] = "drop"  # a value that does differ still does
    with pytest.raises(zooframe.ZooframeError, match="differs in: training.solver_jacobian"):
        zooframe.run(config, output=tmp_path, resume=True)
