"""Sparsity: masks are respected, queries follow the active coordinates, ZO-GraSP ranks like
autograd GraSP, and the sparse export keeps only non-zeros."""

import json

import torch

import zooframe
from zooframe.builtins.estimators.rge import RGE, RGEConfig
from zooframe.core.flat_params import FlatParams
from zooframe.core.sparsity import layer_index, mask_from_scores, random_layer_mask, zo_grasp_scores
from zooframe.execution.engine import LocalEngine
from zooframe.runs import load_run
from zooframe.runs.export import load_correction

from .helpers import mlp_regression, small


def sparse(use, ratio=0.5, method="magnitude", **extra):
    config = small(steps=6, optimizer={"lr": 0.05})
    config["model"].update(hidden_channels=6, kernel_size=3, depth=1)
    config["sparsity"] = {"method": method, "ratio": ratio, "use": use, **extra}
    return config


def metrics(run_dir):
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def test_a_sparse_model_never_moves_its_pruned_weights(tmp_path):
    result = zooframe.run(sparse("model"), output=tmp_path, progress=False)
    mask = torch.load(tmp_path / "mask.pt", weights_only=True)
    theta = result.experiment.flat.get()
    assert torch.all(theta[~mask] == 0) and torch.all(theta[mask] != 0)
    active = int(mask.sum())
    assert active == result.summary["sparsity"]["active"] < result.summary["parameters"]
    assert all(m["queries"] == active + 1 for m in metrics(tmp_path))  # forward CGE: one per coordinate + centre
    assert torch.equal(load_run(tmp_path).mask, mask)


def test_sparse_gradients_keep_the_model_dense_and_redraw_masks(tmp_path):
    result = zooframe.run(sparse("gradient", ratio=0.75, method="random", resample_every=2), output=tmp_path,
                          progress=False)
    trainer_plan_layers = result.summary["sparsity"]["layers"]
    active = sum(layer["active"] for layer in trainer_plan_layers.values())
    assert all(m["queries"] == active + 1 for m in metrics(tmp_path))
    assert bool((result.experiment.flat.get() != 0).all())  # dense model


def test_gradient_masks_follow_the_layer_ratios():
    net = torch.nn.Sequential(torch.nn.Linear(10, 20), torch.nn.Tanh(), torch.nn.Linear(20, 5))
    flat = FlatParams(net)
    _, layer_of = layer_index(flat)
    keep = torch.tensor([0.25, 0.5])
    g = torch.Generator().manual_seed(0)
    a, b = random_layer_mask(keep, layer_of, g), random_layer_mask(keep, layer_of, g)
    for i, fraction in enumerate(keep.tolist()):
        n = int((layer_of == i).sum())
        assert int(a[layer_of == i].sum()) == round(fraction * n)
    assert not torch.equal(a, b)


def test_global_layerwise_and_protected_masks():
    layer_of = torch.tensor([0] * 10 + [1] * 10 + [2] * 10)
    scores = torch.cat([torch.full((10,), 3.0), torch.full((10,), 2.0), torch.full((10,), 1.0)]) + torch.rand(30) * 0.1
    none = torch.zeros(30, dtype=torch.bool)
    glob = mask_from_scores(scores, 0.5, layer_of, none, layerwise=False)
    assert glob[:10].all() and glob[20:].sum() == 0  # the best layer survives whole
    lw = mask_from_scores(scores, 0.5, layer_of, none, layerwise=True)
    assert [int(lw[layer_of == i].sum()) for i in range(3)] == [5, 5, 5]
    protected = layer_of == 2
    prot = mask_from_scores(scores, 0.5, layer_of, protected, layerwise=False)
    assert prot[20:].all() and int(prot[:20].sum()) == 10


def spearman(a, b):
    ra, rb = a.argsort().argsort().double(), b.argsort().argsort().double()
    return float(torch.corrcoef(torch.stack([ra, rb]))[0, 1])


def test_zo_grasp_ranks_like_autograd_grasp():
    f, flat = mlp_regression(inputs=3, hidden=6, outputs=2, samples=64)
    theta = flat.get().requires_grad_(True)
    (g,) = torch.autograd.grad(f(theta[None])[0], theta, create_graph=True)
    (hg,) = torch.autograd.grad(g, theta, grad_outputs=g.detach())
    exact = (theta * hg).detach()
    rge = RGE(RGEConfig(kind="rge", mu=1e-3, q=20000, scheme="central"))
    scores, used = zo_grasp_scores(f, theta.detach(), rge, LocalEngine(4096).evaluate,
                                   torch.Generator().manual_seed(1), mu_h=1e-2)
    assert used == 2 * 2 * 20000
    assert spearman(scores, exact) >= 0.7


def test_sparse_export_holds_only_non_zeros_and_reloads(tmp_path):
    result = zooframe.run(sparse("model", ratio=0.9), output=tmp_path, progress=False)
    export = result.summary["sparsity"]["export"]
    assert export["nonzeros"] == result.summary["sparsity"]["active"]
    assert export["sparse_bytes"] <= 0.2 * export["dense_bytes"]
    net = load_correction(tmp_path / export["file"])
    exp = result.experiment
    state = torch.randn(3, *exp.simulator.state_spec.shape)
    features = torch.randn(3, 1)
    with torch.no_grad():
        torch.testing.assert_close(net(state, features), exp.model(state, features))


def test_pruning_with_zo_grasp_runs_through_the_solver(tmp_path):
    result = zooframe.run(sparse("model", ratio=0.8, method="zo_grasp", grasp_directions=8), output=tmp_path,
                          progress=False)
    m = metrics(tmp_path)
    grasp_queries = 2 * 2 * 8
    assert result.summary["queries_total"] == grasp_queries + sum(x["queries"] for x in m)
