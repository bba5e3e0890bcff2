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


def loss_curve(path: Path, steps: Sequence[int], losses: Sequence[float], loss: str = "MSE") -> Path:
    """The training loss over optimizer steps; ``loss`` names it (``objective.loss``)."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.semilogy(steps, losses, lw=0.8)
    ax.set(xlabel="optimizer step", ylabel=f"training loss ({loss})", title=f"training loss: {loss}")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    _save(fig, path)
    plt.close(fig)
    return path


def error_curves(path: Path, curves: dict[str, Sequence[float]], title: str, metric: str = "MAE") -> Path:
    """One line per rollout of ``metric`` (its name) against the reference over rollout steps."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 3.5))
    for name, values in curves.items():
        ax.plot(range(1, len(values) + 1), values, label=name)
    ax.set(xlabel="rollout step", ylabel=f"{metric} vs reference")
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    _save(fig, path)
    plt.close(fig)
    return path


def snapshots(path: Path, fields: dict[str, torch.Tensor], times: Sequence[int], title: str,
              label: str | None = None) -> Path:
    """Rows: the named rollouts; columns: ``times``. Each entry of ``fields`` is ``[T + 1, *S]``
    of a scalar field: images for 2D, lines for 1D. ``label`` names the quantity (e.g.
    ``"vorticity"``): it joins the title and labels the colour bars (2D, one per row, all rows on
    one colour scale so that they compare) or the value axis (1D)."""
    return quantity_snapshots(path, {label: fields}, times, title)


def quantity_snapshots(path: Path, quantities: dict[str | None, dict[str, torch.Tensor]], times: Sequence[int],
                       title: str) -> Path:
    """As :func:`snapshots`, for one or more quantities (e.g. each channel of a state with several
    physical fields): ``quantities`` maps each quantity's name to its rollouts. Each quantity has
    rows of its own (2D) or a row of panels (1D), on a scale of its own."""
    plt = _pyplot()
    labels = [q for q in quantities if q]
    if labels:
        title = f"{title}: {', '.join(labels)}"
    first = next(iter(next(iter(quantities.values())).values()))
    if first.ndim == 2:  # 1D: a row of panels per quantity, one panel per time, one line per rollout
        fig, axes = plt.subplots(len(quantities), len(times), figsize=(3.2 * len(times), 0.3 + 2.7 * len(quantities)),
                                 squeeze=False, layout="constrained")
        for r, (label, fields) in enumerate(quantities.items()):
            row = axes[r]
            for ax, t in zip(row, times):
                for name, field in fields.items():
                    ax.plot(field[t].cpu().numpy(), label=name)
                if r == 0:
                    ax.set_title(f"t = {t}")
            if label:
                row[0].set_ylabel(label)
        axes[0][0].legend(fontsize=7)
    else:
        rows = sum(len(fields) for fields in quantities.values())
        fig, axes = plt.subplots(rows, len(times), figsize=(2.8 * len(times) + 0.9, 1.6 * rows + 0.6),
                                 squeeze=False, layout="constrained")
        r = 0
        for label, fields in quantities.items():
            shown = [f[list(times)] for f in fields.values()]
            limit = max(float(f.abs().max()) for f in shown) or 1.0
            # a signed field (vorticity, a phase field) on a diverging map centred on 0; a magnitude from 0
            signed = min(float(f.min()) for f in shown) < 0
            cmap, vmin = ("RdBu_r", -limit) if signed else ("viridis", 0.0)
            for name, field in fields.items():
                for c, t in enumerate(times):
                    ax = axes[r][c]
                    image = ax.imshow(field[t].T.cpu().numpy(), origin="lower", cmap=cmap, vmin=vmin, vmax=limit)
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
                r += 1
    fig.suptitle(title, fontsize=10)
    _save(fig, path)
    plt.close(fig)
    return path


def ladder(path: Path, metric: str, src: float, points: dict[str, Sequence[tuple[float, float, float]]]) -> Path:
    """``zooframe compare``: each method's held-out ``metric`` against its simulator calls and its
    training wall time: a small marker per seed (``points[method]``: ``(calls, seconds, metric)``)
    and a large one at the method's mean; the uncorrected solver (``src``) as a dashed level."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8), sharey=True)
    for ax, axis, xlabel in ((axes[0], 0, "simulator calls"), (axes[1], 1, "training wall time (s)")):
        for (name, runs), colour in zip(points.items(), plt.rcParams["axes.prop_cycle"].by_key()["color"]):
            xs, ys = [r[axis] for r in runs], [r[2] for r in runs]
            ax.scatter(xs, ys, color=colour, alpha=0.4, s=14)
            ax.plot([sum(xs) / len(xs)], [sum(ys) / len(ys)], "o", color=colour, ms=8, label=name)
        ax.axhline(src, color="0.4", ls="--", lw=1, label="SRC (uncorrected)")
        if all(r[axis] > 0 for runs in points.values() for r in runs):
            ax.set_xscale("log")
            ax.xaxis.set_minor_formatter(plt.NullFormatter())  # a log axis's minor labels overlap
        ax.set(xlabel=xlabel, title=f"held-out {metric} against {xlabel.split(' (')[0]}")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel(f"held-out {metric} (lower is better)")
    axes[1].legend(fontsize=8)
    fig.tight_layout()
    _save(fig, path)
    plt.close(fig)
    return path


def sweep_history(path: Path, numbers: Sequence[int], values: Sequence[float], importances: dict[str, float]) -> Path:
    """``zooframe sweep``: each completed trial's validation metric and the best so far, by trial
    number; beside it, each searched setting's importance (when Optuna could estimate them)."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, 2 if importances else 1, figsize=(10 if importances else 6, 3.8), squeeze=False)
    ax = axes[0][0]
    best = [min(values[:i + 1]) for i in range(len(values))]
    ax.plot(numbers, values, "o", ms=5, alpha=0.7, label="trial")
    ax.step(numbers, best, where="post", color="C3", label="best so far")
    if values and min(values) > 0 and max(values) / min(values) > 5:
        ax.set_yscale("log")
    ax.xaxis.get_major_locator().set_params(integer=True)
    ax.set(xlabel="trial", ylabel="validation (corrected / uncorrected)", title="optimization history")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    if importances:
        ax = axes[0][1]
        names = list(importances)[::-1]
        ax.barh(names, [importances[n] for n in names], color="C0")
        ax.set(xlabel="importance (share of the variation)", title="parameter importances")
        ax.tick_params(axis="y", labelsize=8)
    fig.tight_layout()
    _save(fig, path)
    plt.close(fig)
    return path
