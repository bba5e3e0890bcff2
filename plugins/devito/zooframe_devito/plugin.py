"""Registration with zooframe (entry point group ``zooframe``)."""

import zooframe

from .simulator import PulseEcho


@zooframe.hookimpl
def register_simulators(register):
    register(PulseEcho)
