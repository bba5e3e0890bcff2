"""The ``process`` backend: a pool of local processes, each with a warm simulator."""

from __future__ import annotations

import multiprocessing
import multiprocessing.util
import os
import pickle
import select
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool

from ..plugins.errors import ZooframeError
from .engine import WORKER_START_TIMEOUT_S, RemoteEngine, WorkerLost
from .waiting import wait_for
from .workers import EvaluationWorker, WorkerSpec

_worker: EvaluationWorker | None = None
_started = None  # a barrier that all of a new pool's workers reach once they are up


def _start(spec: WorkerSpec, threads: int, started, driver: int) -> None:
    global _worker, _started
    threading.Thread(target=_end_with, args=(driver,), name="zooframe-driver-watch", daemon=True).start()
    _worker, _started = EvaluationWorker(spec, threads), started
    # a pool's worker leaves through os._exit, which skips atexit; multiprocessing's finalizers do run
    multiprocessing.util.Finalize(_worker, _worker.close, exitpriority=10)


def _end_with(driver: int) -> None:
    """End this worker as soon as the driver process has ended, however it ended. A pool's idle
    worker waits on a queue that it holds both ends of, so it would never learn of a driver killed
    with SIGKILL, and stay. A pidfd (Linux 5.3+) wakes this thread at the driver's exit; elsewhere it
    polls once a second."""
    try:
        pidfd = os.pidfd_open(driver)
    except (AttributeError, OSError):  # no pidfds here, or the driver is gone already
        while _alive(driver):
            time.sleep(1.0)
    else:
        select.select([pidfd], [], [])
    os._exit(1)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # a process of another user took the number: ours is gone
        return False
    return True


def _ready() -> int:
    _started.wait(WORKER_START_TIMEOUT_S)  # held here, a worker takes no second ready task: each runs one
    return os.getpid()


def _evaluate(task: bytes) -> bytes:
    return pickle.dumps(_worker.evaluate(*pickle.loads(task)))


class ProcessEngine(RemoteEngine):
    backend = "process"

    def __init__(self, spec: WorkerSpec, workers: int, chunk_size: int, threads_per_worker: int = 1,
                 max_restarts: int = 3, timeout_s: float | None = None):
        super().__init__(chunk_size, workers, max_restarts, timeout_s)
        self._start = (spec, threads_per_worker)
        self.pool = self._pool()

    def _pool(self) -> ProcessPoolExecutor:
        # spawn, not fork: a forked copy of a process that already runs torch threads can hang
        context = multiprocessing.get_context("spawn")
        pool = ProcessPoolExecutor(self.workers, mp_context=context, initializer=_start,
                                   initargs=(*self._start, context.Barrier(self.workers), os.getpid()))
        try:  # all workers start here, not within the first step (and its timeout)
            for ready in [pool.submit(_ready) for _ in range(self.workers)]:
                ready.result(WORKER_START_TIMEOUT_S)
        except BaseException as exc:
            self._stop(pool, grace_s=0)
            if isinstance(exc, (BrokenProcessPool, TimeoutError, threading.BrokenBarrierError)):
                raise ZooframeError(f"the process workers did not start ({type(exc).__name__}; a worker's error, "
                                    "if any, is printed above)") from exc
            raise
        return pool

    def _map(self, tasks):
        try:
            # as plain bytes: the pool would share tensors through file descriptors, a handshake that a
            # worker's death interrupts with tracebacks from the pool's threads
            futures = [self.pool.submit(_evaluate, pickle.dumps(task)) for task in tasks]
            if wait_for(futures, self.timeout_s):
                raise self._timed_out()
            return [pickle.loads(future.result()) for future in futures]
        except BrokenProcessPool as exc:
            raise WorkerLost("died while evaluating queries (the process pool broke)") from exc

    def _restart(self) -> None:
        self._stop(self.pool, grace_s=0)
        self.pool = self._pool()

    def close(self) -> None:
        self._stop(self.pool, grace_s=5)

    @staticmethod
    def _stop(pool: ProcessPoolExecutor, grace_s: float) -> None:
        """Shut ``pool`` down; workers still busy after ``grace_s`` (hung: they would never finish) are killed.
        The pool's own process list is private; Python 3.14 has ``terminate_workers`` for this."""
        processes = list((getattr(pool, "_processes", None) or {}).values())
        pool.shutdown(wait=False, cancel_futures=True)
        deadline = time.monotonic() + grace_s
        for process in processes:
            process.join(timeout=max(0.0, deadline - time.monotonic()))
            if process.is_alive():
                process.kill()
