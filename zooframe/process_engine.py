"""The ``process`` backend: a pool of local processes, each with a warm simulator."""

from __future__ import annotations

import multiprocessing
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Any

from .engine import RemoteEngine
from .workers import EvaluationWorker

_worker: EvaluationWorker | None = None


def _start(config: dict[str, Any], threads: int) -> None:
    global _worker
    _worker = EvaluationWorker(config, threads)


def _evaluate(task: tuple):
    return _worker.evaluate(*task)


class ProcessEngine(RemoteEngine):
    backend = "process"

    def __init__(self, config: dict[str, Any], workers: int, chunk_size: int, threads_per_worker: int = 1,
                 max_restarts: int = 3):
        super().__init__(chunk_size, workers, max_restarts)
        self._start = (config, threads_per_worker)
        self.pool = self._pool()

    def _pool(self) -> ProcessPoolExecutor:
        # spawn, not fork: a forked copy of a process that already runs torch threads can hang
        return ProcessPoolExecutor(self.workers, mp_context=multiprocessing.get_context("spawn"),
                                   initializer=_start, initargs=self._start)

    def _map(self, tasks):
        return list(self.pool.map(_evaluate, tasks))

    def _lost_worker_errors(self):
        return (BrokenProcessPool,)

    def _restart(self) -> None:
        self.pool.shutdown(cancel_futures=True)
        self.pool = self._pool()

    def close(self) -> None:
        self.pool.shutdown(cancel_futures=True)
