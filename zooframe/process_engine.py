"""The ``process`` backend: a pool of local processes, each with a warm simulator."""

from __future__ import annotations

import multiprocessing
import os
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
                 max_restarts: int = 3, timeout_s: float | None = None):
        super().__init__(chunk_size, workers, max_restarts, timeout_s)
        self._start = (config, threads_per_worker)
        self.pool = self._pool()

    def _pool(self) -> ProcessPoolExecutor:
        # spawn, not fork: a forked copy of a process that already runs torch threads can hang
        pool = ProcessPoolExecutor(self.workers, mp_context=multiprocessing.get_context("spawn"),
                                   initializer=_start, initargs=self._start)
        for started in [pool.submit(os.getpid) for _ in range(self.workers)]:
            started.result()  # workers start here (and fail here), not within the first step's timeout
        return pool

    def _map(self, tasks):
        return list(self.pool.map(_evaluate, tasks, timeout=self.timeout_s))

    def _lost_worker_errors(self):
        return (BrokenProcessPool,)

    def _restart(self) -> None:
        self._stop(grace_s=0)
        self.pool = self._pool()

    def close(self) -> None:
        self._stop(grace_s=5)

    def _stop(self, grace_s: float) -> None:
        """Shut the pool down; a worker still busy after ``grace_s`` (hung: it would never finish) is killed."""
        processes = list((getattr(self.pool, "_processes", None) or {}).values())
        self.pool.shutdown(wait=False, cancel_futures=True)
        for process in processes:
            process.join(timeout=grace_s)
            if process.is_alive():
                process.kill()
