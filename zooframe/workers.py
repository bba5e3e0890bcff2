"""Evaluation workers for the ``process`` and ``ray`` backends: a warm simulator and the model
structure, built once from the run's config; per step, the objective is rebuilt from its window."""

from __future__ import annotations

from typing import Any

import torch

from .estimators.base import QuerySet
from .objective import CorrectionObjective, Window


class EvaluationWorker:
    def __init__(self, config: dict[str, Any], threads: int | None = 1):
        from .config import load_config
        from .experiment import Experiment

        if threads:
            torch.set_num_threads(threads)
        self.exp = Experiment.build(load_config(config))
        self._token: str | None = None
        self._objective: CorrectionObjective | None = None

    def evaluate(self, token: str, window: Window, buffers: dict[str, torch.Tensor],
                 queries: QuerySet) -> tuple[torch.Tensor, float]:
        """Losses of ``queries`` on the objective ``token`` and the simulator seconds it took."""
        before = self.exp.runner.seconds
        with torch.no_grad():
            if token != self._token:  # a new step: its first solver step is computed once here
                self.exp.model.load_state_dict(buffers, strict=False)
                self._objective = CorrectionObjective(self.exp.runner, self.exp.flat, window)
                self._token = token
            values = self._objective(queries.materialize(0, len(queries)))
        return values, self.exp.runner.seconds - before

    def ping(self) -> bool:
        return True
