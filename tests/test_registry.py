"""Plugin discovery: built-ins, throwaway third-party plugins, duplicates, broken packages."""

import importlib.metadata
import types
from typing import Literal

import pytest

import zooframe
from zooframe.builtins.estimators.cge import CGE
from zooframe.cli import main
from zooframe.config import registry as registry_module
from zooframe.config.registry import DISABLE_ENV, Registry
from zooframe.plugins.errors import DuplicateKindError


class MyConfig(zooframe.PluginConfig):
    kind: Literal["my_estimator"]


class MyEstimator(zooframe.Estimator):
    Config = MyConfig

    def ask(self, theta, generator, given):
        return theta[None]

    def tell(self, losses):
        return losses


class FakeCGEConfig(zooframe.PluginConfig):
    kind: Literal["cge"]


class FakeCGE(MyEstimator):
    Config = FakeCGEConfig


def plugin_module(name, *estimators):
    mod = types.ModuleType(name)

    @zooframe.hookimpl
    def register_estimators(register):
        for cls in estimators:
            register(cls)

    mod.register_estimators = register_estimators
    return mod


class FakeDist:
    def __init__(self, name):
        self.name = name


class FakeEntryPoint:
    def __init__(self, name, load):
        self.name, self.dist, self._load = name, FakeDist(f"{name}-dist"), load

    def load(self):
        return self._load()


def fake_entry_points(monkeypatch, *eps):
    def entry_points(group=None, **kw):
        return list(eps) if group == "zooframe" else []

    monkeypatch.setattr(importlib.metadata, "entry_points", entry_points)


def test_builtins_are_registered_through_the_hooks():
    reg = Registry(load_external=False)
    assert {(p.category, p.kind) for p in reg.plugins()} >= {
        ("estimator", "cge"), ("estimator", "rge"), ("model", "conv"), ("model", "mlp"), ("simulator", "burgers")}
    assert all(p.provider == "zooframe" for p in reg.plugins())


def test_a_third_party_plugin_joins_the_config_and_the_schema():
    reg = Registry(load_external=False, plugins={"my-package": plugin_module("mine", MyEstimator)})
    assert reg.get("estimator", "my_estimator").provider == "my-package"
    config = zooframe.load_config({"simulator": {"kind": "burgers"}, "model": {"kind": "mlp"},
                                   "estimator": {"kind": "my_estimator"}}, reg)
    assert isinstance(config.estimator, MyConfig)


def test_a_plugin_missing_a_required_method_is_refused_at_registration(monkeypatch):
    class HalfEstimator(zooframe.Estimator):
        Config = MyConfig

        def ask(self, theta, generator, given):
            return theta[None]

    fake_entry_points(monkeypatch, FakeEntryPoint("half", lambda: plugin_module("half", HalfEstimator)))
    with pytest.warns(UserWarning, match="HalfEstimator.*does not implement tell"):
        reg = Registry(load_external=True)
    assert "my_estimator" not in reg.kinds("estimator")
    assert reg.failures[0].provider == "half-dist" and "tell" in reg.failures[0].error


def test_duplicate_kind_names_both_providers():
    with pytest.raises(DuplicateKindError) as err:
        Registry(load_external=False, plugins={"other-package": plugin_module("dup", FakeCGE)})
    assert "'cge'" in str(err.value) and "zooframe" in str(err.value) and "other-package" in str(err.value)


def test_an_installed_plugin_with_a_kind_already_taken_is_reported_and_the_others_load(monkeypatch, capsys):
    fake_entry_points(monkeypatch, FakeEntryPoint("dup", lambda: plugin_module("dup", FakeCGE)),
                      FakeEntryPoint("good", lambda: plugin_module("good", MyEstimator)))
    with pytest.warns(UserWarning, match="'dup-dist' failed to load: DuplicateKindError: estimator kind 'cge' is "
                                         "registered twice: by 'zooframe' .CGE. and by 'dup-dist' .FakeCGE."):
        reg = Registry(load_external=True)
    assert [f.provider for f in reg.failures] == ["dup-dist"]
    assert reg.get("estimator", "cge").cls is CGE and reg.get("estimator", "my_estimator").provider == "good-dist"
    monkeypatch.setattr(registry_module, "_default", None)  # every command builds the registry: `plugins` lists it
    monkeypatch.delenv(DISABLE_ENV, raising=False)
    with pytest.warns(UserWarning, match="dup-dist"):
        assert main(["plugins"]) == 0
    assert "failed     dup-dist: DuplicateKindError" in capsys.readouterr().out


def test_a_plugin_that_fails_to_import_is_reported_and_the_others_load(monkeypatch):
    def broken():
        raise ImportError("No module named 'fortran_bindings'")

    fake_entry_points(monkeypatch, FakeEntryPoint("broken", broken),
                      FakeEntryPoint("good", lambda: plugin_module("good", MyEstimator)))
    with pytest.warns(UserWarning, match="broken-dist"):
        reg = Registry(load_external=True)
    assert [(f.provider, "fortran_bindings" in f.error) for f in reg.failures] == [("broken-dist", True)]
    assert reg.get("estimator", "my_estimator").provider == "good-dist"
    assert reg.get("estimator", "cge").cls is CGE


def test_a_plugin_registering_a_non_plugin_is_reported(monkeypatch):
    fake_entry_points(monkeypatch, FakeEntryPoint("odd", lambda: plugin_module("odd", dict)))
    with pytest.warns(UserWarning, match="not a subclass of zooframe.Estimator"):
        reg = Registry(load_external=True)
    assert reg.failures[0].provider == "odd-dist"


def test_environment_variable_disables_external_plugins(monkeypatch):
    fake_entry_points(monkeypatch, FakeEntryPoint("good", lambda: plugin_module("good", MyEstimator)))
    monkeypatch.setenv(DISABLE_ENV, "1")
    assert "my_estimator" not in Registry().kinds("estimator")
    monkeypatch.setenv(DISABLE_ENV, "0")
    assert "my_estimator" in Registry().kinds("estimator")


def test_unknown_kind_lists_the_known_ones():
    with pytest.raises(zooframe.PluginError, match="known: cge, guided, rge"):
        Registry(load_external=False).get("estimator", "spsa")


def test_cli_lists_plugins_as_json(capsys):
    from zooframe.cli import main

    assert main(["plugins", "--json"]) == 0
    import json

    plugins = json.loads(capsys.readouterr().out)["plugins"]
    assert {(p["provider"], p["version"]) for p in plugins} == {("zooframe", zooframe.__version__)}
    listed = {(p["category"], p["kind"]) for p in plugins}
    assert {("estimator", "cge"), ("estimator", "rge"), ("model", "conv"), ("model", "mlp"),
            ("simulator", "burgers")} <= listed


def test_the_core_imports_no_plugin_and_no_simulator_package():
    import ast
    from pathlib import Path

    core = Path(zooframe.__file__).parent
    for path in core.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else (
                [node.module or ""] if isinstance(node, ast.ImportFrom) and not node.level else [])
            for name in names:
                top = name.split(".")[0]
                assert not top.startswith("zooframe_") and top not in {"phi", "phiflow", "fipy", "devito"}, \
                    f"{path.relative_to(core)} imports {name}"
