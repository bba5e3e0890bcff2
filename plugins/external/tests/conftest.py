"""Fixtures: the compiled C example, the Python example's command, a Burgers reference file."""

import os
import shutil
import subprocess
import sys

import pytest

os.environ["ZOOFRAME_DISABLE_EXTERNAL_PLUGINS"] = "1"  # each test names the registry it uses

from external_solvers import EXAMPLES, HORIZON

import zooframe
from zooframe.builtins.simulators.burgers import Burgers, BurgersConfig
from zooframe.plugins.reference import SimulatorReference


@pytest.fixture(scope="session")
def c_solver(tmp_path_factory) -> str:
    gcc = shutil.which("gcc")
    if gcc is None:
        pytest.skip("gcc is not on PATH: the C example solver cannot be compiled")
    exe = tmp_path_factory.mktemp("c-solver") / "burgers1d"
    subprocess.run([gcc, "-O2", "-std=c99", "-o", str(exe), str(EXAMPLES / "burgers1d.c"), "-lm"], check=True)
    return str(exe)


def mpi_program(name: str) -> str | None:
    """An MPI program: the mpich wheel's, beside this Python, else one on PATH."""
    here = os.path.join(os.path.dirname(sys.executable), name)
    return here if os.access(here, os.X_OK) else shutil.which(name)


@pytest.fixture(scope="session")
def mpi_solver(tmp_path_factory) -> str:
    """The MPI example, compiled with mpicc; mpiexec's folder goes on PATH for the launcher."""
    mpicc, mpiexec = mpi_program("mpicc"), mpi_program("mpiexec")
    if mpicc is None or mpiexec is None:
        pytest.skip("no mpicc and mpiexec (pip install mpich mpi4py, as the test extra does): the MPI tests need them")
    os.environ["PATH"] = os.path.dirname(mpiexec) + os.pathsep + os.environ.get("PATH", "")
    exe = tmp_path_factory.mktemp("mpi-solver") / "burgers1d_mpi"
    subprocess.run([mpicc, "-O2", "-std=c99", "-o", str(exe), str(EXAMPLES / "burgers1d_mpi.c"), "-lm"], check=True)
    return str(exe)


@pytest.fixture(scope="session")
def solvers(c_solver):
    return {"c": [c_solver], "python": [sys.executable, str(EXAMPLES / "burgers1d.py")]}


@pytest.fixture(scope="session")
def reference_file(tmp_path_factory):
    sim = Burgers(BurgersConfig(kind="burgers", resolution=16, train_viscosities=[0.01, 0.02, 0.04],
                                test_viscosities=[0.015, 0.03]))
    source = SimulatorReference.of(sim)
    sets = source.cases()
    cases = sets["train"] + sets["test"]
    path = tmp_path_factory.mktemp("reference") / "burgers16.npz"
    return zooframe.write_reference_file(
        path, source.trajectories(cases, HORIZON).numpy(), [c.name for c in cases],
        [split for split, members in sets.items() for _ in members], {"nu": [c.params["nu"] for c in cases]},
        features=source.features(cases).numpy(), channels=["u"])
