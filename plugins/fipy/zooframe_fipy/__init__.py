"""zooframe-fipy: FiPy's Cahn-Hilliard phase-field code as zooframe's black-box simulator step."""

from .simulator import MaterialCase, Spinodal, SpinodalConfig

__all__ = ["MaterialCase", "Spinodal", "SpinodalConfig"]
__version__ = "0.1.0"
