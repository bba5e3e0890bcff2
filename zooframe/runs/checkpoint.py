"""Checkpoints of a run in progress, for ``zooframe run --resume``: everything a step depends on.

The model (with its normalization buffers), the optimizer and the schedule, the sparsity
plan's scores, current mask and generator, the estimator's own state (e.g. the guided
estimator's surrogate history), the trainer's and the window sampler's generators, the global
torch (CPU and CUDA), NumPy and Python generators, the step, the query and fault counts, and the
wall time so far. A run resumed from a checkpoint takes the same steps as one that was never
stopped, bit for bit, given the same thread count.

Written atomically (:mod:`zooframe.plugins.atomic`) and read with ``weights_only=True``: only
tensors, numbers, strings and containers, so a crafted file cannot run code.
"""

from __future__ import annotations

import pickle
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..plugins.atomic import save_torch
from ..plugins.errors import ZooframeError, first_line

FORMAT = 1


def capture(trainer, wall_s: float) -> dict[str, Any]:
    """The state of ``trainer`` (a :class:`zooframe.runs.trainer.Trainer`) after its last step,
    with the process-wide generators and the wall time so far."""
    numpy_state = np.random.get_state()
    return {
        "format": FORMAT,
        **trainer.state_dict(),
        "wall_s": wall_s,
        "torch_rng": torch.get_rng_state(),
        "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else [],  # no context for a CPU run
        "numpy_rng": [numpy_state[0], torch.from_numpy(numpy_state[1].astype(np.int64)), *numpy_state[2:]],
        "python_rng": [random.getstate()[0], list(random.getstate()[1]), random.getstate()[2]],
    }


class CheckpointError(ZooframeError):
    """A checkpoint that this run cannot continue from: damaged, edited, or another run's."""


def restore(trainer, state: dict[str, Any]) -> None:
    """Put ``trainer`` and the process-wide generators back where :func:`capture` left them; a
    checkpoint that does not fit is a :class:`CheckpointError` saying what does not."""
    steps, step = trainer.exp.config.training.steps, state.get("step")
    if isinstance(step, bool) or not isinstance(step, int) or not 0 <= step <= steps:
        raise CheckpointError(f"its step is {step!r}, and this run's steps go from 0 to {steps}")
    try:
        _restore(trainer, state)
    except (KeyError, IndexError, TypeError, ValueError, RuntimeError, AttributeError) as exc:
        what = f"it lacks {exc}" if isinstance(exc, KeyError) else first_line(exc)[:300]
        raise CheckpointError(f"{what} ({type(exc).__name__})") from None


def _restore(trainer, state: dict[str, Any]) -> None:
    trainer.load_state_dict(state)
    trainer.elapsed_before = state["wall_s"]
    torch.set_rng_state(state["torch_rng"])
    if state["cuda_rng"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda_rng"])
    name, keys, *rest = state["numpy_rng"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), *rest))
    version, internal, gauss = state["python_rng"]
    random.setstate((version, tuple(internal), gauss))


def save(path: Path, state: dict[str, Any]) -> None:
    save_torch(path, state)


def load_tensors(path: Path, device: str | torch.device = "cpu") -> Any:
    """A run folder's file (weights, masks, checkpoints), tensors and plain data only: a crafted
    pickle is refused, not run."""
    try:
        return torch.load(path, map_location=device, weights_only=True)
    except pickle.UnpicklingError:
        raise ZooframeError(f"cannot read {path}: it holds objects other than tensors and plain data, which are "
                            "refused, never run; was it written by zooframe?") from None
    except Exception as exc:  # a truncated or damaged file
        raise ZooframeError(f"cannot read {path} ({type(exc).__name__}: {first_line(exc)})") from None


def load(path: Path) -> dict[str, Any]:
    state = load_tensors(path)
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise ZooframeError(f"{path} is not a zooframe checkpoint of format {FORMAT}")
    return state
