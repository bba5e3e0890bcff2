"""The ``process`` backend: a pool of local processes, each with a warm simulator."""

from __future__ import annotations

import multiprocessing
from concurrent.futures import ProcessPoolExecutor
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
    def __init__(self, config: dict[str, Any], workers: int, chunk_size: int, threads_per_worker: int = 1):
        super().__init__(chunk_size, workers)
        # spawn, not fork: a forked copy of a process that already runs torch threads can hang
        self.pool = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"),
                                        initializer=_start, initargs=(config, threads_per_worker))

    def _map(self, tasks):
        return list(self.pool.map(_evaluate, tasks))

    def close(self) -> None:
        self.pool.shutdown(cancel_futures=True)
