"""A module's parameters as one flat vector, and the module evaluated for many vectors at once."""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.func import functional_call, vmap


class FlatParams:
    """Maps between a module's named parameters and a flat vector ``theta`` ``[d]``.

    :meth:`batched_forward` evaluates the module for Q parameter vectors in one vectorized call:
    each vector's parameters are views into ``thetas`` ``[Q, d]`` (no copies), and
    ``torch.func.vmap`` over ``functional_call`` turns the Q networks into batched kernels.
    """

    def __init__(self, module: nn.Module):
        self.module = module
        self.names: list[str] = []
        self.shapes: list[torch.Size] = []
        for name, p in module.named_parameters():
            self.names.append(name)
            self.shapes.append(p.shape)
        self.sizes = [math.prod(s) for s in self.shapes]
        self.dim = sum(self.sizes)

    def get(self) -> torch.Tensor:
        return torch.cat([p.detach().reshape(-1) for p in self.module.parameters()])

    def set(self, theta: torch.Tensor) -> None:
        with torch.no_grad():
            for p, chunk in zip(self.module.parameters(), theta.split(self.sizes)):
                p.copy_(chunk.view_as(p))

    def set_grad(self, grad: torch.Tensor) -> None:
        for p, chunk in zip(self.module.parameters(), grad.split(self.sizes)):
            p.grad = chunk.view_as(p).clone()

    def slices(self) -> dict[str, slice]:
        """The coordinates of each named parameter in ``theta``."""
        out, start = {}, 0
        for name, size in zip(self.names, self.sizes):
            out[name] = slice(start, start + size)
            start += size
        return out

    def unflatten(self, thetas: torch.Tensor) -> dict[str, torch.Tensor]:
        q = thetas.shape[0]
        return {name: chunk.view(q, *shape)
                for name, shape, chunk in zip(self.names, self.shapes, thetas.split(self.sizes, dim=1))}

    def batched_forward(self, thetas: torch.Tensor, *inputs: torch.Tensor, batched: tuple[bool, ...],
                        submodule: str = "") -> torch.Tensor:
        """``module(*inputs)`` (or ``module.<submodule>(*inputs)``, which must hold all the
        parameters) with parameters ``thetas[i]`` for each i; ``batched[j]`` says whether
        ``inputs[j]`` has a leading query dimension or is shared by all queries. Returns ``[Q, ...]``."""
        module = self.module.get_submodule(submodule)
        params = self.unflatten(thetas)
        if submodule:
            prefix = submodule + "."
            if not all(name.startswith(prefix) for name in params):
                raise ValueError(f"submodule {submodule!r} does not hold all parameters of the module")
            params = {name[len(prefix):]: p for name, p in params.items()}
        buffers = dict(module.named_buffers())

        def one(params, *args):
            return functional_call(module, (params, buffers), args)

        inputs = tuple(_queries_next_to_channels(x) if b else x for x, b in zip(inputs, batched))
        in_dims = (0, *(0 if b else None for b in batched))
        return vmap(one, in_dims=in_dims)(params, *inputs)


def _queries_next_to_channels(x: torch.Tensor) -> torch.Tensor:
    """``x`` ``[Q, N, C, *S]`` with its memory ordered ``[N, *S, Q, C]``: vmap runs a convolution
    with per-query weights as one grouped convolution over ``Q x C`` channels, and in this order
    that is a channels-last convolution without a copy (several times faster on CPU). Smaller
    tensors are returned as they are."""
    if x.ndim < 4:
        return x
    order = (1, *range(3, x.ndim), 0, 2)
    inverse = sorted(range(x.ndim), key=order.__getitem__)
    return x.permute(order).contiguous().permute(inverse)
