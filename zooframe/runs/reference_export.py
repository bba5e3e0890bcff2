"""``zooframe reference export``: write what a run's reference source gives into a reference file,
so that one code's reference (or one plugin's high-fidelity mode) can feed another code."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..config.registry import Registry
from ..config.sections import ExperimentBase, load_config
from ..plugins.atomic import probe
from ..plugins.errors import ZooframeError
from ..plugins.reference_file import write_reference_file
from .experiment import Experiment


def export_reference(config: ExperimentBase | dict | str | Path, path: str | Path, steps: int | None = None,
                     registry: Registry | None = None) -> dict:
    """Every case set of the config's reference source, ``steps`` frames after the initial state
    (default: as many as the run would use, the longer of ``training.horizon`` and
    ``evaluation.steps``). Returns what was written."""
    if not isinstance(config, ExperimentBase):
        config = load_config(config, registry)
    if steps is None:
        steps = max(config.training.horizon, config.evaluation.steps)
    elif steps < 1:
        raise ZooframeError(f"steps: at least 1 frame after the initial state (got {steps})")
    probe(path, follow_symlink=True)  # before the reference is computed, not after
    names, splits, trajectories, features = [], [], [], []
    with Experiment.build(config, registry) as exp:
        for split, cases in exp.splits.items():
            names += [c.name for c in cases]
            splits += [split] * len(cases)
            trajectories.append(exp.reference(cases, steps).double().cpu().numpy())
            features.append(exp.features(cases).double().cpu().numpy())
    cases = [c for split in exp.splits.values() for c in split]
    parameter_names = sorted({k for c in cases for k in c.params})
    parameters = {k: [float(c.params.get(k, np.nan)) for c in cases] for k in parameter_names}
    spec = exp.simulator.state_spec
    write_reference_file(path, np.concatenate(trajectories), names, splits, parameters,
                         features=np.concatenate(features), channels=spec.channels)
    return {"file": str(path), "source": exp.source.describe(), "cases": len(names), "steps": steps,
            "splits": {s: splits.count(s) for s in exp.splits}, "parameters": parameter_names}
