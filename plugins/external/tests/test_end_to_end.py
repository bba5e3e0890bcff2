"""Training through the external solvers: a correction of the first-order solver, learned from
zooframe's finer second-order Burgers reference, beats the uncorrected solver on held-out cases."""

import pytest
from external_solvers import solver_command

import zooframe
import zooframe_external.plugin
from zooframe.builtins.simulators.burgers import Burgers, BurgersConfig
from zooframe.plugins.reference import SimulatorReference

HORIZON = 20


@pytest.fixture(scope="session")
def reference_file(tmp_path_factory):
    sim = Burgers(BurgersConfig(kind="burgers", resolution=16, train_viscosities=[0.01, 0.02, 0.04],
                                test_viscosities=[0.015, 0.03]))
    source = SimulatorReference.of(sim)
    sets = source.cases()
    cases = sets["train"] + sets["test"]
    path = tmp_path_factory.mktemp("reference") / "burgers16.npz"
    return zooframe.write_reference_file(
        path, source.trajectories(cases, HORIZON).numpy(), [c.name for c in cases],
        [split for split, members in sets.items() for _ in members], {"nu": [c.params["nu"] for c in cases]},
        features=source.features(cases).numpy(), channels=["u"])


def registry():
    return zooframe.Registry(load_external=False, plugins={"zooframe-external": zooframe_external.plugin})


def config(command, mode, reference, steps=20, lr=0.03, evaluation_steps=HORIZON):
    return {
        "name": f"external-{mode}",
        "simulator": {"kind": "external", "command": command, "channels": ["u"], "spatial_shape": [16], "mode": mode},
        "reference": {"kind": "file", "path": str(reference)},
        "model": {"kind": "conv", "hidden_channels": 4, "kernel_size": 3, "depth": 0, "padding": "circular"},
        "estimator": {"kind": "cge", "scheme": "forward"},
        "training": {"mode": "zo", "steps": steps, "unroll": 3, "horizon": HORIZON, "optimizer": {"lr": lr}},
        "evaluation": {"steps": evaluation_steps},
        "execution": {"threads": 1},
        "output": {"progress": False},
    }


@pytest.mark.parametrize("solver, mode, steps, lr, evaluation_steps", [
    ("c", "batch", 20, 0.03, HORIZON),
    ("c", "persistent", 20, 0.03, HORIZON),
    # slow: a process per row (126 rows per solver call), a NumPy start-up per call; the other modes
    # of both solvers run in the fast tier
    pytest.param("c", "case", 10, 0.05, 10, marks=pytest.mark.slow),
    pytest.param("python", "batch", 10, 0.05, 10, marks=pytest.mark.slow),
    ("python", "persistent", 20, 0.03, HORIZON),
])
def test_training_through_the_external_solver_corrects_it(solvers, reference_file, tmp_path, solver, mode, steps,
                                                         lr, evaluation_steps):
    cfg = config(solver_command(solvers[solver], mode), mode, reference_file, steps, lr, evaluation_steps)
    result = zooframe.run(cfg, output=tmp_path / "run", registry=registry())
    ev = result.summary["evaluation"]
    assert result.summary["status"] == "completed" and ev["split"] == "test" and len(ev["cases"]) == 2
    print(f"{solver} {mode}: corrected/src MAE {ev['corrected_over_src']:.3f} ({ev['corrected']['mae_mean']:.4f} / "
          f"{ev['src']['mae_mean']:.4f}), {result.summary['queries_total']} queries, {result.summary['wall_s']:.2f} s")
    assert ev["corrected"]["mae_mean"] < 0.9 * ev["src"]["mae_mean"], ev
    result.experiment.simulator.close()
