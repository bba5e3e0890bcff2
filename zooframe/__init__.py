"""zooframe: train neural networks coupled to simulators that give no gradients.

The layout, bottom to top (each layer imports only the ones below it):

- :mod:`zooframe.plugins`: what plugin authors write against (base classes, hooks, simulator,
  reference source, estimator and model protocols, faults, cache, conformance kit)
- :mod:`zooframe.builtins`: the built-in estimators, models, simulator and reference sources
- :mod:`zooframe.core`: objectives and couplings, the correction network, flat parameters,
  windows, sparsity
- :mod:`zooframe.config`: the plugin registry and the experiment config built from it
- :mod:`zooframe.execution`: engines, workers, the fault guard, threads
- :mod:`zooframe.runs`: experiment assembly, trainer, run folder, checkpoints, evaluation, export
- :mod:`zooframe.cli`: the ``zooframe`` command
"""

import importlib.metadata

from . import _compat
from .config import ExperimentBase as ExperimentConfig
from .config import Registry, experiment_model, get_registry, load_config
from .plugins import (
                      Case,
                      ConfigError,
                      CoordinateQueries,
                      DirectionQueries,
                      Estimator,
                      ModelConfig,
                      ModelFactory,
                      ModelSpec,
                      PluginConfig,
                      PluginError,
                      QuerySet,
                      ReferenceSource,
                      Simulator,
                      StateSpec,
                      StepInputs,
                      ZooframeError,
                      hookimpl,
                      write_reference_file,
)
from .runs import RunResult, evaluate_run, load_run, run
from .runs.compare import Comparison, compare
from .runs.evaluation import evaluate
from .runs.experiment import Experiment

try:
    __version__ = importlib.metadata.version("zooframe")
except importlib.metadata.PackageNotFoundError:  # a source tree on sys.path, not installed
    __version__ = "0+unknown"

_compat.install()

__all__ = [
    "Case", "ConfigError", "CoordinateQueries", "DirectionQueries", "Estimator", "Experiment", "ExperimentConfig",
    "ModelConfig", "ModelFactory", "ModelSpec", "PluginConfig", "PluginError", "QuerySet", "ReferenceSource", "Registry",
    "Comparison", "RunResult", "Simulator", "StateSpec", "StepInputs", "ZooframeError", "compare", "evaluate", "evaluate_run",
    "experiment_model", "get_registry", "hookimpl", "load_config", "load_run", "run", "write_reference_file",
]
