"""Reference sources: where a task's cases, initial states and reference trajectories come from.

The simulator is only the black-box step; a reference source supplies the task around it. Two
are built in: ``simulator`` (the plugin's own high-fidelity mode) and ``file`` (trajectories
made by another code, or measured; see :mod:`zooframe.plugins.reference_file`). Others register
through the ``register_references`` hook like any plugin.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Literal

import torch

from .base import Plugin, PluginConfig
from .errors import ZooframeError
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


class SimulatorReference(ReferenceSource):
    """The simulator plugin's own high-fidelity mode (``Simulator.cases``, ``case_features`` and
    ``reference``); the plugin may cache what it generates (zooframe.plugins.cache)."""

    Config = SimulatorReferenceConfig

    def __init__(self, config, simulator: Simulator, device="cpu"):
        super().__init__(config, simulator, device)
        if not simulator.has_reference_mode():
            raise ZooframeError(
                f"simulator {type(simulator).__name__} has no high-fidelity mode of its own (it implements no cases "
                "and reference), so the default reference source 'simulator' cannot serve it; give the reference "
                'from a file: "reference": {"kind": "file", "path": "..."} (see docs/writing-a-plugin.md)')

    def cases(self):
        return self.simulator.cases()

    def features(self, cases):
        return self.simulator.case_features(cases)

    def trajectories(self, cases, steps):
        return self.simulator.reference(cases, steps)

    def describe(self) -> str:
        return f"the high-fidelity mode of simulator {type(self.simulator).__name__}"
