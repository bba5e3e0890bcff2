"""Module paths from before the package was laid out in subpackages, still importable.

``zooframe.testing`` and ``zooframe.faults`` are public names of their own (the conformance kit
and the fault classes); the other old paths work with a DeprecationWarning naming the new one.
Each old path is the very module object of its new home, so classes and ``isinstance`` agree.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys
import warnings

KEPT = {"zooframe.testing": "zooframe.plugins.testing", "zooframe.faults": "zooframe.plugins.faults"}

MOVED = {f"zooframe.{old}": f"zooframe.{new}" for old, new in {
    "errors": "plugins.errors", "plugin_base": "plugins.base", "hookspecs": "plugins.hookspecs",
    "simulator": "plugins.simulator", "reference": "plugins.reference", "reference_file": "plugins.reference_file",
    "trajectory_cache": "plugins.cache", "scaffold": "plugins.scaffold", "estimators": "builtins.estimators",
    "estimators.base": "plugins.estimator", "estimators.cge": "builtins.estimators.cge",
    "estimators.rge": "builtins.estimators.rge", "estimators.guided": "builtins.estimators.guided",
    "estimators.subspace": "builtins.estimators.subspace", "models": "builtins.models",
    "models.base": "plugins.model", "models.conv": "builtins.models.conv", "models.mlp": "builtins.models.mlp",
    "simulators": "builtins.simulators", "simulators.burgers": "builtins.simulators.burgers",
    "builtin_plugins": "builtins", "registry": "config.registry", "schemas": "config.schemas",
    "analytic": "core.analytic", "correction": "core.correction", "flat_params": "core.flat_params",
    "objective": "core.objective", "sparsity": "core.sparsity", "windows": "core.windows",
    "engine": "execution.engine", "fault_policy": "execution.fault_policy", "process_engine": "execution.process_engine",
    "ray_engine": "execution.ray_engine", "threads": "execution.threads", "workers": "execution.workers",
    "checkpoint": "runs.checkpoint", "evaluation": "runs.evaluation", "experiment": "runs.experiment",
    "export": "runs.export", "figures": "runs.figures", "reference_export": "runs.reference_export",
    "training": "runs.trainer",
}.items()}


class _OldPaths(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    def find_spec(self, name, path=None, target=None):
        if name in KEPT or name in MOVED:
            return importlib.util.spec_from_loader(name, self)
        return None

    def create_module(self, spec):
        if spec.name in MOVED:
            warnings.warn(f"{spec.name} is now {MOVED[spec.name]}; the old path will be removed", DeprecationWarning,
                          stacklevel=2)
        return importlib.import_module(KEPT.get(spec.name) or MOVED[spec.name])

    def exec_module(self, module):
        pass  # the module is its new home, already executed


def install() -> None:
    if not any(isinstance(finder, _OldPaths) for finder in sys.meta_path):
        sys.meta_path.insert(0, _OldPaths())  # before the path finder, which would load a second copy
