"""One run per folder: a run holds an exclusive OS lock on its folder while it writes there.

The lock is ``flock`` on the folder itself, so nothing is added to a folder that turns out not to
be a run's; the kernel releases it when the process ends, however it ends, so a killed run never
leaves a stale lock behind. The holder names itself by its pid in the run's ``summary.json``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from ..plugins.errors import ZooframeError

try:
    import fcntl
except ImportError:  # Windows: no flock; a folder is not guarded there
    fcntl = None


@contextmanager
def folder_lock(folder: Path, summary_file: str) -> Iterator[None]:
    """Hold the lock of ``folder`` (created if need be), or refuse, naming the run that holds it."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd = os.open(folder, os.O_RDONLY)
    except (OSError, ValueError) as exc:
        raise ZooframeError(f"cannot write the run folder {folder}: {getattr(exc, 'strerror', None) or exc}") from None
    try:
        if fcntl is not None:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = _holder(folder / summary_file)
                raise ZooframeError(f"the run folder {folder} is in use by another zooframe run ({holder}); wait "
                                    "until it ends, or choose another output.dir or --output") from None
        yield
    finally:
        os.close(fd)  # releases the lock


def _holder(summary: Path) -> str:
    try:
        pid = json.loads(summary.read_text()).get("pid")
    except (OSError, ValueError, AttributeError):
        pid = None
    return f"pid {pid}" if pid is not None else "it has not written its pid yet"
