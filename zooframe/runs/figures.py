"""Figures of a run (optional: needs matplotlib, ``pip install zooframe[plot]``)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch

from ..plugins.atomic import atomic_write


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


def _save(fig, path: Path) -> None:
    with atomic_write(path) as f:
        fig.savefig(f, format="png", dpi=120)


def loss_curve(path: Path, steps: Sequence[int], losses: Sequence[float]) -> Path:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.semilogy(steps, losses, lw=0.8)
    ax.set(xlabel="optimizer step", ylabel="training loss (MSE)", title="training loss")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    _save(fig, path)
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
    _save(fig, path)
    plt.close(fig)
    return path


def snapshots(path: Path, fields: dict[str, torch.Tensor], times: Sequence[int], title: str,
              label: str | None = None) -> Path:
    """Rows: the named rollouts; columns: ``times``. Each entry of ``fields`` is ``[T + 1, *S]``
    of a scalar field: images for 2D, lines for 1D. ``label`` names the quantity (the simulator's
    ``render_label``, e.g. ``"vorticity"``): it joins the title and labels the colour bars (2D, one
    per row, all rows on one colour scale so that they compare) or the value axis (1D)."""
    plt = _pyplot()
    names = list(fields)
    first = next(iter(fields.values()))
    if label:
        title = f"{title}: {label}"
    if first.ndim == 2:  # 1D: one panel per time, one line per rollout
        fig, axes = plt.subplots(1, len(times), figsize=(3.2 * len(times), 3), squeeze=False, layout="constrained")
        for ax, t in zip(axes[0], times):
            for name in names:
                ax.plot(fields[name][t].cpu().numpy(), label=name)
            ax.set_title(f"t = {t}")
        axes[0][0].legend(fontsize=7)
        if label:
            axes[0][0].set_ylabel(label)
    else:
        shown = [f[list(times)] for f in fields.values()]
        limit = max(float(f.abs().max()) for f in shown) or 1.0
        # a signed field (vorticity, a phase field) on a diverging map centred on 0; a magnitude from 0
        signed = min(float(f.min()) for f in shown) < 0
        cmap, vmin = ("RdBu_r", -limit) if signed else ("viridis", 0.0)
        fig, axes = plt.subplots(len(names), len(times), figsize=(2.8 * len(times) + 0.9, 1.6 * len(names) + 0.6),
                                 squeeze=False, layout="constrained")
        for r, name in enumerate(names):
            for c, t in enumerate(times):
                ax = axes[r][c]
                image = ax.imshow(fields[name][t].T.cpu().numpy(), origin="lower", cmap=cmap, vmin=vmin, vmax=limit)
                ax.set_xticks([])
                ax.set_yticks([])
                if r == 0:
                    ax.set_title(f"t = {t}", fontsize=9)
                if c == 0:
                    ax.set_ylabel(name, fontsize=9)
            bar = fig.colorbar(image, ax=list(axes[r]), shrink=0.9, pad=0.02)
            bar.ax.tick_params(labelsize=7)
            if label:
                bar.set_label(label, fontsize=8)
    fig.suptitle(title, fontsize=10)
    _save(fig, path)
    plt.close(fig)
    return path
