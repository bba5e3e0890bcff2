"""The plugin registry: built-ins and third-party packages register through the same hooks.

Third-party packages declare an entry point in the group ``zooframe``::

    [project.entry-points.zooframe]
    myplugin = "my_package.zooframe_plugin"

Set ``ZOOFRAME_DISABLE_EXTERNAL_PLUGINS=1`` to load only the built-ins.
"""

from __future__ import annotations

import importlib.metadata
import os
import warnings
from dataclasses import dataclass
from types import ModuleType
from typing import Any

import pluggy

from .. import builtins
from ..plugins import hookspecs
from ..plugins.base import Plugin, PluginConfig, PluginSpec, missing_methods, plugin_kind
from ..plugins.errors import DuplicateKindError, PluginError
from ..plugins.estimator import Estimator
from ..plugins.logger import Logger
from ..plugins.model import ModelFactory
from ..plugins.reference import ReferenceSource
from ..plugins.simulator import Simulator

ENTRY_POINT_GROUP = "zooframe"
DISABLE_ENV = "ZOOFRAME_DISABLE_EXTERNAL_PLUGINS"
BUILTIN_PROVIDER = "zooframe"

CATEGORIES = {"simulator": "register_simulators", "reference": "register_references",
              "estimator": "register_estimators", "model": "register_models", "logger": "register_loggers"}
# where each kind's config sits in an experiment config; "*" is any item of a list
SECTIONS = {"simulator": ("simulator",), "reference": ("reference",), "estimator": ("estimator",),
            "model": ("model",), "logger": ("output", "loggers", "*")}


@dataclass(frozen=True)
class PluginInfo:
    category: str  # simulator | reference | estimator | model | logger
    kind: str
    cls: type
    provider: str  # the distribution (or plugin name) that registered it

    @property
    def config_cls(self):
        return self.cls.Config

    @property
    def version(self) -> str | None:
        """The installed version of the providing package (None for an in-process plugin)."""
        try:
            return importlib.metadata.version(self.provider)
        except importlib.metadata.PackageNotFoundError:
            return None

    def as_dict(self) -> dict[str, str | None]:
        return {"category": self.category, "kind": self.kind, "class": f"{self.cls.__module__}.{self.cls.__qualname__}",
                "provider": self.provider, "version": self.version}


@dataclass(frozen=True)
class LoadFailure:
    provider: str
    error: str


def external_loading_enabled() -> bool:
    return os.environ.get(DISABLE_ENV, "").strip().lower() not in {"1", "true", "yes", "on"}


class Registry:
    """All plugins known to this process, by category and ``kind``."""

    def __init__(self, load_external: bool | None = None, plugins: dict[str, Any] | None = None):
        self.pm = pluggy.PluginManager(hookspecs.PROJECT)
        self.pm.add_hookspecs(hookspecs)
        self.failures: list[LoadFailure] = []
        self._providers: dict[str, str] = {}
        self._installed: set[str] = set()  # the providers loaded through entry points
        self._add(builtins, BUILTIN_PROVIDER)
        if load_external if load_external is not None else external_loading_enabled():
            self._load_entry_points()
        for name, plugin in (plugins or {}).items():
            self._add(plugin, name)
        self.pm.check_pending()
        self._plugins = self._collect()

    # --- loading ------------------------------------------------------------------------------
    def _add(self, plugin: ModuleType | object, provider: str) -> None:
        name = self.pm.register(plugin, name=provider if provider not in self._providers.values() else None)
        self._providers[name] = provider

    def _load_entry_points(self) -> None:
        for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
            provider = ep.dist.name if ep.dist is not None else ep.name
            try:
                self._add(ep.load(), provider)
                self._installed.add(provider)
            except Exception as exc:  # a broken plugin must not take the others down
                self._fail(provider, f"{type(exc).__name__}: {exc}")

    def _fail(self, provider: str, error: str) -> None:
        self.failures.append(LoadFailure(provider, error))
        warnings.warn(f"zooframe plugin {provider!r} failed to load: {error}", stacklevel=3)

    def _collect(self) -> dict[tuple[str, str], PluginInfo]:
        found: dict[tuple[str, str], PluginInfo] = {}
        for category, hook_name in CATEGORIES.items():
            # in registration order: the built-ins first, so that a kind a package repeats is the package's failure
            for impl in getattr(self.pm.hook, hook_name).get_hookimpls():
                provider = self._providers.get(impl.plugin_name, impl.plugin_name)

                def register(cls: type, _category=category, _provider=provider) -> None:
                    info = _checked(cls, _category, _provider)
                    if (key := (_category, info.kind)) in found:
                        raise DuplicateKindError(
                            f"{_category} kind {info.kind!r} is registered twice: by {found[key].provider!r} "
                            f"({found[key].cls.__qualname__}) and by {_provider!r} ({cls.__qualname__})"
                        )
                    found[key] = info

                try:
                    impl.function(register=register)
                except Exception as exc:
                    # an installed package's mistake, a kind that another one has too included, must not
                    # take the others down; a duplicate kind passed in by code is its author's to see
                    if provider == BUILTIN_PROVIDER or (isinstance(exc, DuplicateKindError)
                                                        and provider not in self._installed):
                        raise
                    self._fail(provider, f"{type(exc).__name__}: {exc}")
        return found

    # --- queries ------------------------------------------------------------------------------
    def plugins(self, category: str | None = None) -> list[PluginInfo]:
        return sorted((p for p in self._plugins.values() if category in (None, p.category)),
                      key=lambda p: (p.category, p.kind))

    def kinds(self, category: str) -> list[str]:
        return [p.kind for p in self.plugins(category)]

    def get(self, category: str, kind: str) -> PluginInfo:
        try:
            return self._plugins[(category, kind)]
        except KeyError:
            raise PluginError(f"unknown {category} kind {kind!r}; known: {', '.join(self.kinds(category))}") from None

    def create(self, category: str, config, **kwargs) -> Plugin:
        """Instantiate the ``category`` plugin that ``config`` (its config model) names."""
        return self.get(category, config.kind).cls(config, **kwargs)

    # --- in another process -------------------------------------------------------------------
    def portable(self) -> tuple[PluginInfo, ...]:
        """The plugins beyond the built-ins, picklable (their classes travel by reference): what a
        worker process rebuilds this registry from with :meth:`of`, never consulting its own."""
        return tuple(p for p in self.plugins() if p.provider != BUILTIN_PROVIDER)

    @classmethod
    def of(cls, plugins: tuple[PluginInfo, ...]) -> Registry:
        """The built-ins and ``plugins`` (from :meth:`portable`), with no entry points loaded."""
        providers: dict[str, list[PluginInfo]] = {}
        for info in plugins:
            providers.setdefault(info.provider, []).append(info)
        return cls(load_external=False, plugins={name: _Classes(tuple(infos)) for name, infos in providers.items()})


class _Classes:
    """A plugin that registers classes given to it: a registry rebuilt by :meth:`Registry.of`."""

    def __init__(self, infos: tuple[PluginInfo, ...]):
        self.infos = infos

    def _register(self, category: str, register) -> None:
        for info in self.infos:
            if info.category == category:
                register(info.cls)

    @hookspecs.hookimpl
    def register_simulators(self, register) -> None:
        self._register("simulator", register)

    @hookspecs.hookimpl
    def register_references(self, register) -> None:
        self._register("reference", register)

    @hookspecs.hookimpl
    def register_estimators(self, register) -> None:
        self._register("estimator", register)

    @hookspecs.hookimpl
    def register_models(self, register) -> None:
        self._register("model", register)

    @hookspecs.hookimpl
    def register_loggers(self, register) -> None:
        self._register("logger", register)


def base_class(category: str) -> type[Plugin]:
    return {"simulator": Simulator, "reference": ReferenceSource, "estimator": Estimator,
            "model": ModelFactory, "logger": Logger}[category]


def _checked(cls: Any, category: str, provider: str) -> PluginInfo:
    base = base_class(category)
    if not (isinstance(cls, type) and issubclass(cls, base)):
        raise PluginError(f"{provider!r} registered {cls!r} as a {category}, but it is not a subclass of "
                          f"zooframe.{base.__name__}")
    try:
        kind = plugin_kind(cls)
    except TypeError as exc:
        raise PluginError(f"{provider!r}: {exc}") from None
    missing = missing_methods(cls, base)
    if missing:
        raise PluginError(f"{provider!r} registered {cls.__qualname__} as {category} {kind!r}, but it does not "
                          f"implement {'; '.join(missing)} (required of every zooframe.{base.__name__})")
    return PluginInfo(category, kind, cls, provider)


_default: Registry | None = None


def get_registry(reload: bool = False) -> Registry:
    """The process-wide registry (built on first use)."""
    global _default
    if _default is None or reload:
        _default = Registry()
    return _default


def resolve(category: str, config: PluginConfig | dict, registry: Registry | None = None) -> PluginSpec:
    """The registered class of a plugin config (or of its JSON form, validated here)."""
    info = (registry or get_registry()).get(category, config["kind"] if isinstance(config, dict) else config.kind)
    return PluginSpec(info.cls, info.config_cls.model_validate(config) if isinstance(config, dict) else config)
