"""The thread policy: counts the cores other processes keep busy, and leaves them alone."""

import subprocess
import sys
import time

import pytest
import torch

from zooframe.execution import threads
from zooframe.execution.threads import ThreadPolicy, choose

from .helpers import small


@pytest.mark.parametrize("cores, others, expected", [
    (2, 0.0, 2), (2, 0.2, 2), (2, 0.67, 1), (2, 1.0, 1), (2, 2.0, 1), (16, 3.1, 13), (16, 0.0, 16)])
def test_choose_leaves_the_cores_others_use(cores, others, expected):
    assert choose(cores, others) == expected


def test_a_fixed_count_is_set_and_restored():
    before = torch.get_num_threads()
    with ThreadPolicy(1) as policy:
        assert torch.get_num_threads() == 1 == policy.update(force=True)
    assert torch.get_num_threads() == before


@pytest.mark.parametrize("busy_ticks, own_s, others, expected", [
    (150, 0.5, 1.0, 1),   # 1.5 cores busy, half a core ours: a neighbour holds one core, so one thread
    (100, 1.0, 0.0, 2),   # all the busy time is our own work: the machine is ours
    (120, 0.2, 1.0, 1),
])
def test_auto_counts_the_others_from_the_counters_less_its_own_time(monkeypatch, busy_ticks, own_s, others,
                                                                      expected):
    """The arithmetic of ``auto`` on scripted counters: this runs where the real-machine test below
    must skip (a second pytest worker keeps the machine busy)."""
    clock = {"wall": 0.0, "own": 0.0}
    # 2 cores, 100 ticks each over the window from 0 to RECHECK_S
    monkeypatch.setattr(threads, "_busy_and_total", lambda cores: (busy_ticks, 200) if clock["wall"] else (0, 0))
    monkeypatch.setattr(threads, "usable_cores", lambda: [0, 1])
    monkeypatch.setattr(threads, "time", type("Clock", (), {
        "monotonic": staticmethod(lambda: clock["wall"]), "process_time": staticmethod(lambda: clock["own"]),
        "sleep": staticmethod(lambda s: None)}))
    before = torch.get_num_threads()
    policy = ThreadPolicy("auto")  # its first check has an empty window and decides nothing
    try:
        clock["wall"] = 1.0
        policy.update()  # too soon to check again
        assert policy.history == []
        clock.update(wall=threads.RECHECK_S, own=own_s * threads.RECHECK_S)
        assert policy.update() == expected == torch.get_num_threads()
        assert policy.history == [{"others_busy": others, "threads": expected}]
    finally:
        policy.restore()
    assert torch.get_num_threads() == before


def test_auto_sees_a_busy_neighbour_and_not_its_own_work():
    if threads._busy_and_total(threads.usable_cores()) is None:
        pytest.skip("no /proc/stat")
    def others_busy_while_we_work() -> float:
        policy = ThreadPolicy("auto")
        try:
            policy._mark()
            x = torch.randn(400, 400)
            end = time.monotonic() + 0.5
            while time.monotonic() < end:  # our own work must not count as a neighbour's
                x = (x @ x).tanh()
            return policy.others_busy()
        finally:
            policy.restore()

    if (before := others_busy_while_we_work()) > 0.3:
        pytest.skip(f"the machine is not quiet ({before:.2f} cores busy with other work), so one more busy "
                    "neighbour cannot be told apart")
    spin = "import time\nend = time.time() + 30\nwhile time.time() < end: pass"
    neighbour = subprocess.Popen([sys.executable, "-c", spin])
    try:
        time.sleep(0.5)
        assert others_busy_while_we_work() == pytest.approx(1.0, abs=0.35)
    finally:
        neighbour.kill()
        neighbour.wait()


def test_a_run_records_its_threads(tmp_path):
    import json

    import zooframe

    config = small(steps=2)
    config["execution"] = {"threads": 1}
    result = zooframe.run(config, output=tmp_path, progress=False)
    assert result.summary["threads"] == {"setting": 1, "checks": []}
    assert [json.loads(line)["threads"] for line in (tmp_path / "metrics.jsonl").read_text().splitlines()] == [1, 1]
