"""The one place that turns a config and the registry into live objects.

:meth:`Experiment.build` resolves each plugin section to its class, builds the simulator, the
reference source, the model and the estimator, and offers the engine, the optimizer and the
window sampler built from them. Everything below (trainer, engines, workers, evaluation) gets
plain objects. Workers get a :class:`~zooframe.execution.workers.WorkerSpec`: plugin classes and their configs, picklable,
so that they never consult a registry of their own.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..config.registry import SECTIONS, Registry, get_registry, resolve
from ..config.sections import ExperimentBase
from ..core.correction import CorrectionNetwork, correction_for
from ..core.flat_params import FlatParams
from ..core.losses import MSE, Loss
from ..core.objective import COUPLINGS, Coupling, SimulatorRunner, Window
from ..core.windows import WindowSampler
from ..execution.engine import Engine, LocalEngine, auto_chunk_size
from ..execution.process_engine import ProcessEngine
from ..execution.ray_engine import RayEngine
from ..execution.workers import WorkerSpec
from ..plugins.base import PluginSpec
from ..plugins.errors import ZooframeError, first_line
from ..plugins.estimator import Estimator
from ..plugins.logger import Logger
from ..plugins.reference import ReferenceSource, generate
from ..plugins.simulator import Case, Simulator
from . import checkpoint
from .schedules import schedule


def task_problems(config: ExperimentBase, source: ReferenceSource, splits: dict[str, list[Case]]) -> list[str]:
    """What the config asks of the task that its reference source cannot give."""
    problems = [f"evaluation.split: {source.describe()} offers no {split!r} cases (it has: {', '.join(splits) or 'none'})"
                if split != "train" else f"{source.describe()} offers no 'train' cases, which training needs (it has: "
                f"{', '.join(splits) or 'none'})"
                for split in dict.fromkeys(("train", config.evaluation.split)) if not splits.get(split)]
    needed = {"training.horizon": config.training.horizon, "evaluation.steps": config.evaluation.steps}
    problems += [f"{name} is {steps}, but {source.describe()} holds {source.max_steps} steps per case; set {name} to "
                 f"at most {source.max_steps}" for name, steps in needed.items()
                 if source.max_steps is not None and steps > source.max_steps]
    per_step, train = config.training.cases_per_step, len(splits.get("train", []))
    if per_step is not None and train and per_step > train:
        problems.append(f"training.cases_per_step is {per_step}, but {source.describe()} offers {train} training "
                        f"cases; set it to at most {train}, or leave it out to take all of them each step")
    return problems


VALIDATION = "validation"  # the case set training.validation_cases makes


def case_sets(config: ExperimentBase, source: ReferenceSource) -> tuple[dict[str, list[Case]], list[str]]:
    """The source's case sets, with ``training.validation_cases`` moved out of ``train`` into
    ``validation``; and what is wrong with those names."""
    splits = {name: list(cases) for name, cases in source.cases().items()}
    names = config.training.validation_cases
    if not names:
        return splits, []
    train = splits.get("train", [])
    known = [c.name for c in train]
    unknown = [n for n in names if n not in known]
    if unknown:
        return splits, [f"training.validation_cases: no training case {', '.join(map(repr, unknown))} in "
                        f"{source.describe()} (its training cases: {', '.join(known) or 'none'})"]
    if VALIDATION in splits:
        return splits, [f"training.validation_cases: {source.describe()} has a case set 'validation' of its own; "
                        "evaluate on it and leave training.validation_cases out"]
    if set(known) <= set(names):
        return splits, ["training.validation_cases: holds every training case; leave at least one to train on"]
    splits[VALIDATION] = [c for c in train if c.name in names]
    splits["train"] = [c for c in train if c.name not in names]
    return splits, []


def loss_problems(config: ExperimentBase, channels: Sequence[str]) -> list[str]:
    """What ``objective.loss`` asks of the state's channels that they cannot give."""
    weights = config.objective.loss.channel_weights
    unknown = [name for name in weights if name not in channels]
    if unknown:
        return [f"objective.loss.channel_weights: no channel {', '.join(map(repr, unknown))} in the simulator's state "
                f"(its channels: {', '.join(channels)})"]
    if weights and not any(weights.get(name, 1.0) for name in channels):
        return ["objective.loss.channel_weights: every channel weighs 0, so nothing would be trained"]
    return []


def training_loss(config: ExperimentBase, channels: Sequence[str]) -> Loss:
    """The loss ``objective.loss`` names, its channel weights in the order of ``channels``."""
    cfg = config.objective.loss
    weights = tuple(cfg.channel_weights.get(name, 1.0) for name in channels) if cfg.channel_weights else None
    return Loss(cfg.name, cfg.delta, weights)


def simulator_workers(config: ExperimentBase) -> int:
    """The engine's worker processes, each with a simulator of its own (0: the local backend)."""
    return 0 if config.execution.backend == "local" else config.execution.workers


def init_weights_file(config: ExperimentBase) -> Path | None:
    """The weights file ``training.init`` names (a run folder's ``model.pt``, or the file itself)."""
    init = config.training.init
    if init is None:
        return None
    path = Path(init)
    if path.is_dir():
        path = path / "model.pt"
    if not path.is_file():
        raise ZooframeError(f"training.init: {init} is neither a finished run's folder (with model.pt) nor a weights "
                            "file; train that run first, or give the folder of one that finished")
    return path


def load_init_weights(config: ExperimentBase, model: CorrectionNetwork, device: torch.device) -> None:
    """Put the weights ``training.init`` names, normalization buffers included, into ``model``."""
    path = init_weights_file(config)
    if path is None:
        return
    state = checkpoint.load_tensors(path, device)
    try:
        model.load_state_dict(state)
    except (RuntimeError, TypeError, AttributeError) as exc:
        theirs = path.parent / "config.json"
        differs = ""
        if theirs.is_file():
            a = config.model.model_dump(mode="json", by_alias=True, exclude_none=True)
            b = json.loads(theirs.read_text()).get("model", {})
            fields = sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))
            differs = f"; the model sections differ in {', '.join('model.' + f for f in fields)}" if fields else ""
        raise ZooframeError(f"training.init: the weights in {path} do not fit this config's network ({first_line(exc)})"
                            f"{differs}; start from a run of the same model and task") from None


def output_problems(out: Path) -> list[str]:
    """Why the run folder ``out`` could not be created or written, if it could not."""
    try:
        return _folder_problems(out)
    except (OSError, ValueError) as exc:
        return [f"output.dir: {out} cannot be used: {exc}"]


def _folder_problems(out: Path) -> list[str]:
    if out.exists():
        if not out.is_dir():
            return [f"output.dir: {out} is a file, not a folder"]
        return [] if os.access(out, os.W_OK | os.X_OK) else [f"output.dir: {out} is not writable"]
    parent = out.parent
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        return [f"output.dir: {out} cannot be created: {parent} is a file"]
    return [] if os.access(parent, os.W_OK | os.X_OK) else [f"output.dir: {out} cannot be created: {parent} is not "
                                                             "writable"]


def build_loggers(config: ExperimentBase, registry: Registry | None = None) -> list[Logger]:
    """The loggers ``output.loggers`` names; each imports its package here, so that a missing one is
    an error before the run starts."""
    return [resolve("logger", c, registry).build() for c in config.output.loggers]


def preflight(config: ExperimentBase, registry: Registry | None = None, output: str | Path | None = None) -> list[str]:
    """Every problem that shows before any work: the run folder, and what the task (the simulator
    and its reference source, built but not run) cannot give. Empty: ready to run."""
    out = Path(output) if output is not None else Path(config.output.dir.format(name=config.name))
    problems = output_problems(out)
    for check in (init_weights_file, lambda c: build_loggers(c, registry)):
        try:
            check(config)
        except ZooframeError as exc:
            problems.append(str(exc))
    return problems + inspect_task(config, registry).problems


@dataclass(frozen=True)
class Task:
    """What a config's simulator and reference source offer, built but not run."""

    splits: dict[str, list[Case]]  # the case sets, training.validation_cases moved into 'validation'
    differentiable: bool  # the simulator can be differentiated through (training.mode fo)
    problems: list[str]  # what the config asks of the task that it cannot give


def inspect_task(config: ExperimentBase, registry: Registry | None = None) -> Task:
    """The config's task, from its simulator and reference source built on the CPU and closed again."""
    parts = {c: resolve(c, getattr(config, c), registry) for c in ("simulator", "reference")}
    simulator, splits, problems, differentiable = None, {}, [], False
    try:
        simulator = parts["simulator"].build(device="cpu")
        differentiable = getattr(simulator, "differentiable", False) is True
        source = parts["reference"].build(simulator, device="cpu")
        splits, problems = case_sets(config, source)
        problems += task_problems(config, source, splits) + loss_problems(config, simulator.state_spec.channels)
        simulator.run_facts(simulator_workers(config))
    except ZooframeError as exc:
        problems.append(str(exc))
    except Exception as exc:  # a plugin's own error while it is built: name the plugin
        stage = "reference source" if simulator is not None else "simulator"
        plugin = parts["reference" if simulator is not None else "simulator"].cls.__name__
        problems.append(f"the {stage} plugin {plugin} could not be built: {type(exc).__name__}: {exc}")
    finally:
        if simulator is not None:
            simulator.close()
    return Task(splits, differentiable, problems)


@dataclass
class Experiment:
    """A config's simulator, reference source, network and estimator, built and ready to train
    or evaluate. A context manager: leaving it closes the simulator (its processes, files), and
    the simulator starts again what it needs if it is used after that."""

    config: ExperimentBase
    parts: dict[str, PluginSpec]
    simulator: Simulator
    source: ReferenceSource
    runner: SimulatorRunner
    estimator: Estimator | None  # None unless training.mode is 'zo'
    model: CorrectionNetwork
    flat: FlatParams
    device: torch.device
    dtype: torch.dtype
    mask: torch.Tensor | None = None  # the sparsity mask of a finished run, when it had one
    splits: dict[str, list[Case]] = field(default_factory=dict)
    loss: Loss = MSE  # the training loss (objective.loss)
    simulator_facts: dict = field(default_factory=dict)  # Simulator.run_facts, for the summary and the log

    @classmethod
    def build(cls, config: ExperimentBase, registry: Registry | None = None, train: bool = False) -> Experiment:
        """``train``: for a training run, whose simulators must fit the machine (``Simulator.run_facts``)."""
        registry = registry or get_registry()
        ex = config.execution
        if ex.device == "cuda" and not torch.cuda.is_available():
            raise ZooframeError("execution.device is 'cuda' but PyTorch sees no CUDA device; use 'cpu'")
        device, dtype = torch.device(ex.device), getattr(torch, ex.dtype)
        parts = {c: resolve(c, getattr(config, c), registry) for c, where in SECTIONS.items()
                 if where == (c,) and getattr(config, c, None) is not None}  # loggers are the run folder's (build_loggers)
        simulator = parts["simulator"].build(device=device)
        try:  # a simulator that holds a process or files is closed when what follows refuses the config
            source = parts["reference"].build(simulator, device=device)
            splits, problems = case_sets(config, source)
            problems += task_problems(config, source, splits) + loss_problems(config, simulator.state_spec.channels)
            if problems:
                raise ZooframeError("; ".join(problems))
            if config.output.figures:
                simulator.figure_quantities()  # a plugin's figure_channels, checked before any work
            n_features = source.features(splits["train"][:1]).shape[1]
            torch.manual_seed(config.training.seed)
            model = correction_for(parts["model"], simulator.state_spec, n_features).to(device, dtype)
            load_init_weights(config, model, device)
            facts = simulator.run_facts(simulator_workers(config)) if train else {}
        except BaseException:
            simulator.close()
            raise
        return cls(config, parts, simulator, source, SimulatorRunner(simulator),
                   parts["estimator"].build() if "estimator" in parts else None, model,
                   FlatParams(model), device, dtype, splits=splits,
                   loss=training_loss(config, simulator.state_spec.channels), simulator_facts=facts)

    def close(self) -> None:
        self.simulator.close()

    def __enter__(self) -> Experiment:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    # --- the task -------------------------------------------------------------------------------
    def cases(self, split: str) -> list[Case]:
        if split not in self.splits:
            raise ZooframeError(f"no case set {split!r}: {self.source.describe()} has "
                                f"{', '.join(sorted(self.splits))}")
        return self.splits[split]

    def features(self, cases: Sequence[Case]) -> torch.Tensor:
        return torch.as_tensor(self.source.features(cases), device=self.device, dtype=self.dtype)

    def reference(self, cases: Sequence[Case], steps: int) -> torch.Tensor:
        ref = torch.as_tensor(generate(self.source, cases, steps), device=self.device, dtype=self.dtype)
        expected = (len(cases), steps + 1, *self.simulator.state_spec.shape)
        if tuple(ref.shape) != expected:
            raise ZooframeError(f"{self.source.describe()} returned trajectories of shape {tuple(ref.shape)}, "
                                f"expected {expected}")
        return ref

    # --- what the trainer runs on ---------------------------------------------------------------
    def sampler(self, unroll: int) -> WindowSampler:
        cfg = self.config.training
        cases = self.cases("train")
        return WindowSampler(cases, self.features(cases), self.reference(cases, cfg.horizon), unroll,
                             cfg.cases_per_step, cfg.seed)

    @property
    def coupling(self) -> type[Coupling]:
        """The objective class the config's ``objective.coupling`` names."""
        return COUPLINGS[self.config.objective.coupling]

    def window_steps(self) -> int:
        """Reference steps per training window, as the coupling counts them."""
        return self.coupling.window_steps(self.config)

    def objective(self, window: Window, solver_jacobian: str = "exact") -> Coupling:
        """The training loss of one window as a batched function of parameter vectors."""
        return self.coupling.for_window(self.runner, self.flat, window, solver_jacobian, self.config, self.loss)

    def fit_statistics(self, sampler: WindowSampler) -> None:
        """The network's normalization, from the training reference: states, features, and the
        changes the network should make to them (as the coupling defines them)."""
        ref, steps = sampler.reference, sampler.unroll
        states, changes = self.coupling.statistics(ref, sampler.cases, self.runner, steps)
        if not torch.isfinite(changes).all():
            raise ZooframeError(f"simulator {self.config.simulator.kind!r} returned NaN or Inf from the training "
                                "reference's frames, which the network's normalization is fitted on; the code fails on "
                                "the task's own states (or set model.normalize to false)")
        per_case = states.shape[0] // ref.shape[0]
        self.model.set_statistics(states, sampler.features.repeat_interleave(per_case, dim=0), changes)

    def worker_spec(self) -> WorkerSpec:
        return WorkerSpec(self.parts["simulator"], self.parts["model"], self.model.features,
                          str(self.device), self.config.execution.dtype)

    def engine(self, rows_per_query: int) -> Engine:
        ex = self.config.execution
        chunk = ex.chunk_size
        if chunk == "auto":
            spec = self.simulator.state_spec
            chunk = auto_chunk_size(rows_per_query, math.prod(spec.shape), self.flat.dim,
                                    torch.finfo(self.dtype).bits // 8, ex.memory_budget_mb)
        if ex.backend == "process":
            return ProcessEngine(self.worker_spec(), ex.workers, chunk, ex.threads_per_worker, ex.worker_restarts,
                                 ex.worker_timeout_s)
        if ex.backend == "ray":
            return RayEngine(self.worker_spec(), ex.workers, chunk, ex.ray.address, ex.ray.object_store_mb,
                             ex.threads_per_worker, ex.worker_restarts, ex.worker_timeout_s)
        return LocalEngine(chunk)

    def optimizer(self, progress: Callable[[], float]
                  ) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LRScheduler]:
        """The optimizer and its schedule (``progress``: the spent fraction of training, which a cosine
        schedule follows under a budget; see :mod:`zooframe.runs.schedules`)."""
        cfg = self.config.training
        o = cfg.optimizer
        params = self.model.parameters()
        if o.name == "sgd":
            opt = torch.optim.SGD(params, lr=o.lr, momentum=o.momentum, weight_decay=o.weight_decay)
        else:
            opt = {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW}[o.name](params, lr=o.lr,
                                                                                  weight_decay=o.weight_decay)
        return opt, schedule(opt, cfg, progress)
