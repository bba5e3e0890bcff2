"""--set overrides and YAML/TOML configs: values typed as JSON, errors naming the --set or the
file and line, the run folder's config showing the result, and --resume refusing a changed
experiment."""

import io
import json

import pytest
import yaml

import zooframe
from zooframe.cli import main
from zooframe.config.files import parse_sets
from zooframe.plugins.errors import ConfigError

from .helpers import small


@pytest.fixture
def config_path(tmp_path):
    path = tmp_path / "config.json"
    path.write_text(json.dumps(small()))
    return path


def test_a_set_through_a_yaml_date_names_it(tmp_path, capsys):
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(small()) + "name: 2024-01-01\n")  # YAML reads a date, which JSON has not
    assert main(["validate", str(path), "--set", "name.x=1"]) == 2
    assert "--set name.x=1: name is \"2024-01-01\", not a section with fields" in capsys.readouterr().err


def test_set_values_are_json_else_strings_and_nested_objects_replace_a_section(config_path):
    overrides = parse_sets(["training.steps=7", "training.optimizer={\"name\": \"sgd\", \"lr\": 0.1}",
                            "name=tried", "output.figures=true", "training.cases_per_step=null",
                            "training.steps=8"])  # the later of one path wins
    assert overrides["training.steps"] == 8 and overrides["name"] == "tried"
    config = zooframe.load_config(config_path, overrides=overrides)
    assert (config.training.steps, config.name, config.output.figures) == (8, "tried", True)
    assert (config.training.optimizer.name, config.training.optimizer.lr) == ("sgd", 0.1)
    assert config.training.optimizer.momentum == 0.0  # the object replaced the section: the rest are defaults
    assert config.training.unroll == small()["training"]["unroll"]  # the file's other fields stay


@pytest.mark.parametrize("sets, expected", [
    (["training.stepz=200"], "--set training.stepz=200: training.stepz: unknown field; did you mean steps?"),
    (["trainig.steps=200"], "--set trainig.steps=200: trainig: unknown field; did you mean training?"),
    (["model.hidden_channels=many"], "--set model.hidden_channels=many: model.hidden_channels: Input should be a "
                                     "valid integer"),
    (["training.steps.every=2"], "--set training.steps.every=2: training.steps is 5, not a section with fields"),
    (["training.steps"], "--set training.steps: expected PATH=VALUE"),
])
def test_a_refused_set_is_named_on_the_command_line(config_path, capsys, sets, expected):
    args = [a for s in sets for a in ("--set", s)]
    assert main(["validate", str(config_path), *args]) == 2
    assert expected in capsys.readouterr().err


@pytest.mark.filterwarnings("ignore::zooframe.runs.folder.WorseThanUncorrected")  # two steps are not the point
def test_the_run_folder_holds_the_overridden_config_and_resume_refuses_a_changed_experiment(config_path, tmp_path,
                                                                                           capsys):
    out = tmp_path / "run"
    assert main(["run", str(config_path), "--output", str(out), "--quiet", "--set", "training.steps=2",
                 "--set", "training.optimizer.lr=0.02"]) == 0
    stored = json.loads((out / "config.json").read_text())
    assert stored["training"]["steps"] == 2 and stored["training"]["optimizer"]["lr"] == 0.02
    assert len((out / "metrics.jsonl").read_text().splitlines()) == 2
    capsys.readouterr()
    assert main(["run", str(config_path), "--output", str(out), "--quiet", "--resume", "--set", "training.steps=2",
                 "--set", "training.optimizer.lr=0.03"]) == 2
    assert "holds another experiment (it differs in: training.optimizer.lr)" in capsys.readouterr().err
    # what does not change the experiment is no difference
    assert main(["run", str(config_path), "--output", str(out), "--quiet", "--resume", "--set", "training.steps=2",
                 "--set", "training.optimizer.lr=0.02", "--set", "output.progress=true"]) == 0
    assert "nothing to do" in capsys.readouterr().out


YAML_CONFIG = """\
# yaml-language-server: $schema=../schemas/experiment.schema.json
name: from_yaml
simulator: {kind: burgers, resolution: 16}
model: {kind: conv, hidden_channels: 4}
estimator: {kind: cge, mu: 5e-3}     # YAML 1.1 reads 5e-3 as a string; zooframe reads it as YAML 1.2 does
training:
  steps: 3
  optimizer: {lr: 1e-2}
"""

TOML_CONFIG = """\
#:schema ../schemas/experiment.schema.json
name = "from_toml"
[simulator]
kind = "burgers"
resolution = 16
[model]
kind = "conv"
hidden_channels = 4
[estimator]
kind = "cge"
mu = 5e-3
[training]
steps = 3
optimizer = {lr = 1e-2}
"""


@pytest.mark.parametrize("suffix, text", [(".yaml", YAML_CONFIG), (".yml", YAML_CONFIG), (".toml", TOML_CONFIG)])
def test_yaml_and_toml_configs_read_as_the_same_schema(tmp_path, suffix, text):
    path = tmp_path / f"config{suffix}"
    path.write_text(text)
    config = zooframe.load_config(path, overrides={"training.steps": 4})
    assert (config.estimator.mu, config.training.optimizer.lr, config.training.steps) == (5e-3, 1e-2, 4)
    assert config.simulator.resolution == 16 and config.model.hidden_channels == 4


@pytest.mark.parametrize("suffix, text, expected", [
    (".yaml", YAML_CONFIG.replace("model: {kind: conv, hidden_channels: 4}", "model: {kind: conv, hidden_channels: 4"),
     "not valid YAML: expected ',' or '}', but got ':' at line 5"),
    (".toml", TOML_CONFIG.replace("[model]", "[model"), "not valid TOML: Expected ']' at the end of a table "
                                                         "declaration (at line 6"),
    (".json", '{\n  "name": "x",\n  "model": \n}', "not valid JSON: Expecting value at line 4"),
    (".yaml", "- a list\n- of things\n", "the top level must be an object"),
    (".yaml", YAML_CONFIG.replace("steps: 3", "steps: many"), "training.steps (line 7): Input should be a valid "
                                                                "integer"),
    (".toml", TOML_CONFIG.replace("steps = 3", "steps = \"many\""), "training.steps: Input should be a valid integer"),
])
def test_a_parse_error_names_the_file_and_line_and_a_schema_error_its_path(tmp_path, capsys, suffix, text, expected):
    path = tmp_path / f"config{suffix}"
    path.write_text(text)
    assert main(["validate", str(path)]) == 2
    err = capsys.readouterr().err
    assert f"{path}: " in err and expected in err


def test_standard_input_reads_json_then_yaml(monkeypatch):
    monkeypatch.setattr("sys.stdin", io.StringIO(YAML_CONFIG))
    assert zooframe.load_config("-").name == "from_yaml"
    monkeypatch.setattr("sys.stdin", io.StringIO(json.dumps(yaml.safe_load(YAML_CONFIG.replace("5e-3", "0.005")))))
    assert zooframe.load_config("-").name == "from_yaml"
    monkeypatch.setattr("sys.stdin", io.StringIO("{\"name\": "))
    with pytest.raises(ConfigError, match="not valid JSON: .*; not valid YAML: .* at line 1"):
        zooframe.load_config("-")
