"""The experiment configuration: core sections plus plugin sections built from the registry."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, create_model, model_validator

from .errors import ConfigError
from .registry import CATEGORIES, Registry, get_registry


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class OptimizerConfig(Section):
    name: Literal["sgd", "adam", "adamw"] = "adam"
    lr: float = Field(1e-3, gt=0, description="learning rate")
    weight_decay: float = Field(0.0, ge=0)
    momentum: float = Field(0.0, ge=0, lt=1, description="sgd only")


class ScheduleConfig(Section):
    name: Literal["none", "cosine", "step"] = "none"
    step_size: int = Field(100, ge=1, description="step: optimizer steps between decays")
    gamma: float = Field(0.5, gt=0, le=1, description="step: decay factor")
    min_lr: float = Field(0.0, ge=0, description="cosine: final learning rate")


class TrainingConfig(Section):
    mode: Literal["zo", "fo", "non"] = Field(
        "zo", description="zo: zeroth-order estimate through the black-box solver; fo: autograd through a "
        "differentiable solver (upper bound); non: supervised one-step correction (baseline, unroll 1)")
    unroll: int = Field(4, ge=1, description="solver steps m unrolled per training window (non uses 1)")
    steps: int = Field(100, ge=1, description="optimizer steps")
    horizon: int = Field(50, ge=1, description="reference steps per training case that windows start from")
    cases_per_step: int | None = Field(None, ge=1, description="training cases per step (default: all)")
    seed: int = 0
    optimizer: OptimizerConfig = OptimizerConfig()
    schedule: ScheduleConfig = ScheduleConfig()

    @model_validator(mode="after")
    def _window_fits(self):
        if self.unroll > self.horizon:
            raise ValueError(f"unroll ({self.unroll}) must not exceed horizon ({self.horizon})")
        return self


class EvaluationConfig(Section):
    steps: int = Field(100, ge=1, description="rollout length on the held-out cases")
    split: str = Field("test", description="the simulator's case set to evaluate on")


class SparsityConfig(Section):
    method: Literal["none"] = Field("none", description="dense training (sparsity methods come later)")


class ExecutionConfig(Section):
    backend: Literal["local"] = "local"
    chunk_size: int = Field(256, ge=1, description="queries evaluated per batched call (bounds memory)")
    device: Literal["cpu", "cuda"] = "cpu"
    dtype: Literal["float32", "float64"] = "float32"


class OutputConfig(Section):
    dir: str = Field("runs/{name}", description="run folder; {name} is the experiment name")
    progress: bool = Field(True, description="progress bar on a terminal")


class ExperimentBase(Section):
    schema_: str | None = Field(None, alias="$schema", description="JSON Schema for editors; ignored")
    name: str = Field("experiment", pattern=r"^[A-Za-z0-9_.-]+$")
    training: TrainingConfig = TrainingConfig()
    evaluation: EvaluationConfig = EvaluationConfig()
    sparsity: SparsityConfig = SparsityConfig()
    execution: ExecutionConfig = ExecutionConfig()
    output: OutputConfig = OutputConfig()

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    def to_json(self) -> dict[str, Any]:
        return self.model_dump(mode="json", by_alias=True, exclude_none=True)


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
                  for c in ("simulator", "model", "estimator")}
        cached = create_model("ExperimentConfig", __base__=ExperimentBase, **fields)
        registry._experiment_model = cached
    return cached


def load_config(source: str | Path | dict, registry: Registry | None = None) -> ExperimentBase:
    """Validate a config given as a dict or a JSON file path; raises :class:`ConfigError`."""
    registry = registry or get_registry()
    label = None
    if not isinstance(source, dict):
        label = str(source)
        try:
            source = json.loads(Path(source).read_text())
        except FileNotFoundError:
            raise ConfigError([f"file not found: {label}"], label) from None
        except json.JSONDecodeError as exc:
            raise ConfigError([f"not valid JSON: {exc.msg} at line {exc.lineno}, column {exc.colno}"], label) from None
        if not isinstance(source, dict):
            raise ConfigError(["the top level must be a JSON object"], label)
    try:
        return experiment_model(registry).model_validate(source)
    except ValidationError as exc:
        raise ConfigError(explain(exc, source, registry), label) from None


def explain(exc: ValidationError, data: Any, registry: Registry) -> list[str]:
    """One ``path: message`` line per error, with plugin kinds and allowed fields spelled out."""
    lines = []
    for err in exc.errors():
        path, node = [], data
        for part in err["loc"]:
            # a discriminated union puts the tag into the location: skip it
            if isinstance(node, dict) and isinstance(part, str) and part not in node and node.get("kind") == part:
                continue
            path.append(str(part))
            node = node.get(part) if isinstance(node, dict) else (
                node[part] if isinstance(node, list) and isinstance(part, int) and part < len(node) else None)
        where = ".".join(path) or "(top level)"
        category = path[0] if path and path[0] in CATEGORIES else None
        kind = err["type"]
        if category and (kind in ("union_tag_invalid", "union_tag_not_found") or (kind == "literal_error" and path[-1] == "kind")):
            known = ", ".join(registry.kinds(category))
            section = data.get(category) if isinstance(data, dict) else None
            got = section.get("kind") if isinstance(section, dict) else None
            if kind == "union_tag_not_found" or got is None:
                lines.append(f"{category}.kind: missing; known {category} kinds: {known}")
            else:
                lines.append(f"{category}.kind: unknown {category} kind {got!r}; known: {known}")
            continue
        if kind == "extra_forbidden":
            lines.append(f"{where}: unknown field{_allowed(exc, err, registry, data)}")
            continue
        msg = err["msg"]
        if kind == "missing":
            msg = "required field is missing"
        elif "input" in err and not isinstance(err["input"], (dict, list)):
            msg = f"{msg} (got {err['input']!r})"
        lines.append(f"{where}: {msg}")
    return lines


def _allowed(exc: ValidationError, err: dict, registry: Registry, data: Any) -> str:
    """The fields allowed where an unknown one was found, when the model there can be told."""
    loc = [p for p in err["loc"][:-1]]
    model: Any = experiment_model(registry)
    node = data
    for part in loc:
        if not isinstance(node, dict):
            return ""
        if part not in node and node.get("kind") == part:
            continue
        field = getattr(model, "model_fields", {}).get(part)
        node = node.get(part)
        if field is None:
            return ""
        model = field.annotation
        if part in CATEGORIES and isinstance(node, dict):
            try:
                model = registry.get(part, node.get("kind")).config_cls
            except Exception:
                return ""
    fields = getattr(model, "model_fields", None)
    if not fields:
        return ""
    names = [f.alias or n for n, f in fields.items()]
    return "; allowed: " + ", ".join(names)


def category_schema(registry: Registry, category: str) -> dict[str, Any]:
    schema = TypeAdapter(plugin_union(registry, category)).json_schema()
    schema["title"] = f"zooframe {category} plugin"
    return schema
