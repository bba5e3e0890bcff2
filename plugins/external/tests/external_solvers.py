"""The example solvers' command lines and time step, shared by the tests (a module of its own: every
plugin's tests have a conftest.py, and importing from "conftest" would take whichever came first)."""

from pathlib import Path

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
DT = 0.05


def solver_command(base: list[str], mode: str) -> list[str]:
    return [*base, "--dt", str(DT), *(["--serve"] if mode == "persistent" else [])]
