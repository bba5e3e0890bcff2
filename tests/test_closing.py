"""Every path that builds a simulator closes it: run, evaluate, export, check, reference export,
a refused config, and an experiment used as a context manager."""

from __future__ import annotations

from typing import Literal

import pytest

import zooframe
from zooframe.builtins.simulators.burgers import Burgers, BurgersConfig
from zooframe.cli import main
from zooframe.runs.experiment import Experiment
from zooframe.runs.reference_export import export_reference

from .helpers import small


class CountingConfig(BurgersConfig):
    kind: Literal["counting_burgers"]


class CountingBurgers(Burgers):
    """Burgers that remembers which of its instances were built and which closed."""

    Config = CountingConfig
    built: list[int] = []
    closed: set[int] = set()

    def __init__(self, config, device="cpu"):
        super().__init__(config, device)
        CountingBurgers.built.append(id(self))

    def close(self) -> None:
        CountingBurgers.closed.add(id(self))


class _Plugin:
    @zooframe.hookimpl
    def register_simulators(self, register):
        register(CountingBurgers)


@pytest.fixture
def registry(monkeypatch):
    reg = zooframe.Registry(load_external=False, plugins={"test-counting": _Plugin()})
    monkeypatch.setattr("zooframe.config.registry._default", reg)  # what the CLI's commands look up
    CountingBurgers.built.clear()
    CountingBurgers.closed.clear()
    return reg


def config(**training):
    c = small(steps=2, **training)
    c["simulator"] = {**c["simulator"], "kind": "counting_burgers"}
    return c


def all_closed() -> bool:
    return bool(CountingBurgers.built) and set(CountingBurgers.built) <= CountingBurgers.closed


def test_a_run_and_what_reads_its_folder_close_their_simulators(registry, tmp_path):
    zooframe.run(config(), output=tmp_path / "run", registry=registry)
    assert all_closed()
    for path in (lambda: zooframe.evaluate_run(tmp_path / "run", registry=registry),
                 lambda: main(["export", str(tmp_path / "run")]),
                 lambda: main(["check", str(tmp_path / "run" / "config.json")]),
                 lambda: export_reference(config(), tmp_path / "ref.npz", registry=registry)):
        CountingBurgers.built.clear()
        path()
        assert all_closed()


def test_an_experiment_closes_its_simulator_when_it_is_left_or_refused(registry, tmp_path):
    with Experiment.build(zooframe.load_config(config(), registry), registry) as exp:
        assert not CountingBurgers.closed
        exp.simulator.step(exp.reference(exp.cases("train"), 1)[:, 0], exp.cases("train"), 0)
    assert all_closed()
    CountingBurgers.built.clear()
    with pytest.raises(zooframe.ZooframeError, match="evaluation.split"):
        Experiment.build(zooframe.load_config({**config(), "evaluation": {"split": "val"}}, registry), registry)
    assert all_closed()
