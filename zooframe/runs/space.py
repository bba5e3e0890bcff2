"""A sweep's search space: config paths and the distributions their values are drawn from.

A space file (JSON, YAML or TOML) maps dotted config paths to one distribution each::

    training.optimizer.lr: {log_uniform: [1.0e-4, 1.0e-1]}
    estimator.mu: {uniform: [0.001, 0.05]}
    training.unroll: {int: [2, 6]}
    model.hidden_channels: {choice: [8, 16, 32]}

Every path and every value a distribution can give (the bounds of a range, each choice) is
checked against the experiment's schema before any trial runs.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..config.files import read_data, source_label
from ..config.registry import Registry
from ..config.sections import load_config
from ..plugins.errors import ConfigError

DISTRIBUTIONS = {
    "uniform": "[low, high]: a float between the two",
    "log_uniform": "[low, high]: a float between the two, uniform in its logarithm (0 < low)",
    "int": "[low, high]: a whole number from low to high, both included",
    "choice": "[a, b, ...]: one of the values (numbers, strings, true/false, null, objects)",
}
SET_BY_THE_SWEEP = ("evaluation.split", "training.validation_cases", "output.dir")


@dataclass(frozen=True)
class Dimension:
    """One config path and the distribution of its values."""

    path: str
    distribution: str  # a key of DISTRIBUTIONS
    values: tuple  # (low, high), or the choices

    def suggest(self, trial) -> Any:
        """Its value for an Optuna trial (choices other than numbers, strings, booleans and null travel
        through Optuna as their JSON text)."""
        if self.distribution == "choice":
            options = [v if _plain(v) else json.dumps(v) for v in self.values]
            picked = trial.suggest_categorical(self.path, options)
            return picked if _plain(self.values[options.index(picked)]) else json.loads(picked)
        low, high = self.values
        if self.distribution == "int":
            return trial.suggest_int(self.path, low, high)
        return trial.suggest_float(self.path, low, high, log=self.distribution == "log_uniform")

    def optuna_value(self, value: Any) -> Any:
        """``value`` as :meth:`suggest` would draw it through Optuna, or None when the distribution
        cannot give it."""
        if self.distribution == "choice":
            return next(((v if _plain(v) else json.dumps(v)) for v in self.values if v == value), None)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not self.values[0] <= value <= self.values[1]:
            return None
        return value if self.distribution != "int" or value == int(value) else None

    def candidates(self) -> tuple:
        """The values checked against the schema: the bounds, or every choice."""
        return self.values

    def describe(self) -> str:
        return f"{self.distribution} {json.dumps(list(self.values))}"


def _plain(value: Any) -> bool:
    return value is None or isinstance(value, (bool, int, float, str))


def read_space(source: str | Path | Mapping[str, Any]) -> list[Dimension]:
    """The dimensions of a space file (or dict); ConfigError naming the file and each bad entry."""
    label = None if isinstance(source, Mapping) else source_label(source)
    data = dict(source) if isinstance(source, Mapping) else read_data(source, what="search space")
    problems, dims = [], []
    for path, spec in data.items():
        try:
            dims.append(_dimension(str(path), spec))
        except ValueError as exc:
            problems.append(f"{path}: {exc}")
    if not data:
        problems.append("empty: name at least one config path and its distribution, e.g. "
                        "training.optimizer.lr: {log_uniform: [1.0e-4, 1.0e-1]}")
    if problems:
        raise ConfigError(problems, label)
    return dims


def _dimension(path: str, spec: Any) -> Dimension:
    known = "; ".join(f"{k} {v}" for k, v in DISTRIBUTIONS.items())
    if path in SET_BY_THE_SWEEP or path.split(".")[0] == "output":
        raise ValueError("set by the sweep itself (the validation split, the trials' folders); not searchable")
    if not isinstance(spec, dict) or len(spec) != 1:
        raise ValueError(f"expected one distribution, e.g. {{log_uniform: [1.0e-4, 1.0e-1]}}; known: {known}")
    (kind, values), = spec.items()
    if kind not in DISTRIBUTIONS:
        raise ValueError(f"unknown distribution {kind!r}; known: {known}")
    if not isinstance(values, list) or not values:
        raise ValueError(f"{kind} takes a list: {DISTRIBUTIONS[kind]}")
    if kind == "choice":
        if len({json.dumps(v, sort_keys=True) for v in values}) != len(values):
            raise ValueError("a choice is listed twice; list each once")
        return Dimension(path, kind, tuple(values))
    if len(values) != 2:
        raise ValueError(f"{kind} takes two bounds: {DISTRIBUTIONS[kind]}")
    low, high = values
    number = int if kind == "int" else (int, float)
    if not all(isinstance(v, number) and not isinstance(v, bool) for v in values):
        raise ValueError(f"{kind} bounds are {'whole numbers' if kind == 'int' else 'numbers'} (got {values})")
    if not low < high:
        raise ValueError(f"the low bound must be below the high one (got {values})")
    if kind == "log_uniform" and low <= 0:
        raise ValueError(f"log_uniform's low bound must be above 0 (got {low})")
    return Dimension(path, kind, (low, high) if kind == "int" else (float(low), float(high)))


def space_problems(dims: list[Dimension], config: dict[str, Any], registry: Registry | None = None) -> list[str]:
    """What the experiment's schema refuses among the values each dimension can give, one at a time
    on top of ``config`` (a path that does not exist is named with the fields that do)."""
    problems = []
    for dim in dims:
        for value in dim.candidates():
            try:
                load_config(config, registry, {dim.path: value})
            except ConfigError as exc:
                shown = json.dumps(value)
                problems += [f"{dim.path} ({dim.describe()}), value {shown}: "
                             f"{p.split(': ', 1)[1] if p.startswith('--set ') else p}" for p in exc.problems]
                break  # one refused value says enough about a dimension
    return problems
