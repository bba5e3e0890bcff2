"""The training loop: a gradient per step (ZO estimate or autograd), then a plain torch.optim step."""

from __future__ import annotations

import time
from dataclasses import fields
from typing import Any, Callable

import torch

from .engine import LocalEngine
from .errors import ZooframeError
from .experiment import Experiment
from .estimators.base import StepInputs
from .objective import CorrectionObjective, Window
from .sparsity import SparsityPlan, initial_scores
from .threads import ThreadPolicy


def autograd_gradient(objective: CorrectionObjective, theta: torch.Tensor) -> tuple[torch.Tensor, float]:
    """The gradient of ``objective`` at ``theta`` by autograd (through the solver as the
    objective's ``solver_jacobian`` says) and the loss there: one rollout and its backward pass."""
    theta = theta.detach().requires_grad_(True)
    loss = objective(theta[None])[0]
    (grad,) = torch.autograd.grad(loss, theta)
    return grad, float(loss.detach())


PROVIDED_INPUTS = frozenset(f.name for f in fields(StepInputs))


def check_inputs(exp: Experiment) -> None:
    """A ZO run's estimator gets what it declares, and declares what the run would give it."""
    estimator, kind = exp.estimator, exp.config.estimator.kind
    unknown = set(estimator.inputs) - PROVIDED_INPUTS
    if unknown:
        raise ZooframeError(f"estimator {kind!r} asks for {', '.join(sorted(unknown))}, which the trainer does not "
                            f"provide (it provides: {', '.join(sorted(PROVIDED_INPUTS))})")
    if exp.config.sparsity.method != "none" and "mask" not in estimator.inputs:
        raise ZooframeError(f"estimator {kind!r} takes no sparsity mask; set sparsity.method to 'none' or use an "
                            "estimator whose inputs include 'mask' (the built-in cge, rge and guided do)")


class Trainer:
    """Runs ``training.steps`` optimizer steps; ``on_step`` receives each step's metrics."""

    def __init__(self, exp: Experiment, threads: ThreadPolicy | None = None):
        self.exp = exp
        self._own_threads = threads is None  # then close() restores them
        self.threads = threads or ThreadPolicy(exp.config.execution.threads)
        try:
            self._build()
        except BaseException:
            if self._own_threads:
                self.threads.restore()
            raise

    def _build(self) -> None:
        exp = self.exp
        cfg = exp.config.training
        if cfg.mode == "fo" and not exp.simulator.differentiable:
            raise ZooframeError(f"training.mode 'fo' needs a differentiable simulator, and "
                                f"{exp.config.simulator.kind!r} is not; use 'zo', 'nog' or 'non'")
        self.unroll = exp.window_steps()
        self.jacobian = "exact" if cfg.mode == "fo" else cfg.solver_jacobian
        if cfg.mode == "zo":
            check_inputs(exp)
        self.sampler = exp.sampler(self.unroll)
        if getattr(exp.config.model, "normalize", True):
            exp.fit_statistics(self.sampler)
        self.optimizer, self.scheduler = exp.optimizer()
        self.engine = exp.engine(self.sampler.per_step) if cfg.mode == "zo" else LocalEngine()
        self.generator = torch.Generator(device=exp.device).manual_seed(cfg.seed + 1)
        self.step = 0
        self.queries = 0
        try:
            self.plan = self._prune() if exp.config.sparsity.method != "none" else None
        except BaseException:
            self.engine.close()  # no worker processes or Ray actors left behind
            raise

    def _prune(self) -> SparsityPlan:
        """Pruning at initialization, on a window of its own (the training windows stay as dense runs see them)."""
        exp, seed = self.exp, self.exp.config.training.seed
        window = self.sampler.sample(-1, torch.Generator().manual_seed(seed + 2))
        objective = exp.objective(window)
        scores, used = initial_scores(exp.config.sparsity, exp.flat.get(), objective, self.engine.evaluate,
                                      torch.Generator(device=exp.device).manual_seed(seed + 3))
        self.queries += used
        plan = SparsityPlan(exp.config.sparsity, exp.flat, scores, seed + 4)
        plan.enforce()
        return plan

    @property
    def simulator_seconds(self) -> float:
        """Time inside simulator calls so far, here and in remote workers."""
        return self.exp.runner.seconds + self.engine.remote_seconds

    def close(self) -> None:
        self.engine.close()
        if self._own_threads:
            self.threads.restore()

    def gradient(self, window: Window) -> tuple[torch.Tensor, float, int]:
        """The step's gradient, the loss at the current parameters and the queries it took."""
        exp = self.exp
        objective = exp.objective(window, self.jacobian)
        theta = exp.flat.get()
        mask = self.plan.mask(self.step) if self.plan else None
        if exp.config.training.mode != "zo":
            grad, loss = autograd_gradient(objective, theta)
            return grad if mask is None else grad * mask, loss, 0
        given, loss, used = self.step_inputs(objective, theta, mask)
        with torch.no_grad():
            queries = exp.estimator.ask(theta, self.generator, given)
            values = self.engine.evaluate(objective, queries)
            bad = (~torch.isfinite(values)).sum()
            if bad:
                raise ZooframeError(f"{int(bad)} of {len(values)} queries returned NaN or Inf at step "
                                    f"{self.step}; no optimizer step was taken from them")
            grad = exp.estimator.tell(queries, values)
            used += len(queries)
            if queries.with_center:
                loss = float(values[0])
            elif loss is None:
                loss = float(objective(theta[None])[0])
                used += 1
        return grad, loss, used

    def step_inputs(self, objective: CorrectionObjective, theta: torch.Tensor,
                    mask: torch.Tensor | None) -> tuple[StepInputs, float | None, int]:
        """What the estimator declared it needs (``Estimator.inputs``), the loss at theta when
        computing them gave it, and the queries they took."""
        wants = self.exp.estimator.inputs
        surrogate, loss, used = None, None, 0
        if "surrogate" in wants:
            surrogate, loss = autograd_gradient(objective, theta)
            used = 1
            if mask is not None:
                surrogate = surrogate * mask
        return StepInputs(mask=mask if "mask" in wants else None, surrogate=surrogate), loss, used

    def run(self, on_step: Callable[[dict[str, Any]], None] = lambda m: None) -> None:
        cfg = self.exp.config.training
        start = time.perf_counter()
        first = self.step
        while self.step < cfg.steps:
            self.threads.update(force=self.step == first)
            sim_before = self.simulator_seconds
            step_start = time.perf_counter()
            grad, loss, used = self.gradient(self.sampler.sample(self.step))
            if not torch.isfinite(grad).all():
                raise ZooframeError(f"the gradient at step {self.step} is not finite; no optimizer step was taken")
            self.optimizer.zero_grad(set_to_none=True)
            self.exp.flat.set_grad(grad)
            lr = self.optimizer.param_groups[0]["lr"]
            self.optimizer.step()
            if self.plan:
                self.plan.enforce()
            self.scheduler.step()
            self.step += 1
            self.queries += used
            on_step({"step": self.step, "loss": loss, "queries": used, "queries_total": self.queries, "lr": lr,
                     "threads": self.threads.threads, "step_s": time.perf_counter() - step_start,
                     "sim_s": self.simulator_seconds - sim_before, "wall_s": time.perf_counter() - start})
