"""What every plugin class shares: a pydantic config whose ``kind`` Literal names the plugin."""

from __future__ import annotations

import typing
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict


class PluginConfig(BaseModel):
    """Base of every plugin's config. Subclasses declare ``kind: Literal["name"]`` without a
    default, so that the JSON Schema lists it as required and unions can discriminate on it.
    NaN and Infinity, which JSON parsers accept, are refused as values of float fields."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class Plugin:
    """Base of simulator, reference, estimator and model classes: ``Config`` is the plugin's
    config model. ``required`` lists the methods a subclass must implement, as groups of which
    at least one must be: registration refuses a class that misses one."""

    Config: ClassVar[type[PluginConfig]]
    category: ClassVar[str]
    required: ClassVar[tuple[tuple[str, ...], ...]] = ()

    def __init__(self, config: PluginConfig):
        self.config = config


@dataclass(frozen=True)
class PluginSpec:
    """A plugin class and its config: enough to build the plugin anywhere the class imports."""

    cls: type[Plugin]
    config: PluginConfig

    def build(self, *args, **kwargs) -> Any:
        return self.cls(self.config, *args, **kwargs)


def missing_methods(cls: type, base: type) -> list[str]:
    """The groups of ``base.required`` that ``cls`` implements none of, as ``a or b`` strings."""
    def implemented(name: str) -> bool:
        return getattr(cls, name, None) is not getattr(base, name, None)

    return [" or ".join(group) for group in base.required if not any(implemented(n) for n in group)]


def plugin_kind(cls: type) -> str:
    """The ``kind`` a plugin class declares through ``Config.kind: Literal[...]``."""
    config_cls = getattr(cls, "Config", None)
    if not (isinstance(config_cls, type) and issubclass(config_cls, PluginConfig)):
        raise TypeError(f"{cls.__qualname__}.Config must be a subclass of zooframe.PluginConfig")
    field = config_cls.model_fields.get("kind")
    args = typing.get_args(field.annotation) if field is not None else ()
    if field is None or typing.get_origin(field.annotation) is not Literal or len(args) != 1:
        raise TypeError(f"{cls.__qualname__}.Config needs a field kind: Literal['<name>']")
    if not field.is_required():
        raise TypeError(f"{cls.__qualname__}.Config.kind must have no default")
    return args[0]
