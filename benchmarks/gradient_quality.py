"""How close each gradient is to autograd through PhiFlow (FO) on the Karman task: the free
surrogates (solver Jacobian dropped or taken as identity), guided ZO, RGE and CGE on a random
coordinate subset at equal queries, and full CGE.

    python benchmarks/gradient_quality.py [--quick]

For each network size, at initialization and after FO-SOL training, the mean cosine to the FO
gradient over several training windows. Writes benchmarks/results/gradient_quality[_quick].json.
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import time
import warnings
from pathlib import Path

import torch
from common import write_results

import zooframe
from zooframe.core.objective import CorrectionObjective
from zooframe.execution.engine import LocalEngine
from zooframe.plugins.estimator import StepInputs
from zooframe.runs.experiment import Experiment
from zooframe.runs.trainer import Trainer, autograd_gradient

warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta state")

ROOT = Path(__file__).resolve().parents[1]
MAIN = json.loads((ROOT / "examples" / "karman_zo_sol.json").read_text())
SIZES = {"608": {"hidden_channels": 6, "depth": 1}, "5378": {"hidden_channels": 16, "depth": 2}}


def cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(torch.nn.functional.cosine_similarity(a, b, dim=0))


def zo(estimator: dict, objective, theta, generator, surrogate=None, mask=None):
    registry = zooframe.get_registry()
    est = registry.create("estimator", zooframe.load_config({**MAIN, "estimator": estimator}).estimator)
    queries = est.ask(theta, generator, StepInputs(mask=mask, surrogate=surrogate))
    with torch.no_grad():
        return est.tell(queries, LocalEngine(256).evaluate(objective, queries)), len(queries)


def measure(exp: Experiment, windows, q: int, alpha: float, full_cge: bool) -> dict:
    theta = exp.flat.get()
    rows: dict[str, list[float]] = {}
    queries: dict[str, int] = {}
    for i, window in enumerate(windows):
        fo, _ = autograd_gradient(CorrectionObjective(exp.runner, exp.flat, window, "exact"), theta)
        objective = CorrectionObjective(exp.runner, exp.flat, window)
        surrogates = {j: autograd_gradient(CorrectionObjective(exp.runner, exp.flat, window, j), theta)[0]
                      for j in ("drop", "identity")}
        found = {f"surrogate_{j}": (g, 1) for j, g in surrogates.items()}
        gen = lambda i=i: torch.Generator().manual_seed(1000 + i)  # noqa: E731 (the same draws for each estimator)
        for j, g in surrogates.items():
            found[f"guided_{j}"] = zo({"kind": "guided", "q": q, "alpha": alpha}, objective, theta, gen(), g)
        found["rge"] = zo({"kind": "rge", "q": q, "scheme": "central"}, objective, theta, gen())
        subset = torch.zeros(exp.flat.dim, dtype=torch.bool)
        subset[torch.randperm(exp.flat.dim, generator=gen())[: 2 * q - 1]] = True
        found["cge_subset"] = zo({"kind": "cge"}, objective, theta, gen(), mask=subset)
        if full_cge:
            found["cge"] = zo({"kind": "cge"}, objective, theta, gen())
        for name, (g, used) in found.items():
            rows.setdefault(name, []).append(cosine(g, fo))
            queries[name] = used
    return {name: {"cosine_mean": statistics.mean(v), "cosine_min": min(v), "queries": queries[name]}
            for name, v in rows.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="one size, fewer windows and FO steps")
    parser.add_argument("--windows", type=int, default=6)
    parser.add_argument("--fo-steps", type=int, default=300)
    parser.add_argument("--q", type=int, default=32, help="guided and RGE directions (2q queries)")
    parser.add_argument("--alpha", type=float, default=0.5)
    args = parser.parse_args()
    sizes = {"608": SIZES["608"]} if args.quick else SIZES
    windows_n, fo_steps = (2, 30) if args.quick else (args.windows, args.fo_steps)
    start = time.perf_counter()
    methods = {}
    for size, model in sizes.items():
        config = copy.deepcopy(MAIN)
        config["model"].update(model)
        config["training"].update(mode="fo", steps=fo_steps, schedule={"name": "none"},
                                  optimizer={"name": "adam", "lr": 0.003})
        exp = Experiment.build(zooframe.load_config(config))
        trainer = Trainer(exp)
        sample = torch.Generator().manual_seed(99)
        windows = [trainer.sampler.sample(10_000 + k, sample) for k in range(windows_n)]
        for point in ("init", f"fo_{fo_steps}"):
            if point != "init":
                trainer.run()
            print(f"[{time.strftime('%H:%M:%S')}] {size} parameters at {point}", flush=True)
            for name, row in measure(exp, windows, args.q, args.alpha, full_cge=True).items():
                methods[f"{name}_{size}_{point}"] = row
                print(f"    {name:18s} cosine {row['cosine_mean']:+.3f} (min {row['cosine_min']:+.3f}) "
                      f"{row['queries']} queries", flush=True)
        trainer.close()
    ratios = {}
    for key, row in methods.items():
        if key.startswith("guided_drop_"):
            rest = key.removeprefix("guided_drop_")
            ratios[f"guided_over_rge_cosine_{rest}"] = row["cosine_mean"] / methods[f"rge_{rest}"]["cosine_mean"]
    config = {"simulator": MAIN["simulator"], "training": MAIN["training"], "sizes": sizes, "windows": windows_n,
              "fo_steps": fo_steps, "q": args.q, "alpha": args.alpha, "total_wall_s": time.perf_counter() - start}
    path = write_results("gradient_quality_quick" if args.quick else "gradient_quality", config, methods, ratios)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
