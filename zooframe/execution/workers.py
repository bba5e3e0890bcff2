"""Evaluation workers for the ``process`` and ``ray`` backends: a warm simulator and the model
structure, built once from a :class:`WorkerSpec` (plugin classes and
configs, no registry); per step, the objective is rebuilt from the recipe it sent."""

from __future__ import annotations

import ctypes
import os
from dataclasses import dataclass

import torch

from ..core.correction import correction_for
from ..core.flat_params import FlatParams
from ..core.objective import Recipe, SimulatorRunner
from ..plugins.base import PluginSpec
from ..plugins.estimator import QuerySet
from .fault_policy import STRICT, Evaluated, Guard


@dataclass(frozen=True)
class WorkerSpec:
    """What an evaluation worker builds its warm simulator and the network's structure from."""

    simulator: PluginSpec
    model: PluginSpec
    features: int
    device: str
    dtype: str

    def build(self) -> tuple[SimulatorRunner, FlatParams]:
        simulator = self.simulator.build(device=self.device)
        model = correction_for(self.model, simulator.state_spec, self.features)
        return SimulatorRunner(simulator), FlatParams(model.to(self.device, getattr(torch, self.dtype)))


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
    def __init__(self, spec: WorkerSpec, threads: int | None = 1):
        retain_freed_memory()
        if threads:
            torch.set_num_threads(threads)
        self.runner, self.flat = spec.build()
        self._token: str | None = None
        self._objective = None

    def evaluate(self, recipe: Recipe, queries: QuerySet, guard: Guard = STRICT) -> tuple[Evaluated, float, int]:
        """Losses or faults of ``queries`` on the objective ``recipe`` describes, and the simulator
        seconds and rows (states stepped) they took. A fault of the simulator is captured, not
        raised: this worker stays."""
        before, rows_before = self.runner.seconds, self.runner.rows

        def objective(thetas: torch.Tensor) -> torch.Tensor:
            if recipe.token != self._token:  # a new step: e.g. its first solver step is computed once here
                self._objective, self._token = None, None
                self._objective = recipe.build(self.runner, self.flat)  # a fault here is the queries' fault
                self._token = recipe.token
            return self._objective(thetas)

        with torch.no_grad():
            evaluated = guard(objective, queries.materialize(0, len(queries)))
        return evaluated.portable(), self.runner.seconds - before, self.runner.rows - rows_before

    def close(self) -> None:
        """Let the simulator release what it holds: the worker is stopping."""
        self.runner.simulator.close()

    def ping(self) -> int:
        """The worker's process id (it answers: it is up)."""
        return os.getpid()
