"""Registration with zooframe (entry point group ``zooframe``)."""

import zooframe

from .karman import Karman


@zooframe.hookimpl
def register_simulators(register):
    register(Karman)
