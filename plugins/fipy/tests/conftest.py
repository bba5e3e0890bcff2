"""A small spinodal task (16 x 16, a 2x reference) that the tests build in seconds."""

import json
import os
from pathlib import Path

import pytest

os.environ["ZOOFRAME_DISABLE_EXTERNAL_PLUGINS"] = "1"  # each test names the registry it uses

EXAMPLES = Path(__file__).resolve().parents[3] / "examples"
EXAMPLE, PRETRAIN = EXAMPLES / "fipy_spinodal.json", EXAMPLES / "fipy_pretrain.json"

SMALL = {"kind": "spinodal", "resolution": 16, "length": 16.0, "dt": 2.0, "reference_factor": 2,
         "reference_substeps": 2,
         "train_cases": [{"mobility": 1.0, "kappa": 1.0, "mean": 0.0}, {"mobility": 2.0, "kappa": 1.5, "mean": 0.1}],
         "test_cases": [{"mobility": 1.5, "kappa": 1.2, "mean": 0.05}]}


@pytest.fixture
def small(tmp_path) -> dict:
    return {**SMALL, "cache_dir": str(tmp_path / "cache")}


def on_small_task(path: Path, small: dict, steps: int) -> dict:
    config = json.loads(path.read_text())
    config.pop("$schema")
    config["simulator"] = small
    config["training"].update(steps=steps, horizon=8)
    config["training"].pop("cases_per_step", None)  # the small task has fewer training cases than the example
    config["evaluation"]["steps"] = 8
    return config


@pytest.fixture
def example_config(small, tmp_path) -> dict:
    """The ZO example config on the small task, with a short training and rollout, starting (its
    training.init) from a short run of the supervised pre-training example, as the examples chain."""
    import zooframe

    pretrain = on_small_task(PRETRAIN, small, 20)
    config = on_small_task(EXAMPLE, small, 6)
    assert config["training"]["init"] == pretrain["output"]["dir"].format(name=pretrain["name"])
    zooframe.run(pretrain, output=tmp_path / "pretrain", progress=False, registry=zooframe.Registry(load_external=True))
    config["training"]["init"] = str(tmp_path / "pretrain")
    return config
