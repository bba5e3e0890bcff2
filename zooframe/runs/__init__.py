"""A run from config to folder: the experiment assembled from the config and the registry, the
trainer, checkpoints, held-out evaluation, exported weights and figures."""

from .folder import RunResult, evaluate_run, load_run, run

__all__ = ["RunResult", "evaluate_run", "load_run", "run"]
