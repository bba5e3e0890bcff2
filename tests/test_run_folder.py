"""What a run folder holds is never lost silently: a plain re-run does not delete a run's progress,
every file is written whole or not at all (a full disk keeps the last checkpoint, and the run
resumes to the weights of a run never stopped), links planted in the folder are not written
through, and the summary says where a run in progress is."""

import json
import os

import pytest
import torch

import zooframe
from zooframe.cli import main
from zooframe.plugins import atomic
from zooframe.runs.folder import CHECKPOINT_FILE, METRICS_FILE, MODEL_FILE, SUMMARY_FILE

from .helpers import small


def config(steps=6):
    c = small(steps=steps)
    c["execution"] = {"threads": 1}
    c["output"] = {"progress": False, "figures": False, "checkpoint_every": 2}
    return c


def stop_at(step):
    def on_step(metrics, trainer):
        if metrics["step"] == step:
            raise KeyboardInterrupt
    return on_step


def weights(folder):
    return torch.load(folder / MODEL_FILE, weights_only=True)


@pytest.mark.parametrize("stopped", [True, False], ids=["stopped", "completed"])
def test_a_plain_rerun_does_not_delete_a_run_of_the_same_config(tmp_path, stopped):
    out = tmp_path / "run"
    if stopped:
        with pytest.raises(KeyboardInterrupt):
            zooframe.run(config(), output=out, on_step=stop_at(3))
    else:
        zooframe.run(config(), output=out)
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    with pytest.raises(zooframe.ZooframeError, match="resume it with --resume, or replace it with --force"):
        zooframe.run(config(), output=out)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert zooframe.run(config(), output=out, force=True).summary["status"] == "completed"


def test_a_full_disk_keeps_the_last_checkpoint_and_the_run_resumes_to_the_same_weights(tmp_path, monkeypatch):
    whole = zooframe.run(config(), output=tmp_path / "whole")
    out = tmp_path / "full"
    real_fsync, full = os.fsync, []

    def fsync(fd):
        if full:
            raise OSError(28, "No space left on device")
        real_fsync(fd)

    def fill_the_disk_after_step_3(metrics, trainer):
        if metrics["step"] == 3:
            full.append(True)

    monkeypatch.setattr(os, "fsync", fsync)
    with pytest.raises(zooframe.ZooframeError) as error:
        zooframe.run(config(), output=out, on_step=fill_the_disk_after_step_3)
    message = str(error.value)
    assert f"cannot write the run folder {out} (No space left on device)" in message
    assert f"Kept: {CHECKPOINT_FILE} at step 2" in message and "--resume" in message
    assert atomic.leftovers(out) == []  # no temporary file stays behind
    assert torch.load(out / CHECKPOINT_FILE, weights_only=True)["step"] == 2  # the good one, whole

    full.clear()  # space freed
    resumed = zooframe.run(config(), output=out, resume=True)
    assert resumed.summary["status"] == "completed" and resumed.summary["resumed_from_step"] == 2
    for a, b in zip(weights(whole.dir).values(), weights(out).values()):
        assert torch.equal(a, b)


@pytest.mark.parametrize("name", [METRICS_FILE, MODEL_FILE, CHECKPOINT_FILE])
def test_a_link_planted_in_a_run_folder_is_not_written_through(tmp_path, name):
    out = tmp_path / "run"
    with pytest.raises(KeyboardInterrupt):
        zooframe.run(config(), output=out, on_step=stop_at(3))
    outside = tmp_path / "outside"
    outside.write_bytes((out / name).read_bytes() if (out / name).exists() else b"precious")
    precious = outside.read_bytes()
    (out / name).unlink(missing_ok=True)
    (out / name).symlink_to(outside)
    with pytest.raises(zooframe.ZooframeError, match="symbolic link") as error:
        zooframe.run(config(), output=out, resume=True)
    assert name in str(error.value) and outside.read_bytes() == precious


def test_a_write_that_fails_midway_leaves_the_old_file_and_no_temporary_one(tmp_path):
    path = tmp_path / "summary.json"
    atomic.write_json(path, {"old": True})
    with pytest.raises(RuntimeError), atomic.atomic_write(path, "w") as f:
        f.write('{"new": ')
        raise RuntimeError("killed midway")
    assert json.loads(path.read_text()) == {"old": True} and atomic.leftovers(tmp_path) == []
    link = tmp_path / "link.json"
    link.symlink_to(path)
    with pytest.raises(atomic.WriteError, match="link.json: it is a symbolic link"):
        atomic.write_json(link, {"new": True})
    assert json.loads(path.read_text()) == {"old": True}


def test_the_summary_of_a_run_in_progress_says_running_and_its_step(tmp_path):
    out, seen = tmp_path / "run", []
    zooframe.run(config(), output=out,
                 on_step=lambda m, t: seen.append(json.loads((out / SUMMARY_FILE).read_text())) if m["step"] == 5 else 0)
    assert seen[0]["status"] == "running" and seen[0]["step"] == seen[0]["checkpoint_step"] == 4


def test_an_interrupted_run_says_both_its_steps_and_its_checkpoint(tmp_path):
    out = tmp_path / "run"
    with pytest.raises(KeyboardInterrupt):
        zooframe.run(config(), output=out, on_step=stop_at(3))
    summary = json.loads((out / SUMMARY_FILE).read_text())
    assert summary["status"] == "interrupted" and summary["steps"] == 3 and summary["checkpoint_step"] == 2


def _drop(key):
    return lambda state: state.pop(key)


def _set(key, value):
    return lambda state: state.__setitem__(key, value)


def _reshape_first_weight(state):
    name = next(iter(state["model"]))
    state["model"][name] = torch.zeros(7, 3)


@pytest.mark.parametrize("damage", [_drop("optimizer"), _reshape_first_weight, _set("generator", torch.zeros(3)),
                                    _set("step", -300), _set("step", 10**6), _set("step", "2")],
                         ids=["missing key", "wrong shape", "bad generator", "negative step", "step past the end",
                              "step not a number"])
def test_a_damaged_checkpoint_is_named_not_resumed(tmp_path, capsys, damage):
    out = tmp_path / "run"
    with pytest.raises(KeyboardInterrupt):
        zooframe.run(config(), output=out, on_step=stop_at(3))
    state = torch.load(out / CHECKPOINT_FILE, weights_only=True)
    damage(state)
    torch.save(state, out / CHECKPOINT_FILE)
    metrics = (out / METRICS_FILE).read_text()
    path = tmp_path / "config.json"
    path.write_text(json.dumps(config()))
    assert main(["run", str(path), "--output", str(out), "--resume"]) == 2
    err = capsys.readouterr().err
    assert f"cannot resume from {out / CHECKPOINT_FILE}" in err and "--force" in err and "Traceback" not in err
    assert (out / METRICS_FILE).read_text() == metrics


def test_evaluate_prints_its_result_where_the_folder_cannot_keep_it_and_says_the_run_had_stopped(
        tmp_path, capsys, monkeypatch):
    out = tmp_path / "run"
    with pytest.raises(KeyboardInterrupt):
        zooframe.run(config(), output=out, on_step=stop_at(3))

    def read_only(*args, **kwargs):
        raise OSError(30, "Read-only file system")

    monkeypatch.setattr(atomic.tempfile, "mkstemp", read_only)
    with pytest.warns(UserWarning) as warned:
        assert main(["evaluate", str(out)]) == 0
    assert "held-out MAE over 10 steps" in capsys.readouterr().out
    messages = [str(w.message) for w in warned]
    assert any("did not complete (status 'interrupted', 3 of 6 steps)" in m for m in messages), messages
    assert any(f"not saved: cannot write {out / 'evaluation.json'}: Read-only file system" in m for m in messages)


def test_a_signal_after_the_run_completed_leaves_it_completed(tmp_path, monkeypatch):
    from zooframe.runs.loggers import RunLoggers

    def ctrl_c(*args):
        raise KeyboardInterrupt  # as if it came while the loggers were sent the results

    monkeypatch.setattr(RunLoggers, "completed", ctrl_c)
    out = tmp_path / "run"
    with pytest.raises(KeyboardInterrupt):
        zooframe.run(config(steps=2), output=out)
    summary = json.loads((out / SUMMARY_FILE).read_text())
    assert summary["status"] == "completed" and "evaluation" in summary
