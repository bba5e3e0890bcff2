"""Query engines: how the rows of a query set are evaluated on an objective."""

from __future__ import annotations

from typing import Callable

import torch

from .estimators.base import QuerySet

Objective = Callable[[torch.Tensor], torch.Tensor]


class LocalEngine:
    """In-process: one batched objective call per chunk of at most ``chunk_size`` queries, so
    that the chunk size bounds memory."""

    def __init__(self, chunk_size: int = 256):
        self.chunk_size = chunk_size
        self.queries = 0

    def evaluate(self, objective: Objective, queries: QuerySet) -> torch.Tensor:
        n = len(queries)
        values = [objective(queries.materialize(a, a + self.chunk_size)) for a in range(0, n, self.chunk_size)]
        self.queries += n
        return torch.cat(values)
