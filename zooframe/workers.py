"""Evaluation workers for the ``process`` and ``ray`` backends: a warm simulator and the model
structure, built once from the run's config; per step, the objective is rebuilt from its window."""

from __future__ import annotations

import ctypes
import os
from typing import Any

import torch

from .estimators.base import QuerySet
from .objective import CorrectionObjective, Window


def retain_freed_memory() -> bool:
    """Have glibc's malloc keep freed memory for reuse (returns whether it could).

    By default it hands large freed blocks back to the system and maps fresh pages for the next
    allocation, and a worker that allocates the same large tensors at every step then spends much
    of its time in page faults (Burgers with 16 channels: 129 ms per estimate on one process
    against 85 ms). Process-wide, so only for processes of our own: the workers."""
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (AttributeError, OSError, TypeError):  # no glibc (macOS, Windows): nothing to tune
        return False
    m_trim_threshold, m_mmap_threshold = -1, -3
    return bool(mallopt(m_mmap_threshold, 32 * 2**20) and mallopt(m_trim_threshold, 2**30))


class EvaluationWorker:
    def __init__(self, config: dict[str, Any], threads: int | None = 1):
        from .config import load_config
        from .experiment import Experiment

        retain_freed_memory()
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

    def ping(self) -> int:
        """The worker's process id (it answers: it is up)."""
        return os.getpid()
