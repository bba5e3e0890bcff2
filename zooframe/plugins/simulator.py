"""The simulator interface: a batched black-box step on states ``[B, C, *spatial]``."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np
import torch

from .base import Plugin


@dataclass(frozen=True)
class Case:
    """One physical setting a simulator offers, e.g. a Reynolds number."""

    name: str
    params: Mapping[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class StateSpec:
    """Layout of a state: named channels over a spatial grid. ``valid`` (bool ``[C, *spatial]``)
    marks the entries that hold data when some do not, e.g. the padding of a staggered grid
    stored as one array; the core never writes a correction there."""

    channels: tuple[str, ...]
    spatial_shape: tuple[int, ...]
    valid: torch.Tensor | None = field(default=None, compare=False, repr=False)

    @property
    def num_channels(self) -> int:
        return len(self.channels)

    @property
    def shape(self) -> tuple[int, ...]:
        return (self.num_channels, *self.spatial_shape)


class Simulator(Plugin):
    """A black-box solver the core couples a network to.

    Required: :attr:`state_spec`, and :meth:`step` for a batched code or only :meth:`step_one`
    for a code that runs one case at a time (the core then batches it). Optional: :meth:`render`,
    :meth:`close`, and :attr:`high_fidelity`, the :class:`~zooframe.plugins.reference.ReferenceSource`
    class of a high-fidelity mode of the plugin's own (the task's cases and reference trajectories),
    which the default reference source ``simulator`` serves; a code without one takes its cases and
    reference from another source, such as a file. The core never differentiates
    through a simulator unless ``differentiable`` is True and the run asks for first-order
    training.

    ``seed`` is the same for every query of one gradient estimate, so that a stochastic code can
    use common random numbers across them.
    """

    category = "simulator"
    required = (("state_spec",), ("step", "step_one"))
    differentiable: bool = False
    high_fidelity: ClassVar[type | None] = None  # a ReferenceSource subclass (reference.py imports this module)

    def __init__(self, config, device: str | torch.device = "cpu"):
        super().__init__(config)
        self.device = torch.device(device)

    @property
    def state_spec(self) -> StateSpec:
        raise NotImplementedError

    def render(self, state: torch.Tensor) -> torch.Tensor:
        """A scalar field ``[B, *spatial']`` to show a state in figures (default: the magnitude
        over channels; a flow plugin might give vorticity)."""
        return state.norm(dim=1)

    @property
    def render_label(self) -> str:
        """The quantity :meth:`render` gives, named in the figures' titles and colour bars. A plugin
        that overrides render names its quantity here (a class attribute serves, e.g.
        ``render_label = "vorticity"``); without one, an overridden render is named by its class."""
        if type(self).render is Simulator.render:
            return "|state|"
        return f"{type(self).__name__}.render(state)"

    def close(self) -> None:
        """Release what the code holds (processes, files, licences). Called when a run ends and
        when a worker stops; the simulator must stay usable: a later step starts what it needs."""

    # --- the step -----------------------------------------------------------------------------
    def step(self, state: torch.Tensor, cases: Sequence[Case], seed: int) -> torch.Tensor:
        """Advance ``state`` ``[B, C, *spatial]`` by one step; ``cases[b]`` is row b's case."""
        rows = state.detach().cpu().numpy()
        out = [np.asarray(self.step_one(row, case, seed)) for row, case in zip(rows, cases)]
        return torch.as_tensor(np.stack(out), dtype=state.dtype, device=state.device)

    def step_one(self, state: np.ndarray, case: Case, seed: int) -> np.ndarray:
        """Advance one case's state ``[C, *spatial]`` (a NumPy array) by one step."""
        raise NotImplementedError
