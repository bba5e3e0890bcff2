"""A run's output folder: resolved config, metrics.jsonl, model weights, summary.json."""

from __future__ import annotations

import json
import logging
import os
import platform
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from ..config.registry import Registry, get_registry
from ..config.sections import ExperimentBase, load_config, source_label
from ..core import sparsity
from ..core.metrics import METRICS
from ..execution.threads import ThreadPolicy
from ..plugins import atomic
from ..plugins.atomic import WriteError, save_torch
from ..plugins.errors import ConfigError, ZooframeError
from ..plugins.logger import RunStart
from . import checkpoint, figures
from .evaluation import HeldOut, evaluate, held_out
from .experiment import Experiment, build_loggers, output_problems
from .export import export_correction
from .lock import folder_lock
from .loggers import RunLoggers
from .outputs import EVALUATION_VERSION, SUMMARY_VERSION
from .trainer import Trainer

CONFIG_FILE, METRICS_FILE, MODEL_FILE, SUMMARY_FILE, EVALUATION_FILE, MASK_FILE, SPARSE_FILE, CHECKPOINT_FILE = (
    "config.json", "metrics.jsonl", "model.pt", "summary.json", "evaluation.json", "mask.pt", "model.sparse.pt",
    "checkpoint.pt")
FIGURE_FILES = ("loss.png", "mae.png", "snapshots.png")
log = logging.getLogger("zooframe.run")  # the run log: what a run states as it starts (log_to_stderr shows it)


def log_to_stderr() -> None:
    """Show the run log on stderr, as ``zooframe run`` does (in a batch job: the job's output file)."""
    if not log.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("zooframe: %(message)s"))
        log.addHandler(handler)
    log.setLevel(logging.INFO)
    log.propagate = False
RUN_FILES = (CONFIG_FILE, METRICS_FILE, MODEL_FILE, SUMMARY_FILE, EVALUATION_FILE, MASK_FILE, SPARSE_FILE,
             CHECKPOINT_FILE, CHECKPOINT_FILE + ".tmp", *FIGURE_FILES)


@dataclass
class RunResult:
    dir: Path
    summary: dict[str, Any]
    experiment: Experiment = field(repr=False)

    @property
    def model(self) -> torch.nn.Module:
        return self.experiment.model


_write_json = atomic.write_json


class RunFolderUnwritable(ZooframeError):
    """Files a run could not write (full disk, lost permission): names them and what was kept."""

    def __init__(self, out: Path, reason: str, lost: list[str], checkpoint_step: int | None):
        kept = (f"{CHECKPOINT_FILE} at step {checkpoint_step} and {METRICS_FILE}; free space (or fix the folder) and "
                "continue with --resume" if checkpoint_step is not None else "no checkpoint yet, so nothing to resume")
        super().__init__(f"cannot write the run folder {out} ({reason}): {', '.join(lost)} not written. Kept: {kept}")


def _append(path: Path):
    """``path`` opened for appending, never through a symbolic link."""
    try:
        return os.fdopen(os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0), 0o666),
                         "a")
    except OSError as exc:
        reason = "it is a symbolic link; remove the link" if path.is_symlink() else exc.strerror or str(exc)
        raise WriteError(path, reason) from None


def run(config: ExperimentBase | dict | str | Path, output: str | Path | None = None, progress: bool | None = None,
        registry: Registry | None = None, on_step: Callable[[dict[str, Any], Trainer], None] | None = None,
        resume: bool = False, force: bool = False, overrides: dict[str, Any] | None = None) -> RunResult:
    """Train and evaluate one experiment, writing everything into its run folder.

    ``overrides`` (dotted path -> value, as ``zooframe run --set``) are applied to a config read
    from a dict or a file before it is validated (:func:`zooframe.load_config`); the run folder's
    ``config.json`` holds the result.

    Arguments:

    - ``config``: the experiment, as a config object, a dict (the JSON file's content), or the
      path of a JSON file;
    - ``output``: the run folder (default: the config's ``output.dir``, ``{name}`` filled in);
    - ``progress``: show a progress bar (default: the config's ``output.progress``);
    - ``registry``: the plugins to build from (default: the built-ins and every installed plugin;
      ``zooframe.Registry(load_external=False, plugins={"mine": module})`` for only your own);
    - ``on_step(metrics, trainer)``: called after each optimizer step with that step's metrics (as
      written to ``metrics.jsonl``): a place for a caller's own monitoring;
    - ``resume``, ``force``: as ``zooframe run --resume`` and ``--force`` (below).

    Returns a :class:`RunResult`: the folder, the summary (as in ``summary.json``) and the
    experiment with its trained model. A run whose corrected solver ends worse than the
    uncorrected one on the held-out cases warns (:class:`WorseThanUncorrected`).

    A checkpoint is written every ``output.checkpoint_every`` steps and after the last. With
    ``resume``, a stopped run continues from its checkpoint (the same steps as if it had never
    stopped); a completed run is left as it is. A folder that holds another experiment, or a stopped
    or completed run of this one, is refused unless ``force``, which removes the old run's files. Every
    file is written atomically (:mod:`zooframe.plugins.atomic`); a full disk is one error that says
    what was kept. A folder is one
    run's at a time: a run holds its lock (:mod:`zooframe.runs.lock`), and another run into it is
    refused, naming the holder's pid.

    What the config asks and the task cannot give (and a run folder that cannot be written) is a
    :class:`ConfigError` before the folder is touched. If training stops early (an error, Ctrl-C),
    the weights and metrics so far are still written. Whatever fails once the folder exists
    (building the trainer, training, evaluation, figures), ``summary.json`` ends with the status
    and the error.
    """
    registry = registry or get_registry()
    label = None if isinstance(config, ExperimentBase) else source_label(config)
    if not isinstance(config, ExperimentBase):
        config = load_config(config, registry, overrides)
    elif overrides:
        raise TypeError("overrides apply to a config read from a dict or a file, not to a validated ExperimentConfig")
    out = Path(output) if output is not None else Path(config.output.dir.format(name=config.name))
    problems = output_problems(out)
    if problems:
        raise ConfigError(problems, label)
    try:  # before the folder: what the task cannot give is refused without leaving one behind
        loggers = RunLoggers(build_loggers(config, registry))
        exp = Experiment.build(config, registry, train=True)
    except ZooframeError as exc:
        raise ConfigError([str(exc)], label) from exc
    with exp, folder_lock(out, SUMMARY_FILE):
        return _start(exp, out, progress, on_step, resume, force, loggers)


def _start(exp: Experiment, out: Path, progress: bool | None, on_step, resume: bool, force: bool,
           loggers: RunLoggers) -> RunResult:
    config = exp.config
    state = _prepare_folder(out, config, resume, force)
    if state == "completed":
        summary = json.loads((out / SUMMARY_FILE).read_text())
        return RunResult(out, {**summary, "resumed": "nothing to do: the run had completed"}, _load_weights(exp, out))
    if resume and state is None:
        warnings.warn(f"{out} holds no checkpoint to resume from: the run starts at step 0", stacklevel=3)
    _write_json(out / CONFIG_FILE, config.to_json())
    _write_json(out / SUMMARY_FILE, {"format_version": SUMMARY_VERSION, "name": config.name, "status": "building",
                                      "pid": os.getpid()})  # no stale one
    try:
        with ThreadPolicy(config.execution.threads) as threads:  # reference generation and evaluation too
            return _run(exp, out, progress, threads, on_step, state, loggers)
    except BaseException as exc:
        _record_failure(out, exc)
        loggers.end("interrupted" if isinstance(exc, KeyboardInterrupt) else "failed")
        raise


def _comparable(config: Any) -> dict:
    """A config without what does not change the run (its editor schema, the progress bar, figures)."""
    if not isinstance(config, dict):
        return {"(the whole config)": config}
    config = {k: v for k, v in config.items() if k != "$schema"}
    if isinstance(config.get("output"), dict):
        config["output"] = {k: v for k, v in config["output"].items() if k not in ("progress", "figures", "loggers")}
    return config


def _with_defaults(stored: Any, config: ExperimentBase) -> Any:
    """A stored config as this version reads it: a field it lacks (written by a version without
    that field) takes its default, which is no difference. As stored when this version refuses it."""
    try:
        return type(config).model_validate(stored).to_json()
    except (ValueError, TypeError):  # pydantic's ValidationError is a ValueError
        return stored


def _differences(a: Any, b: Any, prefix: str = "") -> list[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        return [d for k in sorted(set(a) | set(b)) for d in _differences(a.get(k), b.get(k), f"{prefix}{k}.")]
    return [] if a == b else [prefix.rstrip(".") or "(the whole config)"]


def _prepare_folder(out: Path, config: ExperimentBase, resume: bool, force: bool) -> dict[str, Any] | str | None:
    """The checkpoint to resume from, "completed", or None for a fresh start (the folder then holds
    none of an earlier run's files). Only a zooframe run folder (one with config.json) is cleared;
    a folder that holds a run's files without one is someone else's, and refused unless ``force``."""
    if out.exists() and not out.is_dir():
        raise ZooframeError(f"the run folder {out} is a file; choose another output.dir or --output")
    old_config = out / CONFIG_FILE
    if old_config.is_file():
        try:
            old = _with_defaults(json.loads(old_config.read_text()), config)
        except (json.JSONDecodeError, UnicodeDecodeError):
            old = None
        differ = _differences(_comparable(old), _comparable(config.to_json()))
        if differ and (resume or not force):
            what = ", ".join(differ[:6]) + (" ..." if len(differ) > 6 else "")
            hint = "resume it with its own config" if resume else "use --force (force=True) to replace that run"
            raise ZooframeError(f"the run folder {out} holds another experiment (it differs in: {what}); choose another "
                                f"output.dir or --output, or {hint}")
        status = _stored_summary(out).get("status")
        links = [name for name in RUN_FILES if (out / name).is_symlink()]
        if links and not force:  # checked before any work: the run would refuse to write through them at its end
            raise ZooframeError(f"{out} holds symbolic links in place of the run's files ({', '.join(links)}); zooframe "
                                "does not write through links in a run folder: remove them, or replace the run with "
                                "--force")
        if resume:
            if status == "completed":
                return "completed"
            if (out / CHECKPOINT_FILE).is_file():
                return checkpoint.load(out / CHECKPOINT_FILE)
        elif not force and any((out / name).is_file() for name in (MODEL_FILE, CHECKPOINT_FILE)):
            what = "a completed run" if status == "completed" else "a stopped run"
            raise ZooframeError(f"the run folder {out} holds {what} of this config, which a new run would delete; "
                                "resume it with --resume, or replace it with --force (force=True)")
    elif out.is_dir() and not force:
        foreign = sorted(name for name in RUN_FILES if (out / name).exists())
        if foreign:
            raise ZooframeError(f"{out} holds {', '.join(foreign)} but no {CONFIG_FILE}: not a zooframe run folder, so "
                                "nothing in it is replaced; choose another output.dir or --output, or --force")
    try:
        out.mkdir(parents=True, exist_ok=True)
        for name in RUN_FILES:
            (out / name).unlink(missing_ok=True)
        for leftover in atomic.leftovers(out):  # of a write that a kill interrupted
            leftover.unlink()
    except (OSError, ValueError) as exc:
        raise ZooframeError(f"cannot write the run folder {out}: {getattr(exc, 'strerror', None) or exc}") from None
    return None


def _stored_summary(out: Path) -> dict[str, Any]:
    try:
        summary = json.loads((out / SUMMARY_FILE).read_text())
    except (OSError, ValueError):
        return {}
    return summary if isinstance(summary, dict) else {}


def _record_failure(out: Path, exc: BaseException) -> None:
    """Mark the summary as failed (or interrupted) at the stage it reached, keeping what it holds."""
    summary = _stored_summary(out)
    if summary.get("status") in ("failed", "interrupted"):
        return  # training wrote it, with its counts
    if summary.get("status") == "completed":
        return  # a signal after the run completed (its loggers' last calls): its results stand
    summary["failed_in"] = {"building": "building the trainer (normalization, pruning, workers)", "trained": "evaluation"}.get(
        summary.get("status"), summary.get("status"))
    summary["status"] = "interrupted" if isinstance(exc, KeyboardInterrupt) else "failed"
    summary["error"] = f"{type(exc).__name__}: {exc}"
    try:
        _write_json(out / SUMMARY_FILE, summary)
    except WriteError:
        pass  # the error that is on its way up says what could not be written


def _kept_metrics(path: Path, steps: int) -> None:
    """Keep the first ``steps`` lines of ``path``: those of the steps a checkpoint holds."""
    lines = path.read_text().splitlines(keepends=True) if path.is_file() else []
    if len(lines) < steps:
        raise ZooframeError(f"{path} holds {len(lines)} steps and the checkpoint {steps}; the run folder was changed "
                            "by hand: start the run again without --resume")
    atomic.write_text(path, "".join(lines[:steps]))  # a crash here leaves the old file, which resumes as well


def _run(exp: Experiment, out: Path, progress: bool | None, threads: ThreadPolicy, callback,
         resume: dict[str, Any] | None, loggers: RunLoggers) -> RunResult:
    config = exp.config
    try:
        trainer = Trainer(exp, threads, resume)
    except checkpoint.CheckpointError as exc:
        raise ZooframeError(f"cannot resume from {out / CHECKPOINT_FILE}: {exc}. The file is damaged or not this "
                            "run's; start the run again with --force") from None
    show = config.output.progress if progress is None else progress
    bar = tqdm(total=config.training.steps, initial=trainer.step, desc=config.name, disable=None if show else True,
               leave=False)
    summary: dict[str, Any] = {"format_version": SUMMARY_VERSION, "name": config.name, "mode": config.training.mode,
                               "status": "running", "pid": os.getpid(),
                               "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                               "parameters": exp.flat.dim, "python": platform.python_version(), "torch": torch.__version__}
    if exp.simulator_facts:
        summary["simulator"] = exp.simulator_facts
        log.info("%s: simulator: %s", config.name, ", ".join(f"{k} {v}" for k, v in exp.simulator_facts.items()))
    if resume is not None:
        summary["resumed_from_step"] = trainer.step
        _kept_metrics(out / METRICS_FILE, trainer.step)
    _write_json(out / SUMMARY_FILE, {**summary, "step": trainer.step})  # from now on it says running, and where
    loggers.start(RunStart(config.name, out, config.to_json(), trainer.step, resume is not None))
    every = config.output.checkpoint_every
    last: dict[str, Any] = {}
    saved = {"checkpoint": trainer.step if resume is not None else None}
    with _append(out / METRICS_FILE) as metrics:
        def on_step(m: dict[str, Any]) -> None:
            last.update(m)
            try:
                metrics.write(json.dumps(m) + "\n")
                metrics.flush()
            except OSError as exc:
                raise WriteError(out / METRICS_FILE, exc.strerror or str(exc)) from None
            loggers.step(m)
            if m["step"] % every == 0 or trainer.stopped:  # after the metrics line: never fewer lines than steps
                checkpoint.save(out / CHECKPOINT_FILE, checkpoint.capture(trainer, m["wall_s"]))
                saved["checkpoint"] = m["step"]
                _write_json(out / SUMMARY_FILE, {**summary, "step": m["step"], "checkpoint_step": m["step"]})
                loggers.flush()
            bar.update(1)
            if m["loss"] is not None:
                bar.set_postfix(loss=f"{m['loss']:.3g}", refresh=False)
            if callback:
                callback(m, trainer)

        failed: list[WriteError] = []
        try:
            trainer.run(on_step)
            summary["status"] = "trained"
        except BaseException as exc:
            summary["status"] = "interrupted" if isinstance(exc, KeyboardInterrupt) else "failed"
            summary["error"] = f"{type(exc).__name__}: {exc}"
            if isinstance(exc, WriteError):
                failed.append(exc)
            raise
        finally:  # whatever stopped training, each of these files is tried
            bar.close()
            trainer.close()
            _try(failed, save_torch, out / MODEL_FILE, exp.model.state_dict())
            if trainer.plan:
                _try(failed, save_torch, out / MASK_FILE, trainer.plan.base.cpu())
                summary["sparsity"] = {"use": config.sparsity.use, "method": config.sparsity.method,
                                       "active": int(trainer.plan.base.sum()), "parameters": exp.flat.dim,
                                       "layers": sparsity.report(trainer.plan.base, exp.flat)}
            totals = trainer.totals
            summary.update(steps=trainer.step, stopped=trainer.stopped, simulator_calls=trainer.simulator_calls,
                           queries_total=totals.queries, final_loss=last.get("loss"),
                           wall_s=last.get("wall_s", 0.0), simulator_s=trainer.simulator_seconds,
                           worker_restarts=trainer.engine.restarts, faults=dict(totals.faults),
                           recovered=dict(totals.recovered), retries=totals.retried, skipped_steps=totals.skipped,
                           threads={"setting": threads.setting, "checks": threads.history})
            summary["checkpoint_step"] = saved["checkpoint"]
            _try(failed, _write_json, out / SUMMARY_FILE, summary)
            if failed:  # one error that says what is lost and what is kept, in place of a chain of them
                raise RunFolderUnwritable(out, failed[0].reason, [e.path.name for e in failed], saved["checkpoint"])
    if trainer.plan and config.sparsity.use == "model":
        summary["sparsity"]["export"] = {"file": SPARSE_FILE, **export_correction(exp, out / SPARSE_FILE)}
    threads.update()
    results = held_out(exp)
    summary["evaluation"] = results.summary()
    _warn_if_worse(summary["evaluation"])
    summary["figures"] = (write_figures(exp, out, results, summary["evaluation"]) if config.output.figures
                          else "skipped: output.figures is false")
    summary["status"] = "completed"
    _write_json(out / SUMMARY_FILE, summary)
    loggers.completed(summary, [out / name for name in summary["figures"]] if isinstance(summary["figures"], list)
                      else [], [out / MODEL_FILE, out / SUMMARY_FILE])
    return RunResult(out, summary, exp)


class WorseThanUncorrected(UserWarning):
    """A run whose corrected solver ended worse on the held-out cases than the uncorrected one."""


def _warn_if_worse(evaluation: dict[str, Any]) -> None:
    ratio = evaluation["corrected_over_src"]
    if not ratio <= 1:  # NaN too
        warnings.warn(f"the corrected solver ended worse than the uncorrected one on the held-out cases (ratio "
                      f"{ratio:.3f}); `zooframe compare CONFIG` runs the baseline ladder on this task and says which "
                      "training pays off (docs/writing-a-plugin.md, 'When the solver in the loop pays off')",
                      WorseThanUncorrected, stacklevel=5)  # the caller of run()


def _try(failed: list[WriteError], write: Callable[..., None], *args: Any) -> None:
    try:
        write(*args)
    except WriteError as exc:
        failed.append(exc)


def write_figures(exp: Experiment, out: Path, results: HeldOut, ev: dict[str, Any]) -> list[str] | str:
    """Training loss, the held-out headline metric over time (``ev``: ``results.summary()``; in
    ``mae.png`` whichever it is), and source / corrected / reference snapshots of each quantity the
    simulator shows (:meth:`~zooframe.plugins.simulator.Simulator.figure_fields`)."""
    if not figures.available():
        return "skipped: matplotlib is not installed (pip install 'zooframe[plot]')"
    metrics = [m for m in map(json.loads, (out / METRICS_FILE).read_text().splitlines()) if m["loss"] is not None]
    head, loss = ev["headline"]["metric"], exp.loss.describe()
    label = METRICS[head].label
    paths = [figures.loss_curve(out / "loss.png", [m["step"] for m in metrics], [m["loss"] for m in metrics], loss),
             figures.error_curves(out / "mae.png", {name: ev["metrics"][head][key]["per_step"] for name, key in
                                                    (("source", "src"), ("corrected", "corrected"))},
                                  f"held-out {label} ({results.split}, mean over {len(results.cases)} cases)\n"
                                  f"trained on the loss {loss}", label)]
    steps = results.reference.shape[1] - 1
    times = sorted({max(1, steps * k // 4) for k in (1, 2, 3, 4)})
    with torch.no_grad():
        rollouts = {name: exp.simulator.figure_fields(states[0]) for name, states in
                    (("source", results.src), ("corrected", results.corrected), ("reference", results.reference))}
    quantities = {q: {name: fields[q] for name, fields in rollouts.items()} for q in rollouts["reference"]}
    paths.append(figures.quantity_snapshots(out / "snapshots.png", quantities, times,
                                            f"held-out case {results.cases[0].name}"))
    return [p.name for p in paths]


def load_run(run_dir: str | Path, registry: Registry | None = None) -> Experiment:
    """The experiment of a finished run folder, with its trained weights loaded; use it as a
    context manager (``with load_run(folder) as exp:``) so that its simulator is closed."""
    run_dir = Path(run_dir)
    for name in (CONFIG_FILE, MODEL_FILE):
        if not (run_dir / name).is_file():
            raise ZooframeError(f"{run_dir} is not a run folder: {name} is missing")
    return _load_weights(Experiment.build(load_config(run_dir / CONFIG_FILE, registry), registry), run_dir)


def _load_weights(exp: Experiment, run_dir: Path) -> Experiment:
    exp.model.load_state_dict(checkpoint.load_tensors(run_dir / MODEL_FILE, exp.device))
    if (run_dir / MASK_FILE).is_file():
        exp.mask = checkpoint.load_tensors(run_dir / MASK_FILE, exp.device)
    return exp


def evaluate_run(run_dir: str | Path, split: str | None = None, steps: int | None = None,
                 registry: Registry | None = None) -> dict[str, Any]:
    """Re-evaluate a run's trained model; writes ``evaluation.json`` into the run folder. The
    result is returned even where that file cannot be written (a warning says so), and a run that
    did not complete is evaluated with a warning: its weights are those it had when it stopped."""
    run_dir = Path(run_dir)
    stored = _stored_summary(run_dir)
    with load_run(run_dir, registry) as exp:
        if stored.get("status") != "completed":
            warnings.warn(f"the run in {run_dir} did not complete (status {stored.get('status', 'unknown')!r}, "
                          f"{stored.get('steps', '?')} of {exp.config.training.steps} steps): these are the weights "
                          "it had when it stopped", stacklevel=2)
        result = {"format_version": EVALUATION_VERSION, **evaluate(exp, split, steps)}
    result["run_status"] = stored.get("status")
    try:
        _write_json(run_dir / EVALUATION_FILE, result)
    except WriteError as exc:
        warnings.warn(f"the evaluation was not saved: {exc}", stacklevel=2)
    return result
