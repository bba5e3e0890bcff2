"""The logger interface: where a run reports besides its run folder (an experiment tracker, a
dashboard). ``metrics.jsonl`` is written either way; a logger adds a view of the same numbers.

A run calls its loggers in this order: :meth:`Logger.start` once, :meth:`Logger.log_step` after
each optimizer step (and :meth:`Logger.flush` after each checkpoint), then, when the run
completed, :meth:`Logger.log_evaluation`, :meth:`Logger.log_figures` and :meth:`Logger.log_files`,
and :meth:`Logger.end` however the run ended. A logger that raises is reported once, ended (``failed``) and dropped; the run goes on
without it.
"""

from __future__ import annotations

import importlib
import json
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

from .base import Plugin, PluginConfig
from .errors import ZooframeError


class LoggerConfig(PluginConfig):
    """Options every logger shares (none yet)."""


@dataclass(frozen=True)
class RunStart:
    """What a logger learns when the run starts."""

    name: str  # the experiment's name
    folder: Path  # the run folder
    config: dict[str, Any]  # the resolved config, as config.json holds it
    step: int  # optimizer steps already taken: 0, or the checkpoint's step when resumed
    resumed: bool


class Logger(Plugin):
    """Base of logger plugins. Every method but one of the ``log_`` ones may be left as it is."""

    category = "logger"
    required = (("log_step", "log_evaluation", "log_figures", "log_files"),)

    def start(self, run: RunStart) -> None:
        """The run starts (or continues from ``run.step``: continue the same record, and expect the
        steps after ``run.step`` again, those logged before the run stopped included)."""

    def log_step(self, metrics: dict[str, Any]) -> None:
        """One optimizer step's metrics, as the line of ``metrics.jsonl`` (:func:`step_scalars`)."""

    def flush(self) -> None:
        """A checkpoint was saved: write or send what was logged so far, since a run resumed from that
        checkpoint logs only the steps after it (a logger that buffers must not lose the ones before)."""

    def log_evaluation(self, evaluation: dict[str, Any], step: int) -> None:
        """The held-out evaluation (``summary.json``'s ``evaluation``; :func:`held_out_scalars`)."""

    def log_figures(self, paths: list[Path], step: int) -> None:
        """The run's figures, PNG files in the run folder."""

    def log_files(self, paths: list[Path]) -> None:
        """The run's results: ``model.pt`` and ``summary.json``."""

    def end(self, status: str) -> None:
        """The run ended: ``completed``, ``failed`` or ``interrupted``. Release what the logger holds."""


def require(module: str, kind: str, extra: str) -> ModuleType:
    """``module`` imported, or an error naming the package and the zooframe extra that installs it."""
    try:
        return importlib.import_module(module)
    except ImportError:
        raise ZooframeError(f"output.loggers: the {kind} logger needs the {extra} package: "
                            f"pip install 'zooframe[{extra}]'") from None


def step_scalars(metrics: dict[str, Any]) -> dict[str, float]:
    """The numbers of a ``metrics.jsonl`` line under ``train/`` names: loss (absent on a skipped
    step), lr, queries, simulator seconds and calls, step and wall seconds, threads, and the step's
    faults (their count) and whether it was skipped."""
    out = {f"train/{key}": float(value) for key, value in metrics.items()
           if key not in ("format_version", "step") and isinstance(value, (int, float)) and not isinstance(value, bool)}
    out["train/faults"] = float(sum(metrics.get("faults", {}).values()))
    out["train/skipped"] = float("skipped" in metrics)
    return out


def flatten(tree: dict[str, Any], prefix: str = "", sep: str = ".") -> dict[str, Any]:
    """A nested dict's leaves by path (``training.optimizer.lr``); lists stay whole."""
    out: dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, dict) and value:
            out.update(flatten(value, f"{prefix}{key}{sep}", sep))
        else:
            out[f"{prefix}{key}"] = value
    return out


def config_params(config: dict[str, Any]) -> dict[str, str | int | float | bool]:
    """A resolved config as a tracker's parameters: its set values by path (``training.optimizer.lr``),
    numbers, strings and booleans as they are, lists as JSON."""
    return {key: value if isinstance(value, (int, float, str, bool)) else as_text(value)
            for key, value in flatten(config).items() if value is not None and not key.startswith("$")}


SUMMARY_KEYS = ("split", "steps", "cases", "src", "corrected", "corrected_over_src", "headline", "metrics")


def held_out_scalars(evaluation: dict[str, Any]) -> dict[str, float]:
    """A held-out evaluation's numbers, each once: the headline ratio ``held_out/corrected_over_src``,
    and per metric and solver (``src``, ``corrected``) the mean and standard deviation over the cases
    (``held_out/mae/corrected/mean``), with the mean per channel when there are several
    (``held_out/mae/corrected/u``). A coupling's own numbers follow by path
    (``held_out/recovered_input/corrected_mae``). Per-step and per-case lists are left out."""
    out = {"held_out/corrected_over_src": float(evaluation["corrected_over_src"])}
    for metric, solvers in evaluation["metrics"].items():
        for solver, stats in solvers.items():
            where = f"held_out/{metric}/{solver}"
            out.update({f"{where}/mean": float(stats["mean"]), f"{where}/std": float(stats["std"])})
            channels = stats.get("per_channel", {})
            if len(channels) > 1:
                out.update({f"{where}/{name}": float(channel["mean"]) for name, channel in channels.items()})
    extra = {k: v for k, v in evaluation.items() if k not in SUMMARY_KEYS}
    out.update({k: float(v) for k, v in flatten(extra, "held_out/", "/").items()
                if isinstance(v, (int, float)) and not isinstance(v, bool)})
    return out


def as_text(value: Any) -> str:
    """A config value as a tracker's parameter: strings as they are, anything else as JSON."""
    return value if isinstance(value, str) else json.dumps(value)
