"""Project configuration: `mlops.toml` at the repository root is the one place to change."""

from __future__ import annotations

import json
import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from mlops_core.names import SKLEARN_FRAMEWORK_VERSION, TARGETS

ROOT = Path(__file__).resolve().parent.parent
CONFIG_FILE = Path(os.environ.get("MLOPS_CONFIG", ROOT / "mlops.toml"))
FEATURE_TYPES = ("numeric", "categorical")
SELECTIONS = ("single", "compare")
# Metrics of evaluation.json a threshold can gate on (lower is better) and that a comparison
# can pick the best candidate by.
METRICS = ("rmse", "mse", "mae")
# What train.py logs as validation_<metric>=<value>, and the direction a tuning job optimizes.
TUNING_OBJECTIVES = {"validation:rmse": "Minimize", "validation:mae": "Minimize",
                     "validation:r2": "Maximize"}
TUNING_STRATEGIES = ("Bayesian", "Random")
RANGE_TYPES = ("integer", "continuous", "categorical")
SCALINGS = ("Auto", "Linear", "Logarithmic", "ReverseLogarithmic")
TUNING_PROFILES = TARGETS  # [tuning] local / aws: whether each target tunes
HYPERPARAMETER_LIMIT = 2500  # characters of one SageMaker hyperparameter value


class ConfigError(ValueError):
    """The configuration file is missing or wrong; the message names the key."""


@dataclass(frozen=True)
class Feature:
    name: str
    type: str
    values: tuple[str, ...] = ()


@dataclass(frozen=True)
class Range:
    """A hyperparameter's search space: min/max (integer, continuous) or values (categorical)."""

    name: str
    type: str
    min: float | int | None = None
    max: float | int | None = None
    scaling: str = "Auto"
    values: tuple[str, ...] = ()


@dataclass(frozen=True)
class Tuning:
    """`[tuning]`: whether each target tunes, and the tuning job's settings."""

    profiles: dict  # target name -> tune on that target
    strategy: str
    max_jobs: int
    max_parallel_jobs: int
    seed: int
    objective: str
    ranges: tuple[Range, ...]

    @property
    def objective_type(self) -> str:
        return TUNING_OBJECTIVES[self.objective]

    def enabled(self, target: str) -> bool:
        return bool(self.profiles.get(target, False))


@dataclass(frozen=True)
class Monitoring:
    """`[monitoring]`: when the monitor fails a stage's traffic, and what a violation does."""

    # Above this share of the rows sent (in refused requests), the check fails.
    max_refused_share: float = 0.05
    rmse_tolerance: float = 1.2  # a violation: window RMSE above this x the model's test RMSE
    retrain_on_violation: bool = False  # a violation starts the training pipeline


@dataclass(frozen=True)
class Config:
    project: str
    data_file: Path
    target: str
    features: tuple[Feature, ...]
    seed: int
    validation_fraction: float
    test_fraction: float
    metric: str
    threshold: float
    hyperparameters: dict
    aws: dict = field(default_factory=dict)
    local: dict = field(default_factory=dict)
    selection: str = "single"
    candidates: dict = field(default_factory=dict)  # name -> {"regressor": ..., settings}
    tuning: Tuning | None = None
    monitoring: Monitoring = field(default_factory=Monitoring)

    def tunes(self, target: str) -> bool:
        """Whether the pipeline built for `target` tunes hyperparameters, not trains once."""
        return self.tuning is not None and self.tuning.enabled(target)

    @property
    def feature_names(self) -> list[str]:
        return [f.name for f in self.features]

    @property
    def categorical(self) -> list[str]:
        return [f.name for f in self.features if f.type == "categorical"]

    @property
    def model_package_group(self) -> str:
        return f"{self.project}-models"

    @property
    def pipeline_name(self) -> str:
        return f"{self.project}-train"

    @property
    def batch_pipeline_name(self) -> str:
        return f"{self.project}-batch"

    @property
    def sklearn_framework_version(self) -> str:
        return self.aws.get("sklearn_framework_version", SKLEARN_FRAMEWORK_VERSION)

    def endpoint_name(self, stage: str) -> str:
        return f"{self.project}-{stage}"

    def schema(self) -> dict:
        """What the job scripts need to know about the data, shipped to them as schema.json."""
        return {
            "target": self.target,
            "features": [
                {"name": f.name, "type": f.type, **({"values": list(f.values)} if f.values else {})}
                for f in self.features
            ],
            "seed": self.seed,
            "validation_fraction": self.validation_fraction,
            "test_fraction": self.test_fraction,
        }


def _require(table: dict, key: str, where: str, path: Path):
    if key not in table:
        raise ConfigError(f"{path.name}: [{where}] needs '{key}'")
    return table[key]


def load(path: Path | None = None) -> Config:
    path = Path(path or CONFIG_FILE)
    try:
        raw = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"configuration file not found: {path}") from None
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(f"{path.name} is not valid TOML: {err}") from None
    project, data, model = raw.get("project", {}), raw.get("data", {}), raw.get("model", {})
    features = []
    for name, spec in _require(data, "features", "data", path).items():
        kind = spec.get("type")
        if kind not in FEATURE_TYPES:
            raise ConfigError(
                f"{path.name}: feature '{name}' has type {kind!r}; use one of {FEATURE_TYPES}"
            )
        values = tuple(str(v) for v in spec.get("values", ()))
        if kind == "categorical" and not values:
            raise ConfigError(f"{path.name}: categorical feature '{name}' needs 'values'")
        features.append(Feature(name, kind, values))
    if not features:
        raise ConfigError(f"{path.name}: [data.features] lists no feature")
    hyperparameters = _hyperparameters(model.get("hyperparameters", {}), "", path)
    metric = model.get("metric", "rmse")
    if metric not in METRICS:
        raise ConfigError(f"{path.name}: [model] metric = {metric!r}; use one of {METRICS}")
    selection = model.get("selection", "single")
    if selection not in SELECTIONS:
        raise ConfigError(
            f"{path.name}: [model] selection = {selection!r}; use one of {SELECTIONS}"
        )
    candidates = _candidates(model.get("candidates", {}), selection, path)
    tuning = _tuning(raw["tuning"], path) if "tuning" in raw else None
    if selection == "compare" and tuning and any(tuning.profiles.values()):
        on = [name for name, enabled in tuning.profiles.items() if enabled]
        raise ConfigError(
            f"{path.name}: [model] selection = \"compare\" trains the candidates as they are, "
            f"but [tuning] is on for {', '.join(on)}; set those to false or use "
            "selection = \"single\" to tune [model.hyperparameters]"
        )
    data_file = Path(_require(data, "file", "data", path))
    return Config(
        project=_require(project, "name", "project", path),
        data_file=data_file if data_file.is_absolute() else path.parent / data_file,
        target=_require(data, "target", "data", path),
        features=tuple(features),
        seed=int(data.get("seed", 42)),
        validation_fraction=float(data.get("validation_fraction", 0.15)),
        test_fraction=float(data.get("test_fraction", 0.15)),
        metric=metric,
        threshold=float(_require(model, "threshold", "model", path)),
        hyperparameters=hyperparameters,
        aws=dict(raw.get("aws", {})),
        local=dict(raw.get("local", {})),
        selection=selection,
        candidates=candidates,
        tuning=tuning,
        monitoring=_monitoring(raw.get("monitoring", {}), path),
    )


def _monitoring(table: dict, path: Path) -> Monitoring:
    _known(table, ("max_refused_share", "rmse_tolerance", "retrain_on_violation"),
           "[monitoring]", path)
    share = table.get("max_refused_share", Monitoring.max_refused_share)
    if isinstance(share, bool) or not isinstance(share, int | float) or not 0 <= share <= 1:
        raise ConfigError(f"{path.name}: [monitoring] max_refused_share = {share!r} must be a "
                          "number from 0 to 1")
    tolerance = table.get("rmse_tolerance", Monitoring.rmse_tolerance)
    if isinstance(tolerance, bool) or not isinstance(tolerance, int | float) or tolerance <= 0:
        raise ConfigError(f"{path.name}: [monitoring] rmse_tolerance = {tolerance!r} must be a "
                          "number above 0")
    retrain = table.get("retrain_on_violation", Monitoring.retrain_on_violation)
    if not isinstance(retrain, bool):
        raise ConfigError(f"{path.name}: [monitoring] retrain_on_violation = {retrain!r} must "
                          "be true or false")
    return Monitoring(float(share), float(tolerance), retrain)


def _hyperparameters(table: dict, where: str, path: Path) -> dict:
    for name, value in table.items():
        if isinstance(value, bool) or not isinstance(value, str | int | float):
            raise ConfigError(
                f"{path.name}: {where}hyperparameter '{name}' = {value!r} must be a number or a "
                "string"
            )
    return dict(table)


def _candidates(table: dict, selection: str, path: Path) -> dict:
    candidates = {}
    for name, spec in table.items():
        where = f"[model.candidates.{name}]"
        if not isinstance(spec, dict) or not isinstance(spec.get("regressor"), str):
            raise ConfigError(f"{path.name}: {where} needs regressor = \"<name>\"")
        candidates[name] = _hyperparameters(spec, f"{where} ", path)
    if selection == "compare" and not candidates:
        raise ConfigError(
            f"{path.name}: [model] selection = \"compare\" needs [model.candidates.<name>] "
            "tables, each with regressor = ... and its hyperparameters"
        )
    size = len(json.dumps(candidates, sort_keys=True))
    if size > HYPERPARAMETER_LIMIT:
        raise ConfigError(
            f"{path.name}: [model.candidates] take {size} characters as JSON; SageMaker allows "
            f"{HYPERPARAMETER_LIMIT} per hyperparameter, so compare fewer candidates"
        )
    return candidates


def _integer(table: dict, key: str, where: str, path: Path, default: int, least: int) -> int:
    value = table.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int) or value < least:
        raise ConfigError(f"{path.name}: {where} {key} = {value!r} must be an integer >= {least}")
    return value


def _known(table: dict, keys: tuple[str, ...], where: str, path: Path) -> None:
    unknown = sorted(set(table) - set(keys))
    if unknown:
        raise ConfigError(
            f"{path.name}: {where} has unknown key(s) {', '.join(unknown)}; it takes {keys}"
        )


def _tuning(table: dict, path: Path) -> Tuning:
    _known(table, (*TUNING_PROFILES, "strategy", "objective", "max_jobs", "max_parallel_jobs",
                   "seed", "ranges"), "[tuning]", path)
    profiles = {name: table.get(name, name == "aws") for name in TUNING_PROFILES}
    for name, enabled in profiles.items():
        if not isinstance(enabled, bool):
            raise ConfigError(f"{path.name}: [tuning] {name} = {enabled!r} must be true or false")
    strategy = table.get("strategy", "Bayesian")
    if strategy not in TUNING_STRATEGIES:
        raise ConfigError(
            f"{path.name}: [tuning] strategy = {strategy!r}; use one of {TUNING_STRATEGIES}"
        )
    objective = table.get("objective", "validation:rmse")
    if objective not in TUNING_OBJECTIVES:
        raise ConfigError(
            f"{path.name}: [tuning] objective = {objective!r}; use one of "
            f"{tuple(TUNING_OBJECTIVES)} (what train.py logs)"
        )
    max_jobs = _integer(table, "max_jobs", "[tuning]", path, 10, 1)
    max_parallel = _integer(table, "max_parallel_jobs", "[tuning]", path, 1, 1)
    if max_parallel > max_jobs:
        raise ConfigError(
            f"{path.name}: [tuning] max_parallel_jobs = {max_parallel} exceeds max_jobs = "
            f"{max_jobs}"
        )
    # SageMaker drops a random seed of 0 from the request, so a seed must be positive.
    seed = _integer(table, "seed", "[tuning]", path, 42, 1)
    ranges = tuple(_range(name, spec, path) for name, spec in table.get("ranges", {}).items())
    if not ranges:
        raise ConfigError(
            f"{path.name}: [tuning] needs at least one [tuning.ranges.<hyperparameter>] table"
        )
    return Tuning(profiles, strategy, max_jobs, max_parallel, seed, objective, ranges)


def _range(name: str, spec: dict, path: Path) -> Range:
    where = f"[tuning.ranges.{name}]"
    if name == "regressor":
        raise ConfigError(f"{path.name}: {where}: the regressor is not tuned; compare "
                          "regressors with [model] selection = \"compare\"")
    kind = spec.get("type") if isinstance(spec, dict) else None
    if kind not in RANGE_TYPES:
        raise ConfigError(f"{path.name}: {where} type = {kind!r}; use one of {RANGE_TYPES}")
    _known(spec, ("type", "values") if kind == "categorical" else ("type", "min", "max", "scaling"),
           where, path)
    if kind == "categorical":
        values = spec.get("values")
        if not isinstance(values, list) or not values:
            raise ConfigError(f"{path.name}: {where} needs values = [...] (at least one)")
        return Range(name, kind, values=tuple(str(v) for v in values))
    number, noun = (int, "integers") if kind == "integer" else (int | float, "numbers")
    bounds = [spec.get("min"), spec.get("max")]
    if any(isinstance(b, bool) or not isinstance(b, number) for b in bounds):
        raise ConfigError(f"{path.name}: {where} needs min and max as {noun}")
    low, high = bounds
    if low >= high:
        raise ConfigError(f"{path.name}: {where} min = {low} must be below max = {high}")
    scaling = spec.get("scaling", "Auto")
    problem = scaling_problem(kind, scaling, low, high)
    if problem:
        raise ConfigError(f"{path.name}: {where} {problem}")
    return Range(name, kind, low, high, scaling)


def scaling_problem(kind: str, scaling: str, low: float, high: float) -> str | None:
    """Why SageMaker's tuning API would refuse a range's scaling, or None.

    `kind` is integer or continuous, in any case. Logarithmic scaling needs values above 0;
    reverse logarithmic is for continuous ranges within [0, 1).
    """
    if scaling not in SCALINGS:
        return f"scaling = {scaling!r}; use one of {SCALINGS}"
    if scaling == "Logarithmic" and low <= 0:
        return "Logarithmic scaling needs a minimum above 0"
    if scaling == "ReverseLogarithmic" and (kind.lower() == "integer" or low < 0 or high >= 1):
        return "ReverseLogarithmic scaling is for continuous ranges within [0, 1)"
    return None


def state_dir() -> Path:
    """Where local runs keep their store, registry and records (`.mlops/` unless overridden)."""
    return Path(os.environ.get("MLOPS_HOME", ROOT / ".mlops"))
