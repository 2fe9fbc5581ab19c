"""Hyperparameter tuning jobs (the Tuning step), run as SageMaker runs them.

Each trial is a training job run by `mlops_local.engine.training` with the static hyperparameters
plus the sampled ones; its objective is the objective metric in its FinalMetricDataList (the
metric definition's regex on its log). Up to MaxParallelTrainingJobs trials run at a time.
Random draws every trial up front from a numpy Generator seeded by RandomSeed, so a seed fixes
the trials and the best; Bayesian asks optuna's TPE sampler (seeded the same way) for a wave
of MaxParallelTrainingJobs trials and tells it their results in trial order, so a seed fixes
its trials too; Grid runs every combination of the categorical values.
A trial that fails is recorded with its reason and the others are compared; the step fails
only when no trial yields an objective (naming the metric and its regex when the trials ran
but none logged it). Properties are DescribeHyperParameterTuningJob's plus
ListTrainingJobsForHyperParameterTuningJob's TrainingJobSummaries, best first.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import secrets
import threading
from concurrent.futures import ALL_COMPLETED, FIRST_COMPLETED, ThreadPoolExecutor, wait
from dataclasses import dataclass

import numpy as np

from mlops_core.config import scaling_problem
from mlops_local.engine.errors import StepFailure
from mlops_local.engine.job import Job
from mlops_local.engine.records import now
from mlops_local.engine.training import run_training

STRATEGIES = ("Random", "Bayesian", "Grid")
# Request fields the local engine cannot honour; refused by name rather than ignored.
UNSUPPORTED = {
    "TrainingJobDefinitions": "several training job definitions",
    "WarmStartConfig": "warm start from parent tuning jobs",
    "Autotune": "Autotune",
}
UNSUPPORTED_CONFIG = {
    "StrategyConfig": "a strategy config (Hyperband)",
    "TuningJobCompletionCriteria": "completion criteria",
}
# HyperParameterTrainingJobDefinition members that are not CreateTrainingJob arguments.
TUNING_ONLY = ("DefinitionName", "TuningObjective", "HyperParameterRanges",
               "StaticHyperParameters", "HyperParameterTuningResourceConfig")


@dataclass(frozen=True)
class Range:
    name: str
    kind: str  # Integer, Continuous or Categorical
    low: float = 0.0
    high: float = 0.0
    scaling: str = "Linear"  # Auto is searched linearly
    values: tuple = ()

    def text(self, value) -> str:
        """A sampled value as SageMaker passes it in HyperParameters."""
        if self.kind == "Integer":
            return str(int(value))
        if self.kind == "Continuous":
            return repr(float(value))
        return str(value)


@dataclass
class Trial:
    index: int
    name: str
    arn: str
    tuned: dict
    started: str
    ended: str = ""
    status: str = "Completed"
    objective: float | None = None
    failure: str = ""
    log: str = ""


def _number(value, what: str, problems: list) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        problems.append(f"{what} {value!r} is not a number")
        return 0.0


def parse_ranges(parameter_ranges: dict) -> list[Range]:
    """The ranges of ParameterRanges; StepFailure names every malformed one."""
    ranges, problems = [], []
    for kind in ("Integer", "Continuous"):
        for item in parameter_ranges.get(f"{kind}ParameterRanges") or []:
            name = item.get("Name", "?")
            low = _number(item.get("MinValue"), f"{name} MinValue", problems)
            high = _number(item.get("MaxValue"), f"{name} MaxValue", problems)
            scaling = item.get("ScalingType") or "Auto"
            if low > high:
                problems.append(f"{name}: MinValue {low:g} is above MaxValue {high:g}")
            if kind == "Integer" and (low != int(low) or high != int(high)):
                problems.append(f"{name}: integer bounds {low:g}..{high:g} are not integers")
            problem = scaling_problem(kind, scaling, low, high)
            if problem:
                problems.append(f"{name}: {problem}")
            ranges.append(Range(name, kind, low, high, "Linear" if scaling == "Auto" else scaling))
    for item in parameter_ranges.get("CategoricalParameterRanges") or []:
        values = tuple(str(v) for v in item.get("Values") or [])
        if not values:
            problems.append(f"{item.get('Name', '?')}: a categorical range needs Values")
        ranges.append(Range(item.get("Name", "?"), "Categorical", values=values))
    names = [r.name for r in ranges]
    problems += [f"{n}: ranged more than once" for n in sorted({n for n in names
                                                                 if names.count(n) > 1})]
    if not ranges:
        problems.append("ParameterRanges names no hyperparameter to tune")
    if problems:
        raise StepFailure("the tuning job's parameter ranges are invalid: " + "; ".join(problems))
    return ranges


def _draw(item: Range, rng: np.random.Generator):
    if item.kind == "Categorical":
        return item.values[rng.integers(len(item.values))]
    if item.kind == "Integer":
        if item.scaling == "Logarithmic":
            value = math.exp(rng.uniform(math.log(item.low), math.log(item.high + 1)))
            return min(int(value), int(item.high))
        return rng.integers(int(item.low), int(item.high) + 1)
    if item.scaling == "Logarithmic":
        return math.exp(rng.uniform(math.log(item.low), math.log(item.high)))
    if item.scaling == "ReverseLogarithmic":
        return 1 - math.exp(rng.uniform(math.log(1 - item.high), math.log(1 - item.low)))
    return rng.uniform(item.low, item.high)


class _Planned:
    """Random and Grid: every trial's hyperparameters are known before the first one runs."""

    learns = False

    def __init__(self, plans: list[dict]):
        self.plans = plans

    def ask(self, index: int) -> dict:
        return self.plans[index - 1]  # trials are numbered from 1, as SageMaker names them

    def tell(self, index: int, objective: float | None) -> None:
        """Planned searches do not learn from results."""


def random_search(ranges: list[Range], count: int, seed: int | None) -> _Planned:
    rng = np.random.default_rng(seed)
    return _Planned([{r.name: r.text(_draw(r, rng)) for r in ranges} for _ in range(count)])


def grid_search(ranges: list[Range]) -> _Planned:
    numeric = [r.name for r in ranges if r.kind != "Categorical"]
    if numeric:
        raise StepFailure(f"the Grid strategy takes only categorical ranges; {', '.join(numeric)} "
                          "are integer or continuous")
    names = [r.name for r in ranges]
    return _Planned([dict(zip(names, combination, strict=True))
                     for combination in itertools.product(*(r.values for r in ranges))])


class _Bayesian:
    """optuna's TPE sampler through ask and tell; trials still running count as pending."""

    learns = True

    def __init__(self, ranges: list[Range], seed: int | None, objective_type: str):
        import optuna  # imported here: it takes a second, and only Bayesian tuning needs it

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        self.optuna = optuna
        self.ranges = ranges
        self.study = optuna.create_study(direction=objective_type.lower(),
                                         sampler=optuna.samplers.TPESampler(seed=seed))
        self.pending: dict[int, object] = {}

    def _distribution(self, item: Range):
        distributions = self.optuna.distributions
        log = item.scaling == "Logarithmic"
        if item.kind == "Categorical":
            return distributions.CategoricalDistribution(item.values)
        if item.kind == "Integer":
            return distributions.IntDistribution(int(item.low), int(item.high), log=log)
        if item.scaling == "ReverseLogarithmic":  # sampled as 1 - value on a log scale
            return distributions.FloatDistribution(1 - item.high, 1 - item.low, log=True)
        return distributions.FloatDistribution(item.low, item.high, log=log)

    def ask(self, index: int) -> dict:
        trial = self.study.ask({r.name: self._distribution(r) for r in self.ranges})
        self.pending[index] = trial
        return {r.name: r.text(1 - trial.params[r.name] if r.scaling == "ReverseLogarithmic"
                               else trial.params[r.name]) for r in self.ranges}

    def tell(self, index: int, objective: float | None) -> None:
        trial = self.pending.pop(index)
        if objective is None:
            self.study.tell(trial, state=self.optuna.trial.TrialState.FAIL)
        else:
            self.study.tell(trial, objective)


def _limit(limits: dict, name: str, default: int | None = None) -> int:
    value = limits.get(name, default)
    try:
        number = int(value)
    except (TypeError, ValueError):
        raise StepFailure(f"ResourceLimits.{name} must be a positive integer, got {value!r}") \
            from None
    if number < 1:
        raise StepFailure(f"ResourceLimits.{name} must be a positive integer, got {value!r}")
    return number


def _check_request(arguments: dict, config: dict, objective: dict, definition: dict) -> None:
    for field, what in UNSUPPORTED.items():
        if arguments.get(field):
            raise StepFailure(f"{field}: {what} is not supported by the local engine")
    for field, what in UNSUPPORTED_CONFIG.items():
        if config.get(field):
            raise StepFailure(f"HyperParameterTuningJobConfig.{field}: {what} is not supported "
                              "by the local engine")
    strategy = config.get("Strategy")
    if strategy not in STRATEGIES:
        raise StepFailure(f"tuning strategy {strategy!r} is not supported by the local engine; "
                          f"it runs {', '.join(STRATEGIES)}")
    if objective.get("Type") not in ("Minimize", "Maximize"):
        raise StepFailure("HyperParameterTuningJobObjective.Type must be Minimize or Maximize, "
                          f"got {objective.get('Type')!r}")
    metrics = (definition.get("AlgorithmSpecification") or {}).get("MetricDefinitions") or []
    if objective.get("MetricName") not in {m.get("Name") for m in metrics}:
        raise StepFailure(f"the objective metric {objective.get('MetricName')!r} has no metric "
                          "definition in TrainingJobDefinition.AlgorithmSpecification")
    if not (definition.get("OutputDataConfig") or {}).get("S3OutputPath"):
        raise StepFailure("TrainingJobDefinition.OutputDataConfig.S3OutputPath is required")


def _seed(config: dict) -> int | None:
    seed = config.get("RandomSeed")
    try:
        return None if seed in (None, "") else int(seed)
    except (TypeError, ValueError):
        raise StepFailure(f"RandomSeed must be an integer, got {seed!r}") from None


class _Tuning:
    """One tuning job: its trials, run up to `parallel` at a time."""

    def __init__(self, definition: dict, objective: dict, job: Job):
        self.definition = definition
        self.objective = objective
        self.job = job
        self._log_lock = threading.Lock()

    def _log(self, line: str) -> None:
        with self._log_lock, open(self.job.log, "a") as log:
            log.write(line + "\n")

    def trial(self, index: int, tuned: dict) -> Trial:
        name = f"{self.job.name[:49].rstrip('-')}-{index:03d}-{secrets.token_hex(4)}"
        trial_job = dataclasses.replace(self.job, name=name, root=self.job.root / name)
        result = Trial(index, name, trial_job.arn("training-job"), tuned, started=now(),
                       log=str(trial_job.log))
        self._log(f"trial {index:03d} {name} started: {tuned}")
        arguments = {k: v for k, v in self.definition.items() if k not in TUNING_ONLY}
        arguments["HyperParameters"] = {**(self.definition.get("StaticHyperParameters") or {}),
                                        **tuned}
        metric = self.objective["MetricName"]
        try:
            final = run_training(arguments, trial_job)["FinalMetricDataList"]
            result.objective = next((m["Value"] for m in final if m["MetricName"] == metric), None)
            if result.objective is None:
                result.failure = f"the objective metric {metric} is not in the log {trial_job.log}"
        except StepFailure as err:
            result.status, result.failure = "Failed", str(err)
        result.ended = now()
        outcome = f"{metric}={result.objective}" if result.objective is not None else \
            result.failure.splitlines()[0]
        self._log(f"trial {index:03d} {name} {result.status}: {outcome}")
        return result

    def run(self, search, count: int, parallel: int) -> list[Trial]:
        trials, running = [], {}
        with ThreadPoolExecutor(max_workers=parallel, thread_name_prefix="trial") as pool:
            while len(trials) < count:
                while len(running) < parallel and len(trials) + len(running) < count:
                    index = len(trials) + len(running) + 1
                    running[pool.submit(self.trial, index, search.ask(index))] = index
                # A search that learns is told a whole wave's results in trial order, so a seed
                # gives the same trials whichever trial of a wave happens to finish first.
                finished, _ = wait(running, return_when=ALL_COMPLETED if search.learns
                                   else FIRST_COMPLETED)
                for future in sorted(finished, key=running.get):
                    trial = future.result()
                    search.tell(running.pop(future), trial.objective)
                    trials.append(trial)
        return sorted(trials, key=lambda t: t.index)


def _summary(trial: Trial, tuning_job: str, objective: dict) -> dict:
    summary = {
        "TrainingJobName": trial.name,
        "TrainingJobArn": trial.arn,
        "TuningJobName": tuning_job,
        "CreationTime": trial.started,
        "TrainingStartTime": trial.started,
        "TrainingEndTime": trial.ended,
        "TrainingJobStatus": trial.status,
        "TunedHyperParameters": trial.tuned,
        "ObjectiveStatus": "Failed" if trial.objective is None else "Succeeded",
    }
    if trial.failure:
        summary["FailureReason"] = trial.failure
    if trial.objective is not None:
        summary["FinalHyperParameterTuningJobObjectiveMetric"] = {
            "Type": objective["Type"], "MetricName": objective["MetricName"],
            "Value": trial.objective,
        }
    return summary


def run_tuning(arguments: dict, job: Job) -> dict:
    """Run a resolved CreateHyperParameterTuningJob request; its Describe-shaped properties."""
    config = arguments.get("HyperParameterTuningJobConfig") or {}
    definition = arguments.get("TrainingJobDefinition") or {}
    objective = config.get("HyperParameterTuningJobObjective") or {}
    _check_request(arguments, config, objective, definition)
    ranges = parse_ranges(config.get("ParameterRanges") or {})
    limits = config.get("ResourceLimits") or {}
    parallel = _limit(limits, "MaxParallelTrainingJobs", 1)
    if config["Strategy"] == "Grid":
        search = grid_search(ranges)
        count = len(search.plans)
    else:
        count = _limit(limits, "MaxNumberOfTrainingJobs")
        search = (random_search(ranges, count, _seed(config)) if config["Strategy"] == "Random"
                  else _Bayesian(ranges, _seed(config), objective["Type"]))
    started = now()
    job.root.mkdir(parents=True, exist_ok=True)
    trials = _Tuning(definition, objective, job).run(search, count, parallel)
    scored = [t for t in trials if t.objective is not None]
    completed = [t for t in trials if t.status == "Completed"]
    if not scored and completed:
        # The jobs ran but the regex found nothing: the objective line of the log changed.
        metric = objective["MetricName"]
        regex = next(m["Regex"] for m in definition["AlgorithmSpecification"]["MetricDefinitions"]
                     if m.get("Name") == metric)
        raise StepFailure(f"no trial logged the objective metric {metric} (regex {regex!r}); "
                          f"see {completed[0].log}")
    if not scored:
        reasons = "\n".join(f"  {t.name}: {t.failure.splitlines()[0]}" for t in trials)
        raise StepFailure(f"all {len(trials)} training jobs of the tuning job failed "
                          f"(logs under {job.root}):\n{reasons}")
    sign = 1 if objective["Type"] == "Minimize" else -1
    scored.sort(key=lambda t: (sign * t.objective, t.index))
    summaries = [_summary(t, job.name, objective)
                 for t in scored + [t for t in trials if t.objective is None]]
    failed = sum(t.status == "Failed" for t in trials)
    return {
        **arguments,
        "HyperParameterTuningJobName": job.name,
        "HyperParameterTuningJobArn": job.arn("hyper-parameter-tuning-job"),
        "HyperParameterTuningJobStatus": "Completed",
        "CreationTime": started,
        "HyperParameterTuningEndTime": now(),
        "LastModifiedTime": now(),
        "TrainingJobStatusCounters": {
            "Completed": len(trials) - failed, "InProgress": 0, "RetryableError": 0,
            "NonRetryableError": failed, "Stopped": 0,
        },
        "ObjectiveStatusCounters": {
            "Succeeded": len(scored), "Pending": 0, "Failed": len(trials) - len(scored),
        },
        "BestTrainingJob": summaries[0],
        "TrainingJobSummaries": summaries,
    }


def model_uris(properties: dict) -> list[str]:
    """Where each completed trial put its model: the tuning step's outputs."""
    output = properties["TrainingJobDefinition"]["OutputDataConfig"]["S3OutputPath"].rstrip("/")
    return [f"{output}/{s['TrainingJobName']}/output/model.tar.gz"
            for s in properties["TrainingJobSummaries"] if s["TrainingJobStatus"] == "Completed"]
