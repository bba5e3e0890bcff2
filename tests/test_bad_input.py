"""Bad input never ends in a traceback: fuzzed configs through the API and `zooframe validate`,
fuzzed reference files, and the errors `validate` can know before any work."""

import contextlib
import copy
import io
import json

import numpy as np
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import zooframe
from zooframe.cli import main
from zooframe.config.registry import resolve
from zooframe.config.sections import MAX_PROBLEMS, load_config
from zooframe.core.correction import build_correction
from zooframe.plugins.errors import ConfigError, ZooframeError
from zooframe.plugins.reference_file import ReferenceFileError, load_reference_file
from zooframe.plugins.simulator import StateSpec
from zooframe.runs.experiment import preflight

from .helpers import SMALL, small

junk = st.recursive(
    st.none() | st.booleans() | st.integers(-10**30, 10**30) | st.floats() | st.text(max_size=12)
    | st.sampled_from(["", "auto", "cge", "burgers", "conv", "file", "ray", "nog", "-1", "1e999", "\u2603\u0000",
                       "runs/{x}", "runs/{", "{0}", "a\u0000b", "/dev/null/run", 2**63, 10**8, 1e8, 100_000]),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12)


def paths(node, prefix=()):
    yield prefix
    if isinstance(node, dict):
        for key, value in node.items():
            yield from paths(value, (*prefix, key))


@st.composite
def mutated_configs(draw):
    """A valid config with one to three mutations (a value replaced, a key dropped, a key added,
    deep nesting, many keys added), or a document that is not a config at all."""
    if draw(st.integers(0, 9)) == 0:
        return draw(st.lists(junk, max_size=3) | junk)
    config = copy.deepcopy(SMALL)
    config["output"] = {"progress": False, "dir": "runs/fuzz"}
    for _ in range(draw(st.integers(1, 3))):
        where = draw(st.sampled_from(list(paths(config))))
        if not where:
            continue
        parent = config
        for key in where[:-1]:
            parent = parent[key]
        if not isinstance(parent, dict) or where[-1] not in parent:
            continue
        action = draw(st.sampled_from(["replace", "drop", "add", "nest", "crowd"]))
        if action == "replace":
            parent[where[-1]] = draw(junk)
        elif action == "drop":
            del parent[where[-1]]
        elif action == "add":
            parent[draw(st.text(min_size=1, max_size=10))] = draw(junk)
        elif action == "crowd":  # many unknown keys at once
            parent.update({f"k{i}": i for i in range(draw(st.integers(10, 500)))})
        else:
            deep = draw(junk)
            for _ in range(draw(st.integers(10, 300))):
                deep = [deep] if draw(st.booleans()) else {"a": deep}
            parent[where[-1]] = deep
    return config


FUZZ = settings(max_examples=1000, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
# the fast tier fuzzes 100 derandomized examples; the 1000 run in the whole suite (marked slow)
FUZZ_FAST = settings(FUZZ, max_examples=100)


@pytest.mark.slow
@FUZZ
@given(mutated_configs())
def test_fuzzed_configs_through_the_api_give_errors_with_paths(config):
    api_gives_errors_with_paths(config)


@FUZZ_FAST
@given(mutated_configs())
def test_a_few_fuzzed_configs_through_the_api_give_errors_with_paths(config):
    api_gives_errors_with_paths(config)


def api_gives_errors_with_paths(config):
    try:
        valid = load_config(config)
    except ConfigError as exc:
        event("invalid")
        assert exc.problems and all(isinstance(p, str) and p for p in exc.problems)
        assert len(exc.problems) <= MAX_PROBLEMS + 1  # and a line that counts the rest
        if isinstance(config, dict):
            assert all(":" in p for p in exc.problems if not p.startswith("... and"))  # path: message
        return
    event("valid, ready to run" if not preflight(valid) else "valid, refused before any work")


@pytest.mark.slow
@FUZZ
@given(mutated_configs(), st.sampled_from(["json", "empty", "truncated", "bytes", "deep"]))
def test_fuzzed_config_files_through_validate_never_give_a_traceback(tmp_path_factory, config, form):
    validate_gives_no_traceback(tmp_path_factory, config, form)


@FUZZ_FAST
@given(mutated_configs(), st.sampled_from(["json", "empty", "truncated", "bytes", "deep"]))
def test_a_few_fuzzed_config_files_through_validate_never_give_a_traceback(tmp_path_factory, config, form):
    validate_gives_no_traceback(tmp_path_factory, config, form)


def validate_gives_no_traceback(tmp_path_factory, config, form):
    path = tmp_path_factory.mktemp("fuzz") / "config.json"
    text = json.dumps(config)
    if form == "empty":
        path.write_text("")
    elif form == "truncated":
        path.write_text(text[: len(text) // 2])
    elif form == "bytes":
        path.write_bytes(b"\xff\xfe" + text.encode("utf-16-le"))
    elif form == "deep":  # the config inside more brackets than the JSON parser can follow
        path.write_text("[" * 5000 + text + "]" * 5000)
    else:
        path.write_text(text)
    err, out = io.StringIO(), io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(out):
        code = main(["validate", str(path)])
    err = err.getvalue()
    event(f"exit code {code}")
    assert code in (0, 2) and "Traceback" not in err
    assert (code == 0) == (err == "")


GOOD_FILE = {"trajectories": np.zeros((3, 4, 1, 16)), "case_names": np.array(["a", "b", "c"]),
             "splits": np.array(["train", "train", "test"]), "parameter_names": np.array(["nu"]),
             "parameters": np.array([[0.1], [0.2], [0.3]]), "features": np.ones((3, 2)), "channels": np.array(["u"]),
             "format_version": np.asarray(1)}
field_values = hnp.arrays(st.sampled_from(["f8", "f4", "i8", "u1", "?", "c8", "U3", "S2", "M8[s]"]),
                          hnp.array_shapes(min_dims=0, max_dims=4, min_side=0, max_side=4))


@st.composite
def mutated_reference_files(draw):
    """A reference file in the layout with one to three fields replaced by an array of any
    dtype and shape (NaN and Inf among the floats), dropped, or added."""
    arrays = {k: v.copy() for k, v in GOOD_FILE.items()}
    for _ in range(draw(st.integers(1, 3))):
        key = draw(st.sampled_from([*GOOD_FILE, "extra"]))
        if draw(st.integers(0, 4)) == 0:
            arrays.pop(key, None)
        else:
            arrays[key] = draw(field_values)
    return arrays


@FUZZ_FAST  # 100 examples in every tier: each is cheap, but 1000 would add 10 s
@given(mutated_reference_files())
def test_a_few_fuzzed_reference_files_give_problems_with_fields(tmp_path_factory, arrays):
    path = tmp_path_factory.mktemp("ref") / "ref.npz"
    np.savez(path, **arrays)
    try:
        load_reference_file(path, StateSpec(("u",), (16,)))
    except ReferenceFileError as exc:
        event("refused")
        assert exc.problems and all(p.split(":")[0] in (*GOOD_FILE, "extra") for p in exc.problems), exc.problems
    else:
        event("loaded")


def test_a_config_nested_deeper_than_the_parser_follows_is_named(tmp_path, capsys):
    path = tmp_path / "deep.json"
    path.write_text('{"training": ' + "[" * 100_000 + "]" * 100_000 + "}")
    assert main(["validate", str(path)]) == 2
    err = capsys.readouterr().err
    assert err == f"{path}: not a config: JSON nested deeper than Python's parser can follow\n"


def test_thousands_of_problems_are_counted_not_listed(tmp_path):
    config = small()
    config["training"].update({f"typo{i}": 1 for i in range(1000)})
    with pytest.raises(ConfigError) as err:
        load_config(config)
    problems = err.value.problems
    assert len(problems) == MAX_PROBLEMS + 1 and problems[-1] == f"... and {1000 - MAX_PROBLEMS} more problems (not shown)"
    assert all(p.startswith("training.typo") for p in problems[:-1])


def test_a_network_too_large_to_build_is_refused_before_it_is_allocated():
    wide = resolve("model", {"kind": "conv", "hidden_channels": 1024, "depth": 10, "kernel_size": 11})
    with pytest.raises(ZooframeError, match=r"model: the conv network for this task would have 115,\d{3},\d{3} "
                                            r"parameters, more than the 100,000,000"):
        build_correction(wide, channels=1, features=0, spatial_shape=(16,))


def test_validate_catches_an_unknown_split_and_an_unwritable_folder(tmp_path, capsys):
    config = small()
    config["evaluation"]["split"] = "val"
    (tmp_path / "a_file").write_text("")
    config["output"]["dir"] = str(tmp_path / "a_file" / "run")
    path = tmp_path / "config.json"
    path.write_text(json.dumps(config))
    assert main(["validate", str(path)]) == 2
    err = capsys.readouterr().err
    assert "evaluation.split: the high-fidelity mode of simulator Burgers offers no 'val' cases (it has: train, test)" in err
    assert f"output.dir: {tmp_path / 'a_file' / 'run'} cannot be created: {tmp_path / 'a_file'} is a file" in err
    assert main(["run", str(path)]) == 2  # refused before any work: no run folder
    assert not (tmp_path / "runs").exists() and "Traceback" not in capsys.readouterr().err


def test_evaluate_on_an_unknown_split_is_a_clear_error(tmp_path, capsys):
    zooframe.run(small(steps=1), output=tmp_path)
    assert main(["evaluate", str(tmp_path), "--split", "val"]) == 2
    err = capsys.readouterr().err
    assert "no case set 'val'" in err and "test, train" in err and "Traceback" not in err


@pytest.mark.parametrize("argv", [["evaluate", "run", "--steps", "-1"], ["evaluate", "run", "--steps", "0"],
                                  ["reference", "export", "config.json", "ref.npz", "--steps", "-3"]])
def test_a_step_count_below_one_is_refused_by_the_cli(capsys, argv):
    with pytest.raises(SystemExit) as stop:
        main(argv)
    assert stop.value.code == 2
    assert f"argument --steps: must be at least 1 (got {argv[-1]})" in capsys.readouterr().err


def test_a_config_that_is_not_an_object_is_named_as_such():
    with pytest.raises(ConfigError, match="a JSON object"):
        load_config([1, 2])


@pytest.mark.parametrize("folder, message", [
    ("runs/{x}", "the only placeholder is {name}"), ("runs/{", "the only placeholder is {name}"),
    ("runs/a\u0000b", "NUL"), ("/dev/null/run", "cannot be created: /dev/null is a file")])
def test_a_run_folder_that_cannot_be_is_named(tmp_path, capsys, folder, message):
    config = small()
    config["output"]["dir"] = folder
    path = tmp_path / "config.json"
    path.write_text(json.dumps(config))
    assert main(["validate", str(path)]) == 2
    err = capsys.readouterr().err
    assert "output.dir" in err and message in err and "Traceback" not in err


def test_a_folder_that_is_not_a_run_folder_is_left_alone(tmp_path):
    (tmp_path / "model.pt").write_text("someone else's")
    with pytest.raises(zooframe.ZooframeError, match="holds model.pt but no config.json: not a zooframe run folder"):
        zooframe.run(small(steps=1), output=tmp_path)
    assert (tmp_path / "model.pt").read_text() == "someone else's"


def test_training_init_that_is_missing_or_does_not_fit_is_named(tmp_path, capsys):
    config = small(init=str(tmp_path / "never_ran"))
    path = tmp_path / "config.json"
    path.write_text(json.dumps(config))
    assert main(["validate", str(path)]) == 2
    err = capsys.readouterr().err
    assert f"training.init: {tmp_path / 'never_ran'} is neither a finished run's folder" in err and "Traceback" not in err
    other = small(steps=1)
    other["model"]["hidden_channels"] = 6
    zooframe.run(other, output=tmp_path / "wider", progress=False)
    with pytest.raises(ConfigError, match=r"training.init: the weights in .*wider/model.pt do not fit this config's "
                                          r"network .*the model sections differ in model.hidden_channels"):
        zooframe.run(small(init=str(tmp_path / "wider")), output=tmp_path / "run", progress=False)
    assert not (tmp_path / "run").exists()  # refused before the folder


def test_more_cases_per_step_than_training_cases_is_named(tmp_path):
    train = len(small()["simulator"]["train_viscosities"])
    with pytest.raises(ConfigError, match=rf"training.cases_per_step is {train + 1}, but .* offers {train} training "
                                          rf"cases; set it to at most {train}"):
        zooframe.run(small(cases_per_step=train + 1), output=tmp_path / "run", progress=False)
    assert not (tmp_path / "run").exists()
