"""Step time of ZO-SOL (subspace, central and forward differences) against FO-SOL on the main job's
config, side by side in one process, with where a ZO step's time goes; and how close each scheme's
estimate is to the gradient.

    python benchmarks/zo_step.py [--threads 2 1] [--repeats 35] [--warmup 5] [--windows 8] [--profile-steps 10]

Each method is a Trainer of examples/karman_subspace.json with only its mode or estimator changed,
and the methods take one step each in turn (A B C A B C ...), so that a slow spell of the machine
falls on all of them; a step is the trainer's own (gradient, then the optimizer's step), timed
from outside. ``zo_central_loop`` is the central scheme with the loss terms' gradients from one
backward pass per term (Coupling.term_gradients, as before issue 33) instead of the objective's
one pass; ``zo_forward_drop`` the forward scheme with the surrogates taken with the solver's
Jacobian dropped (training.solver_jacobian 'drop') instead of the identity. The breakdown
wraps the parts of a ZO step in timers: the window's first solver step, the surrogates' rollout
with its backward pass, ask, the queries' rollouts, tell and the optimizer, each split into
simulator seconds (SimulatorRunner's) and the rest (the network and the bookkeeping around it). The cosines compare each scheme's estimate with autograd through
PhiFlow (FO) on fixed training windows, at the initial parameters and at those the central
trainer reached. op_profile: torch.profiler's operators with the most self CPU time in a step of
ZO forward (identity and drop), ZO central with a backward pass per term (the step before issue
33) and FO-SOL, and the CPU time inside the simulator. Writes benchmarks/results/zo_step.json.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
import warnings
from contextlib import ExitStack
from pathlib import Path

import torch
from common import write_results

import zooframe
from zooframe.builtins.estimators.subspace import Subspace, SubspaceConfig
from zooframe.core.objective import CorrectionObjective, Coupling
from zooframe.plugins.estimator import StepInputs
from zooframe.runs.experiment import Experiment
from zooframe.runs.trainer import Trainer, autograd_gradient

warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta state")

ROOT = Path(__file__).resolve().parents[1]
MAIN = json.loads((ROOT / "examples" / "karman_subspace.json").read_text())
SUBSPACE = MAIN["estimator"]
METHODS = {
    "fo_sol": {"training": {"mode": "fo"}},
    "zo_central": {"estimator": {**SUBSPACE, "scheme": "central"}},
    "zo_forward": {"estimator": {**SUBSPACE, "scheme": "forward"}},
    "zo_central_loop": {"estimator": {**SUBSPACE, "scheme": "central"}},
    "zo_forward_drop": {"estimator": {**SUBSPACE, "scheme": "forward"}, "training": {"solver_jacobian": "drop"}},
}
PROBED = ("zo_central", "zo_forward", "zo_forward_drop")
PARTS = ("first_solver_step", "surrogates", "ask", "queries", "tell", "optimizer")


def config_for(method: str, threads: int, device: str = "cpu") -> dict:
    config = {k: json.loads(json.dumps(v)) for k, v in MAIN.items() if k != "$schema"}
    for section, values in METHODS[method].items():
        config[section] = {**config[section], **values}
    config["execution"].update(threads=threads, device=device)
    config["output"] = {"progress": False}
    return config


class Timed:
    """Wraps ``owner.name`` so that its wall and simulator seconds add up under ``part``."""

    def __init__(self, totals: dict, part: str, owner, name: str, runner):
        self.totals, self.part, self.owner, self.name, self.runner = totals, part, owner, name, runner
        self.original = getattr(owner, name)

    def __enter__(self):
        original, totals, part, runner = self.original, self.totals, self.part, self.runner

        def timed(*args, **kwargs):
            start, sim = time.perf_counter(), runner.seconds
            try:
                return original(*args, **kwargs)
            finally:
                wall = time.perf_counter() - start
                totals[part]["wall_s"] += wall
                totals[part]["sim_s"] += runner.seconds - sim

        setattr(self.owner, self.name, timed)
        return self

    def __exit__(self, *exc):
        setattr(self.owner, self.name, self.original)


def one_step(trainer: Trainer) -> tuple[float, float]:
    """The trainer's step (as Trainer.run takes it, without its metrics): wall and simulator seconds."""
    start, sim = time.perf_counter(), trainer.simulator_seconds
    grad, _ = trainer.gradient(trainer.sampler.sample(trainer.step))
    trainer.optimizer.zero_grad(set_to_none=True)
    trainer.exp.flat.set_grad(grad)
    trainer.optimizer.step()
    trainer.scheduler.step()
    trainer.step += 1
    if trainer.exp.device.type == "cuda":  # the step's kernels done, not only queued
        torch.cuda.synchronize()
    return time.perf_counter() - start, trainer.simulator_seconds - sim


def time_steps(threads: int, repeats: int, warmup: int) -> tuple[dict, dict, Trainer]:
    trainers = {m: Trainer(Experiment.build(zooframe.load_config(config_for(m, threads)))) for m in METHODS}
    times = {m: [] for m in METHODS}
    parts = {m: {p: {"wall_s": 0.0, "sim_s": 0.0} for p in PARTS} for m in METHODS if m != "fo_sol"}
    for rep in range(warmup + repeats):
        for method, trainer in trainers.items():
            trainer.threads.update(force=True)
            with ExitStack() as stack:
                if method == "zo_central_loop":
                    stack.enter_context(_loop_term_gradients())
                if rep >= warmup and method in parts:
                    exp, totals = trainer.exp, parts[method]
                    for part, owner, name in (("first_solver_step", exp, "objective"),
                                              ("surrogates", trainer, "step_inputs"),
                                              ("ask", exp.estimator, "ask"), ("queries", trainer.engine, "evaluate_all"),
                                              ("tell", exp.estimator, "tell"), ("optimizer", trainer.optimizer, "step")):
                        stack.enter_context(Timed(totals, part, owner, name, exp.runner))
                wall, sim = one_step(trainer)
            if rep >= warmup:
                times[method].append((wall, sim))
    for trainer in trainers.values():
        trainer.close()
    methods = {}
    for method, rows in times.items():
        walls, sims = [w for w, _ in rows], [s for _, s in rows]
        methods[method] = {"step_s": statistics.median(walls), "sim_s": statistics.median(sims),
                           "simulator_share": statistics.median(s / w for w, s in rows),
                           "step_s_quartiles": statistics.quantiles(walls, n=4)}
        if method in parts:
            total = sum(walls)
            methods[method]["breakdown"] = {
                part: {"wall_s": v["wall_s"] / len(rows), "sim_s": v["sim_s"] / len(rows),
                       "rest_s": (v["wall_s"] - v["sim_s"]) / len(rows), "share": v["wall_s"] / total}
                for part, v in parts[method].items()}
            methods[method]["breakdown"]["unaccounted"] = {
                "wall_s": (total - sum(v["wall_s"] for v in parts[method].values())) / len(rows)}
    return methods, {m: t.exp.flat.get() for m, t in trainers.items()}, trainers["zo_central"]


def op_profile(method: str, threads: int, steps: int, warmup: int, top: int = 12) -> dict:
    """torch.profiler over ``steps`` steps of ``method``: the operators with the most self CPU time,
    per step, and the time inside the simulator (a record_function around its step)."""
    trainer = Trainer(Experiment.build(zooframe.load_config(config_for(method, threads))))
    trainer.threads.update(force=True)
    simulator = trainer.exp.simulator
    step = simulator.step

    def labelled(*args, **kwargs):
        with torch.profiler.record_function("simulator"):
            return step(*args, **kwargs)

    simulator.step = labelled
    with ExitStack() as stack:
        if method == "zo_central_loop":
            stack.enter_context(_loop_term_gradients())
        for _ in range(warmup):
            one_step(trainer)
        start = time.perf_counter()
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
            for _ in range(steps):
                one_step(trainer)
        wall = (time.perf_counter() - start) / steps
    trainer.close()
    events = prof.key_averages()
    total = sum(e.self_cpu_time_total for e in events) / 1e6 / steps
    inside = next((e.cpu_time_total for e in events if e.key == "simulator"), 0.0) / 1e6 / steps
    ops = sorted((e for e in events if e.key != "simulator"), key=lambda e: -e.self_cpu_time_total)[:top]
    return {"wall_s_per_step_profiled": wall, "self_cpu_s_per_step": total, "simulator_cpu_s_per_step": inside,
            "top_ops": {e.key: {"self_cpu_s_per_step": e.self_cpu_time_total / 1e6 / steps, "calls_per_step":
                                e.count / steps, "share": e.self_cpu_time_total / 1e6 / steps / total} for e in ops}}


class _loop_term_gradients:
    """The loss terms' gradients by one backward pass per term, as before the objective's own."""

    def __enter__(self):
        self.saved = CorrectionObjective.term_gradients
        CorrectionObjective.term_gradients = Coupling.term_gradients

    def __exit__(self, *exc):
        CorrectionObjective.term_gradients = self.saved


def cosines(thetas: dict[str, torch.Tensor], windows: int) -> dict:
    """Cosine to FO of each ZO method's estimate, and of its surrogates' sum, on fixed training windows."""
    out = {}
    with Experiment.build(zooframe.load_config(config_for("zo_forward", 1))) as exp:
        trainer = Trainer(exp)
        gen = torch.Generator().manual_seed(1234)
        picked = [trainer.sampler.sample(-100 - k, gen) for k in range(windows)]
        for label, theta in thetas.items():
            exp.flat.set(theta)
            rows = {f"{name}{part}": [] for name in PROBED for part in ("", "_surrogate_sum")}
            for window in picked:
                fo, _ = autograd_gradient(CorrectionObjective(exp.runner, exp.flat, window, "exact"), theta)
                for name in PROBED:
                    spec = METHODS[name]
                    objective = exp.objective(window, spec.get("training", {}).get("solver_jacobian", "identity"))
                    surrogates, terms = objective.term_gradients(theta)
                    estimator = Subspace(SubspaceConfig(**spec["estimator"]))
                    with torch.no_grad():
                        queries = estimator.ask(theta, gen, StepInputs(surrogates=surrogates, loss=float(terms.mean())))
                        grad = estimator.tell(queries, trainer.engine.evaluate(objective, queries))
                    for key, vector in ((name, grad), (f"{name}_surrogate_sum", surrogates.sum(0))):
                        rows[key].append(float(torch.nn.functional.cosine_similarity(vector, fo, dim=0)))
            out[label] = {name: {"mean": statistics.mean(v), "min": min(v)} for name, v in rows.items()}
        trainer.close()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, nargs="+", default=[2, 1])
    parser.add_argument("--repeats", type=int, default=35)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--windows", type=int, default=8, help="training windows for the cosines (0: none)")
    parser.add_argument("--profile-steps", type=int, default=10, help="steps under torch.profiler per method")
    args = parser.parse_args()
    start = time.perf_counter()
    methods, ratios, trained = {}, {}, None
    for threads in args.threads:
        timed, thetas, _ = time_steps(threads, args.repeats, args.warmup)
        trained = thetas["zo_central"]
        for method, row in timed.items():
            methods[f"{method}_{threads}t"] = row
            print(f"{threads} thread(s) {method}: {row['step_s']:.4f} s/step, simulator {row['sim_s']:.4f} s "
                  f"({row['simulator_share']:.2f})", flush=True)
        fo = timed["fo_sol"]["step_s"]
        for method in ("zo_central", "zo_forward", "zo_central_loop", "zo_forward_drop"):
            ratios[f"{method}_over_fo_sol_{threads}t"] = timed[method]["step_s"] / fo
        ratios[f"zo_central_over_zo_central_loop_{threads}t"] = (timed["zo_central"]["step_s"]
                                                                 / timed["zo_central_loop"]["step_s"])
    extra = {"op_profile": {f"{m}_{t}t": op_profile(m, t, args.profile_steps, args.warmup)
                            for t in args.threads for m in ("zo_forward", "zo_forward_drop", "zo_central_loop", "fo_sol")}}
    if args.windows:
        initial = Trainer(Experiment.build(zooframe.load_config(config_for("zo_forward", 1))))
        extra["cosine_to_fo"] = cosines({"initial": initial.exp.flat.get(),
                                         f"after_{args.warmup + args.repeats}_steps": trained}, args.windows)
        initial.close()
        print(json.dumps(extra["cosine_to_fo"], indent=1))
    config = {"example": "examples/karman_subspace.json", "methods": METHODS, "threads": args.threads,
              "repeats": args.repeats, "warmup": args.warmup, "windows": args.windows,
              "total_wall_s": time.perf_counter() - start}
    path = write_results("zo_step", config, methods, ratios, **extra)
    print(json.dumps(ratios, indent=2))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
