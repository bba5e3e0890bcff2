"""Fault policies (``execution.faults``): what a step does with queries whose simulator call failed.

After Dakota's failure capture and OpenMDAO's AnalysisError. The :class:`Guard` runs where the
queries are evaluated (in this process or in a worker, the same code): a failing batched call
is bisected until the failing queries stand alone, and a query whose class the policy retries
is evaluated again. It returns every query's value or fault class; a fault is never raised past
it, so a fault inside a worker is not a lost worker. The trainer then applies the rest of the
policy (:func:`resolve`): ``abort`` stops the run with an error that names the simulator, the
step, the fault and the queries; ``skip`` leaves the queries out of the step's estimate (each
estimator states its rule in ``tell``); ``penalty`` puts the configured loss in their place.

Fault classes: ``exception`` (any error from the code), ``timeout``, ``output``, ``shape`` (a
state of the wrong shape or dtype), ``nonfinite`` (a NaN or Inf loss), each from the classes
in :mod:`zooframe.plugins.faults`; and ``lost_worker``, a process or Ray worker that died or hung, which
the engines replace and resend (``execution.worker_restarts``) instead.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from ..plugins import stops
from ..plugins.faults import FAULT_CLASSES, SimulatorFault

LOST_WORKER = "lost_worker"


def classify(exc: BaseException) -> str:
    fault = getattr(exc, "fault", None) if isinstance(exc, SimulatorFault) else None
    return fault if fault in FAULT_CLASSES else "exception"


def describe(exc: BaseException, limit: int = 600) -> str:
    text = f"{type(exc).__name__}: {exc}"
    return text if len(text) <= limit else text[: limit - 3] + "..."


@dataclass
class Evaluated:
    """Losses of n queries, NaN where ``faults[i]`` names the class of query i's fault (None: fine);
    ``messages`` keeps the first error of each class, ``recovered`` counts by class the queries
    whose first attempt failed but a retry or a smaller batch succeeded, ``retried`` the extra
    simulator calls that took."""

    values: torch.Tensor
    faults: list[str | None]
    messages: dict[str, str] = field(default_factory=dict)
    retried: int = 0
    recovered: Counter = field(default_factory=Counter)
    exception: BaseException | None = field(default=None, repr=False)  # in this process only, for tracebacks

    @property
    def failed(self) -> torch.Tensor:
        return torch.tensor([f is not None for f in self.faults], dtype=torch.bool)

    def counts(self) -> dict[str, int]:
        return dict(Counter(f for f in self.faults if f is not None))

    def portable(self) -> Evaluated:
        """Without the exception object, which may not pickle: what a worker sends back."""
        return Evaluated(self.values, self.faults, self.messages, self.retried, self.recovered)

    @staticmethod
    def cat(parts: list[Evaluated]) -> Evaluated:
        messages: dict[str, str] = {}
        for p in parts:
            for k, v in p.messages.items():
                messages.setdefault(k, v)
        return Evaluated(torch.cat([p.values for p in parts]), [f for p in parts for f in p.faults], messages,
                         sum(p.retried for p in parts), sum((p.recovered for p in parts), Counter()),
                         next((p.exception for p in parts if p.exception), None))


@dataclass(frozen=True)
class Guard:
    """Evaluates ``objective(thetas)`` and captures faults query by query. ``isolate``: bisect a
    failing batch (pointless when every fault aborts the run); ``retries``: extra attempts per
    fault class."""

    isolate: bool = False
    retries: tuple[tuple[str, int], ...] = ()

    @classmethod
    def from_config(cls, config) -> Guard:
        """From an :class:`zooframe.config.FaultConfig`."""
        retries = tuple((f, config.retries_for(f)) for f in FAULT_CLASSES if config.retries_for(f))
        isolate = bool(retries) or any(config.action(f) != "abort" for f in FAULT_CLASSES)
        return cls(isolate, retries)

    def __call__(self, objective: Callable[[torch.Tensor], torch.Tensor], thetas: torch.Tensor) -> Evaluated:
        result = self._once(objective, thetas)
        retries = dict(self.retries)
        for i, fault in enumerate(result.faults):
            for _ in range(retries.get(fault, 0)):
                again = self._once(objective, thetas[i : i + 1])
                result.retried += 1 + again.retried
                if again.faults[0] is None:
                    result.values[i], result.faults[i] = again.values[0], None
                    result.recovered[fault] += 1
                    break
        return result

    def _once(self, objective, thetas: torch.Tensor) -> Evaluated:
        n = len(thetas)
        try:
            values = objective(thetas)
        except Exception as exc:  # a KeyboardInterrupt stops the run as always
            stops.raise_if_requested(exc)
            fault = classify(exc)
            if n > 1 and self.isolate:
                half = n // 2
                parts = Evaluated.cat([self._once(objective, thetas[:half]), self._once(objective, thetas[half:])])
                parts.retried += 2
                # every query of this call failed its first attempt here: those that succeeded in a part are
                # recovered once, whatever further splits they went through
                parts.recovered = Counter({fault: parts.faults.count(None)})
                parts.messages.setdefault(fault, describe(exc))
                return parts
            return Evaluated(torch.full((n,), float("nan"), dtype=thetas.dtype, device=thetas.device), [fault] * n,
                             {fault: describe(exc)}, exception=exc)
        values = values.detach()
        bad = (~torch.isfinite(values)).tolist()
        faults = ["nonfinite" if b else None for b in bad]
        messages = {"nonfinite": f"the loss was {values[bad.index(True)].item()}"} if any(bad) else {}
        return Evaluated(values, faults, messages)


STRICT = Guard()


def retried(compute: Callable[[], Any], config, tally: FaultTally | None = None) -> Any:
    """``compute()``: simulator calls that are not a step's queries (the normalization pass, a
    window's first solver step, held-out rollouts), tried again as ``config`` (a
    :class:`zooframe.config.FaultConfig`) retries the fault's class. A fault that remains is
    counted in ``tally`` and raised; what then becomes of the run is the caller's to say."""
    attempts, fault = 0, None
    tally = tally if tally is not None else FaultTally()
    while True:
        try:
            result = compute()
        except Exception as exc:  # a KeyboardInterrupt stops the run as always
            stops.raise_if_requested(exc)
            fault = classify(exc)
            if attempts < config.retries_for(fault):
                attempts += 1
                tally.retried += 1
                continue
            tally.add({fault: 1})
            raise
        if attempts:
            tally.recovered[fault] += 1
        return result


@dataclass
class Resolution:
    """A step's faults after the policy: the values to use (penalties filled in), which queries the
    estimate may use, and the faults that abort the run (empty: none)."""

    values: torch.Tensor
    usable: torch.Tensor
    aborting: dict[str, int]
    penalised: int = 0


def resolve(evaluated: Evaluated, config) -> Resolution:
    """Apply ``config`` (a :class:`zooframe.config.FaultConfig`) to the faults that remain after retries."""
    values = evaluated.values.clone()
    usable = torch.ones(len(values), dtype=torch.bool)
    aborting: Counter[str] = Counter()
    penalised = 0
    for i, fault in enumerate(evaluated.faults):
        if fault is None:
            continue
        action = config.action(fault)
        if action == "penalty":
            values[i] = config.penalty
            penalised += 1
        else:
            usable[i] = False
            if action == "abort":
                aborting[fault] += 1
    return Resolution(values, usable, dict(aborting), penalised)


def fault_message(evaluated: Evaluated, simulator: str, step: int) -> str:
    counts = evaluated.counts()
    failed = sum(counts.values())
    classes = ", ".join(f"{n} {k}" for k, n in sorted(counts.items()))
    first = "; ".join(f"{k}: {m}" for k, m in evaluated.messages.items())
    return (f"simulator {simulator!r} failed at step {step}: {failed} of {len(evaluated.faults)} queries hit a fault "
            f"({classes}; a batched call that fails counts all its queries), so no optimizer step was taken from "
            f"them. First error: {first}. The fault policy "
            "(execution.faults) aborts on these; set execution.faults.policy to 'retry', 'skip' or 'penalty' to "
            "ride them out")


@dataclass
class FaultTally:
    """Queries, faults by class, retries and recoveries: of one step, or of a whole run, which
    also keeps the steps that took no optimizer step (``skipped``) and how many of the last
    steps in a row did so."""

    queries: int = 0
    retried: int = 0
    faults: Counter = field(default_factory=Counter)
    recovered: Counter = field(default_factory=Counter)
    skipped: list[int] = field(default_factory=list)
    skipped_in_a_row: int = 0

    def add(self, faults: dict[str, int], retried: int = 0, queries: int = 0,
            recovered: dict[str, int] | None = None) -> None:
        self.faults.update(faults)
        self.recovered.update(recovered or {})
        self.retried += retried
        self.queries += queries

    def record(self, evaluated: Evaluated) -> None:
        """The queries of one guarded evaluation and what became of them."""
        self.add(evaluated.counts(), evaluated.retried, len(evaluated.faults), evaluated.recovered)

    def merge(self, step: FaultTally) -> None:
        """Add one step's tally to this run's."""
        self.add(step.faults, step.retried, step.queries, step.recovered)

    def step_ended(self, step: int, skipped: bool) -> None:
        if skipped:
            self.skipped.append(step)
        self.skipped_in_a_row = self.skipped_in_a_row + 1 if skipped else 0

    def state_dict(self) -> dict:
        return {"queries": self.queries, "faults": dict(self.faults), "recovered": dict(self.recovered),
                "retried": self.retried, "skipped": list(self.skipped), "skipped_in_a_row": self.skipped_in_a_row}

    def load_state_dict(self, state: dict) -> None:
        self.queries, self.retried = state["queries"], state["retried"]
        self.faults, self.recovered = Counter(state["faults"]), Counter(state["recovered"])
        self.skipped, self.skipped_in_a_row = list(state["skipped"]), state["skipped_in_a_row"]

