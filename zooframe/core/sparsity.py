"""DNN sparsity for ZO training: pruning at initialization and the masks that follow from it.

Scores rank the coordinates of theta (lower = pruned first):

- ``magnitude``: |theta|;
- ``random``: seeded uniform noise;
- ``zo_grasp``: GraSP (Wang et al., 2020) from function values only: the Hessian-gradient product
  is a difference of two RGE gradient estimates along g (see :func:`zo_grasp_scores`)
  (the same directions in both, common random numbers), and GraSP removes the coordinates with
  the largest ``-theta * Hg``, so the score is ``theta * Hg``.

A mask keeps ``1 - ratio`` of the unprotected coordinates, over all of them at once (``global``:
layers end up with the ratios their scores earn) or in each layer (``layerwise``). It is used

- as a **sparse model** (``use: model``): pruned weights are zero for good and CGE estimates only
  the survivors;
- as a **sparse gradient** (``use: gradient``, DeepZero): the model stays dense; every
  ``resample_every`` steps a random mask is drawn that keeps, in each layer, the fraction the
  pruning kept there.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from ..builtins.estimators.rge import RGE, RGEConfig
from ..plugins.estimator import Estimator
from .flat_params import FlatParams


def layer_index(flat: FlatParams) -> tuple[list[str], torch.Tensor]:
    """Layer names (a module's weight and bias form one layer) and, per coordinate, its layer."""
    names: list[str] = []
    index = torch.empty(flat.dim, dtype=torch.long)
    for name, sl in flat.slices().items():
        layer = name.rsplit(".", 1)[0]
        if layer not in names:
            names.append(layer)
        index[sl] = names.index(layer)
    return names, index


def zo_grasp_scores(objective: Callable[[torch.Tensor], torch.Tensor], theta: torch.Tensor, estimator: Estimator,
                    evaluate: Callable, generator: torch.Generator, mu_h: float) -> tuple[torch.Tensor, int]:
    """GraSP scores ``theta * Hg`` from two gradient estimates; returns the scores and the queries used.

    The second point is ``theta + mu_h * g / |g|``, a step of the same length whatever the scale
    of the loss, and ``Hg = |g| (g(theta + mu_h g/|g|) - g(theta)) / mu_h``."""
    state = generator.get_state()
    q1 = estimator.ask(theta, generator)
    g = estimator.tell(q1, evaluate(objective, q1))
    norm = g.norm().clamp_min(torch.finfo(g.dtype).tiny)
    generator.set_state(state)  # the same directions at the shifted point
    q2 = estimator.ask(theta + mu_h * g / norm, generator)
    hg = (estimator.tell(q2, evaluate(objective, q2)) - g) * norm / mu_h
    return theta * hg, len(q1) + len(q2)


def mask_from_scores(scores: torch.Tensor, ratio: float, layer_of: torch.Tensor, protected: torch.Tensor,
                     layerwise: bool) -> torch.Tensor:
    """Keep the highest-scoring ``1 - ratio`` of the unprotected coordinates (globally or per layer)."""
    mask = protected.clone()
    groups = [torch.nonzero(~protected & (layer_of == i)).flatten() for i in layer_of.unique()] if layerwise \
        else [torch.nonzero(~protected).flatten()]
    for idx in groups:
        keep = round((1 - ratio) * len(idx))
        if keep:
            mask[idx[torch.topk(scores[idx], keep).indices]] = True
    return mask


def random_layer_mask(keep_fraction: torch.Tensor, layer_of: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """A random mask keeping ``keep_fraction[l]`` of layer l's coordinates."""
    mask = torch.zeros(len(layer_of), dtype=torch.bool)
    for i, fraction in enumerate(keep_fraction.tolist()):
        idx = torch.nonzero(layer_of == i).flatten()
        keep = round(fraction * len(idx))
        mask[idx[torch.randperm(len(idx), generator=generator)[:keep]]] = True
    return mask


def report(mask: torch.Tensor, flat: FlatParams) -> dict[str, dict[str, int]]:
    """Non-zeros (or estimated coordinates) per layer."""
    names, layer_of = layer_index(flat)
    m = mask.cpu()
    return {name: {"active": int(m[layer_of == i].sum()), "total": int((layer_of == i).sum())}
            for i, name in enumerate(names)}


def initial_scores(cfg, theta: torch.Tensor, objective, evaluate: Callable,
                   generator: torch.Generator) -> tuple[torch.Tensor, int]:
    """Scores of ``cfg.method`` at ``theta`` and the queries they cost."""
    if cfg.method == "magnitude":
        return theta.abs(), 0
    if cfg.method == "random":
        return torch.rand(theta.shape, generator=generator, device=generator.device).to(theta), 0
    rge = RGE(RGEConfig(kind="rge", mu=cfg.grasp_mu, q=cfg.grasp_directions, distribution="gaussian",
                        scheme="central"))
    with torch.no_grad():
        return zo_grasp_scores(objective, theta, rge, evaluate, generator, cfg.grasp_step)


class SparsityPlan:
    """The run's masks, from initial scores: fixed (``use: model``) or redrawn per layer
    (``use: gradient``)."""

    def __init__(self, cfg, flat: FlatParams, scores: torch.Tensor, seed: int):
        self.cfg, self.flat, self.scores = cfg, flat, scores
        names, layer_of = layer_index(flat)
        protected = torch.zeros(flat.dim, dtype=torch.bool)
        for which, i in (("first", 0), ("last", len(names) - 1)):
            if which in cfg.protect:
                protected |= layer_of == i
        self.layer_of = layer_of
        self.base = mask_from_scores(scores.cpu(), cfg.ratio, layer_of, protected, cfg.scope == "layerwise")
        self.keep_fraction = torch.stack([self.base[layer_of == i].float().mean() for i in range(len(names))])
        self.generator = torch.Generator().manual_seed(seed)
        self.current = self.base
        self.device = scores.device

    def mask(self, step: int) -> torch.Tensor:
        """The coordinates estimated at ``step``."""
        if self.cfg.use == "gradient" and step % self.cfg.resample_every == 0:
            self.current = random_layer_mask(self.keep_fraction, self.layer_of, self.generator)
        return self.current.to(self.device)

    def enforce(self) -> None:
        """A sparse model's pruned weights are zero, whatever the optimizer did."""
        if self.cfg.use == "model":
            self.flat.set(self.flat.get() * self.base.to(self.device))
