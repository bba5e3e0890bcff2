"""zooframe-external: any executable as zooframe's black-box simulator step (see
:mod:`zooframe_external.simulator` for the file protocol)."""

from .simulator import External, ExternalConfig

__all__ = ["External", "ExternalConfig"]
__version__ = "0.1.0"
