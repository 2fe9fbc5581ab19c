"""The data contract: the schema, what a cell means and what "missing" means, stated once.

Shipped with the code of every job that touches the data, so all of them agree on every cell:
the processing jobs get it as an input on their PYTHONPATH, the training job in its source
directory, the model in `code/` beside inference.py, and the drift check beside drift_check.py.
The scripts import it as `contract` (shipped) or from this package (tests, local tools).

Standard library, numpy and pandas only: it runs in the SageMaker scikit-learn container.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import sys
from pathlib import Path

import numpy as np
import pandas as pd

SCHEMA_FILE = "schema.json"
# A cell holding one of these (any case, surrounding spaces ignored) has no value.
MISSING_TOKENS = frozenset({"", "na", "n/a", "nan", "null", "none"})
SCHEMA_KEYS = ("target", "features", "seed", "validation_fraction", "test_fraction")
FEATURE_TYPES = ("numeric", "categorical")


class ContractError(ValueError):
    """A schema or a cell that breaks the contract; the message names it."""


# ---------------------------------------------------------------------------- the schema


def parse_schema(text: str, source: str) -> dict:
    """The schema in `text` (read from `source`, named in messages), checked."""
    try:
        schema = json.loads(text)
    except json.JSONDecodeError as err:
        raise ContractError(f"schema file {source} is not valid JSON: {err}") from None
    missing = [key for key in SCHEMA_KEYS if key not in schema]
    if missing:
        raise ContractError(f"schema file {source} has no {', '.join(repr(k) for k in missing)}")
    if not schema["features"]:
        raise ContractError(f"schema file {source} lists no features")
    for feature in schema["features"]:
        if feature.get("type") not in FEATURE_TYPES or not feature.get("name"):
            raise ContractError(f"schema file {source}: feature {feature!r} needs a name and a "
                                f"type in {FEATURE_TYPES}")
        if feature["type"] == "categorical" and not feature.get("values"):
            raise ContractError(f"schema file {source}: categorical feature "
                                f"'{feature['name']}' lists no values")
    return schema


def load_schema(path: Path) -> dict:
    """The schema file at `path` (or `path/schema.json` for a directory), checked."""
    path = Path(path)
    if path.is_dir():
        path = path / SCHEMA_FILE
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise ContractError(f"schema file not found: {path}") from None
    return parse_schema(text, str(path))


def feature_names(schema: dict) -> list[str]:
    return [f["name"] for f in schema["features"]]


def categories(schema: dict) -> dict[str, tuple[str, ...]]:
    """Each categorical feature's allowed values."""
    return {f["name"]: tuple(str(v) for v in f["values"])
            for f in schema["features"] if f["type"] == "categorical"}


# ---------------------------------------------------------------------------- CSV text


def unquoted(text: str) -> bool:
    """Whether a CSV text holds no quote, CR or NUL: then each line is its cells split at
    commas, which is what csv.reader reads from it, several times faster."""
    return not any(mark in text for mark in ('"', "\r", "\0"))


def csv_rows(text: str) -> list[list[str]]:
    """The rows of a CSV text as csv.reader reads them, blank lines left out."""
    if unquoted(text):
        return [line.split(",") for line in text.split("\n") if line]
    return [row for row in csv.reader(io.StringIO(text)) if row]


# ---------------------------------------------------------------------------- one cell


def is_missing(cell) -> bool:
    """No value: None, a float NaN, or text that is one of MISSING_TOKENS."""
    if cell is None:
        return True
    if isinstance(cell, float):
        return math.isnan(cell)
    return isinstance(cell, str) and cell.strip().lower() in MISSING_TOKENS


def to_number(cell) -> float:
    """The finite number a cell holds (text or a JSON number), or ContractError saying what the
    cell is instead ("a missing value", "not a number", "not a finite number")."""
    if is_missing(cell):
        raise ContractError("a missing value")
    if isinstance(cell, bool) or not isinstance(cell, str | int | float):
        raise ContractError("not a number")
    try:
        value = float(cell)
    except ValueError:
        raise ContractError("not a number") from None
    except OverflowError:  # an integer too large for a float
        raise ContractError("not a finite number") from None
    if not math.isfinite(value):
        raise ContractError("not a finite number")
    return value


def category_key(cell) -> str:
    """What a category value means: a cell that reads as a finite number is that number (2, 2.0
    and "2.0" are one category, "2.0"), anything else its text without surrounding spaces."""
    if isinstance(cell, bool):
        raise ContractError("not a category")
    text = cell.strip() if isinstance(cell, str) else cell
    try:
        number = float(text)
    except (TypeError, ValueError, OverflowError):
        if not isinstance(text, str):
            raise ContractError("not a category") from None
        return text
    return repr(number) if math.isfinite(number) else str(text)


def category_lookup(values) -> dict[str, str]:
    """The configured spelling of each category, by what it means (`category_key`)."""
    return {category_key(value): str(value) for value in values}


def to_category(cell, allowed: tuple[str, ...]) -> str:
    """The configured value a cell means (`category_key`), or ContractError saying what the
    cell is instead ("a missing value", "an unknown category; allowed [...]")."""
    if is_missing(cell):
        raise ContractError("a missing value")
    value = category_lookup(allowed).get(category_key(cell))
    if value is None:
        raise ContractError(f"an unknown category; allowed {list(allowed)}")
    return value


# ---------------------------------------------------------------------------- whole columns


def missing_mask(cells: pd.Series) -> np.ndarray:
    """Which text cells of a column are missing (the vectorised `is_missing`)."""
    return cells.str.strip().str.lower().isin(MISSING_TOKENS).to_numpy()


def categories_of(cells: pd.Series, values) -> pd.Series:
    """A text column with each cell that means one of `values` spelled as that value."""
    lookup = category_lookup(values)
    return cells.map(lambda cell: lookup.get(category_key(cell), cell))


def numbers(cells: pd.Series) -> np.ndarray:
    """A text column as floats; NaN where a cell is not a finite number (missing included)."""
    values = pd.to_numeric(cells.str.strip(), errors="coerce").to_numpy(dtype=float, copy=True)
    values[~np.isfinite(values)] = np.nan
    return values


def read_split(path: Path, schema: dict) -> tuple[pd.DataFrame, pd.Series]:
    """The features (schema order) and target of a split as preprocess writes it (header,
    numbers already parsed), or ContractError naming the file and what is wrong with it."""
    path = Path(path)
    try:
        frame = pd.read_csv(path)
    except FileNotFoundError:
        raise ContractError(f"data not found: {path}") from None
    except (pd.errors.EmptyDataError, pd.errors.ParserError, UnicodeDecodeError) as err:
        raise ContractError(f"{path.name} cannot be read as CSV: {err}") from None
    features = feature_names(schema)
    missing = [c for c in [*features, schema["target"]] if c not in frame.columns]
    if missing:
        raise ContractError(f"{path.name} is missing column(s) {', '.join(missing)}")
    if frame.empty:
        raise ContractError(f"{path.name} has no rows")
    numeric = [f["name"] for f in schema["features"] if f["type"] == "numeric"]
    for column in [*numeric, schema["target"]]:
        if not pd.api.types.is_numeric_dtype(frame[column]) or frame[column].isna().any():
            raise ContractError(f"{path.name}: column '{column}' must hold numbers only")
    return frame[features], frame[schema["target"]]


# ---------------------------------------------------------------------------- a job's files


def opt_ml() -> Path:
    """The container's /opt/ml (the local engine maps it with MLOPS_OPT_ML)."""
    return Path(os.environ.get("MLOPS_OPT_ML", "/opt/ml"))


def write_text(path: Path, text: str) -> None:
    """Write to a temporary name and rename, so a reader never sees half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.partial")
    partial.write_text(text)
    os.replace(partial, path)


def fail(message: str, name: str = "message") -> int:
    """End a job with `message` in /opt/ml/output/<name>, which SageMaker shows as the failure
    reason (`message` for processing jobs, `failure` for training jobs)."""
    write_text(opt_ml() / "output" / name, f"{message}\n")
    print(message, file=sys.stderr)
    return 1
