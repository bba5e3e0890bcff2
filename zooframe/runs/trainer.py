"""The training loop: a gradient per step (ZO estimate or autograd), then a plain torch.optim step."""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import fields
from typing import Any

import torch

from ..core.objective import CorrectionObjective, Window
from ..core.sparsity import SparsityPlan, initial_scores
from ..execution.engine import LocalEngine
from ..execution.fault_policy import LOST_WORKER, FaultTally, Guard, classify, describe, fault_message, resolve, retried
from ..execution.threads import ThreadPolicy
from ..plugins.errors import ZooframeError
from ..plugins.estimator import StepInputs
from ..plugins.faults import SimulatorNonFinite
from . import checkpoint
from .experiment import Experiment
from .outputs import METRICS_VERSION


def autograd_gradient(objective: CorrectionObjective, theta: torch.Tensor) -> tuple[torch.Tensor, float]:
    """The gradient of ``objective`` at ``theta`` by autograd (through the solver as the
    objective's ``solver_jacobian`` says) and the loss there: one rollout and its backward pass.
    A loss or gradient that is not finite raises :class:`SimulatorNonFinite`."""
    theta = theta.detach().requires_grad_(True)
    loss = objective(theta[None])[0]
    (grad,) = torch.autograd.grad(loss, theta)
    return _finite(grad, loss.detach())


def autograd_term_gradients(objective, theta: torch.Tensor) -> tuple[torch.Tensor, float]:
    """``[m, d]``: the gradient of each of ``objective.terms`` at ``theta`` by autograd, and the
    loss (their mean), from ``objective.term_gradients``. As :func:`autograd_gradient` otherwise."""
    grads, terms = objective.term_gradients(theta)
    return _finite(grads, terms.mean())


def _finite(grad: torch.Tensor, loss: torch.Tensor) -> tuple[torch.Tensor, float]:
    if not (torch.isfinite(loss) and torch.isfinite(grad).all()):
        raise SimulatorNonFinite(f"the rollout's loss ({float(loss)}) or its gradient is not finite")
    return grad, float(loss)


class StepSkipped(Exception):
    """The fault policy left no estimate for this step: no optimizer step is taken."""


PROVIDED_INPUTS = frozenset(f.name for f in fields(StepInputs))


def check_inputs(exp: Experiment) -> None:
    """A ZO run's estimator gets what it declares, and declares what the run would give it."""
    estimator, kind = exp.estimator, exp.config.estimator.kind
    unknown = set(estimator.inputs) - PROVIDED_INPUTS
    if unknown:
        raise ZooframeError(f"estimator {kind!r} asks for {', '.join(sorted(unknown))}, which the trainer does not "
                            f"provide (it provides: {', '.join(sorted(PROVIDED_INPUTS))})")
    if exp.config.training.solver_jacobian == "both" and "surrogates" not in estimator.inputs:
        raise ZooframeError(f"training.solver_jacobian 'both' gives the loss terms' surrogates under both Jacobians, "
                            f"and estimator {kind!r} does not ask for surrogates; use 'identity' or 'drop' (or the "
                            "subspace estimator)")
    if "loss" in estimator.inputs and not {"surrogate", "surrogates"} & set(estimator.inputs):
        raise ZooframeError(f"estimator {kind!r} asks for loss without surrogate or surrogates: the loss at theta "
                            "comes with the surrogates' rollout")
    if exp.config.sparsity.method != "none" and "mask" not in estimator.inputs:
        raise ZooframeError(f"estimator {kind!r} takes no sparsity mask; set sparsity.method to 'none' or use an "
                            "estimator whose inputs include 'mask' (the built-in cge, rge and guided do)")


class Trainer:
    """Runs ``training.steps`` optimizer steps, or fewer when ``training.budget`` is spent first;
    ``on_step`` receives each step's metrics, and ``stopped`` says why training ended (``steps``,
    ``seconds`` or ``simulator_calls``; None while it goes on)."""

    def __init__(self, exp: Experiment, threads: ThreadPolicy | None = None, resume: dict[str, Any] | None = None):
        """``resume``: a checkpoint (:mod:`zooframe.runs.checkpoint`) to continue from."""
        self.exp = exp
        self._own_threads = threads is None  # then close() restores them
        self.threads = threads or ThreadPolicy(exp.config.execution.threads)
        self.stopped: str | None = None
        self._seconds_aside = self._wall_aside = 0.0  # of work set aside (:meth:`aside`)
        rows_before = exp.runner.rows
        try:
            self._build(resume)
            self._rows_counted = self._rows()  # a resumed run's normalization pass is not counted again
            self.calls_before = self._rows_counted - rows_before  # a checkpoint replaces it
            if resume is not None:
                checkpoint.restore(self, resume)
        except BaseException:
            if self._own_threads:
                self.threads.restore()
            raise

    def _build(self, resume: dict[str, Any] | None) -> None:
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
        self.tally = FaultTally()  # the current step's
        self.totals = FaultTally()  # the run's
        if getattr(exp.config.model, "normalize", True) and cfg.init is None:  # init brings its own
            self._before_training("the normalization pass", lambda: exp.fit_statistics(self.sampler))
        self.engine = exp.engine(self.sampler.per_step) if cfg.mode == "zo" else LocalEngine()
        self.step, self._wall_s = 0, 0.0  # at the end of the last step: what progress() reads
        self.optimizer, self.scheduler = exp.optimizer(self.progress)
        self.generator = torch.Generator(device=exp.device).manual_seed(cfg.seed + 1)
        self.guard = Guard.from_config(exp.config.execution.faults)
        self.elapsed_before = 0.0  # wall seconds of the run before a resume
        try:
            if exp.config.sparsity.method == "none":
                self.plan = None
            elif resume is not None:  # the checkpoint's scores, without pruning again
                self.plan = SparsityPlan(exp.config.sparsity, exp.flat, resume["plan"]["scores"].to(exp.device),
                                         exp.config.training.seed + 4)
            else:
                self.plan = self._before_training("pruning at initialization", self._prune)
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
        self.totals.queries += used
        plan = SparsityPlan(exp.config.sparsity, exp.flat, scores, seed + 4)
        plan.enforce()
        return plan

    @property
    def simulator_seconds(self) -> float:
        """Time inside simulator calls so far, here and in remote workers."""
        return self.exp.runner.seconds + self.engine.remote_seconds - self._seconds_aside

    def _rows(self) -> int:
        return self.exp.runner.rows + self.engine.remote_rows

    @property
    def simulator_calls(self) -> int:
        """States the simulator advanced by one step for this run so far (a batch of 8 is 8 calls), here
        and in remote workers, across resumes: what ``training.budget.simulator_calls`` counts."""
        return self.calls_before + self._rows() - self._rows_counted

    @contextmanager
    def aside(self) -> Iterator[None]:
        """Work between steps that is not training (a sweep's validation rollouts on ``exp.runner``):
        its simulator calls, simulator seconds and wall time stay out of the run's counts and out of
        ``training.budget``."""
        runner, start = self.exp.runner, time.perf_counter()
        rows, seconds = runner.rows, runner.seconds
        try:
            yield
        finally:
            self._rows_counted += runner.rows - rows
            self._seconds_aside += runner.seconds - seconds
            self._wall_aside += time.perf_counter() - start

    def state_dict(self) -> dict[str, Any]:
        """Everything of the trainer's own that a step depends on, and the counts so far: what a
        checkpoint holds besides the process-wide generators (:mod:`zooframe.runs.checkpoint`)."""
        exp = self.exp
        state = {"step": self.step, **self.totals.state_dict(), "simulator_calls": self.simulator_calls,
                 "model": exp.model.state_dict(),
                 "optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict(),
                 "estimator": exp.estimator.state_dict() if exp.config.training.mode == "zo" else {},
                 "generator": self.generator.get_state(), "sampler_generator": self.sampler.generator.get_state()}
        if self.plan is not None:
            state["plan"] = {"scores": self.plan.scores.cpu(), "current": self.plan.current.cpu(),
                             "generator": self.plan.generator.get_state()}
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        exp = self.exp
        self.step = state["step"]
        self.totals.load_state_dict(state)
        self.calls_before = state.get("simulator_calls", 0)  # 0: a checkpoint from before the count
        exp.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        if exp.config.training.mode == "zo":
            exp.estimator.load_state_dict(state["estimator"])
        self.generator.set_state(state["generator"])
        self.sampler.generator.set_state(state["sampler_generator"])
        if self.plan is not None:
            self.plan.current = state["plan"]["current"]
            self.plan.generator.set_state(state["plan"]["generator"])

    def close(self) -> None:
        self.engine.close()
        if self._own_threads:
            self.threads.restore()

    def gradient(self, window: Window) -> tuple[torch.Tensor, float | None]:
        """The step's gradient and the loss at the current parameters; the queries it took and its
        faults go into ``self.tally``. Raises :class:`StepSkipped` when the fault policy leaves no
        estimate to take a step from."""
        exp = self.exp
        objective = self._attempt("computing the window's first solver step", lambda: exp.objective(window, self.jacobian))
        theta = exp.flat.get()
        mask = self.plan.mask(self.step) if self.plan else None
        if exp.config.training.mode != "zo":
            grad, loss = self._attempt("the rollout under autograd", lambda: autograd_gradient(objective, theta))
            return grad if mask is None else grad * mask, loss
        given, loss = self.step_inputs(objective, theta, mask)
        with torch.no_grad():
            queries = exp.estimator.ask(theta, self.generator, given)
            evaluated = self.engine.evaluate_all(objective, queries, self.guard)
            self.tally.record(evaluated)
            outcome = resolve(evaluated, exp.config.execution.faults)
            if outcome.aborting:
                raise ZooframeError(fault_message(evaluated, exp.config.simulator.kind, self.step)) from evaluated.exception
            grad = self._estimate(queries, outcome)
            if queries.with_center and outcome.usable[0]:
                loss = float(outcome.values[0])
            elif loss is None:
                centre = self.guard(objective, theta[None])
                self.tally.record(centre)
                loss = float(centre.values[0]) if centre.faults[0] is None else None  # the loss is only reported
        return grad, loss

    def _estimate(self, queries, outcome) -> torch.Tensor:
        """The estimator's gradient from the queries the fault policy left usable."""
        estimator, policy = self.exp.estimator, self.exp.config.execution.faults
        dropped, n = int((~outcome.usable).sum()), len(queries)
        lost = dropped + outcome.penalised
        if lost > policy.max_lost_fraction * n:
            raise StepSkipped(f"{lost} of {n} queries lost (skipped or penalised), more than "
                              f"execution.faults.max_lost_fraction ({policy.max_lost_fraction:g})")
        if not dropped:
            return estimator.tell(queries, outcome.values)
        if not estimator.partial:
            raise StepSkipped(f"{dropped} of {n} queries skipped, and estimator {self.exp.config.estimator.kind!r} "
                              "estimates from complete query sets only")
        grad = estimator.tell(queries, outcome.values, outcome.usable)
        if grad is None:
            raise StepSkipped(f"{dropped} of {n} queries skipped, and the rest give no estimate (the centre query, or "
                              "every pair, was among them)")
        return grad

    def step_inputs(self, objective: CorrectionObjective, theta: torch.Tensor,
                    mask: torch.Tensor | None) -> tuple[StepInputs, float | None]:
        """What the estimator declared it needs (``Estimator.inputs``), and the loss at theta when
        computing them gave it."""
        wants = self.exp.estimator.inputs
        surrogate, surrogates, loss = None, None, None
        if "surrogates" in wants:
            surrogates, loss = self._attempt("the surrogate gradients' rollout",
                                             lambda: autograd_term_gradients(objective, theta))
            surrogate = surrogates.mean(0) if "surrogate" in wants else None
        elif "surrogate" in wants:
            surrogate, loss = self._attempt("the surrogate gradient's rollout", lambda: autograd_gradient(objective, theta))
        if loss is not None:
            self.tally.queries += 1
        if mask is not None:
            surrogate = None if surrogate is None else surrogate * mask
            surrogates = None if surrogates is None else surrogates * mask
        return StepInputs(mask=mask if "mask" in wants else None, surrogate=surrogate, surrogates=surrogates,
                          loss=loss if "loss" in wants else None), loss

    def _before_training(self, what: str, compute: Callable[[], Any]) -> Any:
        """``compute()``, simulator calls before the first step, retried as the fault policy says;
        a fault that remains stops the run (there is no step to skip), naming what failed."""
        retried_before = self.totals.retried  # the run's count: the normalization pass's retries come before pruning's
        try:
            return retried(compute, self.exp.config.execution.faults, self.totals)
        except ZooframeError:
            raise
        except Exception as exc:
            raise ZooframeError(f"simulator {self.exp.config.simulator.kind!r} failed in {what} before training "
                                f"({classify(exc)}): {describe(exc)}; it was retried "
                                f"{self.totals.retried - retried_before} times (execution.faults)") from exc

    def _attempt(self, what: str, compute: Callable[[], Any]) -> Any:
        """``compute()``, a part of the step that all its queries share, under the fault policy:
        retried as configured; then either the run aborts or the step is skipped (a penalty has no
        meaning without queries)."""
        policy = self.exp.config.execution.faults
        try:
            return retried(compute, policy, self.tally)
        except Exception as exc:
            fault = classify(exc)
            if policy.action(fault) == "abort":
                raise ZooframeError(f"simulator {self.exp.config.simulator.kind!r} failed at step {self.step} while "
                                    f"{what} ({fault}): {describe(exc)}. The fault policy (execution.faults) "
                                    "aborts on this fault; 'retry' or 'skip' would ride it out") from exc
            raise StepSkipped(f"{fault} while {what}: {describe(exc)}") from exc

    def _spent(self, wall_s: float) -> dict[str, float]:
        """The spent fraction of each limit of training, ``training.steps`` and each ``training.budget``
        limit that is set (``wall_s``: its wall seconds so far)."""
        cfg = self.exp.config.training
        spent = {"steps": self.step / cfg.steps}
        if cfg.budget.seconds is not None:
            spent["seconds"] = wall_s / cfg.budget.seconds
        if cfg.budget.simulator_calls is not None:
            spent["simulator_calls"] = self.simulator_calls / cfg.budget.simulator_calls
        return spent

    def progress(self) -> float:
        """The spent fraction of training at the last step's end: of the limit nearest to ending it
        (what a cosine schedule follows)."""
        if self.step == 0:  # also while the trainer is built, before its counts exist
            return 0.0
        return min(1.0, max(self._spent(self._wall_s).values()))

    def stop_reason(self, wall_s: float) -> str | None:
        """Why training ends here (``wall_s``: its wall seconds so far), or None to go on."""
        return next((limit for limit, fraction in self._spent(wall_s).items() if fraction >= 1), None)

    def run(self, on_step: Callable[[dict[str, Any]], None] = lambda m: None) -> None:
        """Train until :meth:`stop_reason` says so; ``self.stopped`` is set before ``on_step`` sees the
        last step, so that a caller can checkpoint it."""
        start, self._wall_aside = time.perf_counter(), 0.0
        first = self.step
        self.stopped = self.stop_reason(self.elapsed_before)  # a resumed run may have spent its budget already
        while self.stopped is None:
            self.threads.update(force=self.step == first)
            sim_before, lost_before, calls_before = self.simulator_seconds, self.engine.lost, self.simulator_calls
            step_start = time.perf_counter()
            self.tally = FaultTally()
            lr = self.optimizer.param_groups[0]["lr"]
            try:
                grad, loss = self.gradient(self.sampler.sample(self.step))
                if not torch.isfinite(grad).all():
                    self._nonfinite_gradient()
                skipped = None
            except StepSkipped as exc:
                skipped, loss, last_skip = str(exc), None, exc
            except BaseException:
                self._account(self.tally, lost_before)  # an aborted step's faults are in the summary too
                raise
            if skipped is None:
                self.optimizer.zero_grad(set_to_none=True)
                self.exp.flat.set_grad(grad)
                self.optimizer.step()
                if self.plan:
                    self.plan.enforce()
            self.step += 1
            self._wall_s = self.elapsed_before + time.perf_counter() - start - self._wall_aside
            with warnings.catch_warnings():  # a skipped first step: the schedule follows the step count anyway
                warnings.filterwarnings("ignore", message="Detected call of `lr_scheduler.step\\(\\)` before")
                self.scheduler.step()
            tally = self._account(self.tally, lost_before)
            metrics = {"format_version": METRICS_VERSION, "step": self.step, "loss": loss, "queries": tally.queries,
                       "queries_total": self.totals.queries, "lr": lr, "threads": self.threads.threads,
                       "step_s": time.perf_counter() - step_start, "sim_s": self.simulator_seconds - sim_before,
                       "sim_calls": self.simulator_calls - calls_before, "sim_calls_total": self.simulator_calls,
                       "wall_s": self._wall_s}
            if tally.faults or tally.retried:
                metrics.update(faults=dict(tally.faults), recovered=dict(tally.recovered), retries=tally.retried)
            if skipped is not None:
                metrics["skipped"] = skipped
            self.totals.step_ended(self.step, skipped is not None)
            self.stopped = self.stop_reason(metrics["wall_s"])
            on_step(metrics)  # the trainer's state is the step's end: a checkpoint may be taken here
            limit = self.exp.config.execution.faults.max_skipped_in_a_row
            if self.totals.skipped_in_a_row >= limit:
                raise ZooframeError(f"{limit} steps in a row were skipped (execution.faults.max_skipped_in_a_row), "
                                    f"the last at step {self.step}: {skipped}") from last_skip.__cause__

    def _account(self, tally: FaultTally, lost_before: int) -> FaultTally:
        """Add a step's queries and faults (with its lost workers) to the run's."""
        if self.engine.lost > lost_before:
            tally.add({LOST_WORKER: self.engine.lost - lost_before})
        self.totals.merge(tally)
        return tally

    def _nonfinite_gradient(self) -> None:
        """A gradient with NaN or Inf from finite losses (an overflow): a nonfinite fault of the step."""
        self.tally.add({"nonfinite": 1})
        if self.exp.config.execution.faults.action("nonfinite") == "abort":
            raise ZooframeError(f"the gradient at step {self.step} is not finite; no optimizer step was taken")
        raise StepSkipped("the gradient is not finite")
