"""The experiment configuration: core sections plus plugin sections built from the registry."""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal, Optional, Union

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    TypeAdapter,
    ValidationError,
    create_model,
    field_validator,
    model_validator,
)

from ..core.losses import LOSSES
from ..core.metrics import METRICS
from ..core.objective import COUPLINGS
from ..plugins.errors import ConfigError
from ..plugins.faults import FAULT_CLASSES
from .files import (  # noqa: F401 (STDIN: re-exported)
    FORMATS,
    STDIN,
    apply_overrides,
    blame,
    read_data,
    source_label,
    with_lines,
)
from .registry import SECTIONS, Registry, get_registry


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class OptimizerConfig(Section):
    name: Literal["sgd", "adam", "adamw"] = "adam"
    lr: float = Field(1e-3, gt=0, description="learning rate")
    weight_decay: float = Field(0.0, ge=0)
    momentum: float = Field(0.0, ge=0, lt=1, description="sgd only")


class ScheduleConfig(Section):
    name: Literal["none", "cosine", "step"] = Field(
        "none", description="cosine: from the optimizer's rate to min_lr over training.steps, or over training.budget "
        "where that ends training first; step: times gamma every step_size steps")
    step_size: int = Field(100, ge=1, description="step: optimizer steps between decays")
    gamma: float = Field(0.5, gt=0, le=1, description="step: decay factor")
    min_lr: float = Field(0.0, ge=0, description="cosine: final learning rate")


class BudgetConfig(Section):
    """Stops training before ``training.steps`` when one of its limits is reached (after the step that
    reaches it); a resumed run counts what it used before it stopped."""

    seconds: float | None = Field(None, gt=0, description="wall seconds of training (the optimizer steps, not the "
                                  "normalization pass or the evaluation)")
    simulator_calls: int | None = Field(None, ge=1, description="simulator calls, one per state a step of the "
                                        "code advances (a batch of 8 states is 8), the normalization pass included")


class TrainingConfig(Section):
    mode: Literal["zo", "fo", "nog", "non"] = Field(
        "zo", description="zo: zeroth-order estimate through the black-box solver; fo: autograd through a "
        "differentiable solver (upper bound); nog: solver in the loop, autograd through the network's "
        "corrections only (no solver gradient, see solver_jacobian); non: supervised one-step correction "
        "(baseline, unroll 1)")
    unroll: int = Field(4, ge=1, description="solver steps m unrolled per training window (non uses 1)")
    steps: int = Field(100, ge=1, description="optimizer steps")
    horizon: int = Field(50, ge=1, description="reference steps per training case that windows start from")
    cases_per_step: int | None = Field(None, ge=1, description="training cases per step (default: all)")
    seed: int = Field(0, ge=0, lt=2**63)
    optimizer: OptimizerConfig = OptimizerConfig()
    schedule: ScheduleConfig = ScheduleConfig()
    init: str | None = Field(
        None, description="start from trained weights: a finished run's folder (or a model.pt written by one) with "
        "the same model section; its normalization comes along (none is fitted), the optimizer and schedule start "
        "fresh. E.g. fine-tune with the solver in the loop (zo, nog) after supervised pre-training (non)")
    solver_jacobian: Literal["identity", "drop", "both"] = Field(
        "identity", description="nog, and the surrogate gradient of estimators that ask for one: the black-box "
        "solver's Jacobian taken as the identity (straight through) or as zero (drop: stop-gradient); both: the "
        "loss terms' surrogates under each, for estimators that ask for surrogates (subspace: 2m - 1 directions "
        "for unroll m, whose span holds more of the gradient than either's m)")
    budget: BudgetConfig = Field(BudgetConfig(), description="stop before training.steps after this much wall "
                                 "time or this many simulator calls (zooframe compare sets it)")
    validation_cases: list[str] = Field(
        default_factory=list, description="training cases (by name) held out of training as the case set "
        "'validation', to evaluate on with evaluation.split 'validation' (what `zooframe sweep` selects trials on)")

    @model_validator(mode="after")
    def _consistent(self):
        if self.unroll > self.horizon:
            raise ValueError(f"unroll ({self.unroll}) must not exceed horizon ({self.horizon})")
        if self.mode == "nog" and self.solver_jacobian == "both":
            raise ValueError("solver_jacobian 'both' gives a ZO estimator the terms' surrogates under both Jacobians; "
                             "mode 'nog' trains on one gradient: use 'identity' or 'drop'")
        return self


class LossConfig(Section):
    name: Literal[tuple(LOSSES)] = Field(
        "mse", description="what training minimises: " + "; ".join(f"{n}: {d}" for n, d in LOSSES.items()))
    delta: float = Field(1.0, gt=0, description="huber: where the loss turns from squared to absolute, in the "
                         "state's units")
    channel_weights: dict[str, float] = Field(
        default_factory=dict, description="a factor per channel (named as the simulator's state spec names them) "
                        "that multiplies its errors; channels left out weigh 1")

    @field_validator("channel_weights")
    @classmethod
    def _non_negative(cls, v: dict[str, float]) -> dict[str, float]:
        negative = [name for name, w in v.items() if not w >= 0]
        if negative:
            raise ValueError(f"a channel's weight is 0 or more (got {', '.join(f'{n}: {v[n]}' for n in negative)})")
        return v


class ObjectiveConfig(Section):
    coupling: Literal[tuple(COUPLINGS)] = Field(
        "correction", description="; ".join(f"{name}: {c.summary}" for name, c in COUPLINGS.items()))
    simulator_steps: int = Field(1, ge=1, description="model_then_simulator: code steps k from the network's "
                                 "prediction to the observation (training.unroll is not used)")
    loss: LossConfig = Field(LossConfig(), description="the training loss, in every training mode")


class EvaluationConfig(Section):
    steps: int = Field(100, ge=1, description="rollout length on the held-out cases")
    split: str = Field("test", description="the reference source's case set to evaluate on")
    metrics: list[Literal[tuple(METRICS)]] = Field(
        default_factory=lambda: ["mae"], min_length=1, description="the errors reported against the reference, "
        "each per case, per step and per channel; the first is the headline (printed, drawn, and the ratio "
        "corrected_over_src): " + "; ".join(f"{n}: {m.description}" for n, m in METRICS.items()))

    @field_validator("metrics")
    @classmethod
    def _once_each(cls, v: list[str]) -> list[str]:
        repeated = sorted({m for m in v if v.count(m) > 1})
        if repeated:
            raise ValueError(f"{', '.join(repeated)} listed more than once; name each metric once")
        return v


class SparsityConfig(Section):
    method: Literal["none", "zo_grasp", "magnitude", "random"] = Field(
        "none", description="how coordinates are scored at initialization (none: dense training)")
    ratio: float = Field(0.9, ge=0, lt=1, description="fraction of the unprotected coordinates pruned (use: model) "
                         "or left out of each estimate (use: gradient)")
    scope: Literal["global", "layerwise"] = Field(
        "global", description="global: one ranking over all layers; layerwise: the same ratio in every layer")
    protect: list[Literal["first", "last"]] = Field(default_factory=list, description="layers kept dense")
    use: Literal["model", "gradient"] = Field(
        "model", description="model: pruned weights stay zero and are never estimated; gradient: dense model, "
        "random per-layer coordinate subsets estimated each step (DeepZero)")
    resample_every: int = Field(1, ge=1, description="use: gradient: steps between redrawn masks")
    grasp_directions: int = Field(64, ge=1, description="zo_grasp: RGE directions per gradient estimate")
    grasp_mu: float = Field(5e-3, gt=0, description="zo_grasp: RGE finite-difference step")
    grasp_step: float = Field(1e-2, gt=0, description="zo_grasp: length of the step along g/|g| for the "
                              "Hessian-gradient product")


class RayConfig(Section):
    address: str | None = Field(None, description="unset: start a local Ray instance; 'auto' or host:port: join "
                                "a cluster started with `ray start`")
    object_store_mb: int | None = Field(None, ge=64, description="object store of a local instance (default: Ray's)")


FaultClass = Literal[FAULT_CLASSES]
FaultAction = Literal["abort", "skip", "penalty"]


class FaultConfig(Section):
    """What a step does with a query whose simulator call failed (see :mod:`zooframe.execution.fault_policy`)."""

    policy: Literal["abort", "retry", "skip", "penalty"] = Field(
        "abort", description="abort: stop the run with an error naming the simulator, the step, the fault and the "
        "queries; retry: evaluate the query again, up to retries times, then do what 'then' says; skip: leave the "
        "query out of the step's estimate (the estimator rescales); penalty: use the loss 'penalty' for it")
    retries: int = Field(2, ge=1, description="retry: attempts after the first")
    then: FaultAction = Field("abort", description="retry: what to do when the retries fail too")
    penalty: float | None = Field(None, description="penalty: the loss value that stands for a failed query")
    by_class: dict[FaultClass, Literal["abort", "retry", "skip", "penalty"]] = Field(
        default_factory=dict, description="a policy per fault class that replaces 'policy' for it, e.g. "
        "{\"shape\": \"abort\"} to stop on a plugin bug while skipping NaN")
    max_lost_fraction: float = Field(0.5, ge=0, le=1, description="a step that loses more than this fraction of its "
                                     "queries (skipped or faulted) takes no optimizer step and is logged as skipped")
    max_skipped_in_a_row: int = Field(10, ge=1, description="the run stops after this many skipped steps in a row")

    def action(self, fault: str) -> str:
        """abort, skip or penalty for a query of class ``fault`` once its retries (if any) failed."""
        policy = self.by_class.get(fault, self.policy)
        return self.then if policy == "retry" else policy

    def retries_for(self, fault: str) -> int:
        return self.retries if self.by_class.get(fault, self.policy) == "retry" else 0

    @model_validator(mode="after")
    def _penalty_given(self):
        actions = {self.action(f) for f in FAULT_CLASSES}
        if "penalty" in actions and self.penalty is None:
            raise ValueError("a penalty policy needs the loss value that stands for a failed query: set "
                             "execution.faults.penalty (e.g. a few times the initial loss)")
        return self


MAX_THREADS = 1024  # far more than any machine's cores; OpenMP aborts the process when it cannot start them


class ExecutionConfig(Section):
    backend: Literal["local", "process", "ray"] = Field(
        "local", description="local: in this process; process: a pool of local workers; ray: Ray actors")
    workers: int = Field(2, ge=1, description="process and ray: workers, each with a warm simulator")
    threads_per_worker: int = Field(1, ge=1, le=MAX_THREADS, description="process and ray: torch threads per worker")
    worker_restarts: int = Field(3, ge=0, description="process and ray: how often in a run a worker that died "
                                 "(a simulator crash, a lost node) is replaced and its step's queries sent again")
    worker_timeout_s: float | None = Field(
        None, gt=0, description="process and ray: when a step's queries are not all back from the workers after "
        "this long, the workers are taken for hung, stopped and replaced like dead ones (default: wait); leave room "
        "for the first step's compilation in a new worker")
    threads: int | Literal["auto"] = Field(
        "auto", description="torch threads of this process (the local backend's estimates, the trainer's own "
        "work); auto: the cores that other processes leave free, re-checked every 20 s")
    chunk_size: int | Literal["auto"] = Field(
        256, description="queries per batched call (bounds memory); auto: from memory_budget_mb")
    memory_budget_mb: float = Field(1024, gt=0, description="what one chunk may use when chunk_size is auto")
    device: Literal["cpu", "cuda"] = "cpu"
    dtype: Literal["float32", "float64"] = "float32"
    ray: RayConfig = RayConfig()
    faults: FaultConfig = Field(FaultConfig(), description="what a step does with failed simulator queries")

    @field_validator("chunk_size", "threads")
    @classmethod
    def _positive(cls, v, info):
        if isinstance(v, int) and v < 1:
            raise ValueError(f"{info.field_name} must be at least 1 or 'auto' (got {v})")
        if info.field_name == "threads" and isinstance(v, int) and v > MAX_THREADS:
            raise ValueError(f"threads must be at most {MAX_THREADS} or 'auto' (got {v})")
        return v


class OutputConfig(Section):
    dir: str = Field("runs/{name}", description="run folder; {name} is the experiment name")
    progress: bool = Field(True, description="progress bar on a terminal")
    figures: bool = Field(True, description="write loss.png, mae.png and snapshots.png at the end of a run (about "
                          "a second; off for sweeps and batch jobs that do not look at them)")
    checkpoint_every: int = Field(10, ge=1, description="optimizer steps between checkpoints (one is also written "
                                  "after the last step), from which `zooframe run --resume` continues a stopped run")

    @field_validator("dir")
    @classmethod
    def _placeholders(cls, v: str) -> str:
        if not v.strip():
            raise ValueError("empty: name the run folder, e.g. 'runs/{name}' (or '.' for the working directory)")
        if "\x00" in v:
            raise ValueError("a path cannot hold a NUL character")
        try:
            v.format(name="name")
        except (KeyError, IndexError, ValueError) as exc:
            raise ValueError(f"the only placeholder is {{name}} (got {v!r}: {type(exc).__name__} {exc}); write a "
                             "literal brace as {{ or }}") from None
        return v


class ExperimentBase(Section):
    schema_: str | None = Field(None, alias="$schema", description="JSON Schema for editors; ignored")
    name: str = Field("experiment", pattern=r"^[A-Za-z0-9_.-]+$")
    objective: ObjectiveConfig = ObjectiveConfig()
    training: TrainingConfig = TrainingConfig()
    evaluation: EvaluationConfig = EvaluationConfig()
    sparsity: SparsityConfig = SparsityConfig()
    execution: ExecutionConfig = ExecutionConfig()
    output: OutputConfig = OutputConfig()

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    def to_json(self) -> dict[str, Any]:
        return self.model_dump(mode="json", by_alias=True, exclude_none=True)

    @model_validator(mode="after")
    def _sections_fit(self):
        if self.training.mode == "zo" and getattr(self, "estimator", None) is None:
            raise ValueError("estimator: required when training.mode is 'zo' (the gradient is estimated from "
                             "queries), e.g. {\"kind\": \"subspace\"} or {\"kind\": \"cge\"}")
        problems = COUPLINGS[self.objective.coupling].config_problems(self)
        if problems:
            raise ValueError("; ".join(problems))
        return self


def plugin_union(registry: Registry, category: str) -> Any:
    """The config type of one plugin category: a union discriminated on ``kind``."""
    configs = tuple(p.config_cls for p in registry.plugins(category))
    if len(configs) == 1:
        return configs[0]
    return Annotated[Union[configs], Field(discriminator="kind")]


def experiment_model(registry: Registry | None = None) -> type[ExperimentBase]:
    registry = registry or get_registry()
    cached = getattr(registry, "_experiment_model", None)
    if cached is None:
        fields = {c: (plugin_union(registry, c), Field(..., description=f"the {c} plugin and its options"))
                  for c in ("simulator", "model")}
        fields["estimator"] = (Optional[plugin_union(registry, "estimator")], Field(
            None, description="the estimator plugin and its options; training.mode 'zo' needs one, the other "
            "modes take none (they estimate nothing)"))
        source = registry.get("reference", "simulator").config_cls
        fields["reference"] = (plugin_union(registry, "reference"), Field(
            default_factory=lambda: source(kind="simulator"), description="where the cases and reference "
            "trajectories come from (default: the simulator's own high-fidelity mode)"))
        loggers = list[plugin_union(registry, "logger")]
        output = create_model("OutputConfig", __base__=OutputConfig, loggers=(loggers, Field(
            default_factory=list, description="where the run reports besides its folder (metrics.jsonl is written "
            "either way), e.g. [{\"kind\": \"tensorboard\"}, {\"kind\": \"mlflow\"}]; a logger that fails is "
            "reported once and dropped")))
        fields["output"] = (output, Field(default_factory=output))
        cached = create_model("ExperimentConfig", __base__=ExperimentBase, **fields)
        registry._experiment_model = cached
    return cached


def load_config(source: str | Path | dict, registry: Registry | None = None,
                overrides: Mapping[str, Any] | None = None) -> ExperimentBase:
    """Validate a config given as a dict, a JSON, YAML or TOML file path (by its extension), or
    ``"-"`` for JSON or YAML on standard input (relative paths inside a config are taken from the
    working directory either way); raises :class:`ConfigError`.

    ``overrides`` maps dotted paths to values set before validation, as ``zooframe run --set``
    does: ``{"training.steps": 200, "training.optimizer": {"name": "sgd", "lr": 0.1}}``; a
    problem one of them causes names it."""
    registry = registry or get_registry()
    if not isinstance(source, (dict, str, Path)):
        raise ConfigError([f"a config is a JSON object (a dict) or the path of a {FORMATS} file, not a "
                           f"{type(source).__name__}"])
    label = source_label(source)
    data = source if isinstance(source, dict) else read_data(source)
    overrides = dict(overrides or {})
    if overrides:
        try:
            data = apply_overrides(data, overrides)
        except ConfigError as exc:
            raise ConfigError(exc.problems, label) from None
    try:
        return experiment_model(registry).model_validate(data)
    except ValidationError as exc:
        raise ConfigError(with_lines(blame(explain(exc, data, registry), overrides), source), label) from None


MAX_PROBLEMS = 20


def explain(exc: ValidationError, data: Any, registry: Registry) -> list[str]:
    """One ``path: message`` line per error, with plugin kinds and allowed fields spelled out;
    the first :data:`MAX_PROBLEMS` of them, and a line that counts the rest."""
    lines = []
    errors = exc.errors()
    for err in errors[:MAX_PROBLEMS]:
        path = _path(err["loc"], data)
        where = ".".join(map(str, path)) or "(top level)"
        category, section = _plugin_section(path) or (None, [])
        kind = err["type"]
        if category and (kind in ("union_tag_invalid", "union_tag_not_found")
                         or (kind == "literal_error" and path[-1] == "kind")):
            known = ", ".join(registry.kinds(category))
            got = _lookup(data, [*section, "kind"])
            at = ".".join(map(str, section))
            if got is None:
                lines.append(f"{at}.kind: missing; known {category} kinds: {known}")
            else:
                lines.append(f"{at}.kind: unknown {category} kind {got!r}; known: {known}")
        elif kind == "extra_forbidden":
            lines.append(f"{where}: unknown field{_allowed(path[:-1], data, registry, str(path[-1]))}")
        elif kind == "missing":
            lines.append(f"{where}: required field is missing")
        elif kind == "value_error":  # our own validators name the value (and, across sections, the field)
            message = err["msg"].removeprefix("Value error, ")
            lines.append(f"{where}: {message}" if path else message)
        elif not isinstance(err.get("input"), (dict, list)):
            lines.append(f"{where}: {err['msg']} (got {err['input']!r})")
        else:
            lines.append(f"{where}: {err['msg']}")
    if len(errors) > MAX_PROBLEMS:
        lines.append(f"... and {len(errors) - MAX_PROBLEMS} more problems (not shown)")
    return lines


def _lookup(data: Any, path: list) -> Any:
    for part in path:
        if isinstance(data, dict):
            data = data.get(part)
        elif isinstance(data, list) and isinstance(part, int) and part < len(data):
            data = data[part]
        else:
            return None
    return data


def _path(loc: tuple, data: Any) -> list:
    """The error location in the user's terms: without the union tags pydantic inserts."""
    path: list = []
    for part in loc:
        node = _lookup(data, path)
        if isinstance(node, dict) and isinstance(part, str) and part not in node and node.get("kind") == part:
            continue
        path.append(part)
    return path


def _plugin_section(path: list) -> tuple[str, list] | None:
    """The plugin category of the section at or above ``path``, and that section's path."""
    for category, where in SECTIONS.items():
        if len(path) >= len(where) and all(w in ("*", p) for w, p in zip(where, path)):
            return category, path[:len(where)]
    return None


def _allowed(path: list, data: Any, registry: Registry, unknown: str = "") -> str:
    """The fields allowed at ``path``, when the model there can be told, the nearest to ``unknown`` first."""
    model: Any = experiment_model(registry)
    category, section = _plugin_section(path) or (None, [])
    if category:  # a union of plugin configs: the one its kind names
        try:
            model = registry.get(category, _lookup(data, [*section, "kind"])).config_cls
        except Exception:
            return ""
    for part in path[len(section):]:
        field = getattr(model, "model_fields", {}).get(part)
        if field is None:
            return ""
        model = field.annotation
    fields = getattr(model, "model_fields", None)
    if not fields:
        return ""
    names = [f.alias or n for n, f in fields.items()]
    near = difflib.get_close_matches(unknown, names, n=2, cutoff=0.6)
    return (f"; did you mean {' or '.join(near)}? allowed: " if near else "; allowed: ") + ", ".join(names)


def category_schema(registry: Registry, category: str) -> dict[str, Any]:
    schema = TypeAdapter(plugin_union(registry, category)).json_schema()
    schema["title"] = f"zooframe {category} plugin"
    return schema
