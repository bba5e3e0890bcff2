"""Waiting on other threads without deafening the main thread to signals.

Linux may hand a signal sent to zooframe (Ctrl-C, a scheduler's SIGTERM) to any of its threads,
while Python runs the handler only in the main thread, once that thread runs again: a main thread
in an untimed wait on a lock would sleep through it until the awaited work ends, which for a hung
solver is its timeout. So the main thread waits in slices of :data:`WAKE_S`.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from concurrent.futures import Future, wait

WAKE_S = 0.2


def wait_for(futures: Iterable[Future], timeout_s: float | None = None) -> set[Future]:
    """Wait until every future is done or ``timeout_s`` has passed; the ones not done."""
    pending = set(futures)
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    while pending:
        slice_s = WAKE_S if deadline is None else min(WAKE_S, deadline - time.monotonic())
        if slice_s <= 0:
            break
        pending = wait(pending, slice_s).not_done
    return pending
