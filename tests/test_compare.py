"""`zooframe compare`: the baseline ladder, the recommendation drawn from its table, and the training
budgets (steps, wall seconds, simulator calls) it runs the methods under."""

import copy
import json
import math
import re
from pathlib import Path

import pytest

import zooframe
from zooframe.cli import main
from zooframe.runs import compare as ladder
from zooframe.runs.compare import Budget, MethodRow, recommend

from .helpers import SMALL, small
from .test_outputs import conforms

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "burgers_zo.json"


def burgers(**training) -> dict:
    """examples/burgers_zo.json (its estimator and optimizer) shrunk to the tests' small task."""
    config = json.loads(EXAMPLE.read_text())
    config.pop("$schema")
    for section in ("simulator", "model", "evaluation", "output"):
        config[section] = copy.deepcopy(SMALL[section])
    config["training"].update({"steps": 4, "unroll": 3, "horizon": 10, "schedule": {"name": "none"}, **training})
    config["execution"]["threads"] = 1
    return config


# ---------------------------------------------------------------- the recommendation, on hand-made tables

def table(src=1.0, **methods) -> dict[str, MethodRow]:
    """``method=(metric, spread, wall_s)``."""
    rows = {"src": MethodRow("src", src, 0.0, 1.0, 0, 0.0, 0)}
    for name, (metric, spread, wall) in methods.items():
        rows[name] = MethodRow(name, metric, spread, metric / src, 100, wall, 10, runs=[{}])
    return rows


def test_non_within_the_seed_spread_of_zo_is_a_tie_that_says_the_solver_does_not_pay_off():
    rows = table(non=(0.60, 0.03, 10.0), nog=(0.90, 0.02, 30.0), zo_sol=(0.58, 0.02, 60.0))
    assert recommend(rows) == ("NON is within the seed spread of ZO-SOL at 1/6 of the time: the solver in the loop "
                               "does not pay off here")


def test_a_clear_zo_win_over_the_better_baseline_says_keep_the_solver_in_the_loop():
    rows = table(non=(0.80, 0.01, 10.0), nog=(0.65, 0.01, 30.0), zo_sol=(0.50, 0.01, 60.0))
    assert recommend(rows) == "ZO-SOL is 1.3x better than NOG: keep the solver in the loop"
    rows["fo_sol"] = MethodRow("fo_sol", 0.505, 0.01, 0.505, 0, 30.0, 10, runs=[{}])  # tied: ZO-SOL is named
    assert recommend(rows) == ("ZO-SOL is 1.3x better than NOG (within the seed spread of FO-SOL at 2x the time): "
                               "keep the solver in the loop")


def test_each_direction_of_a_clear_win():
    assert recommend(table(non=(0.40, 0.01, 10.0), nog=(0.60, 0.01, 30.0), zo_sol=(0.60, 0.01, 60.0))) == (
        "NON is 1.5x better than ZO-SOL: the solver in the loop does not pay off here")
    assert recommend(table(non=(0.80, 0.01, 10.0), nog=(0.50, 0.01, 30.0), zo_sol=(0.70, 0.01, 60.0))) == (
        "NOG is 1.4x better than ZO-SOL: keep the solver in the loop, but its gradient does not pay off here "
        "(training.mode nog)")
    fo = table(non=(0.80, 0.01, 10.0), nog=(0.70, 0.01, 30.0), zo_sol=(0.60, 0.01, 60.0), fo_sol=(0.30, 0.01, 40.0))
    assert recommend(fo).startswith("FO-SOL is 2x better than ZO-SOL: the simulator is differentiable")
    # NON tied with the best (FO-SOL), ZO-SOL clearly worse: the simplest of the tied is named, with the best
    tied = table(non=(0.62, 0.03, 10.0), nog=(0.70, 0.01, 30.0), zo_sol=(0.80, 0.01, 60.0), fo_sol=(0.60, 0.01, 20.0))
    assert recommend(tied) == ("NON is 1.29x better than ZO-SOL and within the seed spread of FO-SOL at 1/2 of the "
                               "time: the solver in the loop does not pay off here (the tie rests on NON's wider seed "
                               "spread, ±0.03 against FO-SOL's ±0.01: more seeds would settle it)")


def test_a_tie_that_only_a_noisy_method_s_spread_makes_is_flagged_for_more_seeds():
    # Karman at seconds=45 (benchmarks/results/compare_tasks.json): NON's seeds ran 0.0056-0.0145
    rows = table(src=0.0438, non=(0.00819, 0.0055, 45.0), nog=(0.00547, 0.00052, 45.0),
                 zo_sol=(0.00667, 0.00041, 45.0), fo_sol=(0.00575, 0.001, 45.0))
    assert recommend(rows).endswith("the solver in the loop does not pay off here (the tie rests on NON's wider seed "
                                    "spread, ±0.0055 against ZO-SOL's ±0.00041: more seeds would settle it)")
    rows["non"] = MethodRow("non", 0.0056, 0.0004, 0.13, 100, 45.0, 10, runs=[{}])  # as tight as the others
    assert "more seeds" not in recommend(rows)


def test_one_seed_calls_no_tie_and_nothing_better_than_src_says_so():
    assert recommend(table(non=(0.60, 0.0, 10.0), nog=(0.9, 0.0, 30.0), zo_sol=(0.58, 0.0, 60.0))).startswith(
        "ZO-SOL is 1.03x better than NON")  # 0.58 against 0.60 with no spread: a win, however small
    worse = table(non=(1.2, 0.1, 10.0), nog=(1.1, 0.1, 30.0), zo_sol=(1.05, 0.1, 60.0))
    assert recommend(worse).startswith("No method beats the uncorrected solver under this budget (the best, "
                                       "ZO-SOL, is 1.05x SRC's error)")


def test_an_error_of_zero_is_better_than_any_other_without_a_division_by_zero():
    rows = table(non=(0.80, 0.01, 10.0), nog=(0.60, 0.01, 30.0), zo_sol=(0.0, 0.0, 60.0))
    assert recommend(rows) == "ZO-SOL is better than NOG (an error of 0 against 0.6): keep the solver in the loop"


def test_a_cosine_schedule_under_a_calls_budget_decays_over_the_budget_and_resumes_the_same(tmp_path):
    """Under a budget the step count is unknown: the cosine follows the spent fraction of the budget,
    from the configured rate down to min_lr as the budget runs out, and a resumed run follows it on."""
    config = small(steps=1000, mode="nog", budget={"simulator_calls": 200}, schedule={"name": "cosine"},
                   optimizer={"name": "adam", "lr": 0.01})  # 20 calls to normalize, 6 a step: 30 steps
    config["output"]["checkpoint_every"] = 1

    def rates(run):
        return [json.loads(line)["lr"] for line in (tmp_path / run / "metrics.jsonl").open()]

    whole = zooframe.run(config, output=tmp_path / "whole").summary
    lr = rates("whole")
    calls = [json.loads(line)["sim_calls_total"] for line in (tmp_path / "whole" / "metrics.jsonl").open()]
    assert whole["stopped"] == "simulator_calls" and 20 < len(lr) < 40
    assert lr[0] == 0.01 and all(a > b for a, b in zip(lr, lr[1:]))
    # each step's rate is the cosine at the calls spent by the steps before it
    assert lr[1:] == pytest.approx([0.005 * (1 + math.cos(math.pi * c / 200)) for c in calls[:-1]])
    assert lr[-1] < 0.0005  # over training.steps (1000) it would still be at 0.01

    def stop_at_7(metrics, trainer):
        if metrics["step"] == 7:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        zooframe.run(config, output=tmp_path / "stopped", on_step=stop_at_7)
    zooframe.run(config, output=tmp_path / "stopped", resume=True)
    assert rates("stopped") == lr


def test_budget_forms_and_a_typo_names_the_flag_and_the_accepted_forms(capsys):
    assert Budget.parse("steps=100") == Budget("steps", 100)
    assert Budget.parse("seconds=1.5") == Budget("seconds", 1.5)
    assert Budget.parse("calls=2e4") == Budget("calls", 20000)
    for typo in ("step=100", "steps:100", "steps=0", "steps=1.5", "calls=lots"):
        with pytest.raises(SystemExit) as exit:
            main(["compare", str(EXAMPLE), "--budget", typo])
        assert exit.value.code == 2
        err = capsys.readouterr().err
        assert "argument --budget" in err and "steps=N, seconds=S or calls=C" in err, err
    with pytest.raises(zooframe.ConfigError, match=r"budget: 'minutes=5' is not a budget: expected steps=N"):
        zooframe.compare(small(), budget="minutes=5")


# ---------------------------------------------------------------- budgets of a run

def test_a_calls_budget_stops_after_the_step_that_reaches_it_and_a_resumed_run_counts_its_earlier_calls(tmp_path):
    config = small(steps=50, mode="nog", budget={"simulator_calls": 50})  # 20 to normalize, 6 a step
    config["output"]["checkpoint_every"] = 1
    whole = zooframe.run(config, output=tmp_path / "whole").summary
    lines = [json.loads(line) for line in (tmp_path / "whole" / "metrics.jsonl").read_text().splitlines()]
    assert whole["stopped"] == "simulator_calls" and whole["steps"] == len(lines) < 50
    assert lines[-2]["sim_calls_total"] < 50 <= lines[-1]["sim_calls_total"] == whole["simulator_calls"]
    assert all(line["sim_calls"] > 0 for line in lines)

    def stop_at_2(metrics, trainer):
        if metrics["step"] == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        zooframe.run(config, output=tmp_path / "stopped", on_step=stop_at_2)
    resumed = zooframe.run(config, output=tmp_path / "stopped", resume=True).summary
    assert (resumed["steps"], resumed["simulator_calls"], resumed["stopped"]) == (
        whole["steps"], whole["simulator_calls"], "simulator_calls")


def test_a_validation_between_steps_is_not_training_its_rollouts_stay_out_of_the_calls(tmp_path):
    """As a sweep validates its trials: held-out rollouts on the run's own simulator, inside on_step."""
    from zooframe.runs.evaluation import held_out

    config = small(steps=2, mode="nog")

    def validate(metrics, trainer):
        with trainer.aside():
            held_out(trainer.exp, "test")

    plain = zooframe.run(config, output=tmp_path / "plain").summary
    validated = zooframe.run(config, output=tmp_path / "validated", on_step=validate).summary
    assert validated["simulator_calls"] == plain["simulator_calls"] > 0

    def calls(run):
        return [json.loads(line)["sim_calls_total"] for line in (tmp_path / run / "metrics.jsonl").open()]

    assert calls("validated") == calls("plain")


def test_a_seconds_budget_stops_after_its_step_and_a_spent_one_takes_no_step_on_resume(tmp_path):
    config = small(steps=50, budget={"seconds": 1e-9})  # spent by any step: the first one stops
    done = zooframe.run(config, output=tmp_path / "run").summary
    assert (done["stopped"], done["steps"]) == ("seconds", 1)
    assert zooframe.run(small(steps=3), output=tmp_path / "steps").summary["stopped"] == "steps"
    # killed after its checkpoint at the spent budget, before evaluation: the resumed run evaluates only
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    (tmp_path / "run" / "summary.json").write_text(json.dumps({**summary, "status": "interrupted"}))
    again = zooframe.run(config, output=tmp_path / "run", resume=True).summary
    assert (again["steps"], again["stopped"], again["resumed_from_step"]) == (1, "seconds", 1)


# ---------------------------------------------------------------- the ladder

@pytest.mark.slow  # 8 small runs, and the CLI
def test_the_ladder_on_burgers_fills_every_row_and_recommends_from_the_table_it_printed(tmp_path, capsys):
    path = tmp_path / "burgers.json"
    path.write_text(json.dumps(burgers()))
    assert main(["compare", str(path), "--budget", "steps=4", "--seeds", "2", "--output", str(tmp_path / "c"),
                 "--json"]) == 0
    captured = capsys.readouterr()
    document = json.loads(captured.out)
    conforms(document, "cli-compare.schema.json")
    methods = document["methods"]
    assert list(methods) == ["src", "non", "nog", "zo_sol", "fo_sol"]  # Burgers is differentiable: FO-SOL runs
    for name, row in methods.items():
        assert row["metric_mean"] > 0 and row["ratio_to_src"] == pytest.approx(row["metric_mean"] / methods["src"]
                                                                              ["metric_mean"])
        if name != "src":
            assert [r["seed"] for r in row["runs"]] == [0, 1] and all(r["steps"] == 4 for r in row["runs"])
            assert row["metric_std"] > 0 and row["simulator_calls"] > 0 and row["wall_s"] > 0
            assert all((Path(r["run_dir"]) / "summary.json").is_file() for r in row["runs"])
    assert methods["zo_sol"]["simulator_calls"] > methods["nog"]["simulator_calls"] > methods["non"]["simulator_calls"]
    follows_from({r["label"]: (r["metric_mean"], r["metric_std"]) for r in methods.values()},
                 document["recommendation"])
    assert json.loads((tmp_path / "c" / "compare.json").read_text())["recommendation"] == document["recommendation"]
    assert "ZO-SOL seed 1: held-out mae" in captured.err  # a line per run on stderr, stdout JSON only


@pytest.mark.slow  # 6 small runs
def test_a_stopped_compare_resumes_and_a_calls_budget_gives_non_the_steps_of_nog(tmp_path, monkeypatch, capsys):
    config = burgers(steps=100)
    out = tmp_path / "c"
    started = []

    def run_then_stop(*args, **kwargs):
        started.append(kwargs["output"])
        if len(started) == 3:
            raise KeyboardInterrupt  # Ctrl-C during ZO-SOL: NOG and NON are done
        return zooframe.run(*args, **kwargs)

    monkeypatch.setattr(ladder, "run", run_then_stop)
    with pytest.raises(KeyboardInterrupt):
        zooframe.compare(config, budget="calls=300", output=out)
    monkeypatch.undo()
    path = tmp_path / "burgers.json"
    path.write_text(json.dumps(config))
    assert main(["compare", str(path), "--output", str(out), "--budget", "calls=300"]) == 2  # not over earlier runs
    assert "holds runs of an earlier compare (nog/seed0, non/seed0); continue it with --resume" in capsys.readouterr().err

    table = zooframe.compare(config, budget="calls=300", output=out, resume=True)
    assert list(table.rows) == ["src", "non", "nog", "zo_sol", "fo_sol"]
    kept = json.loads((out / "nog" / "seed0" / "summary.json").read_text())
    assert table.rows["nog"].runs[0]["wall_s"] == kept["wall_s"]  # completed: kept, not trained again
    for method in ("nog", "zo_sol", "fo_sol"):
        run = table.rows[method].runs[0]
        assert run["stopped"] == "simulator_calls" and run["simulator_calls"] >= 300 and run["steps"] < 100
    assert table.rows["non"].runs[0]["steps"] == table.rows["nog"].runs[0]["steps"]
    assert table.rows["zo_sol"].steps < table.rows["nog"].steps  # a ZO step costs more calls
    assert any("NON trains as many steps as NOG" in note for note in table.notes)
    printed = table.text()
    follows_from(printed_rows(printed), printed.splitlines()[-1].removeprefix("recommendation: "))


def printed_rows(text: str) -> dict[str, tuple[float, float]]:
    """The printed table's held-out column: ``label: (mean, spread)``."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("method"))
    rows = {}
    for line in lines[start + 1:]:
        if not line:
            break
        label, held = re.split(r"\s{2,}", line)[:2]
        mean, _, spread = held.partition(" ± ")
        rows[label] = (float(mean), float(spread or 0))
    return rows


def follows_from(rows: dict[str, tuple[float, float]], recommendation: str) -> None:
    """The recommendation, read against the table alone: no method beats SRC when the lowest mean
    is not below SRC's by more than its spread; else it names a method whose mean is within the
    seed spread of the lowest one."""
    trained = {label: row for label, row in rows.items() if label != "SRC"}
    best = min(trained.values())
    if best[0] >= rows["SRC"][0] - best[1]:
        assert recommendation.startswith("No method beats the uncorrected solver"), (rows, recommendation)
        return
    named = recommendation.split(" is ")[0]
    assert named in trained, recommendation
    assert trained[named][0] - best[0] <= max(trained[named][1], best[1]), (rows, recommendation)


def test_the_ladder_figure_draws_each_method_against_calls_and_time(tmp_path):
    pytest.importorskip("matplotlib")
    from zooframe.runs import figures

    path = figures.ladder(tmp_path / "compare.png", "mae", 0.02, {"NON": [(40, 0.2, 0.012), (40, 0.3, 0.013)],
                                                                   "ZO-SOL": [(1700, 0.6, 0.011)]})
    assert path.stat().st_size > 10_000


def test_the_nog_rung_of_a_config_with_both_jacobians_takes_the_straight_through_one():
    base = {**small(solver_jacobian="both"), "estimator": {"kind": "subspace", "scheme": "forward"}}
    budget = Budget.parse("steps=3")
    nog = ladder.method_config(base, "nog", 0, budget)
    assert nog["training"]["solver_jacobian"] == "identity"
    zooframe.load_config(nog)  # valid: nog refuses 'both'
    assert ladder.method_config(base, "zo_sol", 0, budget)["training"]["solver_jacobian"] == "both"
