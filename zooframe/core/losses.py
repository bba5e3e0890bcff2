"""The training losses (``objective.loss`` in the config), one value per query.

Every coupling compares predicted states ``[Q, B, C, *S]`` (Q queries, B cases, C channels) with
targets ``[B, C, *S]`` through a :class:`Loss` and gets ``[Q]`` back, so that the batched ZO
objective, autograd (modes fo, nog, non) and the workers all train the same loss. A loss is a
frozen dataclass of plain values: it travels to the workers inside the objective's recipe.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

LOSSES: dict[str, str] = {
    "mse": "mean squared error",
    "mae": "mean absolute error",
    "huber": "Huber: squared below delta, absolute (slope delta) above",
    "relative_l2": "L2 norm of the error over that of the target, per case",
}

TINY = 1e-30  # keeps relative_l2 finite on an all-zero target


@dataclass(frozen=True)
class Loss:
    """``name`` from :data:`LOSSES`; ``delta`` (huber) in the state's units; ``weights``: one factor
    per channel of the state that multiplies that channel's errors (None: all 1)."""

    name: str = "mse"
    delta: float = 1.0
    weights: tuple[float, ...] | None = None

    def __post_init__(self):
        if self.name not in LOSSES:
            raise ValueError(f"unknown loss {self.name!r}; known: {', '.join(LOSSES)}")

    def __call__(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """``[Q]``: the loss of each query's ``pred`` ``[Q, B, C, *S]`` against ``target``
        ``[B, C, *S]``, averaged over cases (and, except relative_l2, over every entry)."""
        error = pred - target
        if self.name == "relative_l2":
            squares = self._weighted(error.pow(2)).flatten(2).sum(dim=2)
            norms = self._weighted(target.pow(2).expand_as(error)).flatten(2).sum(dim=2)
            # clamped: the square root's slope at an exact match would be infinite (a NaN gradient)
            return (squares / norms.clamp_min(TINY)).clamp_min(TINY).sqrt().mean(dim=1)
        if self.name == "mse":
            terms = error.pow(2)
        elif self.name == "mae":
            terms = error.abs()
        else:
            terms = torch.nn.functional.huber_loss(error, torch.zeros_like(error), reduction="none", delta=self.delta)
        return self._weighted(terms).flatten(1).mean(dim=1)

    def _weighted(self, terms: torch.Tensor) -> torch.Tensor:
        if self.weights is None:
            return terms
        weights = torch.as_tensor(self.weights, dtype=terms.dtype, device=terms.device)
        return terms * weights.view(-1, *[1] * (terms.ndim - 3))

    def describe(self) -> str:
        """The loss as figures and the command line name it, e.g. ``huber (delta 0.1)``."""
        text = self.name + (f" (delta {self.delta:g})" if self.name == "huber" else "")
        return text + (" weighted per channel" if self.weights is not None else "")


MSE = Loss()
