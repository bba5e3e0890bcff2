"""The example solvers' command lines and time step, shared by the tests (a module of its own: every
plugin's tests have a conftest.py, and importing from "conftest" would take whichever came first)."""

from pathlib import Path

import zooframe
import zooframe_external.plugin

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
DT = 0.05
HORIZON = 20
QUIET = "</dev/null >/dev/null 2>&1"


def solver_command(base: list[str], mode: str) -> list[str]:
    return [*base, "--dt", str(DT), *(["--serve"] if mode == "persistent" else [])]


def forking(command: list[str], hang: Path | None = None) -> list[str]:
    """``command`` started by a shell that first leaves two sleepers behind: one in the solver's process
    group, one in a session of its own (setsid). With ``hang``, a run that finds that file is ``sleep 601``
    instead of the solver."""
    hung = f'[ -e "{hang}" ] && exec sleep 601; ' if hang else ""
    return ["/bin/sh", "-c", f'sleep 600 {QUIET} & setsid sleep 600 {QUIET} & {hung}exec "$0" "$@"', *command]


def config(command, mode, reference, steps=20, lr=0.03, evaluation_steps=HORIZON, **simulator):
    return {
        "name": f"external-{mode}",
        "simulator": {"kind": "external", "command": command, "channels": ["u"], "spatial_shape": [16], "mode": mode,
                      **simulator},
        "reference": {"kind": "file", "path": str(reference)},
        "model": {"kind": "conv", "hidden_channels": 4, "kernel_size": 3, "depth": 0, "padding": "circular"},
        "estimator": {"kind": "cge", "scheme": "forward"},
        "training": {"mode": "zo", "steps": steps, "unroll": 3, "horizon": HORIZON, "optimizer": {"lr": lr}},
        "evaluation": {"steps": evaluation_steps},
        "execution": {"threads": 1},
        "output": {"progress": False},
    }


def registry():
    return zooframe.Registry(load_external=False, plugins={"zooframe-external": zooframe_external.plugin})
