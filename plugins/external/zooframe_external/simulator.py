"""Any executable as zooframe's black-box step, exchanging ``.npy`` files with it.

The ``external`` simulator writes each step's states to a fresh work directory, runs (or asks) a
command, and reads the new states back. The command is given as an argv list and is never run
through a shell. There are three modes:

``batch`` (default)
    One run of the command per step call, for all B rows at once.
``case``
    One run per row (``rows`` = 1), up to ``max_processes`` at once: for a code that handles a
    single state per run.
``persistent``
    One long-lived process, started with the command on the first step, that answers requests
    on stdin/stdout (line-delimited JSON): for a code with an expensive start-up.

File protocol (format version 1)
--------------------------------
Per call (a row in ``case`` mode, a request in ``persistent`` mode) zooframe makes a fresh work
directory holding

``state.npy``
    the states ``[B, C, *S]``, ``dtype`` (float64 unless configured float32), C order, little-endian
``params.npy``
    the case parameters ``[B, P]`` float64, one row per state, columns as ``parameter_names``
``manifest.json``
    ``{"format_version": 1, "rows": B, "shape": [B, C, *S], "dtype": "float64",
    "channels": [...], "parameter_names": [...], "case_names": [...], "seed": 0,
    "state": "state.npy", "params": "params.npy", "output": "output.npy"}``

and the code writes ``output.npy``: the states one step later, of the same shape, float64 or
float32. The file names are always these in format version 1; the manifest repeats them.

In ``batch`` and ``case`` mode the command runs with the work directory as its current
directory (or in ``cwd``, when configured), with the environment variable ``ZOOFRAME_WORKDIR``
set to the work directory, and with every ``{workdir}`` in its arguments replaced by it. Its
stdout and stderr go to ``stdout.txt`` and ``stderr.txt`` in the work directory. It must exit
with one of ``allowed_return_codes`` within ``timeout_s``.

In ``persistent`` mode zooframe writes one line per request to the process's stdin,
``{"workdir": "/abs/path", "manifest": "manifest.json"}``, and the process answers, after
writing ``output.npy`` into that directory, with one line on stdout: ``{"ok": true}`` or
``{"ok": false, "error": "..."}``, flushing stdout. Other stdout lines (a banner) are ignored.
Each request must be answered within ``timeout_s`` (the first one includes the start-up). A
process that runs past it is stopped, and one that dies is a crash; either way the next call
starts a new one. The process should exit when its stdin is closed; it is stopped after a grace
period otherwise. Its stderr is drained into a buffer whose last lines go into error messages.
``ZOOFRAME_WORKDIR`` and ``{workdir}`` name the session directory the request directories are
made in.

With a ``launch`` section (:mod:`zooframe_external.launch`) each run, and the persistent process,
is started under an MPI launcher (``mpiexec``, ``srun``, ``flux run``) with ``launch.ranks`` ranks:
the launcher's argv goes before ``command``, which stays the program. The runs at once times the
ranks must fit in the slots of the allocation or machine, a config error otherwise. A persistent MPI
code reads each request on rank 0 and broadcasts it.

Faults are raised as the classes of :mod:`zooframe.faults`: a start failure or a return code
not allowed (or an ``{"ok": false}`` answer) as :class:`SimulatorCrashed`, a run past
``timeout_s`` as :class:`SimulatorTimeout`, a missing or unreadable ``output.npy`` as
:class:`SimulatorOutputError`, a wrong shape or dtype as :class:`SimulatorShapeError`, NaN or Inf
as :class:`SimulatorNonFinite`. Each message names the command, the last lines of its stderr,
and the work directory. Work directories are deleted after every call, failed ones included,
unless ``keep_workdir`` is set. A program that is not there or not executable, a ``cwd`` that is no
directory, a ``workdir_root`` that cannot be made or written in, and a NUL character in an argument,
a path or an environment value are no faults but configuration errors, raised when the simulator is
built: ``zooframe validate`` reports them, and a run does not start.

Processes
---------
Every run, and the persistent process, starts in a session of its own (a terminal's Ctrl-C reaches
zooframe, which decides), with ``ZOOFRAME_EXTERNAL_TREE`` in its environment: a marker unique to the
step call (batch and case mode) or to the persistent process, which whatever the solver starts
inherits, whether it stays in the solver's process group or leaves it with ``setsid``. A call's
processes end with it, however it ends (output, fault, timeout, Ctrl-C): each run's process group is
killed as the run ends, and on Linux every process that carries the step's marker when the step call
ends (one scan of ``/proc``, about 0.3 ms per 100 processes on the machine). Those of a persistent
process end when it is stopped (``close``, a restart, Ctrl-C during a request). Ctrl-C (or SIGTERM,
SIGHUP, which zooframe's command line turns into it) during a case-mode step kills the running rows
at once and cancels the rest.

When zooframe ends, however it ends (``kill -9`` too), a reaper ends what is left: on Linux, the
first solver a process starts also starts a small process (:mod:`zooframe_external.reaper`), in a
session of its own, that waits for the end of a pipe only the zooframe process holds, then kills
every process with that process's markers (read from ``/proc/<pid>/environ``) and deletes its
session directories: they are removed then, not by a later run, which could not tell a dead owner's
folder from that of a live one on another machine sharing ``workdir_root``. Why not the others:
``PR_SET_PDEATHSIG`` fires when the *thread* that started the child ends (case mode's pool threads,
any thread that first stepped a persistent process) and reaches the child only, not what it started;
``PR_SET_CHILD_SUBREAPER`` on zooframe would make it the parent of every orphan in the process tree
(the process backend's too), which it must then reap, and dies with it on ``kill -9``; cgroups need
a delegated hierarchy that a user's process seldom has. Limits: a process that clears its
environment (``env -i``) or runs as another user is not found, and a reaper that is itself killed
(``kill -9`` of its pid: no terminal or group signal reaches it) does nothing. Elsewhere (no
``/proc``) only the process groups are killed, at each run's end; a killed zooframe leaves its
solvers and session directory. ``keep_workdir`` keeps the directories in every case.

Relative paths: a relative program path (``./solver``, ``bin/solver``) is made absolute against
the directory zooframe runs in; other arguments reach the program unchanged, so a relative file
argument (``examples/solver.py``) is seen from the program's own current directory, the work
directory unless ``cwd`` is set.
"""

from __future__ import annotations

import itertools
import json
import os
import queue
import secrets
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import warnings
import weakref
from collections import deque
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from pydantic import Field, PositiveInt, field_validator

from zooframe import Case, PluginConfig, Simulator, StateSpec, ZooframeError
from zooframe.execution.waiting import WAKE_S, wait_for
from zooframe.faults import (
    SimulatorCrashed,
    SimulatorFault,
    SimulatorNonFinite,
    SimulatorOutputError,
    SimulatorShapeError,
    SimulatorTimeout,
)

from . import launch, reaper
from .launch import LaunchConfig, launcher_argv

FORMAT_VERSION = 1
STATE, PARAMS, OUTPUT, MANIFEST = "state.npy", "params.npy", "output.npy", "manifest.json"
STDOUT, STDERR = "stdout.txt", "stderr.txt"
PLACEHOLDER = "{workdir}"
WORKDIR_ENV = "ZOOFRAME_WORKDIR"
TREE_ENV = "ZOOFRAME_EXTERNAL_TREE"  # the marker every solver and whatever it starts carries
LINUX = sys.platform.startswith("linux") and os.path.isdir("/proc")
TAIL_LINES, TAIL_CHARS = 20, 2000
STOP_GRACE_S = 2.0  # for a persistent process to exit after its stdin closes
# np.load parses a .npy header with ast.literal_eval, whose recursion-depth counter CPython 3.11 keeps per
# interpreter, not per thread: case mode's threads reading at once failed now and then with "SystemError: AST
# constructor recursion depth mismatch" (python/cpython#106905). Reading is fast; one reader at a time.
_NPY_READ = threading.Lock()


class ExternalConfig(PluginConfig):
    kind: Literal["external"]
    command: list[str] = Field(..., min_length=1, description="argv of the solver: the program, then its arguments; "
                               "never run through a shell; every {workdir} in an argument is replaced by the call's "
                               "work directory")
    channels: list[str] = Field(..., min_length=1, description="names of the state's channels")
    spatial_shape: list[PositiveInt] = Field(..., min_length=1, description="the state's grid, e.g. [32] or [64, 32]")
    parameters: list[str] | None = Field(None, description="case parameters written to params.npy, in this order "
                                         "(default: all of the first case's, sorted by name)")
    mode: Literal["batch", "case", "persistent"] = Field(
        "batch", description="batch: one run per step for all rows; case: one run per row, max_processes at once; "
        "persistent: one long-lived process answering JSON lines on stdin/stdout")
    max_processes: int = Field(2, ge=1, description="case mode: runs at once")
    env_vars: dict[str, str] = Field(default_factory=dict, description="added to the inherited environment")
    cwd: str | None = Field(None, description="the solver's current directory (default: the call's work directory; "
                            "persistent mode: the session directory)")
    workdir_root: str | None = Field(None, description="where work directories are made (default: a fresh "
                                     "temporary directory per simulator)")
    timeout_s: float = Field(60.0, gt=0, description="limit per run (persistent mode: per request)")
    allowed_return_codes: list[int] = Field(default_factory=lambda: [0], min_length=1,
                                            description="exit codes that count as success")
    keep_workdir: bool = Field(False, description="keep every work directory (default: deleted after each call, "
                               "failed ones included)")
    dtype: Literal["float32", "float64"] = Field("float64", description="dtype of state.npy")
    launch: LaunchConfig | None = Field(None, description="run each call under an MPI launcher (mpiexec, srun, flux "
                                        "run) with this many ranks, within the slots of the allocation or machine "
                                        "(default: the command alone)")

    @field_validator("command")
    @classmethod
    def _program(cls, v: list[str]) -> list[str]:
        if not v[0].strip():
            raise ValueError("command[0] (the program) must not be empty")
        for i, arg in enumerate(v):
            _no_nul(arg, f"command[{i}]")
        return v

    @field_validator("channels")
    @classmethod
    def _unique(cls, v: list[str]) -> list[str]:
        if len(set(v)) != len(v):
            raise ValueError(f"channels repeat: {v}")
        return v

    @field_validator("env_vars")
    @classmethod
    def _env_names(cls, v: dict[str, str]) -> dict[str, str]:
        bad = [k for k in v if not k or "=" in k or "\0" in k]
        if bad:
            raise ValueError(f"invalid environment variable name(s): {bad}")
        for k, value in v.items():
            _no_nul(value, f"the value of {k}")
        return v

    @field_validator("cwd", "workdir_root")
    @classmethod
    def _path(cls, v: str | None) -> str | None:
        return v if v is None else _no_nul(v, "the path")


def _no_nul(text: str, what: str) -> str:
    if "\0" in text:
        raise ValueError(f"{what} holds a NUL character, which no program can be given: remove it")
    return text


def _unusable(folder: Path) -> str | None:
    """Why ``folder`` cannot be made or written in (None: it can)."""
    existing = folder
    try:
        while not existing.exists():
            existing = existing.parent
    except OSError as exc:
        return str(exc)
    if not existing.is_dir():
        return f"{existing} is not a directory"
    return None if os.access(existing, os.W_OK | os.X_OK) else f"{existing} is not writable"


def _config_problems(config: ExternalConfig, program: str) -> list[str]:
    """What the config names that this machine lacks: a config error before any work, never a fault that a
    fault policy would retry."""
    problems = []
    search = os.pathsep.join(os.get_exec_path({**os.environ, **config.env_vars}))  # as the start will search
    if shutil.which(program, path=search) is None:
        why = ("is not found on PATH" if os.sep not in program else
               "does not exist" if not os.path.exists(program) else "is not an executable file")
        problems.append(f"simulator.command[0]: {program} {why}; give the path of an executable, or the name of "
                        "one on PATH")
    if config.cwd is not None and not os.path.isdir(config.cwd):
        why = "is not a directory" if os.path.exists(config.cwd) else "does not exist"
        problems.append(f"simulator.cwd: {config.cwd} {why}; give an existing directory, or leave cwd out to run "
                        "each call in its work directory")
    why = config.workdir_root and _unusable(Path(config.workdir_root).absolute())
    if why:
        problems.append(f"simulator.workdir_root: {config.workdir_root} cannot be used: {why}; give a writable "
                        "directory, or leave workdir_root out for a fresh temporary one")
    return problems + _launch_problems(config, 0)[0]


def _launch_problems(config: ExternalConfig, workers: int) -> tuple[list[str], dict]:
    """What keeps the runs at once from the slots, and the facts a run states (none without ``launch``).
    ``workers``: the engine's, each with a simulator of its own (0: this one steps alone). The driver's
    simulator steps between the workers' steps, but its persistent process stays up while they step."""
    if config.launch is None:
        return [], {}
    times = f" x execution.workers {workers}" if workers > 1 else ""
    if config.mode == "case":
        runs, what = config.max_processes * max(workers, 1), f"case mode's max_processes {config.max_processes}{times}"
    elif config.mode == "persistent" and workers:
        runs, what = workers + 1, f"a persistent process in each of execution.workers {workers} and in the driver"
    else:
        runs, what = max(workers, 1), f"1 per simulator in {config.mode} mode{times}"
    return launch.placement(config.launch, runs, what, {**os.environ, **config.env_vars})


def _tail(text: str) -> str:
    lines = text.rstrip().splitlines()[-TAIL_LINES:]
    return "\n".join(lines)[-TAIL_CHARS:]


def _read_tail(path: Path) -> str:
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - 8 * TAIL_CHARS))
            return _tail(f.read().decode("utf-8", "replace"))
    except OSError:
        return ""


# --- process trees: each ended with its call, all of them with this process ----------------------
_owner_lock = threading.Lock()
_owner: str | None = None  # "<pid>-<random>:", how every marker this process gives begins
_reaper_fd: int | None = None  # the write end of the pipe this process's reaper waits on (Linux)
_trees = itertools.count()


def _start_reaper(entry: str) -> int | None:
    read, write = os.pipe()  # neither end is inherited through exec: this process alone holds the write end
    try:
        os.posix_spawn(sys.executable, [sys.executable, "-I", "-S", reaper.__file__, entry], os.environ,
                       file_actions=[(os.POSIX_SPAWN_DUP2, read, 0)], setsid=True)
    except (OSError, NotImplementedError) as exc:
        os.close(write)
        warnings.warn(f"the external simulator could not start its reaper ({exc}): solvers and work directories "
                      "may outlive a zooframe process that is killed", RuntimeWarning, stacklevel=2)
        return None
    finally:
        os.close(read)
    return write


def _own() -> str:
    """How this process's markers begin; the first call starts its reaper. Call with _owner_lock held."""
    global _owner, _reaper_fd
    if _owner is None:
        _owner = f"{os.getpid()}-{secrets.token_hex(4)}:"
        if LINUX:
            _reaper_fd = _start_reaper(f"{TREE_ENV}={_owner}")
    return _owner


def _new_marker() -> str:
    """A marker for one process tree."""
    with _owner_lock:
        return f"{_own()}{next(_trees)};"


def _remove_when_this_process_ends(folder: Path) -> None:
    """Have the reaper delete ``folder`` (if it is still there) once this process has ended, however."""
    with _owner_lock:
        _own()
        if _reaper_fd is not None:
            os.write(_reaper_fd, os.fsencode(folder) + b"\0")


def _forget_owner() -> None:
    """In a forked child (a process-backend worker): its solvers get a reaper of its own, and its copy of
    the pipe is closed, so that the parent's reaper still sees the parent end."""
    global _owner_lock, _owner, _reaper_fd
    if _reaper_fd is not None:
        os.close(_reaper_fd)
    _owner_lock, _owner, _reaper_fd = threading.Lock(), None, None


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_owner)


def _kill_marked(marker: str) -> None:
    """Every process with ``marker``: what a solver left, in its process group or out of it (setsid)."""
    if LINUX:
        reaper.kill_processes_with(f"{TREE_ENV}={marker}".encode())


def _killpg(proc: subprocess.Popen) -> None:
    """SIGKILL ``proc``'s process group: it leads a session of its own, which outlives it while its
    children live."""
    try:
        if os.name == "posix":
            os.killpg(proc.pid, signal.SIGKILL)
        elif proc.poll() is None:
            proc.kill()
    except OSError:
        pass


def _kill(proc: subprocess.Popen) -> None:
    """Stop ``proc`` and its process group, and reap it."""
    _killpg(proc)
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        pass


class _Tree:
    """The solver processes of one step call: each carries ``marker`` in its environment, which whatever
    it starts inherits. ``stop`` kills the running ones' process groups at once (a step stopped early);
    ``end`` also kills every process with the marker, those that left their group too."""

    def __init__(self):
        self.marker = _new_marker()
        self._running: set[subprocess.Popen] = set()
        self._stopped = False
        self._lock = threading.Lock()

    def started(self, proc: subprocess.Popen) -> None:
        with self._lock:
            self._running.add(proc)
            stopped = self._stopped
        if stopped:  # started as the step was being stopped
            _killpg(proc)

    def finished(self, proc: subprocess.Popen) -> None:
        with self._lock:
            self._running.discard(proc)

    def stop(self) -> None:
        with self._lock:
            self._stopped = True
            running = list(self._running)
        for proc in running:
            _killpg(proc)

    def end(self) -> None:
        self.stop()
        _kill_marked(self.marker)


def _exit_text(rc: int) -> str:
    if rc < 0:
        try:
            name = signal.Signals(-rc).name
        except ValueError:
            name = f"signal {-rc}"
        return f"was killed by {name} (exit code {rc})"
    return f"exited with code {rc}"


class _ServerDied(Exception):
    pass


class _ServerTimeout(Exception):
    pass


class _Server:
    """A persistent solver process: requests on stdin, answers on stdout, stderr drained."""

    def __init__(self, argv: list[str], cwd: str, env: dict[str, str]):
        self.argv = argv
        self.marker = env[TREE_ENV]
        self.proc = subprocess.Popen(argv, cwd=cwd, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True, encoding="utf-8", errors="replace",
                                     bufsize=1, start_new_session=True)
        self.lines: queue.Queue[str | None] = queue.Queue()
        self.stderr: deque[str] = deque(maxlen=5 * TAIL_LINES)
        self.ignored: deque[str] = deque(maxlen=5)  # stdout lines that were no answer
        self._threads = [threading.Thread(target=self._pump_stdout, daemon=True),
                         threading.Thread(target=self._pump_stderr, daemon=True)]
        for t in self._threads:
            t.start()

    def _pump_stdout(self) -> None:
        try:
            for line in self.proc.stdout:
                self.lines.put(line)
        except (OSError, ValueError):
            pass
        finally:
            self.lines.put(None)

    def _pump_stderr(self) -> None:
        try:
            for line in self.proc.stderr:
                self.stderr.append(line.rstrip("\n"))
        except (OSError, ValueError):
            pass

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stderr_tail(self) -> str:
        return _tail("\n".join(self.stderr))

    def request(self, message: dict, timeout_s: float) -> dict:
        try:
            self.proc.stdin.write(json.dumps(message) + "\n")
            self.proc.stdin.flush()
        except (OSError, ValueError):  # a broken pipe: it is gone
            raise _ServerDied() from None
        deadline = time.monotonic() + timeout_s
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise _ServerTimeout()
            try:
                line = self.lines.get(timeout=min(remaining, WAKE_S))  # see zooframe.execution.waiting
            except queue.Empty:
                continue
            if line is None:
                raise _ServerDied()
            text = line.strip()
            if not text:
                continue
            try:
                answer = json.loads(text)
            except json.JSONDecodeError:
                answer = None
            if isinstance(answer, dict) and "ok" in answer:
                return answer
            self.ignored.append(text[:200])

    def returncode(self) -> int | None:
        """The exit code, once it has exited (waits a little for it), with stderr read to its end."""
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            return None
        self._threads[1].join(timeout=2)
        return self.proc.returncode

    def stop(self, grace_s: float = STOP_GRACE_S) -> None:
        try:
            self.proc.stdin.close()
        except (OSError, ValueError):
            pass
        try:
            self.proc.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            pass
        _kill(self.proc)
        _kill_marked(self.marker)
        for t in self._threads:
            t.join(timeout=1)
        for stream in (self.proc.stdout, self.proc.stderr):
            try:
                stream.close()
            except (OSError, ValueError):
                pass


def _stop_server(server: _Server) -> None:
    server.stop()


def _resolve_program(program: str) -> str:
    if os.path.isabs(program) or os.sep not in program and (os.altsep is None or os.altsep not in program):
        return program
    return os.path.abspath(program)


class External(Simulator):
    """An executable as the black-box step; see the module docstring for the file protocol."""

    Config = ExternalConfig
    differentiable = False

    def __init__(self, config: ExternalConfig, device: str | torch.device = "cpu"):
        super().__init__(config, device)
        self.program = _resolve_program(config.command[0])  # seen from where zooframe runs
        self.launcher = launcher_argv(config.launch) if config.launch is not None else []
        problems = _config_problems(config, self.program)
        if problems:
            raise ZooframeError("; ".join(problems))
        self.restarts = 0  # persistent processes started again after one died or hung
        self._runtime()

    def _runtime(self) -> None:
        """What cannot travel to a worker: made again after unpickling."""
        self._lock = threading.Lock()
        self._server: _Server | None = None
        self._server_finalizer: weakref.finalize | None = None
        self._session: Path | None = None

    def __getstate__(self):
        state = self.__dict__.copy()
        for key in ("_lock", "_server", "_server_finalizer", "_session"):
            state.pop(key, None)
        return state

    def __setstate__(self, state):
        self.__dict__.update(state)
        self._runtime()

    @property
    def state_spec(self) -> StateSpec:
        return StateSpec(tuple(self.config.channels), tuple(self.config.spatial_shape))

    def run_facts(self, workers: int = 0) -> dict:
        """With ``launch``: the launcher, ranks, slots (and where they were read) and runs at once."""
        problems, facts = _launch_problems(self.config, workers)
        if problems:
            raise ZooframeError("; ".join(problems))
        return facts

    # --- lifetime -----------------------------------------------------------------------------
    def close(self) -> None:
        """Stop the persistent process (if any) and delete the session directory (unless
        ``keep_workdir``). The simulator stays usable: the next step starts what it needs."""
        with self._lock:
            self._stop_server()
            if self._session is not None and not self.config.keep_workdir:
                shutil.rmtree(self._session, ignore_errors=True)
            self._session = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def _stop_server(self, grace_s: float = STOP_GRACE_S) -> None:
        if self._server_finalizer is not None and self._server_finalizer.detach() is not None:
            self._server.stop(grace_s)  # the finalizer stops it on garbage collection and at exit instead
        self._server, self._server_finalizer = None, None

    def _session_dir(self) -> Path:
        if self._session is None:
            if self.config.workdir_root is not None:
                root = Path(self.config.workdir_root).absolute()
                root.mkdir(parents=True, exist_ok=True)
                self._session = Path(tempfile.mkdtemp(prefix="session-", dir=root))
            else:
                self._session = Path(tempfile.mkdtemp(prefix="zooframe-external-"))
            if not self.config.keep_workdir:
                weakref.finalize(self, shutil.rmtree, str(self._session), True)
                _remove_when_this_process_ends(self._session)
        return self._session

    # --- the step -----------------------------------------------------------------------------
    def step(self, state: torch.Tensor, cases: Sequence[Case], seed: int) -> torch.Tensor:
        expected = (len(cases), *self.state_spec.shape)
        if tuple(state.shape) != expected:
            raise SimulatorShapeError(f"external simulator: got a state of shape {tuple(state.shape)} for "
                                      f"{len(cases)} case(s); expected {expected}")
        if len(cases) == 0:
            return state.clone()
        array = np.ascontiguousarray(state.detach().cpu().numpy(), dtype=self.config.dtype)
        names, params = self._parameters(cases)
        case_names = [c.name for c in cases]
        label = f"batch of {len(cases)} rows"
        if self.config.mode == "persistent":
            with self._lock:
                out = self._call(array, params, names, case_names, seed, label)
        else:
            tree = _Tree()
            try:
                with self._lock:  # made once, before case mode's threads need it (and the reaper told)
                    self._session_dir()
                if self.config.mode == "batch":
                    out = self._call(array, params, names, case_names, seed, label, tree)
                else:
                    out = self._per_case(array, params, names, case_names, seed, tree)
            finally:
                tree.end()
        return torch.as_tensor(out, device=state.device).to(state.dtype)

    def _parameters(self, cases: Sequence[Case]) -> tuple[list[str], np.ndarray]:
        names = list(self.config.parameters) if self.config.parameters is not None else sorted(cases[0].params)
        params = np.empty((len(cases), len(names)), dtype=np.float64)
        for i, case in enumerate(cases):
            missing = [n for n in names if n not in case.params]
            if missing:
                raise ZooframeError(f"external simulator: case {case.name!r} has no parameter(s) "
                                    f"{', '.join(missing)} (it has: {', '.join(sorted(case.params)) or 'none'}); "
                                    "set simulator.parameters to the ones the solver reads")
            params[i] = [float(case.params[n]) for n in names]
        return names, params

    def _per_case(self, array, params, names, case_names, seed, tree: _Tree) -> np.ndarray:
        rows = len(array)
        out = np.empty(array.shape, dtype=np.float64)
        with ThreadPoolExecutor(min(self.config.max_processes, rows), thread_name_prefix="zooframe-external") as pool:
            futures = [pool.submit(self._call, array[i:i + 1], params[i:i + 1], names, case_names[i:i + 1], seed,
                                   f"row {i} of {rows}, case {case_names[i]!r}", tree) for i in range(rows)]
            try:
                for i, future in enumerate(futures):
                    wait_for([future])  # not future.result(): see zooframe.execution.waiting
                    out[i] = future.result()[0]
            except BaseException:  # a fault, or Ctrl-C
                for future in futures:
                    future.cancel()
                tree.stop()  # the running solvers end now: the pool's shutdown does not wait them out
                raise
        return out

    # --- one call: a work directory, a run or a request, the output -----------------------------
    def _argv(self, workdir: Path) -> list[str]:
        return [*self.launcher, self.program, *(a.replace(PLACEHOLDER, str(workdir)) for a in self.config.command[1:])]

    def _env(self, workdir: Path, marker: str) -> dict[str, str]:
        return {**os.environ, **self.config.env_vars, WORKDIR_ENV: str(workdir), TREE_ENV: marker}

    def _call(self, array, params, names, case_names, seed, label, tree: _Tree | None = None) -> np.ndarray:
        """A run of the command (``tree``: the step's processes), or a request to the persistent process."""
        workdir = Path(tempfile.mkdtemp(prefix="call-", dir=self._session_dir()))
        try:
            np.save(workdir / STATE, array)
            np.save(workdir / PARAMS, params)
            manifest = {"format_version": FORMAT_VERSION, "rows": len(array), "shape": list(array.shape),
                        "dtype": self.config.dtype, "channels": list(self.config.channels),
                        "parameter_names": names, "case_names": list(case_names), "seed": int(seed),
                        "state": STATE, "params": PARAMS, "output": OUTPUT}
            (workdir / MANIFEST).write_text(json.dumps(manifest, indent=1) + "\n")
            if tree is None:
                argv, stderr = self._request(workdir, label)
            else:
                argv = self._argv(workdir)
                self._run(argv, workdir, label, tree)
                stderr = lambda: _read_tail(workdir / STDERR)  # noqa: E731
            return self._output(workdir, array.shape, case_names, argv, label, stderr)
        finally:
            if not self.config.keep_workdir:
                shutil.rmtree(workdir, ignore_errors=True)

    def _fault(self, cls: type[SimulatorFault], label: str, what: str, argv: list[str], workdir: Path | None,
               stderr: str, more: str = "") -> SimulatorFault:
        lines = [f"external simulator ({self.config.mode} mode, {label}): {what}", f"  command: {shlex.join(argv)}"]
        if workdir is not None:
            kept = ("kept" if self.config.keep_workdir else
                    "deleted after the call; set simulator.keep_workdir to true to keep it")
            lines.append(f"  workdir: {workdir} ({kept})")
        if more:
            lines.append(f"  {more}")
        tail = _tail(stderr)
        lines.append("  stderr, last lines:" + ("\n" + "\n".join("    " + line for line in tail.splitlines())
                                                if tail else " (empty)"))
        return cls("\n".join(lines))

    def _run(self, argv: list[str], workdir: Path, label: str, tree: _Tree) -> None:
        cwd = self.config.cwd or str(workdir)
        with open(workdir / STDOUT, "wb") as out, open(workdir / STDERR, "wb") as err:
            try:
                proc = subprocess.Popen(argv, cwd=cwd, env=self._env(workdir, tree.marker), stdin=subprocess.DEVNULL,
                                        stdout=out, stderr=err, start_new_session=True)
            except OSError as exc:
                raise self._fault(SimulatorCrashed, label, f"could not start ({type(exc).__name__}: {exc})", argv,
                                  workdir, "") from None
            tree.started(proc)
            try:
                rc = proc.wait(timeout=self.config.timeout_s)
            except subprocess.TimeoutExpired:
                rc = None
            finally:  # Ctrl-C too
                _kill(proc)  # what it left running in its process group ends with the call
                tree.finished(proc)
        if rc is None:
            raise self._fault(SimulatorTimeout, label, f"ran past timeout_s ({self.config.timeout_s:g} s) and was "
                              "stopped", argv, workdir, _read_tail(workdir / STDERR))
        if rc not in self.config.allowed_return_codes:
            stderr = _read_tail(workdir / STDERR)
            stdout = _read_tail(workdir / STDOUT)
            raise self._fault(SimulatorCrashed, label, f"{_exit_text(rc)} (allowed: "
                              f"{', '.join(map(str, self.config.allowed_return_codes))})", argv, workdir, stderr,
                              f"stdout, last line: {stdout.splitlines()[-1][:200]}" if stdout and not stderr else "")

    def _request(self, workdir: Path, label: str):
        session = self._session_dir()
        argv = self._argv(session)
        server = self._server
        if server is not None and not server.alive():  # it died between calls: start a new one
            rc = server.returncode()
            warnings.warn(f"the persistent external simulator {_exit_text(rc) if rc is not None else 'stopped'} "
                          f"between calls and is started again; its stderr ended with:\n{server.stderr_tail()}",
                          RuntimeWarning, stacklevel=3)
            self._stop_server(grace_s=0)
            self.restarts += 1
            server = None
        if server is None:
            try:
                server = _Server(argv, self.config.cwd or str(session), self._env(session, _new_marker()))
            except OSError as exc:
                raise self._fault(SimulatorCrashed, label, f"could not start the persistent process "
                                  f"({type(exc).__name__}: {exc})", argv, workdir, "") from None
            self._server = server
            self._server_finalizer = weakref.finalize(self, _stop_server, server)
        try:
            answer = server.request({"workdir": str(workdir), "manifest": MANIFEST}, self.config.timeout_s)
        except _ServerTimeout:
            self._stop_server(grace_s=0)
            self.restarts += 1
            raise self._fault(SimulatorTimeout, label, f"the persistent process gave no answer within timeout_s "
                              f"({self.config.timeout_s:g} s); it was stopped, and the next call starts a new one",
                              argv, workdir, server.stderr_tail()) from None
        except _ServerDied:
            rc = server.returncode()
            self._stop_server(grace_s=0)
            self.restarts += 1
            ignored = f"stdout lines that were no answer: {list(server.ignored)}" if server.ignored else ""
            raise self._fault(SimulatorCrashed, label, f"the persistent process "
                              f"{_exit_text(rc) if rc is not None else 'closed its stdout'} during a request; the "
                              "next call starts a new one", argv, workdir, server.stderr_tail(), ignored) from None
        except BaseException:  # Ctrl-C: its answer to this request must not be taken for the next one's
            self._stop_server(grace_s=0)
            raise
        if answer.get("ok") is not True:
            raise self._fault(SimulatorCrashed, label, f"the persistent process answered with an error: "
                              f"{str(answer.get('error', answer))[:TAIL_CHARS]}", argv, workdir, server.stderr_tail())
        return argv, server.stderr_tail

    def _output(self, workdir: Path, shape: tuple[int, ...], case_names: list[str], argv: list[str], label: str,
                stderr) -> np.ndarray:
        path = workdir / OUTPUT
        if not path.is_file():
            raise self._fault(SimulatorOutputError, label, f"wrote no {OUTPUT}", argv, workdir, stderr())
        try:
            with _NPY_READ:
                out = np.load(path, allow_pickle=False)
        except Exception as exc:  # truncated, not .npy, an object array
            raise self._fault(SimulatorOutputError, label, f"{OUTPUT} cannot be read as a .npy file "
                              f"({type(exc).__name__}: {exc})", argv, workdir, stderr()) from None
        if not isinstance(out, np.ndarray):  # an .npz archive
            out.close()
            raise self._fault(SimulatorOutputError, label, f"{OUTPUT} is an .npz archive, not a .npy array", argv,
                              workdir, stderr())
        if out.dtype.kind != "f" or out.dtype.itemsize not in (4, 8):
            raise self._fault(SimulatorShapeError, label, f"{OUTPUT} has dtype {out.dtype}; expected float64 or "
                              "float32", argv, workdir, stderr())
        if out.shape != tuple(shape):
            raise self._fault(SimulatorShapeError, label, f"{OUTPUT} has shape {list(out.shape)}; expected "
                              f"{list(shape)} (rows, channels {', '.join(self.config.channels)}, grid "
                              f"{list(self.config.spatial_shape)})", argv, workdir, stderr())
        finite = np.isfinite(out).reshape(len(out), -1).all(axis=1)
        if not finite.all():
            bad = np.flatnonzero(~finite)
            rows = ", ".join(f"{i} ({case_names[i]})" for i in bad[:5]) + (" ..." if len(bad) > 5 else "")
            raise self._fault(SimulatorNonFinite, label, f"{OUTPUT} holds NaN or Inf in {len(bad)} of {len(out)} "
                              f"row(s): {rows}", argv, workdir, stderr())
        return out
