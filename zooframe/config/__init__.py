"""What can be configured: the plugin registry, the experiment model built from it, loading and
explaining a config file, and the exported JSON Schemas."""

from .registry import Registry, get_registry, resolve
from .sections import ExperimentBase, experiment_model, load_config

__all__ = ["ExperimentBase", "Registry", "experiment_model", "get_registry", "load_config", "resolve"]
