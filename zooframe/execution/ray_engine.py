"""The ``ray`` backend: one Ray actor per worker, each holding a warm simulator.

Without an address a local Ray instance is started (``address="local"``, the configured CPUs, no
dashboard) and shut down at the end; with ``auto`` or an address the engine joins a cluster
started with ``ray start`` (:mod:`zooframe.execution.ray_cluster`: one clear error when it cannot)
and leaves it running.
"""

from __future__ import annotations

from ..plugins.errors import ZooframeError, first_line
from .engine import WORKER_START_TIMEOUT_S, RemoteEngine, WorkerLost
from .ray_cluster import connect
from .workers import EvaluationWorker, WorkerSpec


def import_ray():
    try:
        import ray
    except ImportError:
        raise ZooframeError("execution.backend 'ray' needs Ray: pip install 'zooframe[ray]'") from None
    return ray


CLOSE_TIMEOUT_S = 5


class RayEngine(RemoteEngine):
    backend = "ray"

    def __init__(self, spec: WorkerSpec, workers: int, chunk_size: int, address: str | None = None,
                 object_store_mb: int | None = None, threads_per_worker: int = 1, max_restarts: int = 3,
                 timeout_s: float | None = None):
        super().__init__(chunk_size, workers, max_restarts, timeout_s)
        ray = self.ray = import_ray()
        self.owns_ray = connect(ray, address, workers * threads_per_worker, object_store_mb)
        self._start = (spec, threads_per_worker)
        self._actor = ray.remote(num_cpus=threads_per_worker)(EvaluationWorker)
        self.actors = []
        try:
            self._start_actors()
        except BaseException:
            self.close()  # no actors waiting for CPUs, and no local Ray instance, left behind
            raise

    def _start_actors(self) -> None:
        self.actors = [self._actor.remote(*self._start) for _ in range(self.workers)]
        try:  # fail here, not in the first step
            self.ray.get([a.ping.remote() for a in self.actors], timeout=WORKER_START_TIMEOUT_S)
        except self.ray.exceptions.GetTimeoutError:
            raise ZooframeError(f"Ray did not start {self.workers} workers within {WORKER_START_TIMEOUT_S} s: does "
                                f"the cluster have {self.workers} x {self._start[1]} free CPUs?") from None
        except self.ray.exceptions.RayActorError as exc:
            raise ZooframeError(f"a Ray worker failed to start: {first_line(exc)}") from exc

    def _map(self, tasks):
        refs = [self.actors[i % len(self.actors)].evaluate.remote(*task) for i, task in enumerate(tasks)]
        if self.ray.wait(refs, num_returns=len(refs), timeout=self.timeout_s)[1]:
            raise self._timed_out()
        try:
            return self.ray.get(refs)
        except self.ray.exceptions.RayActorError as exc:
            raise WorkerLost(f"died while evaluating queries ({first_line(exc)})") from exc

    def _restart(self) -> None:
        self._kill_actors()
        self._start_actors()

    def _kill_actors(self) -> None:
        for actor in self.actors:
            self.ray.kill(actor)
        self.actors = []

    def close(self) -> None:
        try:  # each simulator releases what it holds, unless its worker is gone or hangs
            self.ray.get([a.close.remote() for a in self.actors], timeout=CLOSE_TIMEOUT_S)
        except Exception:
            pass
        self._kill_actors()
        if self.owns_ray:
            self.ray.shutdown()
