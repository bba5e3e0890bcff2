"""Registration with zooframe (entry point group ``zooframe``)."""

import zooframe

from .simulator import External


@zooframe.hookimpl
def register_simulators(register):
    register(External)
