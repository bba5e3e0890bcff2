"""The conformance kit for plugin authors: one ``check_*`` function per rule a simulator must keep.

Run them all in a plugin's own tests (``zooframe new-plugin`` writes such a test) or on a config
with ``zooframe check CONFIG``::

    from zooframe.testing import check_simulator

    def test_my_simulator_conforms():
        check_simulator(MySimulator(MyConfig(kind="mine")), reference="reference.npz")

or make each rule a test item of its own, as scikit-learn's ``parametrize_with_checks`` does::

    from zooframe.testing import parametrize_with_checks

    @parametrize_with_checks(lambda: MySimulator(MyConfig(kind="mine")), reference="reference.npz")
    def test_my_simulator(check):
        check()

Each rule that fails is reported with what was seen and how to fix it; the failures are raised
as a :class:`ConformanceError` (an ``AssertionError``, so pytest shows it as a plain test failure).
The checks share one :class:`Subject`: the simulator, its state spec, the task's states and the
first step's output are found once.
"""

from __future__ import annotations

import pickle
import weakref
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from .base import PluginSpec, missing_methods
from .errors import ZooframeError
from .faults import SimulatorFault
from .reference import ReferenceGenerationError, ReferenceSource, SimulatorReference, generate, high_fidelity_source
from .reference_file import FileReference, FileReferenceConfig
from .simulator import Case, Simulator, StateSpec


@dataclass(frozen=True)
class Finding:
    rule: str
    problem: str
    fix: str

    def __str__(self) -> str:
        return f"[{self.rule}] {self.problem}\n      fix: {self.fix}"


class ConformanceError(AssertionError):
    def __init__(self, report: Report):
        self.report = report
        super().__init__(f"{report.simulator} breaks {len(report.failures)} conformance rule(s):\n"
                         + "\n".join(f"  {f}" for f in report.failures))


@dataclass
class Report:
    simulator: str
    passed: list[str] = field(default_factory=list)
    failures: list[Finding] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)  # rule -> why it could not be checked

    def __bool__(self) -> bool:
        return not self.failures

    def text(self) -> str:
        lines = [f"{self.simulator}: {len(self.passed)} passed, {len(self.failures)} failed, "
                 f"{len(self.skipped)} skipped"]
        lines += [f"  ok    {r}: {RULES[r]}" for r in self.passed]
        lines += [f"  FAIL  {f}" for f in self.failures]
        lines += [f"  skip  {r}: {why}" for r, why in self.skipped.items()]
        return "\n".join(lines)


class _Failed(Exception):
    def __init__(self, problem: str, fix: str):
        self.problem, self.fix = problem, fix


class _Skipped(Exception):
    """The rule cannot be checked; the message says why."""


class Subject:
    """A simulator under check and what its checks share, each found once on first use: the
    state spec, the reference source, the task's cases and initial states, and the first step.

    ``simulator`` is a simulator or a function that builds one (then it is built on first use and
    closed when the subject is let go). The states come from ``reference`` (a reference source,
    or the path of a reference file; default: the simulator's own high-fidelity mode, if it has
    one), or else from ``cases`` with their initial ``states`` ``[B, C, *S]``. ``rtol`` is the
    tolerance of the comparisons (row independence, determinism, rebuilt copies): a solver whose
    batched arithmetic differs from its one-row arithmetic by rounding passes at the default."""

    def __init__(self, simulator: Simulator | Callable[[], Simulator],
                 reference: ReferenceSource | str | Path | None = None, cases: Sequence[Case] | None = None,
                 states: torch.Tensor | None = None, steps: int = 3, seed: int = 0, rtol: float = 1e-6):
        self._simulator = simulator
        self.reference, self.cases, self.states = reference, list(cases or []), states
        self.steps, self.seed, self.rtol = steps, seed, rtol
        self.frames: torch.Tensor | None = None  # the reference's frame 1 of each case, when there is a reference
        self._found: dict[str, Any] = {}

    @property
    def sim(self) -> Simulator:
        if not isinstance(self._simulator, Simulator):
            self._simulator = self._simulator()
            weakref.finalize(self, self._simulator.close)
        return self._simulator

    @property
    def name(self) -> str:
        return type(self.sim).__qualname__

    def _once(self, key: str, find: Callable[[], Any]) -> Any:
        """``find()``, computed once: later calls give its value or raise its exception again."""
        if key not in self._found:
            try:
                self._found[key] = (find(), None)
            except (_Failed, _Skipped) as exc:
                self._found[key] = (None, exc)
        value, exc = self._found[key]
        if exc is not None:
            raise exc
        return value

    def _needs(self, key: str, find: Callable[[], Any], rule: str, what: str) -> Any:
        """As :meth:`_once`, for a check that needs the value: a failure is its skip."""
        try:
            return self._once(key, find)
        except _Failed:
            raise _Skipped(f"{what} (see {rule})") from None

    def spec(self) -> StateSpec:
        return self._needs("spec", self._state_spec, "state-spec", "state_spec is unusable")

    def task(self) -> tuple[list[Case], torch.Tensor] | None:
        """The reference source's cases and initial states (None: no source to take them from)."""
        return self._once("task", self._task)

    def start(self) -> tuple[list[Case], torch.Tensor]:
        """The cases and initial states ``[B, C, *S]`` (float64) that the stepping rules step."""
        try:
            task = self.task()
        except _Failed:
            task = None
        if task is None and self.states is not None and self.cases:
            task = self.cases, torch.as_tensor(self.states)
        if task is None:
            raise _Skipped("no states to step: give reference=... (or cases=... with states=...)")
        cases, start = task
        return cases, start.to(self.sim.device, torch.float64)

    def step(self, state: torch.Tensor, cases: Sequence[Case], seed: int | None = None,
             sim: Simulator | None = None) -> torch.Tensor:
        """One step of the simulator (or of ``sim``); whatever goes wrong is a finding."""
        try:
            out = (sim or self.sim).step(state, list(cases), self.seed if seed is None else seed)
        except NotImplementedError:
            raise _Failed("step raised NotImplementedError",
                          "implement step (batched) or step_one (one case)") from None
        except Exception as exc:
            raise _Failed(f"step raised {type(exc).__name__}: {exc}",
                          "step must run on the task's own states and cases; see the traceback with "
                          "sim.step(state, cases, seed)") from exc
        if not isinstance(out, torch.Tensor):
            raise _Failed(f"step returned {type(out).__name__}, not a torch.Tensor",
                          "return torch.as_tensor(result, dtype=state.dtype, device=state.device)")
        return out

    def first(self) -> torch.Tensor:
        """The first step from the initial states, of the right shape."""
        return self._once("first", self._first)

    def out(self) -> torch.Tensor:
        """:meth:`first`, for a rule that needs it: when it failed, the rule is skipped."""
        self.start()
        return self._needs("first", self._first, "output-shape", "step gives no usable output")

    def close_to(self, a: torch.Tensor, b: torch.Tensor) -> bool:
        """Equal up to ``rtol`` of ``b``'s largest finite entry; NaN only where the other has NaN."""
        scale = float(torch.nan_to_num(b.abs(), nan=0.0, posinf=0.0).max()) if b.numel() else 1.0
        return a.shape == b.shape and bool(torch.allclose(a.to(b.dtype), b, rtol=self.rtol,
                                                          atol=self.rtol * max(scale, 1e-12), equal_nan=True))

    # --- what the accessors find ----------------------------------------------------------------
    def _state_spec(self) -> StateSpec:
        try:
            got = self.sim.state_spec
        except Exception as exc:
            raise _Failed(f"state_spec raised {type(exc).__name__}: {exc}", "return a zooframe.StateSpec") from exc
        if not isinstance(got, StateSpec):
            raise _Failed(f"state_spec is a {type(got).__name__}", "return zooframe.StateSpec(channels, spatial_shape)")
        if not got.channels or not all(isinstance(c, str) for c in got.channels):
            raise _Failed(f"channels {got.channels!r}", "name each channel with a string, e.g. ('u', 'v')")
        if not got.spatial_shape or not all(isinstance(n, int) and n > 0 for n in got.spatial_shape):
            raise _Failed(f"spatial_shape {got.spatial_shape!r}", "give the grid as a tuple of positive ints")
        if got.valid is not None and (got.valid.dtype != torch.bool or tuple(got.valid.shape) != got.shape):
            raise _Failed(f"valid mask of {got.valid.dtype} {tuple(got.valid.shape)}",
                          f"give a bool tensor of shape {got.shape}, or None")
        return got

    def _source(self) -> ReferenceSource | None:
        sim, reference = self.sim, self.reference
        if isinstance(reference, ReferenceSource):
            return reference
        try:
            if reference is not None:
                return FileReference(FileReferenceConfig(kind="file", path=str(reference)), sim, device=sim.device)
        except ZooframeError as exc:
            raise _Failed(str(exc), "fix the reference file as each line says") from None
        if high_fidelity_source(type(sim)) is not None:
            return SimulatorReference.of(sim)
        return None

    def _task(self) -> tuple[list[Case], torch.Tensor] | None:
        spec = self.spec()
        source = self._source()
        if source is None:
            return None
        sets = _called(source.cases, "the reference source's cases()")
        cases = [c for split in sets.values() for c in split]
        names = [c.name for c in cases]
        if not cases or len(set(names)) != len(names):
            raise _Failed(f"case sets {dict((k, len(v)) for k, v in sets.items())} with names {names}",
                          "offer at least a 'train' and a 'test' set of uniquely named cases")
        n = min(self.steps, source.max_steps or self.steps)
        try:
            traj = torch.as_tensor(generate(source, cases, n))
        except ReferenceGenerationError as exc:
            raise _Failed(str(exc), "the reference must run for the task's own cases: fix the code's settings for "
                          "that case (time step, CFL limit) or leave the case out") from exc
        except ZooframeError as exc:
            raise _Failed(str(exc), "fix it as the message says") from exc
        expected = (len(cases), n + 1, *spec.shape)
        if tuple(traj.shape) != expected:
            raise _Failed(f"trajectories(cases, {n}) has shape {tuple(traj.shape)}",
                          f"return [cases, steps + 1, C, *spatial] = {expected}")
        if not traj.is_floating_point() or not torch.isfinite(traj).all():
            raise _Failed(f"trajectories are {traj.dtype} with non-finite entries or not floats",
                          "give finite floating-point reference states")
        features = torch.as_tensor(_called(lambda: source.features(cases), "the reference source's features()"))
        if features.ndim != 2 or features.shape[0] != len(cases) or not torch.isfinite(features).all():
            raise _Failed(f"features(cases) has shape {tuple(features.shape)}",
                          f"return finite [cases, F] = [{len(cases)}, F] (F may be 0)")
        self.frames = traj[:, 1]
        return cases, traj[:, 0]

    def _first(self) -> torch.Tensor:
        cases, start = self.start()
        out = self.step(start, cases)
        if tuple(out.shape) != tuple(start.shape):
            raise _Failed(f"a state of shape {tuple(start.shape)} came back as {tuple(out.shape)}",
                          "return one next state per row, of the input's shape [B, C, *spatial]")
        return out


def _called(call: Callable[[], Any], what: str) -> Any:
    try:
        return call()
    except ZooframeError as exc:
        raise _Failed(f"{what}: {exc}", "fix it as the message says") from exc
    except Exception as exc:
        raise _Failed(f"{what} raised {type(exc).__name__}: {exc}", "see the traceback by calling it yourself") from exc


@dataclass(frozen=True)
class Rule:
    name: str
    description: str
    check: Callable[[Subject], str | None]  # None: passed; a string: skipped, saying why; raises on failure


CHECKS: list[Rule] = []


def rule(name: str, description: str):
    """Adds the decorated ``check_*`` function to :data:`CHECKS` as the rule ``name``."""
    def register(check: Callable[[Subject], str | None]) -> Callable[[Subject], str | None]:
        CHECKS.append(Rule(name, description, check))
        return check
    return register


@rule("required-methods", "the class implements every required method")
def check_required_methods(s: Subject) -> None:
    missing = missing_methods(type(s.sim), Simulator)
    if missing:
        raise _Failed(f"{s.name} does not implement {'; '.join(missing)}",
                      "implement them (docs/writing-a-plugin.md lists what is required)")


@rule("state-spec", "state_spec is a StateSpec of named channels over a grid of positive sizes")
def check_state_spec(s: Subject) -> None:
    s._once("spec", s._state_spec)


@rule("reference-spec", "the reference source's cases, features and trajectories fit the state spec")
def check_reference_spec(s: Subject) -> str | None:
    if s.task() is None:
        return "no reference source (give reference=... to check one)"
    return None


@rule("output-shape", "step returns a state of the input's shape")
def check_output_shape(s: Subject) -> None:
    s.first()


@rule("output-dtype", "step returns the input's dtype")
def check_output_dtype(s: Subject) -> None:
    cases, start = s.start()
    for dtype in (torch.float64, torch.float32):
        try:
            out = s.first() if dtype == start.dtype else None
        except _Failed:
            out = None
        out = out if out is not None else s.step(start.to(dtype), cases)
        if out.dtype != dtype:
            raise _Failed(f"a {dtype} state came back as {out.dtype}",
                          "return the input's dtype (float64 runs need float64 steps: ZO differences of "
                          "nearby states vanish in float32 rounding)")


@rule("output-device", "step returns a tensor on the input's device")
def check_output_device(s: Subject) -> None:
    _, start = s.start()
    out = s.out()
    if out.device != start.device:
        raise _Failed(f"a state on {start.device} came back on {out.device}",
                      "return the result on state.device (torch.as_tensor(..., device=state.device))")


@rule("finite", "a rollout from each of the task's initial states stays free of NaN and Inf")
def check_finite(s: Subject) -> None:
    cases, state = s.start()
    s.out()
    for t in range(s.steps):
        state = s.step(state, cases, s.seed + t)
        bad = [c.name for c, row in zip(cases, state) if not torch.isfinite(row).all()]
        if bad:
            raise _Failed(f"NaN or Inf after {t + 1} step(s) from the initial states of {', '.join(bad[:5])}",
                          "the step must be stable on the task's own states (time step, CFL limit)")


GUARD = ("the network will feed you states like these; guard them and raise a fault class (zooframe.faults: e.g. "
         "SimulatorNonFinite for a negative density or pressure), then choose a fault policy (execution.faults)")


@rule("perturbed-states", "states near the task's own (the reference's plus noise of a typical correction's size, "
      "and of ten times it) step to finite states of the right shape, or raise a zooframe.faults class")
def check_perturbed_states(s: Subject) -> str | None:
    cases, start = s.start()
    out = s.out()
    if s.frames is None:
        return "no reference frames to measure a correction's size by (give reference=...)"
    spec = s.spec()
    frames = s.frames.to(start.device, start.dtype)
    dims = [d for d in range(start.ndim) if d != 1]  # per channel
    typical = (frames - out).square().mean(dim=dims, keepdim=True).sqrt()
    typical = torch.maximum(typical, 1e-6 * start.abs().amax(dim=dims, keepdim=True).clamp_min(1e-12))
    inside = torch.ones(start.shape[1:], dtype=start.dtype) if spec.valid is None else spec.valid.to(start.dtype)
    generator = torch.Generator().manual_seed(s.seed)
    for size, factor in (("a typical correction's", 1.0), ("ten times a typical correction's", 10.0)):
        noise = torch.randn(start.shape, generator=generator, dtype=start.dtype) * inside
        state = start + factor * typical * noise.to(start.device)
        seen = f"the task's initial states plus noise of {size} size"
        try:
            got = s.sim.step(state, list(cases), s.seed)
        except SimulatorFault:
            continue  # a guarded state: the fault policy decides
        except Exception as exc:
            raise _Failed(f"{seen} made step raise {type(exc).__name__}: {exc}", GUARD) from exc
        if not isinstance(got, torch.Tensor) or tuple(got.shape) != tuple(start.shape):
            raise _Failed(f"{seen} came back as {type(got).__name__} of shape {tuple(getattr(got, 'shape', ()))}, "
                          f"not {tuple(start.shape)}", GUARD)
        if not torch.isfinite(got).all():
            raise _Failed(f"{seen} came back with NaN or Inf", GUARD)
    return None


@rule("rows-independent", "each row of a batch is stepped as if it were alone")
def check_rows_independent(s: Subject) -> None:
    cases, start = s.start()
    out = s.out()
    for i, case in enumerate(cases):
        alone = s.step(start[i:i + 1], [case])[0]
        if not s.close_to(out[i], alone):
            raise _Failed(f"row {i} ({case.name}) stepped in a batch of {len(cases)} differs from it stepped alone "
                          f"(max difference {float((out[i] - alone).abs().max()):.3g})",
                          "step each row from its own state and case only: no batch statistics, no shared "
                          "state across rows")
    order = list(reversed(range(len(cases))))
    flipped = s.step(start[order], [cases[i] for i in order])
    if not s.close_to(flipped[order], out):
        raise _Failed("reordering the rows of a batch changes their results",
                      "read each row's case from cases[b] for row b, never by position in a fixed list")


@rule("deterministic", "the same state, cases and seed give the same output")
def check_deterministic(s: Subject) -> None:
    cases, start = s.start()
    out = s.out()
    again = s.step(start, cases)
    if not s.close_to(again, out):
        raise _Failed(f"two calls with seed {s.seed} differ by {float((again - out).abs().max()):.3g}",
                      "draw any randomness from the seed argument (e.g. numpy.random.default_rng(seed))")


@rule("responds", "the output changes when the state changes a little (finite differences see it)")
def check_responds(s: Subject) -> None:
    cases, start = s.start()
    out = s.out()
    scale = float(start.abs().max()) or 1.0
    direction = torch.randn(start.shape, generator=torch.Generator().manual_seed(s.seed), dtype=start.dtype)
    moved = s.step(start + 1e-5 * scale * direction.to(start.device), cases)
    if torch.equal(moved, out):
        raise _Failed("a change of 1e-5 (relative) in every entry of the state leaves the output unchanged",
                      "pass the state at full precision (binary float64 files, not text with few digits)")


@rule("pickles", "the class and its config pickle, and a rebuilt copy steps the same")
def check_pickles(s: Subject) -> None:
    cases, start = s.start()
    out = s.out()
    try:
        spec = pickle.loads(pickle.dumps(PluginSpec(type(s.sim), s.sim.config)))
    except Exception as exc:
        raise _Failed(f"{s.name} or its config does not pickle ({type(exc).__name__}: {exc})",
                      "define the class and its Config at the top level of an importable module, with "
                      "picklable config fields") from exc
    try:
        copy = spec.build(device=s.sim.device)
    except Exception as exc:
        raise _Failed(f"rebuilding from the pickled config raised {type(exc).__name__}: {exc}",
                      "__init__(config, device) must build everything the step needs from the config") from exc
    try:
        same = s.close_to(s.step(start, cases, sim=copy), out)
    finally:
        copy.close()
    if not same:
        raise _Failed("a copy rebuilt from the pickled config steps differently",
                      "keep everything that changes the step in the config, not in attributes set later")


@rule("differentiable", "a simulator that says differentiable = True passes gradients")
def check_differentiable(s: Subject) -> str | None:
    cases, start = s.start()
    s.out()
    if not s.sim.differentiable:
        return "differentiable is False (the core never differentiates through it)"
    state = start.clone().requires_grad_(True)
    out = s.step(state, cases)
    if not out.requires_grad:
        raise _Failed("differentiable = True, but step's output is not connected to its input by autograd",
                      "set differentiable = False, or write the step in torch operations")
    (grad,) = torch.autograd.grad(out.sum(), state)
    if not torch.isfinite(grad).all():
        raise _Failed("the gradient through step has NaN or Inf", "fix the step's backward pass")
    return None


RULES = {r.name: r.description for r in CHECKS}


@dataclass(frozen=True)
class BoundCheck:
    """One rule on one :class:`Subject`. :meth:`run` records it in a report; calling it (in a
    test) raises :class:`ConformanceError` on failure and skips the test when it cannot be checked."""

    rule: Rule
    subject: Subject

    def run(self, report: Report) -> None:
        try:
            skipped = self.rule.check(self.subject)
        except _Failed as failed:
            report.failures.append(Finding(self.rule.name, failed.problem, failed.fix))
        except _Skipped as why:
            report.skipped[self.rule.name] = str(why)
        except Exception as exc:  # whatever the plugin raises is this rule's failure, never the kit's crash
            report.failures.append(Finding(self.rule.name, f"checking it raised {type(exc).__name__}: {exc}",
                                           "run the rule's check on its own to see the traceback "
                                           f"(zooframe.plugins.testing.check_{self.rule.name.replace('-', '_')})"))
        else:
            if skipped:
                report.skipped[self.rule.name] = skipped
            else:
                report.passed.append(self.rule.name)

    def __call__(self) -> None:
        report = Report(self.subject.name)
        self.run(report)
        if report.failures:
            raise ConformanceError(report)
        if report.skipped:
            import pytest  # only a test calls a check this way

            pytest.skip(report.skipped[self.rule.name])

    def __repr__(self) -> str:
        return self.rule.name


def checks(simulator: Simulator | Callable[[], Simulator], **options) -> Iterator[BoundCheck]:
    """Every rule of :data:`CHECKS`, bound to one :class:`Subject` of ``simulator`` (``options``:
    as :class:`Subject` takes them)."""
    subject = Subject(simulator, **options)
    return (BoundCheck(r, subject) for r in CHECKS)


def parametrize_with_checks(simulator: Simulator | Callable[[], Simulator], **options):
    """A pytest decorator that makes each rule a test item of its own (named by the rule), called
    as ``check()``. Give a function that builds the simulator to build it only when a test runs."""
    import pytest

    return pytest.mark.parametrize("check", list(checks(simulator, **options)), ids=lambda c: c.rule.name)


def check_simulator(simulator: Simulator | Callable[[], Simulator],
                    reference: ReferenceSource | str | Path | None = None, cases: Sequence[Case] | None = None,
                    states: torch.Tensor | None = None, steps: int = 3, seed: int = 0, rtol: float = 1e-6,
                    raise_on_failure: bool = True) -> Report:
    """Check ``simulator`` against every rule in :data:`RULES` (the options: as :class:`Subject`
    takes them). Raises :class:`ConformanceError` listing every failure, unless
    ``raise_on_failure`` is False; returns the report."""
    bound = list(checks(simulator, reference=reference, cases=cases, states=states, steps=steps, seed=seed,
                        rtol=rtol))
    report = Report(bound[0].subject.name)
    for check in bound:
        check.run(report)
    if raise_on_failure and report.failures:
        raise ConformanceError(report)
    return report
