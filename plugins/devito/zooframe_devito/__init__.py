"""Devito (compiled finite-difference stencils) as zooframe's black box: ultrasonic pulse-echo testing."""
