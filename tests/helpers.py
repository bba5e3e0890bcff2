"""Shared pieces for the tests: small configs and an opaque per-sample simulator."""

from typing import Literal

import numpy as np
import torch

import zooframe
from zooframe.simulators.burgers import Burgers, BurgersConfig

SMALL = {
    "name": "small",
    "simulator": {"kind": "burgers", "resolution": 16, "train_viscosities": [0.02, 0.05], "test_viscosities": [0.03]},
    "model": {"kind": "conv", "hidden_channels": 4, "kernel_size": 3, "depth": 0, "padding": "circular"},
    "estimator": {"kind": "cge", "scheme": "forward"},
    "training": {"mode": "zo", "steps": 5, "unroll": 3, "horizon": 10, "optimizer": {"lr": 0.01}},
    "evaluation": {"steps": 10},
    "output": {"progress": False},
}


def small(**training):
    import copy

    config = copy.deepcopy(SMALL)
    config["training"].update(training)
    return config


class OpaqueBurgersConfig(BurgersConfig):
    kind: Literal["opaque_burgers"]
    fail_after: int | None = None


class OpaqueBurgers(Burgers):
    """The Burgers step as a legacy code would offer it: one case at a time, NumPy in and out,
    no gradients."""

    Config = OpaqueBurgersConfig
    differentiable = False
    step = zooframe.Simulator.step  # use the core's per-sample batching
    calls = 0

    def step_one(self, state: np.ndarray, case, seed: int) -> np.ndarray:
        OpaqueBurgers.calls += 1
        if self.config.fail_after is not None and OpaqueBurgers.calls > self.config.fail_after:
            raise RuntimeError("solver diverged")
        out = Burgers.step(self, torch.from_numpy(state)[None].double(), [case], seed)[0]
        return out.numpy()


class _Plugin:
    @zooframe.hookimpl
    def register_simulators(self, register):
        register(OpaqueBurgers)


def registry_with_opaque():
    return zooframe.Registry(load_external=False, plugins={"test-opaque": _Plugin()})


def mlp_regression(inputs: int, hidden: int, outputs: int, samples: int, seed: int = 0):
    """A small tanh MLP's batched mean-squared-error loss ``f(thetas [Q, d]) -> [Q]`` (float64),
    its flat parameters, and the parameter map."""
    from zooframe.flat_params import FlatParams

    torch.manual_seed(seed)
    net = torch.nn.Sequential(torch.nn.Linear(inputs, hidden), torch.nn.Tanh(),
                              torch.nn.Linear(hidden, outputs)).double()
    flat = FlatParams(net)
    x = torch.randn(samples, inputs, dtype=torch.float64)
    y = torch.randn(samples, outputs, dtype=torch.float64)

    def f(thetas):
        return (flat.batched_forward(thetas, x, batched=(False,)) - y).pow(2).mean(dim=(1, 2))

    return f, flat
