"""What zooframe writes for other programs (summary.json, metrics.jsonl, evaluation.json, the
--json documents) is what schemas/ says, checked on the outputs of real runs; and a config can
come from standard input ("-")."""

import contextlib
import copy
import io
import json
import sys
from pathlib import Path
from unittest import mock

import jsonschema
import pytest

import zooframe
from zooframe.cli import main

from .helpers import registry_with_opaque, small

SCHEMAS = Path(__file__).resolve().parents[1] / "schemas"


def closed(schema):
    """``schema`` with every object that leaves its keys open closed: the published schemas let a
    later version add optional keys, but what this version writes must all be listed. Objects
    open on purpose (plugins' own keys) say so with ``additionalProperties`` and stay open."""
    if isinstance(schema, dict):
        schema = {k: closed(v) for k, v in schema.items()}
        if schema.get("type") == "object" and "properties" in schema and "additionalProperties" not in schema:
            schema["additionalProperties"] = False
    elif isinstance(schema, list):
        schema = [closed(v) for v in schema]
    return schema


def conforms(document, schema_file):
    schema = json.loads((SCHEMAS / schema_file).read_text())
    jsonschema.Draft202012Validator(closed(schema)).validate(document)


def cli(*argv, stdin=None):
    """Exit code and stdout of ``zooframe ARGV`` in this process, with ``stdin`` as its input."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out), mock.patch.object(sys, "stdin", io.StringIO(stdin or "")):
        code = main(list(argv))
    return code, out.getvalue()


def read(path):
    return json.loads(path.read_text())


def config(steps=3):
    c = small(steps=steps)
    c["model"].update(hidden_channels=6, depth=1)
    c["sparsity"] = {"method": "magnitude", "ratio": 0.5, "use": "model"}  # its summary keys and the export's
    c["evaluation"] = {"steps": 5}
    c["execution"] = {"threads": 1}
    c["output"] = {"progress": False, "figures": False, "checkpoint_every": 2}
    return c


@pytest.fixture(scope="module")
def completed(tmp_path_factory):
    """A run from standard input through `zooframe run - --json`: its folder and its document."""
    out = tmp_path_factory.mktemp("outputs") / "done"
    code, text = cli("run", "-", "--json", "--output", str(out), stdin=json.dumps(config()))
    assert code == 0
    return out, json.loads(text)


def test_a_completed_run_writes_what_the_schemas_say(completed):
    out, document = completed
    summary = read(out / "summary.json")
    assert summary["status"] == "completed" and summary["format_version"] == 2 and "export" in summary["sparsity"]
    conforms(summary, "summary.schema.json")
    conforms(document, "cli-run.schema.json")
    assert document == {"run_dir": str(out), **summary}
    lines = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert len(lines) == 3
    for line in lines:
        conforms(line, "metrics-line.schema.json")


def test_a_summary_without_its_evaluation_does_not_pass_as_completed(completed):
    summary = read(completed[0] / "summary.json")
    del summary["evaluation"]
    with pytest.raises(jsonschema.ValidationError, match="'evaluation' is a required property"):
        conforms(summary, "summary.schema.json")


def test_evaluate_writes_what_the_schemas_say(completed):
    out = completed[0]
    code, text = cli("evaluate", str(out), "--steps", "4", "--json")
    assert code == 0
    document = json.loads(text)
    assert document == read(out / "evaluation.json") and document["run_status"] == "completed"
    conforms(document, "evaluation.schema.json")
    conforms(document, "cli-evaluate.schema.json")


def test_resuming_a_completed_run_says_so_in_the_schema_of_run(completed):
    code, text = cli("run", "-", "--json", "--resume", "--output", str(completed[0]), stdin=json.dumps(config()))
    assert code == 0
    document = json.loads(text)
    assert document["resumed"].startswith("nothing to do")
    conforms(document, "cli-run.schema.json")


def test_running_interrupted_and_resumed_summaries_follow_the_schema(tmp_path):
    seen = []

    def stop(metrics, trainer):
        if metrics["step"] == 2:
            seen.append(read(tmp_path / "run" / "summary.json"))
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        zooframe.run(config(), output=tmp_path / "run", on_step=stop)
    assert seen[0]["status"] == "running"
    conforms(seen[0], "summary.schema.json")
    interrupted = read(tmp_path / "run" / "summary.json")
    assert interrupted["status"] == "interrupted" and interrupted["checkpoint_step"] == 2
    conforms(interrupted, "summary.schema.json")

    path = tmp_path / "config.json"
    path.write_text(json.dumps(config()))
    code, text = cli("run", str(path), "--json", "--resume", "--output", str(tmp_path / "run"))
    assert code == 0
    document = json.loads(text)
    assert document["resumed_from_step"] == 2 and document["status"] == "completed"
    conforms(document, "cli-run.schema.json")


def test_a_failed_run_and_its_faulted_steps_follow_the_schemas(tmp_path):
    c = small(steps=4)
    c["simulator"].update(kind="faulty_burgers", fault="exception", every=1)
    c["model"]["normalize"] = False  # its statistics would fail first: every call faults
    c["execution"] = {"faults": {"policy": "skip", "max_skipped_in_a_row": 2}, "threads": 1}
    with pytest.raises(zooframe.ZooframeError, match="2 steps in a row were skipped"):
        zooframe.run(c, output=tmp_path, registry=registry_with_opaque())
    summary = read(tmp_path / "summary.json")
    assert summary["status"] == "failed" and summary["skipped_steps"] == [1, 2]
    conforms(summary, "summary.schema.json")
    lines = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert all("skipped" in line and line["faults"] for line in lines)
    for line in lines:
        conforms(line, "metrics-line.schema.json")


def test_a_run_that_fails_before_training_names_its_stage_in_the_schema(tmp_path, monkeypatch):
    from zooframe.runs import folder

    def broken(*args, **kwargs):
        raise RuntimeError("no workers")

    monkeypatch.setattr(folder, "Trainer", broken)
    with pytest.raises(RuntimeError):
        zooframe.run(config(), output=tmp_path)
    summary = read(tmp_path / "summary.json")
    assert summary["status"] == "failed" and summary["failed_in"].startswith("building")
    conforms(summary, "summary.schema.json")


def test_validate_check_and_plugins_documents_follow_the_schemas():
    code, text = cli("validate", "-", "--json", stdin=json.dumps(config()))
    assert code == 0 and json.loads(text)["valid"] is True
    conforms(json.loads(text), "cli-validate.schema.json")
    bad = copy.deepcopy(config())
    bad["training"]["steps"] = 0
    code, text = cli("validate", "-", "--json", stdin=json.dumps(bad))
    assert code == 2 and json.loads(text)["errors"][0].startswith("training.steps")
    conforms(json.loads(text), "cli-validate.schema.json")

    code, text = cli("check", "-", "--json", stdin=json.dumps(config()))
    assert code == 0 and json.loads(text)["passed"]
    conforms(json.loads(text), "cli-check.schema.json")

    code, text = cli("plugins", "--json")
    assert code == 0 and any(row["kind"] == "burgers" for row in json.loads(text)["plugins"])
    conforms(json.loads(text), "cli-plugins.schema.json")


@pytest.mark.parametrize("argv", [["validate", "-"], ["run", "-"], ["check", "-"],
                                  ["reference", "export", "-", "ref.npz"]])
def test_a_config_from_stdin_is_named_stdin_in_its_errors(argv, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "stdin", io.StringIO('{"name": "x",'))
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "<stdin>" in err and "not valid JSON" in err and "Traceback" not in err
    assert not (tmp_path / "ref.npz").exists()


def test_relative_paths_in_a_config_from_stdin_are_taken_from_the_working_directory(completed, capsys,
                                                                                    monkeypatch, tmp_path):
    c = config()
    c["training"]["init"] = "done"  # the completed run's folder, relative
    monkeypatch.setattr(sys, "stdin", io.StringIO(json.dumps(c)))
    monkeypatch.chdir(completed[0].parent)
    assert main(["validate", "-"]) == 0
    assert capsys.readouterr().out.strip() == "<stdin>: valid"
    monkeypatch.setattr(sys, "stdin", io.StringIO(json.dumps(c)))
    monkeypatch.chdir(tmp_path)
    assert main(["validate", "-"]) == 2
    assert "<stdin>: training.init: done is neither a finished run's folder" in capsys.readouterr().err
