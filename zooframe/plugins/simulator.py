"""The simulator interface: a batched black-box step on states ``[B, C, *spatial]``."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
import torch

from .base import Plugin
from .errors import ZooframeError


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

    figure_channels: ClassVar[tuple[str, ...] | None] = None  # the channels a run's figures show (default: each)

    def render(self, state: torch.Tensor) -> torch.Tensor:
        """A scalar field ``[B, *spatial']`` to show a state in figures, e.g. a flow's vorticity.
        Without an override, the figures show the state's channels instead (:meth:`figure_fields`);
        called directly, the default gives the magnitude over channels."""
        return state.norm(dim=1)

    def figure_fields(self, state: torch.Tensor) -> dict[str, torch.Tensor]:
        """The scalar fields ``[B, *spatial']`` a run's snapshots show of ``state``, by the name of
        their quantity: :meth:`render`'s, named :attr:`render_label`, where the plugin overrides it;
        otherwise each channel that :attr:`figure_channels` names (default: every channel), so that
        fields of different quantities are never mixed into one."""
        names = self.figure_quantities()
        if type(self).render is not Simulator.render:
            return {names[0]: self.render(state)}
        channels = self.state_spec.channels
        return {name: state[:, channels.index(name)] for name in names}

    def figure_quantities(self) -> tuple[str, ...]:
        """The names of what :meth:`figure_fields` gives; raises :class:`ZooframeError` when
        :attr:`figure_channels` names a channel the state does not hold (checked before a run)."""
        if type(self).render is not Simulator.render:
            return (self.render_label,)
        channels = self.state_spec.channels
        unknown = [name for name in self.figure_channels or () if name not in channels]
        if unknown:
            raise ZooframeError(f"{type(self).__name__}.figure_channels names {', '.join(map(repr, unknown))}, which "
                                f"its state does not hold (its channels: {', '.join(channels)})")
        return tuple(self.figure_channels or channels)

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

    def run_facts(self, workers: int = 0) -> dict[str, Any]:
        """How the code runs, for the run's ``summary.json`` (key ``simulator``) and its log: JSON
        values, e.g. an MPI code's launcher, ranks and runs at once. ``workers``: the engine's worker
        processes (process and Ray backends), each stepping a copy of this simulator; 0: the local
        backend, where this one steps alone. Raise ``ZooframeError`` when the machine cannot hold
        them: the run is refused before any work. Default: nothing to say."""
        return {}

    # --- the step -----------------------------------------------------------------------------
    def step(self, state: torch.Tensor, cases: Sequence[Case], seed: int) -> torch.Tensor:
        """Advance ``state`` ``[B, C, *spatial]`` by one step; ``cases[b]`` is row b's case."""
        rows = state.detach().cpu().numpy()
        out = [np.asarray(self.step_one(row, case, seed)) for row, case in zip(rows, cases)]
        return torch.as_tensor(np.stack(out), dtype=state.dtype, device=state.device)

    def step_one(self, state: np.ndarray, case: Case, seed: int) -> np.ndarray:
        """Advance one case's state ``[C, *spatial]`` (a NumPy array) by one step."""
        raise NotImplementedError
