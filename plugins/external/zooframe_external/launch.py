"""Launching an MPI code from the external simulator: the launcher's argv, and the slots it may fill.

A ``launch`` section puts a launcher in front of ``command`` (which stays the program and its
arguments), and never through a shell:

``mpiexec``
    ``mpiexec -n RANKS [args] PROGRAM ...`` (MPICH's Hydra, Open MPI): standard input reaches rank 0.
``srun``
    ``srun --ntasks RANKS [--nodes NODES] --exact --input=0 --kill-on-bad-exit=1 [args] PROGRAM ...``:
    inside a Slurm allocation, each run is a job step placed on the allocation's free CPUs, as the
    allocation's own steps are packed (``--exact``); standard input reaches task 0 only.
``flux run``
    ``flux run -n RANKS [-N NODES] --input=0 [args] PROGRAM ...``: a job of the enclosing Flux
    instance (the allocation made by ``flux batch`` or ``flux alloc``).
``none``
    the command as it is, for a program that starts its own ranks: ``ranks`` still counts them.

The slots are the CPUs the runs may fill: ``launch.slots`` when set, else the allocation's (Slurm:
the sum of ``SLURM_JOB_CPUS_PER_NODE`` of the job the process runs in; Flux: the cores of
``flux resource info`` of the instance ``FLUX_URI`` names), else this machine's cores (those this
process may run on). Runs at once times ranks must fit in them: a config error before any work
otherwise, which names what would fit.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, PositiveInt, field_validator

LAUNCHERS: dict[str, list[str]] = {"mpiexec": ["mpiexec"], "srun": ["srun"], "flux run": ["flux", "run"], "none": []}
FLUX_INFO_TIMEOUT_S = 20.0


class LaunchConfig(BaseModel):
    """How each run of the command is launched: its launcher, ranks and nodes."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    launcher: Literal["mpiexec", "srun", "flux run", "none"] = Field(
        "mpiexec", description="mpiexec; srun (a job step inside a Slurm allocation, packed with --exact); flux run "
        "(a job of the enclosing Flux instance); none: the command starts its own ranks")
    ranks: PositiveInt = Field(1, description="MPI ranks per run (one CPU each)")
    nodes: PositiveInt | None = Field(None, description="srun and flux run: nodes per run (default: the scheduler "
                                      "places the ranks)")
    args: list[str] = Field(default_factory=list, description="more launcher arguments, before the program (e.g. "
                            "[\"--mpi=pmi2\"] for srun and an MPICH code)")
    slots: PositiveInt | Literal["auto"] = Field(
        "auto", description="the CPUs the runs may fill; auto: the Slurm or Flux allocation this process runs in, "
        "else this machine's cores")

    @field_validator("args")
    @classmethod
    def _no_nul(cls, v: list[str]) -> list[str]:
        for i, arg in enumerate(v):
            if "\0" in arg:
                raise ValueError(f"args[{i}] holds a NUL character, which no program can be given: remove it")
        return v


def launcher_argv(launch: LaunchConfig) -> list[str]:
    """What goes before the program."""
    n, nodes = str(launch.ranks), launch.nodes
    if launch.launcher == "mpiexec":
        return ["mpiexec", "-n", n, *launch.args]
    if launch.launcher == "srun":
        return ["srun", "--ntasks", n, *(["--nodes", str(nodes)] if nodes else []), "--exact", "--input=0",
                "--kill-on-bad-exit=1", *launch.args]
    if launch.launcher == "flux run":
        return ["flux", "run", "-n", n, *(["-N", str(nodes)] if nodes else []), "--input=0", *launch.args]
    return []


@dataclass(frozen=True)
class Slots:
    """The CPUs runs may fill, on how many nodes (None: not known), and where that was read."""

    cpus: int
    nodes: int | None
    source: str


def slurm_cpus(per_node: str) -> int:
    """The CPUs of ``SLURM_JOB_CPUS_PER_NODE``, e.g. ``"36(x2),12"`` -> 84."""
    total = 0
    for part in per_node.split(","):
        match = re.fullmatch(r"\s*(\d+)(?:\(x(\d+)\))?\s*", part)
        if match is None:
            raise ValueError(f"cannot read SLURM_JOB_CPUS_PER_NODE={per_node!r}")
        total += int(match[1]) * int(match[2] or 1)
    return total


def slurm_slots(environ: Mapping[str, str]) -> Slots | None:
    """The Slurm job this process runs in (None: none)."""
    job, per_node = environ.get("SLURM_JOB_ID"), environ.get("SLURM_JOB_CPUS_PER_NODE")
    if not job or not per_node:
        return None
    nodes = environ.get("SLURM_JOB_NUM_NODES") or environ.get("SLURM_NNODES")
    return Slots(slurm_cpus(per_node), int(nodes) if nodes and nodes.isdigit() else None,
                 f"Slurm job {job} (SLURM_JOB_CPUS_PER_NODE={per_node})")


def flux_slots(environ: Mapping[str, str]) -> Slots | None:
    """The Flux instance ``FLUX_URI`` names (None: none), from ``flux resource info``
    ("2 Nodes, 72 Cores, 0 GPUs")."""
    uri = environ.get("FLUX_URI")
    flux = uri and shutil.which("flux", path=environ.get("PATH", os.defpath))
    if not flux:
        return None
    try:
        text = subprocess.run([flux, "resource", "info"], env=dict(environ), capture_output=True, text=True,
                              timeout=FLUX_INFO_TIMEOUT_S, check=True).stdout
    except (OSError, subprocess.SubprocessError) as exc:
        raise ValueError(f"FLUX_URI is set but `flux resource info` failed ({type(exc).__name__}: {exc})") from None
    nodes, cores = re.search(r"(\d+)\s+Nodes?", text), re.search(r"(\d+)\s+Cores?", text)
    if cores is None:
        raise ValueError(f"cannot read the cores in `flux resource info`: {text.strip()[:200]!r}")
    return Slots(int(cores[1]), int(nodes[1]) if nodes else None,
                 f"Flux instance {uri} ({text.strip()})")


def machine_slots() -> Slots:
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return Slots(cpus, 1, "this machine's cores")


def read_slots(launch: LaunchConfig, environ: Mapping[str, str] | None = None) -> Slots:
    """The slots ``launch`` may fill. Raises ValueError when an allocation is there and unreadable."""
    environ = os.environ if environ is None else environ
    if launch.slots != "auto":
        return Slots(launch.slots, None, "launch.slots")
    return slurm_slots(environ) or flux_slots(environ) or machine_slots()


def placement(launch: LaunchConfig, runs: int, runs_what: str, environ: Mapping[str, str]) -> tuple[list[str], dict]:
    """What keeps ``runs`` runs at once of ``launch`` from this machine or allocation (``runs_what``
    says where that number comes from), and the facts a run states: launcher, ranks, slots."""
    found = []
    argv = launcher_argv(launch)
    search = os.pathsep.join(os.get_exec_path(dict(environ)))
    if argv and shutil.which(argv[0], path=search) is None:
        found.append(f"simulator.launch.launcher: {argv[0]} is not found on PATH; install it, put it on PATH, or "
                     "choose another launcher")
    if launch.nodes is not None and launch.launcher not in ("srun", "flux run"):
        found.append(f"simulator.launch.nodes: {launch.launcher} takes no node count here; leave nodes out and give "
                     "its host options in launch.args, or use srun or flux run")
    try:
        slots = read_slots(launch, environ)
    except ValueError as exc:
        return [*found, f"simulator.launch.slots: {exc}; set launch.slots to the CPUs the runs may fill"], {}
    fit = slots.cpus // launch.ranks
    facts = {"launcher": launch.launcher, "ranks": launch.ranks, "slots": slots.cpus, "slots_from": slots.source,
             "runs_fit": fit, "runs_at_once": runs}
    if launch.nodes is not None:
        facts["nodes"] = launch.nodes
    if launch.nodes is not None and slots.nodes is not None and launch.nodes > slots.nodes:
        found.append(f"simulator.launch.nodes: {launch.nodes} nodes per run, but {slots.source} has {slots.nodes}")
    if runs * launch.ranks > slots.cpus:
        found.append(f"simulator.launch: {runs} runs at once ({runs_what}) x {launch.ranks} ranks = "
                     f"{runs * launch.ranks} ranks, more than the {slots.cpus} slots of {slots.source}; at most "
                     f"{fit} runs of {launch.ranks} ranks fit" + ("" if fit else ": lower launch.ranks"))
    return found, facts
