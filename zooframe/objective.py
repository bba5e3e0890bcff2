"""Batched black-box objectives ``f(thetas [Q, d]) -> losses [Q]`` for the two coupling patterns.

The simulator sees one batch of Q x B rows per step (B cases per query); the model is evaluated
for all Q parameter vectors in one vectorized call.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from typing import Literal, Sequence

import torch

from .faults import SimulatorShapeError
from .flat_params import FlatParams
from .simulator import Case, Simulator


class SimulatorRunner:
    """Calls a simulator's step, checks what comes back, and counts calls and seconds."""

    def __init__(self, simulator: Simulator):
        self.simulator = simulator
        self.calls = 0
        self.rows = 0
        self.seconds = 0.0

    def __call__(self, state: torch.Tensor, cases: Sequence[Case], seed: int) -> torch.Tensor:
        start = time.perf_counter()
        out = self.simulator.step(state, cases, seed)
        self.seconds += time.perf_counter() - start
        self.calls += 1
        self.rows += state.shape[0]
        out = torch.as_tensor(out, dtype=state.dtype, device=state.device)
        if out.shape != state.shape:
            raise SimulatorShapeError(f"{type(self.simulator).__name__}.step returned shape {tuple(out.shape)} "
                                 f"for a state of shape {tuple(state.shape)}")
        return out


SolverJacobian = Literal["exact", "drop", "identity"]


def _per_query_mse(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return (pred - target).pow(2).flatten(1).mean(dim=1)


class Recipe:
    """What a worker needs to rebuild an objective on its own simulator and network: see
    :meth:`build`. ``token`` is the same for every chunk of one objective, so that a worker
    builds it once per step. Subclasses are dataclasses of picklable fields."""

    token: str

    def build(self, runner: SimulatorRunner, flat: FlatParams):
        raise NotImplementedError


def _buffers(flat: FlatParams) -> dict[str, torch.Tensor]:
    return dict(flat.module.named_buffers())


@dataclass(frozen=True)
class Window:
    """B training windows: start states, the m reference frames after them, and their cases."""

    cases: list[Case]
    features: torch.Tensor  # [B, F]
    start: torch.Tensor  # [B, C, *S]
    targets: torch.Tensor  # [B, m, C, *S]
    seed: int


class CorrectionObjective:
    """Solver-in-the-loop: ``s[t+1] = P(s[t]) + model(P(s[t]))`` for m steps from each window's
    start, loss = mean squared error against the reference frames, averaged over the m steps.

    ``P(s[0])`` does not depend on the parameters: it is computed once and shared by every query.
    With m = 1 no gradient passes through the simulator (the NON baseline).

    Under autograd, ``solver_jacobian`` says what the simulator's Jacobian dP/ds is taken to be:
    ``exact`` differentiates through the simulator (it must be differentiable: FO-SOL); ``drop``
    takes it as zero (stop-gradient: each step's correction learns from the losses it feeds
    directly, on the states the corrected rollout visits; List et al. 2024); ``identity``
    passes the gradient straight through the solver (``P(s) = s`` for the backward pass). The
    last two call the simulator as a black box, at the rollout's own cost.
    """

    def __init__(self, runner: SimulatorRunner, flat: FlatParams, window: Window,
                 solver_jacobian: SolverJacobian = "exact"):
        self.runner, self.flat, self.window = runner, flat, window
        self.solver_jacobian = solver_jacobian
        self.token = uuid.uuid4().hex  # lets remote workers rebuild this objective once per step
        self.first = runner(window.start, window.cases, window.seed)

    def portable(self) -> "CorrectionRecipe":
        return CorrectionRecipe(self.token, self.window, _buffers(self.flat))

    def __call__(self, thetas: torch.Tensor) -> torch.Tensor:
        w = self.window
        q, b, steps = thetas.shape[0], len(w.cases), w.targets.shape[1]
        s = self.first + self._corrections(thetas, self.first)
        loss = _per_query_mse(s, w.targets[:, 0])
        for t in range(1, steps):
            p = self._solve(s.reshape(q * b, *s.shape[2:]), w.cases * q, w.seed + t).view_as(s)
            s = p + self._corrections(thetas, p)
            loss = loss + _per_query_mse(s, w.targets[:, t])
        return loss / steps

    def _solve(self, state: torch.Tensor, cases: list[Case], seed: int) -> torch.Tensor:
        """One solver step; under autograd, with the Jacobian ``solver_jacobian`` says."""
        if self.solver_jacobian == "exact" or not torch.is_grad_enabled():
            return self.runner(state, cases, seed)
        with torch.no_grad():  # a black box: nothing is recorded through it
            p = self.runner(state.detach(), cases, seed)
        return p if self.solver_jacobian == "drop" else state + (p - state).detach()

    def _corrections(self, thetas: torch.Tensor, states: torch.Tensor) -> torch.Tensor:
        """The correction by the network with ``thetas[i]`` of ``states`` ``[B, C, *S]`` (shared by
        all queries) or of ``states[i]`` ``[Q, B, C, *S]``. Normalization runs once per row; only the
        network is evaluated per parameter vector."""
        model, q, features = self.flat.module, thetas.shape[0], self.window.features
        shared = states.ndim == self.first.ndim
        if shared:
            x = model.inputs(states, features)
        else:
            x = model.inputs(states.flatten(0, 1), features.repeat(q, 1)).unflatten(0, (q, -1))
        return model.outputs(self.flat.batched_forward(thetas, x, batched=(not shared,), submodule="net"))


@dataclass(frozen=True)
class CorrectionRecipe(Recipe):
    token: str
    window: Window
    buffers: dict[str, torch.Tensor]

    def build(self, runner, flat):
        flat.module.load_state_dict(self.buffers, strict=False)
        return CorrectionObjective(runner, flat, self.window)


class ModelThenSimulatorObjective:
    """``y = P^k(model(x))``: the network predicts inputs of a black-box code, loss = mean squared
    error of the code's output against labels."""

    def __init__(self, runner: SimulatorRunner, flat: FlatParams, inputs: torch.Tensor, labels: torch.Tensor,
                 cases: list[Case], seed: int = 0, simulator_steps: int = 1):
        self.runner, self.flat = runner, flat
        self.inputs, self.labels, self.cases = inputs, labels, cases
        self.seed, self.simulator_steps = seed, simulator_steps
        self.token = uuid.uuid4().hex

    def portable(self) -> "ModelThenSimulatorRecipe":
        return ModelThenSimulatorRecipe(self.token, self.inputs, self.labels, self.cases, self.seed,
                                        self.simulator_steps, _buffers(self.flat))

    def __call__(self, thetas: torch.Tensor) -> torch.Tensor:
        q = thetas.shape[0]
        y = self.flat.batched_forward(thetas, self.inputs, batched=(False,))
        shape = y.shape
        for k in range(self.simulator_steps):
            y = self.runner(y.reshape(-1, *shape[2:]), self.cases * q, self.seed + k).view(shape)
        return _per_query_mse(y, self.labels)


@dataclass(frozen=True)
class ModelThenSimulatorRecipe(Recipe):
    token: str
    inputs: torch.Tensor
    labels: torch.Tensor
    cases: list[Case]
    seed: int
    simulator_steps: int
    buffers: dict[str, torch.Tensor]

    def build(self, runner, flat):
        flat.module.load_state_dict(self.buffers, strict=False)
        return ModelThenSimulatorObjective(runner, flat, self.inputs, self.labels, self.cases, self.seed,
                                           self.simulator_steps)
