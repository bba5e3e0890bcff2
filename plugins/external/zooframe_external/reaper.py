"""Ends what a zooframe process started when that process ends, however it ends (``kill -9`` too).

The simulator starts one reaper per process (Linux only), as
``python -I -S reaper.py NAME=VALUE`` in a session of its own (no terminal's signal reaches it),
with its stdin the read end of a pipe whose write end only that process holds. The reaper reads
NUL-terminated folder paths until end of file, which comes when the process has ended: the kernel
closes its descriptors whatever killed it. It then kills every process whose environment holds a
variable starting with ``NAME=VALUE`` (the marker each solver is started with, inherited by
whatever it starts, in its session or out of it) and deletes the folders.

Standard library only: it starts in a few milliseconds and imports nothing of zooframe's.
"""

from __future__ import annotations

import os
import shutil
import signal
import sys
import time


def processes_with(entry: bytes) -> list[int]:
    """The live processes whose environment has a variable starting with ``entry`` (``NAME=value``).
    A zombie's environment reads empty; another user's process cannot be read and is not seen."""
    found = []
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                with open(f"/proc/{name}/environ", "rb") as f:
                    env = f.read()
            except OSError:  # gone, or not ours
                continue
            if any(var.startswith(entry) for var in env.split(b"\0")):
                found.append(int(name))
    return found


def kill_processes_with(entry: bytes) -> None:
    """SIGKILL every process with ``entry``, again until none is left: one may fork meanwhile."""
    for _ in range(100):
        pids = processes_with(entry)
        if not pids:
            return
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
        time.sleep(0.01)


def main() -> None:
    entry = os.fsencode(sys.argv[1])
    folders = sys.stdin.buffer.read().split(b"\0")  # until the zooframe process has ended
    kill_processes_with(entry)
    for folder in filter(None, folders):
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
