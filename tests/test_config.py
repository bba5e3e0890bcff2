"""Config validation: every error a one-line message with its path, exit code 2, no traceback."""

import json
from pathlib import Path

import jsonschema
import pytest

import zooframe
from zooframe.cli import main
from zooframe.config.schemas import build_schemas, render
from zooframe.runs.outputs import output_schemas

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = sorted((ROOT / "examples").glob("*.json"))
VALID = {"simulator": {"kind": "burgers"}, "model": {"kind": "conv"}, "estimator": {"kind": "cge"}}


def validate(tmp_path, capsys, config):
    path = tmp_path / "config.json"
    path.write_text(json.dumps(config))
    code = main(["validate", str(path)])
    err = capsys.readouterr().err
    return code, [line.split(": ", 1)[1] for line in err.splitlines()], err


def with_(**changes):
    config = json.loads(json.dumps(VALID))
    for path, value in changes.items():
        *parents, leaf = path.split("__")
        node = config
        for p in parents:
            node = node.setdefault(p, {})
        if value is ...:
            del node[leaf]
        else:
            node[leaf] = value
    return config


@pytest.mark.parametrize("config, expected", [
    (with_(estimator__kind="spsa"), "estimator.kind: unknown estimator kind 'spsa'; known: cge, guided, rge"),
    (with_(simulator__kind="lbm"), "simulator.kind: unknown simulator kind 'lbm'; known: burgers"),
    (with_(model__hidden_channels="many"), "model.hidden_channels: Input should be a valid integer"),
    (with_(estimator__mu=-0.1), "estimator.mu: Input should be greater than 0 (got -0.1)"),
    (with_(training__stepz=10), "training.stepz: unknown field; did you mean steps? allowed: mode, unroll, steps"),
    (with_(estimator__q=3), "estimator.q: unknown field; allowed: kind, mu, scheme"),
    (with_(model=...), "model: required field is missing"),
    (with_(estimator=...), "estimator: required when training.mode is 'zo'"),
    (with_(execution__chunk_size=0), "execution.chunk_size: chunk_size must be at least 1 or 'auto' (got 0)"),
    (with_(sparsity__ratio=1.0), "sparsity.ratio: Input should be less than 1 (got 1.0)"),
    (with_(training__mode="backprop"), "training.mode: Input should be 'zo', 'fo', 'nog' or 'non'"),
    # issue 32: accepted, then a traceback or a fault blamed on the simulator or the machine
    (with_(training__optimizer={"lr": float("inf")}), "training.optimizer.lr: Input should be a finite number"),
    (with_(estimator__mu=float("nan")), "estimator.mu: Input should be a finite number"),
    (with_(training__seed=2**64 - 1), "training.seed: Input should be less than 9223372036854775808"),
    (with_(execution__threads=100000), "execution.threads: threads must be at most 1024 or 'auto' (got 100000)"),
    (with_(execution__threads_per_worker=100000), "execution.threads_per_worker: Input should be less than or equal "
                                                  "to 1024"),
    (with_(output__dir=""), "output.dir: empty: name the run folder"),
    (with_(model__hidden_channels=1e8), "model.hidden_channels: Input should be less than or equal to 1024"),
    (with_(model={"kind": "mlp", "hidden": [16, -1]}), "model.hidden.1: Input should be greater than or equal to 1"),
])
def test_validate_explains_each_error_on_one_line(tmp_path, capsys, config, expected):
    code, problems, err = validate(tmp_path, capsys, config)
    assert code == 2
    assert len(problems) == 1 and problems[0].startswith(expected), err
    assert "Traceback" not in err


@pytest.mark.parametrize("mode", ["non", "nog", "fo"])
def test_modes_that_estimate_nothing_take_no_estimator(tmp_path, capsys, mode):
    code, problems, err = validate(tmp_path, capsys, with_(estimator=..., training__mode=mode))
    assert code == 0 and not problems, err


def test_all_errors_are_reported_at_once(tmp_path, capsys):
    config = with_(estimator__mu=-1, training__steps=0, output__colour="red")
    code, problems, _ = validate(tmp_path, capsys, config)
    assert code == 2
    assert {p.split(":")[0] for p in problems} == {"training.steps", "estimator.mu", "output.colour"}


def test_unreadable_files_are_user_errors(tmp_path, capsys):
    bad = tmp_path / "bad.json"
    bad.write_text("{\"simulator\": ")
    assert main(["validate", str(bad)]) == 2
    assert "not valid JSON" in capsys.readouterr().err
    assert main(["validate", str(tmp_path / "missing.json")]) == 2
    assert "file not found" in capsys.readouterr().err


def test_unroll_longer_than_horizon_is_rejected():
    with pytest.raises(zooframe.ConfigError, match="unroll .5. must not exceed horizon .4."):
        zooframe.load_config(with_(training__unroll=5, training__horizon=4))


def test_validate_json_output_is_machine_readable(tmp_path, capsys):
    path = tmp_path / "c.json"
    path.write_text(json.dumps(with_(estimator__mu=0)))
    assert main(["validate", str(path), "--json"]) == 2
    out = json.loads(capsys.readouterr().out)
    assert out["valid"] is False and out["errors"][0].startswith("estimator.mu")


def test_committed_schemas_match_the_code(project_registry):
    """Regenerate with `zooframe schema --all` after changing a config model or an output document."""
    generated = {**build_schemas(project_registry), **output_schemas()}
    for name, schema in generated.items():
        committed = (ROOT / "schemas" / name)
        assert committed.is_file(), f"schemas/{name} is missing: run `zooframe schema --all`"
        assert committed.read_text() == render(schema), f"schemas/{name} is stale: run `zooframe schema --all`"
    leftover = sorted({p.name for p in (ROOT / "schemas").glob("*.json")} - set(generated))
    assert not leftover, f"schemas/ holds files the code no longer writes: {leftover}"


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda p: p.name)
def test_examples_validate_against_the_schema_and_the_models(example, project_registry):
    data = json.loads(example.read_text())
    assert data["$schema"] == "../schemas/experiment.schema.json"
    schema = json.loads((ROOT / "schemas" / "experiment.schema.json").read_text())
    jsonschema.validate(data, schema)
    zooframe.load_config(example, project_registry)


def test_schema_rejects_what_the_models_reject():
    schema = json.loads((ROOT / "schemas" / "experiment.schema.json").read_text())
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(with_(estimator__kind="spsa"), schema)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(with_(estimator__mu=-1), schema)
