"""Reading a config: a JSON, YAML or TOML file (by its extension), standard input (JSON, else
YAML), and ``--set PATH=VALUE`` overrides applied before it is validated.

A parse error names the file and, where the parser gives one, the line; an override that
does not fit names the ``--set`` it came from.
"""

from __future__ import annotations

import copy
import json
import re
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..plugins.errors import ConfigError

STDIN = "-"  # as a config's path: read the config from standard input
YAML_SUFFIXES, TOML_SUFFIXES = (".yaml", ".yml"), (".toml",)
FORMATS = "JSON (.json), YAML (.yaml, .yml) or TOML (.toml)"


def source_label(source: str | Path | dict) -> str | None:
    """How errors name where a config came from: its path, ``<stdin>``, or None for a dict."""
    if isinstance(source, dict):
        return None
    return "<stdin>" if source == STDIN else str(source)


def read_data(source: str | Path, what: str = "config") -> dict[str, Any]:
    """The object a config file (or ``"-"``, standard input) holds; raises :class:`ConfigError`
    naming the file, and the line where the parser gives one."""
    label = source_label(source)
    try:
        text = sys.stdin.read() if source == STDIN else Path(source).read_text()
    except FileNotFoundError:
        raise ConfigError([f"file not found: {label}"], label) from None
    except UnicodeDecodeError:
        raise ConfigError([f"not a text file: a {what} is {FORMATS} in UTF-8"], label) from None
    except OSError as exc:
        raise ConfigError([f"cannot read {label}: {exc.strerror}"], label) from None
    suffix = "" if source == STDIN else Path(source).suffix.lower()
    fmt, parse = (("YAML", parse_yaml) if suffix in YAML_SUFFIXES else ("TOML", parse_toml) if suffix in TOML_SUFFIXES
                  else ("JSON or YAML", _json_else_yaml) if source == STDIN else ("JSON", parse_json))
    try:
        data = parse(text)
    except ValueError as exc:
        raise ConfigError([str(exc)], label) from None
    except RecursionError:
        raise ConfigError([f"not a {what}: {fmt} nested deeper than Python's parser can follow"], label) from None
    if not isinstance(data, dict):
        raise ConfigError([f"the top level must be an object (a mapping of names to values), not "
                           f"{_kind(data)}"], label)
    return data


def parse_json(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"not valid JSON: {exc.msg} at line {exc.lineno}, column {exc.colno}") from None


def parse_toml(text: str) -> Any:
    if sys.version_info >= (3, 11):
        import tomllib
    else:
        import tomli as tomllib
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:  # its message ends "(at line L, column C)"
        raise ValueError(f"not valid TOML: {exc}") from None


def parse_yaml(text: str) -> Any:
    yaml = _yaml()
    try:
        return yaml.load(text, Loader=_loader())
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise ValueError(f"not valid YAML: {exc.problem or exc.context}{where}") from None
    except yaml.YAMLError as exc:
        raise ValueError(f"not valid YAML: {exc}") from None


def _json_else_yaml(text: str) -> Any:
    """Standard input has no extension: JSON, and YAML when it is not JSON (naming both errors)."""
    try:
        return parse_json(text)
    except ValueError as not_json:
        try:
            return parse_yaml(text)
        except ValueError as not_yaml:
            raise ValueError(f"{not_json}; {not_yaml}") from None


def _yaml():
    try:
        import yaml
    except ImportError:  # a dependency of zooframe; only a broken install lacks it
        raise ValueError("reading YAML needs PyYAML: pip install pyyaml") from None
    return yaml


_LOADER = None


def _loader():
    """PyYAML's safe loader, with YAML 1.2's numbers: ``1e-3`` is a float (YAML 1.1 reads it as a
    string, as it reads a float only with a dot)."""
    global _LOADER
    if _LOADER is None:
        yaml = _yaml()

        class Loader(yaml.SafeLoader):
            pass

        Loader.yaml_implicit_resolvers = {k: [r for r in v if r[0] != "tag:yaml.org,2002:float"]
                                          for k, v in yaml.SafeLoader.yaml_implicit_resolvers.items()}
        Loader.add_implicit_resolver("tag:yaml.org,2002:float", re.compile(
            r"^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?|[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)"
            r"|\.[0-9_]+(?:[eE][-+]?[0-9]+)?|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$"), list("-+0123456789."))
        _LOADER = Loader
    return _LOADER


def with_lines(problems: list[str], source: str | Path | dict) -> list[str]:
    """``path: message`` problems of a YAML file with the line of each path's value added
    (``training.steps (line 7): ...``); as they are for any other source."""
    if isinstance(source, dict) or source == STDIN or Path(source).suffix.lower() not in YAML_SUFFIXES:
        return problems
    try:
        lines = _yaml_lines(_yaml().compose(Path(source).read_text(), Loader=_loader()))
    except Exception:  # it was read a moment ago; a file changed since is told without lines
        return problems
    out = []
    for problem in problems:
        where, sep, rest = problem.partition(": ")
        line = lines.get(where)
        out.append(f"{where} (line {line}){sep}{rest}" if sep and line else problem)
    return out


def _yaml_lines(node, prefix: str = "") -> dict[str, int]:
    """Dotted path -> line (1-based) of each value in a composed YAML document."""
    lines: dict[str, int] = {}
    if node is None:
        return lines
    if prefix:
        lines[prefix] = node.start_mark.line + 1
    if getattr(node, "tag", "").endswith(":map"):
        for key, value in node.value:
            lines.update(_yaml_lines(value, f"{prefix}.{key.value}" if prefix else str(key.value)))
            lines.setdefault(f"{prefix}.{key.value}" if prefix else str(key.value), key.start_mark.line + 1)
    elif getattr(node, "tag", "").endswith(":seq"):
        for i, value in enumerate(node.value):
            lines.update(_yaml_lines(value, f"{prefix}.{i}"))
    return lines


def _kind(value: Any) -> str:
    return {list: "a list", str: "a string", type(None): "empty"}.get(type(value), f"a {type(value).__name__}")


# ---------------------------------------------------------------- overrides

def parse_set(text: str) -> tuple[str, Any]:
    """``PATH=VALUE`` of ``--set``: the value read as JSON (a number, true, null, an object, a
    list), and as a plain string when it is not JSON. Raises ValueError."""
    path, sep, value = text.partition("=")
    path = path.strip()
    if not sep or not path:
        raise ValueError(f"--set {text}: expected PATH=VALUE, e.g. --set training.steps=200")
    parts = path.split(".")
    if not all(parts):
        raise ValueError(f"--set {text}: {path!r} is not a dotted path of field names, e.g. training.optimizer.lr")
    try:
        return path, json.loads(value)
    except json.JSONDecodeError:
        return path, value


def parse_sets(texts: list[str] | None) -> dict[str, Any]:
    """The overrides of several ``--set``s (a later one of the same path wins); ConfigError on a malformed one."""
    overrides: dict[str, Any] = {}
    problems = []
    for text in texts or []:
        try:
            path, value = parse_set(text)
        except ValueError as exc:
            problems.append(str(exc))
            continue
        overrides.pop(path, None)
        overrides[path] = value
    if problems:
        raise ConfigError(problems)
    return overrides


def set_label(path: str, value: Any) -> str:
    """How an error names an override: as it would be written on the command line."""
    return f"--set {path}={value if isinstance(value, str) else json.dumps(value)}"


def apply_overrides(data: dict[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of ``data`` with each ``"a.b.c": value`` set (sections it passes through are created
    when missing). A path through a value that is not a section is a ConfigError naming the --set."""
    data = copy.deepcopy(data)
    problems = []
    for path, value in overrides.items():
        node, parts = data, path.split(".")
        for i, part in enumerate(parts[:-1]):
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                where = ".".join(parts[:i + 1])
                problems.append(f"{set_label(path, value)}: {where} is {json.dumps(child, default=str)}, not a section with "
                                "fields; set it whole instead, e.g. --set " + where + "=VALUE")
                break
            node = child
        else:
            node[parts[-1]] = copy.deepcopy(value)
    if problems:
        raise ConfigError(problems)
    return data


def blame(problems: list[str], overrides: Mapping[str, Any]) -> list[str]:
    """Validation problems (``path: message`` lines) with the ``--set`` that caused each named in
    front of it: one whose path lies on the problem's path, or below it (a section-wide check)."""
    if not overrides:
        return problems
    out = []
    for line in problems:
        where = line.split(":", 1)[0]
        culprits = [set_label(p, v) for p, v in overrides.items()
                    if where == p or where.startswith(p + ".") or p.startswith(where + ".")]
        out.append(f"{', '.join(culprits)}: {line}" if culprits else line)
    return out
