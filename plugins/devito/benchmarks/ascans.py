"""A-scans of the held-out flaws: the receiver traces of the reference, the uncorrected source and
the trained runs of benchmarks/materials_nde.py, at the receiver under the transducer's centre.

    python plugins/devito/benchmarks/ascans.py [--runs runs/materials_nde/devito] [--out FILE]

Reads the run folders (nothing is trained) and writes benchmarks/results/materials_nde-devito-ascans.png.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from zooframe.runs import figures, load_run
from zooframe.runs.evaluation import held_out
from zooframe_devito.metrics import traces

ROOT = Path(__file__).resolve().parents[3]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=Path, default=ROOT / "runs" / "materials_nde" / "devito")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "materials_nde-devito-ascans.png")
    args = parser.parse_args()
    curves, exp = {}, None
    for method in ("non", "nog", "zo_sol"):
        if not (args.runs / method / "model.pt").is_file():
            continue
        exp = load_run(args.runs / method)
        with exp:
            held = held_out(exp)
        if not curves:
            curves["reference"] = traces(exp.simulator, held.reference)
            curves["source"] = traces(exp.simulator, held.src)
        curves[method.upper().replace("_", "-")] = traces(exp.simulator, held.corrected)
    if exp is None:
        raise SystemExit(f"no finished runs under {args.runs}")
    plt = figures._pyplot()
    sim = exp.simulator
    middle = sim.config.receivers // 2
    n = curves["reference"].shape[0]
    t = torch.arange(curves["reference"].shape[-1]) * sim.frame_us
    fig, axes = plt.subplots(n, 1, figsize=(7, 1.9 * n), sharex=True, squeeze=False)
    for i, ax in enumerate(axes[:, 0]):
        for label, a_scan in curves.items():
            style = {"color": "black", "lw": 2.0} if label == "reference" else {"lw": 1.0}
            ax.plot(t, a_scan[i, middle].cpu(), label=label, **style)
        ax.set_title(held.cases[i].name, fontsize=9)
        ax.set_ylabel("pressure")
    axes[-1, 0].set_xlabel("time (us)")
    axes[0, 0].legend(fontsize=7, ncol=len(curves))
    fig.tight_layout()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out, dpi=110)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
