"""JSON Schemas of the experiment config and of each plugin category, as committed in schemas/ (beside
those of the run's outputs, :mod:`zooframe.runs.outputs`)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from .registry import CATEGORIES, Registry
from .sections import category_schema, experiment_model

SCHEMA_DIALECT = "https://json-schema.org/draft/2020-12/schema"


def build_schemas(registry: Registry) -> dict[str, dict[str, Any]]:
    """File name -> schema, for the plugins in ``registry``."""
    experiment = experiment_model(registry).model_json_schema(by_alias=True)
    experiment["title"] = "zooframe experiment"
    out = {"experiment.schema.json": experiment}
    for category in CATEGORIES:
        out[f"{category}.schema.json"] = category_schema(registry, category)
    return {name: {"$schema": SCHEMA_DIALECT, **schema} for name, schema in out.items()}


def render(schema: dict[str, Any]) -> str:
    return json.dumps(schema, indent=2, sort_keys=True) + "\n"


def write_schemas(directory: str | Path, schemas: dict[str, dict[str, Any]]) -> list[Path]:
    """Write ``schemas`` (file name -> schema) into ``directory``."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for name, schema in schemas.items():
        path = directory / name
        path.write_text(render(schema))
        written.append(path)
    return written
