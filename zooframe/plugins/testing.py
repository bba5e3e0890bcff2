"""The conformance kit for plugin authors: :func:`check_simulator`.

Run it in a plugin's own tests (``zooframe new-plugin`` writes such a test) or on a config with
``zooframe check CONFIG``::

    from zooframe.plugins.testing import check_simulator

    def test_my_simulator_conforms():
        check_simulator(MySimulator(MyConfig(kind="mine")), reference="reference.npz")

Each rule that fails is reported with what was seen and how to fix it; all failures of one
check are raised together as a :class:`ConformanceError` (an ``AssertionError``, so pytest shows
it as a plain test failure).
"""

from __future__ import annotations

import pickle
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch

from .base import PluginSpec, missing_methods
from .errors import ZooframeError
from .reference import ReferenceSource, SimulatorReference, SimulatorReferenceConfig
from .reference_file import FileReference, FileReferenceConfig
from .simulator import Case, Simulator, StateSpec

RULES = {
    "required-methods": "the class implements every required method",
    "state-spec": "state_spec is a StateSpec of named channels over a grid of positive sizes",
    "reference-spec": "the reference source's cases, features and trajectories fit the state spec",
    "output-shape": "step returns a state of the input's shape",
    "output-dtype": "step returns the input's dtype",
    "output-device": "step returns a tensor on the input's device",
    "finite": "a rollout from each of the task's initial states stays free of NaN and Inf",
    "rows-independent": "each row of a batch is stepped as if it were alone",
    "deterministic": "the same state, cases and seed give the same output",
    "responds": "the output changes when the state changes a little (finite differences see it)",
    "pickles": "the class and its config pickle, and a rebuilt copy steps the same",
    "differentiable": "a simulator that says differentiable = True passes gradients",
}


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


def _step(sim: Simulator, state: torch.Tensor, cases: Sequence[Case], seed: int) -> torch.Tensor:
    try:
        out = sim.step(state, list(cases), seed)
    except NotImplementedError:
        raise _Failed("step raised NotImplementedError", "implement step (batched) or step_one (one case)")
    except Exception as exc:
        raise _Failed(f"step raised {type(exc).__name__}: {exc}",
                      "step must run on the task's own states and cases; see the traceback with "
                      "sim.step(state, cases, seed)") from exc
    if not isinstance(out, torch.Tensor):
        raise _Failed(f"step returned {type(out).__name__}, not a torch.Tensor",
                      "return torch.as_tensor(result, dtype=state.dtype, device=state.device)")
    return out


def _close(a: torch.Tensor, b: torch.Tensor, rtol: float) -> bool:
    """Equal up to ``rtol`` of ``b``'s largest finite entry; NaN only where the other has NaN."""
    scale = float(torch.nan_to_num(b.abs(), nan=0.0, posinf=0.0).max()) if b.numel() else 1.0
    return a.shape == b.shape and bool(torch.allclose(a.to(b.dtype), b, rtol=rtol, atol=rtol * max(scale, 1e-12),
                                                      equal_nan=True))


def _reference_source(sim: Simulator, reference: ReferenceSource | str | Path | None) -> ReferenceSource | None:
    if isinstance(reference, ReferenceSource):
        return reference
    if reference is not None:
        return FileReference(FileReferenceConfig(kind="file", path=str(reference)), sim, device=sim.device)
    if sim.has_reference_mode():
        return SimulatorReference(SimulatorReferenceConfig(kind="simulator"), sim, device=sim.device)
    return None


def check_simulator(simulator: Simulator, reference: ReferenceSource | str | Path | None = None,
                    cases: Sequence[Case] | None = None, states: torch.Tensor | None = None, steps: int = 3,
                    seed: int = 0, rtol: float = 1e-6, raise_on_failure: bool = True) -> Report:
    """Check ``simulator`` against the rules in :data:`RULES`.

    The states it steps come from ``reference`` (a reference source, or the path of a reference
    file; default: the simulator's own high-fidelity mode, if it has one), or else from ``cases``
    with their initial ``states`` ``[B, C, *S]``. ``rtol`` is the tolerance of the comparisons
    (row independence, determinism, rebuilt copies); a solver whose batched arithmetic differs
    from its one-row arithmetic by rounding passes at the default.
    """
    sim = simulator
    report = Report(type(sim).__qualname__)

    def rule(name: str, check: Callable[[], str | None]) -> None:
        try:
            skipped = check()
        except _Failed as failed:
            report.failures.append(Finding(name, failed.problem, failed.fix))
        else:
            if skipped:
                report.skipped[name] = skipped
            else:
                report.passed.append(name)

    def required() -> None:
        missing = missing_methods(type(sim), Simulator)
        if missing:
            raise _Failed(f"{type(sim).__qualname__} does not implement {'; '.join(missing)}",
                          "implement them (docs/writing-a-plugin.md lists what is required)")

    rule("required-methods", required)
    spec = None

    def state_spec() -> None:
        nonlocal spec
        try:
            got = sim.state_spec
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
        spec = got

    rule("state-spec", state_spec)
    if spec is None:
        return _finish(report, raise_on_failure)

    source: ReferenceSource | None = None
    start: torch.Tensor | None = None
    task_cases: list[Case] = list(cases or [])

    def reference_spec() -> str | None:
        nonlocal source, start, task_cases
        try:
            source = _reference_source(sim, reference)
        except ZooframeError as exc:
            raise _Failed(str(exc), "fix the reference file as each line says")
        if source is None:
            return "no reference source (give reference=... to check one)"
        sets = source.cases()
        task_cases = [c for split in sets.values() for c in split]
        names = [c.name for c in task_cases]
        if not task_cases or len(set(names)) != len(names):
            raise _Failed(f"case sets {dict((k, len(v)) for k, v in sets.items())} with names {names}",
                          "offer at least a 'train' and a 'test' set of uniquely named cases")
        n = min(steps, source.max_steps or steps)
        traj = torch.as_tensor(source.trajectories(task_cases, n))
        expected = (len(task_cases), n + 1, *spec.shape)
        if tuple(traj.shape) != expected:
            raise _Failed(f"trajectories(cases, {n}) has shape {tuple(traj.shape)}",
                          f"return [cases, steps + 1, C, *spatial] = {expected}")
        if not traj.is_floating_point() or not torch.isfinite(traj).all():
            raise _Failed(f"trajectories are {traj.dtype} with non-finite entries or not floats",
                          "give finite floating-point reference states")
        features = torch.as_tensor(source.features(task_cases))
        if features.ndim != 2 or features.shape[0] != len(task_cases) or not torch.isfinite(features).all():
            raise _Failed(f"features(cases) has shape {tuple(features.shape)}",
                          f"return finite [cases, F] = [{len(task_cases)}, F] (F may be 0)")
        start = traj[:, 0]
        return None

    rule("reference-spec", reference_spec)
    if start is None and states is not None and task_cases:
        start = torch.as_tensor(states)
    if start is None:
        why = "no states to step: give reference=... (or cases=... with states=...)"
        for name in ("output-shape", "output-dtype", "output-device", "finite", "rows-independent",
                     "deterministic", "responds", "pickles", "differentiable"):
            report.skipped[name] = why
        return _finish(report, raise_on_failure)

    start = start.to(sim.device, torch.float64)
    ok: dict[str, torch.Tensor] = {}

    def output_shape() -> None:
        out = _step(sim, start, task_cases, seed)
        if tuple(out.shape) != tuple(start.shape):
            raise _Failed(f"a state of shape {tuple(start.shape)} came back as {tuple(out.shape)}",
                          "return one next state per row, of the input's shape [B, C, *spatial]")
        ok["out"] = out

    def output_dtype() -> None:
        for dtype in (torch.float64, torch.float32):
            out = ok["out"] if dtype == start.dtype and "out" in ok else _step(sim, start.to(dtype), task_cases, seed)
            if out.dtype != dtype:
                raise _Failed(f"a {dtype} state came back as {out.dtype}",
                              "return the input's dtype (float64 runs need float64 steps: ZO differences of "
                              "nearby states vanish in float32 rounding)")

    def output_device() -> None:
        if ok["out"].device != start.device:
            raise _Failed(f"a state on {start.device} came back on {ok['out'].device}",
                          "return the result on state.device (torch.as_tensor(..., device=state.device))")

    def finite() -> None:
        s = start
        for t in range(steps):
            s = _step(sim, s, task_cases, seed + t)
            bad = [c.name for c, row in zip(task_cases, s) if not torch.isfinite(row).all()]
            if bad:
                raise _Failed(f"NaN or Inf after {t + 1} step(s) from the initial states of {', '.join(bad[:5])}",
                              "the step must be stable on the task's own states (time step, CFL limit)")

    def rows_independent() -> None:
        out = ok["out"]
        for i, case in enumerate(task_cases):
            alone = _step(sim, start[i:i + 1], [case], seed)[0]
            if not _close(out[i], alone, rtol):
                raise _Failed(f"row {i} ({case.name}) stepped in a batch of {len(task_cases)} differs from it stepped "
                              f"alone (max difference {float((out[i] - alone).abs().max()):.3g})",
                              "step each row from its own state and case only: no batch statistics, no shared "
                              "state across rows")
        order = list(reversed(range(len(task_cases))))
        flipped = _step(sim, start[order], [task_cases[i] for i in order], seed)
        if not _close(flipped[order], out, rtol):
            raise _Failed("reordering the rows of a batch changes their results",
                          "read each row's case from cases[b] for row b, never by position in a fixed list")

    def deterministic() -> None:
        again = _step(sim, start, task_cases, seed)
        if not _close(again, ok["out"], rtol):
            raise _Failed(f"two calls with seed {seed} differ by {float((again - ok['out']).abs().max()):.3g}",
                          "draw any randomness from the seed argument (e.g. numpy.random.default_rng(seed))")

    def responds() -> None:
        scale = float(start.abs().max()) or 1.0
        direction = torch.randn(start.shape, generator=torch.Generator().manual_seed(seed), dtype=start.dtype)
        moved = _step(sim, start + 1e-5 * scale * direction.to(start.device), task_cases, seed)
        if torch.equal(moved, ok["out"]):
            raise _Failed("a change of 1e-5 (relative) in every entry of the state leaves the output unchanged",
                          "pass the state at full precision (binary float64 files, not text with few digits)")

    def pickles() -> None:
        try:
            spec_copy = pickle.loads(pickle.dumps(PluginSpec(type(sim), sim.config)))
        except Exception as exc:
            raise _Failed(f"{type(sim).__qualname__} or its config does not pickle ({type(exc).__name__}: {exc})",
                          "define the class and its Config at the top level of an importable module, with "
                          "picklable config fields") from exc
        try:
            copy = spec_copy.build(device=sim.device)
        except Exception as exc:
            raise _Failed(f"rebuilding from the pickled config raised {type(exc).__name__}: {exc}",
                          "__init__(config, device) must build everything the step needs from the config")
        try:
            same = _close(_step(copy, start, task_cases, seed), ok["out"], rtol)
        finally:
            copy.close()
        if not same:
            raise _Failed("a copy rebuilt from the pickled config steps differently",
                          "keep everything that changes the step in the config, not in attributes set later")

    def differentiable() -> str | None:
        if not sim.differentiable:
            return "differentiable is False (the core never differentiates through it)"
        state = start.clone().requires_grad_(True)
        out = _step(sim, state, task_cases, seed)
        if not out.requires_grad:
            raise _Failed("differentiable = True, but step's output is not connected to its input by autograd",
                          "set differentiable = False, or write the step in torch operations")
        (grad,) = torch.autograd.grad(out.sum(), state)
        if not torch.isfinite(grad).all():
            raise _Failed("the gradient through step has NaN or Inf", "fix the step's backward pass")
        return None

    rule("output-shape", output_shape)
    rule("output-dtype", output_dtype)
    if "out" in ok:
        for name, check in (("output-device", output_device), ("finite", finite),
                            ("rows-independent", rows_independent), ("deterministic", deterministic),
                            ("responds", responds), ("pickles", pickles), ("differentiable", differentiable)):
            rule(name, check)
    else:
        for name in ("output-device", "finite", "rows-independent", "deterministic", "responds", "pickles",
                     "differentiable"):
            report.skipped[name] = "step gives no usable output (see output-shape)"
    return _finish(report, raise_on_failure)


def _finish(report: Report, raise_on_failure: bool) -> Report:
    if raise_on_failure and report.failures:
        raise ConformanceError(report)
    return report
