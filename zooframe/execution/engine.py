"""Query engines: how the rows of a query set are evaluated on an objective.

``local`` evaluates chunks in this process, one batched objective call per chunk. ``process``
and ``ray`` send chunks to workers that each hold a warm simulator (for PhiFlow: the compiled
step stays loaded) and rebuild the step's objective from its window once per step.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator

import torch

from ..plugins.errors import ZooframeError
from ..plugins.estimator import QuerySet
from .fault_policy import STRICT, Evaluated, Guard

Objective = Callable[[torch.Tensor], torch.Tensor]


def chunks(n: int, size: int) -> Iterator[tuple[int, int]]:
    for start in range(0, n, size):
        yield start, min(start + size, n)


class Engine:
    """Evaluates query sets; ``queries`` counts the rows it evaluated, ``remote_seconds`` and
    ``remote_rows`` the simulator time spent and the states stepped in workers (the local runner
    counts its own), ``lost`` the workers that died or hung and ``restarts`` those it replaced."""

    def __init__(self, chunk_size: int):
        self.chunk_size = chunk_size
        self.queries = 0
        self.remote_seconds = 0.0
        self.remote_rows = 0
        self.restarts = 0
        self.lost = 0  # workers lost, the last one too when it ended the run

    def evaluate(self, objective: Objective, queries: QuerySet) -> torch.Tensor:
        """The queries' losses (NaN where the loss is not finite); a simulator's error is raised."""
        evaluated = self.evaluate_all(objective, queries, STRICT)
        if any(f not in (None, "nonfinite") for f in evaluated.faults):
            if evaluated.exception is not None:
                raise evaluated.exception
            raise ZooframeError("a worker's simulator failed: " + "; ".join(evaluated.messages.values()))
        return evaluated.values

    def evaluate_all(self, objective: Objective, queries: QuerySet, guard: Guard) -> Evaluated:
        """Every query's loss or fault, captured by ``guard`` (see :mod:`zooframe.execution.fault_policy`)."""
        raise NotImplementedError

    def close(self) -> None:
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class LocalEngine(Engine):
    """In-process: one batched objective call per chunk of at most ``chunk_size`` queries, so
    that the chunk size bounds memory."""

    def __init__(self, chunk_size: int = 256):
        super().__init__(chunk_size)

    def evaluate_all(self, objective: Objective, queries: QuerySet, guard: Guard) -> Evaluated:
        parts = [guard(objective, queries.materialize(a, b)) for a, b in chunks(len(queries), self.chunk_size)]
        self.queries += len(queries)
        return Evaluated.cat(parts)


def auto_chunk_size(rows_per_query: int, state_numel: int, params: int, bytes_per_value: int, budget_mb: float) -> int:
    """Queries per chunk that fit a memory budget: per query, the states of its rows with room
    for the solver's and the model's temporaries (a factor of 32), and its parameter vector."""
    per_query = bytes_per_value * (32 * rows_per_query * state_numel + params)
    return max(1, int(budget_mb * 2**20 // per_query))


def spread(n: int, workers: int, chunk_size: int) -> list[tuple[int, int]]:
    """Chunks of at most ``chunk_size`` queries, as many as a multiple of the workers (when there
    are enough queries) and of sizes that differ by at most one, so that no worker waits on
    another's extra chunk."""
    count = min(n, math.ceil(math.ceil(n / chunk_size) / workers) * workers)
    bounds = [i * n // count for i in range(count + 1)]
    return list(zip(bounds[:-1], bounds[1:]))


class RemoteEngine(Engine):
    """Spreads each query set over ``workers`` and gathers the values in order.

    It evaluates any objective that can describe itself to a worker: ``objective.portable()``
    returns a picklable :class:`zooframe.core.objective.Recipe`, which the worker builds once per step
    on its own warm simulator and network. Only the recipe (for the correction task: the step's
    window and the model's buffers) and each chunk's query subset (not its materialized
    parameter vectors) travel.

    A worker that dies (its simulator crashed, its node went away) or, with ``timeout_s``, keeps a
    step's queries longer than that (a hung simulator) is replaced, and the step's chunks are sent
    again, up to ``max_restarts`` times in all; then the run stops with an error."""

    backend = "remote"

    def __init__(self, chunk_size: int, workers: int, max_restarts: int = 3, timeout_s: float | None = None):
        super().__init__(chunk_size)
        self.workers = workers
        self.max_restarts = max_restarts
        self.timeout_s = timeout_s

    def evaluate_all(self, objective: Objective, queries: QuerySet, guard: Guard) -> Evaluated:
        if not callable(getattr(objective, "portable", None)):
            raise ZooframeError(f"the {self.backend} backend sends objectives to workers, and "
                                f"{type(objective).__name__} cannot describe itself to one (it has no portable() "
                                "returning a zooframe.core.objective.Recipe); use execution.backend 'local'")
        recipe = objective.portable()
        tasks = [(recipe, queries.subset(a, b), guard)
                 for a, b in spread(len(queries), self.workers, self.chunk_size)]
        results = self._gather(tasks)
        self.queries += len(queries)
        self.remote_seconds += sum(seconds for _, seconds, _ in results)
        self.remote_rows += sum(rows for _, _, rows in results)
        return Evaluated.cat([evaluated for evaluated, _, _ in results])

    def _gather(self, tasks: list[tuple]) -> list[tuple[Evaluated, float, int]]:
        while True:
            try:
                return self._map(tasks)
            except WorkerLost as lost:
                self.lost += 1
                if self.restarts >= self.max_restarts:
                    raise ZooframeError(
                        f"a {self.backend} worker {lost}, after {self.restarts} restart(s) in this run "
                        f"(execution.worker_restarts: {self.max_restarts}). A worker dies when its simulator crashes "
                        "or its node goes away, and hangs when its simulator does; raise execution.worker_restarts "
                        "to ride out more") from lost
                self.restarts += 1
                self._restart()

    def _map(self, tasks: list[tuple]) -> list[tuple[Evaluated, float, int]]:
        """The tasks' results in order; :class:`WorkerLost` when a worker died or, after
        ``timeout_s``, some results are still missing. A simulator's faults come back in the results."""
        raise NotImplementedError

    def _restart(self) -> None:
        """Replace the workers, after one of them was lost."""
        raise NotImplementedError

    def _timed_out(self) -> WorkerLost:
        return WorkerLost(f"kept a step's queries longer than execution.worker_timeout_s ({self.timeout_s:g} s)")


class WorkerLost(Exception):
    """A worker died, or held a step's queries past the timeout; its text completes "a worker ..."."""


WORKER_START_TIMEOUT_S = 600  # for a worker to build its simulator (or for a cluster to find it a CPU)
