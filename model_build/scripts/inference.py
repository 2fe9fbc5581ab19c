"""Serving handlers for the SageMaker scikit-learn container (and the local endpoint).

The container calls `model_fn(model_dir)` once, then for each request `input_fn(body,
content_type)`, `predict_fn(data, model)` and `output_fn(prediction, accept)`.

Requests carry raw feature rows in schema order:
- `text/csv`: one row per line, no header;
- `application/json`: `{"instances": [...]}`, each row a list or an object keyed by feature name.
Answers are `text/csv` (one prediction per line) or `application/json` (`{"predictions": [...]}`).

Bad input raises `BadRequest` (a ValueError) whose message names the problem; its
`http_status` says which HTTP status the serving layer should answer with. A request with one
bad row is refused whole, as SageMaker does, but every row is checked first: `problems` lists
every bad row (`RowProblem`), the message names the first and how many rows are bad. Each
refusal is logged as one JSON line `{"event": "MLOPS_REFUSAL", ...}` on stderr, which the
endpoint's CloudWatch log group turns into metrics (cloudformation/endpoint.yml).

The lean path: `model_fn` reads the fitted feature step of the Pipeline (one-hot encoders,
scalers, pass-through) into arrays, so a request's checked columns become the estimator's
matrix directly, without building a DataFrame and running the ColumnTransformer (6 of the
7.6 ms of a one-row predict). A Pipeline of another shape is served through its own predict,
and `model_fn` says which path serves in the endpoint log.

Runs inside the container: standard library, numpy, pandas, scikit-learn, joblib and the data
contract shipped beside it in `code/`.
"""

from __future__ import annotations

import functools
import itertools
import json
import math
import sys
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


REFUSAL_EVENT = "MLOPS_REFUSAL"
FEW_ROWS = 8  # a request of at most this many rows is read cell by cell (`text_matrix`)
# The cells a numeric column reads at once: text, and JSON numbers (a JSON true is not 1).
NUMBER_CELLS = frozenset({str, int, float})


@dataclass(frozen=True)
class RowProblem:
    """One bad row: its number (from 1), why ("unknown category", "wrong column count", "not a
    number", "not a finite number", "missing value", "wrong features", "not a row"), the
    feature and the cell's value (None when the problem is the row's shape)."""

    row: int
    reason: str
    feature: str | None
    value: object
    message: str


class BadRequest(ValueError):
    http_status = 400
    reason = "malformed request"

    def __init__(self, message: str, problems: list[RowProblem] | None = None, rows: int = 0):
        super().__init__(message)
        self.problems = problems or []
        self.rows = rows  # rows in the refused request, when they could be read

    @classmethod
    def of_rows(cls, problems: list[RowProblem], rows: int) -> BadRequest:
        """The refusal of a request of `rows` rows with these (sorted) problems."""
        first, bad = problems[0], len({p.row for p in problems})
        more = f" ({bad} of {rows} rows are bad)" if len(problems) > 1 else ""
        return cls(first.message + more, problems, rows)

    def event(self) -> dict:
        """The refusal's log event: the first problem's reason and feature, and the count."""
        first = self.problems[0] if self.problems else None
        return {"event": REFUSAL_EVENT, "reason": first.reason if first else self.reason,
                "feature": first.feature if first else None, "rows": self.rows,
                "bad_rows": len({p.row for p in self.problems})}


class UnsupportedContentType(BadRequest):
    http_status = 415
    reason = "unsupported content type"


class UnsupportedAccept(BadRequest):
    http_status = 406
    reason = "unsupported accept"


def _logged(handler):
    """Log each refusal of `handler` as one MLOPS_REFUSAL line on stderr."""
    @functools.wraps(handler)
    def logged(*args):
        try:
            return handler(*args)
        except BadRequest as err:
            print(json.dumps(err.event()), file=sys.stderr, flush=True)
            raise

    return logged


class Rows:
    """A parsed request: `rows` as lists of cells (CSV, JSON lists) or dicts (JSON objects);
    `text` when every row is a list of text cells (a CSV body). A CSV body with no quoted
    field is kept whole as `plain`, which the lean path reads at once, and split into rows
    only when they are asked for."""

    def __init__(self, rows: list | None = None, text: bool = False, plain: str | None = None):
        self.text, self.plain = text or plain is not None, plain
        if rows is not None:
            self.rows = rows

    @functools.cached_property
    def rows(self) -> list:
        return contract.csv_rows(self.plain)


@dataclass(frozen=True)
class ServingModel:
    pipeline: object
    features: tuple[str, ...]
    categories: dict[str, tuple[str, ...]]
    lean: LeanPath | None = None


@dataclass(frozen=True)
class LeanPath:
    """The Pipeline's fitted feature step as arrays, and its final estimator.

    The estimator's matrix has `width` columns: the numeric features `numbers` go to
    `number_columns` as (value - offset) / scale (offset 0 and scale 1 where the step passes
    a value through); each one-hot feature in `onehots` (name, position in a row, column of
    each configured value) sets one column to 1, or none for a value the encoder never saw
    (column -1), as handle_unknown="ignore" does. `few_rows_layout` holds the same for the
    row-by-row reading of small requests."""

    numbers: tuple[str, ...]
    number_positions: tuple[int, ...]
    number_columns: np.ndarray
    offset: np.ndarray
    scale: np.ndarray
    onehots: tuple[tuple[str, int, dict[str, int]], ...]
    row_width: int
    width: int
    estimator: object

    @functools.cached_property
    def few_rows_layout(self) -> tuple:
        """(position, column, offset, scale) of each number, as Python floats."""
        return tuple(zip(self.number_positions, self.number_columns.tolist(),
                         self.offset.tolist(), self.scale.tolist(), strict=True))

    def matrix(self, columns: dict) -> np.ndarray:
        """The matrix of checked columns (`checked_columns`)."""
        rows = len(next(iter(columns.values())))
        numbers = (np.column_stack([columns[name] for name in self.numbers]) if self.numbers
                   else np.empty((rows, 0)))
        return self._filled(numbers, [[at[value] for value in columns[name]]
                                      for name, _, at in self.onehots])

    def text_matrix(self, request: Rows) -> np.ndarray | None:
        """The matrix of a CSV body when every row is well formed: the schema's width,
        finite numbers and categories spelled as configured; None when any row is not (or
        when a body of more than FEW_ROWS rows quotes a field), for `checked_columns` to name
        what is wrong (or to read what is spelled otherwise)."""
        plain = request.plain
        if plain is None or plain.count("\n") <= FEW_ROWS:
            rows = request.rows
            if len(rows) <= FEW_ROWS:
                return self._few_rows_matrix(rows)
        return None if plain is None else self._plain_matrix(plain)

    def _plain_matrix(self, text: str) -> np.ndarray | None:
        """`text_matrix` of a body with no quoted field, read whole: its cells in one list,
        each feature's every `row_width`-th."""
        lines = list(filter(None, text.split("\n")))
        width = self.row_width
        if set(map(str.count, lines, itertools.repeat(","))) != {width - 1}:
            return None
        cells = ",".join(lines).split(",")
        numbers = _finite([cells[position::width] for position in self.number_positions])
        if numbers is None:
            return None
        try:
            onehot = [list(map(at.__getitem__, cells[position::width]))
                      for _, position, at in self.onehots]
        except KeyError:
            return None
        return self._filled(numbers.reshape(len(self.numbers), len(lines)).T, onehot)

    def _few_rows_matrix(self, rows: list) -> np.ndarray | None:
        """`text_matrix` cell by cell: below FEW_ROWS rows, numpy's cost per call would be
        most of a request's."""
        if not all(len(row) == self.row_width for row in rows):
            return None
        matrix = []
        for row in rows:
            values = [0.0] * self.width
            for position, column, offset, scale in self.few_rows_layout:
                try:
                    value = float(row[position])
                except ValueError:
                    return None
                if not math.isfinite(value):
                    return None
                values[column] = (value - offset) / scale
            for _, position, at in self.onehots:
                column = at.get(row[position])
                if column is None:
                    return None
                if column >= 0:
                    values[column] = 1.0
            matrix.append(values)
        return np.array(matrix)

    def _filled(self, numbers: np.ndarray, onehot: list[list[int]]) -> np.ndarray:
        out = np.zeros((len(numbers), self.width))
        out[:, self.number_columns] = (numbers - self.offset) / self.scale
        for columns in onehot:
            at = np.asarray(columns, dtype=np.intp)
            seen = np.flatnonzero(at >= 0)
            out[seen, at[seen]] = 1.0
        return out

    def predict(self, columns: dict) -> np.ndarray:
        return self.estimator.predict(self.matrix(columns))


def _finite(cells) -> np.ndarray | None:
    """The cells as floats when every one is a finite number (a text cell read as float()
    reads it), else None."""
    try:
        values = np.array(cells, dtype=float)
    except (TypeError, ValueError, OverflowError):
        return None
    return values if np.isfinite(values).all() else None


def lean_path(pipeline, features: tuple[str, ...], categories: dict) -> LeanPath:
    """The lean path of a fitted Pipeline(ColumnTransformer, estimator); ValueError naming
    what it cannot reproduce with arrays."""
    from sklearn.compose import ColumnTransformer
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import FunctionTransformer, OneHotEncoder, StandardScaler

    if not isinstance(pipeline, Pipeline) or len(pipeline.steps) != 2:
        raise ValueError("the model is not a two-step Pipeline (features, estimator)")
    encode, estimator = pipeline.steps[0][1], pipeline.steps[1][1]
    if not isinstance(encode, ColumnTransformer):
        raise ValueError(f"its first step is a {type(encode).__name__}, not a ColumnTransformer")
    if list(getattr(encode, "feature_names_in_", [])) != list(features):
        raise ValueError("its ColumnTransformer was fitted on other columns than the schema's")
    numbers, columns, offsets, scales, onehots, width = [], [], [], [], [], 0
    for name, transformer, selected in encode.transformers_:
        names = [features[c] if isinstance(c, int | np.integer) else c for c in selected]
        if transformer == "drop" or not names:
            continue
        if isinstance(transformer, OneHotEncoder):
            if (transformer.drop is not None or transformer.handle_unknown != "ignore"
                    or getattr(transformer, "infrequent_categories_", None) is not None
                    or any(n not in categories for n in names)):
                raise ValueError(f"its one-hot step '{name}' drops, groups or errors on values")
            for feature, values in zip(names, transformer.categories_, strict=True):
                seen = {str(v): width + i for i, v in enumerate(values)}
                onehots.append((feature, features.index(feature),
                                _configured_columns(categories[feature], seen)))
                width += len(values)
        elif (transformer == "passthrough" or isinstance(transformer, StandardScaler)
              or (isinstance(transformer, FunctionTransformer) and transformer.func is None)):
            if any(n in categories for n in names):
                raise ValueError(f"its step '{name}' passes categorical columns through")
            scaler = transformer if isinstance(transformer, StandardScaler) else None
            count = len(names)
            offsets.append(scaler.mean_ if scaler and scaler.with_mean else np.zeros(count))
            scales.append(scaler.scale_ if scaler and scaler.with_std else np.ones(count))
            numbers += names
            columns += range(width, width + count)
            width += count
        else:
            raise ValueError(f"its step '{name}' is a {type(transformer).__name__}")
    return LeanPath(tuple(numbers), tuple(features.index(n) for n in numbers),
                    np.array(columns, dtype=np.intp), np.concatenate([[], *offsets]),
                    np.concatenate([[], *scales]), tuple(onehots), len(features), width,
                    estimator)


def _configured_columns(allowed: tuple[str, ...], seen: dict[str, int]) -> dict[str, int]:
    """The matrix column of each configured spelling of a category (of the value it means),
    -1 for one the encoder never saw."""
    columns = {}
    for spelling in allowed:
        try:
            columns[spelling] = seen.get(contract.to_category(spelling, allowed), -1)
        except contract.ContractError:  # a spelling that reads as missing is never served
            continue
    return columns


def model_fn(model_dir):
    model_dir = Path(model_dir)
    schema = contract.load_schema(model_dir / contract.SCHEMA_FILE)
    features, categories = tuple(contract.feature_names(schema)), contract.categories(schema)
    pipeline = joblib.load(model_dir / "model.joblib")
    try:
        lean = lean_path(pipeline, features, categories)
        print(f"serving on the lean path: {type(lean.estimator).__name__} on "
              f"{lean.width} columns", file=sys.stderr)
    except ValueError as reason:
        lean = None
        print(f"serving through the Pipeline's predict: {reason}", file=sys.stderr)
    return ServingModel(pipeline, features, categories, lean)


def media_type(header) -> str:
    """`text/csv; charset=utf-8` -> `text/csv`."""
    return (header or "").split(";")[0].strip().lower()


@_logged
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
        if contract.unquoted(request_body):
            return Rows(plain=request_body)
        return Rows(contract.csv_rows(request_body), True)
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


@_logged
def predict_fn(input_data, model):
    lean = model.lean
    if lean is not None and input_data.text:
        matrix = lean.text_matrix(input_data)
        if matrix is not None:
            return lean.estimator.predict(matrix)
    columns = checked_columns(input_data.rows, model)
    if lean is not None:
        return lean.predict(columns)
    return model.pipeline.predict(pd.DataFrame(columns, columns=list(model.features)))


def checked_columns(rows: list, model: ServingModel) -> dict:
    """Check every row against the schema; each feature's column (floats or category values),
    or BadRequest listing every bad row."""
    problems, width = [], len(model.features)
    if all(type(row) is list and len(row) == width for row in rows):  # every CSV body
        lists = rows
    else:
        lists = []
        for number, row in enumerate(rows, start=1):
            cells = _as_list(row, number, model.features, problems)
            lists.append(cells if cells is not None else [None] * width)
    misshaped = {p.row for p in problems}  # their cells are not checked
    columns = {}
    for name, cells in zip(model.features, zip(*lists, strict=True), strict=True):
        check = _categorical if name in model.categories else _numeric
        columns[name] = check(name, cells, model.categories.get(name), problems, misshaped)
    if problems:
        problems.sort(key=lambda p: (p.row, p.feature is not None))
        raise BadRequest.of_rows(problems, len(rows))
    return columns


def _as_list(row, number: int, features: tuple[str, ...], problems: list) -> list | None:
    if isinstance(row, dict):
        missing = [name for name in features if name not in row]
        unknown = [key for key in row if key not in features]
        if missing or unknown:
            problems.append(RowProblem(
                number, "wrong features", None, None,
                f"row {number}: missing features {missing}, unknown features {unknown}; "
                f"expected {list(features)}"))
            return None
        return [row[name] for name in features]
    if not isinstance(row, list):
        problems.append(RowProblem(number, "not a row", None, None,
                                   f"row {number} is neither a list nor an object: {row!r}"))
        return None
    if len(row) != len(features):
        problems.append(RowProblem(
            number, "wrong column count", None, len(row),
            f"row {number}: expected {len(features)} columns {list(features)}, "
            f"got {len(row)}: {row!r}"))
        return None
    return row


def _cell_problem(number: int, name: str, cell, err: contract.ContractError) -> RowProblem:
    reason = str(err).split(";")[0].removeprefix("a ").removeprefix("an ")
    value = cell if cell is None or isinstance(cell, str | int | float) else repr(cell)
    return RowProblem(number, reason, name, value,
                      f"row {number}, column '{name}': {cell!r} is {err}")


def _numeric(name: str, cells: list, _allowed, problems: list, misshaped: set) -> np.ndarray:
    values = None
    if not misshaped and all(type(cell) in NUMBER_CELLS for cell in cells):
        values = _finite(cells)  # the fast path: every cell a finite number
    if values is None:
        values = np.full(len(cells), np.nan)
        for number, cell in enumerate(cells, start=1):
            if number in misshaped:
                continue
            try:
                values[number - 1] = contract.to_number(cell)
            except contract.ContractError as err:
                problems.append(_cell_problem(number, name, cell, err))
    return values


def _categorical(name: str, cells: list, allowed: tuple[str, ...], problems: list,
                 misshaped: set) -> list:
    values, known = [], {}  # a column holds few distinct cells: each is looked up once
    for number, cell in enumerate(cells, start=1):
        if number in misshaped:
            values.append(None)
            continue
        key = (type(cell), cell)  # True and 1 are equal keys, but not the same cell
        try:
            value = known[key]
        except KeyError:
            value = known[key] = _category(cell, allowed)
        except TypeError:  # an unhashable cell (a JSON list or object) is looked up alone
            value = _category(cell, allowed)
        if isinstance(value, contract.ContractError):
            problems.append(_cell_problem(number, name, cell, value))
        else:
            values.append(value)
    return values


def _category(cell, allowed: tuple[str, ...]) -> str | contract.ContractError:
    try:
        return contract.to_category(cell, allowed)
    except contract.ContractError as err:
        return err


@_logged
def output_fn(prediction, accept):
    """Serialise predictions; returns (body, content type) as the container expects."""
    wanted = _accepted(accept)
    values = np.ravel(np.asarray(prediction, dtype=float)).tolist()
    if wanted == CSV:
        return "\n".join(map(repr, values)) + "\n", CSV
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
