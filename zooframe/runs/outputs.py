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


@plugin_keys
class HeldOutSummary(TypedDict):
    """Held-out rollouts of the uncorrected (`src`) and the corrected solver; a coupling may add
    keys of its own (e.g. `recovered_input` of model_then_simulator)."""

    split: Annotated[str, Field(description="the case set")]
    steps: Annotated[int, Field(description="rollout length")]
    cases: Annotated[list[str], Field(description="case names")]
    src: ErrorStats
    corrected: ErrorStats
    corrected_over_src: Annotated[float, Field(description="corrected.mae_mean / src.mae_mean")]


@plugin_keys
class Evaluation(HeldOutSummary):
    """`evaluation.json`, written by `zooframe evaluate` (and printed by `zooframe evaluate --json`)."""

    format_version: Literal[1]
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

    format_version: Literal[1]
    name: Annotated[str, Field(description="the config's name")]
    status: RunStatus
    pid: Annotated[int, Field(description="the process that ran it")]
    mode: NotRequired[Annotated[str, Field(description="training.mode")]]
    started: NotRequired[Annotated[str, Field(description="UTC, ISO 8601 (e.g. 2026-05-09T07:35:25Z)")]]
    parameters: NotRequired[Annotated[int, Field(description="trained parameters")]]
    python: NotRequired[Annotated[str, Field(description="Python version")]]
    torch: NotRequired[Annotated[str, Field(description="torch version")]]
    step: NotRequired[Annotated[int, Field(description="while running: steps done")]]
    resumed_from_step: NotRequired[Annotated[int, Field(description="a resumed run: the checkpoint's step")]]
    checkpoint_step: NotRequired[Annotated[int | None, Field(description="the step of checkpoint.pt (null: none "
                                                                         "written)")]]
    steps: NotRequired[Annotated[int, Field(description="steps done when training ended")]]
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
