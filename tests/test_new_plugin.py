"""`zooframe new-plugin`: the skeleton installs into an environment that has only zooframe, is
found through its entry point, passes its own test (the conformance kit) and runs from JSON."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from zooframe.cli import main

ROOT = Path(__file__).resolve().parent.parent


def test_a_bad_name_or_a_used_folder_is_a_clear_error(tmp_path, capsys):
    assert main(["new-plugin", "Heat-1D", "--output", str(tmp_path / "a")]) == 2
    assert "lower-case letters" in capsys.readouterr().err
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "x").write_text("")
    assert main(["new-plugin", "heat", "--output", str(tmp_path / "b")]) == 2
    assert "is not an empty folder" in capsys.readouterr().err


@pytest.mark.parametrize("name, output, says", [
    ("abc\n", "new", "plugin name 'abc\\n': use lower-case letters"),
    ("burgers", "new", "plugin name 'burgers': the simulator kind 'burgers' is taken by zooframe, which is installed"),
    ("heat", "a_file", "{tmp}/a_file exists and is not an empty folder; choose another folder with --output"),
    ("heat", "a_file/new", "cannot write {tmp}/a_file/new: Not a directory; choose another folder with --output"),
])
def test_a_name_or_a_folder_that_cannot_be_used_is_one_clear_error(tmp_path, capsys, name, output, says):
    (tmp_path / "a_file").write_text("")
    assert main(["new-plugin", name, "--output", str(tmp_path / output)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"zooframe: error: {says.format(tmp=tmp_path)}") and err.count("\n") == 1
    assert not (tmp_path / "new").exists()


def test_a_dashed_name_becomes_the_underscored_kind_and_says_so(tmp_path, capsys):
    assert main(["new-plugin", "my-code", "--output", str(tmp_path / "p")]) == 0
    out = capsys.readouterr().out
    assert out.startswith("the plugin name 'my-code' became 'my_code'")
    assert f"zooframe run {tmp_path}/p/examples/my_code_pretrain.json && zooframe run {tmp_path}/p/examples/my_code.json" in out
    example = json.loads((tmp_path / "p" / "examples" / "my_code.json").read_text())
    assert example["simulator"]["kind"] == "my_code" and (tmp_path / "p" / "zooframe_my_code" / "plugin.py").is_file()


def test_a_name_whose_module_is_installed_is_refused(tmp_path, monkeypatch, capsys):
    (tmp_path / "zooframe_heat9").mkdir()
    (tmp_path / "zooframe_heat9" / "__init__.py").write_text("")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert main(["new-plugin", "heat9", "--output", str(tmp_path / "new")]) == 2
    assert "the module zooframe_heat9 is installed already" in capsys.readouterr().err
    assert not (tmp_path / "new").exists()


@pytest.mark.slow  # a fresh virtual environment: pip installs torch, zooframe and the skeleton
@pytest.mark.network
def test_the_skeleton_installs_alone_passes_its_test_and_runs(tmp_path):
    assert main(["new-plugin", "heat1d", "--output", str(tmp_path / "zooframe-heat1d")]) == 0
    env_dir = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(env_dir)], check=True)
    python = str(env_dir / "bin" / "python")
    env = {k: v for k, v in os.environ.items() if k not in ("ZOOFRAME_DISABLE_EXTERNAL_PLUGINS", "PYTHONPATH",
                                                            "VIRTUAL_ENV")}
    env["PATH"] = f"{env_dir / 'bin'}{os.pathsep}{env['PATH']}"

    def sh(*args, cwd=tmp_path):
        done = subprocess.run(list(args), cwd=cwd, env=env, capture_output=True, text=True)
        assert done.returncode == 0, f"{' '.join(args)}:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
        return done.stdout

    sh(python, "-m", "pip", "install", "-q", "torch==2.13.0")
    sh(python, "-m", "pip", "install", "-q", str(ROOT))
    sh(python, "-m", "pip", "install", "-q", f"{tmp_path / 'zooframe-heat1d'}[test]")
    listed = sh(str(env_dir / "bin" / "zooframe"), "plugins")
    assert "heat1d" in listed and "zooframe-heat1d" in listed and "karman" not in listed
    sh(python, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(tmp_path / "zooframe-heat1d"))
    zooframe, root = str(env_dir / "bin" / "zooframe"), tmp_path / "zooframe-heat1d"
    sh(zooframe, "run", "examples/heat1d_pretrain.json", "--quiet", cwd=root)  # as the guide says, then:
    example = json.loads((root / "examples" / "heat1d.json").read_text())
    example["training"]["steps"] = 60  # of 300: the suite's time
    (root / "short.json").write_text(json.dumps(example))
    out = sh(zooframe, "run", "short.json", "--quiet", cwd=root)  # its init: runs/heat1d_pretrain
    ratio = float(out.split("ratio ")[1].rstrip(")\n"))
    assert ratio < 0.5, out


def test_the_guide_shows_the_skeleton_as_it_is_written(tmp_path):
    """docs/writing-a-plugin.md quotes the skeleton's files; they must not drift apart."""
    root = tmp_path / "zooframe-heat1d"
    assert main(["new-plugin", "heat1d", "--output", str(root)]) == 0
    guide = (ROOT / "docs" / "writing-a-plugin.md").read_text()
    for rel in ("zooframe_heat1d/simulator.py", "zooframe_heat1d/plugin.py", "pyproject.toml",
                "tests/test_heat1d.py"):
        assert (root / rel).read_text() in guide, f"the guide's copy of {rel} is stale"
    assert len((root / "zooframe_heat1d" / "simulator.py").read_text().splitlines()) < 65  # a short skeleton
