"""Serving handlers for the SageMaker scikit-learn container (and the local endpoint).

The container calls `model_fn(model_dir)` once, then for each request `input_fn(body,
content_type)`, `predict_fn(data, model)` and `output_fn(prediction, accept)`.

Requests carry raw feature rows in schema order:
- `text/csv`: one row per line, no header;
- `application/json`: `{"instances": [...]}`, each row a list or an object keyed by feature name.
Answers are `text/csv` (one prediction per line) or `application/json` (`{"predictions": [...]}`).

Bad input raises `BadRequest` (a ValueError) whose message names the problem; its
`http_status` says which HTTP status the serving layer should answer with.

Runs inside the container: standard library, numpy, pandas, scikit-learn, joblib and the data
contract shipped beside it in `code/`.
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass
from pathlib import Path

import joblib
import numpy as np
import pandas as pd

try:
    import contract  # shipped beside this file in the model's code/
except ImportError:
    from model_build.scripts import contract

CSV = "text/csv"
JSON = "application/json"
SUPPORTED = (CSV, JSON)


class BadRequest(ValueError):
    http_status = 400


class UnsupportedContentType(BadRequest):
    http_status = 415


class UnsupportedAccept(BadRequest):
    http_status = 406


@dataclass(frozen=True)
class Rows:
    """A parsed request: rows as lists of cells (CSV, JSON lists) or dicts (JSON objects)."""

    rows: list


@dataclass(frozen=True)
class ServingModel:
    pipeline: object
    features: tuple[str, ...]
    categories: dict[str, tuple[str, ...]]


def model_fn(model_dir):
    model_dir = Path(model_dir)
    schema = contract.load_schema(model_dir / contract.SCHEMA_FILE)
    return ServingModel(joblib.load(model_dir / "model.joblib"),
                        tuple(contract.feature_names(schema)), contract.categories(schema))


def media_type(header) -> str:
    """`text/csv; charset=utf-8` -> `text/csv`."""
    return (header or "").split(";")[0].strip().lower()


def input_fn(request_body, request_content_type):
    content_type = media_type(request_content_type)
    if content_type not in SUPPORTED:
        raise UnsupportedContentType(
            f"unsupported content type {request_content_type!r}; send one of {list(SUPPORTED)}"
        )
    if isinstance(request_body, bytes | bytearray):
        try:
            request_body = bytes(request_body).decode("utf-8")
        except UnicodeDecodeError:
            raise BadRequest("request body is not UTF-8 text") from None
    if not request_body or not request_body.strip():
        raise BadRequest("request body is empty; send at least one row")
    if content_type == CSV:
        return Rows([row for row in csv.reader(io.StringIO(request_body)) if row])
    return Rows(_json_instances(request_body))


def _json_instances(text: str) -> list:
    try:
        document = json.loads(text)
    except json.JSONDecodeError as err:
        raise BadRequest(f"malformed JSON: {err}") from None
    except RecursionError:
        raise BadRequest("malformed JSON: nested too deeply") from None
    if not isinstance(document, dict) or "instances" not in document:
        raise BadRequest('JSON body must be an object {"instances": [...]}')
    instances = document["instances"]
    if not isinstance(instances, list) or not instances:
        raise BadRequest('"instances" must be a non-empty list of rows')
    return instances


def predict_fn(input_data, model):
    return model.pipeline.predict(to_frame(input_data.rows, model))


def to_frame(rows: list, model: ServingModel) -> pd.DataFrame:
    """Check every row against the schema and build the DataFrame the pipeline takes."""
    lists = [_as_list(row, number, model.features) for number, row in enumerate(rows, start=1)]
    columns = {}
    for index, name in enumerate(model.features):
        cells = [row[index] for row in lists]
        if name in model.categories:
            columns[name] = _categorical(name, cells, model.categories[name])
        else:
            columns[name] = _numeric(name, cells)
    return pd.DataFrame(columns, columns=list(model.features))


def _as_list(row, number: int, features: tuple[str, ...]) -> list:
    if isinstance(row, dict):
        missing = [name for name in features if name not in row]
        unknown = [key for key in row if key not in features]
        if missing or unknown:
            raise BadRequest(
                f"row {number}: missing features {missing}, unknown features {unknown}; "
                f"expected {list(features)}"
            )
        return [row[name] for name in features]
    if not isinstance(row, list):
        raise BadRequest(f"row {number} is neither a list nor an object: {row!r}")
    if len(row) != len(features):
        raise BadRequest(
            f"row {number}: expected {len(features)} columns {list(features)}, "
            f"got {len(row)}: {row!r}"
        )
    return row


def _numeric(name: str, cells: list) -> np.ndarray:
    try:
        values = np.array(cells, dtype=float)  # the fast path: every cell a number
    except (TypeError, ValueError, OverflowError):
        values = None
    if values is None or not np.all(np.isfinite(values)):
        for number, cell in enumerate(cells, start=1):
            try:
                contract.to_number(cell)
            except contract.ContractError as err:
                raise BadRequest(f"row {number}, column '{name}': {cell!r} is {err}") from None
    return values


def _categorical(name: str, cells: list, allowed: tuple[str, ...]) -> list:
    values = []
    for number, cell in enumerate(cells, start=1):
        try:
            values.append(contract.to_category(cell, allowed))
        except contract.ContractError as err:
            raise BadRequest(f"row {number}, column '{name}': {cell!r} is {err}") from None
    return values


def output_fn(prediction, accept):
    """Serialise predictions; returns (body, content type) as the container expects."""
    wanted = _accepted(accept)
    values = [float(v) for v in np.ravel(prediction)]
    if wanted == CSV:
        return "".join(f"{v!r}\n" for v in values), CSV
    return json.dumps({"predictions": values}), JSON


def _accepted(accept) -> str:
    """The first supported type in an Accept header; JSON for `*/*` or none."""
    offered = [media_type(part) for part in (accept or "").split(",") if part.strip()]
    if not offered or "*/*" in offered:
        return JSON
    for kind in offered:
        if kind in SUPPORTED:
            return kind
    raise UnsupportedAccept(f"unsupported accept {accept!r}; ask for one of {list(SUPPORTED)}")
