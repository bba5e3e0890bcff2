"""The hooks through which plugins, built-ins included, register their classes.

A plugin module implements any of these with ``@zooframe.hookimpl`` and calls ``register``
once per class::

    @zooframe.hookimpl
    def register_simulators(register):
        register(MySimulator)
"""

from __future__ import annotations

from collections.abc import Callable

import pluggy

PROJECT = "zooframe"

hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


@hookspec
def register_simulators(register: Callable[[type], None]) -> None:
    """Register :class:`zooframe.Simulator` subclasses."""


@hookspec
def register_references(register: Callable[[type], None]) -> None:
    """Register :class:`zooframe.ReferenceSource` subclasses."""


@hookspec
def register_estimators(register: Callable[[type], None]) -> None:
    """Register :class:`zooframe.Estimator` subclasses."""


@hookspec
def register_models(register: Callable[[type], None]) -> None:
    """Register :class:`zooframe.ModelFactory` subclasses."""


@hookspec
def register_loggers(register: Callable[[type], None]) -> None:
    """Register :class:`zooframe.plugins.logger.Logger` subclasses."""
