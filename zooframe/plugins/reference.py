"""Reference sources: where a task's cases, initial states and reference trajectories come from.

The simulator is only the black-box step; a reference source supplies the task around it. Two
are built in: ``simulator`` (the plugin's own high-fidelity mode) and ``file`` (trajectories
made by another code, or measured; see :mod:`zooframe.plugins.reference_file`). Others register
through the ``register_references`` hook like any plugin.
"""

from __future__ import annotations

import traceback
import warnings
from collections.abc import Mapping, Sequence
from typing import Literal

import torch

from . import stops
from .base import Plugin, PluginConfig
from .errors import ZooframeError
from .faults import SimulatorFault
from .simulator import Case, Simulator


class ReferenceSource(Plugin):
    """The cases of a task and their reference trajectories on the simulator's grid.

    Required: :meth:`cases` and :meth:`trajectories`. ``max_steps`` is the longest trajectory
    it can give (None: any length).
    """

    category = "reference"
    required = (("cases",), ("trajectories",))
    max_steps: int | None = None

    def __init__(self, config: PluginConfig, simulator: Simulator, device: str | torch.device = "cpu"):
        super().__init__(config)
        self.simulator = simulator
        self.device = torch.device(device)

    def cases(self) -> Mapping[str, Sequence[Case]]:
        """Named case sets; training uses ``"train"``, evaluation the configured split."""
        raise NotImplementedError

    def features(self, cases: Sequence[Case]) -> torch.Tensor:
        """Constant per-case inputs for the model, ``[B, F]``."""
        return torch.zeros(len(cases), 0, device=self.device)

    def trajectories(self, cases: Sequence[Case], steps: int) -> torch.Tensor:
        """``[B, steps + 1, C, *spatial]``, frame 0 being each case's initial state."""
        raise NotImplementedError

    def describe(self) -> str:
        """What the source is, for messages: ``reference source 'file' (data/burgers.npz)``."""
        return f"reference source {self.config.kind!r}"


class SimulatorReferenceConfig(PluginConfig):
    kind: Literal["simulator"]


class LegacyHighFidelity(ReferenceSource):
    """A high-fidelity mode written in the simulator's own vocabulary, as before 0.2: the methods
    ``cases``, ``case_features`` and ``reference`` of the simulator class. Served as it was, with
    a DeprecationWarning: name a ReferenceSource class as ``Simulator.high_fidelity`` instead."""

    def cases(self):
        return self.simulator.cases()

    def features(self, cases):
        features = getattr(self.simulator, "case_features", None)
        return features(cases) if features is not None else super().features(cases)

    def trajectories(self, cases, steps):
        return self.simulator.reference(cases, steps)


def high_fidelity_source(simulator: type[Simulator]) -> type[ReferenceSource] | None:
    """The reference source class of a simulator class's own high-fidelity mode, if it has one."""
    if simulator.high_fidelity is not None:
        return simulator.high_fidelity
    if callable(getattr(simulator, "cases", None)) and callable(getattr(simulator, "reference", None)):
        warnings.warn(f"{simulator.__qualname__} gives its high-fidelity mode as Simulator methods (cases, "
                      "case_features, reference); move them to a zooframe.ReferenceSource (cases, features, "
                      f"trajectories) and set {simulator.__qualname__}.high_fidelity to it (see "
                      "docs/writing-a-plugin.md)", DeprecationWarning, stacklevel=3)
        return LegacyHighFidelity
    return None


class SimulatorReference(ReferenceSource):
    """The simulator plugin's own high-fidelity mode: the reference source its class names as
    ``high_fidelity``, built on the same simulator (it may cache what it generates with
    :class:`zooframe.plugins.cache.TrajectoryCache`)."""

    Config = SimulatorReferenceConfig

    def __init__(self, config, simulator: Simulator, device="cpu"):
        super().__init__(config, simulator, device)
        mode = high_fidelity_source(type(simulator))
        if mode is None:
            raise ZooframeError(
                f"simulator {type(simulator).__name__} has no high-fidelity mode of its own (its class names no "
                "high_fidelity reference source), so the default reference source 'simulator' cannot serve it; give "
                'the reference from a file: "reference": {"kind": "file", "path": "..."} (see '
                "docs/writing-a-plugin.md)")
        self.mode = mode(config, simulator, device)
        self.max_steps = self.mode.max_steps

    @classmethod
    def of(cls, simulator: Simulator) -> SimulatorReference:
        """The high-fidelity mode of ``simulator``, on its device: ``SimulatorReference.of(sim).trajectories(...)``."""
        return cls(SimulatorReferenceConfig(kind="simulator"), simulator, simulator.device)

    def cases(self):
        return self.mode.cases()

    def features(self, cases):
        return self.mode.features(cases)

    def trajectories(self, cases, steps):
        return self.mode.trajectories(cases, steps)

    def describe(self) -> str:
        return f"the high-fidelity mode of simulator {type(self.simulator).__name__}"


class ReferenceGenerationError(ZooframeError):
    """The reference source's code failed while it generated trajectories: names the case and
    the step where it failed, with the code's own message."""


def generate(source: ReferenceSource, cases: Sequence[Case], steps: int) -> torch.Tensor:
    """``source.trajectories(cases, steps)``; an error from the code behind it (a CFL violation
    in a fine run, a crash, any exception) becomes a :class:`ReferenceGenerationError` that says
    which case failed at which step. The case and the step are found by running the source again
    (each case alone, then fewer steps), on the failure's path only. A :class:`ZooframeError`
    that is not a simulator fault (a reference file that is too short, say) is already the user's
    message and passes unchanged."""
    try:
        return source.trajectories(cases, steps)
    except Exception as exc:
        stops.raise_if_requested(exc)
        if isinstance(exc, ZooframeError) and not isinstance(exc, SimulatorFault):
            raise
        raise ReferenceGenerationError(_where(source, list(cases), steps) + f": {_message(exc)}") from exc


def _where(source: ReferenceSource, cases: list[Case], steps: int) -> str:
    what = f"generating the reference ({source.describe()})"
    alone = cases[:1] if len(cases) == 1 else [c for c in cases if _fails(source, [c], steps)][:1]
    if not alone:
        return f"{what} for the cases {', '.join(c.name for c in cases)} (no case fails when run alone)"
    good, bad = 0, steps  # the first `good` steps run, `bad` steps fail
    while bad - good > 1:
        mid = (good + bad) // 2
        good, bad = (good, mid) if _fails(source, alone, mid) else (mid, bad)
    if bad == 1 and _fails(source, alone, 0):
        return f"{what} for case {alone[0].name!r}, at its initial state"
    return f"{what} for case {alone[0].name!r}, at step {bad} of {steps}"


def _fails(source: ReferenceSource, cases: list[Case], steps: int) -> bool:
    try:
        source.trajectories(cases, steps)
    except Exception:
        return True
    return False


def _message(exc: Exception) -> str:
    """The code's message; for an exception that is no fault class, also where it was raised."""
    text = f"{type(exc).__name__}: {exc}"
    if isinstance(exc, SimulatorFault):
        return text
    frame = traceback.extract_tb(exc.__traceback__)[-1]
    return f"{text} (raised in {frame.name}, {frame.filename}:{frame.lineno})"
