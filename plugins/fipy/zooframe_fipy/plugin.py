"""Registration with zooframe (entry point group ``zooframe``)."""

import zooframe

from .simulator import Spinodal


@zooframe.hookimpl
def register_simulators(register):
    register(Spinodal)
