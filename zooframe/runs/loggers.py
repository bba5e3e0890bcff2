"""A run's loggers, called from one place: a logger that fails is reported once and dropped, and
the run goes on as if it had never been configured (``metrics.jsonl`` holds every step anyway)."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

from ..plugins.errors import first_line
from ..plugins.logger import Logger, RunStart


class LoggerDropped(UserWarning):
    """A logger failed; the run goes on without it."""


class RunLoggers:
    """The loggers of one run; :mod:`zooframe.runs.folder` calls them as the run goes."""

    def __init__(self, loggers: list[Logger]):
        self.loggers = list(loggers)
        self.started = False

    def _call(self, method: str, *args: Any) -> None:
        for logger in list(self.loggers):
            try:
                getattr(logger, method)(*args)
            except Exception as exc:  # never the run's failure; Ctrl-C still stops the run
                self.loggers.remove(logger)
                warnings.warn(f"logger {logger.config.kind!r} failed in {method} ({type(exc).__name__}: "
                              f"{first_line(exc)}) and is dropped; the run goes on without it (metrics.jsonl has "
                              "every step)", LoggerDropped, stacklevel=3)
                if method != "end":  # ended once, so that it sends what it holds and closes its files
                    try:
                        logger.end("failed")
                    except Exception:  # its failure is reported already
                        pass

    def start(self, run: RunStart) -> None:
        self.started = True
        self._call("start", run)

    def step(self, metrics: dict[str, Any]) -> None:
        self._call("log_step", metrics)

    def flush(self) -> None:
        """A checkpoint was saved: the steps up to it are made durable, as a resume expects."""
        self._call("flush")

    def completed(self, summary: dict[str, Any], figures: list[Path], files: list[Path]) -> None:
        """The run completed: its held-out evaluation, figures and result files, then the end."""
        step = summary.get("steps", 0)
        if "evaluation" in summary:
            self._call("log_evaluation", summary["evaluation"], step)
        if figures:
            self._call("log_figures", figures, step)
        self._call("log_files", files)
        self.end("completed")

    def end(self, status: str) -> None:
        if self.started:
            self.started = False
            self._call("end", status)
