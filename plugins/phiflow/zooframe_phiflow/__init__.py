"""PhiFlow simulators for zooframe."""

from .karman import Karman, KarmanConfig

__all__ = ["Karman", "KarmanConfig"]
