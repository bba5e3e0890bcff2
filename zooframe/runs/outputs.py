"""What a run and the command line write for other programs to read: ``summary.json``, a line of
``metrics.jsonl``, ``evaluation.json`` and the ``--json`` documents, as typed dicts whose JSON
Schemas ``zooframe schema`` writes into ``schemas/``.

The code writes plain dicts; these types describe them (the tests check real outputs against the
schemas). Typed dicts rather than models, because a key that is written only on some paths is a
key that may be absent (``NotRequired``), not one with a default. Every document carries a
``format_version``; what a change of it means is in docs/reference/outputs.md.

The published schemas leave unlisted keys open (a later zooframe may add optional keys without a
new version); objects marked :data:`plugin_keys` are open by design, for plugins' own keys.
"""

from typing import Annotated, Any, Literal, Union, get_args, get_type_hints

from pydantic import ConfigDict, Field, TypeAdapter, with_config
from typing_extensions import NotRequired, TypedDict

from ..config.schemas import SCHEMA_DIALECT

listed_keys = with_config(ConfigDict(extra="ignore"))  # explicit: a nested typed dict takes its parent's config
plugin_keys = with_config(ConfigDict(extra="allow"))

RunStatus = Literal["building", "running", "trained", "completed", "failed", "interrupted"]


def version_of(document: type) -> int:
    """The ``format_version`` a document type describes."""
    return get_args(get_type_hints(document)["format_version"])[0]


# ---------------------------------------------------------------- evaluation

@listed_keys
class ErrorStats(TypedDict):
    """Mean absolute error against the reference over the held-out rollouts (frame 0 excluded)."""

    mae_mean: Annotated[float, Field(description="over cases of each case's mean over steps")]
    mae_std: Annotated[float, Field(description="over cases (0 for one case)")]
    mae_per_case: Annotated[list[float], Field(description="in the order of `cases`")]
    mae_per_step: Annotated[list[float], Field(description="mean over cases, one per rollout step")]


@listed_keys
class ChannelStats(TypedDict):
    mean: Annotated[float, Field(description="over cases of each case's mean over steps")]
    per_case: Annotated[list[float], Field(description="in the order of `cases`")]


@listed_keys
class MetricStats(TypedDict):
    """One metric (`evaluation.metrics`) of one rollout against the reference: per frame, over the
    whole state or one channel, then averaged over steps and cases (frame 0 excluded)."""

    mean: Annotated[float, Field(description="over cases of each case's mean over steps")]
    std: Annotated[float, Field(description="over cases (0 for one case)")]
    per_case: Annotated[list[float], Field(description="in the order of `cases`")]
    per_step: Annotated[list[float], Field(description="mean over cases, one per rollout step")]
    per_channel: Annotated[dict[str, ChannelStats], Field(description="channel name (the simulator's state spec) "
                                                                      "-> the metric of that channel alone")]


@listed_keys
class MetricPair(TypedDict):
    src: MetricStats
    corrected: MetricStats


@listed_keys
class Headline(TypedDict):
    """The first of `evaluation.metrics`: what `zooframe run` prints and the figures draw."""

    metric: Annotated[str, Field(description="its name, e.g. mae")]
    src: Annotated[float, Field(description="metrics[metric].src.mean")]
    corrected: Annotated[float, Field(description="metrics[metric].corrected.mean")]
    corrected_over_src: Annotated[float, Field(description="corrected / src")]


@plugin_keys
class HeldOutSummary(TypedDict):
    """Held-out rollouts of the uncorrected (`src`) and the corrected solver; a coupling may add
    keys of its own (e.g. `recovered_input` of model_then_simulator)."""

    split: Annotated[str, Field(description="the case set")]
    steps: Annotated[int, Field(description="rollout length")]
    cases: Annotated[list[str], Field(description="case names")]
    src: ErrorStats
    corrected: ErrorStats
    corrected_over_src: Annotated[float, Field(description="the headline metric's ratio, headline.corrected_over_src "
                                                           "(with the default metrics, MAE's: corrected.mae_mean / "
                                                           "src.mae_mean)")]
    headline: Headline
    metrics: Annotated[dict[str, MetricPair], Field(description="every metric of evaluation.metrics, in its order")]


@plugin_keys
class Evaluation(HeldOutSummary):
    """`evaluation.json`, written by `zooframe evaluate` (and printed by `zooframe evaluate --json`)."""

    format_version: Literal[2]
    run_status: Annotated[RunStatus | None, Field(description="the run's status in its summary.json (null: none "
                                                              "readable); a run that did not complete is evaluated "
                                                              "with the weights it had when it stopped")]


# ---------------------------------------------------------------- metrics.jsonl

@listed_keys
class MetricsLine(TypedDict):
    """One line of `metrics.jsonl`: one optimizer step."""

    format_version: Literal[1]
    step: Annotated[int, Field(description="steps done, this one included (1 for the first)")]
    loss: Annotated[float | None, Field(description="training loss at the step's parameters (null: step skipped, "
                                                    "or an estimator that computes none)")]
    queries: Annotated[int, Field(description="simulator queries of this step")]
    queries_total: Annotated[int, Field(description="since the run started (a resumed run counts its earlier steps)")]
    lr: Annotated[float, Field(description="learning rate the step used")]
    threads: Annotated[int, Field(description="torch threads of the run's process during the step")]
    step_s: Annotated[float, Field(description="wall seconds of the step")]
    sim_s: Annotated[float, Field(description="seconds in the simulator during the step")]
    sim_calls: NotRequired[Annotated[int, Field(description="simulator calls during the step (states advanced one "
                                                            "step, here and in workers)")]]
    sim_calls_total: NotRequired[Annotated[int, Field(description="simulator calls of the run so far, the "
                                                                  "normalization pass included (across resumes)")]]
    wall_s: Annotated[float, Field(description="wall seconds of training so far (across resumes)")]
    faults: NotRequired[Annotated[dict[str, int], Field(description="fault class -> faulted queries (only on a "
                                                                    "step with faults or retries)")]]
    recovered: NotRequired[Annotated[dict[str, int], Field(description="fault class -> faults a retry rode out")]]
    retries: NotRequired[Annotated[int, Field(description="extra simulator attempts of the step")]]
    skipped: NotRequired[Annotated[str, Field(description="why the step was skipped (the parameters did not move)")]]


# ---------------------------------------------------------------- summary.json

@listed_keys
class ThreadCheck(TypedDict):
    others_busy: Annotated[float, Field(description="cores' worth of CPU that other processes used")]
    threads: Annotated[int, Field(description="threads chosen")]


@listed_keys
class Threads(TypedDict):
    setting: Annotated[int | Literal["auto"], Field(description="execution.threads")]
    checks: Annotated[list[ThreadCheck], Field(description="each re-check of the neighbours (auto)")]


@listed_keys
class LayerCount(TypedDict):
    active: int
    total: int


@listed_keys
class SparseExport(TypedDict):
    """The network written with only its non-zero weights (sparsity.use model)."""

    file: str
    parameters: int
    nonzeros: int
    dense_bytes: int
    sparse_bytes: int
    file_bytes: int


@listed_keys
class Sparsity(TypedDict):
    use: Annotated[str, Field(description="sparsity.use")]
    method: Annotated[str, Field(description="sparsity.method")]
    active: Annotated[int, Field(description="parameters in the mask")]
    parameters: int
    layers: Annotated[dict[str, LayerCount], Field(description="per layer (parameter name)")]
    export: NotRequired[SparseExport]


_ALWAYS_AFTER_TRAINING = ["mode", "started", "parameters", "python", "torch", "steps", "queries_total", "final_loss",
                          "wall_s", "simulator_s", "worker_restarts", "faults", "recovered", "retries", "skipped_steps",
                          "threads", "checkpoint_step"]
# which keys a status guarantees (an if/then per status in the schema)
SUMMARY_RULES = {"allOf": [
    {"if": {"properties": {"status": {"const": "running"}}, "required": ["status"]},
     "then": {"required": ["mode", "started", "parameters", "python", "torch", "step"]}},
    {"if": {"properties": {"status": {"const": "trained"}}, "required": ["status"]},
     "then": {"required": _ALWAYS_AFTER_TRAINING}},
    {"if": {"properties": {"status": {"const": "completed"}}, "required": ["status"]},
     "then": {"required": [*_ALWAYS_AFTER_TRAINING, "evaluation", "figures"]}},
    {"if": {"properties": {"status": {"enum": ["failed", "interrupted"]}}, "required": ["status"]},
     "then": {"required": ["error"]}},
]}
summary_keys = with_config(ConfigDict(extra="ignore", json_schema_extra=SUMMARY_RULES))


@summary_keys
class Summary(TypedDict):
    """`summary.json`: rewritten as the run goes (building, running, trained, then completed; or
    failed or interrupted at any stage), so it says where a run is and, at its end, what it did."""

    format_version: Literal[2]
    name: Annotated[str, Field(description="the config's name")]
    status: RunStatus
    pid: Annotated[int, Field(description="the process that ran it")]
    mode: NotRequired[Annotated[str, Field(description="training.mode")]]
    started: NotRequired[Annotated[str, Field(description="UTC, ISO 8601 (e.g. 2026-05-09T07:35:25Z)")]]
    parameters: NotRequired[Annotated[int, Field(description="trained parameters")]]
    python: NotRequired[Annotated[str, Field(description="Python version")]]
    torch: NotRequired[Annotated[str, Field(description="torch version")]]
    simulator: NotRequired[Annotated[dict[str, Any], Field(description="how the simulator runs, as its plugin "
                                                                  "states it (an MPI code's launcher, ranks, slots, "
                                                                  "runs at once)")]]
    step: NotRequired[Annotated[int, Field(description="while running: steps done")]]
    resumed_from_step: NotRequired[Annotated[int, Field(description="a resumed run: the checkpoint's step")]]
    checkpoint_step: NotRequired[Annotated[int | None, Field(description="the step of checkpoint.pt (null: none "
                                                                         "written)")]]
    steps: NotRequired[Annotated[int, Field(description="steps done when training ended")]]
    stopped: NotRequired[Annotated[Literal["steps", "seconds", "simulator_calls"] | None, Field(
        description="why training ended: training.steps done, or training.budget spent (null: it did not end, "
        "see status)")]]
    simulator_calls: NotRequired[Annotated[int, Field(description="states the simulator advanced one step for "
                                                                  "training, the normalization pass included")]]
    queries_total: NotRequired[int]
    final_loss: NotRequired[Annotated[float | None, Field(description="loss of the last step (null: none)")]]
    wall_s: NotRequired[Annotated[float, Field(description="wall seconds of training (across resumes)")]]
    simulator_s: NotRequired[Annotated[float, Field(description="seconds in the simulator")]]
    worker_restarts: NotRequired[int]
    faults: NotRequired[Annotated[dict[str, int], Field(description="fault class -> faulted queries")]]
    recovered: NotRequired[Annotated[dict[str, int], Field(description="fault class -> faults a retry rode out")]]
    retries: NotRequired[Annotated[int, Field(description="extra simulator attempts")]]
    skipped_steps: NotRequired[Annotated[list[int], Field(description="the steps skipped (no optimizer step)")]]
    threads: NotRequired[Threads]
    sparsity: NotRequired[Annotated[Sparsity, Field(description="a run with a sparsity section")]]
    evaluation: NotRequired[HeldOutSummary]
    figures: NotRequired[Annotated[list[str] | str, Field(description="file names written, or why none were")]]
    error: NotRequired[Annotated[str, Field(description="failed or interrupted: the exception, `Type: message`")]]
    failed_in: NotRequired[Annotated[str | None, Field(description="failed or interrupted outside training: the "
                                                                   "stage (e.g. evaluation)")]]


# ---------------------------------------------------------------- --json documents

@summary_keys
class CliRun(Summary):
    """`zooframe run --json`: the run's summary.json, and where the run folder is."""

    run_dir: str
    resumed: NotRequired[Annotated[str, Field(description="--resume of a completed run: nothing was done")]]


@listed_keys
class ValidConfig(TypedDict):
    format_version: Literal[1]
    valid: Literal[True]
    config: Annotated[dict[str, Any], Field(description="the config with every default filled in")]


@listed_keys
class InvalidConfig(TypedDict):
    format_version: Literal[1]
    valid: Literal[False]
    errors: Annotated[list[str], Field(description="one `path: message` per problem")]


CliValidate = Union[ValidConfig, InvalidConfig]  # noqa: UP007 (a value here, not an annotation)


@listed_keys
class Finding(TypedDict):
    rule: str
    problem: str
    fix: str


@listed_keys
class CliCheck(TypedDict):
    """`zooframe check --json`: the conformance kit's report (exit code 1 when anything failed)."""

    format_version: Literal[1]
    simulator: str
    passed: Annotated[list[str], Field(description="rules passed")]
    skipped: Annotated[dict[str, str], Field(description="rule -> why it could not be checked")]
    failures: list[Finding]
    error: NotRequired[Annotated[str, Field(description="why the kit could not run (the config, or the simulator or "
                                                         "reference source could not be built); no rule ran, exit "
                                                         "code 2")]]


@listed_keys
class CompareBudget(TypedDict):
    kind: Annotated[Literal["steps", "seconds", "calls"], Field(description="what --budget limits")]
    value: Annotated[float, Field(description="how much each method may spend")]


@listed_keys
class CompareRun(TypedDict):
    """One method's run with one seed."""

    seed: int
    run_dir: Annotated[str, Field(description="its run folder")]
    metric: Annotated[float, Field(description="its held-out headline metric")]
    simulator_calls: int
    wall_s: Annotated[float, Field(description="wall seconds of training")]
    steps: int
    stopped: Annotated[str | None, Field(description="why training ended (summary.json's stopped)")]


@listed_keys
class CompareRow(TypedDict):
    """One method of the ladder, over its seeds."""

    label: Annotated[str, Field(description="SRC, NON, NOG, ZO-SOL or FO-SOL")]
    metric_mean: Annotated[float, Field(description="held-out headline metric, mean over seeds")]
    metric_std: Annotated[float, Field(description="its standard deviation over seeds (0 for one seed, and for SRC)")]
    ratio_to_src: Annotated[float, Field(description="metric_mean over SRC's")]
    simulator_calls: Annotated[float, Field(description="mean over seeds")]
    wall_s: Annotated[float, Field(description="wall seconds of training, mean over seeds")]
    steps: Annotated[float, Field(description="mean over seeds")]
    runs: Annotated[list[CompareRun], Field(description="one per seed (none for SRC)")]


@listed_keys
class CliCompare(TypedDict):
    """`zooframe compare --json` (also the compare folder's compare.json): the baseline ladder's table and the
    recommendation drawn from it."""

    format_version: Literal[1]
    compare_dir: Annotated[str, Field(description="the compare folder: one run folder per method and seed")]
    name: Annotated[str, Field(description="the config's name")]
    metric: Annotated[str, Field(description="the held-out headline metric (lower is better)")]
    budget: CompareBudget
    seeds: Annotated[list[int], Field(description="training seeds of every method")]
    methods: Annotated[dict[str, CompareRow], Field(description="src, non, nog, zo_sol and (differentiable "
                                                                "simulators) fo_sol, in that order")]
    recommendation: str
    notes: Annotated[list[str], Field(description="how the budget applied, and what was left out")]
    figure: Annotated[list[str] | str, Field(description="file names written, or why none were")]


@listed_keys
class SweepValidation(TypedDict):
    split: Annotated[str, Field(description="the case set trials are evaluated on")]
    cases: Annotated[list[str], Field(description="its case names")]
    carved: Annotated[bool, Field(description="true: the sweep took these cases out of the training cases "
                                              "(training.validation_cases of every trial)")]


@listed_keys
class SweepTrial(TypedDict):
    """One trial: a run folder of the config with the trial's values."""

    number: int
    state: Literal["completed", "pruned", "failed", "interrupted", "running", "waiting"]
    baseline: Annotated[bool, Field(description="the config's own values (the first trial, when they lie in the "
                                                "space)")]
    params: Annotated[dict[str, Any], Field(description="config path -> the trial's value")]
    validation: Annotated[float | None, Field(description="corrected_over_src on the validation cases (null: the "
                                                          "trial did not complete)")]
    test: NotRequired[Annotated[float, Field(description="the best trial: corrected_over_src on the test split")]]
    wall_s: Annotated[float | None, Field(description="wall seconds of the trial")]
    steps: Annotated[int | None, Field(description="optimizer steps done")]
    queries: Annotated[int | None, Field(description="simulator queries of training")]
    simulator_calls: Annotated[int | None, Field(description="simulator calls of training (null: not counted)")]
    run_dir: Annotated[str | None, Field(description="its run folder, relative to the sweep folder")]
    why: NotRequired[Annotated[str, Field(description="pruned, failed or interrupted: why")]]


@listed_keys
class SweepTest(TypedDict):
    """The best trial's model evaluated once on the test split."""

    trial: int
    split: str
    cases: list[str]
    corrected_over_src: float
    corrected_mae: Annotated[float, Field(description="corrected solver's headline metric, mean over cases")]
    src_mae: Annotated[float, Field(description="uncorrected solver's, mean over cases")]


@listed_keys
class SweepBest(TypedDict):
    number: int
    params: dict[str, Any]
    validation: float
    test: SweepTest
    config_file: Annotated[str, Field(description="the config with the best values, ready for zooframe run (trains "
                                                  "on every training case, evaluates on the config's split)")]


@listed_keys
class CliSweep(TypedDict):
    """`zooframe sweep --json` (also the sweep folder's sweep.json): every trial, the best one and its test
    metric. While a sweep runs, or after it stopped, sweep.json holds only format_version, status and pid or
    error."""

    format_version: Literal[1]
    status: Literal["completed", "running", "interrupted", "failed"]
    sweep_dir: str
    objective: Annotated[str, Field(description="what the trials are selected on")]
    trials_requested: int
    validation: SweepValidation
    test_split: Annotated[str, Field(description="the config's evaluation.split, touched by the best trial only")]
    trials: list[SweepTrial]
    best: Annotated[SweepBest | None, Field(description="null: no trial completed")]
    importances: Annotated[dict[str, float], Field(description="config path -> share of the validation metric's "
                                                               "variation (empty: fewer than 5 completed trials)")]
    figure: Annotated[str, Field(description="file name written, or why none was")]


PluginRow = listed_keys(TypedDict("PluginRow", {"category": str, "kind": str, "class": str, "provider": str,
                                                "version": str | None}))


@listed_keys
class LoadFailure(TypedDict):
    provider: str
    error: str


@listed_keys
class CliPlugins(TypedDict):
    """`zooframe plugins --json`: the registered plugins, and the providers that failed to load."""

    format_version: Literal[1]
    plugins: list[PluginRow]
    failures: list[LoadFailure]


SUMMARY_VERSION, METRICS_VERSION, EVALUATION_VERSION = map(version_of, (Summary, MetricsLine, Evaluation))
VALIDATE_VERSION, CHECK_VERSION, PLUGINS_VERSION = map(version_of, (ValidConfig, CliCheck, CliPlugins))
COMPARE_VERSION = version_of(CliCompare)
SWEEP_VERSION = version_of(CliSweep)

# schema file -> (what it describes, its type)
DOCUMENTS: dict[str, tuple[str, Any]] = {
    "summary.schema.json": ("summary.json", Summary),
    "metrics-line.schema.json": ("one line of metrics.jsonl", MetricsLine),
    "evaluation.schema.json": ("evaluation.json", Evaluation),
    "cli-run.schema.json": ("zooframe run --json", CliRun),
    "cli-validate.schema.json": ("zooframe validate --json", CliValidate),
    "cli-check.schema.json": ("zooframe check --json", CliCheck),
    "cli-plugins.schema.json": ("zooframe plugins --json", CliPlugins),
    "cli-evaluate.schema.json": ("zooframe evaluate --json", Evaluation),
    "cli-compare.schema.json": ("zooframe compare --json", CliCompare),
    "cli-sweep.schema.json": ("zooframe sweep --json", CliSweep),
}


def output_schemas() -> dict[str, dict[str, Any]]:
    """File name -> JSON Schema of each output document."""
    out = {}
    for name, (what, document) in DOCUMENTS.items():
        schema = TypeAdapter(document).json_schema()
        version = VALIDATE_VERSION if document is CliValidate else version_of(document)
        schema["title"] = f"zooframe {what}, format_version {version}"
        out[name] = {"$schema": SCHEMA_DIALECT, **schema}
    return out
