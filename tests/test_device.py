"""``execution.device: cuda``: the same numbers as on the CPU, and a run that trains, evaluates and
resumes there. Every test needs a CUDA device and skips without one; benchmarks/gpu_check.py runs
this module on a GPU machine."""

import copy
import json
from importlib.util import find_spec
from pathlib import Path

import pytest
import torch

import zooframe
from zooframe.builtins.estimators.cge import CGE, CGEConfig
from zooframe.builtins.models.resnet import ResNetConfig, ResNetModel
from zooframe.core.flat_params import FlatParams
from zooframe.core.objective import CorrectionObjective
from zooframe.execution.engine import LocalEngine
from zooframe.plugins.model import ModelSpec
from zooframe.runs.experiment import Experiment
from zooframe.runs.trainer import Trainer

from .helpers import small

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
GPU = "cuda"
ROOT = Path(__file__).resolve().parents[1]
RESNET = {"kind": "resnet", "blocks": 1, "channels": 2, "kernel_size": 3, "padding": "circular"}


def on(device: str, config: dict) -> dict:
    config = copy.deepcopy(config)
    config["execution"] = {**config.get("execution", {}), "device": device, "dtype": "float64"}
    return config


def test_grouped_forward_on_the_device_equals_the_cpus():
    net = ResNetModel(ResNetConfig(kind="resnet", blocks=2, channels=4, kernel_size=3, stem="projection"))
    net = net.build(ModelSpec(3, 2, (9, 7))).double()
    flat = FlatParams(net)
    thetas = flat.get() + 0.1 * torch.randn(5, flat.dim, dtype=torch.float64)
    x = torch.randn(5, 2, 3, 9, 7, dtype=torch.float64)
    with torch.no_grad():
        cpu = flat.batched_forward(thetas, x, batched=(True,))
        gpu = FlatParams(net.to(GPU)).batched_forward(thetas.to(GPU), x.to(GPU), batched=(True,))
    assert gpu.device.type == GPU
    torch.testing.assert_close(gpu.cpu(), cpu, atol=1e-10, rtol=0)


def zo_estimate(config: dict, device: str) -> torch.Tensor:
    with Experiment.build(zooframe.load_config(on(device, config))) as exp:
        objective = CorrectionObjective(exp.runner, exp.flat, exp.sampler(exp.config.training.unroll).sample(0))
        estimator = CGE(CGEConfig(kind="cge", scheme="forward", mu=1e-5))
        queries = estimator.ask(exp.flat.get(), torch.Generator(device=exp.device))
        grad = estimator.tell(queries, LocalEngine().evaluate(objective, queries))
    assert grad.device.type == device
    return grad.cpu()


@pytest.mark.parametrize("model", [small()["model"], RESNET])
def test_zo_estimate_on_the_device_equals_the_cpus(model):
    config = {**small(unroll=3), "model": model}
    torch.manual_seed(0)
    cpu = zo_estimate(config, "cpu")
    torch.manual_seed(0)
    torch.testing.assert_close(zo_estimate(config, GPU), cpu, rtol=1e-6, atol=1e-9)


@pytest.mark.skipif(find_spec("zooframe_phiflow") is None, reason="zooframe_phiflow is not installed")
def test_the_main_jobs_step_on_the_device_equals_the_cpus():
    """PhiFlow's Karman flow and the main job's subspace estimate, test-sized, on both devices."""
    config = json.loads((ROOT / "examples" / "karman_subspace.json").read_text())
    config.pop("$schema")
    config["simulator"].update(resolution=[32, 16], reference_factor=2, warmup=20, train_reynolds=[200.0, 800.0],
                               test_reynolds=[400.0])
    config["training"].update(steps=2, horizon=8)
    config["model"] = RESNET
    grads = {}
    for device in ("cpu", GPU):
        with Experiment.build(zooframe.load_config(on(device, config))) as exp:
            trainer = Trainer(exp)
            grads[device] = trainer.gradient(trainer.sampler.sample(0))[0].cpu()
            trainer.close()
    assert float(torch.nn.functional.cosine_similarity(grads[GPU], grads["cpu"], dim=0)) > 0.999


def test_a_run_on_the_device_matches_the_cpus_and_resumes_there(tmp_path):
    config = on(GPU, {**small(steps=6), "model": RESNET})
    config["output"]["checkpoint_every"] = 2
    whole = zooframe.run(config, output=tmp_path / "whole")
    cpu = zooframe.run(on("cpu", config), output=tmp_path / "cpu")
    mae = whole.summary["evaluation"]["corrected"]["mae_mean"]
    assert mae == pytest.approx(cpu.summary["evaluation"]["corrected"]["mae_mean"], rel=1e-6)

    def stop(metrics, trainer):
        if metrics["step"] == 5:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        zooframe.run(config, output=tmp_path / "cut", on_step=stop)
    resumed = zooframe.run(config, output=tmp_path / "cut", resume=True)
    assert resumed.summary["resumed_from_step"] == 4
    for a, b in zip(whole.model.parameters(), resumed.model.parameters()):
        assert a.device.type == GPU and torch.equal(a, b)
    assert zooframe.evaluate_run(tmp_path / "cut")["corrected"]["mae_mean"] == pytest.approx(mae)
