"""The ``tensorboard`` logger: TensorBoard event files in the run folder."""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Any, Literal

from pydantic import Field

from ...plugins.logger import Logger, LoggerConfig, RunStart, config_params, held_out_scalars, require, step_scalars

HEADLINE = "held_out/corrected_over_src"
FOLDER = "tensorboard"  # in the run folder: `tensorboard --logdir RUN_FOLDER` (several runs: their parent folder)


class TensorBoardConfig(LoggerConfig):
    kind: Literal["tensorboard"]
    flush_s: float = Field(10, gt=0, description="seconds between writes of the events to disk while the run goes on")


def png_size(data: bytes) -> tuple[int, int]:
    """(height, width) from a PNG file's header."""
    width, height = struct.unpack(">II", data[16:24])
    return height, width


class TensorBoard(Logger):
    """Per step ``train/*`` scalars (loss, lr, queries, simulator seconds and calls, faults), the
    held-out metrics as ``held_out/*`` scalars, the figures as images, the config as text and as
    hyperparameters (the HParams tab). A resumed run writes on into the same folder and purges the
    steps after its checkpoint, so that no step shows twice."""

    Config = TensorBoardConfig

    def __init__(self, config: TensorBoardConfig):
        super().__init__(config)
        self._tb = require("torch.utils.tensorboard", "tensorboard", "tensorboard")
        self._summary = require("torch.utils.tensorboard.summary", "tensorboard", "tensorboard")
        self.writer = None

    def start(self, run: RunStart) -> None:
        # events from the steps after the checkpoint (or, for a new run, from an earlier run in the
        # same folder) are purged by readers: those steps are logged again
        self.writer = self._tb.SummaryWriter(str(run.folder / FOLDER), flush_secs=self.config.flush_s,
                                             purge_step=run.step + 1 if run.resumed else 0)
        experiment, session_start, self._session_end = self._summary.hparams(
            config_params(run.config), {HEADLINE: 0.0, "train/loss": 0.0})
        if not run.resumed:
            self.writer.add_text("config", "```json\n" + json.dumps(run.config, indent=2) + "\n```", 0)
            for summary in (experiment, session_start):
                self.writer.file_writer.add_summary(summary, 0)

    def log_step(self, metrics: dict[str, Any]) -> None:
        for tag, value in step_scalars(metrics).items():
            self.writer.add_scalar(tag, value, metrics["step"])

    def flush(self) -> None:
        self.writer.flush()

    def log_evaluation(self, evaluation: dict[str, Any], step: int) -> None:
        for tag, value in held_out_scalars(evaluation).items():
            self.writer.add_scalar(tag, value, step)

    def log_figures(self, paths: list[Path], step: int) -> None:
        summary_pb2 = require("tensorboard.compat.proto.summary_pb2", "tensorboard", "tensorboard")
        for path in paths:
            data = path.read_bytes()
            height, width = png_size(data)
            image = summary_pb2.Summary.Image(height=height, width=width, colorspace=4, encoded_image_string=data)
            self.writer.file_writer.add_summary(
                summary_pb2.Summary(value=[summary_pb2.Summary.Value(tag=f"figures/{path.stem}", image=image)]), step)

    def end(self, status: str) -> None:
        if self.writer is None:
            return
        if status == "completed":
            self.writer.file_writer.add_summary(self._session_end)
        self.writer.close()
