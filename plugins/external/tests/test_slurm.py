"""With a real one-node Slurm (2 CPUs; slurm_cluster.py starts it, and skips with the reason where it cannot):
the allocation reader inside jobs, the cluster page's sbatch script running zooframe with Ray and the MPI
example as srun steps packed into the allocation, and a job cancelled mid-run that resumes."""

import json
import os
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest
from slurm_cluster import MARK, SlurmCluster, unavailable

from zooframe_external import launch
from zooframe_external.reaper import processes_with

pytestmark = [pytest.mark.slow, pytest.mark.skipif(not sys.platform.startswith("linux"), reason="a Linux cluster")]

DOCS = Path(__file__).resolve().parents[3] / "docs" / "cluster"
BIN = os.path.dirname(sys.executable)  # python, zooframe, ray, mpiexec of this environment


@pytest.fixture(scope="module")
def slurm(tmp_path_factory):
    why = unavailable()
    if why:
        pytest.skip(why)
    cluster = SlurmCluster(tmp_path_factory.mktemp("slurm"))
    try:
        cluster.start()
        cluster.env = {k: v for k, v in cluster.env.items() if k != "ZOOFRAME_DISABLE_EXTERNAL_PLUGINS"}
        cluster.env["PATH"] = BIN + os.pathsep + cluster.env.get("PATH", "")
        yield cluster
    finally:
        cluster.stop()


def ranks_alive(cluster: SlurmCluster, program: str) -> list[dict[str, str]]:
    """The environment of each live rank of ``program`` that the cluster's jobs started."""
    found = []
    for pid in processes_with(f"{MARK}={cluster.mark}".encode()):
        try:
            argv0 = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0].decode()
            env = Path(f"/proc/{pid}/environ").read_bytes().decode(errors="replace").split("\0")
        except OSError:
            continue
        if argv0 == program:
            found.append(dict(v.split("=", 1) for v in env if "=" in v))
    return found


class RankCounter:
    """Counts the live ranks of ``program`` while a job runs, and which MPI job (PMI_JOBID) each belongs to."""

    def __init__(self, cluster, program):
        self.counts, self.jobs, self._done = [], {}, threading.Event()
        self._thread = threading.Thread(target=self._count, args=(cluster, program), daemon=True)
        self._thread.start()

    def _count(self, cluster, program):
        while not self._done.is_set():
            ranks = ranks_alive(cluster, program)
            self.counts.append(len(ranks))
            for env in ranks:
                self.jobs.setdefault(env.get("PMI_JOBID"), set()).add((env.get("PMI_RANK"), env.get("PMI_SIZE")))
            time.sleep(0.01)

    def stop(self):
        self._done.set()
        self._thread.join()


def mpi_config(mpi_solver, reference_file, **execution) -> dict:
    cfg = json.loads((DOCS / "burgers_mpi.json").read_text())
    cfg["simulator"]["command"][0] = mpi_solver
    cfg["simulator"]["spatial_shape"] = [16]
    cfg["reference"]["path"] = str(reference_file)
    cfg["training"].update(steps=2, unroll=1, cases_per_step=1)
    cfg["evaluation"]["steps"] = 1
    cfg["model"]["hidden_channels"] = 1
    cfg["execution"] = {"threads": 1, **execution}
    cfg["output"]["figures"] = False
    return cfg


def test_the_allocation_reader_inside_jobs_of_different_sizes(slurm, tmp_path):
    reader = tmp_path / "slots.py"  # loads launch.py alone: no torch to import in each job
    reader.write_text(f"import importlib.util, json, sys\n"
                      f"spec = importlib.util.spec_from_file_location('launch', {launch.__file__!r})\n"
                      "m = sys.modules['launch'] = importlib.util.module_from_spec(spec)\n"
                      "spec.loader.exec_module(m)\n"
                      "s = m.read_slots(m.LaunchConfig(launcher='srun'))\n"
                      "print(json.dumps([s.cpus, s.nodes, s.source]))\n")
    jobs = {n: slurm.sbatch(f"--ntasks={n}", f"--output={tmp_path / f'{n}.out'}", "--wrap", f"python {reader}")
            for n in (1, 2)}
    for n, job in jobs.items():
        slurm.wait_ended(job)
        cpus, nodes, source = json.loads((tmp_path / f"{n}.out").read_text().splitlines()[-1])
        assert (cpus, nodes) == (n, 1) and source == f"Slurm job {job} (SLURM_JOB_CPUS_PER_NODE={n})"


def test_the_cluster_pages_sbatch_script_trains_with_ray_and_srun_steps(slurm, mpi_solver, reference_file, tmp_path):
    """Ray head and one worker node, the driver, and each simulator call an srun step of 2 ranks (one MPI job)
    in an allocation of 2 CPUs: the live ranks never exceed them."""
    cfg = mpi_config(mpi_solver, reference_file, backend="ray", workers=1, ray={"address": "auto"})
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    ray_tmp = tempfile.mkdtemp(prefix="zr")  # short: Ray's socket paths must fit in 107 characters
    try:
        env = {**slurm.env, "RAY_TMPDIR": ray_tmp}
        job = slurm.sbatch("--nodes=1", "--ntasks-per-node=2", f"--chdir={tmp_path}", f"--output={tmp_path / 'job.out'}",
                           str(DOCS / "zooframe-slurm.sh"), "config.json", "--output", "run", env=env)
        counter = RankCounter(slurm, mpi_solver)
        try:
            slurm.wait_ended(job, timeout=300)
        finally:
            counter.stop()
    finally:
        shutil.rmtree(ray_tmp, ignore_errors=True)
    log = (tmp_path / "job.out").read_text()
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["status"] == "completed", log[-3000:]
    assert summary["simulator"] == {"launcher": "srun", "ranks": 2, "slots": 2, "runs_fit": 1, "runs_at_once": 1,
                                    "slots_from": f"Slurm job {job} (SLURM_JOB_CPUS_PER_NODE=2)"}
    assert "burgers-mpi: simulator: launcher srun, ranks 2, slots 2" in log
    print(f"live ranks, {len(counter.counts)} counts: peak {max(counter.counts)}, MPI jobs seen {len(counter.jobs)}")
    assert 0 < max(counter.counts) <= 2
    assert all(ranks == {("0", "2"), ("1", "2")} for ranks in counter.jobs.values() if len(ranks) == 2)
    assert any(len(ranks) == 2 for ranks in counter.jobs.values())  # both ranks of one run in one MPI job
    assert ranks_alive(slurm, mpi_solver) == [] and slurm.run("squeue", "-h").stdout.strip() == ""


def test_a_cancelled_job_is_interrupted_and_resumes(slurm, mpi_solver, reference_file, tmp_path):
    cfg = mpi_config(mpi_solver, reference_file)  # the local backend: each call an srun step
    cfg["training"]["steps"] = 5
    cfg["output"]["checkpoint_every"] = 1
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    run = ["--ntasks=2", f"--chdir={tmp_path}", "--wrap", "zooframe run config.json --output run --quiet"]
    job = slurm.sbatch(f"--output={tmp_path / 'job.out'}", *run)
    metrics = tmp_path / "run" / "metrics.jsonl"
    slurm._wait(lambda: metrics.is_file() and len(metrics.read_text().splitlines()) >= 1, 120, "a step")
    slurm.run("scancel", job, check=True)
    slurm.wait_ended(job)
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["status"] == "interrupted", (summary, (tmp_path / "job.out").read_text()[-3000:])
    assert 1 <= summary["checkpoint_step"] < 5 and (tmp_path / "run" / "checkpoint.pt").is_file()
    assert ranks_alive(slurm, mpi_solver) == [] and slurm.run("squeue", "-h").stdout.strip() == ""
    job = slurm.sbatch(f"--output={tmp_path / 'resumed.out'}", *run[:-1], run[-1] + " --resume")
    slurm.wait_ended(job)
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["status"] == "completed", (tmp_path / "resumed.out").read_text()[-3000:]
    assert summary["resumed_from_step"] >= 1 and summary["steps"] == 5
