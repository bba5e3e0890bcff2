"""How many torch threads this process runs with: the cores that other processes leave free.

Intra-op parallelism waits at every operation for its slowest thread, so a thread that shares
its core with a busy neighbour slows the whole step: on 2 cores beside one busy process, a Karman
step (examples/karman_zo_sol.json) took 5.1x and a Burgers step 24x longer with 2 threads than
with 1, while on a quiet machine 2 threads were 1.9x and 1.5x faster (benchmarks/threads.py). ``auto`` therefore counts the cores
that others keep busy (Linux: ``/proc/stat`` less this process's own CPU time) and re-checks as
the run goes, without sampling anything: each check reads the counters since the last one.
"""

from __future__ import annotations

import math
import os
import time
from pathlib import Path

import torch

# a core that others keep busy at least half the time is theirs: a neighbour that competes with our
# threads for 2 cores gets about 2/3 of one, and must still count
FREE_BELOW = 0.5
RECHECK_S = 20.0
MIN_WINDOW_S = 0.1  # the counters tick every 10 ms: 10 ticks a core


def usable_cores() -> list[int]:
    try:
        return sorted(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return list(range(os.cpu_count() or 1))


def _busy_and_total(cores: list[int]) -> tuple[int, int] | None:
    """Busy and total clock ticks of ``cores`` since boot, or None where /proc/stat is missing."""
    try:
        lines = Path("/proc/stat").read_text().splitlines()
    except OSError:
        return None
    wanted = {f"cpu{c}" for c in cores}
    busy = total = 0
    for line in lines:
        name, *values = line.split()
        if name in wanted:
            ticks = [int(v) for v in values[:8]]  # user nice system idle iowait irq softirq steal
            total += sum(ticks)
            busy += sum(ticks) - ticks[3] - ticks[4]
    return busy, total


def choose(cores: int, others_busy: float) -> int:
    """Threads for ``cores`` usable cores of which others keep ``others_busy`` cores' worth busy."""
    return max(1, min(cores, math.floor(cores - others_busy + 1 - FREE_BELOW)))


class ThreadPolicy:
    """Sets torch's intra-op threads for a run: a fixed count, or ``auto`` (see the module's
    docstring). :meth:`update` is cheap and meant to be called between steps; :meth:`restore`
    puts back the count the process had."""

    def __init__(self, setting: int | str):
        self.setting = setting
        self.before = torch.get_num_threads()
        self.cores = usable_cores()
        self.threads = self.before
        self.history: list[dict[str, float]] = []  # per check: others' busy cores, threads chosen
        self._mark()
        if isinstance(setting, int):
            self._set(setting)
        else:
            self.update(force=True)

    def _mark(self) -> None:
        self._counters = _busy_and_total(self.cores)
        self._own = time.process_time()
        self._wall = time.monotonic()

    def others_busy(self) -> float | None:
        """Cores' worth of CPU that other processes used since the last check (None: unknown)."""
        before, own, wall = self._counters, self._own, self._wall
        now = _busy_and_total(self.cores)
        if before is None or now is None or now[1] <= before[1]:
            return None
        ticks = now[1] - before[1]
        busy = (now[0] - before[0]) / ticks * len(self.cores)
        own_cores = (time.process_time() - own) / max(time.monotonic() - wall, 1e-9)
        return max(0.0, busy - own_cores)

    def update(self, force: bool = False) -> int:
        """Re-check the neighbours (``auto``, every ``RECHECK_S``); returns the thread count."""
        if self.setting != "auto":
            return self.threads
        elapsed = time.monotonic() - self._wall
        if not force and elapsed < RECHECK_S:
            return self.threads
        if elapsed < MIN_WINDOW_S:
            time.sleep(MIN_WINDOW_S - elapsed)
        others = self.others_busy()
        if others is not None:
            self._set(choose(len(self.cores), others))
            self.history.append({"others_busy": round(others, 2), "threads": self.threads})
        self._mark()
        return self.threads

    def _set(self, threads: int) -> None:
        if threads != self.threads:
            torch.set_num_threads(threads)
            self.threads = threads

    def restore(self) -> None:
        self._set(self.before)

    def __enter__(self) -> ThreadPolicy:
        return self

    def __exit__(self, *exc) -> None:
        self.restore()
