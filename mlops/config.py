"""Project configuration: `mlops.toml` at the repository root is the one place to change."""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CONFIG_FILE = Path(os.environ.get("MLOPS_CONFIG", ROOT / "mlops.toml"))
FEATURE_TYPES = ("numeric", "categorical")


class ConfigError(ValueError):
    """The configuration file is missing or wrong; the message names the key."""


@dataclass(frozen=True)
class Feature:
    name: str
    type: str
    values: tuple[str, ...] = ()


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


def _require(table: dict, key: str, where: str):
    if key not in table:
        raise ConfigError(f"{CONFIG_FILE.name}: [{where}] needs '{key}'")
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
    for name, spec in _require(data, "features", "data").items():
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
    hyperparameters = dict(model.get("hyperparameters", {}))
    for name, value in hyperparameters.items():
        if isinstance(value, bool) or not isinstance(value, str | int | float):
            raise ConfigError(
                f"{path.name}: hyperparameter '{name}' = {value!r} must be a number or a string"
            )
    data_file = Path(_require(data, "file", "data"))
    return Config(
        project=_require(project, "name", "project"),
        data_file=data_file if data_file.is_absolute() else path.parent / data_file,
        target=_require(data, "target", "data"),
        features=tuple(features),
        seed=int(data.get("seed", 42)),
        validation_fraction=float(data.get("validation_fraction", 0.15)),
        test_fraction=float(data.get("test_fraction", 0.15)),
        metric=model.get("metric", "rmse"),
        threshold=float(_require(model, "threshold", "model")),
        hyperparameters=hyperparameters,
        aws=dict(raw.get("aws", {})),
        local=dict(raw.get("local", {})),
    )


def state_dir() -> Path:
    """Where local runs keep their store, registry and records (`.mlops/` unless overridden)."""
    return Path(os.environ.get("MLOPS_HOME", ROOT / ".mlops"))
