"""MPI codes under a launcher, with a real MPI (the mpich wheel): the step to the bit, faults, the
processes a launch starts, and runs x ranks within the slots."""

import sys
import threading
import time
import uuid
from pathlib import Path

import pytest
import torch
from external_solvers import config, registry, solver_command

import zooframe
from zooframe import Case, ZooframeError
from zooframe.faults import SimulatorCrashed, SimulatorTimeout
from zooframe.runs.experiment import preflight
from zooframe_external import External, ExternalConfig
from zooframe_external.reaper import kill_processes_with, processes_with

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="finds processes in /proc")

MPI_FAKE = str(Path(__file__).with_name("mpi_fake.py"))
MODES = ("batch", "case", "persistent")


@pytest.fixture
def tag():
    """An environment variable for the launcher, which its proxies and ranks inherit: how the test finds them."""
    name, value = "ZOOFRAME_TEST_TAG", uuid.uuid4().hex
    yield name, value
    kill_processes_with(f"{name}={value}".encode())


def batch(rows: int):
    g = torch.Generator().manual_seed(1)
    state = torch.randn(rows, 2, 16, generator=g, dtype=torch.float64)
    return state, [Case(f"c{i}", {"nu": 0.01 * (i % 4)}) for i in range(rows)]


def mpi(command, mode="batch", ranks=2, slots="auto", tag=None, **options) -> External:
    return External(ExternalConfig(kind="external", command=command, channels=["a", "b"], spatial_shape=[16],
                                   mode=mode, launch={"launcher": "mpiexec", "ranks": ranks, "slots": slots},
                                   env_vars=dict([tag]) if tag else {}, **options))


def alive(tag, program: str | None = None) -> list[int]:
    """The live processes with ``tag``; with ``program``, those whose argv[0] is it (the ranks)."""
    pids = processes_with("=".join(tag).encode())
    if program is None:
        return pids
    ranks = []
    for pid in pids:
        try:
            argv0 = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0]
        except OSError:
            continue
        if argv0.decode() == program:
            ranks.append(pid)
    return ranks


@pytest.mark.parametrize("mode", MODES)
def test_the_mpi_example_gives_the_serial_step_bit_for_bit(mpi_solver, c_solver, mode):
    state, cases = batch(3)
    with External(ExternalConfig(kind="external", command=solver_command([c_solver], "batch"), channels=["a", "b"],
                                 spatial_shape=[16])) as serial:
        expected = serial.step(state, cases, 0)
    with mpi(solver_command([mpi_solver], mode), mode, ranks=3, slots=6) as sim:
        assert sim._argv(Path("/w"))[:3] == ["mpiexec", "-n", "3"]
        assert torch.equal(sim.step(state, cases, 0), expected)
        if mode == "persistent":  # one MPI job serves every request
            server = sim._server.proc.pid
            assert torch.equal(sim.step(state[1:], cases[1:], 1), expected[1:]) and sim._server.proc.pid == server


def test_a_crashed_rank_is_a_crash_with_its_stderr(mpi_solver):
    with pytest.raises(SimulatorCrashed) as info:
        mpi([sys.executable, MPI_FAKE, "crash"]).step(*batch(1), 0)
    text = str(info.value)
    assert "rank 1: the mesh is tangled" in text and f"mpiexec -n 2 {sys.executable}" in text


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["batch", "persistent"])
def test_a_hung_rank_is_a_timeout_that_leaves_no_process(mpi_solver, tag, mode):
    """Ranks and the launcher's proxies end with the call: each carries the call's marker."""
    seen = []
    sim = mpi([sys.executable, MPI_FAKE, "hang"], mode, timeout_s=1.5, tag=tag)
    watcher = threading.Thread(target=lambda: [seen.append(len(alive(tag))) or time.sleep(0.05) for _ in range(20)])
    watcher.start()
    with pytest.raises(SimulatorTimeout):
        sim.step(*batch(1), 0)
    watcher.join()
    assert max(seen) >= 4  # mpiexec, its proxy, 2 ranks
    assert alive(tag) == []
    sim.close()


def test_runs_times_ranks_never_exceed_the_slots(mpi_solver, tag):
    """Case mode, 2 runs of 2 ranks at once in 4 slots: the live ranks, counted while it runs."""
    counts, done = [], threading.Event()

    def count():
        while not done.is_set():
            counts.append(len(alive(tag, mpi_solver)))
            time.sleep(0.002)

    state, cases = batch(6)
    with mpi(solver_command([mpi_solver], "case"), "case", ranks=2, slots=4, max_processes=2, tag=tag) as sim:
        assert sim.run_facts() == {"launcher": "mpiexec", "ranks": 2, "slots": 4, "slots_from": "launch.slots",
                                   "runs_fit": 2, "runs_at_once": 2}
        watcher = threading.Thread(target=count)
        watcher.start()
        try:
            sim.step(state, cases, 0)
        finally:
            done.set()
            watcher.join()
    print(f"live ranks, {len(counts)} counts: peak {max(counts)}, histogram "
          f"{ {n: counts.count(n) for n in sorted(set(counts))} }")
    assert max(counts) <= 4
    assert max(counts) > 2  # the runs did overlap: the bound was met, not dodged


def test_more_runs_times_ranks_than_slots_is_a_config_error_before_any_work(mpi_solver, reference_file):
    with pytest.raises(ZooframeError, match=r"simulator.launch: 3 runs at once \(case mode's max_processes 3\) x 2 "
                                            r"ranks = 6 ranks, more than the 4 slots of launch.slots; at most 2 runs"):
        mpi(solver_command([mpi_solver], "case"), "case", ranks=2, slots=4, max_processes=3)
    cfg = config(solver_command([mpi_solver], "batch"), "batch", reference_file)  # 3 workers x 1 run x 2 ranks
    cfg["simulator"].update(channels=["u"], launch={"ranks": 2, "slots": 4})
    cfg["execution"].update(backend="process", workers=3)
    problems = preflight(zooframe.load_config(cfg, registry()), registry(), output="unused")
    assert problems == ["simulator.launch: 3 runs at once (1 per simulator in batch mode x execution.workers 3) "
                        "x 2 ranks = 6 ranks, more than the 4 slots of launch.slots; at most 2 runs of 2 ranks fit"]
