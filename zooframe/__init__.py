"""zooframe: train neural networks coupled to simulators that give no gradients."""

from .config import ExperimentBase as ExperimentConfig
from .config import experiment_model, load_config
from .errors import ConfigError, PluginError, ZooframeError
from .estimators.base import CoordinateQueries, DirectionQueries, Estimator, QuerySet, StepInputs
from .evaluation import evaluate
from .experiment import Experiment
from .hookspecs import hookimpl
from .models.base import ModelConfig, ModelFactory, ModelSpec
from .plugin_base import PluginConfig
from .reference import ReferenceSource
from .reference_file import write_reference_file
from .registry import Registry, get_registry
from .runs import RunResult, evaluate_run, load_run, run
from .simulator import Case, Simulator, StateSpec

__version__ = "0.1.0"

__all__ = [
    "Case", "ConfigError", "CoordinateQueries", "DirectionQueries", "Estimator", "Experiment", "ExperimentConfig",
    "ModelConfig", "ModelFactory", "ModelSpec", "PluginConfig", "PluginError", "QuerySet", "ReferenceSource", "Registry", "RunResult",
    "Simulator", "StateSpec", "StepInputs", "ZooframeError", "evaluate", "evaluate_run", "experiment_model", "get_registry",
    "hookimpl", "load_config", "load_run", "run", "write_reference_file",
]
