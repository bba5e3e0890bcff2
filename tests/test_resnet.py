"""The resnet model: the two documented correctors' sizes, ZO estimates through it, its config errors."""

import pytest
import torch

import zooframe
from zooframe.builtins.estimators.cge import CGE, CGEConfig
from zooframe.builtins.models.resnet import BOOK, PAPER, ResNetConfig, ResNetModel
from zooframe.core.objective import CorrectionObjective
from zooframe.execution.engine import LocalEngine
from zooframe.plugins.model import ModelSpec
from zooframe.runs.experiment import Experiment

from .helpers import small

KARMAN = ModelSpec(in_channels=3, out_channels=2, spatial_shape=(65, 33))  # u, v and the Reynolds number


@pytest.mark.parametrize("config, parameters", [(PAPER, 260_354), (BOOK, 47_330)])
def test_the_papers_and_the_books_correctors_have_their_sizes(config, parameters):
    with torch.device("meta"):
        net = ResNetModel(ResNetConfig(**config)).build(KARMAN)
    assert sum(p.numel() for p in net.parameters()) == parameters


def test_zo_estimate_through_a_resnet_matches_autograd_through_the_solver():
    config = small(unroll=3)
    config["model"] = {"kind": "resnet", "blocks": 1, "channels": 2, "kernel_size": 3, "padding": "circular"}
    config["execution"] = {"dtype": "float64"}
    exp = Experiment.build(zooframe.load_config(config))
    objective = CorrectionObjective(exp.runner, exp.flat, exp.sampler(3).sample(0))
    theta = exp.flat.get() + 0.05 * torch.randn(exp.flat.dim, dtype=torch.float64)
    theta_g = theta.clone().requires_grad_(True)
    (true,) = torch.autograd.grad(objective(theta_g[None])[0], theta_g)
    est = CGE(CGEConfig(kind="cge", scheme="forward", mu=1e-5))
    queries = est.ask(theta, torch.Generator())
    grad = est.tell(queries, LocalEngine().evaluate(objective, queries))
    assert float(torch.nn.functional.cosine_similarity(grad, true, dim=0)) >= 0.99


def test_zero_initialised_output_leaves_the_solver_uncorrected():
    net = ResNetModel(ResNetConfig(kind="resnet", blocks=1, channels=4, kernel_size=3,
                                   zero_init_output=True)).build(ModelSpec(2, 1, (8,)))
    assert not net(torch.randn(3, 2, 8)).any()


@pytest.mark.parametrize("model, expected", [
    ({"kernel_size": 4}, "model.kernel_size: kernel_size must be odd (got 4)"),
    ({"output_kernel_size": 2}, "model.output_kernel_size: output_kernel_size must be odd (got 2)"),
    ({"blocks": 0}, "model.blocks: Input should be greater than or equal to 1"),
    ({"stem": "dense"}, "model.stem: Input should be 'conv' or 'projection'"),
])
def test_config_errors_name_the_field(model, expected):
    config = {"simulator": {"kind": "burgers"}, "model": {"kind": "resnet", **model}, "estimator": {"kind": "cge"}}
    with pytest.raises(zooframe.ConfigError) as error:
        zooframe.load_config(config)
    assert expected in str(error.value)
