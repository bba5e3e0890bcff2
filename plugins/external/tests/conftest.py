"""Fixtures: the compiled C example, the Python example's command, a Burgers reference file."""

import os
import shutil
import subprocess
import sys

import pytest

os.environ["ZOOFRAME_DISABLE_EXTERNAL_PLUGINS"] = "1"  # each test names the registry it uses

from external_solvers import EXAMPLES


@pytest.fixture(scope="session")
def c_solver(tmp_path_factory) -> str:
    gcc = shutil.which("gcc")
    if gcc is None:
        pytest.skip("gcc is not on PATH: the C example solver cannot be compiled")
    exe = tmp_path_factory.mktemp("c-solver") / "burgers1d"
    subprocess.run([gcc, "-O2", "-std=c99", "-o", str(exe), str(EXAMPLES / "burgers1d.c"), "-lm"], check=True)
    return str(exe)


@pytest.fixture(scope="session")
def solvers(c_solver):
    return {"c": [c_solver], "python": [sys.executable, str(EXAMPLES / "burgers1d.py")]}

