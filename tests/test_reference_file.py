"""Reference data from files: the layout's round trip, its checks, and runs that read it."""

import copy
import io
import zipfile

import numpy as np
import pytest

import zooframe
from zooframe.cli import main
from zooframe.plugins.errors import ZooframeError
from zooframe.plugins.reference_file import ReferenceFileError, load_reference_file, read_arrays
from zooframe.plugins.simulator import StateSpec
from zooframe.runs.reference_export import export_reference

from .helpers import SMALL, registry_with_opaque, small

SPEC = StateSpec(("u",), (16,))


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    path = tmp_path_factory.mktemp("ref") / "burgers.npz"
    info = export_reference(SMALL, path)
    return path, info


def fields(path):
    return {k: v.copy() for k, v in read_arrays(path).items()}


@pytest.mark.parametrize("suffix", [".npz", ".h5"])
def test_export_then_load_gives_back_the_simulators_cases_and_trajectories(tmp_path, suffix):
    path = tmp_path / f"ref{suffix}"
    info = export_reference(SMALL, path)
    assert info["splits"] == {"train": 2, "test": 1} and info["steps"] == 10
    exp = zooframe.Experiment.build(zooframe.load_config(SMALL))
    data = load_reference_file(path, SPEC)
    for split, cases in exp.splits.items():
        assert [c.name for c in data.cases[split]] == [c.name for c in cases]
        assert [c.params["nu"] for c in data.cases[split]] == [c.params["nu"] for c in cases]
        rows = [data.row[c.name] for c in cases]
        np.testing.assert_allclose(data.trajectories[rows], exp.reference(cases, 10).numpy(), rtol=1e-6)
        np.testing.assert_allclose(data.features[rows], exp.features(cases).numpy(), rtol=1e-6)


def test_a_run_from_the_exported_file_matches_the_run_from_the_simulator(tmp_path, exported):
    path, _ = exported
    from_file = copy.deepcopy(SMALL)
    from_file["reference"] = {"kind": "file", "path": str(path)}
    a = zooframe.run(SMALL, output=tmp_path / "a").summary["evaluation"]
    b = zooframe.run(from_file, output=tmp_path / "b").summary["evaluation"]
    assert b["corrected"]["mae_mean"] == pytest.approx(a["corrected"]["mae_mean"], rel=1e-4)
    assert b["src"]["mae_mean"] == pytest.approx(a["src"]["mae_mean"], rel=1e-5)


@pytest.mark.parametrize("change, field, says", [
    (lambda f: f.pop("splits"), "splits", "missing"),
    (lambda f: f.update(trajectories=f["trajectories"][..., :8]), "trajectories", "expected [cases, steps + 1, 1, 16]"),
    (lambda f: f.update(trajectories=f["trajectories"].astype(np.int64)), "trajectories", "float"),
    (lambda f: f["trajectories"].__setitem__((1, 3, 0, 5), np.nan), "trajectories", "NaN or Inf in case(s) "),
    (lambda f: f.update(case_names=np.array(["a", "a", "b"])), "case_names", "repeat"),
    (lambda f: f.update(parameters=f["parameters"][:2]), "parameters", "shape [3, 2]"),
    (lambda f: f.update(channels=np.array(["v"])), "channels", "the simulator's are u"),
    (lambda f: f.update(extra=np.zeros(3)), "extra", "unknown field"),
    (lambda f: f.update(format_version=np.asarray(7)), "format_version", "version 1"),
    # issue 32: each of these was a traceback or went through to training
    (lambda f: f.update(format_version=np.asarray("one")), "format_version", "the integer 1, got <U3 of shape []"),
    (lambda f: f.update(case_names=f["case_names"][None]), "case_names", "3 strings (one per case), got <U12 of "
                                                                         "shape [1, 3]"),
    (lambda f: f.update(channels=np.zeros((1, 1))), "channels", "a list of strings, got float64 of shape [1, 1]"),
    (lambda f: f["parameters"].__setitem__((1, 0), np.nan), "parameters", "NaN or Inf in case(s) train-nu0.05"),
    (lambda f: f["features"].__setitem__((2, 0), np.inf), "features", "NaN or Inf in case(s) test-nu0.03"),
    (lambda f: f.update(trajectories=f["trajectories"].astype(object)), "trajectories", "dtype object"),
])
def test_each_problem_of_a_file_is_named_with_the_file_and_the_field(tmp_path, exported, change, field, says):
    f = fields(exported[0])
    change(f)
    bad = tmp_path / "bad.npz"
    np.savez(bad, **f)
    with pytest.raises(ReferenceFileError) as err:
        load_reference_file(bad, SPEC)
    assert str(bad) in str(err.value)
    assert any(p.startswith(f"{field}:") and says in p for p in err.value.problems), err.value.problems


def test_several_problems_are_reported_together(tmp_path, exported):
    f = fields(exported[0])
    f["case_names"] = np.array(["a", "a", "b"])
    f["channels"] = np.array(["v"])
    np.savez(tmp_path / "bad.npz", **f)
    with pytest.raises(ReferenceFileError) as err:
        load_reference_file(tmp_path / "bad.npz", SPEC)
    assert {p.split(":")[0] for p in err.value.problems} == {"case_names", "channels"}


def test_files_that_are_not_reference_files(tmp_path):
    (tmp_path / "junk.npz").write_text("not an archive")
    for path, says in [(tmp_path / "none.npz", "no such file"), (tmp_path / "junk.npz", "cannot be read as .npz")]:
        with pytest.raises(ReferenceFileError, match=says):
            load_reference_file(path, SPEC)
    objects = tmp_path / "objects.npz"
    np.savez(objects, case_names=np.array([object()], dtype=object))
    with pytest.raises(ReferenceFileError, match="cannot be read"):  # never unpickled
        load_reference_file(objects, SPEC)


def test_the_declared_shape_is_checked_before_the_trajectories_are_read(tmp_path, exported):
    """The header of the largest field is enough to refuse the file: here it declares 1000 cases
    of the wrong grid and holds no data at all."""
    bad = tmp_path / "bad.npz"
    np.savez(bad, **{k: v for k, v in fields(exported[0]).items() if k != "trajectories"})
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(header, {"descr": "<f8", "fortran_order": False, "shape": (1000, 1001, 1, 8)})
    with zipfile.ZipFile(bad, "a") as archive:
        archive.writestr("trajectories.npy", header.getvalue())
    with pytest.raises(ReferenceFileError) as err:
        load_reference_file(bad, SPEC)
    assert err.value.problems[0].startswith("trajectories: shape [1000, 1001, 1, 8], expected [cases, steps + 1, 1, 16]")


def _with(reference, **training):
    config = small(**training)
    config["reference"] = reference
    return config


def test_a_missing_split_or_too_short_trajectories_stop_before_training(tmp_path, exported):
    path, _ = exported
    config = _with({"kind": "file", "path": str(path)})
    config["evaluation"]["split"] = "validation"
    with pytest.raises(ZooframeError, match="offers no 'validation' cases.*train, test"):
        zooframe.Experiment.build(zooframe.load_config(config))
    config = _with({"kind": "file", "path": str(path)}, horizon=40)
    with pytest.raises(ZooframeError, match="training.horizon is 40.*holds 10 steps"):
        zooframe.Experiment.build(zooframe.load_config(config))


def test_a_simulator_without_a_reference_mode_is_pointed_to_the_file_source():
    class StepOnly(zooframe.Simulator):
        Config = SMALL_CONFIG

        @property
        def state_spec(self):
            return SPEC

        def step_one(self, state, case, seed):
            return state

    with pytest.raises(ZooframeError, match='no high-fidelity mode.*"kind": "file"'):
        zooframe.plugins.reference.SimulatorReference(zooframe.plugins.reference.SimulatorReferenceConfig(kind="simulator"),
                                              StepOnly(SMALL_CONFIG(kind="step_only")))


class SMALL_CONFIG(zooframe.PluginConfig):
    kind: str


def test_cli_exports_and_a_bad_file_is_one_clear_line(tmp_path, capsys):
    import json

    config = tmp_path / "config.json"
    config.write_text(json.dumps(SMALL))
    assert main(["reference", "export", str(config), str(tmp_path / "r.npz"), "--steps", "4"]) == 0
    assert "3 cases (2 train, 1 test), 4 steps each" in capsys.readouterr().out
    assert read_arrays(tmp_path / "r.npz")["trajectories"].shape == (3, 5, 1, 16)
    config.write_text(json.dumps(_with({"kind": "file", "path": str(tmp_path / "missing.npz")})))
    assert main(["run", str(config), "--output", str(tmp_path / "run")]) == 2
    assert "missing.npz" in capsys.readouterr().err


@pytest.mark.parametrize("target, says", [("folder", "it is a directory; name a file"),
                                          ("a_file/r.npz", "the folder {tmp}/a_file cannot be created (File exists)")])
def test_export_to_a_path_that_cannot_be_written_is_one_clear_error(tmp_path, capsys, monkeypatch, target, says):
    import json

    from zooframe.runs import reference_export

    def computed(*args, **kwargs):
        raise AssertionError("the reference was computed before the path was checked: that work would be lost")

    monkeypatch.setattr(reference_export.Experiment, "build", computed)
    (tmp_path / "folder").mkdir()
    (tmp_path / "a_file").write_text("")
    config = tmp_path / "config.json"
    config.write_text(json.dumps(SMALL))
    assert main(["reference", "export", str(config), str(tmp_path / target), "--steps", "2"]) == 2
    err = capsys.readouterr().err
    assert err == f"zooframe: error: cannot write {tmp_path / target}: {says.format(tmp=tmp_path)}\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a_file", "config.json", "folder"]  # nothing left behind


def test_export_of_no_steps_is_refused_not_taken_for_the_default(tmp_path):
    with pytest.raises(ZooframeError, match=r"steps: at least 1 frame after the initial state \(got 0\)"):
        export_reference(SMALL, tmp_path / "r.npz", steps=0)
    assert not (tmp_path / "r.npz").exists()


def test_the_opaque_simulator_trains_from_a_file(tmp_path, exported):
    config = _with({"kind": "file", "path": str(exported[0])}, steps=3)
    config["simulator"]["kind"] = "opaque_burgers"
    summary = zooframe.run(config, output=tmp_path, registry=registry_with_opaque()).summary
    assert summary["status"] == "completed"
