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

from .plugins.errors import ConfigError, ZooframeError

EXIT_USER_ERROR = 2
CONFIG_HELP = "a JSON config file, or - to read it from standard input"


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
        config = load_config(args.config)
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


def cmd_run(args) -> int:
    from .runs.folder import run

    result = run(args.config, output=args.output, progress=False if (args.quiet or args.json) else None,
                 resume=args.resume, force=args.force)
    ev = result.summary["evaluation"]
    done = f"{result.summary['resumed']}\n" if "resumed" in result.summary else ""
    text = (f"{done}run folder: {result.dir}\n"
            f"held-out MAE over {ev['steps']} steps ({ev['split']}): corrected {ev['corrected']['mae_mean']:.4g}, "
            f"uncorrected {ev['src']['mae_mean']:.4g} (ratio {ev['corrected_over_src']:.3f})")
    _emit({"run_dir": str(result.dir), **result.summary}, args.json, text)
    return 0


def cmd_evaluate(args) -> int:
    from .runs.folder import evaluate_run

    ev = evaluate_run(args.run_dir, split=args.split, steps=args.steps)
    text = (f"held-out MAE over {ev['steps']} steps ({ev['split']}): corrected {ev['corrected']['mae_mean']:.4g}, "
            f"uncorrected {ev['src']['mae_mean']:.4g} (ratio {ev['corrected_over_src']:.3f})")
    _emit(ev, args.json, text)
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

    config = load_config(args.config)
    sim = resolve("simulator", config.simulator).build(device=config.execution.device)
    try:
        source = resolve("reference", config.reference).build(sim, device=config.execution.device)
        report = check_simulator(sim, reference=source, raise_on_failure=False)
    finally:
        sim.close()
    data = {"format_version": CHECK_VERSION, "simulator": report.simulator, "passed": report.passed, "skipped": report.skipped,
            "failures": [vars(f) for f in report.failures]}
    _emit(data, args.json, report.text())
    return 1 if report.failures else 0


def cmd_new_plugin(args) -> int:
    from .config.registry import get_registry
    from .plugins.scaffold import new_plugin

    installed = {p.kind: p.provider for p in get_registry().plugins("simulator")}
    root, written = new_plugin(args.name, args.output, taken=installed)
    text = "\n".join([f"wrote {p}" for p in written] + [
        "", f"next: pip install -e \"{root}[test]\" && python -m pytest -q {root} && "
        f"zooframe run {root}/examples/{args.name}.json"])
    _emit({"root": str(root), "written": [str(p) for p in written]}, args.json, text)
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
    p = add("run", cmd_run, "train and evaluate an experiment")
    p.add_argument("config", help=CONFIG_HELP)
    p.add_argument("--output", help="run folder (default: the config's output.dir)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--resume", action="store_true", help="continue a stopped run from its checkpoint (a completed run "
                   "is left as it is)")
    p.add_argument("--force", action="store_true", help="replace the run a folder holds (another experiment, or "
                   "this one stopped or completed)")
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
    p.add_argument("name", help="the plugin's config kind, e.g. heat1d")
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


class Stopped(KeyboardInterrupt):
    """SIGTERM or SIGHUP: how a scheduler (Slurm, Kubernetes), ``docker stop`` or a dropped ssh
    session stops a job. A command stops as on Ctrl-C: a run writes its weights and its summary
    (status ``interrupted``, the signal named), and keeps the checkpoint to resume from."""

    def __init__(self, signum: int):
        self.signum = signum
        super().__init__(f"stopped by {signal.Signals(signum).name}")


def _stop(signum, frame):
    raise Stopped(signum)


STOP_SIGNALS = tuple(getattr(signal, name) for name in ("SIGTERM", "SIGHUP") if hasattr(signal, name))


def _format_warning(message, category, filename, lineno, line=None) -> str:
    return f"zooframe: warning: {message}\n"  # a user reads one line, not the source line that warned


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    own = threading.current_thread() is threading.main_thread()  # signal handlers live in the main thread
    previous = {s: signal.signal(s, _stop) for s in STOP_SIGNALS} if own else {}
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
        how = str(exc) if isinstance(exc, Stopped) else "interrupted"
        print(f"zooframe: {how}; what was computed so far is in the run folder", file=sys.stderr)
        return 128 + signum  # the shell's convention: 130 for Ctrl-C, 143 for SIGTERM, 129 for SIGHUP
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
        warnings.formatwarning = formatwarning


if __name__ == "__main__":
    sys.exit(main())
