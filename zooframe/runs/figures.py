"""Figures of a run (optional: needs matplotlib, ``pip install zooframe[plot]``)."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import torch


def available() -> bool:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    return True


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def loss_curve(path: Path, steps: Sequence[int], losses: Sequence[float]) -> Path:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.semilogy(steps, losses, lw=0.8)
    ax.set(xlabel="optimizer step", ylabel="training loss (MSE)", title="training loss")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def error_curves(path: Path, curves: dict[str, Sequence[float]], title: str) -> Path:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 3.5))
    for name, values in curves.items():
        ax.plot(range(1, len(values) + 1), values, label=name)
    ax.set(xlabel="rollout step", ylabel="MAE vs reference", title=title)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def snapshots(path: Path, fields: dict[str, torch.Tensor], times: Sequence[int], title: str) -> Path:
    """Rows: the named rollouts; columns: ``times``. Each entry of ``fields`` is ``[T + 1, *S]``
    of a scalar field: images for 2D, lines for 1D."""
    plt = _pyplot()
    names = list(fields)
    first = next(iter(fields.values()))
    if first.ndim == 2:  # 1D: one panel per time, one line per rollout
        fig, axes = plt.subplots(1, len(times), figsize=(3.2 * len(times), 3), squeeze=False)
        for ax, t in zip(axes[0], times):
            for name in names:
                ax.plot(fields[name][t].cpu().numpy(), label=name)
            ax.set_title(f"t = {t}")
        axes[0][0].legend(fontsize=7)
    else:
        limit = max(float(f[list(times)].abs().max()) for f in fields.values()) or 1.0
        fig, axes = plt.subplots(len(names), len(times), figsize=(2.8 * len(times), 1.6 * len(names) + 0.6),
                                 squeeze=False)
        for r, name in enumerate(names):
            for c, t in enumerate(times):
                ax = axes[r][c]
                ax.imshow(fields[name][t].T.cpu().numpy(), origin="lower", cmap="RdBu_r", vmin=-limit, vmax=limit)
                ax.set_xticks([])
                ax.set_yticks([])
                if r == 0:
                    ax.set_title(f"t = {t}", fontsize=9)
                if c == 0:
                    ax.set_ylabel(name, fontsize=9)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
