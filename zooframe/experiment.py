"""An experiment's live objects, built once from its config."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch

from .config import ExperimentBase
from .correction import CorrectionNetwork
from .errors import ZooframeError
from .estimators.base import Estimator
from .flat_params import FlatParams
from .models.base import ModelSpec
from .objective import SimulatorRunner
from .registry import Registry, get_registry
from .simulator import Case, Simulator


def build_correction(registry: Registry, model_config, channels: int, features: int,
                     spatial_shape: tuple[int, ...], valid: torch.Tensor | None = None) -> CorrectionNetwork:
    """The model plugin's network inside the core's normalization and case-feature wrapper."""
    net = registry.create("model", model_config).build(ModelSpec(channels + features, channels, tuple(spatial_shape)))
    return CorrectionNetwork(net, channels, features, len(spatial_shape), valid)


@dataclass
class Experiment:
    config: ExperimentBase
    simulator: Simulator
    runner: SimulatorRunner
    estimator: Estimator
    model: CorrectionNetwork
    flat: FlatParams
    device: torch.device
    dtype: torch.dtype
    mask: torch.Tensor | None = None  # the sparsity mask of a finished run, when it had one

    @classmethod
    def build(cls, config: ExperimentBase, registry: Registry | None = None) -> "Experiment":
        registry = registry or get_registry()
        ex = config.execution
        if ex.device == "cuda" and not torch.cuda.is_available():
            raise ZooframeError("execution.device is 'cuda' but PyTorch sees no CUDA device; use 'cpu'")
        device, dtype = torch.device(ex.device), getattr(torch, ex.dtype)
        simulator = registry.create("simulator", config.simulator, device=device)
        spec = simulator.state_spec
        splits = simulator.cases()
        for split in ("train", config.evaluation.split):
            if not splits.get(split):
                raise ZooframeError(f"simulator {config.simulator.kind!r} offers no {split!r} cases "
                                    f"(it has: {', '.join(splits) or 'none'})")
        n_features = simulator.case_features(splits["train"][:1]).shape[1]
        torch.manual_seed(config.training.seed)
        model = build_correction(registry, config.model, spec.num_channels, n_features, spec.spatial_shape,
                                 spec.valid).to(device, dtype)
        estimator = registry.create("estimator", config.estimator)
        return cls(config, simulator, SimulatorRunner(simulator), estimator, model, FlatParams(model), device, dtype)

    def cases(self, split: str) -> list[Case]:
        return list(self.simulator.cases()[split])

    def features(self, cases: Sequence[Case]) -> torch.Tensor:
        return torch.as_tensor(self.simulator.case_features(cases), device=self.device, dtype=self.dtype)

    def reference(self, cases: Sequence[Case], steps: int) -> torch.Tensor:
        ref = torch.as_tensor(self.simulator.reference(cases, steps), device=self.device, dtype=self.dtype)
        expected = (len(cases), steps + 1, *self.simulator.state_spec.shape)
        if tuple(ref.shape) != expected:
            raise ZooframeError(f"{type(self.simulator).__name__}.reference returned shape {tuple(ref.shape)}, "
                                f"expected {expected}")
        return ref
