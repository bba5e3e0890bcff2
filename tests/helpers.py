"""Shared pieces for the tests: small configs and an opaque per-sample simulator."""

from typing import Literal

import numpy as np
import torch

import zooframe
from zooframe.builtins.simulators.burgers import Burgers, BurgersConfig

SMALL = {
    "name": "small",
    "simulator": {"kind": "burgers", "resolution": 16, "train_viscosities": [0.02, 0.05], "test_viscosities": [0.03]},
    "model": {"kind": "conv", "hidden_channels": 4, "kernel_size": 3, "depth": 0, "padding": "circular"},
    "estimator": {"kind": "cge", "scheme": "forward"},
    "training": {"mode": "zo", "steps": 5, "unroll": 3, "horizon": 10, "optimizer": {"lr": 0.01}},
    "evaluation": {"steps": 10},
    "output": {"progress": False, "figures": False},  # a second a run; tests/test_figures.py draws them
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


class FaultyBurgersConfig(BurgersConfig):
    kind: Literal["faulty_burgers"]
    fault: Literal["exception", "timeout", "output", "shape", "nonfinite"] = "exception"
    above: float | None = None  # rows whose largest |value| exceeds this fault, every time (a diverging input)
    every: int | None = None  # every n-th call of this process faults once (a transient fault)
    rows: int | None = None  # calls with this many rows fault (e.g. a window's first step, shared by all queries)
    close_log: str | None = None  # close() appends this process's id to the file
    case: str | None = None  # rows of this case fault
    first: int = 0  # the first n calls of this process fault, on any case (a fault at start-up)
    # only steps of training cases fault, so that the held-out evaluation after training runs clean


class FaultyBurgers(Burgers):
    """Burgers with injected faults of one class, deterministic so that a test knows which
    queries fail: rows with values beyond ``above``, or every ``every``-th call."""

    Config = FaultyBurgersConfig
    differentiable = False

    def __init__(self, config, device="cpu"):
        super().__init__(config, device)
        self.calls = 0  # of training cases
        self.started = 0  # of any case

    def close(self):
        if self.config.close_log:
            import os

            with open(self.config.close_log, "a") as log:
                log.write(f"{os.getpid()}\n")

    def step(self, state, cases, seed):
        from zooframe.plugins import faults

        cfg = self.config
        bad = torch.zeros(state.shape[0], dtype=torch.bool)
        self.started += 1
        if self.started <= cfg.first:
            bad[:] = True
        elif not cases[0].name.startswith("train"):
            return Burgers.step(self, state, cases, seed)
        self.calls += 1
        if cfg.above is not None:
            bad |= state.detach().flatten(1).abs().amax(dim=1).cpu() > cfg.above
        if (cfg.every is not None and self.calls % cfg.every == 0) or state.shape[0] == cfg.rows:
            bad[:] = True
        bad |= torch.tensor([c.name == cfg.case for c in cases])
        out = Burgers.step(self, state, cases, seed)
        if not bad.any():
            return out
        if cfg.fault == "nonfinite":
            return torch.where(bad.to(out.device).view(-1, *[1] * (out.ndim - 1)), float("nan"), out)
        if cfg.fault == "shape":
            return out[..., :-1]
        raise {"exception": RuntimeError("solver diverged"), "timeout": faults.SimulatorTimeout("ran past 5 s"),
               "output": faults.SimulatorOutputError("no output file")}[cfg.fault]


class _Plugin:
    @zooframe.hookimpl
    def register_simulators(self, register):
        register(OpaqueBurgers)
        register(FaultyBurgers)


def registry_with_opaque():
    return zooframe.Registry(load_external=False, plugins={"test-opaque": _Plugin()})


def mlp_regression(inputs: int, hidden: int, outputs: int, samples: int, seed: int = 0):
    """A small tanh MLP's batched mean-squared-error loss ``f(thetas [Q, d]) -> [Q]`` (float64),
    its flat parameters, and the parameter map."""
    from zooframe.core.flat_params import FlatParams

    torch.manual_seed(seed)
    net = torch.nn.Sequential(torch.nn.Linear(inputs, hidden), torch.nn.Tanh(),
                              torch.nn.Linear(hidden, outputs)).double()
    flat = FlatParams(net)
    x = torch.randn(samples, inputs, dtype=torch.float64)
    y = torch.randn(samples, outputs, dtype=torch.float64)

    def f(thetas):
        return (flat.batched_forward(thetas, x, batched=(False,)) - y).pow(2).mean(dim=(1, 2))

    return f, flat
