"""The ``zooframe`` command line. User errors print one clear message and exit with code 2."""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .plugins import stops
from .plugins.errors import ConfigError, ZooframeError

EXIT_USER_ERROR = 2
CONFIG_HELP = "a config file (JSON, YAML or TOML, by its extension), or - to read it (JSON or YAML) from standard input"


def add_set_option(parser: argparse.ArgumentParser) -> None:
    """``--set PATH=VALUE`` (repeatable) on a command that reads a config; :func:`overrides_of` reads it."""
    parser.add_argument("--set", action="append", default=[], metavar="PATH=VALUE",
                        help="change one field of the config before it is validated, e.g. --set training.steps=200 or "
                        "--set training.optimizer='{\"name\": \"sgd\", \"lr\": 0.1}' (VALUE is read as JSON, else "
                        "as a string); repeatable, a later one of the same path wins")


def overrides_of(args: argparse.Namespace) -> dict[str, Any]:
    """The ``--set`` overrides of a command's arguments, for ``load_config(..., overrides=)``."""
    from .config.files import parse_sets

    return parse_sets(getattr(args, "set", None))


def positive_int(text: str) -> int:
    """argparse type of --steps: 0 or a negative count is refused, not taken as the default."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1 (got {value})")
    return value


def _emit(data: Any, as_json: bool, text: str) -> None:
    print(json.dumps(data, indent=2) if as_json else text)


def cmd_plugins(args) -> int:
    from .config.registry import get_registry
    from .runs.outputs import PLUGINS_VERSION

    reg = get_registry()
    rows = [p.as_dict() for p in reg.plugins()]
    failures = [{"provider": f.provider, "error": f.error} for f in reg.failures]
    lines = [f"{r['category']:<10} {r['kind']:<16} {r['provider']} {r['version'] or '(in process)'}" for r in rows]
    lines += [f"failed     {f['provider']}: {f['error']}" for f in failures]
    _emit({"format_version": PLUGINS_VERSION, "plugins": rows, "failures": failures}, args.json, "\n".join(lines))
    return 0


def cmd_schema(args) -> int:
    from .config.registry import Registry, get_registry
    from .config.schemas import build_schemas, write_schemas
    from .runs.outputs import output_schemas

    registry = get_registry() if args.all else Registry(load_external=False)
    paths = write_schemas(args.output, {**build_schemas(registry), **output_schemas()})
    providers = sorted({p.provider for p in registry.plugins()})
    text = "\n".join([f"wrote {p}" for p in paths] + [f"plugins from: {', '.join(providers)}"])
    _emit({"written": [str(p) for p in paths], "providers": providers}, args.json, text)
    return 0


def cmd_validate(args) -> int:
    from .config.sections import load_config, source_label
    from .runs.experiment import preflight
    from .runs.outputs import VALIDATE_VERSION

    label = source_label(args.config)
    try:
        config = load_config(args.config, overrides=overrides_of(args))
        problems = preflight(config)
        if problems:
            raise ConfigError(problems, label)
    except ConfigError as exc:
        if args.json:
            print(json.dumps({"format_version": VALIDATE_VERSION, "valid": False, "errors": exc.problems}))
        else:
            for p in exc.problems:
                print(f"{label}: {p}", file=sys.stderr)
        return EXIT_USER_ERROR
    _emit({"format_version": VALIDATE_VERSION, "valid": True, "config": config.to_json()}, args.json,
          f"{label}: valid")
    return 0


def _held_out_line(ev: dict[str, Any]) -> str:
    """The headline metric of a held-out evaluation (a summary of format 1 has MAE's alone)."""
    from .core.metrics import METRICS
    from .runs.evaluation import headline

    head = headline(ev)
    return (f"held-out {METRICS[head['metric']].label} over {ev['steps']} steps ({ev['split']}): corrected "
            f"{head['corrected']:.4g}, uncorrected {head['src']:.4g} (ratio {head['corrected_over_src']:.3f})")


def cmd_run(args) -> int:
    from .runs.folder import log_to_stderr, run

    log_to_stderr()
    result = run(args.config, output=args.output, progress=False if (args.quiet or args.json) else None,
                 resume=args.resume, force=args.force, overrides=overrides_of(args))
    ev = result.summary["evaluation"]
    done = f"{result.summary['resumed']}\n" if "resumed" in result.summary else ""
    config = result.experiment.config
    text = (f"{done}run folder: {result.dir}\n"
            f"trained ({config.training.mode}) on the loss {result.experiment.loss.describe()}\n{_held_out_line(ev)}")
    _emit({"run_dir": str(result.dir), **result.summary}, args.json, text)
    return 0


def budget(text: str):
    """argparse type of --budget: steps=N, seconds=S or calls=C."""
    from .runs.compare import Budget

    try:
        return Budget.parse(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def cmd_compare(args) -> int:
    from .config.sections import load_config
    from .runs.compare import compare

    config = load_config(args.config, overrides=overrides_of(args))
    table = compare(config, budget=args.budget, seeds=args.seeds, output=args.output, resume=args.resume,
                    force=args.force, log=None if args.quiet else lambda line: print(line, file=sys.stderr, flush=True))
    _emit(table.as_dict(), args.json, table.text())
    return 0


def cmd_sweep(args) -> int:
    from .runs.sweep import sweep, table

    result = sweep(args.config, args.space, trials=args.trials, jobs=args.jobs, backend=args.backend,
                   output=args.output, overrides=overrides_of(args), verbose=not (args.quiet or args.json))
    best = result["best"]
    if best is None:
        text = f"{table(result)}\nno trial completed; sweep folder: {result['sweep_dir']}"
    else:
        test = best["test"]
        text = (f"{table(result)}\n{result['objective']}; validation cases: {', '.join(result['validation']['cases'])}"
                f"\nbest: trial {best['number']}, validation {best['validation']:.4g}, {test['split']} "
                f"{test['corrected_over_src']:.4g}\nbest config: {Path(result['sweep_dir']) / best['config_file']}"
                f"\nsweep folder: {result['sweep_dir']}")
    _emit(result, args.json, text)
    return 0 if best is not None else 1


def cmd_evaluate(args) -> int:
    from .runs.folder import evaluate_run

    ev = evaluate_run(args.run_dir, split=args.split, steps=args.steps)
    _emit(ev, args.json, _held_out_line(ev))
    return 0


def cmd_export(args) -> int:
    from .runs.export import export_correction
    from .runs.folder import SPARSE_FILE, load_run

    path = Path(args.output or Path(args.run_dir) / SPARSE_FILE)
    with load_run(args.run_dir) as exp:
        info = export_correction(exp, path)
    text = (f"wrote {path}: {info['nonzeros']} of {info['parameters']} weights non-zero, "
            f"{info['sparse_bytes']} bytes instead of {info['dense_bytes']} dense")
    _emit({"file": str(path), **info}, args.json, text)
    return 0


def cmd_reference_export(args) -> int:
    from .runs.reference_export import export_reference

    info = export_reference(args.config, args.file, steps=args.steps)
    splits = ", ".join(f"{n} {s}" for s, n in info["splits"].items())
    text = f"wrote {info['file']}: {info['cases']} cases ({splits}), {info['steps']} steps each, from {info['source']}"
    _emit(info, args.json, text)
    return 0


def cmd_check(args) -> int:
    from .config.registry import resolve
    from .config.sections import load_config
    from .plugins.testing import check_simulator
    from .runs.outputs import CHECK_VERSION

    sim, kind = None, ""
    try:  # with --json, a kit that cannot run is a JSON document too
        config = load_config(args.config)
        kind = config.simulator.kind
        try:
            sim = resolve("simulator", config.simulator).build(device=config.execution.device)
            source = resolve("reference", config.reference).build(sim, device=config.execution.device)
        except ZooframeError:
            raise
        except Exception as exc:  # the plugin's own error while it is built: name the plugin
            what = f"reference source {config.reference.kind!r}" if sim is not None else f"simulator {kind!r}"
            raise ZooframeError(f"the {what} could not be built: {type(exc).__name__}: {exc}") from exc
        report = check_simulator(sim, reference=source, raise_on_failure=False)
    except ZooframeError as exc:
        if not args.json:
            raise
        print(json.dumps({"format_version": CHECK_VERSION, "simulator": kind, "passed": [], "skipped": {},
                          "failures": [], "error": str(exc)}, indent=2))
        return EXIT_USER_ERROR
    finally:
        if sim is not None:
            sim.close()
    data = {"format_version": CHECK_VERSION, "simulator": report.simulator, "passed": report.passed, "skipped": report.skipped,
            "failures": [vars(f) for f in report.failures]}
    _emit(data, args.json, report.text())
    return 1 if report.failures else 0


def cmd_new_plugin(args) -> int:
    from .config.registry import get_registry
    from .plugins.scaffold import new_plugin, plugin_name

    installed = {p.kind: p.provider for p in get_registry().plugins("simulator")}
    name = plugin_name(args.name, taken=installed)
    root, written = new_plugin(name, args.output, taken=installed)
    renamed = [f"the plugin name {args.name!r} became {name!r} (the config kind and module name take _, not -)",
               ""] if name != args.name else []
    examples = f"{root}/examples/{name}"
    text = "\n".join(renamed + [f"wrote {p}" for p in written] + [
        "", f"next: pip install -e \"{root}[test]\" && python -m pytest -q {root}",
        f"then: zooframe run {examples}_pretrain.json && zooframe run {examples}.json   (supervised pre-training, "
        "then the solver in the loop; docs/writing-a-plugin.md)"])
    _emit({"name": name, "root": str(root), "written": [str(p) for p in written]}, args.json, text)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="zooframe", description="Train networks through black-box simulators "
                                     "with zeroth-order gradient estimates.")
    sub = parser.add_subparsers(dest="command", required=True)

    def add(name, func, help):
        p = sub.add_parser(name, help=help, description=help)
        p.add_argument("--json", action="store_true", help="machine-readable output on stdout only")
        p.set_defaults(func=func)
        return p

    add("plugins", cmd_plugins, "list the registered plugins")
    p = add("schema", cmd_schema, "write the JSON Schemas of the config (for editors: point a config's "
            '"$schema" at experiment.schema.json) and of the output documents (summary.json, metrics.jsonl lines, '
            "evaluation.json, the --json documents)")
    p.add_argument("--output", default="schemas", help="folder (default: schemas)")
    p.add_argument("--all", action="store_true", help="include every installed plugin (default: the built-ins only)")
    p = add("validate", cmd_validate, "check a config file and explain every error: its fields, the case sets and "
            "steps its task offers, its run folder")
    p.add_argument("config", help=CONFIG_HELP)
    add_set_option(p)
    p = add("run", cmd_run, "train and evaluate an experiment")
    p.add_argument("config", help=CONFIG_HELP)
    add_set_option(p)
    p.add_argument("--output", help="run folder (default: the config's output.dir)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--resume", action="store_true", help="continue a stopped run from its checkpoint (a completed run "
                   "is left as it is)")
    p.add_argument("--force", action="store_true", help="replace the run a folder holds (another experiment, or "
                   "this one stopped or completed)")
    p = add("compare", cmd_compare, "the baseline ladder on a config's task: SRC (no correction), NON, NOG, ZO-SOL "
            "(the config's estimator) and FO-SOL (differentiable simulators), from the same initial weights under one "
            "budget; prints their held-out metric, simulator calls and wall time, and which pays off")
    p.add_argument("config", help=CONFIG_HELP)
    add_set_option(p)
    p.add_argument("--budget", type=budget, help="what each method may spend in training: steps=N, seconds=S (wall "
                   "time) or calls=C (simulator calls; NON then trains NOG's steps) (default: steps=training.steps)")
    p.add_argument("--seeds", type=positive_int, default=1, help="training seeds per method, from training.seed on; "
                   "the table gives the spread over them, and a difference within it is a tie (default: 1)")
    p.add_argument("--output", help="compare folder, one run folder per method and seed (default: the config's "
                   "output.dir for the name NAME-compare)")
    p.add_argument("--quiet", action="store_true", help="no line per run on stderr")
    p.add_argument("--resume", action="store_true", help="continue a stopped compare: each run continues from its "
                   "checkpoint, completed ones are kept")
    p.add_argument("--force", action="store_true", help="replace the runs of an earlier compare in the folder")
    p = add("sweep", cmd_sweep, "search a config's settings with Optuna (pip install 'zooframe[sweep]'): trials "
            "selected on validation cases, the best one evaluated once on the test split; prints the trials, writes "
            "the best config")
    p.add_argument("config", help=CONFIG_HELP)
    p.add_argument("space", help="the search space: a JSON, YAML or TOML file of config paths and distributions, e.g. "
                   "training.optimizer.lr: {log_uniform: [1.0e-4, 1.0e-1]}, model.hidden_channels: {choice: [8, 16]} "
                   "(also uniform: [low, high], int: [low, high])")
    add_set_option(p)
    p.add_argument("--trials", type=positive_int, default=20, help="trials in all, those of an earlier run of this "
                   "sweep included (default: 20)")
    p.add_argument("--jobs", type=positive_int, default=1, help="trials at a time, each in a process (or Ray task) "
                   "of its own (default: 1)")
    p.add_argument("--backend", choices=("local", "ray"), default="local", help="local: processes on this machine; "
                   "ray: tasks on Ray, joining execution.ray.address (every node must see the sweep folder)")
    p.add_argument("--output", help="sweep folder, continued when it holds this sweep (default: the config's "
                   "output.dir for the name NAME-sweep)")
    p.add_argument("--quiet", action="store_true", help="no line per trial on stderr")
    p = add("evaluate", cmd_evaluate, "re-evaluate a finished run on held-out cases")
    p.add_argument("run_dir")
    p.add_argument("--split", help="case set (default: the config's evaluation.split)")
    p.add_argument("--steps", type=positive_int, help="rollout length (default: the config's evaluation.steps)")
    p = add("export", cmd_export, "write a run's correction network with only its non-zero weights")
    p.add_argument("run_dir")
    p.add_argument("--output", help="file (default: RUN_DIR/model.sparse.pt)")
    p = add("check", cmd_check, "run the conformance kit (zooframe.testing) on a config's simulator and reference")
    p.add_argument("config", help=CONFIG_HELP)
    p = add("new-plugin", cmd_new_plugin, "write a simulator plugin package to start from (docs/writing-a-plugin.md)")
    p.add_argument("name", help="the plugin's config kind, e.g. heat1d (a - becomes _: my-code is my_code)")
    p.add_argument("--output", help="folder (default: ./zooframe-NAME)")
    p = sub.add_parser("reference", help="reference files (see docs/writing-a-plugin.md)")
    ref = p.add_subparsers(dest="action", required=True)
    p = ref.add_parser("export", help="write a config's reference into a reference file (.npz, .h5)",
                       description="Write every case set of the config's reference source into FILE, in "
                       "zooframe's reference layout, for another code's run to read with "
                       '"reference": {"kind": "file", "path": FILE}.')
    p.add_argument("config", help=CONFIG_HELP)
    p.add_argument("file")
    p.add_argument("--steps", type=positive_int, help="frames after the initial state (default: the longer of "
                   "training.horizon and evaluation.steps)")
    p.add_argument("--json", action="store_true", help="machine-readable output on stdout only")
    p.set_defaults(func=cmd_reference_export)
    return parser



def _format_warning(message, category, filename, lineno, line=None) -> str:
    return f"zooframe: warning: {message}\n"  # a user reads one line, not the source line that warned


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    own = threading.current_thread() is threading.main_thread()  # signal handlers live in the main thread
    previous = stops.install() if own else {}
    formatwarning, warnings.formatwarning = warnings.formatwarning, _format_warning
    try:
        return args.func(args)
    except ConfigError as exc:
        print(f"zooframe: {exc}", file=sys.stderr)
        return EXIT_USER_ERROR
    except ZooframeError as exc:
        print(f"zooframe: error: {exc}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt as exc:
        signum = getattr(exc, "signum", signal.SIGINT)
        how = str(exc) if isinstance(exc, stops.Stopped) else "interrupted"
        print(f"zooframe: {how}; what was computed so far is in the run folder", file=sys.stderr)
        return 128 + signum  # the shell's convention: 130 for Ctrl-C, 143 for SIGTERM, 129 for SIGHUP
    finally:
        stops.restore(previous)
        warnings.formatwarning = formatwarning


if __name__ == "__main__":
    sys.exit(main())
