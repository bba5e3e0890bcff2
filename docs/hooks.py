"""MkDocs hook: the pages that are generated from the repository at build time, so that they
cannot drift from what they describe.

A page asks for generated text with an HTML comment on a line of its own:

- ``<!-- zooframe:cli -->``: the ``--help`` of ``zooframe`` and of every subcommand, from the
  argparse parser in ``zooframe/cli.py``;
- ``<!-- zooframe:config-reference -->``: every field of ``schemas/experiment.schema.json`` with
  its type, default and description;
- ``<!-- zooframe:outputs-reference -->``: every key of the output documents' schemas
  (``schemas/summary.schema.json``, ``schemas/cli-run.schema.json``, ...), from the committed files;
- ``<!-- zooframe:conformance-rules -->``: the conformance kit's rules
  (``zooframe.plugins.testing.RULES``);
- ``<!-- zooframe:results NAME -->``: ``benchmarks/results/NAME.json`` (command, date, machine,
  the methods table, the ratios, figures); ``<!-- zooframe:results-rest -->``: every results
  file that the page has not shown yet.

Links to ``benchmarks/results/*.png`` outside ``docs/`` (they work on GitHub) are pointed at copies
of those figures that this hook adds to the site under ``assets/results/``. Anything it cannot do
(a marker that names no results file, a figure that does not exist) stops the build.
"""

from __future__ import annotations

import argparse
import json
import os
import posixpath
import re
import warnings
from pathlib import Path
from typing import Any

from mkdocs.exceptions import PluginError
from mkdocs.structure.files import File

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
SCHEMA = ROOT / "schemas" / "experiment.schema.json"
ASSETS = "assets/results"

MARKER = re.compile(r"^<!--\s*zooframe:(?P<what>[\w-]+)(?:\s+(?P<arg>[\w.-]+))?\s*-->\s*$", re.M)
RESULTS_LINK = re.compile(r"\]\((?P<path>(?:\.\./)+benchmarks/results/(?P<name>[\w.-]+\.png))\)")


# ---------------------------------------------------------------- hooks

def on_files(files, config):
    """Add the committed benchmark figures to the site."""
    for png in sorted(RESULTS.glob("*.png")):
        files.append(File.generated(config, f"{ASSETS}/{png.name}", abs_src_path=str(png)))
    return files


def on_page_markdown(markdown: str, page, config, files) -> str:
    src = page.file.src_uri
    shown: list[str] = []

    def replace(match: re.Match) -> str:
        what, arg = match["what"], match["arg"]
        if what == "cli":
            return cli_reference()
        if what == "config-reference":
            return config_reference()
        if what == "outputs-reference":
            return outputs_reference()
        if what == "conformance-rules":
            from zooframe.plugins.testing import RULES

            return table(["rule", "what it checks"], [[f"`{k}`", cell(v)] for k, v in RULES.items()])
        if what == "results":
            if not arg:
                raise PluginError(f"{src}: 'zooframe:results' needs a results file name")
            shown.append(arg)
            return results_section(arg, src)
        if what == "results-rest":
            rest = [p.stem for p in sorted(RESULTS.glob("*.json")) if p.stem not in shown]
            return "\n\n".join(results_section(name, src) for name in rest)
        raise PluginError(f"{src}: unknown marker 'zooframe:{what}'")

    def relink(match: re.Match) -> str:
        # the link must also work where the page is read as a file (GitHub): from docs/<page>
        expected = "../" * (src.count("/") + 1) + "benchmarks/results/" + match["name"]
        if match["path"] != expected:
            raise PluginError(f"{src}: link {match['path']} should be {expected}")
        return f"]({figure_link(match['name'], src)})"

    markdown = MARKER.sub(replace, markdown)
    return RESULTS_LINK.sub(relink, markdown)


# ---------------------------------------------------------------- helpers

def figure_link(name: str, src: str) -> str:
    if not (RESULTS / name).is_file():
        raise PluginError(f"{src}: no figure benchmarks/results/{name}")
    return posixpath.relpath(f"{ASSETS}/{name}", posixpath.dirname(src) or ".")


def cell(value: Any) -> str:
    """A table cell: numbers to 4 significant digits, '|' escaped."""
    if isinstance(value, bool):
        text = str(value).lower()
    elif isinstance(value, float):
        text = f"{value:.4g}"
    elif value is None:
        text = "null"
    elif isinstance(value, (list, tuple)):
        text = ", ".join(cell(v) for v in value)
    else:
        text = str(value)
    return text.replace("|", "\\|").replace("\n", " ")


def table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def short_scalar_list(value: Any) -> bool:
    return isinstance(value, list) and len(value) <= 6 and all(
        isinstance(v, (int, float, str, bool)) or v is None for v in value)


def shown_in_table(value: Any) -> bool:
    return not isinstance(value, (dict, list)) or short_scalar_list(value)


def dict_table(rows: dict[str, dict], first: str) -> str:
    """Rows of a dict of dicts; the columns are every key whose value fits in a cell."""
    columns: list[str] = []
    for row in rows.values():
        columns += [k for k, v in row.items() if k not in columns and shown_in_table(v)]
    body = [[f"`{name}`"] + [cell(row[c]) if c in row else "" for c in columns] for name, row in rows.items()]
    return table([first, *[f"`{c}`" for c in columns]], body)


def collapsed_json(title: str, value: Any) -> str:
    text = json.dumps(value, indent=2)
    body = "\n".join("    " + line for line in ["```json", *text.splitlines(), "```"])
    return f'??? note "{title}"\n\n{body}'


# ---------------------------------------------------------------- the CLI reference

def cli_reference() -> str:
    """The help text of the ``zooframe`` command and of each subcommand, as argparse prints it."""
    from zooframe.cli import build_parser

    old = os.environ.get("COLUMNS")
    os.environ["COLUMNS"] = "100"
    try:
        parser = build_parser()
        out = [help_block("zooframe", parser, 2)]
        for name, sub in subcommands(parser).items():
            out.append(help_block(f"zooframe {name}", sub, 2))
            for inner, subsub in subcommands(sub).items():
                out.append(help_block(f"zooframe {name} {inner}", subsub, 3))
    finally:
        if old is None:
            del os.environ["COLUMNS"]
        else:
            os.environ["COLUMNS"] = old
    return "\n\n".join(out)


def subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def help_block(title: str, parser: argparse.ArgumentParser, level: int) -> str:
    return f"{'#' * level} `{title}`\n\n```text\n{parser.format_help().rstrip()}\n```"


# ---------------------------------------------------------------- the config reference

SECTION_ORDER = ["simulator", "model", "estimator", "reference", "objective", "training", "evaluation",
                 "sparsity", "execution", "output", "name", "$schema"]


def config_reference() -> str:
    schema = json.loads(SCHEMA.read_text())
    defs = schema.get("$defs", {})
    props = schema["properties"]
    required = set(schema.get("required", []))
    order = [s for s in SECTION_ORDER if s in props] + [s for s in props if s not in SECTION_ORDER]

    scalars = [s for s in order if not section_objects(props[s], defs)]
    out = [f"Generated from `schemas/experiment.schema.json` ({schema.get('title', 'experiment')}). "
           "Required sections: " + ", ".join(f"`{s}`" for s in order if s in required) + ". "
           "Unknown fields are errors everywhere."]
    out.append("## Top-level fields\n\n" + table(
        ["field", "type", "default", "description"],
        [field_row(s, props[s], s in required, defs) for s in scalars]))
    for section in order:
        objects = section_objects(props[section], defs)
        if not objects:
            continue
        prop = props[section]
        text = [f"## `{section}`"]
        about = prop.get("description") or ""
        if section in required:
            about = (about + ". " if about else "") + "Required."
        if about:
            text.append(about[0].upper() + about[1:])
        if len(objects) > 1 or "discriminator" in json.dumps(prop):
            kinds = ", ".join(f"`{kind_of(defs[o])}`" for o in objects)
            text.append(f"Chosen by `kind`: {kinds} (the built-ins and the plugins whose schemas were written "
                        "with `zooframe schema --all`).")
            for name in objects:
                kind = kind_of(defs[name])
                text.append(object_tables(f"{section}: kind `{kind}`", name, defs, 3, prop.get("default"),
                                          f"{section}"))
        else:
            text.append(object_tables(None, objects[0], defs, 3, prop.get("default"), section))
        out.append("\n\n".join(text))
    return "\n\n".join(out)


def section_objects(prop: dict, defs: dict) -> list[str]:
    """The $defs names a section's value may be (one object, or one per kind)."""
    found: list[str] = []

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            ref = node.get("$ref")
            if ref and ref.startswith("#/$defs/"):
                name = ref.split("/")[-1]
                if defs.get(name, {}).get("type") == "object" and name not in found:
                    found.append(name)
            for key in ("anyOf", "oneOf", "allOf"):
                for sub in node.get(key, []):
                    walk(sub)

    walk(prop)
    return found


def kind_of(definition: dict) -> str:
    kind = definition.get("properties", {}).get("kind", {})
    return str(kind.get("const", kind.get("enum", ["?"])[0] if kind.get("enum") else definition.get("title")))


def object_tables(title: str | None, name: str, defs: dict, level: int, default: Any, path: str) -> str:
    """A field table for one object (at config path ``path``), then one for every object its
    fields refer to."""
    definition = defs[name]
    parts = []
    if title:
        parts.append(f"{'#' * level} {title}")
    if definition.get("description"):
        parts.append(clean(definition["description"]))
    required = set(definition.get("required", []))
    rows, nested = [], {}
    for field, prop in definition.get("properties", {}).items():
        inherited = default.get(field) if isinstance(default, dict) and field in default else None
        rows.append(field_row(field, prop, field in required, defs, inherited, definition.get("title", name)))
        for ref in section_objects(prop, defs):
            nested.setdefault(ref, []).append((f"{path}.{field}", inherited))
        for ref in item_objects(prop, defs):
            nested.setdefault(ref, []).append((f"{path}.{field}[]", None))
    parts.append(table(["field", "type", "default", "description"], rows))
    out = ["\n\n".join(parts)]
    for ref, uses in nested.items():  # an object that several fields hold gets one table
        label = ", ".join(f"`{p}`" for p, _ in uses) + f" ({defs[ref].get('title', ref)})"
        out.append(object_tables(label, ref, defs, min(level + 1, 6), uses[0][1] if len(uses) == 1 else None,
                                 uses[0][0]))
    return "\n\n".join(out)


def item_objects(prop: dict, defs: dict) -> list[str]:
    items = prop.get("items")
    return section_objects(items, defs) if isinstance(items, dict) else []


def field_row(field: str, prop: dict, required: bool, defs: dict, inherited: Any = None,
              owner: str | None = None) -> list[str]:
    if "default" in prop:
        default = prop["default"]
        shown = "see below" if isinstance(default, dict) and default else f"`{json.dumps(default)}`"
    elif required:
        shown = "required"
    elif inherited is not None:
        shown = f"`{json.dumps(inherited)}`"
    else:
        shown = factory_default(owner, field)
    description = clean(prop.get("description", "")) or "-"
    return [f"`{field}`", type_text(prop, defs), shown, description.replace("|", "\\|")]


_MODELS: dict[str, Any] | None = None


def factory_default(owner: str | None, field: str) -> str:
    """A default the schema leaves out because the code computes it (pydantic's default_factory),
    from the config class of that name when it can be imported here."""
    global _MODELS
    if _MODELS is None:
        _MODELS = {}
        try:
            import pydantic

            from zooframe.config.registry import get_registry

            with warnings.catch_warnings():  # what the plugins' solvers warn about on import
                warnings.simplefilter("ignore")
                get_registry()  # imports the installed plugins' config classes

            def walk(cls):
                for sub in cls.__subclasses__():
                    yield sub
                    yield from walk(sub)

            for cls in walk(pydantic.BaseModel):
                _MODELS.setdefault(cls.__name__, cls)
        except Exception:  # the reference still builds, with less in it
            pass
    model = _MODELS.get(owner or "")
    info = getattr(model, "model_fields", {}).get(field)
    if info is not None and info.default_factory is not None:
        value = info.default_factory()
        text = json.dumps(value, default=lambda v: v.model_dump() if hasattr(v, "model_dump") else str(v))
        if len(text) <= 120:
            return f"`{text}`"
        if isinstance(value, list):
            return f"{len(value)} entries, set in code"
    return "set in code"


def clean(text: str) -> str:
    """Sphinx roles in descriptions, e.g. :mod:`x`, as plain code."""
    return re.sub(r":\w+:`([^`]+)`", r"`\1`", text).replace("\n", " ")


def type_text(prop: dict, defs: dict) -> str:
    text = type_of(prop, defs)
    return text.replace("|", "\\|")


def type_of(prop: dict, defs: dict) -> str:
    if "$ref" in prop:
        name = prop["$ref"].split("/")[-1]
        return f"object ({defs.get(name, {}).get('title', name)})"
    if "const" in prop:
        return f"`{json.dumps(prop['const'])}`"
    if "enum" in prop:
        return " or ".join(f"`{json.dumps(v)}`" for v in prop["enum"])
    for key in ("anyOf", "oneOf"):
        if key in prop:
            options = [type_of(p, defs) for p in prop[key]]
            return " or ".join(dict.fromkeys(options))
    kind = prop.get("type", "any")
    if kind == "array":
        if "prefixItems" in prop:
            return "[" + ", ".join(type_of(p, defs) for p in prop["prefixItems"]) + "]"
        items = prop.get("items")
        return f"array of {type_of(items, defs)}" if isinstance(items, dict) else "array"
    if kind == "object" and isinstance(prop.get("additionalProperties"), dict):
        keys = prop.get("propertyNames", {}).get("enum")
        key_text = " or ".join(f"`{json.dumps(k)}`" for k in keys) if keys else "string"
        return f"object: {key_text} to {type_of(prop['additionalProperties'], defs)}"
    bounds = []
    for key, sign in (("minimum", ">="), ("exclusiveMinimum", ">"), ("maximum", "<="), ("exclusiveMaximum", "<")):
        if key in prop:
            bounds.append(f"{sign} {prop[key]}")
    for key, sign in (("minItems", "at least"), ("maxItems", "at most")):
        if key in prop:
            bounds.append(f"{sign} {prop[key]} items")
    if "pattern" in prop:
        bounds.append(f"matching `{prop['pattern']}`")
    return kind + (f" ({', '.join(bounds)})" if bounds else "")


# ---------------------------------------------------------------- the output documents

def outputs_reference() -> str:
    """One section per output schema: its keys (and whether every document has them), the keys
    a status guarantees, then the objects it refers to."""
    from zooframe.runs.outputs import DOCUMENTS

    out = []
    for name, (what, _) in DOCUMENTS.items():
        schema = json.loads((ROOT / "schemas" / name).read_text())
        defs = schema.get("$defs", {})
        parts = [f"## `{what}`", f"`schemas/{name}`: {schema['title']}."]
        if schema.get("description"):
            parts.append(clean(schema["description"]))
        if "properties" in schema:
            parts.append(key_table(schema, defs))
        else:  # one of several documents
            parts.append("One of: " + ", ".join(f"`{ref.split('/')[-1]}`" for ref in section_objects(schema, defs)) + ".")
        for rule in schema.get("allOf", []):
            condition = rule["if"]["properties"]["status"]
            statuses = condition.get("enum", [condition.get("const")])
            keys = ", ".join(f"`{k}`" for k in rule["then"]["required"])
            parts.append(f"With `status` {' or '.join(f'`{s}`' for s in statuses)}, always written: {keys}.")
        for ref, definition in defs.items():
            if definition.get("type") == "object" and "properties" in definition:
                about = f" {clean(definition['description'])}" if definition.get("description") else ""
                more = " Plugins may add keys of their own." if definition.get("additionalProperties") is True else ""
                parts.append(f"**`{ref}`**:{about}{more}\n\n" + key_table(definition, defs))
        out.append("\n\n".join(parts))
    return "\n\n".join(out)


def key_table(schema: dict, defs: dict) -> str:
    required = set(schema.get("required", []))
    rows = [[f"`{key}`", type_text(prop, defs), "yes" if key in required else "",
             clean(prop.get("description", "")).replace("|", "\\|") or "-"]
            for key, prop in schema["properties"].items()]
    return table(["key", "type", "always", "description"], rows)


# ---------------------------------------------------------------- benchmark results

STANDARD = ("benchmark", "command", "date", "machine", "config", "methods", "ratios", "figures")


def results_section(name: str, src: str) -> str:
    path = RESULTS / f"{name}.json"
    if not path.is_file():
        raise PluginError(f"{src}: no results file benchmarks/results/{name}.json")
    data = json.loads(path.read_text())
    return f"### Results: `{name}.json`\n\n" + results_block(data, src, 4)


def results_block(data: dict, src: str, level: int) -> str:
    out = []
    facts = []
    if "command" in data:
        facts.append(f"- command: `{data['command']}`")
    if "date" in data:
        facts.append(f"- date: {data['date']}")
    if isinstance(data.get("machine"), dict):
        facts.append("- machine: " + ", ".join(f"{k} {cell(v)}" for k, v in data["machine"].items()))
    for key, value in data.items():
        if key not in STANDARD and not isinstance(value, (dict, list)):
            facts.append(f"- {key}: {cell(value)}")
    if facts:
        out.append("\n".join(facts))
    if isinstance(data.get("methods"), dict) and data["methods"]:
        out.append("Methods:\n\n" + dict_table(data["methods"], "method"))
    if isinstance(data.get("ratios"), dict) and data["ratios"]:
        rows = [[f"`{k}`", cell(v)] for k, v in data["ratios"].items()]
        out.append("Ratios:\n\n" + table(["ratio", "value"], rows))
    for key, value in data.items():
        if key in STANDARD or not isinstance(value, (dict, list)):
            continue
        if key == "tasks" and isinstance(value, dict):
            for task, block in value.items():
                out.append(f"{'#' * level} Task `{task}`\n\n" + results_block(block, src, min(level + 1, 6)))
        elif isinstance(value, dict) and value and all(isinstance(v, dict) for v in value.values()):
            out.append(f"`{key}`:\n\n" + dict_table(value, "name"))
        else:
            out.append(collapsed_json(key, value))
    for figure in data.get("figures", []) or []:
        if isinstance(figure, str) and (RESULTS / figure).is_file():
            out.append(f"![{figure}]({figure_link(figure, src)})")
    if "config" in data:
        out.append(collapsed_json("config", data["config"]))
    return "\n\n".join(out)
