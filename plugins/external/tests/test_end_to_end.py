"""Training through the external solvers: a correction of the first-order solver, learned from
zooframe's finer second-order Burgers reference, beats the uncorrected solver on held-out cases."""

import pytest
from external_solvers import HORIZON, config, registry, solver_command

import zooframe


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
