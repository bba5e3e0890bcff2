"""Learning-rate schedules, built from ``training.schedule``.

``cosine`` spans ``training.steps``, or the ``training.budget`` when one is set: a run that stops on
its budget (wall seconds, simulator calls) does not know its step count in advance, so there the
decay follows the spent fraction of training, the largest of steps, seconds and calls spent over
their limits, and reaches ``min_lr`` as the budget runs out.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
from torch.optim.lr_scheduler import LRScheduler

from ..config.sections import TrainingConfig


class BudgetCosine(LRScheduler):
    """Cosine decay from each group's initial rate to ``min_lr`` over ``progress()`` (0 to 1)."""

    def __init__(self, optimizer: torch.optim.Optimizer, progress: Callable[[], float], min_lr: float):
        self.progress, self.min_lr = progress, min_lr
        super().__init__(optimizer)

    def get_lr(self) -> list[float]:
        decay = (1 + math.cos(math.pi * min(1.0, self.progress()))) / 2
        return [self.min_lr + (base - self.min_lr) * decay for base in self.base_lrs]

    def state_dict(self) -> dict[str, Any]:
        return {k: v for k, v in super().state_dict().items() if k != "progress"}


def schedule(optimizer: torch.optim.Optimizer, training: TrainingConfig, progress: Callable[[], float]) -> LRScheduler:
    """The scheduler of ``training.schedule``; ``progress`` (the spent fraction of training) drives
    ``cosine`` when a budget limit is set."""
    s = training.schedule
    budgeted = training.budget.seconds is not None or training.budget.simulator_calls is not None
    if s.name == "cosine" and budgeted:
        return BudgetCosine(optimizer, progress, s.min_lr)
    if s.name == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=training.steps, eta_min=s.min_lr)
    if s.name == "step":
        return torch.optim.lr_scheduler.StepLR(optimizer, step_size=s.step_size, gamma=s.gamma)
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda _: 1.0)
