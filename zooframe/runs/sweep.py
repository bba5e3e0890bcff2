"""``zooframe sweep``: search a config's settings with Optuna, selecting on a validation split.

Each trial is a run (:func:`zooframe.run`) into ``SWEEP/trials/NNNN`` of the config with the
trial's values set, trained on the training cases less the validation ones and evaluated on the
validation cases only; the test split is touched once, at the end, by the best trial. Optuna's
study lives in ``SWEEP/study.journal``, a journal file: every process appends its trials to it
under a file lock, so several processes (``--jobs``, Ray workers on nodes that share the folder)
share one study, and a sweep stopped at any point continues from it with the same command.

Why a journal file rather than SQLite: SQLite's locking is unreliable on network file systems
(NFS, Lustre), where a cluster's sweep folder lives, and several writers on one SQLite file wait on
each other's transactions; the journal is append-only, one small record per event, and needs no
database driver.
"""

from __future__ import annotations

import json
import math
import multiprocessing
import os
import signal
import sys
import threading
import time
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

from ..config.files import apply_overrides, source_label
from ..config.registry import PluginInfo, Registry, get_registry
from ..config.sections import ExperimentBase, load_config
from ..plugins import atomic, stops
from ..plugins.errors import ConfigError, ZooframeError
from . import figures
from .evaluation import held_out
from .experiment import VALIDATION, inspect_task, preflight
from .folder import WorseThanUncorrected, evaluate_run, run
from .lock import folder_lock
from .outputs import SWEEP_VERSION
from .space import Dimension, read_space, space_problems
from .tables import aligned

STUDY_FILE, TRIALS_DIR, BEST_CONFIG_FILE, RESULT_FILE, FIGURE_FILE = (
    "study.journal", "trials", "best_config.json", "sweep.json", "sweep.png")
STUDY = "sweep"
VALIDATION_SPLITS = (VALIDATION, "val")  # a reference source's own validation case set, by these names
REPORTS = 4  # validation evaluations per trial (the last one at its end), what pruning compares
OBJECTIVE = "corrected_over_src"  # of the validation rollouts: lower is better
INTERRUPTED = "interrupted: the sweep stopped during this trial; its values run again as a new trial"


def import_optuna():
    try:
        import optuna
    except ImportError:
        raise ZooframeError("zooframe sweep needs Optuna: pip install 'zooframe[sweep]'") from None
    optuna.logging.set_verbosity(optuna.logging.ERROR)  # a failed trial is reported by the sweep, with why
    return optuna


@dataclass(frozen=True)
class Validation:
    """The case set trials are selected on, and whether the sweep carved it out of the training cases."""

    split: str
    cases: tuple[str, ...]
    carved: bool

    def describe(self) -> str:
        how = "carved out of the training cases" if self.carved else "the task's own"
        return f"validation on {', '.join(self.cases)} ({how}, split {self.split!r})"


def validation_of(config: ExperimentBase, registry: Registry | None = None) -> Validation:
    """The validation cases of a sweep: ``training.validation_cases`` when the config names them, the
    reference source's own ``validation`` (or ``val``) case set, else about a quarter of the training
    cases (at least one), evenly spread over their list: the same cases every time."""
    task = inspect_task(config, registry)
    if task.problems:
        raise ConfigError(task.problems)
    splits = task.splits
    if config.training.validation_cases:
        return Validation(VALIDATION, tuple(config.training.validation_cases), carved=False)
    for name in VALIDATION_SPLITS:
        if splits.get(name):
            return Validation(name, tuple(c.name for c in splits[name]), carved=False)
    train = [c.name for c in splits.get("train", [])]
    if len(train) < 2:
        raise ConfigError([f"the task has {len(train)} training case(s) and no validation case set: a sweep selects "
                           "on validation cases carved out of the training cases, so it needs at least 2 (or a "
                           "reference source with a 'validation' case set)"])
    k = max(1, round(len(train) / 4))
    return Validation(VALIDATION, tuple(train[int((i + 0.5) * len(train) / k)] for i in range(k)), carved=True)


@dataclass(frozen=True)
class Plan:
    """What a worker process needs to run trials (picklable): the sweep folder, the trials' config
    without the searched values, the space, the validation split, and the caller's plugins beyond
    the built-ins (a worker rebuilds the caller's registry from them, never using one of its own)."""

    folder: str
    config: dict[str, Any]
    dims: tuple[Dimension, ...]
    split: str
    report_every: int
    cwd: str
    verbose: bool
    plugins: tuple[PluginInfo, ...] = ()


def _study(folder: Path, seed: int | None = None):
    optuna = import_optuna()
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    storage = JournalStorage(JournalFileBackend(str(folder / STUDY_FILE)))
    return optuna.create_study(study_name=STUDY, storage=storage, direction="minimize", load_if_exists=True,
                               sampler=optuna.samplers.TPESampler(seed=seed),
                               pruner=optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=0))


def sweep(config: str | Path | dict, space: str | Path | Mapping[str, Any], trials: int = 20, jobs: int = 1,
          backend: str = "local", output: str | Path | None = None, overrides: Mapping[str, Any] | None = None,
          registry: Registry | None = None, verbose: bool = False) -> dict[str, Any]:
    """Search ``space`` (a file or a dict of ``path: {distribution: [...]}``) for the settings of
    ``config`` that give the lowest validation error, in ``trials`` trials, ``jobs`` at a time in
    local processes (``backend="local"``) or on Ray (``"ray"``, joining ``execution.ray.address``).

    Everything is written into the sweep folder (``output``, default ``output.dir`` for the name
    ``NAME-sweep``): the study, one run folder per trial, ``best_config.json`` (the config with
    the best trial's values, ready to run), ``sweep.json`` (what this returns) and ``sweep.png``.
    Calling it again on the same folder continues the sweep: finished trials are kept, the one a
    stop interrupted runs again, and ``trials`` counts them all. A failed or pruned trial is recorded
    with why, and the sweep goes on.
    """
    if backend not in ("local", "ray"):
        raise ConfigError([f"--backend: 'local' or 'ray' (got {backend!r})"])
    if trials < 1 or jobs < 1:
        raise ConfigError([f"--trials and --jobs must be at least 1 (got {trials} and {jobs})"])
    registry = registry or get_registry()
    base = load_config(config, registry, overrides)
    dims = read_space(space)
    plain = {k: v for k, v in base.to_json().items() if k != "$schema"}  # a relative $schema would not follow
    problems = space_problems(dims, plain, registry)
    if problems:
        raise ConfigError(problems, None if isinstance(space, Mapping) else source_label(space))
    import_optuna()
    validation = validation_of(base, registry)
    trial_config = apply_overrides(plain, {"evaluation.split": validation.split, "output.progress": False,
                                           "output.figures": False, "training.validation_cases":
                                           list(validation.cases) if validation.split == VALIDATION else []})
    folder = Path(output if output is not None else base.output.dir.format(name=f"{base.name}-sweep")).absolute()
    problems = preflight(load_config(trial_config, registry), registry, folder / TRIALS_DIR / "0")
    if problems:
        raise ConfigError([f"a trial's config (with the {validation.describe()}): {p}" for p in problems],
                          source_label(config))
    steps = base.training.steps
    plan = Plan(str(folder), trial_config, tuple(dims), validation.split, max(1, math.ceil(steps / REPORTS)),
                os.getcwd(), verbose, registry.portable())
    with folder_lock(folder, RESULT_FILE):
        study = _study(folder)
        _same_sweep(study, folder, {"config": trial_config, "space": [d.__dict__ for d in dims]})
        atomic.write_json(folder / RESULT_FILE, {"format_version": SWEEP_VERSION, "status": "running",
                                                 "pid": os.getpid()})
        try:
            return _sweep(study, plan, base, plain, validation, trials, jobs, backend, folder, registry)
        except BaseException as exc:
            status = "interrupted" if isinstance(exc, KeyboardInterrupt) else "failed"
            atomic.write_json(folder / RESULT_FILE, {"format_version": SWEEP_VERSION, "status": status,
                                                     "error": f"{type(exc).__name__}: {exc}"})
            raise


def _sweep(study, plan: Plan, base: ExperimentBase, plain: dict[str, Any], validation: Validation, trials: int,
           jobs: int, backend: str, folder: Path, registry: Registry) -> dict[str, Any]:
    if not study.trials:
        baseline = _baseline(plan.dims, plain)
        if baseline is not None:  # the table then says whether the sweep beat the config as it was
            study.enqueue_trial(baseline, user_attrs={"baseline": True})
    done = _resume(study)
    remaining = max(0, trials - done)
    if plan.verbose:
        print(f"sweep {folder}: {validation.describe()}; {done} of {trials} trials done, {remaining} to run, "
              f"{min(jobs, remaining) or 1} at a time ({backend})", file=sys.stderr)
    counts = [remaining // jobs + (i < remaining % jobs) for i in range(jobs)]
    counts = [n for n in counts if n]
    seed = base.training.seed + len(study.trials)  # a resumed sweep does not draw its first values again
    if counts and backend == "ray":
        _on_ray(plan, counts, seed, base.execution.ray.address)
    elif len(counts) > 1:
        _in_processes(plan, counts, seed)
    elif counts:
        work(plan, counts[0], seed, registry)
    return _report(study, base, plain, validation, trials, folder, registry)


def _baseline(dims: tuple[Dimension, ...], config: dict[str, Any]) -> dict[str, Any] | None:
    """The config's own values as the first trial's, when each lies in its dimension's range."""
    values = {}
    for dim in dims:
        node: Any = config
        for part in dim.path.split("."):
            node = node.get(part) if isinstance(node, dict) else None
        value = dim.optuna_value(node)
        if value is None:
            return None
        values[dim.path] = value
    return values


def _same_sweep(study, folder: Path, fingerprint: dict[str, Any]) -> None:
    """A folder holds one sweep: another config or space is refused, not mixed into its study."""
    stored = study.user_attrs.get("sweep")
    if stored is None:
        study.set_user_attr("sweep", fingerprint)
    elif json.loads(json.dumps(fingerprint)) != stored:
        what = [k for k in ("config", "space") if json.loads(json.dumps(fingerprint[k])) != stored.get(k)]
        raise ZooframeError(f"the sweep folder {folder} holds a sweep of another {' and '.join(what)}; continue it "
                            "with its own config and space, or choose another --output")


def _resume(study) -> int:
    """Trials a stopped sweep left running are marked interrupted and their values queued to run
    again (the sweep folder's lock says no other sweep runs them); returns the trials finished."""
    from optuna.trial import TrialState

    requeued = set(study.user_attrs.get("requeued", []))
    left_running = set(study.user_attrs.get("left_running", []))  # by a process that a stop ended: see _interrupted
    done = 0
    for t in study.get_trials(deepcopy=False):
        if t.state == TrialState.RUNNING:
            study.tell(t.number, state=TrialState.FAIL)
            left_running.add(t.number)
            study.set_user_attr("left_running", sorted(left_running))
        interrupted = _interrupted(t, left_running)
        if interrupted and t.number not in requeued:
            study.enqueue_trial(dict(t.params), user_attrs={"retry_of": t.number, **(
                {"baseline": True} if t.user_attrs.get("baseline") else {})})
            requeued.add(t.number)
        elif t.state in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL) and not interrupted:
            done += 1
    study.set_user_attr("requeued", sorted(requeued))
    return done


def _interrupted(t, left_running) -> bool:
    """Whether a stop of the sweep ended trial ``t``: its run said so, or its process ended without
    a word and :func:`_resume` found it running (``left_running``: the study's list of those)."""
    return bool(t.user_attrs.get("interrupted")) or t.number in left_running


# ---------------------------------------------------------------- workers

def work(plan: Plan, n_trials: int, seed: int | None, registry: Registry | None = None) -> None:
    """Run ``n_trials`` trials of the plan's study in this process, with ``registry`` or the one
    the plan's plugins make."""
    registry = registry or Registry.of(plan.plugins)
    if Path(plan.cwd).is_dir():  # a Ray worker starts elsewhere; the config's relative paths are the driver's
        os.chdir(plan.cwd)
    study = _study(Path(plan.folder), seed)
    study.optimize(partial(_trial, plan, registry), n_trials=n_trials, catch=(Exception,),
                   callbacks=[_say] if plan.verbose else None)


def _say(study, t) -> None:
    value = f"validation {t.value:.4g}" if t.value is not None else t.user_attrs.get("why", "")
    print(f"trial {t.number} {t.state.name.lower()}: {value} ({t.user_attrs.get('wall_s', 0):.1f} s)",
          file=sys.stderr, flush=True)


def _trial(plan: Plan, registry: Registry | None, trial) -> float:
    optuna = import_optuna()
    values = {d.path: d.suggest(trial) for d in plan.dims}
    trial.set_user_attr("values", values)
    out = Path(plan.folder) / TRIALS_DIR / f"{trial.number:04d}"
    trial.set_user_attr("run_dir", str(out.relative_to(plan.folder)))
    last: dict[str, Any] = {}
    start = time.perf_counter()

    def on_step(metrics: dict[str, Any], trainer) -> None:
        last.update(metrics)
        step = metrics["step"]
        if step % plan.report_every or trainer.stopped is not None:  # the end is evaluated by the run itself
            return
        with trainer.aside():  # validation is not training: its rollouts stay out of the counts and the budget
            value = held_out(trainer.exp, plan.split).summary()[OBJECTIVE]
        trial.report(value, step)
        if trial.should_prune():
            raise optuna.TrialPruned(f"pruned at step {step}: validation {value:.4g}, worse than the median of "
                                     "the earlier trials at that step")

    try:
        with warnings.catch_warnings():  # the table shows each trial's ratio to the uncorrected solver
            warnings.simplefilter("ignore", WorseThanUncorrected)
            result = run(apply_overrides(plan.config, values), output=out, progress=False, force=True,
                         registry=registry, on_step=on_step)
    except KeyboardInterrupt:
        trial.set_user_attr("interrupted", True)
        trial.set_user_attr("why", INTERRUPTED)
        raise
    except BaseException as exc:
        why = str(exc) if isinstance(exc, optuna.TrialPruned) else f"{type(exc).__name__}: {exc}"
        _counts(trial, last, time.perf_counter() - start, why)
        raise
    _counts(trial, last, time.perf_counter() - start)
    return result.summary["evaluation"][OBJECTIVE]


def _counts(trial, last: dict[str, Any], wall_s: float, why: str | None = None) -> None:
    trial.set_user_attr("wall_s", wall_s)
    trial.set_user_attr("steps", last.get("step", 0))
    trial.set_user_attr("queries", last.get("queries_total", 0))
    if "sim_calls_total" in last:
        trial.set_user_attr("simulator_calls", last["sim_calls_total"])
    if why is not None:
        trial.set_user_attr("why", why.splitlines()[0] if why else why)


def _worker_main(plan: Plan, n_trials: int, seed: int, driver: int) -> None:
    """A job's process: it ends with the sweep however the sweep ends (a killed sweep too), and a
    SIGTERM stops its trial as Ctrl-C would (the trial's run records it, the study marks it)."""
    from ..execution.process_engine import _end_with

    threading.Thread(target=_end_with, args=(driver,), name="zooframe-driver-watch", daemon=True).start()
    signal.signal(signal.SIGTERM, stops.handle)
    try:
        work(plan, n_trials, seed)
    except KeyboardInterrupt:
        raise SystemExit(128 + signal.SIGTERM) from None


def _in_processes(plan: Plan, counts: list[int], seed: int) -> None:
    """One process per job, each running its share of the trials on the shared study; a process
    that a signal or a crash ends leaves its trial to be run again when the sweep continues."""
    context = multiprocessing.get_context("spawn")  # a forked copy of a process running torch threads can hang
    processes = [context.Process(target=_worker_main, args=(plan, n, seed + i, os.getpid()),
                                 name=f"zooframe-sweep-{i}") for i, n in enumerate(counts)]
    try:
        for p in processes:
            p.start()
        for p in processes:
            p.join()
    finally:
        for p in processes:
            if p.is_alive():
                p.terminate()
        for p in processes:
            p.join(timeout=10)
            if p.is_alive():
                p.kill()
    lost = [f"{p.name} (exit code {p.exitcode})" for p in processes if p.exitcode]
    if lost:
        print(f"zooframe: warning: sweep workers ended early: {', '.join(lost)}; their trials run again when the "
              "sweep continues", file=sys.stderr)


def _on_ray(plan: Plan, counts: list[int], seed: int, address: str | None) -> None:
    """One Ray task per job, each running its share of the trials on the shared study (Optuna's
    storage in the sweep folder, which every node must see at the same path)."""
    from ..execution.ray_cluster import connect
    from ..execution.ray_engine import import_ray

    ray = import_ray()
    owns = connect(ray, address, len(counts))  # as execution.backend ray does
    try:
        task = ray.remote(num_cpus=1, max_retries=0)(work)
        ray.get([task.remote(plan, n, seed + i) for i, n in enumerate(counts)])
    finally:
        if owns:
            ray.shutdown()


# ---------------------------------------------------------------- the report

def _report(study, base: ExperimentBase, plain: dict[str, Any], validation: Validation, requested: int,
            folder: Path, registry: Registry) -> dict[str, Any]:
    from optuna.trial import TrialState

    states = {TrialState.COMPLETE: "completed", TrialState.PRUNED: "pruned", TrialState.FAIL: "failed",
              TrialState.RUNNING: "running", TrialState.WAITING: "waiting"}
    rows, left_running = [], set(study.user_attrs.get("left_running", []))
    for t in study.get_trials(deepcopy=False):
        interrupted = _interrupted(t, left_running)
        state = "interrupted" if interrupted else states[t.state]
        row = {"number": t.number, "state": state, "baseline": bool(t.user_attrs.get("baseline")), "params": t.user_attrs.get("values", dict(t.params)),
               "validation": t.value if t.state == TrialState.COMPLETE else None,
               "wall_s": t.user_attrs.get("wall_s"), "steps": t.user_attrs.get("steps"),
               "queries": t.user_attrs.get("queries"), "simulator_calls": t.user_attrs.get("simulator_calls"),
               "run_dir": t.user_attrs.get("run_dir")}
        if "why" in t.user_attrs or interrupted:
            row["why"] = t.user_attrs.get("why", INTERRUPTED)
        rows.append(row)
    complete = [r for r in rows if r["state"] == "completed"]
    result: dict[str, Any] = {
        "format_version": SWEEP_VERSION, "status": "completed", "sweep_dir": str(folder),
        "objective": f"{OBJECTIVE} on the validation cases (lower is better)", "trials_requested": requested,
        "validation": {"split": validation.split, "cases": list(validation.cases), "carved": validation.carved},
        "test_split": base.evaluation.split, "trials": rows, "best": None, "importances": {}}
    if complete:
        best = min(complete, key=lambda r: r["validation"])
        test = _test_once(study, best, base, folder, registry)
        best_config = load_config(apply_overrides(plain, best["params"]), registry).to_json()
        atomic.write_json(folder / BEST_CONFIG_FILE, best_config)
        best["test"] = test[OBJECTIVE]
        result["best"] = {"number": best["number"], "params": best["params"], "validation": best["validation"],
                          "test": test, "config_file": BEST_CONFIG_FILE}
        result["importances"] = _importances(study)
    result["figure"] = _figure(folder / FIGURE_FILE, rows, result["importances"])
    atomic.write_json(folder / RESULT_FILE, result)
    return result


def _test_once(study, best: dict[str, Any], base: ExperimentBase, folder: Path, registry) -> dict[str, Any]:
    """The best trial's model on the test split: evaluated once, kept in the study for a later report."""
    kept = study.user_attrs.get("test")
    if kept and kept.get("trial") == best["number"]:
        return kept
    ev = evaluate_run(folder / best["run_dir"], split=base.evaluation.split, steps=base.evaluation.steps,
                      registry=registry)
    test = {"trial": best["number"], "split": ev["split"], "cases": ev["cases"], OBJECTIVE: ev[OBJECTIVE],
            "corrected_mae": ev["corrected"]["mae_mean"], "src_mae": ev["src"]["mae_mean"]}
    study.set_user_attr("test", test)
    return test


IMPORTANCE_TRIALS = 5  # fewer completed trials say nothing of which setting matters


def _importances(study) -> dict[str, float]:
    """Each searched path's share of the validation metric's variation (Optuna's PED-ANOVA); empty
    while fewer than :data:`IMPORTANCE_TRIALS` trials completed, or when nothing varied."""
    from optuna.trial import TrialState

    if len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))) < IMPORTANCE_TRIALS:
        return {}
    optuna = import_optuna()
    try:
        return {k: float(v) for k, v in optuna.importance.get_param_importances(study).items()}
    except (ValueError, RuntimeError, ZeroDivisionError):
        return {}


def _figure(path: Path, rows: list[dict[str, Any]], importances: dict[str, float]) -> str:
    if not figures.available():
        return "skipped: matplotlib is not installed (pip install 'zooframe[plot]')"
    done = [(r["number"], r["validation"]) for r in rows if r["validation"] is not None]
    figures.sweep_history(path, [n for n, _ in done], [v for _, v in done], importances)
    return path.name


def table(result: dict[str, Any]) -> str:
    """The trials as a text table: values, validation metric, the best one's test metric, wall time,
    simulator calls (queries where the run does not count calls), and why a trial did not complete;
    ``(config)`` marks the trial of the config's own values."""
    paths = list(dict.fromkeys(p for r in result["trials"] for p in r["params"]))
    head = ["trial", "state", *paths, "validation", "test", "wall s", "sim calls"]

    def cell(v: Any) -> str:
        if v is None:
            return "-"
        if isinstance(v, float):
            return f"{v:.4g}"
        return v if isinstance(v, str) else json.dumps(v)

    body = [[f"{r['number']}{' (config)' if r.get('baseline') else ''}", r["state"], *(cell(r["params"].get(p)) for p in paths), cell(r["validation"]),
             cell(r.get("test")), cell(r["wall_s"] and round(r["wall_s"], 1)),
             cell(r["simulator_calls"] if r["simulator_calls"] is not None else r["queries"])]
            for r in result["trials"]]
    lines = aligned([head, *body])
    lines += [f"trial {r['number']}: {r['why']}" for r in result["trials"] if r.get("why")]
    return "\n".join(lines)
