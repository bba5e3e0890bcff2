"""What a solver starts ends with its call, and Ctrl-C ends the running solvers at once."""

import signal
import sys
import threading
import time
import uuid
from pathlib import Path

import pytest
import torch
from external_solvers import forking

from zooframe import Case
from zooframe.faults import SimulatorTimeout
from zooframe_external import External, ExternalConfig
from zooframe_external.reaper import kill_processes_with, processes_with

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="finds processes in /proc")

FAKE = str(Path(__file__).with_name("fake_solver.py"))
STATE = torch.zeros(3, 1, 8, dtype=torch.float64)
CASES = [Case(f"case{i}", {"nu": 0.01 * i}) for i in range(3)]


@pytest.fixture
def tag():
    """An environment variable for the solvers, which whatever they start inherits: how the test finds them."""
    name, value = "ZOOFRAME_TEST_TAG", uuid.uuid4().hex
    yield name, value
    kill_processes_with(f"{name}={value}".encode())  # a failing test leaves nothing behind


def simulator(tag, command, mode, **options) -> External:
    return External(ExternalConfig(kind="external", command=command, channels=["u"], spatial_shape=[8], mode=mode,
                                   env_vars=dict([tag]), **options))


def alive(tag) -> list[int]:
    return processes_with("=".join(tag).encode())


def interrupt_when(condition) -> None:
    """SIGINT to the main thread (Ctrl-C) once ``condition()`` holds, from a thread of its own."""
    def wait():
        deadline = time.monotonic() + 20
        while not condition() and time.monotonic() < deadline:
            time.sleep(0.02)
        signal.pthread_kill(threading.main_thread().ident, signal.SIGINT)

    threading.Thread(target=wait, daemon=True).start()


@pytest.mark.parametrize("mode", ["batch", "case", "persistent"])
def test_what_a_solver_starts_ends_with_its_call(tag, mode):
    sim = simulator(tag, forking([sys.executable, FAKE, "serve" if mode == "persistent" else "copy"]), mode)
    torch.testing.assert_close(sim.step(STATE, CASES, 0), STATE + 1)
    if mode == "persistent":  # the process and what it started live from call to call, until it is stopped
        assert len(alive(tag)) == 3
        sim.close()
    assert alive(tag) == []


def test_ctrl_c_in_case_mode_ends_the_running_solvers_at_once(tag):
    sim = simulator(tag, [sys.executable, FAKE, "sleep"], "case", timeout_s=10)
    interrupt_when(lambda: len(alive(tag)) == 2)  # max_processes rows running
    start = time.monotonic()
    with pytest.raises(KeyboardInterrupt):
        sim.step(STATE, CASES, 0)
    assert time.monotonic() - start < 5, "the interrupted step waited for its solvers"
    assert alive(tag) == []


def test_ctrl_c_during_a_persistent_request_stops_the_process(tag):
    """The next call is answered by a new process, not with the interrupted request's answer."""
    sim = simulator(tag, [sys.executable, FAKE, "serve"], "persistent", timeout_s=5)
    sim.step(STATE, CASES, 0)
    calls = len(list(sim._session.iterdir()))
    interrupt_when(lambda: len(list(sim._session.iterdir())) > calls)  # seed 9: it hangs
    with pytest.raises(KeyboardInterrupt):
        sim.step(STATE, CASES, 9)
    try:
        torch.testing.assert_close(sim.step(STATE, CASES, 0), STATE + 1)
    except SimulatorTimeout:
        pytest.fail("the interrupted request still held the process")
    sim.close()
