"""Each benchmark script that is cheap in its smallest form runs and writes its results file in the
format of ../shared/BENCHMARKS.md (a script no test ran once broke unseen: fipy_batching.py read an
estimator field its example no longer had). Results go to a temporary folder, never over the
committed ones; the numbers are not checked here, only that a run produces them.

A script that reads an example config runs from a copy of the repository's layout whose examples are
test-sized (a smaller grid and reference, fewer cases, steps and rollout): every other section is the
example's own, so a script that no longer fits its example still fails here, in seconds rather than
the minutes the examples' references take to generate. References go to a cache of the session's."""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
from importlib.util import find_spec
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
FORMAT = ("benchmark", "command", "date", "machine", "config", "methods", "ratios")


def _installed(module: str):
    return pytest.mark.skipif(find_spec(module) is None, reason=f"{module} is not installed")


_GCC = pytest.mark.skipif(shutil.which("gcc") is None, reason="gcc is not installed")

# test-sized examples: what replaces each section's fields in the example of that name
KARMAN = {"simulator": {"resolution": [32, 16], "reference_factor": 2, "warmup": 20,
                        "train_reynolds": [200.0, 800.0], "test_reynolds": [400.0]},
          "training": {"steps": 2, "horizon": 8}, "evaluation": {"steps": 8}}
FIPY = {"simulator": {"resolution": 16, "length": 16.0, "reference_factor": 2}, "evaluation": {"steps": 8}}
FIPY_EXAMPLES = {"fipy_spinodal": FIPY, "fipy_pretrain": FIPY}

SMOKE = [
    pytest.param("gradient_quality", ["--quick", "--q", "2"], "gradient_quality_quick", {"karman_zo_sol": KARMAN},
                 marks=[_installed("zooframe_phiflow"), pytest.mark.slow], id="gradient_quality"),
    # the full path on the test-sized example (--quick would replace its grid with a larger one)
    pytest.param("karman_accuracy", [], "karman_accuracy", {"karman_zo_sol": KARMAN},
                 marks=[_installed("zooframe_phiflow"), pytest.mark.slow], id="karman_accuracy"),
    pytest.param("external_overhead", ["--rows", "2", "--repeats", "1", "--resolution", "16"], "external_overhead",
                 None, marks=[_installed("zooframe_external"), _GCC, pytest.mark.slow], id="external_overhead"),
    pytest.param("zo_step", ["--threads", "1", "--repeats", "2", "--warmup", "1", "--windows", "1", "--profile-steps", "1"],
                 "zo_step", {"karman_subspace": KARMAN}, marks=[_installed("zooframe_phiflow"), pytest.mark.slow],
                 id="zo_step"),
    pytest.param("fipy_batching", ["--repeats", "1", "--zo-steps", "2"], "fipy_batching", FIPY_EXAMPLES,
                 marks=[_installed("zooframe_fipy"), pytest.mark.slow], id="fipy_batching"),
    pytest.param("first_run", ["--task", "heat1d", "--non-steps", "5", "--zo-steps", "2"], "first_run", None,
                 marks=pytest.mark.slow, id="first_run"),
    # the tests of device: cuda (skipped without CUDA), the main job and the step times, on the CPU
    pytest.param("gpu_check", ["--device", "cpu", "--repeats", "2", "--warmup", "1"], "gpu_check",
                 {"karman_subspace": KARMAN}, marks=[_installed("zooframe_phiflow"), pytest.mark.slow], id="gpu_check"),
]


@pytest.fixture(scope="session")
def reference_cache(tmp_path_factory) -> Path:
    """One reference cache for the session's benchmark runs (test-sized: none of the user's)."""
    return tmp_path_factory.mktemp("benchmark-references")


def _layout(folder: Path, examples: dict[str, dict]) -> Path:
    """A copy of the repository's benchmarks/ and examples/ under ``folder``, each example named in
    ``examples`` with its sections' fields replaced; returns the copy's benchmarks/."""
    root = folder / "repository"
    shutil.copytree(BENCHMARKS, root / "benchmarks", ignore=shutil.ignore_patterns("results", "__pycache__"))
    shutil.copytree(BENCHMARKS.parent / "examples", root / "examples")
    for name, sections in examples.items():
        path = root / "examples" / f"{name}.json"
        config = json.loads(path.read_text())
        for section, fields in sections.items():
            config[section].update(fields)
        path.write_text(json.dumps(config, indent=2))
    return root / "benchmarks"


def _run(script: str, args: list[str], folder: Path, examples: dict[str, dict] | None = None,
         cache: Path | None = None) -> Path:
    results = folder / "results"
    env = {key: value for key, value in os.environ.items() if key != "ZOOFRAME_DISABLE_EXTERNAL_PLUGINS"}
    env.update(ZOOFRAME_BENCHMARK_RESULTS=str(results), OMP_NUM_THREADS="1")  # plugins found as a user's run finds them
    if cache is not None:
        env["ZOOFRAME_CACHE"] = str(cache)
    scripts = BENCHMARKS if examples is None else _layout(folder, examples)
    done = subprocess.run([sys.executable, str(scripts / f"{script}.py"), *args], cwd=folder, env=env,
                          capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, f"{script}.py {' '.join(args)} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return results


def _check_block(block: dict, script: str) -> None:
    missing = [key for key in FORMAT if key not in block]
    assert not missing, f"{script}: results without {missing}"
    assert block["command"].startswith("python ") and f"{script}.py" in block["command"]
    assert block["methods"] and all(isinstance(v, dict) for v in block["methods"].values())
    assert block["ratios"], f"{script}: no ratios"
    for name, value in block["ratios"].items():
        assert isinstance(value, (int, float)) and math.isfinite(value), f"{script}: ratio {name} = {value!r}"


@pytest.mark.benchmark
@pytest.mark.parametrize("script, args, name, examples", SMOKE)
def test_benchmark_runs_and_writes_its_results_file(tmp_path, reference_cache, script, args, name, examples):
    results = _run(script, args, tmp_path, examples, reference_cache)
    path = results / f"{name}.json"
    assert path.is_file(), f"{script}.py wrote {sorted(p.name for p in results.glob('*'))}, not {path.name}"
    _check_block(json.loads(path.read_text()), script)


@pytest.mark.benchmark
@pytest.mark.slow
@_installed("zooframe_fipy")
def test_materials_nde_writes_one_block_per_task_and_keeps_the_others(tmp_path, reference_cache):
    results = tmp_path / "results"
    results.mkdir()
    other = {"benchmark": "materials_nde.devito", "kept": True}
    (results / "materials_nde.json").write_text(json.dumps({"tasks": {"devito": other}}))
    _run("materials_nde", ["--task", "fipy", "--steps", "2", "--seeds", "0", "1", "--runs", str(tmp_path / "runs"),
                           "--long-rollout", "3"], tmp_path, FIPY_EXAMPLES, reference_cache)
    data = json.loads((results / "materials_nde.json").read_text())
    assert data["tasks"]["devito"] == other
    block = data["tasks"]["fipy"]
    _check_block(block, "materials_nde")
    assert {"src", "pretrain", "non", "nog", "zo_sol"} <= set(block["methods"])
    assert "zo_sol_over_src_3_steps" in block["ratios"]
    for method in ("non", "nog", "zo_sol"):  # trained once per seed, each in its own folder
        row = block["methods"][method]
        assert set(row["seeds"]) == {"0", "1"} and row["mae_std_over"] == "seeds"
        assert row["mae_mean"] == pytest.approx(sum(s["mae_mean"] for s in row["seeds"].values()) / 2)
        assert all((tmp_path / "runs" / "fipy" / method / f"seed{seed}" / "summary.json").is_file() for seed in (0, 1))


BURGERS = {"simulator": {"resolution": 16, "reference_factor": 2},
           "model": {"hidden_channels": 4, "kernel_size": 3, "depth": 0},
           "training": {"horizon": 10, "unroll": 3}, "evaluation": {"steps": 10}}


@pytest.mark.benchmark
@pytest.mark.slow
def test_compare_tasks_writes_a_block_per_task_with_the_ladder_and_its_recommendation(tmp_path, reference_cache):
    results = _run("compare_tasks", ["--smoke", "--runs", str(tmp_path / "runs")], tmp_path,
                   {"burgers_zo": BURGERS}, reference_cache)
    block = json.loads((results / "compare_tasks.json").read_text())["tasks"]["burgers"]
    _check_block(block, "compare_tasks")
    assert list(block["methods"]) == ["src", "non", "nog", "zo_sol", "fo_sol"]
    assert all(row["steps"] == 2 for method, row in block["methods"].items() if method != "src")
    assert block["recommendation"] and block["config"]["budget"] == "steps=2"


def _scaling_row(seed: int, mae: float, steps: int = 1000) -> dict:
    return {"config": {"training": {"seed": seed}}, "parameters": 608, "active": 608, "mae_100": mae,
            "mae_400": 2 * mae, "src_mae_100": 0.04, "src_mae_400": 0.14, "queries_per_step": 0, "step_s": 0.01,
            "train_s": 0.01 * steps, "steps": steps, "cosine_to_fo": {}}


@pytest.mark.benchmark
def test_karman_scaling_report_keeps_every_seed_of_rows_and_earlier_blocks(tmp_path):
    """The grid is filled over sittings: seeds trained before the rows were kept live only in the
    earlier results file's blocks, and the report must neither drop them nor the newer rows."""
    results = tmp_path / "results"
    rows = results / "karman_scaling_rows" / "608"
    rows.mkdir(parents=True)
    for label, row in {"non_seed1_equal_time": _scaling_row(1, 0.02, 50),
                       "non_seed2_equal_time": _scaling_row(2, 0.03, 50), "nog_seed0": _scaling_row(0, 0.5),
                       "fo_sol_seed0": _scaling_row(0, 0.1), "fo_sol_seed1": _scaling_row(1, 0.2)}.items():
        (rows / f"{label}.json").write_text(json.dumps(row))
    block = {"steps": 50, "parameters": 608, "active": 608, "mae_100": 0.01, "mae_400": 0.02, "queries_per_step": 0,
             "queries": 0, "step_s": 0.01, "train_s": 0.5}
    earlier = {"non_608_equal_time": {**block, "seeds": [0]},                                 # joins the rows
               "nog_608": {**block, "steps": 1000, "seeds": [0, 1, 2], "mae_100": 0.007},   # more seeds than rows
               "fo_sol_608": {**block, "steps": 1000, "seeds": [0]}}                         # rows hold its seed
    (results / "karman_scaling.json").write_text(json.dumps({"config": {"runs_trained_by": []}, "methods": earlier}))
    _run("karman_scaling", ["--report"], tmp_path)
    methods = json.loads((results / "karman_scaling.json").read_text())["methods"]
    non = methods["non_608_equal_time"]
    assert non["seeds"] == [0, 1, 2] and non["mae_100"] == pytest.approx(0.02) and non["steps"] == 50
    assert methods["nog_608"]["seeds"] == [0, 1, 2] and methods["nog_608"]["mae_100"] == 0.007
    assert methods["fo_sol_608"]["seeds"] == [0, 1] and methods["fo_sol_608"]["mae_100"] == pytest.approx(0.15)


def _resnet_row(seed: int, steps: int, mae: float = 0.01, step_s: float = 0.1) -> dict:
    return {"config": {"training": {"seed": seed}}, "parameters": 47330, "active": 47330, "mae_100": mae,
            "mae_500": 3 * mae, "src_mae_100": 0.04, "src_mae_500": 0.2, "queries_per_step": 5, "step_s": step_s,
            "sim_s": step_s / 3, "train_s": step_s * steps, "steps": steps, "cosine_to_fo": {}}


@pytest.mark.benchmark
@pytest.mark.slow
def test_karman_resnet_report_prices_what_is_not_run_and_shows_how_far_a_stopped_run_got(tmp_path):
    rows = tmp_path / "results" / "karman_resnet_rows"
    for size, label, row in (("book", "zo_sol_seed0", _resnet_row(0, 2000, 0.010, 0.2)),
                             ("book", "zo_sol_seed1", _resnet_row(1, 2000, 0.012, 0.2)),
                             ("book", "fo_sol_seed0", _resnet_row(0, 2000, 0.010)),
                             ("book", "fo_sol_seed0_equal_time", _resnet_row(0, 4000, 0.005)),
                             ("book", "nog_seed0", _resnet_row(0, 30)),  # another grid's step count
                             ("paper", "zo_sol_calibration", _resnet_row(0, 5, step_s=3.6))):
        (rows / size).mkdir(parents=True, exist_ok=True)
        (rows / size / f"{label}.json").write_text(json.dumps(row))
    (rows / "step_times.json").write_text(json.dumps({"book": {"date": "d", "non": {"step_s": 0.05, "sim_s": 0.01}}}))
    stopped = tmp_path / "repository" / "runs" / "karman_resnet" / "paper" / "fo_sol_seed0"
    stopped.mkdir(parents=True)
    (stopped / "metrics.jsonl").write_text("".join(json.dumps({"step": s, "step_s": 2.0, "sim_s": 0.5}) + "\n"
                                                   for s in (1, 2, 3)))
    results = _run("karman_resnet", ["--report"], tmp_path, {})
    data = json.loads((results / "karman_resnet.json").read_text())
    _check_block(data, "karman_resnet")
    methods, not_run = data["methods"], data["config"]["not_run"]
    assert methods["zo_sol_book"]["seeds"] == [0, 1] and methods["zo_sol_book"]["mae_500"] == pytest.approx(0.033)
    assert data["ratios"]["zo_sol_over_fo_sol_100_book"] == pytest.approx(1.1)
    assert data["ratios"]["fo_sol_equal_time_over_zo_sol_100_book"] == pytest.approx(0.5 / 1.1)
    assert not_run["zo_sol_book"]["seeds"] == [2] and not_run["nog_book"]["seeds"] == [0, 1, 2]
    assert not_run["fo_sol_book"]["seeds"] == [1, 2, 3, 4, 5]  # its extra seeds (MORE_SEEDS) are in the grid
    assert not_run["zo_sol_paper"]["hours_per_seed"] == pytest.approx(3.6 * 2000 / 3600)  # from its calibration
    assert not_run["non_book"]["step_s"] == 0.05  # timed in turns with the others
    assert not_run["nog_book"]["step_s"] is None  # never timed: no price
    assert data["interleaved_step_times"]["non_book"] == {"step_s": 0.05, "sim_s": 0.01, "date": "d"}
    assert data["config"]["in_progress"] == {"fo_sol_paper_seed0": {"steps_reached": 3, "step_s": 2.0, "sim_s": 0.5}}

