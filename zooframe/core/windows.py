"""Training windows: random cases and random start frames of the training reference."""

from __future__ import annotations

import torch

from ..plugins.simulator import Case
from .objective import Window


class WindowSampler:
    """Draws each step's ``per_step`` windows of ``unroll`` steps from ``reference``
    ``[N, T + 1, C, *S]`` of ``cases``; ``generator`` makes the draws reproducible."""

    def __init__(self, cases: list[Case], features: torch.Tensor, reference: torch.Tensor, unroll: int,
                 per_step: int | None, seed: int):
        self.cases, self.features, self.reference = cases, features, reference
        self.unroll = unroll
        self.per_step = min(per_step or len(cases), len(cases))
        self.seed = seed
        self.generator = torch.Generator().manual_seed(seed)

    def sample(self, step: int, generator: torch.Generator | None = None) -> Window:
        generator = generator or self.generator
        n, frames = self.reference.shape[:2]
        idx = torch.randperm(n, generator=generator)[: self.per_step]
        t0 = torch.randint(0, frames - self.unroll, (len(idx),), generator=generator)
        times = t0[:, None] + torch.arange(self.unroll + 1)
        dev = self.reference.device
        windows = self.reference[idx.to(dev)[:, None], times.to(dev)]  # [B, m + 1, C, *S]
        # start and targets as tensors of their own: a pickled view carries its whole storage to workers
        return Window([self.cases[i] for i in idx.tolist()], self.features[idx.to(dev)],
                      windows[:, 0].clone(), windows[:, 1:].clone(), seed=self.seed * 100_003 + step)
