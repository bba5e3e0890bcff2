"""``zooframe new-plugin NAME``: a simulator plugin package that installs, registers through its
entry point, passes the conformance kit in its own test and trains from its example config.

The simulator it writes is the one in docs/writing-a-plugin.md: a 1D advection-diffusion code
whose step stands in for the user's solver, with a high-fidelity mode (a finer grid) so that the
package runs before the user has reference data of their own.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import re
from collections.abc import Mapping
from pathlib import Path
from string import Template

from .atomic import write_text
from .errors import ZooframeError

NAME = re.compile(r"[a-z][a-z0-9_]{0,39}")  # in full: re.match's $ also matches before a final newline

SIMULATOR = '''\
"""$name: a 1D advection-diffusion code as a zooframe simulator; replace step_one with a call to yours."""

import math
from typing import Literal

import numpy as np
from pydantic import Field

import zooframe


class ${cls}Config(zooframe.PluginConfig):
    kind: Literal["$name"]
    cells: int = Field(32, ge=8, description="cells of the coarse grid")
    dt: float = Field(0.02, gt=0, description="time step of one call")
    train_nu: list[float] = Field([0.005, 0.02, 0.08], description="diffusivities of the training cases")
    test_nu: list[float] = Field([0.01, 0.04], description="held-out diffusivities")


def advect_diffuse(u, nu, dx, dt, steps):
    """Periodic upwind advection at speed 1 and central diffusion: `steps` explicit Euler steps."""
    for _ in range(steps):
        left, right = np.roll(u, 1, -1), np.roll(u, -1, -1)
        u = u - dt / dx * (u - left) + nu * dt / dx**2 * (right - 2 * u + left)
    return u


class ${cls}Reference(zooframe.ReferenceSource):
    """Optional: a high-fidelity mode (the code on a 4x finer grid). Without one, delete it and give a file."""

    def cases(self):
        sets = {"train": self.simulator.config.train_nu, "test": self.simulator.config.test_nu}
        return {split: [zooframe.Case(f"{split}-nu{nu:g}", {"nu": nu, "seed": i + 100 * (split == "test")})
                        for i, nu in enumerate(nus)] for split, nus in sets.items()}

    def features(self, cases):
        return np.array([[math.log10(c.params["nu"])] for c in cases])

    def trajectories(self, cases, steps, fine=4):
        cells, dt = self.simulator.config.cells, self.simulator.config.dt
        n, x = cells * fine, (np.arange(cells * fine) + 0.5) * 2 * math.pi / (cells * fine)
        out = []
        for case in cases:
            rng = np.random.default_rng(int(case.params["seed"]))
            frames = [sum(rng.normal() * np.sin(k * x + rng.uniform(0, 7)) / k for k in (1, 2, 3))[None]]
            for _ in range(steps):
                frames.append(advect_diffuse(frames[-1], case.params["nu"], 2 * math.pi / n, dt / fine**2, fine**2))
            out.append(np.stack(frames).reshape(steps + 1, 1, cells, fine).mean(-1))
        return np.stack(out)


class $cls(zooframe.Simulator):
    Config = ${cls}Config
    high_fidelity = ${cls}Reference

    @property
    def state_spec(self):
        return zooframe.StateSpec(channels=("u",), spatial_shape=(self.config.cells,))

    def step_one(self, state, case, seed):
        """One case's state [1, cells] (NumPy) one step on: the black box."""
        return advect_diffuse(state, case.params["nu"], 2 * math.pi / self.config.cells, self.config.dt, 1)
'''

PLUGIN = '''\
"""Registers the $name plugin with zooframe (found through the entry point in pyproject.toml)."""

import zooframe

from .simulator import $cls


@zooframe.hookimpl
def register_simulators(register):
    register($cls)
'''

PYPROJECT = '''\
[build-system]
requires = ["setuptools>=68"]
build-backend = "setuptools.build_meta"

[project]
name = "$package"
version = "0.1.0"
description = "The $name simulator for zooframe"
requires-python = ">=3.10"
dependencies = ["zooframe>=$zooframe_version", "numpy"]

[project.optional-dependencies]
test = ["pytest>=7.4"]

[project.entry-points.zooframe]
$name = "$module.plugin"

[tool.setuptools.packages.find]
include = ["$module*"]
'''

TEST = '''\
"""The plugin conforms, is found through its entry point, and trains from its example configs."""

import importlib.metadata
import json
from pathlib import Path

import zooframe
from zooframe.testing import parametrize_with_checks

from $module import plugin
from $module.simulator import $cls, ${cls}Config

EXAMPLES = Path(__file__).parent.parent / "examples"
ONLY_THIS = zooframe.Registry(load_external=False, plugins={"$package": plugin})  # not every installed plugin


@parametrize_with_checks(lambda: $cls(${cls}Config(kind="$name")))
def test_the_conformance_kit(check):  # one test per rule
    check()


def test_the_entry_point_names_the_plugin():
    found = [e.value for e in importlib.metadata.entry_points(group="zooframe", name="$name")]
    assert found == ["$module.plugin"], f"zooframe entry points named $name: {found}; pip install -e . first"


def test_pretraining_then_the_solver_in_the_loop_lowers_the_error(tmp_path):
    for name, steps in (("${name}_pretrain", 200), ("$name", 20)):
        config = json.loads((EXAMPLES / f"{name}.json").read_text())
        config["training"]["steps"] = steps
        if "init" in config["training"]:
            config["training"]["init"] = str(tmp_path / "${name}_pretrain")
        ev = zooframe.run(config, output=tmp_path / name, progress=False, registry=ONLY_THIS).summary["evaluation"]
        assert ev["corrected"]["mae_mean"] < ev["src"]["mae_mean"]
'''

PRETRAIN = '''\
{
  "name": "${name}_pretrain",
  "simulator": {"kind": "$name", "cells": 32},
  "model": {"kind": "conv", "hidden_channels": 8, "kernel_size": 5, "depth": 1, "padding": "circular",
            "zero_init_output": true},
  "training": {"mode": "non", "steps": 500, "horizon": 40, "optimizer": {"name": "adam", "lr": 0.01},
               "schedule": {"name": "cosine"}},
  "evaluation": {"steps": 40, "split": "test"},
  "output": {"dir": "runs/{name}"}
}
'''

EXAMPLE = '''\
{
  "name": "$name",
  "simulator": {"kind": "$name", "cells": 32},
  "model": {"kind": "conv", "hidden_channels": 8, "kernel_size": 5, "depth": 1, "padding": "circular",
            "zero_init_output": true},
  "estimator": {"kind": "subspace", "scheme": "forward", "mu": 0.01},
  "training": {"mode": "zo", "init": "runs/${name}_pretrain", "steps": 300, "unroll": 4, "horizon": 40,
               "optimizer": {"name": "adam", "lr": 0.001}, "schedule": {"name": "cosine"}},
  "evaluation": {"steps": 40, "split": "test"},
  "output": {"dir": "runs/{name}"}
}
'''

README = '''\
# $package

The `$name` simulator for [zooframe](https://github.com/zooframe/zooframe): a black-box step that
zooframe trains a correction network through with zeroth-order gradient estimates.

```bash
pip install -e ".[test]"       # into an environment that has zooframe
python -m pytest -q            # the conformance kit, the entry point, a short training run
zooframe run examples/${name}_pretrain.json   # supervised pre-training: seconds
zooframe run examples/$name.json              # then the solver in the loop, from those weights
```

If the second run ends worse than the first (or than no correction), `zooframe compare
examples/$name.json` trains the baselines side by side and says whether the solver in the loop
pays off for your code.

Replace `step_one` in `$module/simulator.py` with a call into your code, keep `state_spec` in step
with what it reads and writes, and see zooframe's docs/writing-a-plugin.md for the rest (batched
steps, reference files, GPUs).
'''

FILES = {
    "pyproject.toml": PYPROJECT, "README.md": README, "$module/__init__.py": '"""The $name zooframe plugin."""\n',
    "$module/simulator.py": SIMULATOR, "$module/plugin.py": PLUGIN, "tests/test_$name.py": TEST,
    "examples/${name}_pretrain.json": PRETRAIN, "examples/$name.json": EXAMPLE,
}


def plugin_name(name: str, taken: Mapping[str, str] | None = None) -> str:
    """The config kind (and module suffix) a plugin name becomes: dashes become underscores
    (``my-code`` -> ``my_code``). Refused: anything else that is no Python identifier in lower case,
    a simulator kind in ``taken`` (kind -> the provider that installed it), and a module
    ``zooframe_<name>`` that an installed package already holds."""
    kind = name.replace("-", "_")
    if not NAME.fullmatch(kind):
        raise ZooframeError(f"plugin name {name!r}: use lower-case letters, digits, _ and -, starting with a letter "
                            "(it becomes the config kind and part of the module name), e.g. 'heat1d'")
    if taken and kind in taken:
        raise ZooframeError(f"plugin name {name!r}: the simulator kind {kind!r} is taken by {taken[kind]}, which is "
                            "installed; choose another name (two plugins of one kind cannot be installed together)")
    module = f"zooframe_{kind}"
    if importlib.util.find_spec(module) is not None:
        raise ZooframeError(f"plugin name {name!r}: the module {module} is installed already (by another package); "
                            "choose another name")
    return kind


def new_plugin(name: str, directory: str | Path | None = None,
               taken: Mapping[str, str] | None = None) -> tuple[Path, list[Path]]:
    """Write the package ``zooframe-<name>`` into ``directory`` (default: ``./zooframe-<name>``);
    ``taken`` maps the simulator kinds already installed to their providers. ``name`` is taken as
    :func:`plugin_name` makes it."""
    name = plugin_name(name, taken)
    words = {"name": name, "package": f"zooframe-{name.replace('_', '-')}", "module": f"zooframe_{name}",
             "cls": "".join(w.capitalize() for w in name.split("_")), "zooframe_version": importlib.metadata.version("zooframe")}
    root = Path(directory) if directory is not None else Path(words["package"])
    written = []
    try:
        if root.exists() and not (root.is_dir() and not any(root.iterdir())):
            raise ZooframeError(f"{root} exists and is not an empty folder; choose another folder with --output")
        for rel, text in FILES.items():
            path = root / Template(rel).substitute(words)
            path.parent.mkdir(parents=True, exist_ok=True)
            write_text(path, Template(text).substitute(words))
            written.append(path)
    except OSError as exc:
        raise ZooframeError(f"cannot write {exc.filename or root}: {exc.strerror or exc}; choose another folder "
                            "with --output") from None
    return root, written
