"""The launch section: each launcher's argv, the slots read from Slurm, Flux or the machine, and the
facts a run states in its log and summary.json."""

import json
import logging
import os
import re
import stat
import subprocess
from pathlib import Path

import pydantic
import pytest
from external_solvers import config, registry, solver_command

import zooframe
from zooframe.cli import build_parser
from zooframe_external import ExternalConfig
from zooframe_external.launch import LaunchConfig, Slots, launcher_argv, read_slots, slurm_cpus

# `flux resource info` inside a `flux batch -N 2` allocation of two 4-core nodes, and its environment
FLUX_INFO = "2 Nodes, 8 Cores, 0 GPUs\n"
FLUX_ENV = {"FLUX_URI": "local:///tmp/flux-abc/local-0", "FLUX_JOB_ID": "f2QV7tzXMm", "FLUX_KVS_NAMESPACE": "job-1"}


def test_each_launcher_puts_its_argv_before_the_program():
    def argv(**launch):
        return launcher_argv(LaunchConfig(**launch))

    assert argv(ranks=4, args=["-bind-to", "core"]) == ["mpiexec", "-n", "4", "-bind-to", "core"]
    assert argv(launcher="srun", ranks=2, nodes=1, args=["--mpi=pmi2"]) == [
        "srun", "--ntasks", "2", "--nodes", "1", "--exact", "--input=0", "--kill-on-bad-exit=1", "--mpi=pmi2"]
    assert argv(launcher="flux run", ranks=8, nodes=2) == ["flux", "run", "-n", "8", "-N", "2", "--input=0"]
    assert argv(launcher="none", ranks=3) == []


def test_launch_settings_are_checked(c_solver):
    with pytest.raises(pydantic.ValidationError, match="ranks"):
        LaunchConfig(ranks=0)
    with pytest.raises(pydantic.ValidationError, match="launcher"):
        LaunchConfig(launcher="aprun")
    with pytest.raises(zooframe.ZooframeError, match="simulator.launch.nodes: mpiexec takes no node count"):
        zooframe_external_sim(c_solver, nodes=2)
    with pytest.raises(zooframe.ZooframeError, match="simulator.launch.launcher: flux is not found on PATH"):
        zooframe_external_sim(c_solver, launcher="flux run", env_vars={"PATH": "/nonexistent"})


def zooframe_external_sim(c_solver, env_vars=None, **launch):
    from zooframe_external import External

    return External(ExternalConfig(kind="external", command=[c_solver, "--dt", "0.05"], channels=["u"],
                                   spatial_shape=[16], launch=launch, env_vars=env_vars or {}))


def test_slurm_cpus_per_node_is_summed():
    assert slurm_cpus("2") == 2 and slurm_cpus("36(x2),12") == 84 and slurm_cpus("4(x3)") == 12
    with pytest.raises(ValueError, match="SLURM_JOB_CPUS_PER_NODE"):
        slurm_cpus("4(x")


def test_the_slots_come_from_slurm_then_flux_then_the_machine(tmp_path):
    auto = LaunchConfig(launcher="srun", ranks=2)
    slurm = {"SLURM_JOB_ID": "42", "SLURM_JOB_CPUS_PER_NODE": "36(x2)", "SLURM_JOB_NUM_NODES": "2"}
    assert read_slots(auto, slurm) == Slots(72, 2, "Slurm job 42 (SLURM_JOB_CPUS_PER_NODE=36(x2))")
    flux = tmp_path / "flux"  # a recorded Flux: answers `flux resource info` as inside `flux batch -N 2`
    flux.write_text(f"#!/bin/sh\n[ \"$*\" = 'resource info' ] && [ -n \"$FLUX_URI\" ] && printf '{FLUX_INFO}' && exit 0\n"
                    "exit 1\n")
    flux.chmod(flux.stat().st_mode | stat.S_IXUSR)
    env = {**FLUX_ENV, "PATH": str(tmp_path)}
    assert read_slots(auto, env) == Slots(8, 2, f"Flux instance {FLUX_ENV['FLUX_URI']} (2 Nodes, 8 Cores, 0 GPUs)")
    assert read_slots(auto, {**env, **slurm}).cpus == 72  # Flux started inside a Slurm job: Slurm's count
    flux.write_text("#!/bin/sh\necho 'broker not responding' >&2; exit 1\n")
    with pytest.raises(ValueError, match="FLUX_URI is set but `flux resource info` failed"):
        read_slots(auto, env)
    assert read_slots(auto, {"PATH": str(tmp_path)}) == Slots(len(os.sched_getaffinity(0)), 1, "this machine's cores")
    assert read_slots(LaunchConfig(ranks=2, slots=6), slurm) == Slots(6, None, "launch.slots")


def test_a_run_states_its_launch_in_the_log_and_the_summary(c_solver, reference_file, tmp_path, caplog):
    cfg = config(solver_command([c_solver], "batch"), "batch", reference_file, steps=1, evaluation_steps=1)
    cfg["simulator"]["launch"] = {"launcher": "none", "ranks": 1, "slots": 3}
    cfg["model"]["hidden_channels"] = 1
    cfg["output"]["figures"] = False
    log = logging.getLogger("zooframe.run")
    log.addHandler(caplog.handler)  # directly: the command line's handler stops it from propagating
    try:
        with caplog.at_level(logging.INFO, logger="zooframe.run"):
            result = zooframe.run(cfg, output=tmp_path / "run", registry=registry())
    finally:
        log.removeHandler(caplog.handler)
    facts = {"launcher": "none", "ranks": 1, "slots": 3, "slots_from": "launch.slots", "runs_fit": 3,
             "runs_at_once": 1}
    assert result.summary["simulator"] == facts
    assert json.loads((tmp_path / "run" / "summary.json").read_text())["simulator"] == facts
    assert ("external-batch: simulator: launcher none, ranks 1, slots 3, slots_from launch.slots, runs_fit 3, "
            "runs_at_once 1") in caplog.messages


DOCS = Path(__file__).resolve().parents[3] / "docs" / "cluster"


@pytest.mark.slow
def test_the_cluster_pages_flux_script_is_checked_as_far_as_it_can_be_without_flux():
    """No Flux here: the script parses, the Ray and zooframe options it gives exist, and the config with the flux
    launcher validates (the launcher's argv and the allocation reader are tested above)."""
    from ray.scripts.scripts import start

    script = (DOCS / "zooframe-flux.sh").read_text()
    assert subprocess.run(["bash", "-n", str(DOCS / "zooframe-flux.sh")]).returncode == 0
    assert set(re.findall(r"\bflux (\w+)", script)) <= {"batch", "exec", "run", "resource"}
    ray_options = {opt for param in start.params for opt in param.opts}
    for line in re.findall(r"ray start (.*?)&", script.replace("\\\n", " "), re.S):
        assert {o.split("=")[0] for o in line.split() if o.startswith("--")} <= ray_options, line
    run_options = re.findall(r"zooframe run \S+ (--\w+)", script)
    run_parser = build_parser()._subparsers._group_actions[0].choices["run"]
    assert run_options == ["--quiet"] and "--quiet" in run_parser._option_string_actions
    cfg = json.loads((DOCS / "burgers_mpi.json").read_text())
    cfg["simulator"]["launch"] = {"launcher": "flux run", "ranks": 2}
    assert zooframe.load_config(cfg, registry()).simulator.launch.launcher == "flux run"
