"""The ``mlflow`` logger: an MLflow run per zooframe run, in a local store in the run folder or on a
tracking server."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, Literal

from pydantic import Field

from ...plugins import atomic
from ...plugins.logger import (
    Logger,
    LoggerConfig,
    RunStart,
    as_text,
    config_params,
    held_out_scalars,
    require,
    step_scalars,
)

STORE, ARTIFACTS, RUN_FILE = "mlflow.db", "mlartifacts", "mlflow.json"  # in the run folder
STATUS = {"completed": "FINISHED", "failed": "FAILED", "interrupted": "KILLED"}
PARAM_LENGTH = 6000  # MLflow's limit on a parameter's value
BATCH = 100  # parameters per request, MLflow's limit
SERVER_TIMEOUT_S = 5


class MLflowConfig(LoggerConfig):
    kind: Literal["mlflow"]
    tracking_uri: str | None = Field(
        None, description="where runs go: a tracking server (http://host:5000) or any MLflow store URI; default: "
        f"an SQLite store in the run folder ({STORE}, artifacts in {ARTIFACTS}/), seen with "
        f"`mlflow ui --backend-store-uri sqlite:///RUN_FOLDER/{STORE}`")
    experiment: str | None = Field(None, description="the MLflow experiment (default: the config's name)")
    run_name: str | None = Field(None, description="the MLflow run's name (default: the run folder's name)")
    flush_s: float = Field(5, ge=0, description="seconds between sends of the buffered step metrics (each send is "
                           "one request to a server)")


class MLflow(Logger):
    """Parameters: the resolved config flattened by path (``training.optimizer.lr``). Metrics: the
    ``train/*`` scalars per step, the ``held_out/*`` metrics at the end. Artifacts: the figures
    (under ``figures/``), ``model.pt`` and ``summary.json``. The MLflow run ends FINISHED, FAILED or
    KILLED as the zooframe run ends. Its id is kept in ``mlflow.json`` in the run folder, so that a
    resumed run continues the same MLflow run, logging only the steps it does not hold yet."""

    Config = MLflowConfig

    def __init__(self, config: MLflowConfig):
        super().__init__(config)
        self._mlflow = require("mlflow", "mlflow", "mlflow")
        self.client = self.run_id = None
        self.pending: list[Any] = []
        self.logged = 0  # the last step the MLflow run holds
        self.sent = time.monotonic()

    def start(self, run: RunStart) -> None:
        uri = self.uri = self.config.tracking_uri or f"sqlite:///{(run.folder / STORE).resolve()}"
        self._ask_server()
        self.client = self._mlflow.tracking.MlflowClient(tracking_uri=uri)
        self.run_file = run.folder / RUN_FILE
        kept = self._kept_run(uri) if run.resumed else None
        if kept is not None:
            self.run_id = kept
            self.client.update_run(kept, status="RUNNING")
            history = self.client.get_metric_history(kept, "train/wall_s")
            self.logged = max((m.step for m in history), default=0)
            return
        experiment = self._experiment(self.config.experiment or run.name, run.folder if not self.config.tracking_uri
                                      else None)
        self.run_id = self.client.create_run(experiment, run_name=self.config.run_name or run.folder.resolve().name,
                                             tags={"zooframe.run_folder": str(run.folder.resolve())}).info.run_id
        atomic.write_json(self.run_file, {"tracking_uri": uri, "run_id": self.run_id})
        Param = self._mlflow.entities.Param
        params = [Param(key, as_text(value)[:PARAM_LENGTH]) for key, value in config_params(run.config).items()]
        for i in range(0, len(params), BATCH):
            self.client.log_batch(self.run_id, params=params[i:i + BATCH])

    def _ask_server(self) -> None:
        """Raises at once when a tracking server does not answer: the client would retry it for minutes."""
        if self.uri.startswith(("http://", "https://")):
            try:
                urllib.request.urlopen(self.uri.rstrip("/") + "/health", timeout=SERVER_TIMEOUT_S).close()
            except urllib.error.HTTPError:
                pass  # it answers (a proxy in front of it may not know the path)

    def _kept_run(self, uri: str) -> str | None:
        """The run id that ``mlflow.json`` keeps for this tracking URI, if that run still exists."""
        try:
            kept = json.loads(self.run_file.read_text())
        except (OSError, ValueError):
            return None
        if not isinstance(kept, dict) or kept.get("tracking_uri") != uri:
            return None
        try:
            return self.client.get_run(kept["run_id"]).info.run_id
        except self._mlflow.exceptions.MlflowException:
            return None

    def _experiment(self, name: str, folder: Path | None) -> str:
        found = self.client.get_experiment_by_name(name)
        if found is not None:
            return found.experiment_id
        location = (folder / ARTIFACTS).resolve().as_uri() if folder is not None else None  # a server keeps its own
        try:
            return self.client.create_experiment(name, artifact_location=location)
        except self._mlflow.exceptions.MlflowException:  # another run (of a sweep) made it meanwhile
            return self.client.get_experiment_by_name(name).experiment_id

    def log_step(self, metrics: dict[str, Any]) -> None:
        step = metrics["step"]
        if step <= self.logged:  # logged before the run stopped, and the same again
            return
        stamp = int(time.time() * 1000)
        self.pending += [self._mlflow.entities.Metric(key, value, stamp, step)
                         for key, value in step_scalars(metrics).items()]
        if time.monotonic() - self.sent >= self.config.flush_s:
            self._send()

    def flush(self) -> None:
        self._send()

    def _send(self) -> None:
        while self.pending:  # a batch leaves pending only once sent: a failed send is tried again at the end
            self.client.log_batch(self.run_id, metrics=self.pending[:1000])  # MLflow's limit per request
            del self.pending[:1000]
        self.sent = time.monotonic()

    def log_evaluation(self, evaluation: dict[str, Any], step: int) -> None:
        stamp = int(time.time() * 1000)
        self.pending += [self._mlflow.entities.Metric(key, value, stamp, step)
                         for key, value in held_out_scalars(evaluation).items()]
        self._send()

    def log_figures(self, paths: list[Path], step: int) -> None:
        for path in paths:
            self.client.log_artifact(self.run_id, str(path), "figures")

    def log_files(self, paths: list[Path]) -> None:
        for path in paths:
            self.client.log_artifact(self.run_id, str(path))

    def end(self, status: str) -> None:
        if self.run_id is None:
            return
        self._ask_server()  # also after a failed send, when the logger is dropped and ended
        try:
            self._send()
        finally:  # a batch the server refuses does not leave the run RUNNING
            self.client.set_terminated(self.run_id, STATUS.get(status, "FAILED"))
