"""Export of a trained correction network for use inside a simulation code: only its non-zero
weights (a bit mask and the values), its normalization buffers, and what is needed to rebuild it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..config.registry import Registry, resolve
from ..core.correction import CorrectionNetwork, build_correction
from ..plugins.atomic import save_torch
from ..plugins.errors import ZooframeError
from .experiment import Experiment

FORMAT = "zooframe-sparse-1"


def export_correction(exp: Experiment, path: str | Path) -> dict[str, Any]:
    """Write ``path``; returns parameter counts and the dense and sparse bytes of the weights."""
    spec = exp.simulator.state_spec
    params, dense_bytes, sparse_bytes, nonzeros = {}, 0, 0, 0
    for name, p in exp.model.named_parameters():
        values = p.detach().cpu().float().numpy().ravel()
        keep = values != 0
        bits = np.packbits(keep)
        params[name] = {"shape": list(p.shape), "bits": torch.from_numpy(bits),
                        "values": torch.from_numpy(values[keep].copy())}
        dense_bytes += values.nbytes
        sparse_bytes += bits.nbytes + values[keep].nbytes
        nonzeros += int(keep.sum())
    buffers = {k: v.detach().cpu() for k, v in exp.model.named_buffers()}
    save_torch(path, {"format": FORMAT, "model": exp.config.model.model_dump(mode="json"),
                "channels": spec.num_channels, "features": exp.model.features,
                "spatial_shape": list(spec.spatial_shape), "params": params, "buffers": buffers})
    return {"parameters": exp.flat.dim, "nonzeros": nonzeros, "dense_bytes": dense_bytes,
            "sparse_bytes": sparse_bytes, "file_bytes": Path(path).stat().st_size}


def load_correction(path: str | Path, registry: Registry | None = None) -> CorrectionNetwork:
    """The network of an exported file, ready to call as ``net(state, features)``."""
    data = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise ZooframeError(f"{path} is not a zooframe sparse export ({FORMAT})")
    valid = data["buffers"].get("valid")
    net = build_correction(resolve("model", data["model"], registry), data["channels"], data["features"], tuple(data["spatial_shape"]),
                           None if valid is None else valid[0].bool())
    state = dict(data["buffers"])
    for name, p in data["params"].items():
        keep = torch.from_numpy(np.unpackbits(p["bits"].numpy(), count=int(np.prod(p["shape"]))).astype(bool))
        dense = torch.zeros(keep.shape, dtype=torch.float32)
        dense[keep] = p["values"]
        state[name] = dense.view(p["shape"])
    net.load_state_dict(state)
    return net.eval()
