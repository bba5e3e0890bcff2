"""The estimator interface (ask/tell) and the structured query sets it exchanges with the engine.

A query set describes parameter vectors ``center + offset_j * v_j`` without building them: the
engine materializes one chunk at a time, so a set of d coordinate queries never becomes a dense
``[d, d]`` matrix.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from typing import ClassVar

import torch

from .base import Plugin


@dataclass(frozen=True)
class QuerySet:
    """Parameter vectors ``center`` (row 0, when ``with_center``) and ``center + offsets[j] * v_j``.

    Every field but ``center`` and ``with_center`` holds one entry per perturbed query.
    """

    center: torch.Tensor  # [d]
    offsets: torch.Tensor  # [k], signed step sizes
    with_center: bool

    def __len__(self) -> int:
        return int(self.with_center) + len(self.offsets)

    def materialize(self, start: int, stop: int) -> torch.Tensor:
        """Rows ``start:stop`` as a dense ``[stop - start, d]`` tensor."""
        stop = min(stop, len(self))
        rows = self.center.expand(stop - start, -1).clone()
        first = max(start - int(self.with_center), 0)
        last = stop - int(self.with_center)
        if last > first:
            rows[stop - start - (last - first) :] += self._perturbations(first, last)
        return rows

    def subset(self, start: int, stop: int) -> QuerySet:
        """Rows ``start:stop`` as a query set of their own, with its own storage: what travels
        to a worker instead of ``[stop - start, d]`` materialized rows."""
        c = int(self.with_center)
        first, last = max(start - c, 0), max(min(stop, len(self)) - c, 0)
        per_query = {f.name: getattr(self, f.name)[first:last].clone() for f in fields(self)
                     if f.name not in ("center", "with_center")}
        return replace(self, with_center=self.with_center and start == 0 < stop, **per_query)

    def _perturbations(self, first: int, last: int) -> torch.Tensor:
        raise NotImplementedError


@dataclass(frozen=True)
class CoordinateQueries(QuerySet):
    """``v_j = e_{coords[j]}``: one coordinate perturbed per query."""

    coords: torch.Tensor  # [k] long

    def _perturbations(self, first: int, last: int) -> torch.Tensor:
        delta = torch.zeros(last - first, self.center.numel(), dtype=self.center.dtype, device=self.center.device)
        rows = torch.arange(last - first, device=self.center.device)
        delta[rows, self.coords[first:last]] = self.offsets[first:last]
        return delta


@dataclass(frozen=True)
class DirectionQueries(QuerySet):
    """``v_j = directions[j]``: dense random directions (q is small next to d)."""

    directions: torch.Tensor  # [k, d]

    def _perturbations(self, first: int, last: int) -> torch.Tensor:
        return self.offsets[first:last, None] * self.directions[first:last]


@dataclass(frozen=True)
class StepInputs:
    """What the trainer hands :meth:`Estimator.ask` besides theta. An entry is filled only when the
    estimator's ``inputs`` names it; the rest stay None.

    - ``mask`` ``[d]`` (bool): the active coordinates of a sparse model or gradient;
    - ``surrogate`` ``[d]``: a free, biased gradient at theta, from autograd through the network's
      corrections along the rollout with the simulator's Jacobian taken as the identity or dropped
      (``training.solver_jacobian``); never the gradient itself;
    - ``surrogates`` ``[m, d]``: the same surrogate for each of the loss's m terms (one per
      unrolled step of the correction objective), from one rollout; their mean is ``surrogate``.
      With ``training.solver_jacobian`` ``both``, ``[2m, d]``: the m with the Jacobian dropped, then
      the m with it taken as the identity.
      Each later step's term drops more of the simulator's Jacobian, so their span holds more of
      the true gradient than their sum does.
    - ``loss``: the loss at theta (a float), as the rollout that gives ``surrogate`` or
      ``surrogates`` computes it on the way: the centre of forward differences, so that they spend
      no query on theta.
    """

    mask: torch.Tensor | None = None
    surrogate: torch.Tensor | None = None
    surrogates: torch.Tensor | None = None
    loss: float | None = None


NO_INPUTS = StepInputs()


class Estimator(Plugin):
    """Zeroth-order gradient estimator in two phases: which queries to evaluate (:meth:`ask`) and
    how to combine their values into a gradient (:meth:`tell`).

    ``inputs`` declares which :class:`StepInputs` entries :meth:`ask` reads; the trainer computes
    those and only those, and refuses a run that would hand the estimator something it ignores
    (a sparsity mask to an estimator without ``"mask"``)."""

    category = "estimator"
    required = (("ask",), ("tell",))
    inputs: ClassVar[frozenset[str]] = frozenset({"mask"})
    partial: ClassVar[bool] = False

    def state_dict(self) -> dict:
        """What the estimator carries from step to step (tensors, numbers, lists), for checkpoints."""
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass

    def ask(self, theta: torch.Tensor, generator: torch.Generator, given: StepInputs = NO_INPUTS) -> QuerySet:
        """Queries around ``theta`` ``[d]``, from the inputs the estimator declared."""
        raise NotImplementedError

    def tell(self, queries: QuerySet, values: torch.Tensor, usable: torch.Tensor | None = None) -> torch.Tensor | None:
        """Gradient estimate ``[d]`` from the losses ``values`` ``[len(queries)]``.

        ``usable`` (bool ``[len(queries)]``) comes only to an estimator with ``partial = True``, when
        the fault policy left some queries out of the step: the estimate must use the others alone,
        rescaled as the estimator's docstring states, or be None when they give none. An estimator
        without ``partial`` loses the whole step to one skipped query."""
        raise NotImplementedError


def active_coordinates(theta: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    if mask is None:
        return torch.arange(theta.numel(), device=theta.device)
    if mask.shape != theta.shape:
        raise ValueError(f"mask has shape {tuple(mask.shape)}, expected {tuple(theta.shape)}")
    return mask.nonzero().flatten()


def on_coordinates(rows: torch.Tensor, coords: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
    """``[k, d]`` directions that are ``rows`` ``[k, n]`` on the active ``coords`` and 0 elsewhere."""
    directions = torch.zeros(len(rows), theta.numel(), dtype=theta.dtype, device=theta.device)
    directions[:, coords] = rows
    return directions


def antithetic(theta: torch.Tensor, directions: torch.Tensor, mu: float) -> DirectionQueries:
    """The pairs ``theta + mu v_j`` (queries j) and ``theta - mu v_j`` (queries j + k)."""
    step = torch.full((len(directions),), mu, dtype=theta.dtype, device=theta.device)
    return DirectionQueries(theta.detach(), torch.cat([step, -step]), False, torch.cat([directions, directions]))


def pair_slopes(queries: DirectionQueries, values: torch.Tensor,
                usable: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
    """Central-difference slopes ``[k]`` of an :func:`antithetic` set, and which pairs were kept."""
    k = len(queries.offsets) // 2
    slopes = (values[:k] - values[k:]) / (2 * queries.offsets[:k])
    return slopes, usable_pairs(usable, k).to(slopes.device)


def usable_pairs(usable: torch.Tensor | None, q: int) -> torch.Tensor:
    """Of q antithetic pairs (query j and j + q), those whose two queries are both usable."""
    if usable is None:
        return torch.ones(q, dtype=torch.bool)
    return usable[:q] & usable[q : 2 * q]


def orthonormal_basis(vectors: torch.Tensor, rtol: float = 1e-6) -> torch.Tensor:
    """An orthonormal basis ``[n, r]`` of the columns' span, without the directions of (numerically)
    zero or repeated columns."""
    u, s, _ = torch.linalg.svd(vectors, full_matrices=False)
    return u[:, s > rtol * s.max().clamp_min(torch.finfo(s.dtype).tiny)]
