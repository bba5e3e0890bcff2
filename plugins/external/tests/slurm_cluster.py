"""A one-node Slurm cluster in a temporary folder, for the tests: ``munged``, ``slurmctld`` and
``slurmd`` started by hand (as root), and stopped by pid whatever happens.

Debian's ``slurm-wlm`` and ``munge`` are installed with apt-get when they are missing and the
machine allows it (root, apt-get); otherwise :func:`unavailable` says why, and the tests skip
with that reason. ``python slurm_cluster.py`` starts one and waits, to try things by hand.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

DAEMONS = ("munged", "mungekey", "slurmctld", "slurmd", "sbatch", "srun", "squeue", "scancel")
PACKAGES = ("slurm-wlm", "munge")
MARK = "ZOOFRAME_TEST_SLURM"  # in the daemons' environment, which their job steps' slurmstepd inherit
CPUS = 2


def _which(name: str) -> str | None:
    return shutil.which(name, path=os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/sbin"]))


def unavailable() -> str | None:
    """Why no cluster can be started here (None: it can), installing the packages first when allowed."""
    if not sys.platform.startswith("linux"):
        return "a Slurm cluster is started on Linux only"
    if os.geteuid() != 0:
        return "starting a Slurm cluster needs root (slurmd runs the jobs as their users)"
    missing = [d for d in DAEMONS if _which(d) is None]
    if missing and _which("apt-get"):
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        install = [_which("apt-get"), "install", "-y", "-q", "--no-install-recommends", *PACKAGES]
        if subprocess.run(install, env=env, capture_output=True).returncode != 0:
            subprocess.run([_which("apt-get"), "update", "-q"], env=env, capture_output=True)
            subprocess.run(install, env=env, capture_output=True)
        missing = [d for d in DAEMONS if _which(d) is None]
    if missing:
        return (f"no {', '.join(missing)}: install Debian's {' and '.join(PACKAGES)} (apt-get install "
                f"{' '.join(PACKAGES)}) to run the Slurm tests")
    return None


def _free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


class SlurmCluster:
    """One node (this host, ``CPUS`` CPUs), one partition. ``env``: what a client command needs."""

    def __init__(self, folder: Path):
        self.folder = folder
        self.host = socket.gethostname().split(".")[0]
        self.mark = uuid.uuid4().hex
        self.daemons: list[subprocess.Popen] = []
        self.conf = folder / "slurm.conf"
        self.munge_socket = folder / "munge" / "munge.socket"
        self.env = {**os.environ, "SLURM_CONF": str(self.conf), MARK: self.mark}
        for name in [k for k in self.env if k.startswith(("SLURM_", "SBATCH_", "SRUN_")) and k != "SLURM_CONF"]:
            del self.env[name]  # a cluster of its own, even inside another one's job

    def write_config(self) -> None:
        f = self.folder
        for sub in ("state", "spool", "munge", "log"):
            (f / sub).mkdir(mode=0o700, exist_ok=True)
        ctld, slurmd = _free_ports(2)
        self.conf.write_text(f"""\
ClusterName=zooframe-test
SlurmctldHost={self.host}
SlurmUser=root
SlurmdUser=root
SlurmctldPort={ctld}
SlurmdPort={slurmd}
AuthType=auth/munge
AuthInfo=socket={self.munge_socket}
CredType=cred/munge
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SchedulerType=sched/builtin
MpiDefault=none
ReturnToService=2
KillWait=10
MessageTimeout=20
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
StateSaveLocation={f / 'state'}
SlurmdSpoolDir={f / 'spool'}
SlurmctldPidFile={f / 'slurmctld.pid'}
SlurmdPidFile={f / 'slurmd.pid'}
SlurmctldLogFile={f / 'log' / 'slurmctld.log'}
SlurmdLogFile={f / 'log' / 'slurmd.log'}
NodeName={self.host} CPUs={CPUS} State=UNKNOWN
PartitionName=test Nodes={self.host} Default=YES MaxTime=INFINITE State=UP
""")

    def _daemon(self, argv: list[str]) -> None:
        self.daemons.append(subprocess.Popen(argv, env=self.env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                             stderr=open(self.folder / "log" / f"{Path(argv[0]).name}.err", "wb"),
                                             start_new_session=True))

    def start(self, timeout: float = 60) -> None:
        """The daemons, in the foreground of processes of this one's, until the node takes jobs."""
        self.write_config()
        key = self.folder / "munge" / "munge.key"
        subprocess.run([_which("mungekey"), "--create", "--keyfile", str(key)], check=True, capture_output=True)
        self._daemon([_which("munged"), "--foreground", "--force", "--key-file", str(key), "--socket",
                      str(self.munge_socket), "--pid-file", str(self.folder / "munge" / "munged.pid"),
                      "--seed-file", str(self.folder / "munge" / "munged.seed"), "--log-file",
                      str(self.folder / "log" / "munged.log")])
        self._wait(lambda: self.munge_socket.exists(), 10, "munged")
        self._daemon([_which("slurmctld"), "-D", "-i", "-f", str(self.conf)])
        self._daemon([_which("slurmd"), "-D", "-f", str(self.conf)])
        self._wait(lambda: self.run("sinfo", "-h", "-o", "%T").stdout.strip() == "idle", timeout, "an idle node")

    def _wait(self, condition, timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while not condition():
            dead = [p.args[0] for p in self.daemons if p.poll() is not None]
            if dead or time.monotonic() > deadline:
                logs = "\n".join(f"--- {p.name}\n{p.read_text()[-1500:]}" for p in sorted((self.folder / "log").iterdir()))
                raise RuntimeError(f"the Slurm test cluster did not come up: waited for {what}"
                                   f"{'; ended: ' + ', '.join(dead) if dead else ''}\n{logs}")
            time.sleep(0.2)

    def run(self, *argv: str, check: bool = False, **kwargs) -> subprocess.CompletedProcess:
        """A client command (sinfo, sbatch, squeue, ...) against this cluster."""
        return subprocess.run([_which(argv[0]), *argv[1:]], env=kwargs.pop("env", self.env), capture_output=True,
                              text=True, check=check, **kwargs)

    def sbatch(self, *argv: str, env: dict | None = None) -> str:
        """Submit a job; its id."""
        done = self.run("sbatch", "--parsable", *argv, env=env or self.env)
        if done.returncode:
            raise RuntimeError(f"sbatch {' '.join(argv)} failed: {done.stderr.strip()}")
        return done.stdout.strip().split(";")[0]

    def state(self, job: str) -> str | None:
        """The job's state while it is queued or running (None: it has ended)."""
        out = self.run("squeue", "-h", "-j", job, "-o", "%T").stdout.strip()
        return out or None

    def wait_ended(self, job: str, timeout: float = 120) -> None:
        self._wait(lambda: self.state(job) is None, timeout, f"job {job} to end")

    def stop(self) -> None:
        """Cancel what still runs, then stop each daemon by its pid; what the jobs left (steps, tasks: they carry
        the mark) is killed too."""
        from zooframe_external.reaper import kill_processes_with

        try:
            jobs = self.run("squeue", "-h", "-o", "%i", timeout=20).stdout.split() if len(self.daemons) == 3 else []
            if jobs:
                self.run("scancel", "--quiet", *jobs, timeout=20)
        except (OSError, subprocess.SubprocessError):
            pass
        for proc in self.daemons:
            if proc.poll() is None:
                proc.terminate()
        deadline = time.monotonic() + 5
        for proc in self.daemons:
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        kill_processes_with(f"{MARK}={self.mark}".encode())


if __name__ == "__main__":
    import tempfile

    why = unavailable()
    if why:
        sys.exit(why)
    cluster = SlurmCluster(Path(tempfile.mkdtemp(prefix="slurm-")))
    try:
        cluster.start()
        print(f"export SLURM_CONF={cluster.conf}  # Ctrl-C stops the cluster")
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        cluster.stop()
