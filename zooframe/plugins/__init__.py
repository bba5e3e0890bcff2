"""What a plugin author writes against: the plugin base classes and their configs, the hooks that
register them, the simulator and reference-source interfaces, the estimator (ask/tell) and model
protocols, the fault classes a simulator raises, the trajectory cache, and the conformance kit
(:mod:`zooframe.plugins.testing`, also importable as ``zooframe.testing``).

Nothing here imports the rest of zooframe: a plugin depends on this package alone.
"""

from .base import Plugin, PluginConfig, PluginSpec
from .cache import TrajectoryCache
from .errors import ConfigError, PluginError, ZooframeError
from .estimator import CoordinateQueries, DirectionQueries, Estimator, QuerySet, StepInputs
from .faults import (
                     SimulatorCrashed,
                     SimulatorFault,
                     SimulatorNonFinite,
                     SimulatorOutputError,
                     SimulatorShapeError,
                     SimulatorTimeout,
)
from .hookspecs import hookimpl
from .model import ModelConfig, ModelFactory, ModelSpec, Residual
from .reference import ReferenceSource, SimulatorReference
from .reference_file import FileReference, write_reference_file
from .simulator import Case, Simulator, StateSpec

__all__ = [
    "Case", "ConfigError", "CoordinateQueries", "DirectionQueries", "Estimator", "FileReference", "ModelConfig",
    "ModelFactory", "ModelSpec", "Plugin", "PluginConfig", "PluginError", "PluginSpec", "QuerySet", "ReferenceSource",
    "Residual", "Simulator", "SimulatorCrashed", "SimulatorFault", "SimulatorNonFinite", "SimulatorOutputError",
    "SimulatorReference", "SimulatorShapeError", "SimulatorTimeout", "StateSpec", "StepInputs", "TrajectoryCache",
    "ZooframeError", "hookimpl", "write_reference_file",
]
