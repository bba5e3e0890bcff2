"""Stops asked for by a signal, remembered as well as raised.

The command line stops on Ctrl-C, and on SIGTERM or SIGHUP (how a scheduler such as Slurm or
Kubernetes, ``docker stop`` or a dropped ssh session stops a job) as on Ctrl-C. A handler raises
in the main thread wherever that thread is, which can be inside C code that puts another error in
the stop's place: numpy's ``tofile``, asked whether a file is path-like just as the signal lands,
reports a ``TypeError`` about the file. So the stop is recorded as well, and the places that take a
simulator's errors as faults call :func:`raise_if_requested` first: a stop is never retried,
skipped, penalised or reported as the simulator's failure.
"""

from __future__ import annotations

import signal

SIGNALS = tuple(getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGHUP") if hasattr(signal, name))

_requested: int | None = None


class Stopped(KeyboardInterrupt):
    """SIGTERM or SIGHUP. A command stops as on Ctrl-C: a run writes its weights and its summary
    (status ``interrupted``, the signal named), and keeps the checkpoint to resume from."""

    def __init__(self, signum: int):
        self.signum = signum
        super().__init__(f"stopped by {signal.Signals(signum).name}")


def _stop(signum: int) -> KeyboardInterrupt:
    return KeyboardInterrupt() if signum == signal.SIGINT else Stopped(signum)


def handle(signum: int, frame=None) -> None:
    """The signal handler: records the stop, then raises it (``KeyboardInterrupt`` for Ctrl-C,
    :class:`Stopped` for the others)."""
    global _requested
    _requested = signum
    raise _stop(signum)


def install() -> dict:
    """Handle :data:`SIGNALS` (call from the main thread); the handlers they had, for :func:`restore`."""
    global _requested
    _requested = None
    return {s: signal.signal(s, handle) for s in SIGNALS}


def restore(previous: dict) -> None:
    global _requested
    for s, handler in previous.items():
        signal.signal(s, handler)
    _requested = None


def raise_if_requested(error: BaseException) -> None:
    """Raise the stop that a signal asked for, if one did, in place of ``error``."""
    if _requested is not None:
        raise _stop(_requested) from error
