"""The package's layers import only downwards, no module imports itself round a circle, and the
module paths from before the layout still import (the same module objects)."""

from __future__ import annotations

import ast
import importlib
import warnings
from pathlib import Path

import pytest

import zooframe
from zooframe import _compat

PACKAGE = Path(zooframe.__file__).parent

# each layer and the layers it may import; cli and the package's face stand on top of them all
ALLOWED = {
    "plugins": set(),
    "builtins": {"plugins"},
    "core": {"plugins", "builtins"},
    "config": {"plugins", "builtins", "core"},
    "execution": {"plugins", "builtins", "core"},
    "runs": {"plugins", "builtins", "core", "config", "execution"},
}


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_modules(path: Path) -> set[str]:
    """Every zooframe module ``path`` imports, at the top or inside a function."""
    name, found = module_name(path), set()
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            if base.split(".")[0] != "zooframe":
                continue
            for alias in node.names:  # `from . import x` names a module when x is one
                candidate = f"{base}.{alias.name}"
                is_module = (PACKAGE.parent / Path(*candidate.split("."))).with_suffix(".py").exists() or \
                    (PACKAGE.parent / Path(*candidate.split(".")) / "__init__.py").exists()
                found.add(candidate if is_module else base)
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.split(".")[0] == "zooframe"}
    return found - {name}


def layer(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[1] in ALLOWED else None


GRAPH = {module_name(p): imported_modules(p) for p in PACKAGE.rglob("*.py")}


def test_every_layer_imports_only_the_layers_below_it():
    upward = []
    for module, imports in GRAPH.items():
        mine = layer(module)
        if mine is None:  # zooframe/__init__.py, cli.py, _compat.py: the top
            continue
        for target in imports:
            theirs = layer(target)
            if theirs != mine and theirs not in ALLOWED[mine]:
                upward.append(f"{module} -> {target}")
    assert not upward, "imports against the layering:\n" + "\n".join(sorted(upward))


def test_no_module_imports_itself_round_a_circle():
    def ancestors(module: str) -> set[str]:  # importing a.b.c runs a/__init__ and a/b/__init__ first
        parts = module.split(".")
        return {".".join(parts[:i]) for i in range(1, len(parts))}

    edges = {m: {t for t in targets if t in GRAPH} - ancestors(m) for m, targets in GRAPH.items()}
    state: dict[str, int] = {}
    circle: list[str] = []

    def visit(node: str, path: list[str]) -> bool:
        state[node] = 1
        for nxt in sorted(edges[node]):
            if state.get(nxt) == 1:
                circle.extend(path[path.index(nxt):] + [node, nxt] if nxt in path else [node, nxt])
                return True
            if nxt not in state and visit(nxt, path + [node]):
                return True
        state[node] = 2
        return False

    for module in sorted(edges):
        if module not in state and visit(module, []):
            break
    assert not circle, "import circle: " + " -> ".join(circle)


def test_the_top_level_shows_the_subpackages_and_the_cli():
    top = sorted(p.name for p in PACKAGE.iterdir() if p.name != "__pycache__" and not p.name.startswith("."))
    assert top == ["__init__.py", "_compat.py", "builtins", "cli.py", "config", "core", "execution", "plugins",
                   "py.typed", "runs"]


@pytest.mark.parametrize("old", sorted(_compat.KEPT))
def test_the_public_old_paths_import_without_a_warning(old):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert importlib.import_module(old) is importlib.import_module(_compat.KEPT[old])


@pytest.mark.parametrize("old", sorted(_compat.MOVED))
def test_a_moved_path_is_its_new_module_with_a_deprecation_warning(old):
    import sys

    sys.modules.pop(old, None)
    with pytest.warns(DeprecationWarning, match=_compat.MOVED[old].replace(".", r"\.")):
        module = importlib.import_module(old)
    assert module is importlib.import_module(_compat.MOVED[old])


def test_an_old_import_of_a_class_gives_the_same_class():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        from zooframe.estimators.cge import CGE
        from zooframe.simulator import Simulator
    assert Simulator is zooframe.Simulator and CGE is zooframe.get_registry().get("estimator", "cge").cls
