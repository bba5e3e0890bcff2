"""One run per folder: a second run into a folder that a run holds is refused, naming its pid, and
leaves the first run's files alone; a killed holder leaves no stale lock."""

import json
import os
import signal
import subprocess
import sys

import pytest

import zooframe
from zooframe.cli import main
from zooframe.runs.folder import SUMMARY_FILE
from zooframe.runs.lock import folder_lock

from .helpers import small

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="flock is POSIX")


def test_a_run_into_a_held_folder_is_refused_naming_the_holder(tmp_path, capsys):
    out = tmp_path / "run"
    first = zooframe.run(small(steps=2), output=out)
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    assert first.summary["pid"] == os.getpid()
    with folder_lock(out, SUMMARY_FILE):  # as a run in progress holds it
        with pytest.raises(zooframe.ZooframeError, match=rf"in use by another zooframe run \(pid {os.getpid()}\)"):
            zooframe.run(small(steps=2), output=out)
        path = tmp_path / "config.json"
        path.write_text(json.dumps(small(steps=2)))
        assert main(["run", str(path), "--output", str(out), "--resume"]) == 2
        assert "in use by another zooframe run" in capsys.readouterr().err
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before  # nothing of the first run was touched
    assert zooframe.run(small(steps=2), output=out, resume=True).summary["status"] == "completed"  # released


def test_a_killed_holder_leaves_no_stale_lock(tmp_path):
    out = tmp_path / "run"
    holder = subprocess.Popen([sys.executable, "-c", (
        "import sys, time; from pathlib import Path; from zooframe.runs.lock import folder_lock\n"
        f"with folder_lock(Path({str(out)!r}), 'summary.json'):\n"
        "    print('held', flush=True); time.sleep(60)")], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(zooframe.ZooframeError, match="has not written its pid yet"):
            zooframe.run(small(steps=1), output=out)
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    assert zooframe.run(small(steps=1), output=out).summary["status"] == "completed"
