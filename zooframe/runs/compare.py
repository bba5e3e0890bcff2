"""The baseline ladder (``zooframe compare``): does the solver in the loop pay off on this task?

On the config's task, each method of the ladder is trained from the same initial weights and seed
under one budget, as a normal run in a folder of its own (``COMPARE_DIR/METHOD/seedN``):

- SRC: no correction, the uncorrected solver (no run: every run's evaluation holds its error);
- NON: supervised one-step correction, no solver in the loop (``training.mode`` non);
- NOG: the solver in the loop, no solver gradient (nog);
- ZO-SOL: the solver in the loop, the config's estimator (zo);
- FO-SOL: autograd through the solver (fo), where the simulator is differentiable.

The budget is steps, wall seconds of training, or simulator calls (``training.budget``). NON
only calls the solver on reference frames (the same calls whatever its weights; a coupling may
need none), so under a calls budget it trains as many steps as NOG did with the same seed: NOG
against ZO-SOL at equal calls, NON against NOG at equal steps.

The table holds each method's held-out headline metric (mean and spread over seeds), its ratio
to SRC, its simulator calls and training wall time; :func:`recommend` reads it.
"""

from __future__ import annotations

import copy
import math
import re
import statistics
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..config.registry import Registry, get_registry
from ..config.sections import ExperimentBase, load_config, source_label
from ..plugins import atomic
from ..plugins.errors import ConfigError, ZooframeError
from . import figures
from .evaluation import headline
from .experiment import inspect_task
from .folder import CONFIG_FILE, WorseThanUncorrected, run
from .outputs import COMPARE_VERSION
from .tables import aligned

LABELS = {"src": "SRC", "non": "NON", "nog": "NOG", "zo_sol": "ZO-SOL", "fo_sol": "FO-SOL"}  # the ladder's order
MODES = {"non": "non", "nog": "nog", "zo_sol": "zo", "fo_sol": "fo"}
RUN_ORDER = ("nog", "non", "zo_sol", "fo_sol")  # NOG first: under a calls budget NON trains NOG's steps
STEP_CAP = 10**9  # training.steps under a seconds or calls budget: the budget stops training first
COMPARE_FILE, FIGURE_FILE = "compare.json", "compare.png"
BUDGET_FORMS = "steps=N, seconds=S or calls=C (e.g. steps=1000, seconds=600, calls=20000)"


@dataclass(frozen=True)
class Budget:
    """What every method of the ladder may spend: ``steps``, ``seconds`` (wall time of training) or
    ``calls`` (simulator calls, one per state a step of the code advances)."""

    kind: str
    value: float

    @classmethod
    def parse(cls, text: str) -> Budget:
        """``steps=N``, ``seconds=S`` or ``calls=C``; ValueError naming the accepted forms."""
        match = re.fullmatch(r"\s*(steps|seconds|calls)\s*=\s*([0-9.eE+]+)\s*", str(text))
        value = None
        if match:
            try:
                value = float(match[2])
            except ValueError:
                pass
        if value is None or not math.isfinite(value) or value <= 0:
            raise ValueError(f"{text!r} is not a budget: expected {BUDGET_FORMS}, with a positive number")
        if match[1] != "seconds":
            if value != int(value):
                raise ValueError(f"{text!r}: {match[1]} is a whole number (expected {BUDGET_FORMS})")
            value = int(value)
        return cls(match[1], value)

    def __str__(self) -> str:
        return f"{self.kind}={self.value:g}"

    def training(self, method: str, non_steps: int | None) -> dict[str, Any]:
        """The fields of the training section that a method's run takes from the budget."""
        if self.kind == "steps":
            return {"steps": int(self.value), "budget": {}}
        if self.kind == "calls" and method == "non":
            return {"steps": non_steps or 1, "budget": {}}
        key = "seconds" if self.kind == "seconds" else "simulator_calls"
        return {"steps": STEP_CAP, "budget": {key: self.value}}


@dataclass
class MethodRow:
    """One method of the ladder over its seeds: ``metric`` the mean of the held-out headline metric
    (lower is better), ``spread`` its standard deviation over seeds (0 with one seed)."""

    method: str
    metric: float
    spread: float
    ratio_to_src: float
    simulator_calls: float
    wall_s: float
    steps: float
    runs: list[dict[str, Any]] = field(default_factory=list)

    @property
    def label(self) -> str:
        return LABELS[self.method]

    @classmethod
    def from_runs(cls, method: str, runs: list[dict[str, Any]], src: float) -> MethodRow:
        metrics = [r["metric"] for r in runs]
        mean = statistics.fmean(metrics)
        return cls(method, mean, statistics.stdev(metrics) if len(metrics) > 1 else 0.0, mean / max(src, 1e-300),
                   *(statistics.fmean(r[key] for r in runs) for key in ("simulator_calls", "wall_s", "steps")),
                   runs=runs)


def _tied(a: MethodRow, b: MethodRow) -> bool:
    """A difference no larger than the seed spread (the larger of the two) is a tie."""
    return abs(a.metric - b.metric) <= max(a.spread, b.spread)


def _loose(pairs: list[tuple[MethodRow | None, MethodRow | None]]) -> str:
    """A caveat for the first tie among ``pairs`` that holds only through one method's wider spread
    (the gap is larger than the narrower spread): such a tie is a question more seeds would settle."""
    for a, b in pairs:
        if a is None or b is None or not _tied(a, b) or abs(a.metric - b.metric) <= min(a.spread, b.spread) * (1 + 1e-9):
            continue
        wide, narrow = (a, b) if a.spread >= b.spread else (b, a)
        return (f" (the tie rests on {wide.label}'s wider seed spread, ±{wide.spread:.2g} against {narrow.label}'s "
                f"±{narrow.spread:.2g}: more seeds would settle it)")
    return ""


def _times(a: float, b: float) -> str:
    """``a`` as a part or a multiple of ``b``: "1/6 of the time", "0.8x the time", "2.5x the time"."""
    if b <= 0 or a <= 0:
        return "the same time" if a == b else f"{a:.3g} s against {b:.3g} s"
    r = a / b
    return f"1/{round(1 / r)} of the time" if r <= 0.5 else f"{r:.2g}x the time"


def _against(a: MethodRow, b: MethodRow) -> str:
    """How ``a`` stands against ``b``: within the spread, or how many times better."""
    if _tied(a, b):
        return f"within the seed spread of {b.label} at {_times(a.wall_s, b.wall_s)}"
    if a.metric <= 0:  # an error of 0 is no multiple of another
        return f"better than {b.label} (an error of 0 against {b.metric:.3g})"
    ratio = b.metric / a.metric
    return f"{ratio:.3g}x better than {b.label}" if round(ratio, 2) != 1 else f"{ratio:.4f}x better than {b.label}"


def recommend(rows: dict[str, MethodRow]) -> str:
    """A plain recommendation from the table: the simplest of the methods tied with the best (in
    the ladder's order, NON before NOG before ZO-SOL before FO-SOL), and what that says about the
    solver in the loop. Lower metrics are better; a difference no larger than the seed spread is a
    tie, and a tie that only the wider of two spreads makes is flagged as one for more seeds."""
    src = rows["src"]
    trained = [rows[m] for m in LABELS if m != "src" and m in rows]
    best = min(trained, key=lambda r: r.metric)
    if best.metric >= src.metric or _tied(best, src):
        return (f"No method beats the uncorrected solver under this budget (the best, {best.label}, is "
                f"{best.ratio_to_src:.3g}x SRC's error): give a larger budget, or make the run start from the "
                "uncorrected solver (model.zero_init_output) with a smaller learning rate")
    chosen = next(r for r in trained if _tied(r, best))
    zo, non, nog, fo = (rows.get(m) for m in ("zo_sol", "non", "nog", "fo_sol"))
    if chosen.method == "zo_sol":
        rival = min((r for r in (non, nog) if r is not None), key=lambda r: r.metric)
        upper = f" ({_against(zo, fo)})" if fo is not None else ""
        return f"ZO-SOL is {_against(zo, rival)}{upper}: keep the solver in the loop{_loose([(zo, rival), (zo, fo)])}"
    rival = zo  # NON, NOG and FO-SOL are set against ZO-SOL, the config's method
    # chosen for its simplicity, tied with a better method that is not its rival: say so
    also = f" and within the seed spread of {best.label} at {_times(chosen.wall_s, best.wall_s)}" if (
        best is not chosen and best is not rival) else ""
    verdict = {"non": "the solver in the loop does not pay off here",
               "nog": "keep the solver in the loop, but its gradient does not pay off here (training.mode nog)",
               "fo_sol": "the simulator is differentiable, so train through it (training.mode fo)"}[chosen.method]
    return f"{chosen.label} is {_against(chosen, rival)}{also}: {verdict}{_loose([(chosen, rival), (chosen, best)])}"


@dataclass
class Comparison:
    """What ``zooframe compare`` found: the table (``rows``, in the ladder's order), the
    recommendation drawn from it, and where the runs are."""

    dir: Path
    name: str
    metric: str
    budget: Budget
    seeds: list[int]
    rows: dict[str, MethodRow]
    recommendation: str
    notes: list[str]
    figure: list[str] | str = "not drawn"

    def as_dict(self) -> dict[str, Any]:
        """The ``--json`` document (schemas/cli-compare.schema.json)."""
        methods = {m: {"label": r.label, "metric_mean": r.metric, "metric_std": r.spread,
                       "ratio_to_src": r.ratio_to_src, "simulator_calls": r.simulator_calls, "wall_s": r.wall_s,
                       "steps": r.steps, "runs": r.runs} for m, r in self.rows.items()}
        return {"format_version": COMPARE_VERSION, "compare_dir": str(self.dir), "name": self.name,
                "metric": self.metric, "budget": {"kind": self.budget.kind, "value": self.budget.value},
                "seeds": self.seeds, "methods": methods, "recommendation": self.recommendation, "notes": self.notes,
                "figure": self.figure}

    def text(self) -> str:
        spread = f"± std over {len(self.seeds)} seeds" if len(self.seeds) > 1 else "one seed: no spread"
        header = ["method", f"held-out {self.metric}", "ratio to SRC", "simulator calls", "wall s", "steps"]
        lines = [[r.label, f"{r.metric:.4g}" + (f" ± {r.spread:.2g}" if len(self.seeds) > 1 and r.runs else ""),
                  f"{r.ratio_to_src:.3f}", *([f"{r.simulator_calls:.0f}", f"{r.wall_s:.1f}", f"{r.steps:.0f}"]
                                             if r.runs else ["-", "-", "-"])]
                 for r in self.rows.values()]
        return "\n".join([f"compare {self.name}: budget {self.budget}, {spread}; runs in {self.dir}", "",
                          *aligned([header, *lines]), "",
                          *[f"note: {n}" for n in self.notes], f"recommendation: {self.recommendation}"])


def method_config(base: dict[str, Any], method: str, seed: int, budget: Budget,
                  non_steps: int | None = None) -> dict[str, Any]:
    """The config of one method's run: the base config in the method's training mode, with the
    seed and the budget."""
    config = copy.deepcopy(base)
    config.pop("$schema", None)
    config["name"] = f"{base.get('name', 'experiment')}-{method.replace('_', '-')}-seed{seed}"
    training = config.setdefault("training", {})
    training.update(mode=MODES[method], seed=seed, **budget.training(method, non_steps))
    if method == "nog" and training.get("solver_jacobian") == "both":  # ZO-SOL's surrogate setting: NOG takes one
        training["solver_jacobian"] = "identity"
    config["output"] = {**config.get("output", {}), "progress": False}
    return config


def compare_dir(config: ExperimentBase) -> Path:
    """The default compare folder: the config's ``output.dir`` for the name ``NAME-compare``."""
    return Path(config.output.dir.format(name=f"{config.name}-compare"))


def _earlier_runs(out: Path) -> list[str]:
    return sorted(str(p.parent.relative_to(out)) for p in out.glob(f"*/seed*/{CONFIG_FILE}"))


def _notes(config: ExperimentBase, budget: Budget, methods: list[str], seeds: int) -> list[str]:
    """How the budget applies to this config, and what the ladder leaves out."""
    notes = []
    if "fo_sol" not in methods:
        notes.append(f"no FO-SOL: simulator {config.simulator.kind!r} is not differentiable")
    if budget.kind == "calls":
        notes.append("NON trains as many steps as NOG did with the same seed (its solver calls do not depend on "
                     "its weights)")
    if seeds == 1:
        notes.append("one seed: no spread, so no tie is called; --seeds 3 tells a tie from a win")
    return notes


def _train(config: dict[str, Any], method: str, seed: int, folder: Path, resume: bool, force: bool,
           registry: Registry, log: Callable[[str], None] | None) -> tuple[dict[str, Any], dict[str, Any]]:
    """One method's run with one seed: its row entry, and its headline."""
    if log:
        log(f"{LABELS[method]} seed {seed}: training in {folder}")
    try:
        with warnings.catch_warnings():  # the table says it, with what does better
            warnings.simplefilter("ignore", WorseThanUncorrected)
            s = run(config, output=folder, progress=False, registry=registry, resume=resume and folder.exists(),
                    force=force).summary
    except ZooframeError as exc:
        raise ZooframeError(f"{LABELS[method]} (seed {seed}) in {folder}: {exc}. The runs before it are kept; "
                            "continue the compare with --resume") from exc
    head = headline(s["evaluation"])
    entry = {"seed": seed, "run_dir": str(folder), "metric": head["corrected"],
             "simulator_calls": s.get("simulator_calls", 0), "wall_s": s["wall_s"], "steps": s["steps"],
             "stopped": s.get("stopped")}
    if log:
        log(f"{LABELS[method]} seed {seed}: held-out {head['metric']} {head['corrected']:.4g} (SRC {head['src']:.4g}), "
            f"{entry['steps']} steps, {entry['simulator_calls']} simulator calls, {entry['wall_s']:.1f} s")
    return entry, head


def _figure(config: ExperimentBase, table: Comparison) -> list[str] | str:
    if not config.output.figures:
        return "skipped: output.figures is false"
    if not figures.available():
        return "skipped: matplotlib is not installed (pip install 'zooframe[plot]')"
    points = {r.label: [(x["simulator_calls"], x["wall_s"], x["metric"]) for x in r.runs]
              for m, r in table.rows.items() if m != "src"}
    return [figures.ladder(table.dir / FIGURE_FILE, table.metric, table.rows["src"].metric, points).name]


def compare(config: ExperimentBase | dict | str | Path, budget: Budget | str | None = None, seeds: int = 1,
            output: str | Path | None = None, resume: bool = False, force: bool = False,
            registry: Registry | None = None, log: Callable[[str], None] | None = None) -> Comparison:
    """Run the baseline ladder on the config's task and return its table.

    ``budget``: ``"steps=N"``, ``"seconds=S"`` or ``"calls=C"`` (default: the config's
    training.steps); ``seeds``: training seeds per method, from the config's seed on; ``output``:
    the compare folder (default: the config's output.dir for ``NAME-compare``), which holds one
    run folder per method and seed, ``compare.json`` and ``compare.png``. A folder that holds an
    earlier compare is refused unless ``resume`` (each run continues or is kept, as
    ``zooframe run --resume`` does) or ``force`` (each run is replaced). ``log`` receives a line
    per run as it starts and ends.
    """
    registry = registry or get_registry()
    label = None if isinstance(config, ExperimentBase) else source_label(config)
    if not isinstance(config, ExperimentBase):
        config = load_config(config, registry)
    if isinstance(seeds, bool) or not isinstance(seeds, int) or seeds < 1:
        raise ConfigError([f"seeds: a whole number of at least 1 (got {seeds!r})"], label)
    try:
        budget = budget if isinstance(budget, Budget) else Budget.parse(budget or f"steps={config.training.steps}")
    except ValueError as exc:
        raise ConfigError([f"budget: {exc}"], label) from None
    task = inspect_task(config, registry)
    if task.problems:
        raise ConfigError(task.problems, label)
    out = Path(output) if output is not None else compare_dir(config)
    if out.exists() and not out.is_dir():
        raise ConfigError([f"the compare folder {out} is a file; choose another --output"], label)
    earlier = _earlier_runs(out) if out.is_dir() else []
    if earlier and not (resume or force):
        raise ZooframeError(f"the compare folder {out} holds runs of an earlier compare ({', '.join(earlier[:4])}"
                            f"{' ...' if len(earlier) > 4 else ''}); continue it with --resume (resume=True), or "
                            "replace its runs with --force (force=True)")
    base = config.to_json()
    methods = [m for m in RUN_ORDER if m != "fo_sol" or task.differentiable]
    for method in methods:  # every method's config is checked before anything trains
        load_config(method_config(base, method, config.training.seed, budget, 1), registry)

    seed_list = list(range(config.training.seed, config.training.seed + seeds))
    runs: dict[str, list[dict[str, Any]]] = {m: [] for m in methods}
    for seed in seed_list:
        for method in methods:
            non_steps = runs["nog"][-1]["steps"] if budget.kind == "calls" and method == "non" else None
            entry, head = _train(method_config(base, method, seed, budget, non_steps), method, seed,
                                 out / method / f"seed{seed}", resume, force, registry, log)
            runs[method].append(entry)
    src = head["src"]  # the uncorrected solver's: the same in every run
    rows = {"src": MethodRow("src", src, 0.0, 1.0, 0, 0.0, 0)}
    rows.update({m: MethodRow.from_runs(m, runs[m], src) for m in LABELS if m in runs})
    table = Comparison(out, config.name, head["metric"], budget, seed_list, rows, recommend(rows),
                       _notes(config, budget, methods, seeds))
    table.figure = _figure(config, table)
    atomic.write_json(out / COMPARE_FILE, table.as_dict())
    return table
