"""Batched black-box objectives ``f(thetas [Q, d]) -> losses [Q]`` for the coupling patterns
(``objective.coupling`` in the config, one class each in :data:`COUPLINGS`).

The simulator sees one batch of Q x B rows per step (B cases per query); the model is evaluated
for all Q parameter vectors in one vectorized call. A coupling owns everything that differs
between patterns: how long a training window is, how its objective is built, the normalization
statistics, the config it refuses, and its held-out rollouts. A new pattern is a new class here
and an entry in :data:`COUPLINGS`.
"""

from __future__ import annotations

import copy
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import torch

from ..plugins.faults import SimulatorShapeError
from ..plugins.simulator import Case, Simulator
from .flat_params import FlatParams
from .losses import MSE, Loss


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
        kind = getattr(out, "dtype", None)
        if kind is not None and not (kind.is_floating_point if isinstance(kind, torch.dtype) else kind.kind == "f"):
            raise SimulatorShapeError(f"{type(self.simulator).__name__}.step returned values of dtype {kind}; a state "
                                      "is floating point (float32 or float64)")
        out = torch.as_tensor(out, dtype=state.dtype, device=state.device)
        if out.shape != state.shape:
            raise SimulatorShapeError(f"{type(self.simulator).__name__}.step returned shape {tuple(out.shape)} "
                                 f"for a state of shape {tuple(state.shape)}")
        return out


# how a term's gradient passes the simulator under autograd; "both" is for the terms' surrogates only
# (term_gradients): each term's under "drop" and under "identity"
SolverJacobian = Literal["exact", "drop", "identity", "both"]


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


class Coupling:
    """What every coupling shares: the window, the loss (:mod:`zooframe.core.losses`), the
    network's corrections for Q parameter vectors at once, and the solver call under autograd (see
    ``solver_jacobian`` below). ``config`` in the class methods is the experiment config; only the
    coupling's own fields are read."""

    name: ClassVar[str]
    summary: ClassVar[str]  # what the config's field description says of it

    def __init__(self, runner: SimulatorRunner, flat: FlatParams, window: Window,
                 solver_jacobian: SolverJacobian = "exact", loss: Loss = MSE):
        self.runner, self.flat, self.window = runner, flat, window
        self.solver_jacobian, self.loss = solver_jacobian, loss
        self.token = uuid.uuid4().hex  # lets remote workers rebuild this objective once per step

    @classmethod
    def window_steps(cls, config) -> int:
        """Reference steps per training window."""
        raise NotImplementedError

    @classmethod
    def for_window(cls, runner: SimulatorRunner, flat: FlatParams, window: Window, solver_jacobian: SolverJacobian,
                   config, loss: Loss = MSE) -> Coupling:
        """The training objective of one window."""
        return cls(runner, flat, window, solver_jacobian, loss)

    @classmethod
    def config_problems(cls, config) -> list[str]:
        """What in ``config`` this coupling cannot run (each a ``field: why`` sentence)."""
        return []

    @staticmethod
    def statistics(reference: torch.Tensor, cases: list[Case], runner: SimulatorRunner, steps: int):
        """Example inputs of the network and the changes it should make to them, from the training
        reference ``[N, T + 1, C, *S]`` (the normalization is fitted on them)."""
        raise NotImplementedError

    @classmethod
    def held_out(cls, runner: SimulatorRunner, model, cases: list[Case], features: torch.Tensor,
                 reference: torch.Tensor, config) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, dict[str, Any]]:
        """Held-out states ``(reference, src, corrected, extra)``, each ``[B, T + 1, C, *S]``: what the
        uncorrected and the corrected code give beside the reference they are judged against."""
        raise NotImplementedError

    def options(self) -> dict:
        """Constructor arguments beyond the window that change the loss (a worker needs them)."""
        return {"loss": self.loss}

    def portable(self) -> WindowRecipe:
        return WindowRecipe(self.token, type(self), self.window, _buffers(self.flat), self.options())

    def terms(self, thetas: torch.Tensor) -> torch.Tensor:
        """``[Q, m]``: the terms whose mean is the loss; a coupling without a natural split has one."""
        return self(thetas)[:, None]

    def term_gradients(self, theta: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``([m, d], [m])``: the gradient of each of :meth:`terms` at ``theta`` ``[d]`` by autograd
        (through the solver as ``solver_jacobian`` says), and the terms there. One rollout and a
        backward pass per term; a coupling may do better. With ``both``, ``[2m, d]`` and ``[2m]``: the
        m gradients with the Jacobian dropped, then the m with it taken as the identity (the terms
        twice, so that their mean is still the loss)."""
        if self.solver_jacobian == "both":
            grads, terms = zip(*(self._with_jacobian(j).term_gradients(theta) for j in ("drop", "identity")))
            return torch.cat(grads), torch.cat(terms)
        theta = theta.detach().requires_grad_(True)
        terms = self.terms(theta[None])[0]
        grads = [torch.autograd.grad(term, theta, retain_graph=i < len(terms) - 1)[0] for i, term in enumerate(terms)]
        return torch.stack(grads), terms.detach()

    def _with_jacobian(self, solver_jacobian: SolverJacobian) -> Coupling:
        twin = copy.copy(self)
        twin.solver_jacobian = solver_jacobian
        return twin

    def _solve(self, state: torch.Tensor, cases: list[Case], seed: int) -> torch.Tensor:
        """One solver step; under autograd, with the Jacobian ``solver_jacobian`` says."""
        if self.solver_jacobian == "exact" or not torch.is_grad_enabled():
            return self.runner(state, cases, seed)
        if self.solver_jacobian == "both":
            raise ValueError("solver_jacobian 'both' gives the terms' surrogates (term_gradients), not one gradient")
        with torch.no_grad():  # a black box: nothing is recorded through it
            p = self.runner(state.detach(), cases, seed)
        return p if self.solver_jacobian == "drop" else state + (p - state).detach()

    def _corrections(self, thetas: torch.Tensor, states: torch.Tensor) -> torch.Tensor:
        """The correction by the network with ``thetas[i]`` of ``states`` ``[B, C, *S]`` (shared by
        all queries) or of ``states[i]`` ``[Q, B, C, *S]``. Normalization runs once per row; only the
        network is evaluated per parameter vector."""
        model, q, features = self.flat.module, thetas.shape[0], self.window.features
        shared = states.ndim == self.window.start.ndim
        if shared:
            x = model.inputs(states, features)
        else:
            x = model.inputs(states.flatten(0, 1), features.repeat(q, 1)).unflatten(0, (q, -1))
        return model.outputs(self.flat.batched_forward(thetas, x, batched=(not shared,), submodule="net"))


class CorrectionObjective(Coupling):
    """Solver-in-the-loop: ``s[t+1] = P(s[t]) + model(P(s[t]))`` for m steps from each window's
    start, loss (``loss``, mean squared error by default) against the reference frames, averaged
    over the m steps.

    ``P(s[0])`` does not depend on the parameters: it is computed once and shared by every query.
    With m = 1 no gradient passes through the simulator (the NON baseline).

    Under autograd, ``solver_jacobian`` says what the simulator's Jacobian dP/ds is taken to be:
    ``exact`` differentiates through the simulator (it must be differentiable: FO-SOL); ``drop``
    takes it as zero (stop-gradient: each step's correction learns from the losses it feeds
    directly, on the states the corrected rollout visits; List et al. 2024); ``identity``
    passes the gradient straight through the solver (``P(s) = s`` for the backward pass). The
    last two call the simulator as a black box, at the rollout's own cost.
    """

    name = "correction"
    summary = "s[t+1] = P(s[t]) + model(P(s[t])), unrolled against the reference (solver-in-the-loop)"

    def __init__(self, runner: SimulatorRunner, flat: FlatParams, window: Window,
                 solver_jacobian: SolverJacobian = "exact", loss: Loss = MSE):
        super().__init__(runner, flat, window, solver_jacobian, loss)
        self.first = runner(window.start, window.cases, window.seed)

    @classmethod
    def window_steps(cls, config) -> int:
        """``training.unroll``; 1 in mode non (supervised one-step training)."""
        return 1 if config.training.mode == "non" else config.training.unroll

    @classmethod
    def held_out(cls, runner, model, cases, features, reference, config):
        """Rollouts from the reference's first frame, without and with the correction."""
        steps = reference.shape[1] - 1
        return (reference, rollout(runner, model, reference[:, 0], cases, features, steps, corrected=False),
                rollout(runner, model, reference[:, 0], cases, features, steps, corrected=True), {})

    @staticmethod
    def statistics(reference: torch.Tensor, cases: list[Case], runner: SimulatorRunner, steps: int):
        """Example states, and the corrections the network should make to them: one reference step
        minus one solver step, from every frame of ``reference`` ``[N, T + 1, C, *S]``."""
        frames = reference.shape[1]
        states = reference[:, :-1].reshape(-1, *reference.shape[2:])
        with torch.no_grad():
            solved = runner(states, [c for c in cases for _ in range(frames - 1)], seed=0)
        return states, reference[:, 1:].reshape(states.shape) - solved

    def __call__(self, thetas: torch.Tensor) -> torch.Tensor:
        terms = self._step_losses(thetas)
        return sum(terms) / len(terms)

    def terms(self, thetas: torch.Tensor) -> torch.Tensor:
        """``[Q, m]``: the loss of each unrolled step (their mean is the loss)."""
        return torch.stack(self._step_losses(thetas), dim=1)

    def term_gradients(self, theta: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """As :meth:`Coupling.term_gradients`, with one rollout and one backward pass for all terms
        when the solver is a black box (``solver_jacobian`` ``identity``, ``drop`` or ``both``): the
        network runs with copies of ``theta`` as queries, each differentiated for one term alone,
        and the solver once per step, on rows that are equal in value in every copy and not
        differentiated through. ``drop``: copy k runs step k's correction alone, of the solver's
        detached output. ``identity``: copy k runs every step up to k, the solver passed straight
        through (``P(s) = s`` for the backward pass). ``both``: the two sets of copies side by side
        on the same solver calls. About 0.6x the time of m backward passes on the main job
        (benchmarks/zo_step.py)."""
        if self.solver_jacobian == "exact":
            return super().term_gradients(theta)
        w, steps = self.window, self.window.targets.shape[1]
        families = ("drop", "identity") if self.solver_jacobian == "both" else (self.solver_jacobian,)
        copies = {j: theta.detach().expand(steps, -1).clone().requires_grad_(True) for j in families}
        losses: dict[str, list[torch.Tensor]] = {j: [] for j in families}  # each family's terms
        # P(s[t]) in value; the identity copies' rows (copy t on); the state the solver steps next
        solved, stretch, state = self.first, None, None
        for t in range(steps):
            if state is not None:
                with torch.no_grad():
                    solved = self.runner(state, w.cases, w.seed + t)
            if "drop" in copies:
                s = solved + self._corrections(copies["drop"][t:t + 1], solved)
                losses["drop"].append(self.loss(s, w.targets[:, t]))
                state = s[0].detach()
            if "identity" in copies:
                p = solved if stretch is None else stretch[1:] + (solved - stretch[-1]).detach()
                stretch = p + self._corrections(copies["identity"][t:], p)
                losses["identity"].append(self.loss(stretch[:1], w.targets[:, t]))
                state = stretch[-1].detach()
        terms = torch.cat([torch.cat(losses[j]) for j in families])
        grads = torch.autograd.grad(terms.sum(), [copies[j] for j in families])
        return torch.cat(grads), terms.detach()

    def _step_losses(self, thetas: torch.Tensor) -> list[torch.Tensor]:
        w = self.window
        q, b, steps = thetas.shape[0], len(w.cases), w.targets.shape[1]
        s = self.first + self._corrections(thetas, self.first)
        losses = [self.loss(s, w.targets[:, 0])]
        for t in range(1, steps):
            p = self._solve(s.reshape(q * b, *s.shape[2:]), w.cases * q, w.seed + t).view_as(s)
            s = p + self._corrections(thetas, p)
            losses.append(self.loss(s, w.targets[:, t]))
        return losses


class ModelThenSimulatorObjective(Coupling):
    """``y = P^k(u)`` with ``u = x + model(x)``: the network turns an observation ``x`` (each
    window's last frame, k reference steps after its start) into the input of the black-box code,
    which should reproduce the observation in k steps; loss (``loss``) of ``y`` against ``x``.
    This trains a network that predicts a code's inputs (the initial state behind an observation;
    in materials, the processing behind a target microstructure).

    With ``supervised`` (the NON baseline) the code is not called: loss of ``u`` against the
    window's start, the input that did produce the observation. Under autograd the Jacobian of
    the code is as ``solver_jacobian`` says (``drop`` leaves no gradient: the network reaches the
    loss only through the code).
    """

    name = "model_then_simulator"
    summary = ("y = P^k(x + model(x)), the network predicts the code's input whose k steps reproduce the "
               "observation x (inverse problems)")

    def __init__(self, runner: SimulatorRunner, flat: FlatParams, window: Window,
                 solver_jacobian: SolverJacobian = "exact", loss: Loss = MSE, supervised: bool = False):
        super().__init__(runner, flat, window, solver_jacobian, loss)
        self.supervised = supervised

    @classmethod
    def window_steps(cls, config) -> int:
        """``objective.simulator_steps``: the code steps from the network's prediction to the observation."""
        return config.objective.simulator_steps

    @classmethod
    def for_window(cls, runner, flat, window, solver_jacobian, config, loss=MSE):
        return cls(runner, flat, window, solver_jacobian, loss, supervised=config.training.mode == "non")

    @classmethod
    def config_problems(cls, config) -> list[str]:
        steps = config.objective.simulator_steps
        problems = [f"objective.simulator_steps ({steps}) must not exceed {name} ({n})"
                    for name, n in (("training.horizon", config.training.horizon),
                                    ("evaluation.steps", config.evaluation.steps)) if steps > n]
        if config.training.solver_jacobian == "drop" and config.training.mode == "nog":
            problems.append("training.solver_jacobian 'drop' leaves model_then_simulator no gradient in mode 'nog' "
                            "(the network reaches the loss only through the code); use 'identity'")
        return problems

    @classmethod
    @torch.no_grad()
    def held_out(cls, runner, model, cases, features, reference, config):
        """Every reference frame from k on is an observation x; ``corrected`` is what the code makes
        in k steps of the network's input ``x + model(x)``, ``src`` what it makes of ``x`` itself (no
        network). Frame j of each holds observation time k + j - 1 (frame 0: the initial states,
        shared). ``recovered_input`` compares the network's input with the states that did produce
        the observations."""
        k = config.objective.simulator_steps
        n, times = len(cases), reference.shape[1] - k
        x = reference[:, k:].flatten(0, 1)
        rows = [c for c in cases for _ in range(times)]
        u = x + model(x, features.repeat_interleave(times, dim=0))

        def code(s):
            for t in range(k):
                s = runner(s, rows, t)
            return s.unflatten(0, (n, times))

        def with_start(frames):
            return torch.cat([reference[:, :1], frames], dim=1)

        truth = reference[:, :-k].flatten(0, 1)
        extra = {"recovered_input": {"corrected_mae": float((u - truth).abs().mean()),
                                     "observation_mae": float((x - truth).abs().mean())}, "simulator_steps": k}
        return with_start(reference[:, k:]), with_start(code(x)), with_start(code(u)), extra

    def options(self) -> dict:
        return {**super().options(), "supervised": self.supervised}

    @staticmethod
    def statistics(reference: torch.Tensor, cases: list[Case], runner: SimulatorRunner, steps: int):
        """Observations, and the changes that take each back to the state k steps before it."""
        shape = (-1, *reference.shape[2:])
        return reference[:, steps:].reshape(shape), (reference[:, :-steps] - reference[:, steps:]).reshape(shape)

    def __call__(self, thetas: torch.Tensor) -> torch.Tensor:
        w = self.window
        q, b, x = thetas.shape[0], len(w.cases), w.targets[:, -1]
        u = x + self._corrections(thetas, x)  # [Q, B, C, *S]
        if self.supervised:
            return self.loss(u, w.start)
        y = u.reshape(q * b, *u.shape[2:])
        for t in range(w.targets.shape[1]):
            y = self._solve(y, w.cases * q, w.seed + t)
        return self.loss(y.view_as(u), x)


@dataclass(frozen=True)
class WindowRecipe(Recipe):
    """Either coupling, rebuilt on a worker from its window and the network's buffers."""

    token: str
    objective: type[Coupling]
    window: Window
    buffers: dict[str, torch.Tensor]
    options: dict

    def build(self, runner, flat):
        flat.module.load_state_dict(self.buffers, strict=False)
        return self.objective(runner, flat, self.window, **self.options)


COUPLINGS: dict[str, type[Coupling]] = {c.name: c for c in (CorrectionObjective, ModelThenSimulatorObjective)}


@torch.no_grad()
def rollout(runner: SimulatorRunner, model, start: torch.Tensor, cases: Sequence[Case], features: torch.Tensor,
            steps: int, corrected: bool, seed: int = 0) -> torch.Tensor:
    """States ``[B, steps + 1, C, *S]`` from ``start``, with or without the learned correction."""
    frames, s = [start], start
    for t in range(steps):
        s = runner(s, cases, seed + t)
        if corrected:
            s = s + model(s, features)
        frames.append(s)
    return torch.stack(frames, dim=1)
