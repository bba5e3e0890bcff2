"""The ways a simulator call can fail, one class each, so that a fault policy can tell them apart.

A plugin raises the class that fits (the external-executable plugin raises each of them); the
core's runner raises :class:`SimulatorShapeError` itself when a step returns a state of the wrong
shape. Any other exception from a step is a crash.
"""

from __future__ import annotations

from .errors import ZooframeError


class SimulatorFault(ZooframeError):
    """A simulator call that failed or returned something unusable; ``fault`` names the class."""

    fault = "fault"


class SimulatorCrashed(SimulatorFault):
    """The code raised, or exited with a return code it is not allowed."""

    fault = "exception"


class SimulatorTimeout(SimulatorFault):
    """The code ran past its time limit and was stopped."""

    fault = "timeout"


class SimulatorOutputError(SimulatorFault):
    """The code's output is missing or cannot be read."""

    fault = "output"


class SimulatorShapeError(SimulatorFault):
    """The code returned a state of the wrong shape or dtype."""

    fault = "shape"


class SimulatorNonFinite(SimulatorFault):
    """The code returned NaN or Inf."""

    fault = "nonfinite"


FAULT_CLASSES = tuple(c.fault for c in (SimulatorCrashed, SimulatorTimeout, SimulatorOutputError, SimulatorShapeError,
                                        SimulatorNonFinite))
"""The names of the fault classes, as a fault policy names them (``execution.faults.by_class``)."""
