"""End-to-end runs: training lowers the error, modes share one config, runs are reproducible
and keep what they computed."""

import json
from pathlib import Path

import pytest
import torch

import zooframe
from zooframe.cli import main

from .helpers import registry_with_opaque, small

ROOT = Path(__file__).resolve().parents[1]


def test_zo_training_halves_the_held_out_rollout_error(tmp_path):
    """The README's example: CGE through the Burgers solver, held-out viscosities."""
    result = zooframe.run(ROOT / "examples" / "burgers_zo.json", output=tmp_path, progress=False)
    ev = result.summary["evaluation"]
    assert ev["split"] == "test" and ev["steps"] == 50
    assert ev["corrected"]["mae_mean"] <= 0.5 * ev["src"]["mae_mean"], ev["corrected_over_src"]
    losses = [json.loads(line)["loss"] for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert sum(losses[-100:]) / 100 < 0.2 * sum(losses[:100]) / 100


@pytest.mark.parametrize("mode", ["zo", "non", "fo"])
def test_each_mode_runs_from_the_same_config_and_lowers_the_loss(tmp_path, mode):
    config = small(mode=mode, steps=60, optimizer={"lr": 0.03})
    result = zooframe.run(config, output=tmp_path, progress=False)
    metrics = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert len(metrics) == 60
    assert sum(m["loss"] for m in metrics[-10:]) < 0.5 * sum(m["loss"] for m in metrics[:10])
    queries = sum(m["queries"] for m in metrics)
    assert queries == (60 * (result.summary["parameters"] + 1) if mode == "zo" else 0)
    assert result.summary["status"] == "completed"
    assert result.summary["evaluation"]["corrected"]["mae_mean"] > 0


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
    with pytest.raises(RuntimeError, match="solver diverged"):
        zooframe.run(config, output=tmp_path, registry=registry_with_opaque())
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["status"] == "failed" and "solver diverged" in summary["error"]
    assert summary["steps"] == 3
    assert len((tmp_path / "metrics.jsonl").read_text().splitlines()) == summary["steps"]
    assert (tmp_path / "model.pt").is_file()


def test_cli_reports_user_errors_without_traceback(tmp_path, capsys):
    assert main(["evaluate", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "not a run folder" in err and "Traceback" not in err
